"""The consortium's certificate authority: the operator issues every TLS certificate of the federation.

One EC P-256 CA, kept in a directory the operator alone can read:

    <ca-dir>/ca.key        the CA's private key (PKCS#8 PEM, mode 0600)
    <ca-dir>/ca.pem        its self-signed certificate: the one trust anchor every party is given
    <ca-dir>/issued.json   serial -> subject, kind, not-after of every certificate issued
    <ca-dir>/revoked.json  serial -> revocation time of every certificate revoked
    <ca-dir>/crl.pem       the current certificate revocation list (re-written by `write_crl`)

What it issues:
- a **server certificate** per service (the SuperLink, each web app, the chain RPC proxy) whose SANs name
  every DNS name and IP address clients dial (Flower's SuperNode and `flwr` check the name: dialling
  127.0.0.1 needs an IP SAN 127.0.0.1); extended key usage serverAuth;
- a **client certificate** per hospital or operator tool (clientAuth), for links that want mutual TLS
  (a reverse proxy in front of the chain RPC or the web apps). Flower 1.41 itself has no mTLS: SuperNodes
  prove who they are with their node-auth key (`node.node_keys`), not with a certificate.

Rotation: certificates are short-lived (`valid_days`, 30 by default for leaves; the CA 5 years). Re-issue
before `needs_renewal` says so and restart the service with the new files (the CA certificate, and so
every client's trust anchor, stays the same). Revocation: `revoke(ca, serial)` then `write_crl(ca)`;
a proxy that checks CRLs reads `crl.pem`; Flower does not read CRLs, so a revoked SuperLink or web-app
certificate must also be replaced at once (short validity bounds the damage).
No cryptography of our own: everything below is the `cryptography` package's X.509 builder.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from federation.files import write_secret

CA_KEY = "ca.key"
CA_CERT = "ca.pem"
ISSUED = "issued.json"
REVOKED = "revoked.json"
CRL = "crl.pem"
DEFAULT_CA_DAYS = 5 * 365
DEFAULT_LEAF_DAYS = 30


class CAError(Exception):
    """The CA directory is missing, incomplete, or a request to it is invalid."""


@dataclass(frozen=True)
class CertificateAuthority:
    """A loaded CA: its directory, private key and certificate."""

    directory: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_path(self) -> Path:
        """Path of the CA certificate (the file every client is given as its root)."""
        return self.directory / CA_CERT


@dataclass(frozen=True)
class IssuedCertificate:
    """Where an issued certificate and its key were written, and its serial number (for revocation)."""

    cert_path: Path
    key_path: Path
    serial: int
    not_after: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    """Write `key` as unencrypted PKCS#8 PEM readable by the owner only (0600); replaces a file atomically.

    Requires: the parent directory exists or can be created. Returns `path`.
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret(path, pem)
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def create_ca(directory: Path, *, name: str = "TwinLedger consortium CA",
              organization: str = "TwinLedger consortium", valid_days: int = DEFAULT_CA_DAYS) -> CertificateAuthority:
    """Create a new CA in `directory`: an EC P-256 key (0600) and a self-signed CA certificate.

    Requires: `directory` holds no CA yet (refuses to overwrite one: every issued certificate hangs on it).
    Returns the loaded CA.
    """
    if (directory / CA_KEY).exists():
        raise CAError(f"{directory} already holds a CA; refusing to replace it")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(name, organization)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    write_private_key(directory / CA_KEY, key)
    _write_cert(directory / CA_CERT, cert)
    (directory / ISSUED).write_text("{}\n")
    (directory / REVOKED).write_text("{}\n")
    return CertificateAuthority(directory, key, cert)


def load_ca(directory: Path) -> CertificateAuthority:
    """Load the CA kept in `directory` (see `create_ca`). Raises CAError when its key or certificate is missing."""
    try:
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    except FileNotFoundError as exc:
        raise CAError(f"no CA in {directory}: {exc.filename} is missing") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CAError(f"{directory / CA_KEY} is not an EC private key")
    return CertificateAuthority(directory, key, cert)


def _record(ca: CertificateAuthority, file: str, serial: int, entry: dict[str, str]) -> None:
    path = ca.directory / file
    book = json.loads(path.read_text()) if path.exists() else {}
    book[str(serial)] = entry
    path.write_text(json.dumps(book, indent=2, sort_keys=True) + "\n")


