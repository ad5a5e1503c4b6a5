"""End-to-end tests: real ``python -m workers`` processes on a real redis-server."""
