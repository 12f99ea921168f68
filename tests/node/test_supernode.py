"""The warm SuperNode launcher (node/supernode.py), one of the overhead cuts of `twinledger bench overhead`."""

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy import processes
from node import supernode


def test_idle_poll_is_shortened_only_in_flowers_main_loop(monkeypatch):
    from flwr.supernode import start_client_internal as loop

    monkeypatch.setattr(loop, "time", time)
    assert supernode._shorten_idle_poll(0.01)
    started = time.perf_counter()
    loop.time.sleep(3)
    assert time.perf_counter() - started < 1.0
    assert loop.time.monotonic is time.monotonic
    assert time.sleep is not loop.time.sleep  # the time module itself is untouched


@pytest.mark.parametrize("warm", [True, False])
def test_supernode_command(warm):
    command = processes.supernode_command(warm=warm)
    if warm:
        assert command[-1] == "from node.supernode import main; main()"
    else:
        assert command[0].endswith("flower-supernode")


def test_launcher_sets_the_isolation_itself():
    with pytest.raises(SystemExit):
        supernode.main(["--insecure", "--isolation", "subprocess"])


def test_launcher_refuses_tls_options_for_its_local_runtime_api():
    with pytest.raises(SystemExit):
        supernode.main(["--root-certificates", "ca.pem", "--ssl-certfile", "x.pem"])


def test_the_app_gate_knows_the_installed_app_and_studies_record_its_digest():
    from federation.app_digest import packaged_app_digest
    from node import app_gate

    app_dir = supernode.default_app_dir()
    assert app_dir == processes.FLOWER_APP_DIR  # the packaged Flower app, found without importing the coordinator
    # What the builder and `study propose` record on chain is the digest Flower computes for that app's FAB.
    assert app_gate.installed_app_digest(app_dir) == packaged_app_digest()
    assert supernode.INSTALLED_APP == "node.client_app:app"


class _Context:
    def __init__(self, home, study):
        self.node_config = {"node-home": str(home)} if home else {}
        self.run_config = {"study-id": str(study)} if study else {}


def _reading_chain(monkeypatch, ledger):
    """approved_app_digest opens the node's ledger from its home: here, the test chain's, as the hospital."""
    from contracts.ledger import Ledger
    from node.settings import NodeSettings

    monkeypatch.setattr(NodeSettings, "load", classmethod(lambda cls, home: home))
    monkeypatch.setattr(Ledger, "from_settings", classmethod(lambda cls, settings, key_file=None: ledger))


@pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)
def test_the_approved_digest_is_the_one_the_runs_study_recorded_on_chain(chain, monkeypatch, tmp_path):
    from federation.ids import StudyId
    from node import app_gate

    _reading_chain(monkeypatch, chain.hospital)
    digest = app_gate.installed_app_digest(processes.FLOWER_APP_DIR)
    packaged = chain.consortium.propose_study(app_digest=digest)  # as the demo proposes its study
    assert supernode.approved_app_digest(_Context(tmp_path, packaged)) == digest
    other = chain.consortium.propose_study(app_digest="ab" * 32)
    assert supernode.approved_app_digest(_Context(tmp_path, other)) == "ab" * 32
    with pytest.raises(app_gate.AppNotApproved):  # so the packaged app's FAB is refused for that study
        app_gate.check_app(b"any fab", approved="ab" * 32, installed=digest)
    bare = StudyId.new()  # proposed with no app: nothing may run for it
    chain.operator.propose_study(bare, purpose="HRESCH", task_id="t", epsilon_budget=1, delta_exponent=5, rounds=1,
                                 ends_at=2**31)
    for context in (_Context(tmp_path, bare), _Context(tmp_path, chain.study_id),  # proposed without an app
                    _Context(tmp_path, StudyId.new()), _Context(None, packaged),
                    _Context(tmp_path, None)):
        with pytest.raises(app_gate.AppNotApproved):
            supernode.approved_app_digest(context)


