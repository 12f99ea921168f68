"""Shared fixtures: a chain with the TwinLedger contracts deployed, built by deploy/consortium.py (the
builder the demo and the benchmarks use).

Every test that takes `chain` runs twice: on the in-process chain (eth-tester) and on a real chain node
(anvil over JSON-RPC). TWINLEDGER_TEST_CHAINS=eth-tester (or =anvil) narrows that. On the in-process chain the
deployment is built once per session and each test starts from an eth-tester snapshot of it, reverted afterwards.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import pytest
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider

from contracts import ledger as lg
from deploy.consortium import Consortium, chain_url, eth_tester
from node.portal import security as portal_security

# The portal's password hashing cost (scrypt N=2**14, 50 ms a hash) is a production setting, not a behaviour under
# test: in-process tests hash with N=2**10, as the keystore tests use a cheap derivation. Set before any test
# module seals a key, so every hash of this process uses the one cost; real processes (e2e) use the real one.
portal_security.SCRYPT_N = 2**10


@dataclass
class Chain:
    w3: Web3
    deployment: lg.Deployment
    operator: lg.Ledger
    hospital: lg.Ledger
    other_hospital: lg.Ledger
    coordinator: lg.Ledger
    study_id: bytes
    consortium: Consortium | None = None

    def ledger_for(self, key: str) -> lg.Ledger:
        return lg.Ledger(self.w3, self.deployment, account_key=key)


@pytest.fixture(scope="session")
def artifacts():
    from contracts.build import compile_contracts

    return compile_contracts()


BACKENDS = [b for b in os.environ.get("TWINLEDGER_TEST_CHAINS", "eth-tester,anvil").split(",") if b]


@pytest.fixture(scope="session")
def anvil_url(tmp_path_factory):
    with chain_url(None, log_path=tmp_path_factory.mktemp("anvil") / "anvil.log") as url:
        yield url


def advance_time(w3: Web3, seconds: int) -> None:
    """Move the chain's clock forward and mine a block, on either backend."""
    if isinstance(w3.provider, EthereumTesterProvider):
        tester = w3.provider.ethereum_tester
        tester.time_travel(w3.eth.get_block("latest")["timestamp"] + seconds)
        tester.mine_blocks(1)
    else:
        w3.provider.make_request("evm_increaseTime", [seconds])
        w3.provider.make_request("evm_mine", [])


# The anvil run of every chain test counts as slow: the fast loop (-m "not e2e and not browser and not slow")
# checks each behaviour once, on the in-process chain; the whole suite checks it on both.
CHAIN_PARAMS = [pytest.param(b, marks=pytest.mark.slow) if b == "anvil" else b for b in BACKENDS]


def _deploy(w3: Web3, url: str | None, artifacts) -> Chain:
    """A deployment with a consortium, two hospitals, a coordinator and one accepted study."""
    consortium = Consortium.deploy(w3, rpc_url=url, artifacts=artifacts, ether=10)
    hospital = consortium.add_hospital(node_id=b"\x01" * 32)
    other = consortium.add_hospital(node_id=b"\x02" * 32)
    coordinator = consortium.add_coordinator()
    study_id = consortium.propose_study(epsilon_budget=3.0, delta_exponent=5, rounds=5)
    hospital.accept_study(study_id)
    return Chain(w3, consortium.deployment, consortium.operator, hospital, other, coordinator, study_id, consortium)


@pytest.fixture(scope="session")
def in_process_chain(artifacts) -> Chain:
    """The `chain` deployment on the in-process chain, built once per session: each test gets it back as
    built (an eth-tester snapshot, reverted after the test) in milliseconds instead of 0.6 s of transactions."""
    return _deploy(eth_tester(), None, artifacts)


@pytest.fixture(params=CHAIN_PARAMS)
def chain(request, artifacts) -> Chain:
    """A fresh deployment with a consortium, two hospitals, a coordinator and one accepted study."""
    if request.param == "anvil":
        url = request.getfixturevalue("anvil_url")
        return _deploy(lg.connect(url), url, artifacts)
    built: Chain = request.getfixturevalue("in_process_chain")
    tester = built.w3.provider.ethereum_tester
    snapshot = tester.take_snapshot()

    def revert():
        tester.enable_auto_mine_transactions()
        tester.revert_to_snapshot(snapshot)

    request.addfinalizer(revert)
    tester.mine_blocks(1)  # the latest block's timestamp is now, as on a chain deployed for this test
    # Fresh Python objects over the reverted chain: nothing a test sets on them reaches the next test.
    operator, hospital, other, coordinator = (built.ledger_for(ledger._key) for ledger in (
        built.operator, built.hospital, built.other_hospital, built.coordinator))
    consortium = dataclasses.replace(built.consortium, operator=operator, coordinator=coordinator, nodes={})
    return Chain(built.w3, built.deployment, operator, hospital, other, coordinator, built.study_id, consortium)


# `make test` runs on two pytest-xdist workers (-n 2 --dist loadscope). The tests that start the real processes
# (anvil, SuperLink, SuperNodes, portals, Chromium) form one unit of work, so they run one after another on one
# worker as they would alone, their timeouts untouched, while the other worker takes the rest, module by module
# (a module's fixtures are built once). The scheduler sees node ids only, hence paths rather than markers.
# (xdist's own `--dist loadgroup` did not keep a group on one worker in xdist 3.8.0 here.)
PROCESS_PATHS = ("tests/e2e/", "tests/faults/", "tests/deploy/test_deployment_walk.py",
                 "tests/node/portal/test_portal_load.py", "tests/deploy/test_wheel.py")


def starts_processes(nodeid: str) -> bool:
    path = nodeid.split("::")[0]
    return path.startswith(PROCESS_PATHS) or path.endswith("_browser.py")


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ProcessesOnOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "processes" if starts_processes(nodeid) else nodeid.split("::")[0]

    return ProcessesOnOneWorker(config, log)


def pytest_configure(config):
    # The inner loop deselects slow tests; its fuzz tests then ask for a few examples each (tests/fuzz.py).
    from tests import fuzz

    fuzz.QUICK = "not slow" in " ".join((config.getoption("markexpr") or "").split())


CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps calling Google's hosts, which this network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium driven by Playwright (`make test` installs the package)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (own cookies) and page; phone-sized when a test asks with `page_size`."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


SCREENSHOTS = os.path.join(os.path.dirname(__file__), "..", "docs", "screenshots")


def save_screenshot(page, name: str) -> None:
    """Keep a screenshot of a main page for docs/, only when asked: TWINLEDGER_SCREENSHOTS=1 (a test run
    must not rewrite tracked files)."""
    if os.environ.get("TWINLEDGER_SCREENSHOTS", "") not in ("1", "true", "yes"):
        return
    os.makedirs(SCREENSHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True)
