"""`LMConfig` and provider selection: precedence, `.env`, errors that name the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from frontier_signal.lm import (
    ConfigError,
    LMConfig,
    OpenAIProvider,
    SignalProvider,
    UnifiedLMClient,
    UnifiedLMProvider,
    create_provider,
)
from frontier_signal.lm.config import default_provider

LM_VARIABLES = (
    "FRONTIER_SIGNAL_BASE_URL",
    "FRONTIER_SIGNAL_API_KEY",
    "FRONTIER_SIGNAL_TIMEOUT",
    "FRONTIER_SIGNAL_MAX_RETRIES",
    "FRONTIER_SIGNAL_PROVIDER",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No LM variable in the environment, and a current folder without `.env`."""
    for name in LM_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_fill_everything_but_the_key(clean_env):
    config = LMConfig.from_env(environ={"FRONTIER_SIGNAL_API_KEY": "sk-env"})
    assert config.base_url == "http://127.0.0.1:8000"
    assert config.api_url == "http://127.0.0.1:8000/v1"
    assert (config.api_key, config.timeout, config.max_retries) == ("sk-env", 120.0, 3)


def test_explicit_arguments_beat_environment_which_beats_dotenv(clean_env):
    (clean_env / ".env").write_text(
        "FRONTIER_SIGNAL_BASE_URL=http://dotenv:1\nFRONTIER_SIGNAL_API_KEY=sk-dotenv\n"
        "FRONTIER_SIGNAL_TIMEOUT=5\nFRONTIER_SIGNAL_MAX_RETRIES=7\n"
    )
    from_dotenv = LMConfig.from_env()
    assert (from_dotenv.base_url, from_dotenv.api_key) == ("http://dotenv:1", "sk-dotenv")
    assert (from_dotenv.timeout, from_dotenv.max_retries) == (5.0, 7)

    environ = {"FRONTIER_SIGNAL_BASE_URL": "http://env:2", "FRONTIER_SIGNAL_TIMEOUT": "9"}
    from_env = LMConfig.from_env(environ=environ)
    assert (from_env.base_url, from_env.api_key, from_env.timeout) == (
        "http://env:2",
        "sk-dotenv",
        9.0,
    )

    explicit = LMConfig.from_env(environ=environ, base_url="http://arg:3", max_retries=0)
    assert (explicit.base_url, explicit.timeout, explicit.max_retries) == ("http://arg:3", 9.0, 0)


def test_dotenv_is_read_without_writing_into_os_environ(clean_env):
    (clean_env / ".env").write_text("FRONTIER_SIGNAL_API_KEY=sk-dotenv\n")
    assert LMConfig.from_env().api_key == "sk-dotenv"
    assert "FRONTIER_SIGNAL_API_KEY" not in os.environ


def test_the_real_process_environment_is_read(clean_env, monkeypatch):
    monkeypatch.setenv("FRONTIER_SIGNAL_API_KEY", "sk-process")
    monkeypatch.setenv("FRONTIER_SIGNAL_BASE_URL", "http://process:4/v1/")
    config = LMConfig.from_env()
    assert (config.api_key, config.base_url, config.server_root) == (
        "sk-process",
        "http://process:4/v1",
        "http://process:4",
    )
    assert config.api_url == "http://process:4/v1"


def test_missing_signal_key_names_the_variable(clean_env):
    with pytest.raises(ConfigError, match="FRONTIER_SIGNAL_API_KEY") as caught:
        LMConfig.from_env()
    assert isinstance(caught.value, ValueError)


def test_missing_openai_key_names_openai_variable(clean_env):
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        create_provider("openai")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        LMConfig.from_env("openai", environ={"FRONTIER_SIGNAL_API_KEY": "sk-signal-only"})


