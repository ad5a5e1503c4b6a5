"""End-to-end tests: real ``python -m gateway.workers`` processes on a real redis-server."""
