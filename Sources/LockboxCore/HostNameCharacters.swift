/// The characters of the link rule's host-name form (migration 0017), as ranges of
/// Unicode scalar values: a label character, a full stop, then two letters (or one
/// character that stands for several), read as written and with the invisible
/// characters left out. Migration 0017 spells the same sets as bracket expressions
/// (PostgreSQL's `[[:alpha:]]` and `~*` know only ASCII in these clusters' C locale);
/// a test compares the two in each place of a host name, for every scalar of the
/// Basic Multilingual Plane and samples of the other planes.
enum HostNameCharacters {
    /// The full stops browsers read between labels: `.` and IDNA's others, ideographic,
    /// fullwidth and halfwidth (`contoso。com` and `contoso．com` open contoso.com).
    static func isFullStop(_ scalar: Unicode.Scalar) -> Bool {
        scalar == "." || scalar == "\u{3002}" || scalar == "\u{FF0E}" || scalar == "\u{FF61}"
    }

    /// Unicode's default-ignorable code points (soft hyphen, zero-width and direction
    /// marks, variation selectors, tags): invisible, and browsers drop several of them
    /// from host names (`contoso.c\u{AD}om` opens contoso.com).
    static let ignorable: [ClosedRange<UInt32>] = [
        0x00AD...0x00AD, 0x034F...0x034F, 0x061C...0x061C, 0x115F...0x1160, 0x17B4...0x17B5,
        0x180B...0x180F, 0x200B...0x200F, 0x202A...0x202E, 0x2060...0x206F, 0x3164...0x3164,
        0xFE00...0xFE0F, 0xFEFF...0xFEFF, 0xFFA0...0xFFA0, 0xFFF0...0xFFF8, 0x1BCA0...0x1BCA3,
        0x1D173...0x1D17A, 0xE0000...0xE0FFF,
    ]

    /// Non-ASCII scalars that are no part of a label: controls, spaces, punctuation
    /// (Latin-1's, general, supplemental, CJK, vertical, small and fullwidth forms),
    /// surrogates, private use and specials. Every other non-ASCII scalar, assigned
    /// or not and the ignorable ones aside, is a label character: a letter, mark or
    /// digit of any script, and the symbols browsers map to them (`ⓒ`, `ﬁ`, `²`).
    static let notLabel: [ClosedRange<UInt32>] = [
        0x0080...0x00A9, 0x00AB...0x00B1, 0x00B4...0x00B4, 0x00B6...0x00B8, 0x00BB...0x00BB,
        0x00BF...0x00BF, 0x00D7...0x00D7, 0x00F7...0x00F7, 0x2000...0x206F, 0x2E00...0x2E7F,
        0x3000...0x3004, 0x3008...0x3020, 0x3030...0x3030, 0x303D...0x303F, 0xD800...0xF8FF,
        0xFE10...0xFE1F, 0xFE30...0xFE62, 0xFE64...0xFE6F, 0xFF00...0xFF0C, 0xFF0E...0xFF0F,
        0xFF1A...0xFF20, 0xFF3B...0xFF40, 0xFF5B...0xFF65, 0xFFE0...0xFFFF, 0xE0000...0x10FFFF,
    ]

    /// Label characters that are not letters: the hyphens (`－`, `﹣`), the digits of
    /// the scripts in everyday use (`١.٥` and `１．５` are numbers), superscripts and
    /// subscripts (`done.¹²` is a footnote), fractions, circled digits, currency,
    /// arrows, mathematical and technical symbols, box drawing, dingbats, flags and
    /// emoji (`Thanks.🙂🙂`).
    static let notLetter: [ClosedRange<UInt32>] = [
        0x00B2...0x00B3, 0x00B9...0x00B9, 0x00BC...0x00BE, 0x0660...0x0669, 0x06F0...0x06F9,
        0x07C0...0x07C9, 0x0966...0x096F, 0x09E6...0x09EF, 0x0A66...0x0A6F, 0x0AE6...0x0AEF,
        0x0B66...0x0B6F, 0x0BE6...0x0BEF, 0x0C66...0x0C6F, 0x0CE6...0x0CEF, 0x0D66...0x0D6F,
        0x0DE6...0x0DEF, 0x0E50...0x0E59, 0x0ED0...0x0ED9, 0x0F20...0x0F33, 0x1040...0x1049,
        0x1090...0x1099, 0x17E0...0x17E9, 0x1810...0x1819, 0x1946...0x194F, 0x19D0...0x19DA,
        0x2070...0x209F, 0x20A0...0x20CF, 0x2150...0x215F, 0x2189...0x218F, 0x2190...0x245F,
        0x2460...0x249B, 0x24EA...0x24FF, 0x2500...0x2BFF, 0xFE63...0xFE63, 0xFF0D...0xFF0D,
        0xFF10...0xFF19, 0x1D7CE...0x1D7FF, 0x1F000...0x1F0FF, 0x1F1E6...0x1F1FF, 0x1F200...0x1FBFF,
    ]

