"""Failures: dead letters, a stale lease holder, graceful stop, a crashed worker."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.attempts import record_attempt
from gateway.core.bus.inbound import read_cursor
from gateway.core.bus.lease import Lease
from gateway.core.events import RunCompleted, RunFailed, TextDelta
from gateway.core.metrics import GatewayMetrics
from gateway.core.settings import AgentSettings, ProviderSettings
from gateway.workers.jobs import RetryScheduler, create_job_pool
from tests.fakes.openai_server import FakeModelServer, Reply
from tests.integration.test_worker_kit import (
    Transcript,
    bus_settings,
    running_arq,
    running_workers,
    send,
    session_key,
    target_of,
)


def streaming(t: Transcript, key: str) -> bool:
    return any(isinstance(e, TextDelta) for e in t.events[key])


async def test_dead_letter_after_max_attempts_other_chats_unaffected(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with FakeModelServer() as broken:
        broken.script(*[Reply(status=500, error_message="model down")] * 3)
        settings = bus_settings(
            tmp_path,
            max_deliveries=3,
            providers={
                "bad": ProviderSettings(base_url=broken.base_url, api_key="x", max_retries=0)
            },
            extra_agents={"fragile": AgentSettings(model="bad/fake-model", tools=[])},
        )
        doomed, fine = session_key("doomed"), session_key("fine")
        transcript = Transcript(redis, [doomed, fine])
        pool = await create_job_pool(target_of(redis_url))
        retry = RetryScheduler(pool, base_delay_s=0.05)
        metrics = GatewayMetrics()
        async with (
            running_arq(settings, redis_url),
            running_workers(settings, redis, 2, retry=retry, metrics=metrics),
        ):
            lost_id = await send(redis, settings, "doomed", "hello?", agent="fragile")
            for i in range(5):
                await send(redis, settings, "fine", f"ok {i}")
            await transcript.until(
                lambda t: len(t.terminals(doomed)) >= 1 and len(t.terminals(fine)) >= 5
            )
        await pool.aclose()
    assert len(broken.requests) == 3
    ends = transcript.terminals(doomed)
    assert len(ends) == 1 and isinstance(ends[0], RunFailed)
    assert ends[0].error == "Sorry, I could not process your message after 3 attempts."
    assert ends[0].run_id == lost_id
    assert transcript.replies(fine) == [f"ok {i}" for i in range(5)]
    dead = await redis.xrange(keys.DEAD_LETTER)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields["s"] == doomed and fields["ids"] == lost_id
    assert "failed 3 attempts" in fields["reason"]
    assert json.loads(fields["payload"])[0]["text"] == "hello?"
    assert await read_cursor(redis, doomed) == lost_id
    assert await redis.hget(keys.attempts(doomed), lost_id) is None  # type: ignore[misc]
    assert metrics.registry.get_sample_value("gateway_dead_letters_total") == 1
    assert metrics.registry.get_sample_value("gateway_redeliveries_total") == 2  # attempts 2 and 3
    assert metrics.registry.get_sample_value("gateway_turn_latency_seconds_count") == 3 + 5


async def test_without_arq_a_failed_turn_is_retried_through_claim_stale(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model, claim_idle_ms=1000, lease_ms=1000)
    fake_model.script(Reply(status=500))
    key = session_key("again")
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        entry = await send(redis, settings, "again", "retry me")
        await transcript.runs_ended(1, seconds=15)
    assert len(fake_model.requests) == 2
    assert [e.type for e in transcript.terminals(key)] == ["run.completed"]
    assert transcript.replies(key) == ["echo: retry me"]
    assert await read_cursor(redis, key) == entry


async def test_stale_lease_holder_cannot_commit(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model, lease_ms=1000, claim_idle_ms=1000)
    fake_model.script(Reply(text="slow words " * 30, chunk_delay_s=0.05, chunk_size=4))
    key = session_key("stale")
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        entry = await send(redis, settings, "stale", "hi")
        await transcript.until(lambda t: streaming(t, key))
        # Another holder takes over, as if the worker had paused past its ttl.
        await redis.delete(keys.lease(key))
        intruder = await Lease.acquire(redis, keys.lease(key), ttl_ms=60_000, owner="intruder")
        assert intruder is not None
        await asyncio.sleep(1.0)  # longer than a keepalive period: the worker notices
        assert await read_cursor(redis, key) == "0-0"
        assert transcript.terminals(key) == []
        assert await redis.exists(*keys.stored_session(key)) == 0
        await intruder.release()
        # The signal was left pending: claim_stale re-runs the turn with the same run id.
        await transcript.runs_ended(1, seconds=15)
    ends = transcript.terminals(key)
    assert len(ends) == 1 and isinstance(ends[0], RunCompleted) and ends[0].run_id == entry
    assert await read_cursor(redis, key) == entry


async def test_graceful_stop_hands_unfinished_work_to_another_worker(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model)
    fake_model.script(Reply(text="never finished " * 40, chunk_delay_s=0.05, chunk_size=4))
    key = session_key("stop")
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis, name="first") as (first,):
        entry = await send(redis, settings, "stop", "hello")
        await transcript.until(lambda t: streaming(t, key))
        await first.stop(grace_s=0.1)
        pending = await redis.xpending(keys.ready(keys.partition(key, 4)), keys.WORKER_GROUP)
        assert pending["pending"] == 1  # the unfinished signal was not acked
        assert await read_cursor(redis, key) == "0-0"
        async with running_workers(settings, redis, name="second"):
            await transcript.runs_ended(1)
    ends = transcript.terminals(key)
    assert len(ends) == 1 and isinstance(ends[0], RunCompleted) and ends[0].run_id == entry
    assert ends[0].content == "echo: hello"
    assert await read_cursor(redis, key) == entry


async def test_claim_stale_recovers_the_turn_of_a_crashed_worker(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model, lease_ms=1000, claim_idle_ms=1000)
    fake_model.script(Reply(text="cut short " * 40, chunk_delay_s=0.05, chunk_size=4))
    key = session_key("crash")
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis, name="doomed") as (doomed,):
        entry = await send(redis, settings, "crash", "hello")
        await transcript.until(lambda t: streaming(t, key))
        async with running_workers(settings, redis, name="rescuer") as (rescuer,):
            await doomed.abort()
            assert await redis.exists(keys.lease(key))  # left to lapse, as after kill -9
            await transcript.runs_ended(1, seconds=15)
            assert rescuer.running
    ends = transcript.terminals(key)
    assert len(ends) == 1 and isinstance(ends[0], RunCompleted) and ends[0].run_id == entry
    assert ends[0].content == "echo: hello"
    assert await read_cursor(redis, key) == entry
    assert await record_attempt(redis, key, entry) == 1  # counters were cleared by the commit


async def test_a_message_whose_attempts_all_died_is_dead_lettered_without_running(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model, max_deliveries=2)
    key = session_key("crashloop")
    entry = await send(redis, settings, "crashloop", "poison")
    for _ in range(2):  # two attempts that never finished (their workers died)
        await record_attempt(redis, key, entry)
    transcript = Transcript(redis, [key])
    metrics = GatewayMetrics()
    async with running_workers(settings, redis, metrics=metrics):
        await transcript.runs_ended(1)
        later = await send(redis, settings, "crashloop", "fine now")
        await transcript.runs_ended(2)
    assert len(fake_model.requests) == 1  # only the later message reached the model
    failed, completed = transcript.terminals(key)
    assert isinstance(failed, RunFailed) and failed.run_id == entry
    assert failed.error == "Sorry, I could not process your message after 2 attempts."
    assert [e.type for e in transcript.events[key]][:2] == ["run.started", "run.failed"]
    assert isinstance(completed, RunCompleted) and completed.run_id == later
    assert len(await redis.xrange(keys.DEAD_LETTER)) == 1
    # Read after the workers stopped, so the later turn's latency is recorded too.
    sample = metrics.registry.get_sample_value
    assert sample("gateway_dead_letters_total") == 1
    assert sample("gateway_redeliveries_total") == 1  # the poison message's third attempt
    assert sample("gateway_turn_latency_seconds_count") == 1  # the dead-lettered one never ran


class _Counted(logging.Handler):
    """Sets ``event`` once ``times`` records containing ``text`` were logged."""

    def __init__(self, text: str, times: int) -> None:
        super().__init__()
        self.text = text
        self.left = times
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.left -= 1
            if self.left <= 0:
                self.event.set()


async def test_reading_survives_a_failed_recreation_of_lost_groups(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    # Regression: the NOGROUP path recreated the groups outside any error handling, so
    # a Redis error there ended the read loop and the worker never read a signal again.
    settings = bus_settings(tmp_path)
    key = session_key("deaf")
    user = "limited-worker"
    await redis.acl_setuser(user, enabled=True, passwords=["+pw"], keys="*", commands=["+@all"])
    # The outage's one line: the recreation failed, and the loop went on to back off.
    failed_reads = _Counted("Redis failed", times=1)
    recovered = _Counted("Redis answers again", times=1)
    worker_log = logging.getLogger("gateway.core.bus.backoff")  # Outage logs there
    worker_log.addHandler(failed_reads)
    worker_log.addHandler(recovered)
    limited = Redis.from_url(redis_url, username=user, password="pw", decode_responses=True)
    try:
        async with running_workers(settings, limited):
            await redis.acl_setuser(user, enabled=True, commands=["-xgroup"])
            await redis.delete(*(keys.ready(p) for p in range(settings.worker.ready_partitions)))
            async with asyncio.timeout(15):
                await failed_reads.event.wait()
            await redis.acl_setuser(user, enabled=True, commands=["+xgroup"])
            entry = await send(redis, settings, "deaf", "still there?")
            transcript = Transcript(redis, [key])
            await transcript.runs_ended(1, seconds=15)
    finally:
        worker_log.removeHandler(failed_reads)
        worker_log.removeHandler(recovered)
        await limited.aclose()
        await redis.acl_deluser(user)
    assert transcript.replies(key) == ["still there?"]
    assert await read_cursor(redis, key) == entry
    assert recovered.event.is_set()
