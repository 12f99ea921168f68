"""One settings object for the coordinator, read from `<home>/coordinator.toml` and the environment.

Environment variables override the file: TWINLEDGER_RPC_URL, TWINLEDGER_DEPLOYMENT_FILE.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "coordinator.toml"


class SettingsError(Exception):
    """The coordinator's configuration is missing or malformed."""


@dataclass(frozen=True)
class CoordinatorSettings:
    home: Path
    rpc_url: str = "http://127.0.0.1:8545"
    deployment_file: Path | None = None
    chain_timeout_s: float = 10.0
    round_timeout_s: float = 300.0
    min_nodes: int = 1
    wait_for_nodes_s: float = 120.0

    @property
    def key_file(self) -> Path:
        return self.home / "keys" / "coordinator.key"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @classmethod
    def load(cls, home: Path | str) -> "CoordinatorSettings":
        home = Path(home).expanduser().resolve()
        path = home / CONFIG_NAME
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SettingsError(f"no coordinator configuration at {path}: run 'twinledger coordinator init'") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path} is not valid TOML: {exc}") from None
        env = os.environ
        deployment = env.get("TWINLEDGER_DEPLOYMENT_FILE", data.get("deployment-file"))
        try:
            return cls(
                home=home,
                rpc_url=env.get("TWINLEDGER_RPC_URL", data.get("rpc-url", cls.rpc_url)),
                deployment_file=Path(deployment) if deployment else None,
                chain_timeout_s=float(data.get("chain-timeout-s", cls.chain_timeout_s)),
                round_timeout_s=float(data.get("round-timeout-s", cls.round_timeout_s)),
                min_nodes=int(data.get("min-nodes", cls.min_nodes)),
                wait_for_nodes_s=float(data.get("wait-for-nodes-s", cls.wait_for_nodes_s)),
            )
        except ValueError as exc:
            raise SettingsError(f"{path} is malformed: {exc}") from None

    def save(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        values = {
            "rpc-url": self.rpc_url,
            "deployment-file": str(self.deployment_file) if self.deployment_file else "",
            "chain-timeout-s": self.chain_timeout_s,
            "round-timeout-s": self.round_timeout_s,
            "min-nodes": self.min_nodes,
            "wait-for-nodes-s": self.wait_for_nodes_s,
        }
        path = self.home / CONFIG_NAME
        path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
        return path
