"""`twinledger console serve|token|migrate|backup|restore`: `add_console_commands(subparsers)` adds them to the
twinledger command."""

from __future__ import annotations

from pathlib import Path

from coordinator.console.settings import ROLES, ConsoleSettings


def create_token(home: Path | str, *, name: str, role: str) -> str:
    """A new role token for `name` (only its hash is kept in <home>/console.db); returns the token."""
    from sqlmodel import Session, create_engine

    from coordinator.console.models import create_tables
    from federation.web import auth

    settings = ConsoleSettings.load(home)
    engine = create_engine(settings.database_url)
    create_tables(engine)
    with Session(engine) as db:
        token = auth.create_token(db, name=name, role=role, roles=ROLES)
        auth.record(db, actor="cli", action="token.create", target=name, detail=f"role {role}")
    return token


def serve(home: Path | str, *, port: int = 8900, host: str = "127.0.0.1", tls_certfile: Path | None = None,
          tls_keyfile: Path | None = None, insecure_http: bool = False) -> None:
    """Run the console with uvicorn (one worker: it keeps the `flwr run` processes it started): HTTPS with the
    certificate and key (arguments, else console.toml tls-certfile/tls-keyfile, issued by the consortium CA,
    coordinator/ca.py); plain HTTP only with `insecure_http` (development)."""
    from coordinator.console.app import create_app
    from federation.web.serving import serve as serve_app, uvicorn_options, with_tls

    settings = ConsoleSettings.load(home)
    settings = with_tls(settings, tls_certfile, tls_keyfile)
    scheme = "https" if uvicorn_options(settings, insecure_http=insecure_http) else "http"
    print(f"operator console at {scheme}://127.0.0.1:{port}/ (log in with a token from 'twinledger console token')",
          flush=True)
    serve_app(create_app(settings), settings, host=host, port=port, insecure_http=insecure_http)


def _migrate(args) -> int:
    from sqlmodel import create_engine

    from coordinator.console.migrations import CONSOLE_SCHEMA
    from federation.migrations import current_revision, migrate

    engine = create_engine(ConsoleSettings.load(Path(args.home)).database_url)
    print(f"console database {engine.url.database}: {migrate(engine, CONSOLE_SCHEMA)} "
          f"(revision {current_revision(engine)})")
    return 0


def _serve(args) -> int:
    serve(Path(args.home), port=args.port, tls_certfile=args.tls_certfile, tls_keyfile=args.tls_keyfile,
          insecure_http=args.insecure_http)
    return 0


def _token(args) -> int:
    from federation.web.auth import TokenError

    try:
        token = create_token(Path(args.home), name=args.name, role=args.role)
    except TokenError as exc:
        raise ValueError(str(exc)) from None
    print(f"{token}\n(token for {args.name}, role {args.role}; shown only this once: keep it in a password manager)")
    return 0


def add_console_commands(subparsers) -> None:
    """`twinledger console serve --home H --port N` and `twinledger console token --home H --name N --role R`."""
    from coordinator.home_backup import CONSOLE_HOME, add_backup_commands
    from federation.web.serving import add_serving_arguments

    console = subparsers.add_parser("console", help="the consortium's operator console (web)")
    actions = console.add_subparsers(dest="action", required=True)
    home_help = "the coordinator's home directory (twinledger coordinator init)"
    serve_parser = actions.add_parser("serve", help="run the operator console over HTTPS on 127.0.0.1 (or behind a TLS proxy)")
    serve_parser.add_argument("--home", required=True, help=home_help)
    serve_parser.add_argument("--port", type=int, default=8900, help="local port (default 8900)")
    add_serving_arguments(serve_parser)
    serve_parser.set_defaults(func=_serve)
    token = actions.add_parser("token", help="create a role token for a person; prints it once")
    token.add_argument("--home", required=True, help=home_help)
    token.add_argument("--name", required=True, help="who holds the token, e.g. alice")
    token.add_argument("--role", required=True, choices=ROLES, help="operator: create studies, launch and stop runs; "
                       "observer: watch only")
    token.set_defaults(func=_token)
    migrate = actions.add_parser("migrate", help="upgrade console.db to this version's schema (the console also "
                                 "does it on start)")
    migrate.add_argument("--home", required=True, help=home_help)
    migrate.set_defaults(func=_migrate)
    add_backup_commands(actions, CONSOLE_HOME, home_help=home_help)
