"""Console settings in one place: the coordinator home (coordinator.settings) plus the console's own options.

Optional file `<home>/console.toml` (flat keys) and environment variables override the defaults:
TWINLEDGER_CONSOLE_SUPERLINK (HOST:PORT), TWINLEDGER_CONSOLE_COOKIE_SECURE (true/false),
TWINLEDGER_CONSOLE_OPERATOR_KEY (path of the operator's key file).
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from coordinator.settings import CoordinatorSettings, SettingsError

CONSOLE_CONFIG_NAME = "console.toml"
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent  # the Flower app (pyproject.toml) `flwr run` submits
ROLES = ("operator", "observer")  # operator: create studies, launch and stop runs; observer: watch only


@dataclass(frozen=True)
class ConsoleSettings:
    coordinator: CoordinatorSettings
    superlink: str = "127.0.0.1:8000"  # the SuperLink's Control API, HOST:PORT
    operator_key_file: Path | None = None  # default <home>/keys/operator.key
    flwr_executable: Path = field(default_factory=lambda: Path(sys.executable).parent / "flwr")
    app_dir: Path = PROJECT_ROOT
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
        path = coordinator.home / CONSOLE_CONFIG_NAME
        data: dict = {}
        if path.exists():
            try:
                data = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"{path} is not valid TOML: {exc}") from None
        env = os.environ
        try:
            values = {
                "superlink": str(env.get("TWINLEDGER_CONSOLE_SUPERLINK", data.get("superlink", cls.superlink))),
                "cookie_secure": _boolean(env.get("TWINLEDGER_CONSOLE_COOKIE_SECURE", data.get("cookie-secure", True))),
                "session_ttl_s": int(data.get("session-ttl-s", cls.session_ttl_s)),
                "session_idle_s": int(data.get("session-idle-s", cls.session_idle_s)),
            }
            key = env.get("TWINLEDGER_CONSOLE_OPERATOR_KEY", data.get("operator-key-file"))
            if key:
                values["operator_key_file"] = Path(key).expanduser().resolve()
            if data.get("flwr-executable"):
                values["flwr_executable"] = Path(data["flwr-executable"])
            if data.get("app-dir"):
                values["app_dir"] = Path(data["app-dir"]).expanduser().resolve()
            superlink_address(values["superlink"])
        except ValueError as exc:
            raise SettingsError(f"console settings in {path} or the environment are malformed: {exc}") from None
        return replace(cls(coordinator=coordinator), **values)


def superlink_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"the SuperLink address must be HOST:PORT, got {text!r}")
    return host, int(port)


def _boolean(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")
