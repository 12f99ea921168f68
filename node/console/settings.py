"""Console settings in one place: the node home (node.settings.NodeSettings) plus the console's own options.

Optional `<home>/console.toml` (flat keys, as in node.toml); environment variables override it:
TWINLEDGER_SUPERLINK (host:port of the coordinator's SuperLink the node connects to),
TWINLEDGER_CONSOLE_COOKIE_SECURE (true/false).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from node.settings import NodeSettings, SettingsError

CONSOLE_CONFIG_NAME = "console.toml"
ROLES = ("it-admin", "viewer")  # it-admin imports records and issues codes; viewer only looks


@dataclass(frozen=True)
class ConsoleSettings:
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
        path = node.home / CONSOLE_CONFIG_NAME
        data: dict = {}
        if path.exists():
            try:
                data = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"{path} is not valid TOML: {exc}") from None
        known = {f.name.replace("_", "-"): f for f in fields(cls) if f.name not in ("node", "cookie_name")}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SettingsError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = {}
        try:
            for key, value in data.items():
                kind = known[key].type
                if kind == "bool" and not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false, got {value!r}")
                values[known[key].name] = {"str": str, "int": int, "float": float, "bool": bool}[kind](value)
        except ValueError as exc:
            raise SettingsError(f"{path} is malformed: {exc}") from None
        env = os.environ
        if "TWINLEDGER_SUPERLINK" in env:
            values["superlink"] = env["TWINLEDGER_SUPERLINK"]
        if "TWINLEDGER_CONSOLE_COOKIE_SECURE" in env:
            values["cookie_secure"] = env["TWINLEDGER_CONSOLE_COOKIE_SECURE"].strip().lower() not in ("0", "false", "no")
        if superlink is not None:
            values["superlink"] = superlink
        return replace(cls(node=node), **values)
