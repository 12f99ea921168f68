"""Issue 13 item 5: records of one person are linked at import and count as one unit of privacy."""

from __future__ import annotations

import numpy as np
import torch

from federation.tasks import get_task
from federation.tasks.sensitivity import clipped_sum_sensitivity
from node.privacy import one_record_per_person
from node.records.heart_csv import import_heart_disease_csv
from node.records.provenance import LOCAL_PERSON_SYSTEM, LOCAL_RECORD_SYSTEM
from node.store import Store
from node.vault import Vault, create_key_file
from tests.node.hospital import DATA

TASK = get_task("heart-disease/v1")
CLIP = 0.5
HEADER = "record_number,person_id,age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,slope,ca,thal,num"


def _rows(count: int) -> list[str]:
    return (DATA / "processed.cleveland.data").read_text().splitlines()[:count]


def test_rows_with_one_person_id_are_linked_to_one_person(tmp_path):
    create_key_file(tmp_path / "data.key")
    store, vault = Store(f"sqlite:///{tmp_path / 'node.db'}"), Vault.open(tmp_path / "data.key")
    people = ["p-1", "p-1", "p-1", "p-2", ""]  # three records of p-1, one of p-2, one row naming nobody
    lines = [f"r{i},{person},{row}" for i, (person, row) in enumerate(zip(people, _rows(5)))]
    (tmp_path / "visits.csv").write_text("\n".join([HEADER, *lines]) + "\n")
    import_heart_disease_csv(store, vault, tmp_path / "visits.csv", record_prefix="x")
    by_number = {p.record_number: p for p in store.patients()}
    assert len(by_number) == 5  # each record keeps its own pseudonym (and consent on chain)
    persons = store.persons_of(p.pseudonym for p in by_number.values())
    linked = {number: persons[p.pseudonym] for number, p in by_number.items()}
    assert linked["r0"] == linked["r1"] == linked["r2"] == f"{LOCAL_PERSON_SYSTEM}|p-1"
    assert linked["r3"] == f"{LOCAL_PERSON_SYSTEM}|p-2"
    assert linked["r4"] == f"{LOCAL_RECORD_SYSTEM}|r4"  # no person id: the record is its own person

    # What the node trains and evaluates on: one record of each person among those admitted.
    from types import SimpleNamespace

    from federation.ids import Pseudonym
    from node.consent_gate import Admitted
    from node.service import HospitalNode

    patients = store.patients()
    admitted = Admitted(b"\0" * 32, 1, [Pseudonym.parse(p.pseudonym) for p in patients],
                        [{"number": p.record_number} for p in patients])
    used = HospitalNode._one_per_person(SimpleNamespace(store=store), admitted)
    assert len(used) == 3 and sum(r["number"] in ("r0", "r1", "r2") for r in used) == 1


def test_one_record_per_person_is_chosen_and_no_other_persons_choice_depends_on_it():
    persons = ["a", "b", "b", "b", "c", "c"]
    chosen = one_record_per_person(persons, salt="round-1")
    assert [persons[i] for i in chosen] == ["a", "b", "c"]
    without_b = [p for p in persons if p != "b"]
    assert [without_b[i] for i in one_record_per_person(without_b, salt="round-1")] == ["a", "c"]
    assert chosen[2] - 3 == one_record_per_person(without_b, salt="round-1")[1]  # c's record is the same one
    assert len({tuple(one_record_per_person(persons, salt=str(s))) for s in range(20)}) > 1  # the salt varies it


def _heart_examples(count: int = 60):
    records = [dict(zip(("age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak",
                         "slope", "ca", "thal", "num"), map(float, row.split(","))))
               for row in _rows(count) if "?" not in row]
    features, labels = TASK.examples(records)
    shift, scale = TASK.normaliser(None)
    return ((features - shift) / scale).astype(np.float32), labels


def test_a_person_with_three_records_moves_the_clipped_gradient_sum_by_at_most_the_clipping_norm():
    features, labels = _heart_examples()
    persons = ["person-3"] * 3 + [f"person-{i}" for i in range(4, len(features) + 1)]
    torch.manual_seed(0)
    model = TASK.build_model()
    torch.nn.init.normal_(model.weight, std=0.5)
    linked = clipped_sum_sensitivity(model, TASK.loss, features, labels, max_grad_norm=CLIP, patients=5,
                                     units=persons, select=lambda present: one_record_per_person(present, salt="r1"))
    assert linked <= 1.0 + 1e-4
    # Every record training on its own, the same person moves it by up to three clipping norms.
    unlinked = clipped_sum_sensitivity(model, TASK.loss, features, labels, max_grad_norm=CLIP, patients=1,
                                       units=persons)
    assert unlinked > 1.5
