"""The agent runtime and the shared contracts (no imports from other top-level packages)."""
