"""Channel name -> how to build it. Adding a channel is one entry in ``BUILTIN_CHANNELS``.

A factory is named by ``"module:function"`` and imported only when that channel is
enabled, so a platform SDK is never imported by a gateway that does not use it.
``factory=None`` marks a channel with no platform to post to: its replies are read
from the session's outbound stream directly (HTTP backends over SSE, the SDK, the
CLI), so workers send it no delivery signals.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from gateway.channels.base import Channel, ChannelContext
from gateway.core.errors import ConfigError
from gateway.core.settings import ChannelSettings

ChannelFactory = Callable[[ChannelContext], Channel]


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    name: str
    factory: str | None = None
    """``"package.module:function"`` building the ``Channel``; None: no platform deliverer."""

    @property
    def delivers(self) -> bool:
        return self.factory is not None

    def load_factory(self) -> ChannelFactory:
        if self.factory is None:
            raise ConfigError(f"channels.{self.name}: this channel has no platform adapter")
        module_name, _, attribute = self.factory.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"channels.{self.name}: cannot import {module_name} ({exc}); "
                "is the channel's extra installed?"
            ) from exc
        factory: ChannelFactory = getattr(module, attribute)
        return factory


class ChannelRegistry:
    """The known channels; ``names()`` bounds the ``channel`` values the gateway accepts."""

    def __init__(self, specs: Iterable[ChannelSpec]) -> None:
        self._specs: dict[str, ChannelSpec] = {spec.name: spec for spec in specs}

    def names(self) -> frozenset[str]:
        return frozenset(self._specs)

    def get(self, name: str) -> ChannelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise ConfigError(
                f"channels.{name}: unknown channel (known: {sorted(self._specs)})"
            ) from None

    def enabled_platforms(self, configured: Mapping[str, ChannelSettings]) -> list[ChannelSpec]:
        """Specs of the enabled configured channels that have a platform adapter.

        The one decision of which channels a ``Deliverer`` serves: ``gateway start``
        runs a deliverer for each, and every worker signals exactly these (``delivered``),
        so no signal is written that nothing reads. An unknown configured name is a
        ConfigError, enabled or not.
        """
        specs = [(self.get(name), config) for name, config in configured.items()]
        return [spec for spec, config in specs if spec.delivers and config.enabled]

    def delivered(self, configured: Mapping[str, ChannelSettings]) -> frozenset[str]:
        """Names of ``enabled_platforms``: the channels workers send delivery signals to."""
        return frozenset(spec.name for spec in self.enabled_platforms(configured))


BUILTIN_CHANNELS: tuple[ChannelSpec, ...] = (
    ChannelSpec("http"),
    ChannelSpec("sdk"),
    ChannelSpec("cli"),
    ChannelSpec("web"),
    ChannelSpec("telegram", "gateway.channels.telegram:build_channel"),
)

REGISTRY = ChannelRegistry(BUILTIN_CHANNELS)
