"""Stateful property test of the consent registry and its Python client, on the in-process chain.

A Hypothesis state machine drives random consent operations (direct and relayed grants and revocations,
replays, forged and foreign-domain signatures, expired signatures, cancellations, impostors, study
suspension, the passing of time, two hospitals racing to enrol the same pseudonyms) through
:mod:`contracts.ledger`, keeps a pure-Python model of what the registry must hold, and after every step
checks the chain against the model: single and batch consent answers, each hospital's own answers (only
pseudonyms it enrolled, with the key it stored), who enrolled what, raw consent records, nonces, study
liveness and the full event history.

Time is the chain's own: the chain is moved ahead of the wall clock at setup, so that every block is
exactly one second after its parent and the timestamp a transaction will run at is known in advance
(the pending block's). Rejections are checked by their decoded custom-error name, and a rejected call
must not mine anything.
"""

from __future__ import annotations

import functools
import random
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import eth  # noqa: F401 - py-evm raises the recursion limit on import; do it before Hypothesis sets its own
import pytest
from eth_account import Account
from eth_utils import keccak
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule
from web3 import Web3
from web3.logs import DISCARD
from web3.providers.eth_tester import EthereumTesterProvider

from contracts import ledger as lg
from federation.ids import Pseudonym
from contracts.build import compile_contracts
from deploy.consortium import funded_key
from tests.conftest import advance_time

# Minutes on the in-process chain: the state machine (about 200 s) and the bitmap test (about 45 s).
pytestmark = [pytest.mark.slow]

ARTIFACTS = compile_contracts()

N_PATIENTS = 4
N_STUDIES = 2
DAY = 24 * 3600
# Study 0 runs for a month; study 1 ends a day after setup, so that time travel can end it.
STUDY_LENGTH = (30 * DAY, DAY)
FAR = 10 * 365 * DAY  # relative: a deadline nobody reaches in a run
MAX_UINT32 = 0xFFFFFFFF

PATIENTS = st.sampled_from(range(N_PATIENTS))
STUDIES = st.sampled_from(range(N_STUDIES))
RELAYERS = st.sampled_from(["hospital", "other_hospital"])
# Window offsets relative to the second the transaction runs at: some already over, some empty, some
# ending within seconds (so that time travel expires them), some starting in the future.
PAST_FROM_OFFSETS = st.one_of(st.none(), st.integers(-3000, 0))
FROM_OFFSETS = st.one_of(PAST_FROM_OFFSETS, st.integers(1, 3000))
VALID_UNTIL_OFFSETS = st.one_of(st.integers(1, 40), st.integers(41, 5 * DAY))
UNTIL_OFFSETS = st.one_of(
    VALID_UNTIL_OFFSETS,
    VALID_UNTIL_OFFSETS,
    st.integers(-100, 0),
    # ("abs", t): an absolute end at or past the 32-bit limit of the registry's packed storage
    st.tuples(st.just("abs"), st.sampled_from([MAX_UINT32, MAX_UINT32 + 1, 2**64 - 1])),
)
DEADLINE_OFFSETS = st.one_of(st.integers(0, 40), st.just(FAR))
TIME_STEPS = st.one_of(st.integers(1, 40), st.integers(41, 3600), st.integers(3601, 2 * DAY))


# Every chain interaction runs on one worker thread with a shallow stack. CPython 3.11 grows a thread's
# frame stack in 16 KB chunks that it maps and unmaps as calls cross a chunk boundary; at the depth
# Hypothesis runs rules under pytest, py-evm's interpreter loop sat right on such a boundary and spent
# more time in mmap/munmap than in the EVM (the same run took 2.5x as long). The worker's depth does
# not depend on pytest or Hypothesis.
_CHAIN_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chain")


