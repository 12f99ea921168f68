"""Sending a transaction from a key that other clients may be sending from at the same moment.

The hospital's account is used by the node (spending records), by the portal's relay worker and by hospital IT's
commands, each its own process with its own client. Each takes the chain's next nonce ("pending" count) before
it signs. Two taking it at the same moment sign the same nonce, and the chain keeps only one: the other is
refused ('nonce too low', or 'replacement transaction underpriced' while the first is pending). Such a refusal
means nothing was done, so the transaction is signed again with the next nonce and sent again, a few times,
after a short random pause. Within one process, one client sends at a time per key.
"""

from __future__ import annotations

import random
import threading
import time

from eth_account import Account
from web3 import Web3
from web3.exceptions import Web3RPCError

# What chain nodes answer when another transaction took the nonce (anvil and geth alike).
NONCE_TAKEN = ("nonce too low", "replacement transaction underpriced", "nonce has already been used")
ALREADY_SENT = "already known"  # this very signed transaction is already pending: wait for it, never send it again
ATTEMPTS = 8

_senders: dict[tuple[int, str], threading.Lock] = {}
_senders_lock = threading.Lock()


def _sender(chain_id: int, address: str) -> threading.Lock:
    with _senders_lock:
        return _senders.setdefault((chain_id, address.lower()), threading.Lock())


def send_transaction(w3: Web3, fn, *, signer: str, key: str, chain_id: int, receipt_timeout_s: float) -> dict:
    """Build, sign and send contract call `fn` from `signer` with the chain's next nonce; its receipt."""
    with _sender(chain_id, signer):
        for attempt in range(1, ATTEMPTS + 1):
            tx = fn.build_transaction({"from": signer, "nonce": w3.eth.get_transaction_count(signer, "pending"),
                                       "chainId": chain_id})
            signed = Account.sign_transaction(tx, key)
            try:
                tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
                break
            except Web3RPCError as exc:
                reason = str(exc).lower()
                if ALREADY_SENT in reason:
                    tx_hash = signed.hash
                    break
                if attempt == ATTEMPTS or not any(taken in reason for taken in NONCE_TAKEN):
                    raise
                time.sleep(random.uniform(0.01, 0.05) * attempt)
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=receipt_timeout_s)
