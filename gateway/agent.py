"""Seed 000 imports hooks from ``<package>.agent``; the same classes as ``gateway``."""

from gateway.core.hooks import AgentHook, AgentHookContext

__all__ = ["AgentHook", "AgentHookContext"]
