"""Each hospital's privacy spending per study on chain (Consortium.recordSpending): written by the hospital
itself, only ever growing, read at a block."""

from __future__ import annotations

import pytest

from contracts import ledger as lg
from deploy.consortium import funded_key
from federation.ids import StudyId


def test_a_hospital_records_its_spending_and_it_only_grows(chain):
    study, h = chain.study_id, chain.hospital
    assert h.spending_of(study, h.address) == 0
    before = h.block_number()
    receipt = h.record_spending(study, 0.4123456789)
    assert h.spending_of(study, h.address) == 412_345  # millionths, rounded down: never above the node's account
    assert h.spending_of(study, h.address, block=before) == 0
    (event,) = h.consortium.events.SpendingRecorded().process_receipt(receipt)
    assert event["args"]["hospital"] == h.address and event["args"]["epsilonSpentMicro"] == 412_345
    h.record_spending(study, 0.4123456789)  # a retried transaction does no harm
    with pytest.raises(lg.ContractRejected, match="would lower it") as rejected:
        h.record_spending(study, 0.3)
    assert rejected.value.error_name == "SpendingDecreased"
    assert h.spending_of(study, h.address) == 412_345
    assert chain.other_hospital.spending_of(study, chain.other_hospital.address) == 0  # per hospital


def test_only_a_registered_hospital_records_spending_for_a_known_study(chain):
    stranger = chain.ledger_for(funded_key(chain.w3, ether=10))
    with pytest.raises(lg.ContractRejected, match="not a registered hospital"):
        stranger.record_spending(chain.study_id, 1.0)
    with pytest.raises(lg.ContractRejected, match="not known to the consortium"):
        chain.hospital.record_spending(StudyId.new(), 1.0)


def test_gas_of_recording_spending(chain):
    first = chain.hospital.record_spending(chain.study_id, 0.5)["gasUsed"]
    later = chain.hospital.record_spending(chain.study_id, 0.9)["gasUsed"]
    print(f"recordSpending gas: first {first}, later {later}")
    assert first <= 55_000 and later <= 35_000  # docs/ledger.md, Consortium (recordSpending)
