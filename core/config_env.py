"""Where settings meet the environment: ``${VAR}`` in the YAML file, ``GATEWAY_*`` overrides.

- ``${VAR}`` in the file is replaced by the variable; ``${VAR:-default}`` uses
  ``default`` when ``VAR`` is unset or empty. An unset variable without a default is a
  ``ConfigError`` naming the key that uses it (it used to become '' silently, which
  turned ``api_key: ${KEY}`` into "no key").
- ``GATEWAY_HTTP__PORT=8081`` overrides ``http.port`` (prefix ``GATEWAY_``, ``__``
  between nested keys, names case-insensitive). A list takes JSON (``["a","b"]``) or
  a comma-separated form (``a,b``); a mapping takes JSON. A bad value is one line.
  ``GATEWAY_`` variables that name no setting (``GATEWAY_HOME``) are not settings;
  an empty variable counts as unset.
"""

from __future__ import annotations

import json
import os
import re
import types
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from gateway.core.errors import ConfigError

ENV_PREFIX = "GATEWAY_"
NESTED = "__"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MARK = re.compile(r"__gwenv_(\d+)__")


class EnvRefs:
    """The ``${VAR}`` references of one file, swapped for marks before YAML parsing.

    ``{api_key: ${KEY}}`` is not valid YAML as written (``{`` opens a mapping), and a
    default may hold ``:`` or ``,``: so each reference becomes a plain-scalar mark
    (``__gwenv_0__``) and is expanded after parsing.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._refs: list[tuple[str, str | None]] = []

    def mark(self, text: str) -> str:
        return _ENV_REF.sub(self._mark_one, text)

    def _mark_one(self, match: re.Match[str]) -> str:
        self._refs.append((match.group(1), match.group(2)))
        return f"__gwenv_{len(self._refs) - 1}__"

    def expand(self, value: Any, key: str = "") -> Any:
        """Replace the marks in every string of a parsed YAML tree."""
        if isinstance(value, str):
            return _MARK.sub(lambda m: self._value(int(m.group(1)), key), value)
        if isinstance(value, dict):
            return {k: self.expand(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return value

    def _value(self, index: int, key: str) -> str:
        name, default = self._refs[index]
        value = os.environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        if value is not None:  # set but empty: what the operator wrote
            return value
        raise ConfigError(
            f"{self.source}: {key or '<root>'}: ${{{name}}} is not set "
            f"(set it, or write ${{{name}:-default}} for a default)"
        )


class GatewayEnvSource(PydanticBaseSettingsSource):
    """``GATEWAY_*`` variables as a nested mapping, lists accepted comma-separated."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ builds the whole mapping at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return env_overrides(self.settings_cls, os.environ)


def env_overrides(settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given in ``environ``, as a nested mapping ready for validation."""
    result: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split(NESTED)
        if path[0] not in settings_cls.model_fields or not all(path):
            continue  # GATEWAY_HOME, GATEWAY_BASE_URL…: not settings
        if not environ[name]:
            continue  # empty counts as unset (compose's ${VAR:-} passes empty strings)
        annotation = _annotation_at(settings_cls, path)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment: {name} sets a key inside a value set whole")
            node = child
        node[path[-1]] = _decode(name, environ[name], annotation)
    return result


def _annotation_at(model: type[BaseModel], path: list[str]) -> Any:
    """The declared type at ``path`` (None when unknown: validation then names the key)."""
    annotation: Any = model
    for part in path:
        annotation = _unwrap_optional(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                return None
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return None
    return _unwrap_optional(annotation)


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _decode(name: str, raw: str, annotation: Any) -> Any:
    origin = get_origin(annotation)
    is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    if origin in (list, tuple, set, frozenset):
        if raw.lstrip().startswith("["):
            return _json(name, raw, "a JSON list")
        return [item.strip() for item in raw.split(",") if item.strip()]
    if origin is dict or is_model:
        return _json(name, raw, "a JSON object")
    return raw


def _json(name: str, raw: str, expected: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"environment: {name}: expected {expected} ({exc.msg})") from None