def on_chain_thread(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if threading.current_thread().name.startswith("chain"):
            return fn(*args, **kwargs)
        return _CHAIN_THREAD.submit(fn, *args, **kwargs).result()

    return wrapper


def _key(label: str) -> str:
    """A deterministic private key, so that Hypothesis replays a failing run exactly."""
    return "0x" + keccak(text=f"twinledger-stateful/{label}").hex()


def _pseudonym(label: str) -> bytes:
    return keccak(text=f"twinledger-stateful/pseudonym/{label}")


def _window_ok(valid_from: int, valid_until: int, ts: int) -> bool:
    """The registry's rule: a non-empty window, not over yet, ending by 2^32 - 1 (it packs 32-bit seconds)."""
    return valid_from < valid_until and ts < valid_until <= MAX_UINT32


@dataclass
class Signed:
    """A signature the model knows about, relayed or not."""

    kind: str  # "grant", "revoke" or "cancel"
    patient: int | None  # None: a pseudonym that was never enrolled
    pseudonym: bytes
    nonce: int
    deadline: int
    message: object
    signer_ok: bool = True
    study: int | None = None
    valid_from: int | None = None
    valid_until: int | None = None


@dataclass
class Model:
    nonces: list[int]
    consents: dict[tuple[int, int], tuple[int, int] | None]
    suspended: list[bool]
    ends_at: list[int]
    accepted: dict[str, set[int]]
    changes: list[list[tuple[bytes, bool, int]]]  # per study: (pseudonym, granted, block)
    used: list[Signed] = field(default_factory=list)
    held: list[Signed] = field(default_factory=list)
    raced: dict[bytes, tuple[str, str]] = field(default_factory=dict)  # pseudonym -> (enrolling hospital, key)

    def consent_at(self, p: int, s: int, ts: int) -> bool:
        window = self.consents[(p, s)]
        return window is not None and window[0] <= ts < window[1]


class ConsentMachine(RuleBasedStateMachine):
    signed = Bundle("signed")

    def __init__(self):
        super().__init__()
        on_chain_thread(self._set_up)()

    def _set_up(self):
        w3 = Web3(EthereumTesterProvider())
        self.w3 = w3
        self.tester = w3.provider.ethereum_tester
        # Ahead of the wall clock: from here on every block is its parent plus one second.
        self.tester.time_travel(int(time.time()) + DAY)

        def funded(label: str) -> str:
            key = _key(label)
            lg.fund_from_dev_account(w3, Account.from_key(key).address, ether=10)
            return key

        operator_key = funded("operator")
        self.deployment = lg.deploy(w3, operator_key, artifacts=ARTIFACTS)
        self.operator = lg.Ledger(w3, self.deployment, account_key=operator_key)
        self.hospital = lg.Ledger(w3, self.deployment, account_key=funded("hospital"))
        self.other_hospital = lg.Ledger(w3, self.deployment, account_key=funded("other-hospital"))
        self.operator.register_hospital(self.hospital.address, b"\x01" * 32)
        self.operator.register_hospital(self.other_hospital.address, b"\x02" * 32)

        self.studies = [keccak(text=f"twinledger-stateful/study/{i}") for i in range(N_STUDIES)]
        start = self._latest_ts()
        ends_at = [start + length for length in STUDY_LENGTH]
        for study_id, end in zip(self.studies, ends_at):
            self.operator.propose_study(
                study_id, purpose="HRESCH", task_id="heart-disease/v1", epsilon_budget=3.0,
                delta_exponent=5, rounds=5, ends_at=end,
            )
            self.hospital.accept_study(study_id)

        # Patient 0's consent key is a funded account, so that patient can act directly.
        self.patient_keys = [funded("patient-0")] + [_key(f"patient-{i}") for i in range(1, N_PATIENTS)]
        self.patient0 = lg.Ledger(w3, self.deployment, account_key=self.patient_keys[0])
        self.pseudonyms = [_pseudonym(str(i)) for i in range(N_PATIENTS)]
        self.unknown = _pseudonym("never-enrolled")
        self.hospital.enrol(self.pseudonyms, [Account.from_key(k).address for k in self.patient_keys])
        self.stranger_key = _key("stranger")

        self.model = Model(
            nonces=[0] * N_PATIENTS,
            consents={(p, s): None for p in range(N_PATIENTS) for s in range(N_STUDIES)},
            suspended=[False] * N_STUDIES,
            ends_at=ends_at,
            accepted={self.hospital.address: set(range(N_STUDIES)), self.other_hospital.address: set()},
            changes=[[] for _ in range(N_STUDIES)],
        )
        self.windows_changed = True
        self.events_checked_from = self.deployment.deployed_block

    # ---- plumbing ----

    def _latest_ts(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def _next_ts(self) -> int:
        """The timestamp the next transaction runs at (the pending block's)."""
        return self.w3.eth.get_block("pending")["timestamp"]

    def _relayer(self, name: str) -> lg.Ledger:
        return getattr(self, name)

    def _expect_rejected(self, action, error_name: str, match: str | None = None) -> None:
        """The call must be refused with `error_name` and leave the chain untouched."""
        block = self.w3.eth.block_number
        with pytest.raises(lg.ContractRejected, match=match) as info:
            action()
        assert info.value.error_name == error_name, str(info.value)
        assert self.w3.eth.block_number == block, "a rejected call mined a block"

    def _expect_success(self, action, ts: int) -> dict:
        receipt = action()
        if isinstance(receipt, list):
            (receipt,) = receipt
        assert receipt["status"] == 1
        self.windows_changed = True  # re-read every raw window record at the next check
        assert self.w3.eth.get_block(receipt["blockNumber"])["timestamp"] == ts, "the transaction ran at another time"
        return receipt

    def _check_events(self, receipt, *, granted=(), revoked=(), cancelled=()) -> None:
        """The receipt carries exactly the expected consent events, in order."""
        events = self.hospital.consent.events
        got_granted = [
            (bytes(e.args.pseudonym), bytes(e.args.studyId), e.args.validFrom, e.args.validUntil)
            for e in events.ConsentGranted().process_receipt(receipt, errors=DISCARD)
        ]
        got_revoked = [
            (bytes(e.args.pseudonym), bytes(e.args.studyId))
            for e in events.ConsentRevoked().process_receipt(receipt, errors=DISCARD)
        ]
        got_cancelled = [
            (bytes(e.args.pseudonym), e.args.nextNonce)
            for e in events.SignaturesCancelled().process_receipt(receipt, errors=DISCARD)
        ]
        assert got_granted == list(granted)
        assert got_revoked == list(revoked)
        assert got_cancelled == list(cancelled)

    def _window(self, ts: int, from_offset: int | None, until_offset) -> tuple[int, int]:
        valid_from = 0 if from_offset is None else max(0, ts + from_offset)
        valid_until = until_offset[1] if isinstance(until_offset, tuple) else ts + until_offset
        return valid_from, valid_until

    # ---- the model's effects ----

    def _granted(self, receipt, p: int, s: int, valid_from: int, valid_until: int) -> tuple:
        self.model.consents[(p, s)] = (valid_from, valid_until)
        self.windows_changed = True
        self.model.changes[s].append((self.pseudonyms[p], True, receipt["blockNumber"]))
        return (self.pseudonyms[p], self.studies[s], valid_from, valid_until)

    def _revoked(self, receipt, p: int, s: int) -> tuple:
        self.model.consents[(p, s)] = None
        self.windows_changed = True
        self.model.changes[s].append((self.pseudonyms[p], False, receipt["blockNumber"]))
        return (self.pseudonyms[p], self.studies[s])

    def _cancelled(self, p: int) -> tuple:
        self.model.nonces[p] = (self.model.nonces[p] | MAX_UINT32) + 1
        return (self.pseudonyms[p], self.model.nonces[p])

    # ---- signatures ----

    def _sign(
        self, kind: str, p: int | None, *, nonce: int, deadline: int, s: int = 0, window=(0, 0),
        key: str | None = None, deployment: lg.Deployment | None = None,
    ) -> Signed:
        pseudonym = self.unknown if p is None else self.pseudonyms[p]
        own_key = self.stranger_key if p is None else self.patient_keys[p]
        key = key or own_key
        deployment = deployment or self.deployment
        signer_ok = key == own_key and deployment is self.deployment
        if kind == "grant":
            message = lg.sign_grant(
                key, deployment, pseudonym=pseudonym, study_id=self.studies[s], valid_from=window[0],
                valid_until=window[1], nonce=nonce, deadline=deadline,
            )
            return Signed(kind, p, pseudonym, nonce, deadline, message, signer_ok, s, window[0], window[1])
        if kind == "revoke":
            message = lg.sign_revoke(
                key, deployment, pseudonym=pseudonym, study_id=self.studies[s], nonce=nonce, deadline=deadline
            )
            return Signed(kind, p, pseudonym, nonce, deadline, message, signer_ok, s)
        message = lg.sign_cancel(key, deployment, pseudonym=pseudonym, nonce=nonce, deadline=deadline)
        return Signed(kind, p, pseudonym, nonce, deadline, message, signer_ok)

    def _expected_error(self, sig: Signed, ts: int) -> str | None:
        """What the registry must answer to `sig` relayed at `ts`, in the order it checks."""
        if ts > sig.deadline:
            return "SignatureExpired"
        if sig.patient is None:
            return "UnknownPseudonym"
        current = self.model.nonces[sig.patient]
        if sig.kind == "cancel":
            # A cancellation holds for any nonce of the current run of 2^32 up to the current one.
            if sig.nonce >> 32 != current >> 32 or sig.nonce > current:
                return "WrongNonce"
        elif sig.nonce != current:
            return "WrongNonce"
        if not sig.signer_ok:
            return "WrongSigner"
        if sig.kind == "grant" and not _window_ok(sig.valid_from, sig.valid_until, ts):
            return "InvalidWindow"
        return None

    def _send(self, sig: Signed, relayer: lg.Ledger):
        if sig.kind == "grant":
            return relayer.relay_grants([sig.message])
        if sig.kind == "revoke":
            return relayer.relay_revoke(sig.message)
        return relayer.relay_cancel(sig.message)

    def _relay(self, sig: Signed, relayer: lg.Ledger, match: str | None = None) -> str | None:
        """Relay `sig`, check the outcome and the events against the model; returns the error, if any."""
        ts = self._next_ts()
        error = self._expected_error(sig, ts)
        if error is not None:
            self._expect_rejected(lambda: self._send(sig, relayer), error, match)
            return error
        receipt = self._expect_success(lambda: self._send(sig, relayer), ts)
        p = sig.patient
        if sig.kind != "cancel":
            self.model.nonces[p] = sig.nonce + 1
        if sig.kind == "grant":
            self._check_events(receipt, granted=[self._granted(receipt, p, sig.study, sig.valid_from, sig.valid_until)])
        elif sig.kind == "revoke":
            # A relayed revocation voids every outstanding signature, like a direct one (issue 12, item 8).
            self._check_events(receipt, revoked=[self._revoked(receipt, p, sig.study)], cancelled=[self._cancelled(p)])
        else:
            self._check_events(receipt, cancelled=[self._cancelled(p)])
        self.model.used.append(sig)
        return None

    # ---- rules: the patient's own account ----

    # Hypothesis orders rules by (bundle targets, number of arguments, name), and its simplest examples
    # repeat the first one. Taking a single composite argument makes the direct grant that rule (with a
    # one-second window) rather than the passing of time.
    @rule(grant=st.tuples(STUDIES, FROM_OFFSETS, UNTIL_OFFSETS))
    @on_chain_thread
    def grant_directly(self, grant):
        s, from_offset, until_offset = grant
        ts = self._next_ts()
        valid_from, valid_until = self._window(ts, from_offset, until_offset)
        act = lambda: self.patient0.grant(self.pseudonyms[0], self.studies[s], valid_from=valid_from, valid_until=valid_until)
        if not _window_ok(valid_from, valid_until, ts):
            self._expect_rejected(act, "InvalidWindow")
            return
        receipt = self._expect_success(act, ts)
        self._check_events(receipt, granted=[self._granted(receipt, 0, s, valid_from, valid_until)])

    @rule(s=STUDIES)
    @on_chain_thread
    def revoke_directly(self, s):
        ts = self._next_ts()
        receipt = self._expect_success(lambda: self.patient0.revoke(self.pseudonyms[0], self.studies[s]), ts)
        # A direct revocation also voids the patient's outstanding signatures.
        self._check_events(receipt, revoked=[self._revoked(receipt, 0, s)], cancelled=[self._cancelled(0)])

    # ---- rules: relayed signatures ----

    @rule(p=PATIENTS, s=STUDIES, from_offset=FROM_OFFSETS, until_offset=UNTIL_OFFSETS, relayer=RELAYERS)
    @on_chain_thread
    def relay_grant(self, p, s, from_offset, until_offset, relayer):
        ts = self._next_ts()
        window = self._window(ts, from_offset, until_offset)
        sig = self._sign("grant", p, nonce=self.model.nonces[p], deadline=ts + FAR, s=s, window=window)
        self._relay(sig, self._relayer(relayer))

    @rule(p=PATIENTS, s=STUDIES, relayer=RELAYERS)
    @on_chain_thread
    def relay_revoke(self, p, s, relayer):
        sig = self._sign("revoke", p, nonce=self.model.nonces[p], deadline=self._next_ts() + FAR, s=s)
        assert self._relay(sig, self._relayer(relayer)) is None

    @rule(
        items=st.lists(st.tuples(PATIENTS, STUDIES, PAST_FROM_OFFSETS, VALID_UNTIL_OFFSETS), min_size=2, max_size=3),
        poison=st.sampled_from([None, None, 0, 1, 2]),
        spent=st.one_of(st.none(), st.integers(0, 10**6)),
        relayer=RELAYERS,
    )
    @on_chain_thread
    def relay_grant_batch(self, items, poison, spent, relayer):
        """Several signed grants in one transaction (consecutive nonces for a repeated patient); one item
        with an already-expired window makes the whole batch revert. A grant relayed before (somebody got
        there first) is skipped and reported, not fatal (issue 12, item 9)."""
        ts = self._next_ts()
        nonces = list(self.model.nonces)
        used_grants = [sig for sig in self.model.used if sig.kind == "grant"]
        replayed = used_grants[spent % len(used_grants)] if spent is not None and used_grants else None
        sigs = []
        for i, (p, s, from_offset, until_offset) in enumerate(items):
            window = (0, ts - 1) if i == poison else self._window(ts, from_offset, until_offset)
            sigs.append(self._sign("grant", p, nonce=nonces[p], deadline=ts + FAR, s=s, window=window))
            nonces[p] += 1
        sent = ([replayed.message] if replayed else []) + [sig.message for sig in sigs]
        act = lambda: self._relayer(relayer).relay_grants(sent)
        if not all(_window_ok(sig.valid_from, sig.valid_until, ts) for sig in sigs):  # all or nothing
            self._expect_rejected(act, "InvalidWindow")
            return
        receipt = self._expect_success(act, ts)
        skipped = self.hospital.skipped_grants([receipt])
        assert skipped == ([(replayed.pseudonym, replayed.nonce)] if replayed else [])
        granted = [self._granted(receipt, sig.patient, sig.study, sig.valid_from, sig.valid_until) for sig in sigs]
        self._check_events(receipt, granted=granted)
        self.model.nonces = nonces
        self.model.used.extend(sigs)

    @rule(
        target=signed,
        kind=st.sampled_from(["grant", "grant", "revoke", "cancel"]),
        p=PATIENTS,
        s=STUDIES,
        ahead=st.sampled_from([0, 0, 1, 2]),
        from_offset=FROM_OFFSETS,
        until_offset=UNTIL_OFFSETS,
        deadline_offset=DEADLINE_OFFSETS,
    )
    @on_chain_thread
    def sign_without_relaying(self, kind, p, s, ahead, from_offset, until_offset, deadline_offset):
        """The patient signs now (possibly ahead of the current nonce); somebody may relay it later."""
        ts = self._next_ts()
        sig = self._sign(
            kind, p, nonce=self.model.nonces[p] + ahead, deadline=ts + deadline_offset, s=s,
            window=self._window(ts, from_offset, until_offset),
        )
        self.model.held.append(sig)
        return sig

    @rule(sig=signed, relayer=RELAYERS)
    @on_chain_thread
    def relay_held_signature(self, sig, relayer):
        """Relay a signature signed earlier: valid only if its nonce is next, its deadline not passed."""
        self._relay(sig, self._relayer(relayer))

    def _next_held(self) -> list[Signed]:
        return [sig for sig in self.model.held if sig.nonce == self.model.nonces[sig.patient]]

    @precondition(lambda self: self._next_held())
    @rule(index=st.integers(0, 10**6), relayer=RELAYERS)
    @on_chain_thread
    def relay_next_held_signature(self, index, relayer):
        """A relayer that holds the patient's next signature relays it, maybe long after it was signed
        (its deadline may have passed, its window may be over by now)."""
        candidates = self._next_held()
        self._relay(candidates[index % len(candidates)], self._relayer(relayer))

    @precondition(lambda self: self.model.used)
    @rule(index=st.integers(0, 10**6), relayer=RELAYERS)
    @on_chain_thread
    def replay_relayed_signature(self, index, relayer):
        sig = self.model.used[index % len(self.model.used)]
        if self._next_ts() > sig.deadline:
            self._relay(sig, self._relayer(relayer))  # expired first
        else:
            assert self._relay(sig, self._relayer(relayer), match="replayed or out of order") == "WrongNonce"

    @rule(
        items=st.lists(st.tuples(PATIENTS, STUDIES, st.sampled_from(
            [None, None, "replayed", "another key", "ahead", "expired", "unknown pseudonym"])), min_size=2, max_size=3),
        relayer=RELAYERS,
    )
    @on_chain_thread
    def relay_revoke_batch(self, items, relayer):
        """Several signed revocations in one transaction (issue 15), some with one flaw each: every one is checked
        alone, as the batch reaches it (a second one of a patient finds the nonce the first voided), and a bad
        one is skipped with its reason, never reverting the others."""
        ts = self._next_ts()
        sigs = []
        for p, s, flaw in items:
            nonce = self.model.nonces[p] + (5 if flaw == "ahead" else 0)
            if flaw == "replayed" and nonce > 0:
                nonce -= 1
            sigs.append(self._sign("revoke", None if flaw == "unknown pseudonym" else p, nonce=nonce, s=s,
                                   deadline=max(0, ts - 1) if flaw == "expired" else ts + FAR,
                                   key=self.stranger_key if flaw == "another key" else None))
        receipt = self._expect_success(lambda: self._relayer(relayer).relay_revokes([sig.message for sig in sigs]), ts)
        skipped, revoked, cancelled = [], [], []
        for sig in sigs:
            error = self._expected_error(sig, ts)
            if error == "WrongNonce" and sig.nonce < self.model.nonces[sig.patient]:
                error = "NonceSpent"
            if error is not None:
                skipped.append((sig.pseudonym, sig.nonce, error.removeprefix("Signature")))
                continue
            self.model.nonces[sig.patient] = sig.nonce + 1
            revoked.append(self._revoked(receipt, sig.patient, sig.study))
            cancelled.append(self._cancelled(sig.patient))
            self.model.used.append(sig)
        assert self.hospital.skipped_revocations([receipt]) == skipped
        self._check_events(receipt, revoked=revoked, cancelled=cancelled)

    @rule(
        p=PATIENTS,
        s=STUDIES,
        kind=st.sampled_from(["grant", "revoke", "cancel"]),
        flaw=st.sampled_from(["foreign chain id", "foreign contract", "foreign deployment", "another key", "expired",
                              "unknown pseudonym"]),
        other=st.integers(0, N_PATIENTS),
        late=st.integers(1, 10**6),
        relayer=RELAYERS,
    )
    @on_chain_thread
    def relay_bad_signature(self, p, s, kind, flaw, other, late, relayer):
        """A signature with the right nonce and window but one flaw; rejected, and nothing changes.
        Signed for another chain, another registry or another deployment at the same address (another salt),
        or with another patient's or a stranger's key, the recovered signer is not the patient's key; past its
        deadline it has expired; for a pseudonym nobody enrolled it names no patient."""
        ts = self._next_ts()
        d = self.deployment
        options = dict(nonce=self.model.nonces[p], deadline=ts + FAR, s=s, window=(0, ts + DAY))
        if flaw == "foreign chain id":
            options["deployment"] = lg.Deployment(**{**d.__dict__, "chain_id": d.chain_id + 1})
        elif flaw == "foreign contract":
            options["deployment"] = lg.Deployment(**{**d.__dict__, "consent_registry": d.consortium})
        elif flaw == "foreign deployment":  # the same chain and address, another deployment's salt
            options["deployment"] = lg.Deployment(**{**d.__dict__, "consent_domain_salt": "0x" + "5a" * 32})
        elif flaw == "another key":
            options["key"] = self.stranger_key if other in (p, N_PATIENTS) else self.patient_keys[other]
        elif flaw == "expired":
            options["deadline"] = max(0, ts - late)
        sig = self._sign(kind, None if flaw == "unknown pseudonym" else p, **options)
        expected, text = {
            "expired": ("SignatureExpired", "expired"),
            "unknown pseudonym": ("UnknownPseudonym", "not enrolled"),
        }.get(flaw, ("WrongSigner", "not the patient's"))
        assert self._relay(sig, self._relayer(relayer), match=text) == expected

    # ---- rules: cancelling outstanding signatures ----

    def _sign_ahead(self, p: int, count: int, s: int) -> list[Signed]:
        ts = self._next_ts()
        n = self.model.nonces[p]
        sigs = [self._sign("grant", p, nonce=n + k, deadline=ts + FAR, s=s, window=(0, ts + DAY)) for k in range(count)]
        self.model.held.extend(sigs)
        return sigs

    def _check_voided(self, p: int, fresh: list[Signed], relayer: lg.Ledger) -> None:
        """After a cancellation every signature of `p` signed before it is refused."""
        older = [sig for sig in self.model.held if sig.patient == p and sig not in fresh][-3:]
        for sig in fresh + older:
            assert sig.nonce < self.model.nonces[p]
            assert self._relay(sig, relayer) in ("WrongNonce", "SignatureExpired")
        self.model.held = [sig for sig in self.model.held if sig.patient != p]

    @rule(s=STUDIES, count=st.integers(1, 3), relayer=RELAYERS)
    @on_chain_thread
    def cancel_directly(self, s, count, relayer):
        fresh = self._sign_ahead(0, count, s)
        ts = self._next_ts()
        receipt = self._expect_success(lambda: self.patient0.cancel_signatures(self.pseudonyms[0]), ts)
        self._check_events(receipt, cancelled=[self._cancelled(0)])
        self._check_voided(0, fresh, self._relayer(relayer))

    @rule(p=PATIENTS, s=STUDIES, count=st.integers(1, 3), relayer=RELAYERS)
    @on_chain_thread
    def cancel_by_signature(self, p, s, count, relayer):
        fresh = self._sign_ahead(p, count, s)
        cancel = self._sign("cancel", p, nonce=self.model.nonces[p], deadline=self._next_ts() + FAR)
        assert self._relay(cancel, self._relayer(relayer)) is None
        self._check_voided(p, fresh, self._relayer(relayer))

    # ---- rules: accounts that are not the patient ----

    @rule(
        p=PATIENTS, s=STUDIES, actor=st.sampled_from(["hospital", "other_hospital", "operator", "patient0"]),
        action=st.sampled_from(["grant", "revoke", "cancel"]),
    )
    @on_chain_thread
    def non_patient_acts_directly(self, p, s, actor, action):
        if actor == "patient0" and p == 0:
            p = 1  # patient 0's account acting for somebody else
        ledger = getattr(self, actor)
        ts = self._next_ts()
        pseudonym, study = self.pseudonyms[p], self.studies[s]
        act = {
            "grant": lambda: ledger.grant(pseudonym, study, valid_from=0, valid_until=ts + DAY),
            "revoke": lambda: ledger.revoke(pseudonym, study),
            "cancel": lambda: ledger.cancel_signatures(pseudonym),
        }[action]
        self._expect_rejected(act, "NotPatient", match="only the patient's own key")

    # ---- rules: two hospitals racing to enrol ----

    @rule(
        attack=st.sampled_from(["no commitment", "copied commitment", "own commitment, after"]),
        count=st.integers(1, 2),
        first=RELAYERS,
    )
    @on_chain_thread
    def hospitals_race_to_enrol(self, attack, count, first):
        """Hospital `first` enrols fresh pseudonyms; the other one tries to take them with keys it holds:
        straight from the pending transaction (no commitment), with a copy of the first one's commitment, or
        with its own commitment once the pseudonyms are public. It never gets them, and never blocks the
        first; both hospitals also enrol pseudonyms of their own in between."""
        owner = self._relayer(first)
        rival = self.other_hospital if owner is self.hospital else self.hospital
        pseudonyms = [secrets.token_bytes(32) for _ in range(count)]
        keys = [Account.from_key(_key(f"raced-{p.hex()}")).address for p in pseudonyms]
        rival_keys = [Account.from_key(_key(f"rival-{p.hex()}")).address for p in pseudonyms]
        commitment = owner.enrolment_commitment(pseudonyms, keys)
        owner._transact(owner.consent.functions.commitEnrolment(commitment))
        take = lambda: rival._transact(rival.consent.functions.enrol(pseudonyms, rival_keys))
        if attack == "no commitment":
            self._expect_rejected(take, "EnrolmentNotCommitted")
        elif attack == "copied commitment":
            rival._transact(rival.consent.functions.commitEnrolment(commitment))
            self._expect_rejected(lambda: rival._transact(rival.consent.functions.enrol(pseudonyms, keys)),
                                  "EnrolmentNotCommitted")
        own = [secrets.token_bytes(32)]  # the rival's own patient, enrolled while the race goes on
        rival.enrol(own, rival_keys[:1])
        self.model.raced[own[0]] = (rival.address, rival_keys[0])
        owner._transact(owner.consent.functions.enrol(pseudonyms, keys))
        for p, k in zip(pseudonyms, keys):
            self.model.raced[p] = (owner.address, k)
        if attack == "own commitment, after":
            rival._transact(rival.consent.functions.commitEnrolment(rival.enrolment_commitment(pseudonyms, rival_keys)))
            self._expect_rejected(take, "AlreadyEnrolled")

    # ---- rules: studies and time ----

    @rule(s=STUDIES, flag=st.booleans())
    @on_chain_thread
    def operator_sets_study_suspended(self, s, flag):
        """Only the operator suspends or resumes a study; a suspended study is not live for anybody."""
        set_flag = lambda ledger: ledger._transact(ledger.consortium.functions.setStudySuspended(self.studies[s], flag))
        self._expect_rejected(lambda: set_flag(self.hospital), "AccessControlUnauthorizedAccount", match="lacks the role")
        ts = self._next_ts()
        receipt = self._expect_success(lambda: set_flag(self.operator), ts)
        (event,) = self.operator.consortium.events.StudySuspensionChanged().process_receipt(receipt, errors=DISCARD)
        assert (bytes(event.args.studyId), event.args.suspended) == (self.studies[s], flag)
        self.model.suspended[s] = flag

    @rule(s=STUDIES)
    @on_chain_thread
    def other_hospital_accepts_study(self, s):
        ts = self._next_ts()
        act = lambda: self.other_hospital.accept_study(self.studies[s])
        if self.model.suspended[s] or ts >= self.model.ends_at[s]:
            self._expect_rejected(act, "StudyNotLive")
            return
        self._expect_success(act, ts)
        self.model.accepted[self.other_hospital.address].add(s)

    @rule(seconds=TIME_STEPS, extra_blocks=st.integers(0, 2))
    @on_chain_thread
    def advance_time(self, seconds, extra_blocks):
        """Time passes (consents and signatures expire, studies end), then maybe a few more blocks."""
        before = self._latest_ts()
        block = self.w3.eth.block_number
        # eth-tester's time_travel mines one block itself, stamped `target - 1`.
        self.tester.time_travel(before + 1 + seconds)
        self.tester.mine_blocks(extra_blocks)
        assert self._latest_ts() == before + seconds + extra_blocks
        assert self.w3.eth.block_number == block + 1 + extra_blocks

    def _window_edges(self) -> list[int]:
        """Seconds (within ten days) at which some consent window starts or ends, and the second before."""
        latest = self._latest_ts()
        edges = set()
        for window in self.model.consents.values():
            if window is not None:
                edges.update(t for edge in window for t in (edge - 1, edge) if latest < t <= latest + 10 * DAY)
        return sorted(edges)

    @precondition(lambda self: self._window_edges())
    @rule(index=st.integers(0, 10**6))
    @on_chain_thread
    def advance_time_to_a_window_edge(self, index):
        """Time passes to exactly the first second of a window, its last second, or the second it ends."""
        edges = self._window_edges()
        target = edges[index % len(edges)]
        self.tester.time_travel(target + 1)  # mines a block stamped `target`
        assert self._latest_ts() == target

    # ---- invariants ----

    @invariant()
    @on_chain_thread
    def consent_matches_model(self):
        """Single answers equal the model (revoked or expired never reads as granted); the batch bitmap
        equals the single answers; after a change, every raw window record equals the model (the
        registry packs four patients' windows into one storage word)."""
        block = self.w3.eth.block_number
        ts = self.w3.eth.get_block(block)["timestamp"]
        for s, study in enumerate(self.studies):
            single = [self.hospital.has_consent(ps, study, block=block) for ps in self.pseudonyms]
            expected = [self.model.consent_at(p, s, ts) for p in range(N_PATIENTS)]
            assert single == expected, (s, ts, self.model.consents)
            batch = self.hospital.consents(study, self.pseudonyms + [self.unknown], block=block)
            assert batch == single + [False]
            if self.windows_changed:
                for p in range(N_PATIENTS):
                    record = self.hospital.consent.functions.consentOf(self.pseudonyms[p], study).call(block_identifier=block)
                    assert tuple(record) == (self.model.consents[(p, s)] or (0, 0)), (p, s)
        self.windows_changed = False

    @invariant()
    @on_chain_thread
    def each_hospital_reads_only_what_it_enrolled_with_the_key_it_stored(self):
        """The gate's question: the enrolling hospital with the model's keys sees the single answers; the
        other hospital, or any other key, sees nothing. Raced pseudonyms belong to who enrolled them."""
        block = self.w3.eth.block_number
        keys = [Account.from_key(k).address for k in self.patient_keys]
        for s, study in enumerate(self.studies):
            single = [self.hospital.has_consent(ps, study, block=block) for ps in self.pseudonyms]
            own = lambda ledger, keys: ledger.consents(study, self.pseudonyms, block=block, hospital=ledger.address, keys=keys)
            assert own(self.hospital, keys) == single
            assert own(self.other_hospital, keys) == [False] * N_PATIENTS
            assert own(self.hospital, keys[1:] + keys[:1]) == [False] * N_PATIENTS
        for pseudonym, (hospital, key) in self.model.raced.items():
            assert self.hospital.consent.functions.enrolledBy(pseudonym).call(block_identifier=block) == hospital
            assert self.hospital.consent.functions.patientOf(pseudonym).call(block_identifier=block)[0] == key

    @invariant()
    @on_chain_thread
    def nonces_match_model(self):
        assert [self.hospital.patient_nonce(ps) for ps in self.pseudonyms] == self.model.nonces

    @invariant()
    @on_chain_thread
    def every_change_emitted_its_event(self):
        """The event history since the last check is exactly the model's (incremental, to stay fast)."""
        block = self.w3.eth.block_number
        if block < self.events_checked_from:
            return
        for s, study in enumerate(self.studies):
            changes = self.hospital.consent_changes(study, from_block=self.events_checked_from, to_block=block)
            expected = [c for c in self.model.changes[s] if c[2] >= self.events_checked_from]
            assert [(c.pseudonym, c.granted, c.block) for c in changes] == expected
        self.events_checked_from = block + 1

    @invariant()
    @on_chain_thread
    def study_liveness_matches_model(self):
        block = self.w3.eth.block_number
        ts = self.w3.eth.get_block(block)["timestamp"]
        for s, study in enumerate(self.studies):
            for hospital in (self.hospital, self.other_hospital):
                live = s in self.model.accepted[hospital.address] and not self.model.suspended[s] and ts < self.model.ends_at[s]
                assert self.hospital.is_study_live_for(study, hospital.address, block=block) == live, (s, hospital.address)

    @on_chain_thread
    def teardown(self):
        """The whole history, once per run: every grant and revocation, in chain order."""
        for s, study in enumerate(self.studies):
            changes = self.hospital.consent_changes(study)
            assert [(c.pseudonym, c.granted, c.block) for c in changes] == self.model.changes[s]


ConsentMachine.TestCase.settings = settings(max_examples=15, stateful_step_count=12, deadline=None, database=None)
TestConsentMachine = ConsentMachine.TestCase


# ---- a plain test: the batch bitmap over several words ----


def test_batch_answers_equal_single_answers_across_bitmap_words(chain, monkeypatch):
    on_chain_thread(_batch_answers_equal_single_answers)(chain, monkeypatch)


def _batch_answers_equal_single_answers(chain, monkeypatch):
    """600 enrolled pseudonyms with a random consent pattern (none, valid, starting later, expiring soon,
    revoked). The first 300 span one full bitmap word and a partial second, all 600 two full words and a
    partial third; each batch answer must equal the single answers bit for bit, also when the client
    splits the list into chunks that cut words in the middle.

    On a real node every patient signs and the hospital relays the grants in batches. The in-process
    chain recovers signatures in pure Python (~0.15 s each, estimate included), so there most consents
    are granted directly by one patient account holding many pseudonyms, and only every 50th pseudonym
    has its own key and signs (relayed in one batch)."""
    count = 600
    rng = random.Random(600)
    w3 = chain.w3
    pseudonyms = [Pseudonym.new() for _ in range(count)]
    patient = chain.ledger_for(funded_key(w3, ether=10))
    signers = range(0, count, 50) if isinstance(w3.provider, EthereumTesterProvider) else range(count)
    own_keys = {i: "0x" + secrets.token_hex(32) for i in signers}
    keys = [Account.from_key(own_keys[i]).address if i in own_keys else patient.address for i in range(count)]
    chain.hospital.enrol(pseudonyms, keys)

    now = w3.eth.get_block("pending")["timestamp"]
    windows = {
        "valid": (0, now + 30 * DAY),
        "later": (now + 10 * DAY, now + 30 * DAY),  # not yet in force at the checked block
        "short": (now - 60, now + 600),  # over after the time travel below
        "revoked": (0, now + 30 * DAY),
    }
    states = ["none"] * 20 + ["valid"] * 4 + ["later", "short", "revoked"]
    pattern = [rng.choice(states) for _ in range(count)]
    pattern[count - 1] = "valid"  # the last bit of the partial third word
    pattern[299] = "valid"  # the last bit of the 300-prefix
    if len(own_keys) < count:
        for i in own_keys:  # every signer has something to sign
            pattern[i] = pattern[i] if pattern[i] != "none" else rng.choice(states[20:])

    relayed = [
        lg.sign_grant(
            own_keys[i], chain.deployment, pseudonym=pseudonyms[i], study_id=chain.study_id,
            valid_from=windows[state][0], valid_until=windows[state][1], nonce=0, deadline=now + DAY,
        )
        for i, state in enumerate(pattern)
        if state != "none" and i in own_keys
    ]
    receipts = chain.hospital.relay_grants(relayed)
    assert len(receipts) == -(-len(relayed) // lg.GRANT_BATCH)  # batches of GRANT_BATCH
    for i, state in enumerate(pattern):
        if state != "none" and i not in own_keys:
            patient.grant(pseudonyms[i], chain.study_id, valid_from=windows[state][0], valid_until=windows[state][1])
    for i, state in enumerate(pattern):
        if state == "revoked":
            if i in own_keys:
                revoke = lg.sign_revoke(own_keys[i], chain.deployment, pseudonym=pseudonyms[i], study_id=chain.study_id, nonce=1, deadline=now + DAY)
                chain.hospital.relay_revoke(revoke)
            else:
                patient.revoke(pseudonyms[i], chain.study_id)

    advance_time(w3, 3600)
    block = chain.hospital.block_number()
    assert w3.eth.get_block(block)["timestamp"] >= now + 600
    expected = [state == "valid" for state in pattern]
    assert 0 < sum(expected[:256]) < 256 and 0 < sum(expected[512:]) < count - 512

    single = [chain.hospital.has_consent(p, chain.study_id, block=block) for p in pseudonyms]
    assert single == expected
    for n in (300, count):
        assert chain.hospital.consents(chain.study_id, pseudonyms[:n], block=block) == single[:n]
        # The raw words: bit i % 256 of word i // 256, nothing set past the last pseudonym.
        words = chain.hospital.consent.functions.consentBitmap(chain.study_id, pseudonyms[:n]).call(block_identifier=block)
        assert len(words) == (n + 255) // 256
        assert sum(word << (256 * k) for k, word in enumerate(words)) == sum(int(bit) << i for i, bit in enumerate(expected[:n]))
    # Chunked by the client at sizes that cut words in the middle.
    for chunk in (100, 257):
        monkeypatch.setattr(lg.consent, "CONSENT_BATCH", chunk)  # read where Ledger.consents reads it
        assert chain.hospital.consents(chain.study_id, pseudonyms, block=block) == single
