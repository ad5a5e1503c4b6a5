"""Model providers: the contract (``base``), OpenAI-compatible, the offline echo model,
and the router that resolves ``provider/model`` strings, presets and failover."""
