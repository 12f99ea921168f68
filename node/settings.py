"""One settings object for a hospital node, read from `<home>/node.toml` and the environment.

Environment variables override the file: TWINLEDGER_RPC_URL, TWINLEDGER_DEPLOYMENT_FILE,
TWINLEDGER_DATABASE_URL, TWINLEDGER_CHAIN_TIMEOUT_S.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "node.toml"


class SettingsError(Exception):
    """The node's configuration is missing or malformed."""


@dataclass(frozen=True)
class NodeSettings:
    home: Path
    hospital: str
    rpc_url: str = "http://127.0.0.1:8545"
    deployment_file: Path | None = None
    database_url: str = ""
    chain_timeout_s: float = 10.0
    # A round's pinned block must be recent: an older one could predate revocations.
    max_pinned_block_age_s: float = 900.0
    # Opt-in to studies recorded as non-private (epsilon budget >= federation.protocol.NON_PRIVATE_EPSILON), which
    # train with plain SGD; meant for benchmark baselines. Without it such a study is refused.
    allow_non_private_studies: bool = False

    @property
    def data_key_file(self) -> Path:
        return self.home / "keys" / "data.key"

    @property
    def hospital_key_file(self) -> Path:
        return self.home / "keys" / "hospital.key"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'node.db'}"

    @classmethod
    def load(cls, home: Path | str) -> "NodeSettings":
        home = Path(home).expanduser().resolve()
        path = home / CONFIG_NAME
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SettingsError(f"no node configuration at {path}: run 'twinledger node init' first") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path} is not valid TOML: {exc}") from None
        env = os.environ
        try:
            deployment = env.get("TWINLEDGER_DEPLOYMENT_FILE", data.get("deployment-file"))
            return cls(
                home=home,
                hospital=str(data["hospital"]),
                rpc_url=env.get("TWINLEDGER_RPC_URL", data.get("rpc-url", cls.rpc_url)),
                deployment_file=Path(deployment) if deployment else None,
                database_url=env.get("TWINLEDGER_DATABASE_URL", data.get("database-url", "")),
                chain_timeout_s=float(env.get("TWINLEDGER_CHAIN_TIMEOUT_S", data.get("chain-timeout-s", 10.0))),
                max_pinned_block_age_s=float(data.get("max-pinned-block-age-s", cls.max_pinned_block_age_s)),
                allow_non_private_studies=_boolean(data.get("allow-non-private-studies", False)),
            )
        except (KeyError, ValueError) as exc:
            raise SettingsError(f"{path} is incomplete or malformed: {exc}") from None

    def save(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        lines = {
            "hospital": self.hospital,
            "rpc-url": self.rpc_url,
            "deployment-file": str(self.deployment_file) if self.deployment_file else "",
            "database-url": self.database_url,
            "chain-timeout-s": self.chain_timeout_s,
            "max-pinned-block-age-s": self.max_pinned_block_age_s,
            "allow-non-private-studies": self.allow_non_private_studies,
        }
        path = self.home / CONFIG_NAME
        path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in lines.items()))
        return path


def _boolean(value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"allow-non-private-studies must be true or false, got {value!r}")
    return value
