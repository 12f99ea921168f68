"""What the three web apps share about how they are served: HTTPS directly (a certificate and key from the
consortium's CA, given as files) or behind a proxy whose X-Forwarded-For the app believes only when the proxy's
address is listed in `trusted-proxies`. `serve()` runs an app with uvicorn accordingly: without a certificate it
refuses to start unless plain HTTP was asked for explicitly (`--insecure-http`, development only)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from federation.settings import ComponentSettings, OptionalPath
from federation.web.clients import proxy_networks


class InsecureServing(ValueError):
    """A web app was asked to serve without a certificate and without the explicit development flag."""


class WebServerSettings(ComponentSettings):
    """The serving fields every web app's settings have (TOML keys tls-certfile, tls-keyfile, trusted-proxies)."""

    tls_certfile: OptionalPath = None  # the app's certificate (PEM, chain included); with tls-keyfile: HTTPS
    tls_keyfile: OptionalPath = None  # its private key (PEM)
    # Proxies whose X-Forwarded-For is believed (addresses or networks); none: the peer is the client.
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        proxy_networks(value)
        return value

    def tls_files(self) -> tuple[Path, Path] | None:
        """(certificate, key), None when neither is set; ValueError when only one is, or a file is missing."""
        if self.tls_certfile is None and self.tls_keyfile is None:
            return None
        if self.tls_certfile is None or self.tls_keyfile is None:
            raise InsecureServing("give both tls-certfile and tls-keyfile (or neither, with --insecure-http)")
        for path in (self.tls_certfile, self.tls_keyfile):
            if not Path(path).is_file():
                raise InsecureServing(f"no such certificate or key file: {path}")
        return Path(self.tls_certfile), Path(self.tls_keyfile)


def uvicorn_options(settings: WebServerSettings, *, insecure_http: bool = False) -> dict:
    """uvicorn.run's TLS options for these settings: the certificate and key, or {} when plain HTTP was asked
    for explicitly; InsecureServing otherwise."""
    files = settings.tls_files()
    if files is None:
        if not insecure_http:
            raise InsecureServing("no certificate: set tls-certfile and tls-keyfile (a certificate from the "
                                  "consortium CA), or pass --insecure-http to serve plain HTTP for development")
        return {}
    return {"ssl_certfile": str(files[0]), "ssl_keyfile": str(files[1])}


def serve(app, settings: WebServerSettings, *, host: str, port: int, insecure_http: bool = False) -> None:
    """Run `app` with uvicorn: HTTPS with the settings' certificate, or plain HTTP only when asked explicitly.
    uvicorn's own proxy-header handling is off: the app reads X-Forwarded-For itself, from trusted proxies only.
    uvicorn gets no logging configuration of its own: its lines go to the root handler of federation.logs
    (one format, no colour codes, no access-log line per probe or scrape)."""
    import gc

    import uvicorn

    options = uvicorn_options(settings, insecure_http=insecure_http)
    # What the imports made (torch and web3 among them: some 340,000 objects) lives as long as the server. Left to
    # the collector, each full collection walks all of it, about 150 ms during which no request moves: measured
    # as one such pause in every burst of patients. Frozen, the collector walks only what requests make.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host, port=port, proxy_headers=False, server_header=False, log_level="info",
                log_config=None, **options)


def add_serving_arguments(parser) -> None:
    """--tls-certfile, --tls-keyfile and --insecure-http on a serve command."""
    parser.add_argument("--tls-certfile", type=Path, help="the app's certificate (PEM); default: tls-certfile setting")
    parser.add_argument("--tls-keyfile", type=Path, help="its private key (PEM); default: tls-keyfile setting")
    parser.add_argument("--insecure-http", action="store_true",
                        help="serve plain HTTP without a certificate (development only; never in production)")


def with_tls(settings: WebServerSettings, certfile: Path | None, keyfile: Path | None) -> WebServerSettings:
    """The settings with a command line's --tls-certfile/--tls-keyfile, when given, over the file's."""
    given = {name: value for name, value in (("tls_certfile", certfile), ("tls_keyfile", keyfile)) if value}
    return settings.model_copy(update=given) if given else settings
