"""A small real federation for the fault suite: the session's anvil, a SuperLink (TLS, node authentication, the
node follower) and two hospitals' warm SuperNodes as processes. Each fault test opens a study of its own and
runs it with `flwr run`, so that several tests share one federation (the CI budget: starting one costs about
20 s)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from contracts import ledger as lg
from contracts.audit import AuditResult, audit_study, load_usage_logs
from coordinator.report import RunReport
from coordinator.settings import CoordinatorSettings
from deploy import processes
from deploy.consortium import Consortium
from node import admin as node_admin
from node.node_keys import node_keys_of
from node.supernode_rejoin import NODE_IDS_FILE
from federation.app_digest import packaged_app_digest
from federation.ids import StudyId

DATA_DIR = Path(__file__).resolve().parents[2] / "deploy" / "data" / "heart-disease"
HOSPITALS = {"cleveland": "processed.cleveland.data", "hungary": "processed.hungarian.data"}


@dataclass
class Federation:
    root: Path
    consortium: Consortium
    coordinator_home: Path
    flwr_home: Path
    superlink_port: int
    superlink: processes.SuperLink | None = None
    supernodes: dict[str, processes.Service] = field(default_factory=dict)
    runs: list[processes.Service] = field(default_factory=list)

    @classmethod
    def start(cls, root: Path, rpc_url: str) -> "Federation":
        w3 = lg.connect(rpc_url)
        consortium = Consortium.deploy(w3, rpc_url=rpc_url, deployment_file=root / "chain" / "deployment.json")
        coordinator_home = root / "coordinator"
        CoordinatorSettings(home=coordinator_home, rpc_url=rpc_url, deployment_file=consortium.deployment_file,
                            min_nodes=1, round_timeout_s=60, wait_for_nodes_s=30, confirmations=0).save()
        consortium.add_coordinator(key_file=coordinator_home / "keys" / "coordinator.key")
        for name, filename in HOSPITALS.items():
            node = consortium.add_node(name, root / "nodes" / name, records=[DATA_DIR / filename])
            node.enrol()
        federation = cls(root, consortium, coordinator_home, root / "flower", processes.free_port())
        federation.start_superlink()
        for name in HOSPITALS:
            federation.start_supernode(name)
        processes.write_flower_federation(federation.flwr_home, name="faults",
                                          superlink_port=federation.superlink_port)
        return federation

    def start_superlink(self) -> None:
        self.superlink = processes.start_superlink(port=self.superlink_port, state_dir=self.root / "superlink",
                                                   flwr_home=self.flwr_home, follow_home=self.coordinator_home)

    def start_supernode(self, name: str) -> processes.Service:
        self.supernodes[name] = processes.start_supernode(
            name=name, superlink_port=self.superlink_port, port=processes.free_port(),
            node_home=self.root / "nodes" / name, flwr_home=self.flwr_home,
            log_path=self.root / "logs" / f"supernode-{name}.log", admit=False)
        return self.supernodes[name]

    def open_study(self, *, rounds: int = 2) -> StudyId:
        return self.consortium.open_study(rounds=rounds, app_digest=packaged_app_digest())

    def run(self, study_id: StudyId, run_name: str, **config) -> processes.Service:
        """`flwr run` of the packaged app for `study_id`; the report is `report_path(run_name)`."""
        run_config = {"study-id": str(study_id), "coordinator-home": str(self.coordinator_home),
                      "run-name": run_name, "local-epochs": 1, **config}
        run = processes.flwr_run(federation="faults", run_config=run_config, flwr_home=self.flwr_home,
                                 log_path=self.root / "logs" / f"flwr-run-{run_name}.log")
        self.runs.append(run)
        return run

    def report_path(self, run_name: str) -> Path:
        return self.coordinator_home / "runs" / run_name / "report.json"

    def report(self, run_name: str) -> RunReport | None:
        path = self.report_path(run_name)
        return RunReport.load(path) if path.exists() else None

    def wait_for(self, run_name: str, condition, *, timeout_s: float) -> RunReport:
        """The run's report once `condition(report)` holds; AssertionError with the report after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        report = None
        while time.monotonic() < deadline:
            report = self.report(run_name)
            if report is not None and condition(report):
                return report
            time.sleep(0.25)
        raise AssertionError(f"not within {timeout_s:g} s; the report: {report and json.dumps(report.as_dict())[:2000]}")

    def audit(self, study_id: StudyId, run_name: str) -> AuditResult:
        """The independent audit of the study over every node's whole usage log (contracts/audit.py)."""
        logs = [node_admin.export_usage(node.settings, self.root / "audit" / f"{run_name}-{name}.json")
                for name, node in self.consortium.nodes.items()]
        return audit_study(lg.Ledger(self.consortium.w3, self.consortium.deployment), study_id,
                           load_usage_logs(logs), report=self.report_path(run_name))

    def node_id(self, name: str) -> int:
        """The Flower node id the SuperLink gave hospital `name`'s node key (node/supernode_rejoin.py keeps it)."""
        return next(iter(json.loads((self.root / "nodes" / name / "keys" / NODE_IDS_FILE).read_text()).values()))

    def node_keys(self, name: str):
        """Hospital `name`'s SuperNode key pair, as flower-supernode loads it."""
        from cryptography.hazmat.primitives.serialization import load_ssh_private_key

        private_key = load_ssh_private_key(node_keys_of(self.root / "nodes" / name).private_key.read_bytes(), None)
        return private_key, private_key.public_key()

    def deactivate(self, node_id: int, *, keys) -> None:
        """A Fleet DeactivateNode for `node_id` through the hospitals' gateway, signed with `keys` (HTTPStatusError
        when refused)."""
        from flwr.proto.fleet_pb2 import DeactivateNodeRequest
        from flwr.supernode.fleet_http_client import FleetHttpClient
        from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

        with FleetHttpClient.from_server_address(
                self.superlink.fleet_address, False, str(self.superlink.root_certificates),
                interceptors=[NodeAuthHttpInterceptor(*keys)]) as client:
            client.DeactivateNode(DeactivateNodeRequest(node_id=node_id))

    def node_status(self, node_id: int) -> str:
        """The node's status in the SuperLink's state ("online", "offline", ...), read from its database."""
        from flwr.supercore.utils import uint64_to_int64

        with sqlite3.connect(f"file:{self.root / 'superlink' / 'state.db'}?mode=ro", uri=True) as db:
            return db.execute("SELECT status FROM node WHERE node_id = ?", (uint64_to_int64(node_id),)).fetchone()[0]

    def signal_supernode(self, name: str, signum: int) -> None:
        os.kill(self.supernodes[name].process.pid, signum)

    def stop(self) -> None:
        for service in [*self.runs, *self.supernodes.values()]:
            try:
                os.killpg(service.process.pid, signal.SIGCONT)  # a stopped SuperNode cannot take SIGTERM
            except ProcessLookupError:
                pass
            service.stop()
        if self.superlink is not None:
            self.superlink.stop()
