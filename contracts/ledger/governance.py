"""The operator's governance of the consortium: roles, suspensions, hospitals' signers (key rotation).

Mixed into :class:`contracts.ledger.client.Ledger`, which provides ``self.consortium`` (the Consortium contract),
``self._read`` and ``self._transact``.

Roles are OpenZeppelin AccessControl's: DEFAULT_ADMIN_ROLE grants and revokes every role, OPERATOR_ROLE
registers and suspends hospitals and proposes and suspends studies, COORDINATOR_ROLE anchors rounds. Any address
holds a role, a multisig wallet's contract account too (docs/ledger.md, "Roles"). The contract refuses to revoke
or renounce its last admin (`LastAdmin`), so no call here can lock the consortium out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eth_account import Account

if TYPE_CHECKING:
    from contracts.ledger.client import Ledger

TRANSFER_GAS = 21_000  # a plain ether transfer

# The role names as the contract spells its constants (DEFAULT_ADMIN_ROLE is AccessControl's zero role).
ROLES = ("DEFAULT_ADMIN_ROLE", "OPERATOR_ROLE", "COORDINATOR_ROLE")


class GovernanceCalls:
    """Who holds which role, and the operator's suspensions."""

    def role_id(self: "Ledger", name: str) -> bytes:
        if name not in ROLES:
            raise ValueError(f"no role {name!r}: one of {', '.join(ROLES)}")
        return self._read(lambda: getattr(self.consortium.functions, name)().call())

    def has_role(self: "Ledger", name: str, account: str, *, block: int | str = "latest") -> bool:
        role = self.role_id(name)
        return self._read(lambda: self.consortium.functions.hasRole(role, account).call(block_identifier=block))

    def roles_of(self: "Ledger", account: str) -> list[str]:
        """The roles `account` holds now, by name."""
        return [name for name in ROLES if self.has_role(name, account)]

    def admin_count(self: "Ledger") -> int:
        return self._read(lambda: self.consortium.functions.adminCount().call())

    def grant_role(self: "Ledger", name: str, account: str) -> dict:
        """Grant a role (this account must hold DEFAULT_ADMIN_ROLE); granting a held role changes nothing."""
        return self._transact(self.consortium.functions.grantRole(self.role_id(name), account))

    def revoke_role(self: "Ledger", name: str, account: str) -> dict:
        """Revoke a role (this account must hold DEFAULT_ADMIN_ROLE); the last admin's is refused (LastAdmin)."""
        return self._transact(self.consortium.functions.revokeRole(self.role_id(name), account))

    def grant_coordinator(self: "Ledger", account: str) -> dict:
        return self.grant_role("COORDINATOR_ROLE", account)

    def revoke_coordinator(self: "Ledger", account: str) -> dict:
        """After this `account` anchors nothing (anchorRound reverts AccessControlUnauthorizedAccount)."""
        return self.revoke_role("COORDINATOR_ROLE", account)

    def grant_operator(self: "Ledger", account: str, *, admin: bool = False) -> list[dict]:
        """Let `account` act as the operator; with `admin` also grant and revoke roles (needed to revoke the
        first operator). Returns the receipts of the grants made."""
        names = ["OPERATOR_ROLE"] + (["DEFAULT_ADMIN_ROLE"] if admin else [])
        return [self.grant_role(name, account) for name in names if not self.has_role(name, account)]

    def revoke_operator(self: "Ledger", account: str) -> list[dict]:
        """Take the operator's roles from `account`: the admin role first, so that refusing the last admin
        (LastAdmin) leaves the account as it was. Returns the receipts of the revocations made."""
        names = [name for name in ("DEFAULT_ADMIN_ROLE", "OPERATOR_ROLE") if self.has_role(name, account)]
        return [self.revoke_role(name, account) for name in names]

    def set_hospital_suspended(self: "Ledger", account: str, suspended: bool) -> dict:
        """A suspended hospital accepts no study, records no node key, trains on nothing (its nodes refuse
        STUDY_NOT_ACCEPTED) and the node follower unregisters its SuperNode."""
        return self._transact(self.consortium.functions.setHospitalSuspended(account, suspended))

    def set_study_suspended(self: "Ledger", study_id: bytes, suspended: bool) -> dict:
        """A suspended study is live for no hospital: every node refuses its rounds until it is resumed."""
        return self._transact(self.consortium.functions.setStudySuspended(study_id, suspended))

    # ---- hospitals' signers ----

    def hospital_of(self: "Ledger", signer: str, *, block: int | str = "latest") -> str | None:
        """The hospital (registration address) `signer` acts for at `block`; None when it acts for none (a
        rotated-away key, any non-hospital account)."""
        account = self._read(lambda: self.consortium.functions.hospitalOf(signer).call(block_identifier=block))
        return None if int(account, 16) == 0 else account

    def signer_of(self: "Ledger", account: str, *, block: int | str = "latest") -> str | None:
        """The key that acts for hospital `account` at `block`; None for an unregistered account."""
        record = self._read(lambda: self.consortium.functions.hospital(account).call(block_identifier=block))
        return None if int(record[4], 16) == 0 else record[4]

    def rotate_hospital_key(self: "Ledger", new_signer: str) -> dict:
        """As the hospital's current signer, hand the hospital to `new_signer`: this key acts for it no more."""
        return self._transact(self.consortium.functions.rotateHospitalKey(new_signer))

    def set_hospital_signer(self: "Ledger", account: str, new_signer: str) -> dict:
        """As the operator, give hospital `account` the signer `new_signer` (the hospital lost its key)."""
        return self._transact(self.consortium.functions.setHospitalSigner(account, new_signer))

    def send_balance(self: "Ledger", to: str) -> int:
        """Send all this key's ether, less the transfer's gas, to `to` (a rotated hospital key's gas money goes to
        its successor). Returns the wei sent; 0, and nothing sent, when the balance does not cover the gas."""
        w3 = self.w3
        gas_price = self._read(lambda: w3.eth.gas_price)
        value = self._read(lambda: w3.eth.get_balance(self.signer)) - TRANSFER_GAS * gas_price
        if value <= 0:
            return 0

        def send():
            tx = {"to": to, "value": value, "gas": TRANSFER_GAS, "gasPrice": gas_price,
                  "chainId": self.deployment.chain_id, "nonce": w3.eth.get_transaction_count(self.signer, "pending")}
            signed = Account.sign_transaction(tx, self._key)
            return w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction),
                                                       timeout=self.receipt_timeout_s)

        self._read(send)
        return value
