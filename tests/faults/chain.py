"""What the fault tests share: a consortium on a real anvil with a state file, with a study, enrolled and
consenting patients and an anchored round, and the means to kill and restart that anvil."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account

from contracts import ledger as lg
from contracts.devchain.anvil import start_anvil
from deploy import processes
from deploy.consortium import Consortium
from federation.commitment import combined_commitment, pseudonym_commitment
from federation.ids import Digest, Pseudonym, StudyId


@dataclass
class DurableChain:
    """An anvil whose state lives in `state_file`, at a fixed port so that a restart answers at the same URL."""

    work: Path
    port: int = field(default_factory=processes.free_port)
    service: processes.Service | None = None

    @property
    def state_file(self) -> Path:
        return self.work / "chain-state.json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, state: bool = True) -> str:
        self.service, url = start_anvil(
            port=self.port, log_path=self.work / "anvil.log", state_file=self.state_file if state else None,
            state_interval_s=1)
        return url

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: anvil gets no chance to dump its state on exit."""
        os.killpg(self.service.process.pid, signal.SIGKILL)
        self.service.process.wait(timeout=10)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()


@dataclass
class Recorded:
    """What was on chain before the fault: the test checks it is all still there after."""

    consortium: Consortium
    hospital: lg.Ledger
    study_id: bytes
    consenting: list[Pseudonym]
    declined: list[Pseudonym]
    pinned_block: int
    model_hash: Digest

    def usage_log(self) -> dict:
        """The hospital's usage log as its node would export it: round 1 trained on the consenting patients."""
        pseudonyms = sorted(str(p) for p in self.consenting)
        entry = {"study_id": str(StudyId(self.study_id)), "round": 1, "phase": "train", "block": self.pinned_block,
                 "commitment": str(pseudonym_commitment(self.consenting)), "pseudonyms": pseudonyms,
                 "status": "completed"}
        return {"hospital": "cleveland", "account": self.hospital.address, "entries": [entry]}


def record_a_round(w3, artifacts) -> Recorded:
    """Deploy, register a hospital, enrol four patients, three consent (signed grants the hospital relays),
    and anchor round 1 at a pinned block."""
    consortium = Consortium.deploy(w3, rpc_url=None, artifacts=artifacts, ether=10)
    hospital = consortium.add_hospital()
    coordinator = consortium.add_coordinator()
    study_id = consortium.propose_study(rounds=3)
    hospital.accept_study(study_id)
    keys = ["0x" + os.urandom(32).hex() for _ in range(4)]
    pseudonyms = [Pseudonym.new() for _ in keys]
    hospital.enrol(pseudonyms, [Account.from_key(k).address for k in keys])
    now = int(time.time())
    grants = [lg.sign_grant(key, consortium.deployment, pseudonym=p, study_id=study_id, valid_from=0,
                            valid_until=now + 86400, nonce=0, deadline=now + 3600)
              for key, p in zip(keys[:3], pseudonyms[:3])]
    hospital.relay_grants(grants)
    pinned = hospital.block_number()
    model = Digest(os.urandom(32))
    used = combined_commitment(pseudonym_commitment(pseudonyms[:3]), b"")
    coordinator.anchor_round(study_id, 1, pinned_block=pinned, model_hash=model, commitments={hospital.address: used})
    return Recorded(consortium, hospital, study_id, pseudonyms[:3], pseudonyms[3:], pinned, model)
