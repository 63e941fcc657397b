-- Host names in any script are links too: the link rule reads Unicode.
--
-- Why: 0009's rule knew host names in ASCII only (its `[a-z0-9-]\.[a-z][a-z]`;
-- in these clusters' C locale `[[:alpha:]]` is ASCII too, and `~*` folds ASCII
-- only), and NotificationText.defang read the same way, so a request's reason
-- "Reset your password at контосо.com today; or contoso-support.com" reached the
-- customer with its look-alike domain intact, beside a defanged
-- contoso-support[.]com. Browsers open every one of these, and mail clients may
-- link them:
--   контосо.com, помощь.рф             letters of other scripts (IDNA);
--   contoso。com, contoso．com,         the other full stops of IDNA (ideographic,
--   contoso｡com                         fullwidth, halfwidth), read as `.`;
--   ｃｏｎｔｏｓｏ．ｃｏｍ, ⓒⓞⓝⓣⓞⓢⓞ.ⓒⓞⓜ   fullwidth and enclosed letters, read as ASCII;
--   cafe\u0301.com                      a combining mark before the dot;
--   contoso.c\u00ADom                   an invisible character (soft hyphen, zero
--                                       width space, variation selector: browsers
--                                       drop several of them);
--   contoso.ﬁ, contoso.™, contoso.㏄    one character standing for two letters
--                                       (opens contoso.fi, .tm, .cc).
-- (Punycode, xn--j1agcbarf.xn--p1ai, is ASCII: 0009's rule already refused it.)
--
-- The rule, still stated once, by lockbox.carries_link (0014):
--   * 0009's other forms, unchanged: `scheme://`, `www.`, `mailto:`, `href=`,
--     `scheme:x`, `\\x`;
--   * a host name, now in any script: a label character, a full stop, then two
--     letters or one character that stands for several, where
--       label character: an ASCII letter, digit or `-`, or any other character
--         but controls, spaces, punctuation, private use and the invisible ones
--         below (so letters, marks and digits of every script, and symbols,
--         which browsers accept in host names too);
--       full stop: `.`, `。`, `．` or `｡`;
--       letter: an ASCII letter, or a non-ASCII label character that is none of:
--         a hyphen, a digit of a script in everyday use, a superscript or
--         subscript, a fraction, a circled digit, currency, an arrow, a
--         mathematical or technical symbol, box drawing, a dingbat, a flag or an
--         emoji;
--       several letters: Latin digraphs and ligatures, letterlike symbols, CJK
--         squared and enclosed abbreviations;
--   * the text is read twice: as written, and without Unicode's default-ignorable
--     code points (soft hyphen, zero-width characters, direction marks, variation
--     selectors, tags), so that no invisible character hides any of these forms.
-- The bracket expressions below spell those sets. The broker states them in
-- Sources/LockboxCore/HostNameCharacters.swift, where NotificationText.defang
-- reads them; a test compares the two in each place of a host name, for every
-- scalar of the Basic Multilingual Plane and samples of the other planes.
--
-- Prose still passes, as 0009 meant it to: a full stop followed by a space ("It
-- failed. Then"), numbers ("1.5 hours", "v2.0", "٣.٥", "１．５倍"), abbreviations
-- ("e.g. this", "Mr. Smith"), footnotes ("done.¹²"), emoji ("Thanks.🙂🙂"),
-- quotes ("Done.”"). Chinese and Japanese end a sentence with `。` and go on
-- without a space, so `。`, `．` or `｡` followed by a Han, kana or Hangul
-- character ends a sentence ("今日は晴れ。明日は雨。" passes). The price: a host
-- name written that way with a CJK top-level domain ("例え。中国") passes;
-- written with `.`, or with another script's top-level domain ("例え。com"), it
-- is refused.
--
-- Rows written before this migration:
--   * Queued ones (neither sent nor withdrawn) that the new rule refuses are
--     withdrawn here, never sent: sending a link is what the rule forbids, and a
--     CHECK runs again on every UPDATE of a row, so such a row could otherwise be
--     neither sent nor withdrawn, which stops delivery and its request's decision
--     (0014's header tells how that happened after 0009).
--   * Sent and withdrawn ones stay as they are: a notification is the record of
--     what was (not) said, and nothing updates it again (delivery and 0013's
--     trigger change queued rows only, and notifications_sent_or_withdrawn keeps
--     both states final), so the CHECK never runs on them again.
--   * PostgreSQL does not check existing rows when a constraint's function
--     changes: notifications_no_links would stay marked validated over sent rows
--     that break the new rule, and a dump of such a database, which creates a
--     validated CHECK before it loads the rows, would not load this table. So the
--     constraint is added again NOT VALID (a NOT VALID constraint is dumped after
--     the rows) and validated where every row passes, as 0014 did.
--
-- CREATE OR REPLACE FUNCTION keeps the function's owner and privileges (EXECUTE
-- revoked from PUBLIC and granted to lockbox_app, by 0014); they are stated again
-- below so that this file says what it leaves.

ALTER TABLE lockbox.notifications DROP CONSTRAINT IF EXISTS notifications_no_links;

CREATE OR REPLACE FUNCTION lockbox.carries_link(text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN EXISTS (
    SELECT FROM (VALUES ($1), (regexp_replace($1,
        -- Unicode's default-ignorable code points
        '[\u00AD\u034F\u061C\u115F\u1160\u17B4\u17B5\u180B-\u180F\u200B-\u200F\u202A-\u202E'
        '\u2060-\u206F\u3164\uFE00-\uFE0F\uFEFF\uFFA0\uFFF0-\uFFF8\U0001BCA0-\U0001BCA3'
        '\U0001D173-\U0001D17A\U000E0000-\U000E0FFF]', '', 'g'))) AS seen (text)
    WHERE seen.text ~* (
        -- 0009's forms but the ASCII host name
        '[a-z][a-z0-9+.-]*://|www\.|mailto:|href\s*=|\m[a-z][a-z0-9+.-]*:[^[:space:]]|\\\\[^[:space:]]'
        -- a host name: a label character ...
        '|'
        '[-a-z0-9\u00AA\u00B2\u00B3\u00B5\u00B9\u00BA\u00BC-\u00BE\u00C0-\u00D6\u00D8-\u00F6'
        '\u00F8-\u034E\u0350-\u061B\u061D-\u115E\u1161-\u17B3\u17B6-\u180A\u1810-\u1FFF'
        '\u2070-\u2DFF\u2E80-\u2FFF\u3005-\u3007\u3021-\u302F\u3031-\u303C\u3040-\u3163'
        '\u3165-\uD7FF\uF900-\uFDFF\uFE20-\uFE2F\uFE63\uFE70-\uFEFE\uFF0D\uFF10-\uFF19\uFF21-\uFF3A'
        '\uFF41-\uFF5A\uFF66-\uFF9F\uFFA1-\uFFDF\U00010000-\U0001BC9F\U0001BCA4-\U0001D172'
        '\U0001D17B-\U000DFFFF]'
        -- ... a full stop (after `。`, `．` or `｡`, no Han, kana or Hangul) ...
        '(\.|[\u3002\uFF0E\uFF61]'
        '(?![\u1100-\u11FF\u2E80-\u9FFF\uA960-\uA97F\uAC00-\uD7FF\uF900-\uFAFF\uFF66-\uFFDC'
        '\U0001AFF0-\U0001B2FF\U00020000-\U0003FFFF]))'
        -- ... then two letters ...
        '([a-z\u00AA\u00B5\u00BA\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u034E\u0350-\u061B\u061D-\u065F'
        '\u066A-\u06EF\u06FA-\u07BF\u07CA-\u0965\u0970-\u09E5\u09F0-\u0A65\u0A70-\u0AE5'
        '\u0AF0-\u0B65\u0B70-\u0BE5\u0BF0-\u0C65\u0C70-\u0CE5\u0CF0-\u0D65\u0D70-\u0DE5'
        '\u0DF0-\u0E4F\u0E5A-\u0ECF\u0EDA-\u0F1F\u0F34-\u103F\u104A-\u108F\u109A-\u115E'
        '\u1161-\u17B3\u17B6-\u17DF\u17EA-\u180A\u181A-\u1945\u1950-\u19CF\u19DB-\u1FFF'
        '\u20D0-\u214F\u2160-\u2188\u249C-\u24E9\u2C00-\u2DFF\u2E80-\u2FFF\u3005-\u3007'
        '\u3021-\u302F\u3031-\u303C\u3040-\u3163\u3165-\uD7FF\uF900-\uFDFF\uFE20-\uFE2F'
        '\uFE70-\uFEFE\uFF21-\uFF3A\uFF41-\uFF5A\uFF66-\uFF9F\uFFA1-\uFFDF\U00010000-\U0001BC9F'
        '\U0001BCA4-\U0001D172\U0001D17B-\U0001D7CD\U0001D800-\U0001EFFF\U0001F100-\U0001F1E5'
        '\U0001FC00-\U000DFFFF]{2}'
        -- ... or one character that stands for several
        '|[\u0132\u0133\u01C4-\u01CC\u01F1-\u01F3\u2100-\u214F\u3200-\u33FF\uFB00-\uFB17'
        '\U0001F100-\U0001F1E5])'));

COMMENT ON FUNCTION lockbox.carries_link(text) IS
    'The notification link rule (0009, 0017): a URL, a scheme: form, a host name in any script or a UNC path, also behind invisible characters.';

REVOKE EXECUTE ON FUNCTION lockbox.carries_link(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lockbox.carries_link(text) TO lockbox_app;

UPDATE lockbox.notifications
SET withdrawn_at = now(),
    withdrawn_reason = 'queued before host names in every script were refused (migration 0017) and carries one: never sent'
WHERE sent_at IS NULL AND withdrawn_at IS NULL AND lockbox.carries_link(subject || ' ' || body);

ALTER TABLE lockbox.notifications ADD CONSTRAINT notifications_no_links
    CHECK (NOT lockbox.carries_link(subject || ' ' || body)) NOT VALID;

DO $$
BEGIN
    ALTER TABLE lockbox.notifications VALIDATE CONSTRAINT notifications_no_links;
EXCEPTION WHEN check_violation THEN
    RAISE NOTICE 'notifications sent before migration 0017 carry text the link rule now refuses; they stay as they were, and the rule holds for every new notification';
END $$;
