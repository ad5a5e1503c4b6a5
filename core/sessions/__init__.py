"""Session storage: the contract and its file and Redis backends."""
