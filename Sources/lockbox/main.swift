print("lockbox")
