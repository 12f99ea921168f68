"""Hospital IT's portal commands as functions (for `twinledger portal ...`), and the server's start."""

from __future__ import annotations

from pathlib import Path

from node.portal import accounts
from node.portal.deps import PortalState
from node.portal.settings import PortalSettings


def staff_token(home: Path | str) -> str:
    """The staff token (created on first use in <home>/keys/staff.token, mode 600)."""
    return accounts.create_staff_token(PortalSettings.load(home))


def issue_enrolment_code(home: Path | str, record_number: str) -> accounts.IssuedCode:
    """A one-time enrolment code for the patient with this record number (same rules as the staff endpoint)."""
    settings = PortalSettings.load(home)
    state = PortalState(settings)
    with state.store.session() as session:
        return accounts.create_enrolment_code(session, settings, record_number)


def serve(home: Path | str, *, port: int = 8800, host: str = "127.0.0.1", tls_certfile: Path | None = None,
          tls_keyfile: Path | None = None, insecure_http: bool = False) -> None:
    """Run the portal with uvicorn (one worker: consent relays are serialised in-process): HTTPS with the
    certificate and key (arguments, else portal.toml tls-certfile/tls-keyfile); plain HTTP only with
    `insecure_http` (development)."""
    from federation.web.serving import serve as serve_app, uvicorn_options, with_tls
    from node.portal.app import create_app

    settings = with_tls(PortalSettings.load(home), tls_certfile, tls_keyfile)
    uvicorn_options(settings, insecure_http=insecure_http)  # refused before anything is created
    accounts.create_staff_token(settings)
    serve_app(create_app(settings), settings, host=host, port=port, insecure_http=insecure_http)