    /// Han, kana, Hangul and Bopomofo (with their compatibility and halfwidth forms):
    /// prose in these scripts ends a sentence with `。` (or `．`, `｡`) and goes on
    /// without a space (`今日は晴れ。明日は雨。`), so those full stops open a host
    /// name only before another script's letter (`контосо。com`).
    static let ideographic: [ClosedRange<UInt32>] = [
        0x1100...0x11FF, 0x2E80...0x2FFF, 0x3000...0x9FFF, 0xA960...0xA97F, 0xAC00...0xD7FF,
        0xF900...0xFAFF, 0xFF66...0xFFDC, 0x1AFF0...0x1B2FF, 0x20000...0x3FFFF,
    ]

    /// Single characters that stand for two letters or more, so that one of them after
    /// a full stop is a top-level domain: Latin digraphs and ligatures (`contoso.ﬁ`
    /// opens contoso.fi, `contoso.ǳ` contoso.dz), letterlike symbols (`contoso.™`
    /// contoso.tm, `contoso.℡` contoso.tel), CJK squared abbreviations (`contoso.㏄`)
    /// and enclosed ones (`🅪`).
    static let severalLetters: [ClosedRange<UInt32>] = [
        0x0132...0x0133, 0x01C4...0x01CC, 0x01F1...0x01F3, 0x2100...0x214F, 0x3200...0x33FF,
        0xFB00...0xFB17, 0x1F100...0x1F1E5,
    ]

    static func isIgnorable(_ scalar: Unicode.Scalar) -> Bool {
        contains(ignorable, scalar)
    }

    /// An ASCII letter, digit or `-`, or a non-ASCII label character.
    static func isLabel(_ scalar: Unicode.Scalar) -> Bool {
        if scalar.isASCII {
            return isASCIILetter(scalar) || ("0"..."9").contains(scalar) || scalar == "-"
        }
        return !contains(notLabel, scalar) && !contains(ignorable, scalar)
    }

    /// An ASCII letter, or a non-ASCII label character that is a letter.
    static func isLetter(_ scalar: Unicode.Scalar) -> Bool {
        scalar.isASCII ? isASCIILetter(scalar) : isLabel(scalar) && !contains(notLetter, scalar)
    }

    static func isIdeographic(_ scalar: Unicode.Scalar) -> Bool {
        contains(ideographic, scalar)
    }

    static func standsForSeveralLetters(_ scalar: Unicode.Scalar) -> Bool {
        isLabel(scalar) && contains(severalLetters, scalar)
    }

    /// Whether the full stop at `index` opens a host name: a label character just
    /// before it, then two letters or one that stands for several; after a full stop
    /// other than `.`, the next must not be ideographic.
    static func hostNameStop(_ scalars: [Unicode.Scalar], at index: Int) -> Bool {
        guard isFullStop(scalars[index]), index > 0, isLabel(scalars[index - 1]),
            index + 1 < scalars.count
        else { return false }
        let next = scalars[index + 1]
        if scalars[index] != ".", isIdeographic(next) { return false }
        if standsForSeveralLetters(next) { return true }
        return index + 2 < scalars.count && isLetter(next) && isLetter(scalars[index + 2])
    }

    static func isASCIILetter(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar)
    }

    private static func contains(_ ranges: [ClosedRange<UInt32>], _ scalar: Unicode.Scalar) -> Bool {
        let value = scalar.value
        for range in ranges where range.lowerBound <= value && value <= range.upperBound { return true }
        return false
    }
}
