"""One settings object for the coordinator, read from `<home>/coordinator.toml` and the environment.

The mechanism is federation.settings (pydantic-settings); docs/configuration.md has the table.

| key in coordinator.toml | default               | environment variable                    |
|-------------------------|-----------------------|-----------------------------------------|
| rpc-url                 | http://127.0.0.1:8545 | TWINLEDGER_RPC_URL                      |
| deployment-file         | none                  | TWINLEDGER_DEPLOYMENT_FILE              |
| chain-timeout-s         | 10.0                  | TWINLEDGER_CHAIN_TIMEOUT_S              |
| chain-ca-file           | none                  | TWINLEDGER_CHAIN_CA_FILE                |
| allow-plain-rpc         | false                 | TWINLEDGER_ALLOW_PLAIN_RPC              |
| round-timeout-s         | 300.0                 | TWINLEDGER_COORDINATOR_ROUND_TIMEOUT_S  |
| min-nodes               | 1                     | TWINLEDGER_COORDINATOR_MIN_NODES        |
| wait-for-nodes-s        | 120.0                 | TWINLEDGER_COORDINATOR_WAIT_FOR_NODES_S |
| confirmations           | 2                     | TWINLEDGER_COORDINATOR_CONFIRMATIONS    |

`confirmations`: a round pins the block this many blocks behind the chain's head, so that a block a
reorganisation (or a chain restarted from a state file dumped a moment earlier) can drop is not pinned.
0 pins the head: for a development chain that mines one block per transaction and never reorganises.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import NonNegativeInt
from pydantic_settings import SettingsConfigDict

from federation.settings import ChainSettings, SettingsError

__all__ = ["CONFIG_NAME", "CoordinatorSettings", "SettingsError"]

CONFIG_NAME = "coordinator.toml"


class CoordinatorSettings(ChainSettings):
    """The chain fields (rpc-url, deployment-file, chain-timeout-s) are federation.settings.ChainSettings'."""

    model_config = SettingsConfigDict(env_prefix="TWINLEDGER_COORDINATOR_")
    config_name = CONFIG_NAME
    missing_file = "no coordinator configuration at {path}: run 'twinledger coordinator init'"

    round_timeout_s: float = 300.0
    min_nodes: int = 1
    wait_for_nodes_s: float = 120.0
    confirmations: NonNegativeInt = 2

    @property
    def key_file(self) -> Path:
        return self.home / "keys" / "coordinator.key"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"
