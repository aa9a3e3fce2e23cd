"""`LMConfig`: where a provider connects and how patiently, read from arguments, env and `.env`.

Precedence is explicit arguments > process environment > a `.env` file in the current folder.
The `.env` file is read with python-dotenv's `dotenv_values`, so loading a config never writes
into `os.environ`. This module opens no connection; the providers do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_PROVIDER = "signal"

BASE_URL_ENV = "FRONTIER_SIGNAL_BASE_URL"
API_KEY_ENV = "FRONTIER_SIGNAL_API_KEY"
TIMEOUT_ENV = "FRONTIER_SIGNAL_TIMEOUT"
MAX_RETRIES_ENV = "FRONTIER_SIGNAL_MAX_RETRIES"
PROVIDER_ENV = "FRONTIER_SIGNAL_PROVIDER"
OPENAI_API_KEY_ENV = "OPENAI_API_KEY"
OPENAI_BASE_URL_ENV = "OPENAI_BASE_URL"

PROVIDERS = ("signal", "openai")

# Where each provider reads its URL and key: (variable, default). Timeout and retries are shared.
_URL_AND_KEY = {
    "signal": ((BASE_URL_ENV, DEFAULT_BASE_URL), API_KEY_ENV),
    "openai": ((OPENAI_BASE_URL_ENV, DEFAULT_OPENAI_BASE_URL), OPENAI_API_KEY_ENV),
}


@dataclass(frozen=True)
class LMConfig:
    """Connection settings of one provider.

    Attributes:
        base_url: For the `signal` provider, the server root (`http://host:8000`; a trailing
            `/v1` is accepted and the client adds it when missing). For the `openai` provider,
            the OpenAI-style base URL used as given (`https://api.openai.com/v1`).
        api_key: The bearer key. Never shown by `repr`.
        timeout: Seconds to wait for each HTTP answer.
        max_retries: Retries of the `openai` client on 408/409/429/5xx and broken connections
            (exponential backoff from 0.5 s, honouring `Retry-After`).
    """

    base_url: str
    api_key: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.strip():
            raise ConfigError("base_url must be a non-empty URL such as http://127.0.0.1:8000")
        if not isinstance(self.api_key, str) or not self.api_key:
            raise ConfigError("api_key must be a non-empty string")
        object.__setattr__(self, "base_url", self.base_url.strip().rstrip("/"))
        object.__setattr__(self, "timeout", _positive_float(self.timeout, "timeout"))
        object.__setattr__(self, "max_retries", _non_negative_int(self.max_retries, "max_retries"))

    def __repr__(self) -> str:
        return (
            f"LMConfig(base_url={self.base_url!r}, api_key='***', timeout={self.timeout!r}, "
            f"max_retries={self.max_retries!r})"
        )

    __str__ = __repr__

    @property
    def api_url(self) -> str:
        """The server's OpenAI-compatible root: `base_url` with `/v1` added unless present."""
        return self.base_url if self.base_url.endswith("/v1") else f"{self.base_url}/v1"

    @property
    def server_root(self) -> str:
        """`base_url` without a trailing `/v1` (the key of the warmup cache)."""
        return self.base_url.removesuffix("/v1")

    @classmethod
    def from_env(
        cls,
        provider: str = DEFAULT_PROVIDER,
        *,
        environ: Mapping[str, str] | None = None,
        dotenv_path: str | os.PathLike[str] | None = None,
        **overrides: object,
    ) -> LMConfig:
        """Build a config: explicit `overrides` > environment > `.env`.

        Args:
            provider: `"signal"` (reads `FRONTIER_SIGNAL_BASE_URL` / `FRONTIER_SIGNAL_API_KEY`) or
                `"openai"` (reads `OPENAI_BASE_URL` / `OPENAI_API_KEY`). Both read
                `FRONTIER_SIGNAL_TIMEOUT` and `FRONTIER_SIGNAL_MAX_RETRIES`.
            environ: The environment to read; default `os.environ`.
            dotenv_path: The `.env` file; default `.env` in the current folder (absent is fine).
            **overrides: `base_url`, `api_key`, `timeout`, `max_retries`; `None` means "not given".

        Returns:
            The config.

        Raises:
            ConfigError: No API key anywhere (the message names the variable), a number that
                does not parse, an unknown provider or override.
        """
        if provider not in _URL_AND_KEY:
            choices = ", ".join(PROVIDERS)
            raise ConfigError(f"unknown provider {provider!r}; choose one of {choices}")
        unknown = set(overrides) - {"base_url", "api_key", "timeout", "max_retries"}
        if unknown:
            raise ConfigError(
                f"unknown config option(s) {', '.join(sorted(unknown))}; "
                "expected base_url, api_key, timeout, max_retries"
            )
        lookup = _Lookup(environ, dotenv_path)
        (url_env, url_default), key_env = _URL_AND_KEY[provider]
        given = {name: value for name, value in overrides.items() if value is not None}

        base_url = given.get("base_url") or lookup.get(url_env) or url_default
        api_key = given.get("api_key") or lookup.get(key_env)
        if not api_key:
            raise ConfigError(
                f"no API key for the {provider!r} provider: set {key_env} in the environment or "
                f"in .env, or pass api_key=..."
            )
        timeout = given.get("timeout")
        if timeout is None:
            timeout = _positive_float(lookup.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT, TIMEOUT_ENV)
        max_retries = given.get("max_retries")
        if max_retries is None:
            max_retries = _non_negative_int(
                lookup.get(MAX_RETRIES_ENV) or DEFAULT_MAX_RETRIES, MAX_RETRIES_ENV
            )
        return cls(
            base_url=str(base_url),
            api_key=str(api_key),
            timeout=timeout,  # type: ignore[arg-type]
            max_retries=max_retries,  # type: ignore[arg-type]
        )


def default_provider(
    *,
    environ: Mapping[str, str] | None = None,
    dotenv_path: str | os.PathLike[str] | None = None,
) -> str:
    """The provider name from `FRONTIER_SIGNAL_PROVIDER` (env, then `.env`), default `signal`.

    Raises:
        ConfigError: The variable names an unknown provider.
    """
    name = _Lookup(environ, dotenv_path).get(PROVIDER_ENV) or DEFAULT_PROVIDER
    name = name.strip().lower()
    if name not in PROVIDERS:
        raise ConfigError(f"{PROVIDER_ENV}={name!r} is not a provider; choose one of {PROVIDERS}")
    return name


class _Lookup:
    """Reads one variable from the environment, falling back to `.env` (loaded on first use)."""

    def __init__(
        self, environ: Mapping[str, str] | None, dotenv_path: str | os.PathLike[str] | None
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self._dotenv_path = Path(dotenv_path) if dotenv_path is not None else Path.cwd() / ".env"
        self._dotenv: dict[str, str | None] | None = None

    def get(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value:
            return value
        if self._dotenv is None:
            self._dotenv = _read_dotenv(self._dotenv_path)
        return self._dotenv.get(name) or None


def _read_dotenv(path: Path) -> dict[str, str | None]:
    if not path.is_file():
        return {}
    # The `lm` extra; imported late so that a folder without .env costs nothing.
    from dotenv import dotenv_values

    return dict(dotenv_values(path))


def _positive_float(value: object, name: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    if not number > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    return number


def _non_negative_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}") from None
    if number < 0 or (isinstance(value, float) and value != number):
        raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}")
    return number
