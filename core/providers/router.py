"""Resolve model strings and presets to ``ModelSpec``s, own the providers, fail over.

The router is shared by every run of an instance. It never changes after construction
except for its cache of provider clients: a per-run model override is just a different
``ModelSpec`` (or failover chain) passed to ``stream``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from functools import cached_property
from typing import Any, TypeVar

from gateway.core.errors import RetryableProviderError, UnknownModelError
from gateway.core.messages import Message
from gateway.core.providers.base import ModelRequest, ModelSpec, Provider, ProviderChunk, TextChunk
from gateway.core.providers.echo import EchoProvider
from gateway.core.providers.openai_compat import OpenAICompatProvider
from gateway.core.settings import ECHO_MODEL, ProviderSettings, Settings

log = logging.getLogger(__name__)

ECHO_PROVIDER = "echo"
OPENAI_PROVIDER = "openai"

_T = TypeVar("_T")


@asynccontextmanager
async def _closing(iterator: AsyncIterator[_T]) -> AsyncIterator[AsyncIterator[_T]]:
    """Close a provider stream when left early, so its HTTP response is released now.

    The ``Provider`` protocol promises an ``AsyncIterator``; the implementations are
    async generators, whose ``aclose`` is what stops the underlying request.
    """
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


class ModelRouter:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._provider_settings: dict[str, ProviderSettings] = dict(settings.providers)
        # OPENAI_API_KEY alone makes "openai" usable, as the SDK and every tool expect.
        if OPENAI_PROVIDER not in self._provider_settings and os.environ.get("OPENAI_API_KEY"):
            base_url = os.environ.get("OPENAI_BASE_URL") or None
            self._provider_settings[OPENAI_PROVIDER] = ProviderSettings(base_url=base_url)
        self._providers: dict[str, Provider] = {}

    @property
    def available_providers(self) -> list[str]:
        """Provider names a model string may use: ``echo`` plus the configured ones."""
        return [ECHO_PROVIDER, *sorted(self._provider_settings)]

    def resolve(self, model: str | None = None, preset: str | None = None) -> ModelSpec:
        """A model string (``provider/model``) or a preset name; neither: the instance default."""
        if model and preset:
            raise ValueError("model and model_preset are mutually exclusive")
        if preset:
            return self._resolve_preset(preset)
        if model:
            return self._parse(model)
        model, preset = self._settings.default_model_choice()
        return self._resolve_preset(preset) if preset else self._parse(model or ECHO_MODEL)

    def failover_chain(self, primary: ModelSpec) -> list[ModelSpec]:
        """``primary`` then each ``model_failover`` entry that differs from those before it."""
        chain = [primary]
        for spec in self._failover_specs:
            if spec not in chain:
                chain.append(spec)
        return chain

    @cached_property
    def _failover_specs(self) -> list[ModelSpec]:
        return [self._parse(entry) for entry in self._settings.model_failover]

    def provider(self, name: str) -> Provider:
        """The provider called ``name``, created on first use and shared afterwards."""
        existing = self._providers.get(name)
        if existing is not None:
            return existing
        created: Provider
        if name == ECHO_PROVIDER:
            created = EchoProvider()
        elif name in self._provider_settings:
            created = OpenAICompatProvider(name, self._provider_settings[name])
        else:
            raise UnknownModelError(self._unknown_provider_message(name))
        self._providers[name] = created
        return created

    async def stream(
        self,
        request_spec_chain: list[ModelSpec],
        messages: list[Message],
        tools: list[dict[str, Any]] | None = None,
    ) -> AsyncGenerator[ProviderChunk, None]:
        """Stream from the first spec that answers; fail over only before the first chunk."""
        if not request_spec_chain:
            raise ValueError("stream needs at least one ModelSpec")
        last_error: RetryableProviderError | None = None
        for spec in request_spec_chain:
            # The caller's lists are trusted: skip re-validating the whole history per call.
            request = ModelRequest.model_construct(spec=spec, messages=messages, tools=tools or [])
            answered = False
            try:
                async with _closing(self.provider(spec.provider).stream(request)) as chunks:
                    async for chunk in chunks:
                        answered = True
                        yield chunk
                return
            except RetryableProviderError as exc:
                if answered:
                    raise
                log.warning("model %s failed before answering, trying the next: %s", spec.name, exc)
                last_error = exc
        assert last_error is not None  # the loop ran at least once and never returned
        raise last_error

    async def complete(self, spec: ModelSpec, messages: list[Message]) -> str:
        """The whole text answer of ``spec`` (with failover), e.g. for summaries."""
        parts: list[str] = []
        async with aclosing(self.stream(self.failover_chain(spec), messages)) as chunks:
            async for chunk in chunks:
                if isinstance(chunk, TextChunk):
                    parts.append(chunk.delta)
        return "".join(parts)

    async def aclose(self) -> None:
        """Close every provider created so far; one failing does not keep the others open."""
        providers, self._providers = self._providers, {}
        for name, provider in providers.items():
            try:
                await provider.aclose()
            except Exception:
                log.exception("closing model provider %s failed", name)

    def _resolve_preset(self, preset: str) -> ModelSpec:
        found = self._settings.model_presets.get(preset)
        if found is None:
            configured = ", ".join(sorted(self._settings.model_presets)) or "none"
            raise UnknownModelError(
                f"unknown model preset {preset!r} (configured presets: {configured})"
            )
        spec = self._parse(found.model)
        return spec.model_copy(
            update={"temperature": found.temperature, "max_tokens": found.max_tokens}
        )

    def _parse(self, model: str) -> ModelSpec:
        provider, slash, model_id = model.partition("/")
        if not slash:
            provider, model_id = self._provider_for_bare_model(model), model
        if not provider or not model_id:
            raise UnknownModelError(
                f"model {model!r}: expected 'provider/model', e.g. 'openai/gpt-4o-mini'"
            )
        if provider != ECHO_PROVIDER and provider not in self._provider_settings:
            raise UnknownModelError(f"model {model!r}: {self._unknown_provider_message(provider)}")
        return ModelSpec(provider=provider, model=model_id)

    def _provider_for_bare_model(self, model: str) -> str:
        if OPENAI_PROVIDER in self._provider_settings:
            return OPENAI_PROVIDER
        if len(self._provider_settings) == 1:
            return next(iter(self._provider_settings))
        configured = ", ".join(self.available_providers)
        raise UnknownModelError(
            f"model {model!r} names no provider and none is implied: write 'provider/{model}' "
            f"(available providers: {configured}), or set OPENAI_API_KEY for OpenAI"
        )

    def _unknown_provider_message(self, name: str) -> str:
        available = ", ".join(self.available_providers)
        return (
            f"unknown model provider {name!r} (available: {available}); "
            f"add it under 'providers:' in the config or set OPENAI_API_KEY for 'openai'"
        )
