"""Where the contracts live: connecting to a chain node, deploying the contracts, the deployment file."""

from __future__ import annotations

import ipaddress
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from eth_account import Account
from web3 import Web3

from contracts.ledger.errors import ChainUnavailable, LedgerError, transport_reason


@dataclass(frozen=True)
class Deployment:
    """Where the contracts live on a chain, with their ABIs, so that readers need no compiler."""

    chain_id: int
    consortium: str
    consent_registry: str
    consent_domain_salt: str  # 0x-hex bytes32, random per deployment: the salt of the consent signing domain
    deployed_block: int
    abis: dict
    deployed_block_hash: str = ""  # 0x hex; tells a reset chain with the same addresses apart ("" in older files)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.__dict__, indent=1))

    @classmethod
    def load(cls, path: Path) -> "Deployment":
        try:
            data = json.loads(Path(path).read_text())
            if isinstance(data, dict) and "consent_domain_salt" not in data:
                raise LedgerError(f"deployment file {path} is from before consent signatures were bound to the "
                                  "deployment: deploy the contracts again (`twinledger chain deploy`)")
            return cls(**data)
        except FileNotFoundError as exc:
            raise LedgerError(f"no deployment file at {path}: deploy the contracts first") from exc
        except (json.JSONDecodeError, TypeError) as exc:
            raise LedgerError(f"deployment file {path} is malformed: {exc}") from exc


def connect(rpc_url: str, *, timeout_s: float = 10.0, ca_file: Path | str | None = None,
            allow_plain_http: bool = False) -> Web3:
    """A Web3 connection to a JSON-RPC chain node; raises ChainUnavailable if it does not answer.

    `https://` URLs are verified against `ca_file` (the consortium CA's certificate; the system's CAs without it).
    Plain `http://` is refused (ChainUnavailable) unless the host is loopback or `allow_plain_http` (development only):
    whoever sits between a party and a remote chain could otherwise answer its consent questions.
    """
    check_rpc_url(rpc_url, allow_plain_http=allow_plain_http)
    request_kwargs: dict = {"timeout": timeout_s}
    if ca_file:
        if not Path(ca_file).is_file():
            raise ChainUnavailable(f"the chain's CA certificate {ca_file} (chain-ca-file) does not exist")
        request_kwargs["verify"] = str(ca_file)
    # web3 asks eth_chainId around every eth_call; an endpoint's chain id does not change, so only it is cached
    # (blocks, "latest" above all, never are: the consent gate's freshness check depends on them).
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs=request_kwargs, cache_allowed_requests=True,
                                cacheable_requests={"eth_chainId"}))
    try:
        w3.eth.chain_id
    except Exception as exc:  # noqa: BLE001 - any transport failure means the same to the caller
        raise ChainUnavailable(f"the chain at {rpc_url} cannot be reached ({transport_reason(exc)})") from exc
    return w3


def check_rpc_url(rpc_url: str, *, allow_plain_http: bool = False) -> None:
    """Refuse (ChainUnavailable) a chain URL that is neither https nor plain http to loopback (unless allowed)."""
    parts = urlsplit(rpc_url)
    if parts.scheme == "https" or allow_plain_http:
        return
    host = (parts.hostname or "").lower()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback:
        raise ChainUnavailable(f"refusing the chain at {rpc_url}: use https:// (with the consortium CA as chain-ca-file); "
                          "plain http:// only to a loopback address, or with allow-plain-rpc (development only)")


def deploy(w3: Web3, operator_key: str, *, artifacts: dict | None = None, timeout_s: float = 60) -> Deployment:
    """Deploy the consortium and the consent registry, with `operator_key` as the consortium's operator.

    The registry's signing domain gets a fresh random salt, so that no consent signature made for an earlier
    deployment (a chain reset can put the new registry at the same address) is valid for this one.
    """
    if artifacts is None:
        from contracts.build import CompileError, deployable_artifacts

        try:
            artifacts = deployable_artifacts()
        except CompileError as exc:
            raise LedgerError(str(exc)) from exc
    operator = Account.from_key(operator_key)
    chain_id = w3.eth.chain_id

    def _create(name: str, *args) -> str:
        factory = w3.eth.contract(abi=artifacts[name]["abi"], bytecode=artifacts[name]["bytecode"])
        tx = factory.constructor(*args).build_transaction(
            {"from": operator.address, "nonce": w3.eth.get_transaction_count(operator.address, "pending"), "chainId": chain_id}
        )
        signed = Account.sign_transaction(tx, operator_key)
        receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction), timeout=timeout_s)
        if receipt["status"] != 1:
            raise LedgerError(f"deploying {name} failed (transaction {receipt['transactionHash'].hex()})")
        return receipt["contractAddress"], receipt["blockNumber"]

    consortium, first_block = _create("Consortium", operator.address)
    consent_domain_salt = secrets.token_bytes(32)
    first_hash = w3.eth.get_block(first_block)["hash"]
    registry, _ = _create("ConsentRegistry", consortium, consent_domain_salt)
    return Deployment(
        chain_id=chain_id,
        consortium=consortium,
        consent_registry=registry,
        consent_domain_salt="0x" + consent_domain_salt.hex(),
        deployed_block=first_block,
        deployed_block_hash="0x" + bytes(first_hash).hex(),
        abis={name: artifacts[name]["abi"] for name in ("Consortium", "ConsentRegistry")},
    )