def test_openai_provider_reads_openai_variables(clean_env):
    environ = {"OPENAI_API_KEY": "sk-oa", "OPENAI_BASE_URL": "http://local:9/v1"}
    config = LMConfig.from_env("openai", environ=environ)
    assert (config.base_url, config.api_key) == ("http://local:9/v1", "sk-oa")
    assert LMConfig.from_env("openai", environ={"OPENAI_API_KEY": "k"}).base_url == (
        "https://api.openai.com/v1"
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FRONTIER_SIGNAL_TIMEOUT", "soon"),
        ("FRONTIER_SIGNAL_TIMEOUT", "-1"),
        ("FRONTIER_SIGNAL_MAX_RETRIES", "3.5"),
        ("FRONTIER_SIGNAL_MAX_RETRIES", "-2"),
    ],
)
def test_malformed_numbers_name_the_variable(clean_env, variable, value):
    environ = {"FRONTIER_SIGNAL_API_KEY": "sk-x", variable: value}
    with pytest.raises(ConfigError, match=variable):
        LMConfig.from_env(environ=environ)


def test_malformed_explicit_arguments_name_the_argument():
    with pytest.raises(ConfigError, match="timeout"):
        LMConfig("http://x", "sk-x", timeout=0)
    with pytest.raises(ConfigError, match="max_retries"):
        LMConfig("http://x", "sk-x", max_retries=True)
    with pytest.raises(ConfigError, match="api_key"):
        LMConfig("http://x", "")
    with pytest.raises(ConfigError, match="frobnicate"):
        LMConfig.from_env(environ={"FRONTIER_SIGNAL_API_KEY": "k"}, frobnicate=1)


def test_repr_and_str_never_show_the_key():
    config = LMConfig("http://x", "sk-very-secret-123")
    assert "sk-very-secret-123" not in repr(config)
    assert "sk-very-secret-123" not in str(config)
    provider = SignalProvider(config)
    assert "sk-very-secret-123" not in repr(provider)


def test_create_provider_rejects_unknown_names_listing_the_choices():
    with pytest.raises(ValueError, match="signal, openai") as caught:
        create_provider("synth", api_key="k")
    assert "'synth'" in str(caught.value)
    with pytest.raises(ValueError, match="signal, openai"):
        UnifiedLMClient("modal")


@pytest.mark.anyio
async def test_create_provider_builds_either_provider_satisfying_the_protocol(clean_env):
    signal = create_provider("signal", api_key="sk-a", base_url="http://h:1")
    openai_provider = create_provider("openai", api_key="sk-b", base_url="http://h:1/v1")
    try:
        assert isinstance(signal, SignalProvider) and isinstance(openai_provider, OpenAIProvider)
        assert isinstance(signal, UnifiedLMProvider)
        assert isinstance(openai_provider, UnifiedLMProvider)
        assert str(signal.client.base_url) == "http://h:1/v1/"
        assert str(openai_provider.client.base_url) == "http://h:1/v1/"
        assert signal.client.max_retries == 3
        assert await openai_provider.warmup("gpt-4o-mini") is True
    finally:
        await signal.close()
        await openai_provider.close()


def test_default_provider_comes_from_environment_then_dotenv(clean_env):
    assert default_provider(environ={}) == "signal"
    (clean_env / ".env").write_text("FRONTIER_SIGNAL_PROVIDER=openai\n")
    assert default_provider(environ={}) == "openai"
    assert default_provider(environ={"FRONTIER_SIGNAL_PROVIDER": "signal"}) == "signal"
    with pytest.raises(ConfigError, match="FRONTIER_SIGNAL_PROVIDER"):
        default_provider(environ={"FRONTIER_SIGNAL_PROVIDER": "synth"})


@pytest.mark.anyio
async def test_unified_client_creates_providers_lazily_and_reports_missing_config(clean_env):
    async with UnifiedLMClient() as client:  # no key anywhere: creating the client is fine
        assert client.default_provider == "signal"
        with pytest.raises(ConfigError, match="FRONTIER_SIGNAL_API_KEY"):
            await client.create_chat_completion("m", [{"role": "user", "content": "hi"}])


def test_importing_lm_pulls_in_neither_torch_nor_the_server():
    code = (
        "import sys, frontier_signal.lm\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith(("
        "'frontier_signal.server', 'frontier_signal.engine', 'frontier_signal.backend'))]\n"
        "assert not bad, bad\n"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
