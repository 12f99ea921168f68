"""Console settings in one place: the node home (node.settings.NodeSettings) plus the console's own options.

Optional `<home>/console.toml` (hyphenated keys, as in node.toml); the environment overrides it, and
`load(home, superlink=...)` (the command line's --superlink) overrides both. The mechanism is
federation.settings (pydantic-settings); docs/configuration.md has the table.

| key in console.toml       | default  | environment variable                              |
|---------------------------|----------|---------------------------------------------------|
| superlink                 | ""       | TWINLEDGER_NODE_CONSOLE_SUPERLINK (*)             |
| tls-certfile              | ""       | TWINLEDGER_NODE_CONSOLE_TLS_CERTFILE              |
| tls-keyfile               | ""       | TWINLEDGER_NODE_CONSOLE_TLS_KEYFILE               |
| trusted-proxies           | []       | TWINLEDGER_NODE_CONSOLE_TRUSTED_PROXIES (JSON)    |
| cookie-secure             | true     | TWINLEDGER_NODE_CONSOLE_COOKIE_SECURE (*)         |
| session-ttl-s             | 28800    | TWINLEDGER_NODE_CONSOLE_SESSION_TTL_S             |
| session-idle-s            | 1800     | TWINLEDGER_NODE_CONSOLE_SESSION_IDLE_S            |
| login-window-s            | 900      | TWINLEDGER_NODE_CONSOLE_LOGIN_WINDOW_S            |
| max-login-failures-per-ip | 10       | TWINLEDGER_NODE_CONSOLE_MAX_LOGIN_FAILURES_PER_IP |
| max-upload-bytes          | 20971520 | TWINLEDGER_NODE_CONSOLE_MAX_UPLOAD_BYTES          |
| health-timeout-s          | 3.0      | TWINLEDGER_NODE_CONSOLE_HEALTH_TIMEOUT_S          |

(*) The former names TWINLEDGER_SUPERLINK and TWINLEDGER_CONSOLE_COOKIE_SECURE are still read, after the new
ones, because docs/node-console.md and the command-line help name them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from federation.settings import SettingsError
from federation.web.serving import WebServerSettings
from node.settings import NodeSettings

__all__ = ["CONSOLE_CONFIG_NAME", "ConsoleSettings", "ROLES", "SettingsError"]

CONSOLE_CONFIG_NAME = "console.toml"
ROLES = ("it-admin", "viewer")  # it-admin imports records and issues codes; viewer only looks


class ConsoleSettings(WebServerSettings):
    model_config = SettingsConfigDict(env_prefix="TWINLEDGER_NODE_CONSOLE_")
    config_name = CONSOLE_CONFIG_NAME
    fixed = frozenset({"node", "cookie_name"})
    legacy_env = {"superlink": ("TWINLEDGER_SUPERLINK",), "cookie_secure": ("TWINLEDGER_CONSOLE_COOKIE_SECURE",)}

    node: NodeSettings
    superlink: str = ""  # host:port; empty: not configured, the health page says so
    # Browsers send a Secure cookie only over HTTPS (and to http://localhost): false only for plain-HTTP tests.
    cookie_secure: bool = True
    cookie_name: str = "twinledger_console"
    session_ttl_s: int = 8 * 3600
    session_idle_s: int = 1800
    login_window_s: int = 15 * 60
    max_login_failures_per_ip: int = 10
    max_upload_bytes: int = 20 * 1024 * 1024
    health_timeout_s: float = 3.0  # per reachability check (chain, SuperLink)

    @classmethod
    def load(cls, home: Path | str, *, superlink: str | None = None) -> "ConsoleSettings":
        node = NodeSettings.load(home)
        given = {"superlink": superlink} if superlink is not None else {}
        return cls.load_file(node.home / CONSOLE_CONFIG_NAME, node=node, **given)
