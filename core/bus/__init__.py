"""Redis bus primitives: key names, inbound, leases, cursors, outbound, dead letters."""
