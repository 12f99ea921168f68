"""The withdrawal door: a patient withdraws consent with user name and password, without logging in.

Why a door of its own: the login's per-account lockout of untrusted clients is something anyone can trigger by
typing wrong passwords for a user name, and a patient on a browser that never logged in (a new device, cleared
cookies) is such a client. Withdrawing must never depend on it (issue 12 #3). The door does only what is safe to
allow a right password even while the login is locked: it signs one revocation and puts it in the outbox. It
opens no session, reads nothing of the patient's, and can never grant.

Its guesses stay bounded: wrong passwords count per (user name, client) — the client's trusted device cookie if
it has one, else its address — and per address across user names (the login's limit, shared), and they also count
towards the user name's login lockout. So an attacker gets a few guesses per address, as from the login, and
none that lock the patient out: the patient's own client has its own count. Behind a proxy nobody declared in
trusted-proxies every client has the proxy's address, so there the door's count is per user name and can be
exhausted by anyone behind the same proxy (docs/portal.md: declare the proxy).

A patient whose own wallet holds the consent key gets, for the password, the typed data to sign
(`revoke_typed_data`); the wallet's signature is then relayed without a session (`relay_signed`): it
authenticates itself, and a signature by any other key, or for a user name without a wallet, is refused alike.
"""

from __future__ import annotations

from sqlmodel import Session, select

from federation import ids
from node.portal import accounts, security, studies
from node.portal.accounts import PortalError
from node.portal.models import ConsentRelay, LoginFailure, PortalAccount

DOOR = "door"


def _subject(username: str, client: str) -> str:
    return f"{username}|{client}"


def authenticate(session: Session, settings, *, username: str, password: str, client_ip, device_cookie: str | None
                 ) -> PortalAccount:
    """The account, if the password is right and this client has guesses left; never the login's lockout."""
    account = session.exec(select(PortalAccount).where(PortalAccount.username == username)).first()
    device = accounts.trusted_device(session, account, accounts.device_tokens(device_cookie))
    subject = _subject(username, f"device:{device.id}" if device is not None else str(client_ip))
    limit = settings.max_failures_per_account
    if (accounts.failures(session, settings, DOOR, subject) >= limit
            or (device is None and accounts.real(client_ip)
                and accounts.failures(session, settings, "ip", str(client_ip)) >= settings.max_failures_per_ip)):
        accounts.too_many(settings)
    if not accounts.password_matches(session, account, password):
        session.add(LoginFailure(kind=DOOR, subject=subject))
        accounts.record_failure(session, username=username, client_ip=client_ip)  # the login's counts too
        raise PortalError("user name or password is not correct", status=401)
    return account


def withdraw(session: Session, state, account: PortalAccount, *, password: str, study_id: str) -> ConsentRelay:
    """Sign the revocation with the key the password unlocks and put it in the outbox (the worker relays
    withdrawals first); returns the outbox row. A wallet's key is not the portal's to use."""
    if account.key_custody == "wallet":
        raise PortalError("your consent key is in your wallet, not in the portal: log in and sign the withdrawal "
                          "with your wallet", status=409)
    ledger, sid = state.chain, ids.StudyId.parse(study_id)  # the ChainView: studies and clock shared
    studies.require_study(ledger, sid)
    message = studies.revoke_message(ledger, ids.Pseudonym.parse(account.pseudonym), sid,
                                     deadline_s=state.settings.signature_deadline_s)
    try:
        key = security.open_key(account.sealed_key, account.key_salt, password, associated=account.pseudonym)
    except security.WrongPassword:  # the password hash matched: the sealed key and the hash disagree
        raise accounts.wrong_password() from None
    signed = studies.sign_with_key(ledger, key, message)
    del key
    return state.relayer.submit(session, account, study_id, signed)


NOT_THE_KEY = ("the signature is not from the consent key of this account: sign with the wallet account you gave "
               "at enrolment")


def revoke_typed_data(state, account: PortalAccount, *, study_id: str) -> dict:
    """What a wallet patient's wallet signs to withdraw (after the door checked the password)."""
    if account.key_custody != "wallet":
        raise PortalError("the portal keeps your consent key under your password: send it to POST /api/withdrawals",
                          status=409)
    ledger, sid = state.chain, ids.StudyId.parse(study_id)  # the ChainView: studies and clock shared
    studies.require_study(ledger, sid)
    message = studies.revoke_message(ledger, ids.Pseudonym.parse(account.pseudonym), sid,
                                     deadline_s=state.settings.signature_deadline_s)
    return studies.typed_data(ledger, "Revoke", message)


def relay_signed(session: Session, state, *, username: str, study_id: str, nonce: int, deadline: int,
                 signature: str) -> tuple[PortalAccount, ConsentRelay]:
    """Put a revocation the patient's wallet signed in the outbox, without a session. The signature is checked
    before anything is stored; an unknown user name or one without a wallet answers as a wrong signature."""
    account = session.exec(select(PortalAccount).where(PortalAccount.username == username)).first()
    session.commit()  # no connection held while the chain is asked
    ledger, sid = state.chain, ids.StudyId.parse(study_id)  # the ChainView: studies and clock shared
    studies.require_study(ledger, sid)
    wallet = account is not None and account.key_custody == "wallet"
    pseudonym = ids.Pseudonym.parse(account.pseudonym) if wallet else bytes(32)
    expected = account.consent_address if wallet else "0x" + "00" * 20  # no signature recovers to it
    message = {"pseudonym": pseudonym, "studyId": sid, "nonce": nonce, "deadline": deadline}
    try:
        signed = studies.from_wallet(ledger, expected, message, signature,
                                     deadline_s=state.settings.signature_deadline_s)
    except PortalError as exc:
        if exc.status == 403:
            raise PortalError(NOT_THE_KEY, status=403) from None
        raise
    return account, state.relayer.submit(session, account, study_id, signed)
