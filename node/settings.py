"""One settings object for a hospital node, read from `<home>/node.toml` and the environment.

The mechanism is federation.settings (pydantic-settings); docs/configuration.md has the table.

| key in node.toml          | default                  | environment variable                      |
|---------------------------|--------------------------|-------------------------------------------|
| hospital                  | (required)               | TWINLEDGER_NODE_HOSPITAL                  |
| rpc-url                   | http://127.0.0.1:8545    | TWINLEDGER_RPC_URL                        |
| deployment-file           | none                     | TWINLEDGER_DEPLOYMENT_FILE                |
| database-url              | sqlite:///<home>/node.db | TWINLEDGER_DATABASE_URL                   |
| chain-timeout-s           | 10.0                     | TWINLEDGER_CHAIN_TIMEOUT_S                |
| chain-ca-file             | none                     | TWINLEDGER_CHAIN_CA_FILE                  |
| allow-plain-rpc           | false                    | TWINLEDGER_ALLOW_PLAIN_RPC                |
| max-pinned-block-age-s    | 900.0                    | TWINLEDGER_NODE_MAX_PINNED_BLOCK_AGE_S    |
| allow-non-private-studies | false                    | TWINLEDGER_NODE_ALLOW_NON_PRIVATE_STUDIES |
| record-number-system      | "" (see below)           | TWINLEDGER_NODE_RECORD_NUMBER_SYSTEM      |
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from federation.settings import ChainSettings, SettingsError

__all__ = ["CONFIG_NAME", "NodeSettings", "SettingsError"]

CONFIG_NAME = "node.toml"


class NodeSettings(ChainSettings):
    """The chain fields (rpc-url, deployment-file, chain-timeout-s) are federation.settings.ChainSettings'."""

    model_config = SettingsConfigDict(env_prefix="TWINLEDGER_NODE_")
    config_name = CONFIG_NAME
    missing_file = "no node configuration at {path}: run 'twinledger node init' first"

    hospital: str
    database_url: str = ""  # empty: sqlite:///<home>/node.db
    # A round's pinned block must be recent: an older one could predate revocations.
    max_pinned_block_age_s: float = 900.0
    # Opt-in to studies recorded as non-private (epsilon budget >= federation.protocol.NON_PRIVATE_EPSILON), which
    # train with plain SGD; meant for benchmark baselines. Without it such a study is refused.
    allow_non_private_studies: bool = False
    # The identifier system of the hospital's own record numbers: what a CSV's record numbers (and FHIR identifiers
    # without a system) are read under; a record number matches across files only under the same system
    # (node/records/writer.py). Empty: urn:twinledger:local-record-number.
    record_number_system: str = ""

    @property
    def data_key_file(self) -> Path:
        return self.home / "keys" / "data.key"

    @property
    def hospital_key_file(self) -> Path:
        return self.home / "keys" / "hospital.key"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'node.db'}"
