"""What every platform adapter shares: settings, access, pairing, commands, one connection."""
