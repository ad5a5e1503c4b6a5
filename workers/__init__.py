"""Bus consumers: run core turns for sessions claimed from Redis."""
