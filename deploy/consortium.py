"""One consortium builder for the demo, the benchmarks, the twin federation and the tests' fixtures.

    with chain_url(rpc_url, log_path=work / "anvil.log") as url:       # anvil unless a chain is given
        consortium = Consortium.deploy(lg.connect(url), rpc_url=url, deployment_file=work / "deployment.json",
                                       operator_key_file=work / "operator.key")
        consortium.add_coordinator(key_file=work / "coordinator.key")
        node = consortium.add_node("cleveland", work / "nodes" / "cleveland", records=[csv])
        node.enrol()                                                     # a wallet for every patient
        study = consortium.propose_study(epsilon_budget=3.0, rounds=5)
        node.accept(study)
        node.consent(study)                                              # signed by the patients, relayed

The steps are the ones the one-by-one commands take (docs/deployment.md): contracts deployed by the
operator, keys funded from the dev chain's unlocked account, hospitals registered, node homes initialised
with `node.admin.init_node`, records imported, patients enrolled with their own consent addresses, consents
signed by the patients (EIP-712) and relayed by their hospital, studies proposed by the operator and
accepted by each hospital. Unit tests build the same on the in-process chain (`eth_tester()`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account
from web3 import Web3

from contracts import ledger as lg
from federation.ids import Pseudonym, StudyId
from node import admin as node_admin
from node import node_keys
from node.settings import NodeSettings

DAY_S = 24 * 3600


@contextmanager
def chain_url(rpc_url: str | None, *, log_path: Path, tls_ca_dir: Path | None = None) -> Iterator[str]:
    """The chain to use: `rpc_url` when given, else an anvil started here (its log at `log_path`) and
    stopped when the block ends. With `tls_ca_dir` (a consortium CA's directory, created if empty) the parties
    get an https URL: anvil stays on loopback behind a TLS terminator (contracts/devchain/gateway.py) whose
    certificate that CA issues; its `ca.pem` is then the parties' chain-ca-file."""
    if rpc_url:
        yield rpc_url
        return
    from contracts.devchain.anvil import start_anvil
    from deploy import processes

    anvil, url = start_anvil(port=processes.free_port(), log_path=log_path)
    gateway = None
    try:
        if tls_ca_dir is not None:
            gateway, url, _ = processes.start_chain_gateway(
                upstream=url, port=processes.free_port(), ca_dir=tls_ca_dir, tls_dir=log_path.parent / "chain-tls",
                log_path=log_path.with_name("chain-gateway.log"))
        yield url
    finally:
        if gateway is not None:
            gateway.stop()
        anvil.stop()


def chain_now(ledger: lg.Ledger) -> int:
    """Now, by the chain's clock when it is ahead of this machine's (a test chain moved forward)."""
    return max(int(time.time()), ledger.block_timestamp())


def eth_tester() -> Web3:
    """A fresh in-process chain (eth-tester, py-evm): for unit tests; Flower's processes cannot reach it."""
    from web3.providers.eth_tester import EthereumTesterProvider

    return Web3(EthereumTesterProvider())


def funded_key(w3: Web3, path: Path | None = None, *, ether: int = 100) -> str:
    """A new account key (written owner-only to `path` when given), funded from the dev chain's account."""
    key = lg.write_key(path) if path is not None else "0x" + secrets.token_hex(32)
    lg.fund_from_dev_account(w3, Account.from_key(key).address, ether=ether)
    return key


@dataclass
class Patients:
    """Patients' own wallets, kept apart from the node's files (the builder's stand-in for their phones)."""

    keys: dict[str, str] = field(default_factory=dict)  # record number -> private key
    pseudonyms: dict[str, str] = field(default_factory=dict)  # record number -> 0x-hex pseudonym (the node's)
    nonces: dict[str, int] = field(default_factory=dict)  # record number -> the next signature nonce

    def pseudonym(self, number: str) -> Pseudonym:
        return Pseudonym.parse(self.pseudonyms[number])


@dataclass
class Node:
    """One hospital's node: its settings (home), its ledger (the hospital's account), its patients."""

    name: str
    settings: NodeSettings
    ledger: lg.Ledger
    deployment: lg.Deployment
    patients: Patients
    imports: list = field(default_factory=list)  # node.records.ImportReport of each file imported

    def enrol(self, numbers: Iterable[str] | None = None) -> list[str]:
        """Give each patient (record number; default: every imported patient) a wallet key and bind their
        pseudonym to its address on chain. Returns the record numbers enrolled."""
        numbers = list(self.patients.pseudonyms if numbers is None else numbers)
        for number in numbers:
            self.patients.keys.setdefault(number, "0x" + secrets.token_hex(32))
            self.patients.nonces.setdefault(number, 0)
        node_admin.enrol_patients(
            self.settings, self.ledger, {n: Account.from_key(self.patients.keys[n]).address for n in numbers}
        )
        return numbers

    def accept(self, study_id: bytes) -> None:
        self.ledger.accept_study(study_id)

    def consent(self, study_id: bytes, numbers: Iterable[str] | None = None, *, valid_from: int = 0,
                valid_until: int | None = None, deadline: int | None = None) -> int:
        """Enrolled patients (default: all) sign a grant for the study; the hospital relays them in batches.
        Returns the block of the last relay."""
        now = chain_now(self.ledger)
        valid_until = valid_until if valid_until is not None else now + 365 * DAY_S
        deadline = deadline if deadline is not None else now + 3600
        grants = []
        for number in (self.patients.keys if numbers is None else numbers):
            grants.append(lg.sign_grant(
                self.patients.keys[number], self.deployment, pseudonym=self.patients.pseudonym(number),
                study_id=study_id, valid_from=valid_from, valid_until=valid_until,
                nonce=self.patients.nonces[number], deadline=deadline,
            ))
            self.patients.nonces[number] += 1
        return node_admin.relay_grants(self.ledger, grants)

    def revoke(self, study_id: bytes, number: str, *, deadline: int | None = None) -> int:
        """The patient signs a revocation; the hospital relays it. Returns its block."""
        pseudonym = self.patients.pseudonym(number)
        nonce = self.ledger.patient_nonce(pseudonym)
        revoke = lg.sign_revoke(
            self.patients.keys[number], self.deployment, pseudonym=pseudonym, study_id=study_id, nonce=nonce,
            deadline=deadline or chain_now(self.ledger) + 3600,
        )
        block = node_admin.relay_revoke(self.ledger, revoke)
        self.patients.nonces[number] = nonce + 1
        return block


@dataclass
class Consortium:
    """The contracts on a chain, their operator, and whoever joined: coordinator, hospitals, nodes."""

    w3: Web3
    deployment: lg.Deployment
    operator: lg.Ledger
    rpc_url: str | None = None  # None on the in-process chain (no node homes there)
    deployment_file: Path | None = None
    coordinator: lg.Ledger | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    ether: int = 100  # what each new account is funded with
    chain_ca_file: Path | None = None  # the CA an https rpc_url's certificate chains to (written into node homes)

    @classmethod
    def deploy(cls, w3: Web3, *, rpc_url: str | None = None, deployment_file: Path | None = None,
               operator_key_file: Path | None = None, artifacts: dict | None = None, ether: int = 100,
               chain_ca_file: Path | None = None) -> Consortium:
        """A funded operator deploys the contracts (saved to `deployment_file` when given). `chain_ca_file`: the
        CA certificate of an https `rpc_url` (chain_url's `tls_ca_dir`), given to every node home."""
        operator_key = funded_key(w3, operator_key_file, ether=ether)
        deployment = lg.deploy(w3, operator_key, artifacts=artifacts)
        if deployment_file is not None:
            deployment.save(deployment_file)
        operator = lg.Ledger(w3, deployment, account_key=operator_key)
        return cls(w3, deployment, operator, rpc_url=rpc_url, deployment_file=deployment_file, ether=ether,
                   chain_ca_file=chain_ca_file)

    def account(self, key_file: Path | None = None) -> lg.Ledger:
        """A new funded account on this consortium's contracts, with no role."""
        return lg.Ledger(self.w3, self.deployment, account_key=funded_key(self.w3, key_file, ether=self.ether))

    def add_coordinator(self, *, key_file: Path | None = None) -> lg.Ledger:
        """A funded account granted the coordinator role (it anchors rounds)."""
        self.coordinator = self.account(key_file)
        self.operator.grant_coordinator(self.coordinator.address)
        return self.coordinator

    def add_hospital(self, *, key_file: Path | None = None, node_id: bytes | None = None) -> lg.Ledger:
        """A funded account registered as a hospital, without a node home (what ledger-level tests need)."""
        hospital = self.account(key_file)
        self.operator.register_hospital(hospital.address, node_id or secrets.token_bytes(32))
        return hospital

    def add_node(self, name: str, home: Path, *, records: Iterable[Path | tuple[Path, str]] = (),
                 allow_non_private_studies: bool = False) -> Node:
        """A hospital node: its home initialised, its account funded and registered, its records imported
        (a path, or (path, cohort)). On the in-process chain, which no other process can reach, the home
        names no chain and the node's ledger is an account of this process (give it to `HospitalNode`)."""
        in_process = self.rpc_url is None
        rpc_url, deployment_file = ("in-process", None) if in_process else (self.rpc_url, self.deployment_file)
        settings = node_admin.init_node(home, hospital=name, rpc_url=rpc_url, deployment_file=deployment_file)
        if allow_non_private_studies or (self.chain_ca_file and not in_process):
            settings = settings.model_copy(update={"allow_non_private_studies": allow_non_private_studies,
                                                   "chain_ca_file": None if in_process else self.chain_ca_file})
            settings.save()
        if in_process:
            ledger = self.add_hospital()
        else:
            account = node_admin.hospital_address(settings)
            lg.fund_from_dev_account(self.w3, account, ether=self.ether)
            self.operator.register_hospital(account, secrets.token_bytes(32))
            ledger = lg.Ledger.from_settings(settings, key_file=settings.hospital_key_file)
            # The hospital vouches for its SuperNode's key on chain: the coordinator learns which hospital a
            # Flower node is from the key it authenticated with, never from what the node says about itself.
            node_keys.record_node_key(ledger, settings.home)
        imports = []
        for item in records:
            path, cohort = item if isinstance(item, tuple) else (item, None)
            imports.append(node_admin.import_records(settings, path, cohort=cohort))
        patients = Patients(pseudonyms=node_admin.pseudonyms_by_record(settings))
        node = Node(name, settings, ledger, self.deployment, patients, imports)
        self.nodes[name] = node
        return node

    def propose_study(self, *, task_id: str = "heart-disease/v1", purpose: str = "HRESCH",
                      epsilon_budget: float = 3.0, delta_exponent: int = 5, rounds: int = 5,
                      ends_at: int | None = None, study_id: bytes | None = None,
                      app_digest: str | None = None) -> StudyId:
        """The operator records a study (a data-use agreement), ending in 30 days unless `ends_at`, and with
        `app_digest` (hex) the app it runs: the only FAB the hospitals' app gates then run for it. Studies that
        Flower's processes run need it (the demo passes `packaged_app_digest()`, the packaged Flower app's);
        without it nothing runs for the study at a warm SuperNode."""
        study_id = StudyId(study_id) if study_id is not None else StudyId.new()
        self.operator.propose_study(
            study_id, purpose=purpose, task_id=task_id, epsilon_budget=epsilon_budget, delta_exponent=delta_exponent,
            rounds=rounds, ends_at=ends_at if ends_at is not None else chain_now(self.operator) + 30 * DAY_S,
            app_digest=app_digest,
        )
        return study_id

    def open_study(self, **terms) -> StudyId:
        """A study (terms as `propose_study`) every node accepts and every enrolled patient consents to."""
        study_id = self.propose_study(**terms)
        for node in self.nodes.values():
            node.accept(study_id)
            node.consent(study_id)
        return study_id