def _issue(ca: CertificateAuthority, out_dir: Path, stem: str, common_name: str, *,
           sans: list[x509.GeneralName], usage: ExtendedKeyUsageOID, valid_days: int, kind: str) -> IssuedCertificate:
    if valid_days <= 0:
        raise CAError("valid_days must be positive")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + dt.timedelta(days=valid_days), ca.cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, ca.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    cert_path, key_path = out_dir / f"{stem}.pem", out_dir / f"{stem}.key"
    write_private_key(key_path, key)
    _write_cert(cert_path, cert)
    _record(ca, ISSUED, cert.serial_number, {
        "subject": common_name, "kind": kind, "not_after": not_after.isoformat(), "cert": str(cert_path),
    })
    return IssuedCertificate(cert_path, key_path, cert.serial_number, not_after)


def issue_server_certificate(ca: CertificateAuthority, out_dir: Path, service: str, *,
                             dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = (),
                             valid_days: int = DEFAULT_LEAF_DAYS) -> IssuedCertificate:
    """Issue a TLS server certificate for `service` into `out_dir/<service>.pem` and `<service>.key` (0600).

    Requires: at least one DNS name or IP address (clients verify the name they dial against these SANs;
    dialling 127.0.0.1 needs "127.0.0.1" here); IPs in text form. The validity never outlasts the CA's.
    Returns where the files are and the serial number. Re-issuing (rotation) overwrites both files.
    """
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if not sans:
        raise CAError(f"a server certificate for {service!r} needs at least one DNS name or IP address")
    return _issue(ca, out_dir, service, service, sans=sans, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                  valid_days=valid_days, kind="server")


def issue_client_certificate(ca: CertificateAuthority, out_dir: Path, holder: str, *,
                             valid_days: int = DEFAULT_LEAF_DAYS) -> IssuedCertificate:
    """Issue a TLS client certificate (clientAuth) naming `holder` (e.g. a hospital id) for mutual-TLS proxies.

    Writes `out_dir/<holder>.pem` and `<holder>.key` (0600). Returns where and the serial number.
    """
    return _issue(ca, out_dir, holder, holder, sans=[], usage=ExtendedKeyUsageOID.CLIENT_AUTH,
                  valid_days=valid_days, kind="client")


def revoke(ca: CertificateAuthority, serial: int) -> None:
    """Mark the certificate with `serial` revoked (from now). Requires: the CA issued it. Call `write_crl` next."""
    issued = json.loads((ca.directory / ISSUED).read_text())
    if str(serial) not in issued:
        raise CAError(f"serial {serial} was not issued by this CA")
    _record(ca, REVOKED, serial, {"revoked_at": _now().isoformat(), "subject": issued[str(serial)]["subject"]})


def write_crl(ca: CertificateAuthority, *, next_update_days: int = 7) -> Path:
    """Write `crl.pem`: every revoked serial, signed by the CA, valid until now + `next_update_days`.

    Re-run at least that often (and after every `revoke`). Returns the CRL's path.
    """
    revoked = json.loads((ca.directory / REVOKED).read_text())
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=next_update_days))
    )
    for serial, entry in sorted(revoked.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(serial))
            .revocation_date(dt.datetime.fromisoformat(entry["revoked_at"]))
            .build()
        )
    crl = builder.sign(ca.key, hashes.SHA256())
    path = ca.directory / CRL
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return path


def is_revoked(crl_path: Path, ca_cert: x509.Certificate, cert: x509.Certificate) -> bool:
    """Whether `cert` is listed in the CRL at `crl_path`. Raises CAError when the CRL is not signed by the CA
    or has expired (a stale CRL must not read as "nothing revoked")."""
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    if not crl.is_signature_valid(ca_cert.public_key()):
        raise CAError(f"{crl_path} is not signed by {ca_cert.subject.rfc4514_string()}")
    if crl.next_update_utc is not None and crl.next_update_utc < _now():
        raise CAError(f"{crl_path} expired on {crl.next_update_utc.isoformat()}")
    return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


def needs_renewal(cert_path: Path, *, within_days: int = 7) -> bool:
    """Whether the certificate at `cert_path` expires within `within_days` (rotation is due). Requires a PEM file."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.not_valid_after_utc - _now() < dt.timedelta(days=within_days)
