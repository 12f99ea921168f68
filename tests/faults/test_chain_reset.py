"""Fault: the chain is killed and comes back without its state (restarted with no state file, or a new chain at
the same URL). The node, the coordinator and the auditor each recognise it and refuse with the protocol code
CHAIN_RESET and a sentence, never a raw BlockOutOfRangeError or BadFunctionCallOutput."""

from __future__ import annotations

import json

import pytest

from contracts import ledger as lg
from deploy import cli
from federation import protocol
from federation.ids import StudyId
from node import admin
from node.consent_gate import Refusal
from node.service import HospitalNode
from tests.faults.chain import record_a_round

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_every_component_refuses_a_chain_restarted_without_its_state(durable, artifacts, tmp_path, capsys):
    url = durable.start()
    recorded = record_a_round(lg.connect(url), artifacts)
    deployment_file = tmp_path / "deployment.json"
    recorded.consortium.deployment.save(deployment_file)
    settings = admin.init_node(tmp_path / "node", hospital="cleveland", rpc_url=url, deployment_file=deployment_file)
    durable.kill()
    durable.start(state=False)  # the operator forgot --state: a chain at block 0 at the same URL

    # the coordinator (and anyone opening the ledger) learns it when it opens the ledger
    with pytest.raises(lg.ChainReset, match="no longer holds the TwinLedger contracts"):
        lg.Ledger.open(url, deployment_file)

    # a node refuses with the protocol code, before reading anything
    with pytest.raises(Refusal) as refused:
        HospitalNode(settings).ledger
    assert refused.value.code == protocol.CHAIN_RESET and "reset" in refused.value.reason

    # the auditor says so in one line (exit status 2), no traceback
    usage = tmp_path / "usage.json"
    usage.write_text(json.dumps({"hospital": "cleveland", "account": recorded.hospital.address, "entries": []}))
    status = cli.main(["audit", "--rpc-url", url, "--deployment-file", str(deployment_file),
                       "--study", str(StudyId(recorded.study_id)), str(usage)])
    err = capsys.readouterr().err
    assert status == 2 and "no longer holds the TwinLedger contracts" in err and "Traceback" not in err
