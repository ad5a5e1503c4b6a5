"""Is the model setup usable? ``gateway start`` checks it offline (one warning line per
problem); ``gateway doctor`` also asks each provider: reachable, key accepted, model listed.

Without this a broken setup (no key, a typo in the model name) was found only when
the first message arrived.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import openai

from gateway.core.errors import GatewayError
from gateway.core.providers.router import ModelRouter
from gateway.core.settings import ProviderSettings, Settings

OPENAI = "openai"
ECHO = "echo"
_CHECK_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def models_in_use(settings: Settings) -> list[str]:
    """The default model, each agent's, each preset's and the failover chain, once each."""
    names = [settings.default_model, *settings.model_failover]
    names += [agent.model for agent in settings.agents.values() if agent.model]
    names += [preset.model for preset in settings.model_presets.values()]
    return list(dict.fromkeys(names))


def _provider_settings(settings: Settings, name: str) -> ProviderSettings | None:
    if name in settings.providers:
        return settings.providers[name]
    if name == OPENAI and os.environ.get("OPENAI_API_KEY"):
        return ProviderSettings(base_url=os.environ.get("OPENAI_BASE_URL") or None)
    return None


def static_problems(settings: Settings) -> list[str]:
    """What can be known without a network call: unknown providers, missing keys."""
    router = ModelRouter(settings)
    problems: list[str] = []
    for model in models_in_use(settings):
        try:
            spec = router.resolve(model)
        except GatewayError as exc:
            problems.append(str(exc))
            continue
        if spec.provider == ECHO:
            continue
        provider = _provider_settings(settings, spec.provider)
        missing_key = provider is not None and provider.api_key is None
        if spec.provider == OPENAI and missing_key and not os.environ.get("OPENAI_API_KEY"):
            problems.append(
                f"model {model}: provider openai has no API key "
                "(set OPENAI_API_KEY or providers.openai.api_key)"
            )
    return problems


def _client(name: str, provider: ProviderSettings) -> openai.AsyncOpenAI:
    key = provider.api_key.get_secret_value() if provider.api_key else None
    if key is None and name != OPENAI:
        key = "none"  # local servers need no key, the SDK wants one
    return openai.AsyncOpenAI(
        api_key=key, base_url=provider.base_url, timeout=_CHECK_TIMEOUT_S, max_retries=0
    )


async def check_provider(settings: Settings, name: str, model_ids: list[str]) -> list[Check]:
    """Reachable, key accepted, every model in ``model_ids`` listed by the provider."""
    provider = _provider_settings(settings, name)
    if provider is None:
        return [Check(f"provider {name}", False, "not configured")]
    try:
        client = _client(name, provider)
    except openai.OpenAIError as exc:
        return [Check(f"provider {name}", False, f"cannot create a client: {exc}")]
    where = provider.base_url or "default url"
    try:
        listed = {model.id async for model in client.models.list()}
    except openai.AuthenticationError as exc:
        return [Check(f"provider {name}", False, f"{where}: key refused (HTTP {exc.status_code})")]
    except openai.PermissionDeniedError:
        return [Check(f"provider {name}", False, f"{where}: key refused (HTTP 403)")]
    except openai.APIConnectionError as exc:
        return [Check(f"provider {name}", False, f"{where}: unreachable ({exc.message})")]
    except openai.APIStatusError as exc:
        detail = f"{where}: reachable, but listing models answered HTTP {exc.status_code}"
        return [Check(f"provider {name}", True, detail)]
    finally:
        await client.close()
    checks = [Check(f"provider {name}", True, f"{where}: reachable, key accepted")]
    for model_id in model_ids:
        found = model_id in listed
        shown = ", ".join(sorted(listed)[:10]) or "none"
        detail = "listed" if found else f"not listed by the provider (it lists: {shown})"
        checks.append(Check(f"model {name}/{model_id}", found, detail))
    return checks


async def doctor(settings: Settings) -> list[Check]:
    """Every check, in order: the configuration, then each provider in use."""
    checks = [Check("config", False, problem) for problem in static_problems(settings)]
    router = ModelRouter(settings)
    by_provider: dict[str, list[str]] = {}
    for model in models_in_use(settings):
        try:
            spec = router.resolve(model)
        except GatewayError:
            continue  # reported above
        if spec.provider == ECHO:
            checks.append(Check(f"model {model}", True, "built-in offline echo model"))
            continue
        by_provider.setdefault(spec.provider, []).append(spec.model)
    for name, model_ids in by_provider.items():
        checks += await check_provider(settings, name, list(dict.fromkeys(model_ids)))
    return checks
