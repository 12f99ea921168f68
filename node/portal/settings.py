"""Portal settings in one place: the node home (node.settings.NodeSettings) plus the portal's own options.

Optional file `<home>/portal.toml` (hyphenated keys, as in node.toml); the environment overrides it. The
mechanism is federation.settings (pydantic-settings); docs/configuration.md has the table.

| key in portal.toml       | default | environment variable                       |
|--------------------------|---------|--------------------------------------------|
| tls-certfile             | ""      | TWINLEDGER_PORTAL_TLS_CERTFILE             |
| tls-keyfile              | ""      | TWINLEDGER_PORTAL_TLS_KEYFILE              |
| trusted-proxies          | []      | TWINLEDGER_PORTAL_TRUSTED_PROXIES (JSON)   |
| cookie-secure            | true    | TWINLEDGER_PORTAL_COOKIE_SECURE            |
| session-ttl-s            | 3600    | TWINLEDGER_PORTAL_SESSION_TTL_S            |
| session-idle-s           | 900     | TWINLEDGER_PORTAL_SESSION_IDLE_S           |
| enrolment-code-ttl-s     | 604800  | TWINLEDGER_PORTAL_ENROLMENT_CODE_TTL_S     |
| login-window-s           | 900     | TWINLEDGER_PORTAL_LOGIN_WINDOW_S           |
| max-failures-per-account | 5       | TWINLEDGER_PORTAL_MAX_FAILURES_PER_ACCOUNT |
| max-failures-per-ip      | 20      | TWINLEDGER_PORTAL_MAX_FAILURES_PER_IP      |
| device-cookie-ttl-s      | 15552000| TWINLEDGER_PORTAL_DEVICE_COOKIE_TTL_S      |
| signature-deadline-s     | 3600    | TWINLEDGER_PORTAL_SIGNATURE_DEADLINE_S     |
| relay-wait-s             | 30.0    | TWINLEDGER_PORTAL_RELAY_WAIT_S             |
| page-relay-wait-s        | 2.0     | TWINLEDGER_PORTAL_PAGE_RELAY_WAIT_S        |
| explorer-block-url       | ""      | TWINLEDGER_PORTAL_EXPLORER_BLOCK_URL       |
| hospital-names           | {}      | TWINLEDGER_PORTAL_HOSPITAL_NAMES (JSON)    |
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from federation.settings import SettingsError
from federation.web.serving import WebServerSettings
from node.settings import NodeSettings

__all__ = ["PORTAL_CONFIG_NAME", "PortalSettings", "SettingsError"]

PORTAL_CONFIG_NAME = "portal.toml"


class PortalSettings(WebServerSettings):
    model_config = SettingsConfigDict(env_prefix="TWINLEDGER_PORTAL_")
    config_name = PORTAL_CONFIG_NAME
    fixed = frozenset({"node", "cookie_name"})

    node: NodeSettings
    # Browsers send a Secure cookie only over HTTPS (and to http://localhost). Keep it true in production,
    # behind a TLS-terminating proxy; false only for plain-HTTP testing on another host name.
    cookie_secure: bool = True
    cookie_name: str = "twinledger_session"
    session_ttl_s: int = 3600  # absolute lifetime of a login
    session_idle_s: int = 900  # a session unused this long ends
    enrolment_code_ttl_s: int = 7 * 24 * 3600
    login_window_s: int = 15 * 60
    max_failures_per_account: int = 5
    max_failures_per_ip: int = 20
    # A browser that logged in before is trusted this long (180 days): the untrusted-client lockout spares it.
    device_cookie_ttl_s: int = 180 * 24 * 3600
    signature_deadline_s: int = 3600  # how long a signed grant/revoke may wait to be relayed
    relay_wait_s: float = 30.0  # the JSON API waits this long for the receipt before answering 202
    page_relay_wait_s: float = 2.0  # a page waits this long, then shows "sent" and polls until recorded
    # A block explorer's page for a block, e.g. "https://explorer.example/block/{block}"; empty: none
    explorer_block_url: str = ""
    # Names of the consortium's hospitals by account, for the study pages ({"0xAbc...": "Hungary"})
    hospital_names: dict[str, str] = Field(default_factory=dict)

    @property
    def staff_token_file(self) -> Path:
        return self.node.home / "keys" / "staff.token"

    @classmethod
    def load(cls, home: Path | str) -> "PortalSettings":
        node = NodeSettings.load(home)
        return cls.load_file(node.home / PORTAL_CONFIG_NAME, node=node)

    @field_validator("explorer_block_url")
    @classmethod
    def _explorer(cls, value: str) -> str:
        if value and (not value.startswith(("https://", "http://")) or "{block}" not in value):
            raise ValueError("must be an http(s) address containing {block}")
        return value

    @field_validator("hospital_names")
    @classmethod
    def _accounts_in_lower_case(cls, value: dict[str, str]) -> dict[str, str]:
        return {account.lower(): name for account, name in value.items()}
