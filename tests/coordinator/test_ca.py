"""The consortium CA: certificates a TLS client accepts by name, owner-only keys, revocation, rotation."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from coordinator import ca as cax


@pytest.fixture
def authority(tmp_path: Path) -> cax.CertificateAuthority:
    return cax.create_ca(tmp_path / "ca")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _handshake(server: cax.IssuedCertificate, trust: Path, dial: str) -> str:
    """Serve one TLS handshake with `server`'s files on loopback; connect trusting `trust`, checking `dial`."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(server.cert_path, server.key_path)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(trust))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=dial) as tls:
                version = tls.version() or ""
                tls.sendall(b"x")
                return version
    finally:
        thread.join(timeout=5)
        listener.close()


def test_a_new_ca_is_a_self_signed_p256_ca_with_an_owner_only_key(authority: cax.CertificateAuthority) -> None:
    cert = authority.cert
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert authority.key.curve.name == "secp256r1"
    assert _mode(authority.directory / cax.CA_KEY) == 0o600
    assert _mode(authority.directory) == 0o700
    assert cax.load_ca(authority.directory).cert == cert


def test_creating_a_ca_twice_in_one_directory_is_refused(authority: cax.CertificateAuthority) -> None:
    with pytest.raises(cax.CAError, match="already holds a CA"):
        cax.create_ca(authority.directory)


def test_loading_a_missing_ca_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(cax.CAError, match="missing"):
        cax.load_ca(tmp_path / "nowhere")


def test_a_server_certificate_names_its_dns_names_and_ips_and_is_short_lived(
    authority: cax.CertificateAuthority, tmp_path: Path,
) -> None:
    issued = cax.issue_server_certificate(authority, tmp_path / "tls", "superlink",
                                          dns_names=["localhost", "superlink.example"], ip_addresses=["127.0.0.1"],
                                          valid_days=3)
    cert = x509.load_pem_x509_certificate(issued.cert_path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "superlink.example"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.issuer == authority.cert.subject
    assert cert.serial_number == issued.serial
    assert _mode(issued.key_path) == 0o600
    assert cax.needs_renewal(issued.cert_path, within_days=7)
    assert not cax.needs_renewal(issued.cert_path, within_days=1)


def test_a_server_certificate_without_any_name_is_refused(
    authority: cax.CertificateAuthority, tmp_path: Path,
) -> None:
    with pytest.raises(cax.CAError, match="at least one"):
        cax.issue_server_certificate(authority, tmp_path, "nameless")


@pytest.mark.parametrize("dial", ["127.0.0.1", "localhost"])
def test_a_tls_client_trusting_the_ca_accepts_the_server_by_each_name(
    authority: cax.CertificateAuthority, tmp_path: Path, dial: str,
) -> None:
    issued = cax.issue_server_certificate(authority, tmp_path, "superlink",
                                          dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    assert _handshake(issued, authority.cert_path, dial).startswith("TLSv1.")


def test_a_tls_client_refuses_a_name_missing_from_the_certificate(
    authority: cax.CertificateAuthority, tmp_path: Path,
) -> None:
    issued = cax.issue_server_certificate(authority, tmp_path, "superlink", dns_names=["superlink.example"])
    with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"):
        _handshake(issued, authority.cert_path, "127.0.0.1")


def test_a_tls_client_refuses_a_certificate_from_another_ca(
    authority: cax.CertificateAuthority, tmp_path: Path,
) -> None:
    rogue = cax.create_ca(tmp_path / "rogue-ca", name="Rogue CA")
    issued = cax.issue_server_certificate(rogue, tmp_path / "rogue", "superlink", ip_addresses=["127.0.0.1"])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(issued, authority.cert_path, "127.0.0.1")


def test_a_client_certificate_is_for_client_authentication_only(
    authority: cax.CertificateAuthority, tmp_path: Path,
) -> None:
    issued = cax.issue_client_certificate(authority, tmp_path, "hospital-h1")
    cert = x509.load_pem_x509_certificate(issued.cert_path.read_bytes())
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.subject.rfc4514_string().startswith("CN=hospital-h1")


def test_a_revoked_certificate_is_listed_in_the_signed_crl_and_others_are_not(
    authority: cax.CertificateAuthority, tmp_path: Path,
) -> None:
    bad = cax.issue_client_certificate(authority, tmp_path, "h1")
    good = cax.issue_client_certificate(authority, tmp_path, "h2")
    cax.revoke(authority, bad.serial)
    crl = cax.write_crl(authority)
    load = lambda issued: x509.load_pem_x509_certificate(issued.cert_path.read_bytes())  # noqa: E731
    assert cax.is_revoked(crl, authority.cert, load(bad))
    assert not cax.is_revoked(crl, authority.cert, load(good))


def test_a_crl_not_signed_by_the_ca_is_refused(authority: cax.CertificateAuthority, tmp_path: Path) -> None:
    rogue = cax.create_ca(tmp_path / "rogue-ca")
    issued = cax.issue_client_certificate(authority, tmp_path, "h1")
    forged = cax.write_crl(rogue)
    with pytest.raises(cax.CAError, match="not signed"):
        cax.is_revoked(forged, authority.cert, x509.load_pem_x509_certificate(issued.cert_path.read_bytes()))


def test_revoking_a_serial_the_ca_never_issued_is_refused(authority: cax.CertificateAuthority) -> None:
    with pytest.raises(cax.CAError, match="not issued"):
        cax.revoke(authority, 12345)


def test_rotation_reissues_new_files_under_the_same_trust_anchor(
    authority: cax.CertificateAuthority, tmp_path: Path,
) -> None:
    first = cax.issue_server_certificate(authority, tmp_path, "portal", dns_names=["localhost"])
    old_key = first.key_path.read_bytes()
    second = cax.issue_server_certificate(authority, tmp_path, "portal", dns_names=["localhost"])
    assert second.serial != first.serial
    assert second.key_path.read_bytes() != old_key
    assert _mode(second.key_path) == 0o600
    assert _handshake(second, authority.cert_path, "localhost").startswith("TLSv1.")
