"""Live sessions (federation/web/auth.live_session): idle sessions end, and a busy one is not written on every
request (a write is a serialised fsync: fifty patients' requests at once queued behind each other's last_seen)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event
from sqlmodel import Session, SQLModel, create_engine

from federation.web import auth
from federation.web.models import WebSession, now


def _db():
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine, tables=[WebSession.__table__])
    writes: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _count(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith(("UPDATE", "DELETE", "INSERT")):
            writes.append(statement)

    return engine, writes


def _open(engine, *, last_seen_ago_s: float) -> str:
    token = auth.new_secret()
    with Session(engine) as db:
        db.add(WebSession(token_hash=auth.hash_token(token), access_token_id=1, csrf_token="c",
                          expires_at=now() + timedelta(hours=1), last_seen=now() - timedelta(seconds=last_seen_ago_s)))
        db.commit()
    return token


def test_a_session_seen_a_moment_ago_is_admitted_without_a_write():
    engine, writes = _db()
    token = _open(engine, last_seen_ago_s=1)
    writes.clear()
    with Session(engine) as db:
        assert auth.live_session(db, WebSession, token, idle_s=900) is not None
    assert writes == []


def test_a_session_seen_long_enough_ago_has_its_last_seen_moved_on():
    engine, writes = _db()
    token = _open(engine, last_seen_ago_s=120)
    writes.clear()
    with Session(engine) as db:
        row = auth.live_session(db, WebSession, token, idle_s=900)
        assert row is not None and auth.aware(row.last_seen) > now() - timedelta(seconds=5)
    assert len(writes) == 1


def test_an_idle_session_still_ends_at_its_idle_time_and_a_short_idle_time_is_tracked_finely():
    engine, _ = _db()
    assert auth.live_session(Session(engine), WebSession, _open(engine, last_seen_ago_s=901), idle_s=900) is None
    # With a 10 s idle time, a request 2 s after the last one moves last_seen on (the step is a tenth of it).
    engine, writes = _db()
    token = _open(engine, last_seen_ago_s=2)
    writes.clear()
    with Session(engine) as db:
        assert auth.live_session(db, WebSession, token, idle_s=10) is not None
    assert len(writes) == 1


def test_many_cookies_are_checked_with_one_query_and_one_commit_for_what_changed():
    engine, writes = _db()
    fresh = [_open(engine, last_seen_ago_s=1) for _ in range(3)]
    stale, idle = _open(engine, last_seen_ago_s=120), _open(engine, last_seen_ago_s=901)
    reads: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_a: reads.append(statement)
                 if statement.lstrip().upper().startswith("SELECT") else None)
    writes.clear()
    with Session(engine) as db:
        live = auth.live_sessions(db, WebSession, [*fresh, stale, idle, "unknown", None, "x" * 300], idle_s=900)
    assert set(live) == {*fresh, stale}  # the idle one ended, the unknown and malformed ones were never sessions
    assert len(reads) == 1
    assert sorted(w.split()[0].upper() for w in writes) == ["DELETE", "UPDATE"]
