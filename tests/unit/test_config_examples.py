"""The shipped example config must load as documented."""

from __future__ import annotations

from pathlib import Path

from gateway.core.settings import load_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "config"


def test_example_config_loads() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert files, "config/ must ship at least one example"
    for path in files:
        settings = load_settings(path)
        assert settings.agent().system_prompt