def test_security_options_trust_the_ca_and_sign_with_the_node_key(tmp_path):
    options = supernode.security_options(tmp_path / "home", root_certificates=tmp_path / "ca.pem", warm=True,
                                         installed_app_dir=tmp_path / "app")
    assert options[options.index("--root-certificates") + 1] == str(tmp_path / "ca.pem")
    key = tmp_path / "home" / "keys" / "supernode_auth"
    assert options[options.index("--auth-supernode-private-key") + 1] == str(key) and key.stat().st_mode & 0o077 == 0
    secret = Path(options[options.index("--superexec-auth-secret-file") + 1])
    assert secret.stat().st_mode & 0o077 == 0 and len(secret.read_bytes()) == 64
    assert options[options.index("--installed-app-dir") + 1] == str(tmp_path / "app")
    without_app = supernode.security_options(tmp_path / "home", root_certificates=tmp_path / "ca.pem", warm=True)
    assert without_app[:4] == options[:4] and "--installed-app-dir" not in without_app  # the same key, kept
    stock = supernode.security_options(tmp_path / "home", root_certificates=tmp_path / "ca.pem", warm=False)
    assert "--superexec-auth-secret-file" not in stock  # Flower's own executor runs subprocess isolation: no secret


@pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)
def test_a_chain_that_does_not_answer_is_the_nodes_chain_unavailable_refusal_and_is_kept(chain, tmp_path):
    """The gate reads the chain first: when it cannot, train and evaluate get the refusal the node gives for any round it
    cannot check (chain unavailable), not an app refusal, and hospital IT finds it in the node's store."""
    from federation import protocol
    from federation.ids import StudyId
    from node import admin, app_gate
    from node.store import Store

    chain.deployment.save(tmp_path / "dep.json")
    settings = admin.init_node(tmp_path / "home", hospital="h", rpc_url=f"http://127.0.0.1:{processes.free_port()}",
                               deployment_file=tmp_path / "dep.json")
    with pytest.raises(app_gate.ApprovalUnknown) as refused:
        supernode.approved_app_digest(_Context(settings.home, chain.study_id))
    code, reason = app_gate.refusal_of(refused.value)
    assert code == protocol.CHAIN_UNAVAILABLE and "cannot be reached" in reason
    assert app_gate.refusal_of(app_gate.AppNotApproved("other app"))[0] == app_gate.APP_NOT_APPROVED

    config = protocol.RoundConfig(study_id=StudyId(chain.study_id), round=2, block=7)
    train = SimpleNamespace(metadata=SimpleNamespace(message_type="train"),
                            content={protocol.ROUND_CONFIG: config.to_record()})
    supernode.keep_refusal(train, _Context(settings.home, chain.study_id), code, reason)
    query = SimpleNamespace(metadata=SimpleNamespace(message_type="query.identify"), content={})
    supernode.keep_refusal(query, _Context(settings.home, chain.study_id), code, reason)  # no round: nothing kept
    (kept,) = Store(settings.resolved_database_url).refusals(str(StudyId(chain.study_id)))
    assert (kept.round, kept.phase, kept.code) == (2, "train", protocol.CHAIN_UNAVAILABLE)


def test_a_query_whose_studys_approval_cannot_be_learnt_runs_only_the_installed_app_and_train_is_refused():
    from federation import protocol
    from node import app_gate

    def unknown(context):
        raise app_gate.ApprovalUnknown(protocol.CHAIN_UNAVAILABLE, "no data used: the chain cannot be reached")

    def message(kind):
        return SimpleNamespace(metadata=SimpleNamespace(message_type=kind))

    assert app_gate._approved(unknown, message("query.identify"), None, "ab" * 32) == "ab" * 32
    for kind in ("train", "evaluate"):
        with pytest.raises(app_gate.ApprovalUnknown):
            app_gate._approved(unknown, message(kind), None, "ab" * 32)
