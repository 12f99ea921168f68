"""Portal settings in one place: the node home (node.settings.NodeSettings) plus the portal's own options.

Optional file `<home>/portal.toml` (flat keys, as in node.toml) and environment variables override the
defaults: TWINLEDGER_PORTAL_COOKIE_SECURE (true/false), TWINLEDGER_PORTAL_EXPLORER_BLOCK_URL.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from node.settings import NodeSettings, SettingsError

PORTAL_CONFIG_NAME = "portal.toml"


@dataclass(frozen=True)
class PortalSettings:
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
    signature_deadline_s: int = 3600  # how long a signed grant/revoke may wait to be relayed
    relay_wait_s: float = 30.0  # the JSON API waits this long for the receipt before answering 202
    page_relay_wait_s: float = 2.0  # a page waits this long, then shows "sent" and polls until recorded
    # A block explorer's page for a block, e.g. "https://explorer.example/block/{block}"; empty: none
    explorer_block_url: str = ""
    # Names of the consortium's hospitals by account, for the study pages ({"0xAbc...": "Hungary"})
    hospital_names: dict = field(default_factory=dict)

    @property
    def staff_token_file(self) -> Path:
        return self.node.home / "keys" / "staff.token"

    @classmethod
    def load(cls, home: Path | str) -> "PortalSettings":
        node = NodeSettings.load(home)
        path = node.home / PORTAL_CONFIG_NAME
        data: dict = {}
        if path.exists():
            try:
                data = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"{path} is not valid TOML: {exc}") from None
        settings = cls(node=node)
        try:
            values = {
                "cookie_secure": _boolean(data.get("cookie-secure", True), "cookie-secure"),
                "session_ttl_s": int(data.get("session-ttl-s", cls.session_ttl_s)),
                "session_idle_s": int(data.get("session-idle-s", cls.session_idle_s)),
                "enrolment_code_ttl_s": int(data.get("enrolment-code-ttl-s", cls.enrolment_code_ttl_s)),
                "max_failures_per_account": int(data.get("max-failures-per-account", cls.max_failures_per_account)),
                "max_failures_per_ip": int(data.get("max-failures-per-ip", cls.max_failures_per_ip)),
                "relay_wait_s": float(data.get("relay-wait-s", cls.relay_wait_s)),
                "page_relay_wait_s": float(data.get("page-relay-wait-s", cls.page_relay_wait_s)),
                "explorer_block_url": _explorer(data.get("explorer-block-url", "")),
                "hospital_names": _names(data.get("hospital-names", {})),
            }
            env_explorer = os.environ.get("TWINLEDGER_PORTAL_EXPLORER_BLOCK_URL")
            if env_explorer is not None:
                values["explorer_block_url"] = _explorer(env_explorer)
            env = os.environ.get("TWINLEDGER_PORTAL_COOKIE_SECURE")
            if env is not None:
                values["cookie_secure"] = env.strip().lower() not in ("0", "false", "no")
        except ValueError as exc:
            raise SettingsError(f"{path} is malformed: {exc}") from None
        return replace(settings, **values)


def _boolean(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _explorer(value) -> str:
    if not isinstance(value, str) or (value and (not value.startswith(("https://", "http://")) or "{block}" not in value)):
        raise ValueError(f"explorer-block-url must be an http(s) address containing {{block}}, got {value!r}")
    return value


def _names(value) -> dict:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("hospital-names must be a table of account = \"name\"")
    return {k.lower(): v for k, v in value.items()}
