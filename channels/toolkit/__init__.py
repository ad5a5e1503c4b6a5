"""What every platform adapter shares: settings, access, pairing, commands, one connection;
renderer outcomes, shared rate limits, formatting, media, typing."""
