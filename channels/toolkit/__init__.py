"""The channel toolkit: what every platform adapter shares (see the README's channel section)."""
