"""`twinledger node console` and `twinledger node console-token`: `add_node_console_commands(node_subparsers)`."""

from __future__ import annotations

from pathlib import Path

from node.console.settings import ROLES, ConsoleSettings


def create_console_token(home: Path | str, *, name: str, role: str) -> str:
    """A new token for a staff member (shown once; only its hash is kept in the node's database)."""
    from federation.web import auth
    from node.console.deps import ConsoleState

    state = ConsoleState(ConsoleSettings.load(home))
    with state.store.session() as db:
        token = auth.create_token(db, name=name, role=role, roles=ROLES)
        auth.record(db, actor="node-admin", role="shell", action="token.create", target=name, detail=f"role {role}")
    return token


def revoke_console_token(home: Path | str, *, name: str) -> bool:
    from federation.web import auth
    from node.console.deps import ConsoleState

    state = ConsoleState(ConsoleSettings.load(home))
    with state.store.session() as db:
        revoked = auth.revoke_token(db, name)
        if revoked:
            auth.record(db, actor="node-admin", role="shell", action="token.revoke", target=name)
    return revoked


def serve(home: Path | str, *, port: int, host: str = "127.0.0.1", superlink: str | None = None,
          tls_certfile: Path | None = None, tls_keyfile: Path | None = None, insecure_http: bool = False) -> None:
    """Run the console with uvicorn (one worker: imports are serialised in-process): HTTPS with the certificate
    and key (arguments, else console.toml tls-certfile/tls-keyfile); plain HTTP only with `insecure_http`."""
    from federation.web.serving import serve as serve_app, uvicorn_options, with_tls
    from node.console.app import create_app

    settings = ConsoleSettings.load(home, superlink=superlink)
    settings = with_tls(settings, tls_certfile, tls_keyfile)
    uvicorn_options(settings, insecure_http=insecure_http)  # refused before anything is created
    serve_app(create_app(settings), settings, host=host, port=port, insecure_http=insecure_http)


def _console(args) -> int:
    serve(Path(args.home), port=args.port, host=args.host, superlink=args.superlink, tls_certfile=args.tls_certfile,
          tls_keyfile=args.tls_keyfile, insecure_http=args.insecure_http)
    return 0


def _console_token(args) -> int:
    if args.revoke:
        if not revoke_console_token(Path(args.home), name=args.name):
            raise ValueError(f"no console token named {args.name!r}")
        print(f"revoked the console token of {args.name} and ended their sessions")
        return 0
    token = create_console_token(Path(args.home), name=args.name, role=args.role)
    print(f"{token}  (console token of {args.name}, role {args.role}; shown once)")
    return 0


def add_node_console_commands(node_subparsers) -> None:
    """Add `console` and `console-token` under `twinledger node`."""
    from federation.web.serving import add_serving_arguments

    console = node_subparsers.add_parser("console", help="run the hospital IT console (web, 127.0.0.1 by default)")
    console.add_argument("--home", required=True, help="the node's home directory")
    console.add_argument("--port", type=int, default=8900, help="port to listen on (default 8900)")
    console.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: internal only)")
    console.add_argument("--superlink", help="host:port of the SuperLink, for the health check "
                                             "(default: console.toml superlink or $TWINLEDGER_SUPERLINK)")
    add_serving_arguments(console)
    console.set_defaults(func=_console)
    token = node_subparsers.add_parser("console-token", help="create (or revoke) a staff member's console token")
    token.add_argument("--home", required=True, help="the node's home directory")
    token.add_argument("--name", required=True, help="who holds the token, e.g. alice")
    token.add_argument("--role", choices=ROLES, default="viewer",
                       help="it-admin imports records and issues enrolment codes; viewer only looks (default)")
    token.add_argument("--revoke", action="store_true", help="revoke this name's token instead")
    token.set_defaults(func=_console_token)
