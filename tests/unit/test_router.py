"""ModelRouter resolution rules: model strings, presets, defaults, failover chain."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.errors import UnknownModelError
from gateway.core.providers.base import ModelSpec, TextChunk
from gateway.core.providers.echo import EchoProvider
from gateway.core.providers.openai_compat import OpenAICompatProvider
from gateway.core.providers.router import ModelRouter
from gateway.core.settings import ECHO_MODEL, ModelPreset, ProviderSettings, Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GATEWAY_MODEL", "GATEWAY_MODEL_PRESET"):
        monkeypatch.delenv(name, raising=False)


def make_settings(**values: Any) -> Settings:
    return Settings(**values)


LOCAL = ProviderSettings(base_url="http://127.0.0.1:1/v1")
PRESETS = {
    "fast": ModelPreset(model="local/small", temperature=0.2, max_tokens=256),
    "smart": ModelPreset(model="local/big"),
}


def test_nothing_configured_resolves_to_the_echo_model() -> None:
    spec = ModelRouter(make_settings()).resolve()
    assert spec.name == ECHO_MODEL
    assert spec == ModelSpec(provider="echo", model="echo")


def test_instance_model_is_the_default() -> None:
    router = ModelRouter(make_settings(model="local/small", providers={"local": LOCAL}))
    assert router.resolve() == ModelSpec(provider="local", model="small")


def test_instance_preset_is_the_default_when_no_model() -> None:
    settings = make_settings(model_preset="fast", model_presets=PRESETS, providers={"local": LOCAL})
    spec = ModelRouter(settings).resolve()
    assert spec == ModelSpec(provider="local", model="small", temperature=0.2, max_tokens=256)


def test_explicit_model_and_preset_override_the_default() -> None:
    settings = make_settings(model="local/small", model_presets=PRESETS, providers={"local": LOCAL})
    router = ModelRouter(settings)
    assert router.resolve(model="echo/echo").provider == "echo"
    assert router.resolve(preset="smart") == ModelSpec(provider="local", model="big")
    assert router.resolve(model="local/other").model == "other"


def test_model_and_preset_together_are_rejected() -> None:
    router = ModelRouter(make_settings(model_presets=PRESETS, providers={"local": LOCAL}))
    with pytest.raises(ValueError, match="mutually exclusive"):
        router.resolve(model="local/x", preset="fast")


def test_unknown_preset_names_the_configured_presets() -> None:
    router = ModelRouter(make_settings(model_presets=PRESETS, providers={"local": LOCAL}))
    with pytest.raises(UnknownModelError, match=r"'nope'.*fast, smart"):
        router.resolve(preset="nope")


def test_unknown_instance_preset_is_an_error_not_a_silent_echo() -> None:
    with pytest.raises(UnknownModelError, match="'missing'"):
        ModelRouter(make_settings(model_preset="missing")).resolve()


def test_unknown_provider_names_the_available_ones() -> None:
    router = ModelRouter(make_settings(providers={"local": LOCAL}))
    with pytest.raises(UnknownModelError, match=r"'anthropic'.*echo, local"):
        router.resolve(model="anthropic/claude")
    with pytest.raises(UnknownModelError, match="'anthropic'"):
        router.provider("anthropic")


def test_model_is_split_at_the_first_slash() -> None:
    router = ModelRouter(make_settings(providers={"openrouter": LOCAL}))
    spec = router.resolve(model="openrouter/meta-llama/llama-3-8b")
    assert (spec.provider, spec.model) == ("openrouter", "meta-llama/llama-3-8b")


def test_empty_parts_are_rejected() -> None:
    router = ModelRouter(make_settings(providers={"local": LOCAL}))
    for bad in ("local/", "/model"):
        with pytest.raises(UnknownModelError, match="provider/model"):
            router.resolve(model=bad)


def test_bare_model_goes_to_configured_openai() -> None:
    router = ModelRouter(make_settings(providers={"openai": ProviderSettings(), "local": LOCAL}))
    assert router.resolve(model="gpt-4o-mini") == ModelSpec(provider="openai", model="gpt-4o-mini")


def test_bare_model_goes_to_openai_when_the_key_is_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    router = ModelRouter(make_settings(providers={"local": LOCAL, "other": LOCAL}))
    assert router.resolve(model="gpt-4o").provider == "openai"
    assert "openai" in router.available_providers
    assert isinstance(router.provider("openai"), OpenAICompatProvider)


def test_bare_model_goes_to_the_only_configured_provider() -> None:
    router = ModelRouter(make_settings(providers={"ollama": LOCAL}))
    assert router.resolve(model="llama3") == ModelSpec(provider="ollama", model="llama3")


def test_bare_model_with_no_implied_provider_is_an_error() -> None:
    for providers in ({}, {"a": LOCAL, "b": LOCAL}):
        router = ModelRouter(make_settings(providers=providers))
        with pytest.raises(UnknownModelError, match="'llama3' names no provider"):
            router.resolve(model="llama3")


def test_openai_is_unavailable_without_config_or_key() -> None:
    with pytest.raises(UnknownModelError, match="'openai'"):
        ModelRouter(make_settings()).resolve(model="openai/gpt-4o")


def test_failover_chain_follows_primary_and_skips_duplicates() -> None:
    settings = make_settings(
        providers={"local": LOCAL, "backup": LOCAL},
        model_failover=["local/small", "backup/m", "echo/echo", "backup/m"],
    )
    router = ModelRouter(settings)
    chain = router.failover_chain(router.resolve(model="local/small"))
    assert [s.name for s in chain] == ["local/small", "backup/m", "echo/echo"]


def test_failover_chain_keeps_a_primary_with_different_sampling() -> None:
    settings = make_settings(
        providers={"local": LOCAL}, model_presets=PRESETS, model_failover=["local/small"]
    )
    router = ModelRouter(settings)
    chain = router.failover_chain(router.resolve(preset="fast"))
    assert [s.name for s in chain] == ["local/small", "local/small"]
    assert chain[0].temperature == 0.2 and chain[1].temperature is None


def test_failover_chain_with_a_bad_entry_raises() -> None:
    router = ModelRouter(make_settings(model_failover=["nowhere/model"]))
    with pytest.raises(UnknownModelError, match="'nowhere'"):
        router.failover_chain(router.resolve())


def test_providers_are_created_once_and_shared() -> None:
    router = ModelRouter(make_settings(providers={"local": LOCAL}))
    assert isinstance(router.provider("echo"), EchoProvider)
    assert router.provider("local") is router.provider("local")
    assert router.provider("echo") is router.provider("echo")


def test_router_does_not_mutate_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = make_settings(model_presets=PRESETS, providers={"local": LOCAL})
    before = settings.model_dump()
    router = ModelRouter(settings)
    router.resolve(preset="fast")
    router.resolve(model="gpt-4o")
    router.failover_chain(router.resolve())
    assert settings.model_dump() == before
    assert "openai" not in settings.providers


async def test_stream_and_complete_with_echo() -> None:
    router = ModelRouter(make_settings())
    spec = router.resolve()
    messages = [{"role": "user", "content": "hello there"}]
    chunks = [c async for c in router.stream([spec], messages)]
    assert "".join(c.delta for c in chunks if isinstance(c, TextChunk)) == "hello there"
    assert await router.complete(spec, messages) == "hello there"
    await router.aclose()


async def test_stream_needs_a_spec() -> None:
    router = ModelRouter(make_settings())
    with pytest.raises(ValueError, match="at least one"):
        async for _ in router.stream([], []):
            pass
