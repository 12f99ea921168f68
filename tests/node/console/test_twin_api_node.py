"""The twins through the node console's API (`/api/twins/...`): the node's encrypted store as their data,
the federated models the node kept after consent-checked evaluations as their models, every access logged."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from federation.protocol import RoundConfig
from federation.tasks import get_task
from node import admin
from node.console.app import create_app
from node.console.cli import create_console_token
from node.console.settings import ConsoleSettings
from node.consent_gate import Refusal
from node.console.twins import StoreSources
from node.models_store import latest_model, models_dir, read_model, save_model
from node.service import HospitalNode
from node.store import Store
from node.twins.cohort import simulate_patients, write_records
from node.twins.forecast import Backtest, Forecast, choose_point_30min
from node.twins.twin import FITTED

HEART_DATA = Path(__file__).resolve().parents[3] / "deploy" / "data" / "heart-disease" / "processed.cleveland.data"
FAR = int(time.time()) + 365 * 24 * 3600
PATIENT = "T1D-adult001"
STUDY_A, STUDY_B = "0x" + "a" * 64, "0x" + "b" * 64


def heart_csv(path: Path, count: int = 24) -> Path:
    path.write_text("\n".join(HEART_DATA.read_text().splitlines()[:count]) + "\n")
    return path


class NodeConsole:
    def __init__(self, home: Path):
        self.settings = admin.init_node(home, hospital="cleveland", rpc_url="http://127.0.0.1:9", deployment_file=None)
        self.admin_token = create_console_token(home, name="ada", role="it-admin")
        self.viewer_token = create_console_token(home, name="vic", role="viewer")
        self.app = create_app(ConsoleSettings.load(home))

    def api(self, token: str | None = None) -> TestClient:
        client = TestClient(self.app, base_url="https://testserver")
        if token:
            client.headers["Authorization"] = f"Bearer {token}"
        return client


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> NodeConsole:
    home = tmp_path_factory.mktemp("twins") / "node"
    console = NodeConsole(home)
    records = simulate_patients(["adult#001", "child#003"], days=2, seed=3)
    admin.import_records(console.settings, write_records(records, home.parent / "twins.csv"), cohort="train")
    admin.import_records(console.settings, heart_csv(home.parent / "heart.csv"))
    return console


def test_no_token_is_401_and_unknown_patients_404(node):
    for path in ("/api/twins/patients", f"/api/twins/diabetes/{PATIENT}", "/api/twins/heart/CLE-00001/risk"):
        answer = node.api().get(path)
        assert answer.status_code == 401 and "not logged in" in answer.json()["detail"], path
        assert node.api("tl_wrong").get(path).status_code == 401, path
    assert node.api().post(f"/api/twins/diabetes/{PATIENT}/whatif", json={"plans": [{"name": "x"}]}).status_code == 401
    viewer = node.api(node.viewer_token)
    listed = viewer.get("/api/twins/patients").json()
    assert listed["diabetes"] == ["T1D-adult001", "T1D-child003"] and "CLE-00001" in listed["heart"]
    assert viewer.get("/api/twins/diabetes/nobody").status_code == 404
    assert viewer.get("/api/twins/diabetes/CLE-00001").status_code == 404  # a heart patient has no diabetes twin
    assert viewer.get("/api/twins/heart/T1D-adult001/risk").status_code == 404
    spec = node.api().get("/openapi.json").json()
    operation = spec["paths"]["/api/twins/diabetes/{patient_id}/forecast"]["get"]
    assert operation["security"] and "401" in operation["responses"]


def test_heart_risk_is_503_until_the_node_keeps_a_model(node):
    viewer = node.api(node.viewer_token)
    answer = viewer.get("/api/twins/heart/CLE-00001/risk")
    assert answer.status_code == 503 and "no federated heart-disease model" in answer.json()["detail"]
    torch.manual_seed(0)
    model = get_task("heart-disease/v1").build_model()
    mean, std = np.full(13, 50.0), np.full(13, 20.0)
    save_model(node.settings.home, task_id="heart-disease/v1", study_id=STUDY_A, round=2, block=10,
               state=model.state_dict(), shift=mean, scale=std)
    answer = viewer.get("/api/twins/heart/CLE-00001/risk")
    assert answer.status_code == 200, answer.text
    assert answer.json()["associational_not_causal"] is True and 0 < answer.json()["risk"] < 1
    actions = node.api(node.admin_token).get("/api/actions").json()
    heart = [a for a in actions if a["target"] == "CLE-00001" and a["action"].startswith("twins.")]
    assert [(a["actor"], a["outcome"]) for a in heart[:2]] == [("vic", "ok"), ("vic", "refused")]


@pytest.mark.slow  # calibrates a twin (about 13 s)
def test_calibrated_twin_forecast_with_method_and_whatif(node):
    admin_client = node.api(node.admin_token)
    twin = admin_client.get(f"/api/twins/diabetes/{PATIENT}")
    assert twin.status_code == 200, twin.text
    assert {p["symbol"] for p in twin.json()["parameters"]} == set(FITTED)
    alone = admin_client.get(f"/api/twins/diabetes/{PATIENT}/forecast", params={"horizon_min": 60}).json()
    assert alone["point_30min"]["method"] == "twin" and alone["backtest"] is None and alone["federated_model"] is None
    assert len(alone["median_mgdl"]) == 61
    # A federated glucose forecaster kept by the node (the task's initial model: last value carried forward).
    forecaster = get_task("glucose-forecast/v1").build_model()
    save_model(node.settings.home, task_id="glucose-forecast/v1", study_id=STUDY_B, round=3, block=20,
               state=forecaster.state_dict(), shift=np.zeros(26), scale=np.ones(26))
    body = admin_client.get(f"/api/twins/diabetes/{PATIENT}/forecast", params={"horizon_min": 120}).json()
    assert len(body["median_mgdl"]) == 121 and "mechanistic" in body["method"]
    assert body["federated_model"] == {"task_id": "glucose-forecast/v1", "study_id": STUDY_B, "round": 3, "block": 20}
    backtest, point = body["backtest"], body["point_30min"]
    assert backtest["origins"] >= 200  # every 5 minutes of the last day
    twin_rmse, federated_rmse = backtest["twin_rmse_30min_mgdl"], backtest["federated_rmse_30min_mgdl"]
    assert 0 < twin_rmse < 40 and 0 < federated_rmse < 60
    assert point["method"] == ("federated" if federated_rmse < twin_rmse else "twin")
    assert point["glucose_mgdl"] == (point["federated_glucose_mgdl"] if point["method"] == "federated"
                                     else point["twin_glucose_mgdl"])
    made_at, at = datetime.fromisoformat(point["made_at"]), datetime.fromisoformat(point["at"])
    assert at - made_at == timedelta(minutes=30)
    # Last value carried forward: the federated point is the last CGM reading.
    record_cgm = StoreSources(node.app.state.console).diabetes_record(PATIENT).cgm_mgdl
    assert point["federated_glucose_mgdl"] == pytest.approx(record_cgm[np.isfinite(record_cgm)][-1])
    png = admin_client.get(f"/api/twins/diabetes/{PATIENT}/forecast.png", params={"horizon_min": 60})
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    request = {"plans": [{"name": "current"}, {"name": "more basal", "basal_u_per_h": 2.0}], "horizon_min": 240,
               "members": 4, "meals": [{"time_min": 30, "carbs_g": 50}]}
    whatif = node.api(node.viewer_token).post(f"/api/twins/diabetes/{PATIENT}/whatif", json=request)
    assert whatif.status_code == 200, whatif.text
    plans = whatif.json()["plans"]
    assert plans[1]["median"]["mean_glucose_mgdl"] < plans[0]["median"]["mean_glucose_mgdl"]
    bad = node.api(node.viewer_token).post(f"/api/twins/diabetes/{PATIENT}/whatif", json={"plans": []})
    assert bad.status_code == 422
    outcomes = [(a["action"], a["outcome"]) for a in admin_client.get("/api/actions").json() if a["target"] == PATIENT]
    assert outcomes[0] == ("twins.whatif", "refused")
    logged = [(a["actor"], a["action"]) for a in admin_client.get("/api/actions").json() if a["target"] == PATIENT]
    assert ("vic", "twins.whatif") in logged and ("ada", "twins.glucose_forecast") in logged


def test_pages_for_clinicians(node):
    client = node.api()
    assert client.get("/twins", follow_redirects=False).headers["location"] == "/login"
    form_token = re.search(r'name="form_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"form_token": form_token, "token": node.viewer_token})
    listing = client.get("/twins")
    assert listing.status_code == 200 and 'href="/twins/diabetes/T1D-adult001"' in listing.text
    page = client.get(f"/twins/diabetes/{PATIENT}")  # calibrated already (the API's cache)
    assert page.status_code == 200 and "In 30 minutes" in page.text and "forecast.png" in page.text
    assert "Vmx" in page.text and "default-src 'self'" in page.headers["content-security-policy"]
    heart = client.get("/twins/heart/CLE-00001")
    assert heart.status_code == 200 and "not causal" in heart.text
    missing = client.get("/twins/diabetes/nobody")
    assert missing.status_code == 404 and "no diabetes twin" in missing.text
    logged = [(a["actor"], a["action"], a["outcome"]) for a in node.api(node.admin_token).get("/api/actions").json()]
    assert ("vic", "twins.page.diabetes", "refused") in logged and ("vic", "twins.page.heart", "ok") in logged


def test_the_point_forecast_comes_from_the_better_forecaster():
    start = datetime(2026, 1, 5, tzinfo=timezone.utc)
    twin = Forecast("p", start, np.arange(61.0), np.full(61, 150.0), np.full(61, 151.0), np.full(61, 140.0),
                    np.full(61, 160.0), np.zeros((1, 61)))
    record = simulate_patients(["adult#001"], days=1, seed=1)[0]

    def backtest(twin_rmse, federated_rmse):
        return Backtest(100, start, start, twin_rmse, federated_rmse)

    better = choose_point_30min(twin, record, backtest(20.0, 15.0), (1400, 170.0))
    assert (better.method, better.glucose_mgdl, better.twin_glucose_mgdl) == ("federated", 170.0, 150.0)
    assert better.made_at == start + timedelta(minutes=1400) and "did better" in better.reason
    assert choose_point_30min(twin, record, backtest(15.0, 15.0), (1400, 170.0)).method == "twin"  # a tie: the twin
    assert choose_point_30min(twin, record, None, (1400, 170.0)).method == "twin"
    assert choose_point_30min(twin, record, backtest(20.0, 15.0), None).method == "twin"


def test_models_are_kept_atomically_per_study_and_the_newest_wins(tmp_path):
    state = get_task("glucose-forecast/v1").build_model().state_dict()
    kwargs = dict(task_id="glucose-forecast/v1", state=state, shift=np.zeros(26), scale=np.ones(26))
    path = save_model(tmp_path, study_id=STUDY_A, round=2, block=5, **kwargs)
    assert path == models_dir(tmp_path) / f"{STUDY_A}.pt" and path.stat().st_mode & 0o077 == 0
    assert save_model(tmp_path, study_id=STUDY_A, round=1, block=6, **kwargs) is None  # an older round: kept round 2
    save_model(tmp_path, study_id=STUDY_B, round=1, block=9, **kwargs)
    assert latest_model(tmp_path, "glucose-forecast/v1").study_id == STUDY_B
    assert latest_model(tmp_path, "heart-disease/v1") is None
    (models_dir(tmp_path) / ("0x" + "c" * 64 + ".pt")).write_bytes(b"damaged")
    assert latest_model(tmp_path, "glucose-forecast/v1").study_id == STUDY_B  # a damaged file is skipped
    assert [p.name for p in models_dir(tmp_path).iterdir() if p.suffix == ".tmp"] == []
    with pytest.raises(ValueError, match="study id"):
        save_model(tmp_path, study_id="../x", round=1, block=1, **kwargs)


@pytest.mark.slow  # trains and evaluates a round on a chain (about 7 s)
@pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)
def test_evaluation_keeps_the_global_model_only_when_consent_held(chain, tmp_path):
    hospital = chain.consortium.add_node("cleveland", tmp_path / "node", records=[heart_csv(tmp_path / "heart.csv", 40)])
    hospital.enrol()
    settings = hospital.settings
    store = Store(settings.resolved_database_url)
    patients = store.patients()
    study = chain.consortium.propose_study(epsilon_budget=3.0, delta_exponent=5, rounds=3, ends_at=FAR)
    hospital.accept(study)
    node = HospitalNode(settings, ledger=hospital.ledger)
    torch.manual_seed(1)
    state = get_task("heart-disease/v1").build_model().state_dict()

    def config(round_number):
        return RoundConfig(study_id=study, round=round_number, block=hospital.ledger.block_number(), local_epochs=1,
                           learning_rate=0.1, batch_size=16, max_grad_norm=1.0)

    with pytest.raises(Refusal):  # nobody has consented yet: no data used, no model kept
        node.evaluate(config(1), state)
    assert latest_model(settings.home, "heart-disease/v1") is None
    hospital.consent(study, valid_from=0, valid_until=FAR, deadline=FAR)  # every patient, signed and relayed
    round_config = config(2)
    node.evaluate(round_config, state)
    kept = latest_model(settings.home, "heart-disease/v1")
    assert (kept.study_id, kept.round, kept.block) == (str(study), 2, round_config.block)
    assert all(torch.equal(kept.state[k], state[k]) for k in state)
    task = get_task("heart-disease/v1")
    train = [admin_record for admin_record in _decrypted(settings, store, cohort="train")]
    mean, std = task.normaliser(task.training_examples(train)[0])
    assert np.allclose(kept.shift, mean) and np.allclose(kept.scale, std)
    assert read_model(kept.path).task_id == "heart-disease/v1"
    # The console's heart twin now answers with this model, on the round's own standardisation.
    token = create_console_token(settings.home, name="carla", role="viewer")
    client = TestClient(create_app(ConsoleSettings.load(settings.home)), base_url="https://testserver")
    patient = next(p for p in patients if p.cohort == "test")
    answer = client.get(f"/api/twins/heart/{patient.record_number}/risk", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    (record,) = [r for p, r in zip(store.candidates("test"), _decrypted(settings, store, cohort="test"))
                 if p.record_number == patient.record_number]
    features, _ = task.examples([record])
    model = task.build_model()
    model.load_state_dict(state)
    expected = torch.sigmoid(model(torch.tensor((features - mean) / std, dtype=torch.float32))).item()
    assert answer.json()["risk"] == pytest.approx(expected, rel=1e-5)


def _decrypted(settings, store, *, cohort):
    from node.vault import Vault

    vault = Vault.open(settings.data_key_file)
    return [vault.open_record(p.clinical, associated=p.pseudonym) for p in store.candidates(cohort)
            if p.kind == "heart-disease"]
