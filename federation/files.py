"""Files both sides write the same way."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path


def write_secret(path: Path, data: bytes) -> None:
    """Write `data` to `path` created with mode 0600 (never readable by others, not even briefly), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never half of one, also with
    several writers at once (each writes its own temporary file beside it, flushed to disk, then renamed)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def fresh_workdir(workdir: Path, *, marker: str, made_by: str) -> Path:
    """`workdir`, empty, marked as made by `made_by`: a folder that exists, is not empty and lacks the marker (not
    one this command made) is never removed."""
    workdir = workdir.resolve()
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / marker).exists():
            raise SystemExit(f"{workdir} exists and is not a {made_by} directory: choose another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / marker).write_text(f"created by twinledger {made_by}; removed by the next {made_by} run\n")
    return workdir
