"""How the ledger client fails: one exception family, and the contracts' custom errors in the domain's words.

Every failure of a read or a write surfaces as a :class:`LedgerError`: :class:`ChainUnavailable` when the
chain node cannot be reached or does not answer in time, :class:`ChainReset` when it no longer holds the
deployment, :class:`StateUnavailable` when it no longer serves the state at the block asked,
:class:`ContractRejected` when a contract reverts,
with the custom error decoded (its selector looked up in the deployment's ABIs) into a sentence.
"""

from __future__ import annotations

import ast

import eth_abi
import requests
from eth_utils import keccak

from federation.chain_errors import ChainDown, ChainError, ChainRefusal
from federation.ids import from_hex0x, hex0x


class LedgerError(ChainError):
    """A ledger operation failed; the message says why in the domain's words."""


class ChainUnavailable(LedgerError, ChainDown):
    """The chain node could not be reached or did not answer in time."""


class ChainReset(LedgerError):
    """The chain no longer holds the deployment: no code at its addresses, or another block at its block number
    (a dev chain restarted without its state, or a new chain at the same URL)."""


class StateUnavailable(LedgerError):
    """The chain node no longer serves the state at the block asked (a restarted node that kept no history)."""


class ContractRejected(LedgerError, ChainRefusal):
    """A contract refused the call (a revert), with the decoded reason."""

    def __init__(self, message: str, *, error_name: str | None = None):
        super().__init__(message)
        self.error_name = error_name


# How each custom error reads to a person; arguments are formatted in order.
ERROR_TEXT = {
    "HospitalAlreadyRegistered": "hospital account {0} is already registered",
    "UnknownHospital": ("account {0} is not a registered hospital, nor the key acting for one (a rotated-away key "
                        "acts for none)"),
    "HospitalSuspended": "hospital {0} is suspended",
    "InvalidNodeKey": "a node key must be a 65-byte uncompressed P-256 point (0x04, X, Y)",
    "NodeKeyInUse": "the node key with fingerprint {0} is already the node key of another hospital",
    "UnknownNodeKey": "no hospital holds the node key with fingerprint {0}",
    "StudyAppLocked": "study {0} was accepted by a hospital: its app can no longer change (propose a new study)",
    "StudyAlreadyExists": "a study with id {0} already exists",
    "UnknownStudy": "study {0} is not known to the consortium",
    "StudyNotLive": "study {0} is suspended or has ended",
    "InvalidStudyTerms": "the study terms are invalid (budget, rounds, delta and end date must be set; an app digest must not be zero)",
    "RoundAlreadyAnchored": "round {1} of study {0} is already anchored",
    "RoundOutOfRange": "round {1} is outside the rounds study {0} allows",
    "PinnedBlockInFuture": "pinned block {0} is in the future",
    "CommitmentLengthMismatch": "hospitals and commitments differ in length",
    "SpendingDecreased": "study {0}: hospital {1} recorded epsilon spending {2} (millionths) already; {3} would lower it",
    "NotAnActiveHospital": "account {0} is not an active hospital",
    "AlreadyEnrolled": "pseudonym {0} is already enrolled",
    "UnknownPseudonym": "pseudonym {0} is not enrolled",
    "InvalidPatientKey": "a patient's consent key must not be the zero address",
    "LengthMismatch": "the lists passed differ in length",
    "NotPatient": "only the patient's own key may change the consent of {0} (caller {1})",
    "InvalidWindow": "the consent window [{0}, {1}) is empty, already over, or ends after 2106",
    "TooManyPatients": "the registry cannot enrol more patients",
    "SignatureExpired": "the patient's signature expired at {0}",
    "WrongNonce": "signature for {0} is replayed or out of order (expected nonce {1}, got {2})",
    "WrongSigner": "the signature for {0} is not the patient's",
    "EnrolmentNotCommitted": "enrolment commitment {0} was not made by this hospital in an earlier block (Ledger.enrol commits first)",
    "AccessControlUnauthorizedAccount": "account {0} lacks the role {1}",
    "AccessControlBadConfirmation": "an account can renounce only its own role",
    "SignerInUse": "account {0} already acts for a hospital, or is the zero address: each hospital needs a key of its own",
    "LastAdmin": ("account {0} is the consortium's last admin: grant the admin role to another account first "
                  "(twinledger consortium grant-operator --admin)"),
}

# AccessControl names a missing role by its id: shown by name.
ROLE_NAMES = {hex0x(b"\0" * 32): "DEFAULT_ADMIN_ROLE"} | {
    hex0x(keccak(text=name)): name for name in ("OPERATOR_ROLE", "COORDINATOR_ROLE")}

ErrorDecoder = dict[str, tuple[str, list[str]]]


def error_decoder(abis: dict) -> ErrorDecoder:
    """Map each custom error's 4-byte selector (hex, no 0x) to its name and argument types."""
    decoder = {}
    for abi in abis.values():
        for entry in abi:
            if entry.get("type") == "error":
                types = [arg["type"] for arg in entry["inputs"]]
                selector = keccak(text=f"{entry['name']}({','.join(types)})")[:4].hex()
                decoder[selector] = (entry["name"], types)
    return decoder


def rejection(exc: Exception, decoder: ErrorDecoder) -> ContractRejected:
    """A revert as a ContractRejected that names the custom error and its arguments, when it is one of ours."""
    data = getattr(exc, "data", None)
    if data is None and type(exc).__name__ == "TransactionFailed":
        # The in-process test chain (eth-tester) carries the revert data in its message, as a bytes literal.
        text = str(exc.args[0]) if exc.args else ""
        raw = text.split("execution reverted: ", 1)[-1]
        if raw.startswith(("b'", 'b"')):
            data = hex0x(ast.literal_eval(raw))
    if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
        decoded = decoder.get(data[2:10])
        if decoded:
            name, types = decoded
            args = eth_abi.decode(types, from_hex0x(data[10:])) if types else ()
            shown = [hex0x(a) if isinstance(a, bytes) else a for a in args]
            if name == "AccessControlUnauthorizedAccount":
                shown = [ROLE_NAMES.get(a, a) for a in shown]
            text = ERROR_TEXT.get(name, name + " {}".format(shown)).format(*shown)
            return ContractRejected(text, error_name=name)
    return ContractRejected(f"the contract refused the call: {exc}")


def transport_reason(exc: Exception) -> str:
    """Why a request to the chain node failed, in a few words."""
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower() or isinstance(exc, (TimeoutError, requests.exceptions.Timeout)):
        return "no answer in time"
    return type(exc).__name__
