"""Channel adapters: normalize inbound messages, render outbound events."""
