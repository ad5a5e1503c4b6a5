"""Bus consumers: run core turns for sessions claimed from Redis, and the arq side jobs.

``Worker`` (``workers.worker``) is the consumer; ``gateway worker`` (alias ``python -m
workers``) runs one as a process (``gateway.worker_process.run_worker``).
"""

from gateway.workers.jobs import RetryScheduler, arq_worker_settings, create_job_pool, schedule_tool
from gateway.workers.worker import Worker

__all__ = ["RetryScheduler", "Worker", "arq_worker_settings", "create_job_pool", "schedule_tool"]
