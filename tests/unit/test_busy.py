"""Busy-policy planning (pure): what the next turn covers, what the backlog cap drops."""

from __future__ import annotations

import pytest

from gateway.core.events import RunFailed, RunStarted
from gateway.core.messages import InboundMessage
from gateway.core.settings import AgentSettings, BusyPolicy, ChannelSettings, Settings
from gateway.workers.busy import (
    Entry,
    backlog_notice,
    plan_turn,
    policy_for,
)
from gateway.workers.endings import dead_letter_events, interrupted_event


def settings_with(policy: BusyPolicy, *, max_backlog: int = 20, **extra: object) -> Settings:
    agents = {
        "assistant": AgentSettings(busy_policy=policy, max_backlog=max_backlog),
        "coder": AgentSettings(busy_policy="followup", max_backlog=max_backlog),
    }
    return Settings(agents=agents, **extra)  # type: ignore[arg-type]


def entries(*texts: str, agent: str | None = None, channel: str = "telegram") -> list[Entry]:
    return [
        (
            f"{i + 1}-0",
            InboundMessage(channel=channel, chat_id="c1", sender_id="u", text=t, agent=agent),
        )
        for i, t in enumerate(texts)
    ]


def ids(batch: tuple[Entry, ...]) -> list[str]:
    return [entry_id for entry_id, _ in batch]


def test_followup_runs_one_message_per_turn_oldest_first() -> None:
    plan = plan_turn(entries("a", "b", "c"), settings_with("followup"))
    assert plan.policy == "followup"
    assert ids(plan.batch) == ["1-0"]
    assert plan.run_id == "1-0"
    assert plan.dropped == ()


@pytest.mark.parametrize("policy", ["collect", "steer", "interrupt"])
def test_collecting_policies_take_everything_pending(policy: BusyPolicy) -> None:
    plan = plan_turn(entries("a", "b", "c"), settings_with(policy))
    assert plan.policy == policy
    assert ids(plan.batch) == ["1-0", "2-0", "3-0"]
    assert plan.run_id == "3-0"


def test_batch_stops_where_the_routed_agent_changes() -> None:
    pending = [*entries("a", "b"), *entries("c", agent="coder")]
    pending[2] = ("3-0", pending[2][1])
    plan = plan_turn(pending, settings_with("collect"))
    assert ids(plan.batch) == ["1-0", "2-0"]
    assert plan.agent is None


def test_unknown_agent_falls_back_to_the_default_agent() -> None:
    plan = plan_turn(entries("a", "b", agent="nobody"), settings_with("collect"))
    assert plan.agent is None
    assert plan.policy == "collect"
    assert ids(plan.batch) == ["1-0", "2-0"]


def test_channel_policy_beats_the_agent_policy() -> None:
    settings = settings_with("followup", channels={"slack": ChannelSettings(busy_policy="collect")})
    slack = entries("a", "b", channel="slack")
    assert policy_for(settings, slack[0][1]) == "collect"
    assert ids(plan_turn(slack, settings).batch) == ["1-0", "2-0"]
    assert ids(plan_turn(entries("a", "b"), settings).batch) == ["1-0"]


def test_backlog_cap_drops_the_oldest_and_says_which() -> None:
    pending = entries("one", "two", "three", "four", "five")
    plan = plan_turn(pending, settings_with("collect", max_backlog=2))
    assert ids(plan.dropped) == ["1-0", "2-0", "3-0"]
    assert ids(plan.batch) == ["4-0", "5-0"]
    notice = backlog_notice(plan.dropped, plan.max_backlog)
    assert "3 earlier messages were not processed" in notice
    assert "more than 2" in notice
    assert "“three”" in notice and "“one”" in notice


def test_notice_previews_are_short_and_count_the_rest() -> None:
    long_text = "word " * 50
    pending = entries("a", "b", "c", "d", long_text)
    notice = backlog_notice(pending, 1)
    assert "and 2 older" in notice
    assert "…" in notice
    assert len(notice) < 300


def test_plan_needs_pending_entries() -> None:
    with pytest.raises(ValueError):
        plan_turn([], settings_with("followup"))


def test_interrupted_and_dead_letter_events() -> None:
    event = interrupted_event("9-0", 7)
    assert event.seq == 7 and event.result is not None
    assert event.result.stop_reason == "interrupted"

    fresh = dead_letter_events("9-0", 1, "s", attempts=3, cause="boom", message_ids=["9-0"])
    assert isinstance(fresh[0], RunStarted) and fresh[0].message_ids == ["9-0"]
    assert isinstance(fresh[1], RunFailed) and fresh[1].seq == 2
    assert fresh[1].message_ids == ["9-0"]
    assert "after 3 attempts" in fresh[1].error
    later = dead_letter_events("9-0", 12, "s", attempts=3, cause="boom", message_ids=["9-0"])
    assert [e.seq for e in later] == [12]


def test_default_agent_by_name_or_unnamed_is_one_batch() -> None:
    pending = [*entries("a", "b"), *entries("c", agent="assistant")]
    pending[2] = ("3-0", pending[2][1])
    plan = plan_turn(pending, settings_with("collect"))
    assert ids(plan.batch) == ["1-0", "2-0", "3-0"]
    assert plan.agent is None
    assert plan.steers is False


def test_steer_only_when_the_batch_covers_everything_pending() -> None:
    settings = settings_with("steer")
    assert plan_turn(entries("a", "b"), settings).steers
    mixed = [*entries("a"), ("2-0", entries("b", agent="coder")[0][1])]
    plan = plan_turn(mixed, settings)
    assert ids(plan.batch) == ["1-0"] and plan.newest_id == "2-0"
    assert not plan.steers
