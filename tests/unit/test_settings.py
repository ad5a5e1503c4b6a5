"""Settings: YAML, environment overrides, ${VAR} expansion, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.core.errors import ConfigError
from gateway.core.settings import ECHO_MODEL, load_settings

ISSUE_EXAMPLE = """
model: local/fake-model            # default model: provider/model
model_presets:
  fast: {model: local/fake-model, temperature: 0.2, max_tokens: 512}
providers:
  local: {base_url: http://127.0.0.1:11434/v1, api_key: none}
  openai: {api_key: ${OPENAI_API_KEY}}
workspace: ~/.gateway/workspace
redis: {url: redis://127.0.0.1:6379/0}
http: {host: 127.0.0.1, port: 8080, api_keys: []}
agents:
  assistant: {model: local/fake-model, system_prompt: "You are helpful.",
              tools: [read_file, list_dir]}
channels: {}
"""


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config from the real home; the example's ${OPENAI_API_KEY} set unless a test unsets it."""
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    for name in [n for n in os.environ if n.startswith("GATEWAY_") and n != "GATEWAY_HOME"]:
        monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_issue_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    settings = load_settings(write(tmp_path, ISSUE_EXAMPLE))
    assert settings.model == "local/fake-model"
    assert settings.model_presets["fast"].max_tokens == 512
    openai_key = settings.providers["openai"].api_key
    assert openai_key is not None and openai_key.get_secret_value() == "sk-from-env"
    assert "sk-from-env" not in repr(settings)
    assert settings.workspace == Path("~/.gateway/workspace").expanduser()
    assert settings.agent("assistant").tools == ["read_file", "list_dir"]


def test_unset_env_var_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, ISSUE_EXAMPLE))
    message = str(info.value)
    assert "providers.openai.api_key: ${OPENAI_API_KEY} is not set" in message
    assert "${OPENAI_API_KEY:-default}" in message and "\n" not in message


def test_env_var_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GW_TEST_MODEL", raising=False)
    monkeypatch.delenv("GW_TEST_KEY", raising=False)
    monkeypatch.setenv("GW_TEST_HOST", "0.0.0.0")
    text = (
        "model: ${GW_TEST_MODEL:-local/m}\n"
        "providers: {local: {base_url: '${GW_TEST_URL:-http://h:1/v1}',\n"
        "                    api_key: ${GW_TEST_KEY:-}}}\n"
        "http: {host: ${GW_TEST_HOST:-127.0.0.1}, api_keys: [a]}\n"
    )
    monkeypatch.delenv("GW_TEST_URL", raising=False)
    settings = load_settings(write(tmp_path, text))
    assert settings.model == "local/m"
    assert settings.providers["local"].base_url == "http://h:1/v1"
    assert settings.providers["local"].api_key is None
    assert settings.http.host == "0.0.0.0"


def test_list_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_HTTP__API_KEYS", "k1, k2")
    monkeypatch.setenv("GATEWAY_MODEL_FAILOVER", '["local/a", "local/b"]')
    settings = load_settings()
    assert [k.get_secret_value() for k in settings.http.api_keys] == ["k1", "k2"]
    assert settings.model_failover == ["local/a", "local/b"]
    monkeypatch.setenv("GATEWAY_HTTP__API_KEYS", "k")
    assert [k.get_secret_value() for k in load_settings().http.api_keys] == ["k"]


def test_bad_json_in_the_environment_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CHANNELS", "{telegram: x}")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("environment: GATEWAY_CHANNELS: expected a JSON object")


def test_gateway_variables_that_are_not_settings_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path))
    monkeypatch.setenv("GATEWAY_BASE_URL", "http://elsewhere")
    monkeypatch.delenv("OPENAI_API_KEY")  # it would pick OpenAI's default model
    assert load_settings().default_model == ECHO_MODEL
    monkeypatch.setenv("GATEWAY_HTTP__PROT", "1")
    with pytest.raises(ConfigError, match=r"unknown key 'http\.prot'"):
        load_settings()


def test_workspace_follows_gateway_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path / "home"))
    assert load_settings().workspace == tmp_path / "home" / "workspace"


@pytest.mark.parametrize(
    "url", ["localhost:6379", "redis://h:abc/0", "redis://h:6379/x", "http://h", "redis://h:99999"]
)
def test_malformed_redis_url_is_one_line(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_REDIS__URL", url)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "redis.url" in str(info.value) and "not a usable Redis URL" in str(info.value)
    assert "\n" not in str(info.value)


def test_redis_url_password_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_REDIS__URL", "redis://:hunter2@h:6379/x")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "hunter2" not in str(info.value)


def test_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_MODEL", "openai/gpt-4.1")
    monkeypatch.setenv("GATEWAY_REDIS__URL", "redis://127.0.0.1:1/2")
    monkeypatch.setenv("GATEWAY_WORKER__CONCURRENCY", "7")
    settings = load_settings(write(tmp_path, ISSUE_EXAMPLE))
    assert settings.model == "openai/gpt-4.1"
    assert settings.redis.url == "redis://127.0.0.1:1/2"
    assert settings.worker.concurrency == 7


def test_no_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path))
    monkeypatch.delenv("OPENAI_API_KEY")  # it would pick OpenAI's default model
    settings = load_settings()
    assert settings.default_model == ECHO_MODEL
    assert settings.agent().tools == ["read_file", "write_file", "edit_file", "list_dir"]


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "absent.yaml", required=True)


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "modle: x\n"))
    message = str(info.value)
    assert "unknown key 'modle'" in message and "\n" not in message


def test_nested_unknown_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'http.prot'"):
        load_settings(write(tmp_path, "http: {prot: 1}\n"))


def test_bad_value_names_key_value_and_expectation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "http: {port: lots}\n"))
    message = str(info.value)
    assert "http.port" in message and "'lots'" in message and "integer" in message
    assert "\n" not in message


def test_secret_values_are_not_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "providers: {x: {api_key: [1, 2]}}\n"))
    assert "<secret>" in str(info.value)


def test_a_secret_given_as_a_whole_section_is_not_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEAKY_VALUE", "sk-do-not-print")
    for text in ("providers: {openai: ${LEAKY_VALUE}}\n", "redis: ${LEAKY_VALUE}\n"):
        with pytest.raises(ConfigError) as info:
            load_settings(write(tmp_path, text))
        message = str(info.value)
        assert "sk-do-not-print" not in message
        assert "<str>" in message and "valid dictionary" in message


def test_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "model: [unclosed\n"))


def test_unknown_agent(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ISSUE_EXAMPLE))
    with pytest.raises(ConfigError, match=r"agents\.nope"):
        settings.agent("nope")


def test_provider_headers_and_query_are_secret(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "providers:\n"
        "  azure:\n"
        "    base_url: https://example.invalid/openai\n"
        "    headers: {api-key: header-s3cret}\n"
        "    query: {api-version: query-s3cret}\n"
    )
    provider = load_settings(config).providers["azure"]
    shown = f"{provider!r} {provider} {provider.model_dump()} {provider.model_dump_json()}"
    assert "header-s3cret" not in shown and "query-s3cret" not in shown
    assert provider.headers["api-key"].get_secret_value() == "header-s3cret"
    assert provider.query["api-version"].get_secret_value() == "query-s3cret"


def test_a_directory_given_as_the_config_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a directory, not a config file"):
        load_settings(tmp_path, required=True)
    with pytest.raises(ConfigError, match="a directory, not a config file"):
        load_settings(tmp_path)  # an explicit path, even where the file is optional
