"""Console settings in one place: the coordinator home (coordinator.settings) plus the console's own options.

Optional file `<home>/console.toml` (hyphenated keys, as in coordinator.toml); the environment overrides it.
The mechanism is federation.settings (pydantic-settings); docs/configuration.md has the table.

| key in console.toml           | default                  | environment variable                             |
|-------------------------------|--------------------------|--------------------------------------------------|
| superlink                     | 127.0.0.1:8000           | TWINLEDGER_CONSOLE_SUPERLINK                     |
| operator-key-file             | <home>/keys/operator.key | TWINLEDGER_CONSOLE_OPERATOR_KEY_FILE (*)         |
| flwr-executable               | flwr beside Python       | TWINLEDGER_CONSOLE_FLWR_EXECUTABLE               |
| root-certificates             | none                     | TWINLEDGER_CONSOLE_ROOT_CERTIFICATES             |
| tls-certfile                  | ""                       | TWINLEDGER_CONSOLE_TLS_CERTFILE                  |
| tls-keyfile                   | ""                       | TWINLEDGER_CONSOLE_TLS_KEYFILE                   |
| trusted-proxies               | []                       | TWINLEDGER_CONSOLE_TRUSTED_PROXIES (JSON)        |
| cookie-secure                 | true                     | TWINLEDGER_CONSOLE_COOKIE_SECURE                 |
| session-ttl-s                 | 28800                    | TWINLEDGER_CONSOLE_SESSION_TTL_S                 |
| session-idle-s                | 3600                     | TWINLEDGER_CONSOLE_SESSION_IDLE_S                |
| login-window-s                | 900                      | TWINLEDGER_CONSOLE_LOGIN_WINDOW_S                |
| max-login-failures-per-client | 20                       | TWINLEDGER_CONSOLE_MAX_LOGIN_FAILURES_PER_CLIENT |
| stop-timeout-s                | 30.0                     | TWINLEDGER_CONSOLE_STOP_TIMEOUT_S                |

(*) The former name TWINLEDGER_CONSOLE_OPERATOR_KEY is still read, after the new one: docs/console.md names it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, field_validator
from pydantic_settings import SettingsConfigDict

from coordinator.settings import CoordinatorSettings
from federation.settings import SettingsError
from federation.web.serving import WebServerSettings

__all__ = ["CONSOLE_CONFIG_NAME", "ConsoleSettings", "ROLES", "SettingsError", "superlink_address"]

CONSOLE_CONFIG_NAME = "console.toml"
ROLES = ("operator", "observer")  # operator: create studies, launch and stop runs; observer: watch only

ResolvedPath = Annotated[Path, AfterValidator(lambda path: path.expanduser().resolve())]


def superlink_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"the SuperLink address must be HOST:PORT, got {text!r}")
    return host, int(port)


class ConsoleSettings(WebServerSettings):
    model_config = SettingsConfigDict(env_prefix="TWINLEDGER_CONSOLE_")
    config_name = CONSOLE_CONFIG_NAME
    fixed = frozenset({"coordinator", "cookie_name"})
    legacy_env = {"operator_key_file": ("TWINLEDGER_CONSOLE_OPERATOR_KEY",)}

    coordinator: CoordinatorSettings
    superlink: str = "127.0.0.1:8000"  # the SuperLink's Control API, HOST:PORT
    # default <home>/keys/operator.key; an empty string in the file means the default
    operator_key_file: Annotated[ResolvedPath | None, BeforeValidator(lambda value: value or None)] = None
    flwr_executable: Path = Field(default_factory=lambda: Path(sys.executable).parent / "flwr")
    # The consortium CA's certificate (ca.pem) the SuperLink's TLS is checked against; none: only a SuperLink
    # started on this machine is reached (its own CA is known), any other is refused with a clear error.
    root_certificates: Annotated[ResolvedPath | None, BeforeValidator(lambda value: value or None)] = None
    # Browsers send a Secure cookie only over HTTPS and to localhost: keep it true behind a TLS proxy.
    cookie_secure: bool = True
    cookie_name: str = "twinledger_console"
    session_ttl_s: int = 8 * 3600
    session_idle_s: int = 3600
    login_window_s: int = 15 * 60
    max_login_failures_per_client: int = 20
    stop_timeout_s: float = 30.0

    @property
    def home(self) -> Path:
        return self.coordinator.home

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.home / 'console.db'}"

    @property
    def runs_dir(self) -> Path:
        return self.coordinator.runs_dir

    @property
    def flwr_home(self) -> Path:
        return self.home / "console-flwr"

    @property
    def operator_key(self) -> Path:
        return self.operator_key_file or self.home / "keys" / "operator.key"

    @classmethod
    def load(cls, home: Path | str) -> "ConsoleSettings":
        coordinator = CoordinatorSettings.load(home)
        return cls.load_file(coordinator.home / CONSOLE_CONFIG_NAME, coordinator=coordinator)

    @field_validator("superlink")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        superlink_address(value)
        return value
