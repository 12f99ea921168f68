"""Attacks on the web kit (federation/web) that issue 12 found: bodies read whole before their size was checked
(#5), and per-address login limits that an undeclared proxy turns into a lockout of everyone (#3)."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

from fastapi import Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from federation import web
from federation.web.app import create_web_app
from federation.web.clients import proxy_networks, resolve

MiB = 1024 * 1024


class Note(BaseModel):
    text: str


def _app(**limits):
    app = create_web_app("attacks", static_dir=None, chain_name="the ledger",
                         error_page=lambda request, message, status: HTMLResponse(message, status_code=status), **limits)

    @app.post("/login")
    async def login(request: Request) -> dict:
        form = await web.read_form(request, max_bytes=16 * 1024, max_fields=10)
        return {"fields": len(form)}

    @app.post("/api/notes")
    def note(body: Note) -> dict:
        return {"length": len(body.text)}

    @app.post("/api/imports")
    async def imports(request: Request) -> dict:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"size": size}

    return app


class Attacker:
    """Sends `total` bytes in 64 KiB chunks from a generator, counting what the server pulled."""

    def __init__(self, total: int):
        self.total, self.pulled = total, 0

    def chunks(self):
        while self.pulled < self.total:
            chunk = b"a" * min(64 * 1024, self.total - self.pulled)
            self.pulled += len(chunk)
            yield chunk


def _post(app, path: str, attacker: Attacker, *, content_type: str, content_length: int | None) -> tuple[int, dict]:
    headers = [(b"content-type", content_type.encode()), (b"host", b"testserver")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "https",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("203.0.113.9", 5000), "server": ("testserver", 443)}
    chunks = attacker.chunks()
    sent: list[dict] = []

    async def receive():
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    # In a thread of its own: another test's event loop may be running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, app(scope, receive, send)).result()
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    try:
        return start["status"], json.loads(body)
    except ValueError:
        return start["status"], {"text": body.decode()}


def test_a_huge_unauthenticated_login_form_is_refused_while_streaming_without_a_content_length():
    attacker = Attacker(200 * MiB)
    status, _ = _post(_app(), "/login", attacker, content_type="application/x-www-form-urlencoded", content_length=None)
    assert status == 413
    assert attacker.pulled <= 16 * 1024 + 64 * 1024  # the limit and at most one chunk more, not 200 MiB


def test_a_huge_login_form_with_a_lying_content_length_is_refused_while_streaming():
    attacker = Attacker(200 * MiB)
    status, _ = _post(_app(), "/login", attacker, content_type="application/x-www-form-urlencoded", content_length=100)
    assert status == 413
    assert attacker.pulled <= 16 * 1024 + 64 * 1024


def test_a_declared_huge_body_is_refused_before_a_byte_is_read():
    attacker = Attacker(200 * MiB)
    status, _ = _post(_app(), "/login", attacker, content_type="application/x-www-form-urlencoded",
                      content_length=200 * MiB)
    assert status == 413 and attacker.pulled == 0


def test_a_huge_json_body_is_refused_while_streaming_with_the_error_model():
    attacker = Attacker(200 * MiB)
    status, body = _post(_app(), "/api/notes", attacker, content_type="application/json", content_length=None)
    assert status == 413, body
    assert body["error"]["status"] == 413 and "larger than" in body["detail"]
    assert attacker.pulled <= 256 * 1024 + 64 * 1024


def test_a_path_may_have_a_larger_limit_and_it_holds_too():
    app = _app(body_limits={"/api/imports": 1 * MiB})
    fits = Attacker(MiB - 1)
    assert _post(app, "/api/imports", fits, content_type="text/csv", content_length=None) == (200, {"size": MiB - 1})
    attacker = Attacker(200 * MiB)
    status, _ = _post(app, "/api/imports", attacker, content_type="text/csv", content_length=None)
    assert status == 413 and attacker.pulled <= MiB + 64 * 1024


def test_forwarded_for_is_believed_only_from_a_trusted_proxy():
    trusted = proxy_networks(["10.0.0.5"])
    # A client talking directly cannot choose its address by sending the header through a trusted proxy's list.
    assert resolve("203.0.113.9", None, trusted) == "203.0.113.9"
    assert resolve("203.0.113.9", None, trusted).real
    behind = resolve("10.0.0.5", "198.51.100.1, 203.0.113.7", trusted)
    assert behind == "203.0.113.7" and behind.real  # the right-most hop the trusted proxy saw
    spoofed = resolve("203.0.113.9", "198.51.100.1", trusted)
    assert spoofed == "203.0.113.9" and spoofed.real  # not from the proxy: the header is ignored
    silent = resolve("10.0.0.5", None, trusted)
    assert silent == "10.0.0.5" and not silent.real  # the proxy's own address stands for all its clients


def test_without_a_trusted_proxy_a_forwarding_proxy_is_one_shared_address_and_not_locked_out():
    shared = resolve("127.0.0.1", "203.0.113.7", ())
    assert shared == "127.0.0.1" and not shared.real
    assert resolve("127.0.0.1", None, ()).real  # a direct client


def test_console_logins_behind_an_undeclared_proxy_do_not_lock_out_every_staff_member():
    import pytest
    from sqlmodel import Session, create_engine

    from federation.web import auth, models
    from federation.web.clients import ClientAddress
    from federation.web.errors import WebError
    from federation.web.sessions import log_in_with_token

    engine = create_engine("sqlite://")
    models.create_tables(engine)
    with Session(engine) as db:
        token = auth.create_token(db, name="alice", role="operator")
        proxy = ClientAddress("127.0.0.1", real=False)
        limits = {"roles": ("operator",), "ttl_s": 60, "max_failures": 3, "window_s": 900}
        for _ in range(10):
            with pytest.raises(WebError) as refused:
                log_in_with_token(db, token="tl_wrong", client=proxy, **limits)
            assert refused.value.status == 401
        holder, _ = log_in_with_token(db, token=token, client=proxy, **limits)
        assert holder.name == "alice"
        direct = ClientAddress("203.0.113.7")
        for _ in range(3):
            with pytest.raises(WebError):
                log_in_with_token(db, token="tl_wrong", client=direct, **limits)
        with pytest.raises(WebError) as locked:
            log_in_with_token(db, token=token, client=direct, **limits)
        assert locked.value.status == 429  # a real address is still limited
