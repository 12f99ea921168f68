"""Files both sides write the same way."""

from __future__ import annotations

import os
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
