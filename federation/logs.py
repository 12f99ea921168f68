"""How every TwinLedger process logs: `setup_logging()`, called once by each entry point (the `twinledger`
command, the SuperNode launcher, the ServerApp, the coordinator's helper processes, the web servers).

    setup_logging()                  # text lines, or JSON lines when TWINLEDGER_LOG_FORMAT=json
    setup_logging(verbose=True)      # DEBUG, whatever TWINLEDGER_LOG_LEVEL says

- Text lines carry no colour codes: Flower's own handler, which colours always, is taken off (its records reach
  the one root handler), and the web servers run uvicorn without a logging configuration of its own
  (federation/web/serving.py), so its lines reach the root handler too.
- JSON: one object a line, {"time", "level", "logger", "message"} (and "exception"), for a log collector.
- Libraries that log every HTTP request at INFO (httpx: each poll of the SuperLink's Runtime API) log warnings
  only, and the access log drops successful requests to polling endpoints (probes, metrics, Flower's Fleet and
  Runtime APIs): `RoutineRequests`.

`python -m federation.logs -- COMMAND...` runs COMMAND and passes its output on without colour codes and without
the per-poll lines: the `flwr run` log (coordinator/processes.py) goes through it.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from federation.settings import LogSettings

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# Each logs every request it makes at INFO (httpx: every poll of the SuperLink) or chatters at start-up.
QUIET_LOGGERS = ("web3", "urllib3", "asyncio", "matplotlib", "PIL", "httpx", "httpcore", "alembic")
# Successful requests to these are not logged: probes and scrapes every few seconds, and Flower's polling APIs.
POLL_PATHS = ("/healthz", "/readyz", "/metrics", "/health")
POLL_PREFIXES = ("/v1/fleet/", "/v1/runtime/")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# A line of a relayed log that reports one successful poll (httpx's request log, an access log line).
POLL_LINE = re.compile(r'HTTP Request: \w+ \S*(/v1/(fleet|runtime)/|/health\b)\S* "HTTP/[\d.]+ [23]\d\d'
                       r'|"\w+ (/healthz|/readyz|/metrics|/health|/v1/(fleet|runtime)/\S*) HTTP/[\d.]+" [23]\d\d')


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, and the exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": ANSI.sub("", record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class RoutineRequests(logging.Filter):
    """Drops uvicorn's access-log records of successful requests to polling endpoints (POLL_PATHS, POLL_PREFIXES)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "uvicorn.access" or not isinstance(record.args, tuple) or len(record.args) != 5:
            return True
        path, status = str(record.args[2]).split("?")[0], record.args[4]
        routine = path in POLL_PATHS or path.startswith(POLL_PREFIXES)
        return not (routine and isinstance(status, int) and status < 400)


def setup_logging(*, verbose: bool = False, stream: TextIO | None = None) -> LogSettings:
    """Send every logger's records to one handler on `stream` (stderr), formatted as TWINLEDGER_LOG_FORMAT asks;
    replaces what was there (a second call reconfigures). Returns the settings it used."""
    from federation.settings import LogSettings  # not at import: the relay (`python -m federation.logs`) starts fast

    settings = LogSettings.from_environment()
    level = logging.DEBUG if verbose else getattr(logging, settings.level)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else logging.Formatter(TEXT_FORMAT, DATE_FORMAT))
    handler.addFilter(RoutineRequests())
    handler.setLevel(level)  # records propagated from loggers set lower (Flower's is DEBUG) stop here too
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # a uvicorn configured earlier in the process
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
        logging.getLogger(name).setLevel(logging.NOTSET)  # uvicorn.run sets its --log-level again
    logging.getLogger("uvicorn.access").addFilter(RoutineRequests())
    _flower_through_root()
    return settings


def _flower_through_root() -> None:
    """Flower's logger has its own handler, colouring always: when Flower is loaded, its records go to the root
    handler instead (Flower's logger propagates), so they are formatted like every other line."""
    flower = sys.modules.get("flwr.supercore.logger")
    if flower is None:
        return
    logger = logging.getLogger(flower.LOGGER_NAME)
    for handler in logger.handlers[:]:
        if isinstance(handler, flower.ConsoleHandler):
            logger.removeHandler(handler)
    logger.propagate = True


def clean_line(line: str) -> str | None:
    """A relayed log line without colour codes, or None for a line that only reports a successful poll."""
    line = ANSI.sub("", line)
    return None if POLL_LINE.search(line) else line


def relay(command: list[str], *, out: TextIO, forward_signals: bool = False) -> int:
    """Run `command`, writing its output (stdout and stderr) to `out` line by line through `clean_line`;
    `forward_signals` (main thread only): a SIGTERM or SIGINT to this process goes to the command."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                               bufsize=1)
    if forward_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda received, _frame: process.send_signal(received))
    assert process.stdout is not None
    for line in process.stdout:
        if (kept := clean_line(line)) is not None:
            out.write(kept)
            out.flush()
    return process.wait()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m federation.logs -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    return relay(argv, out=sys.stdout, forward_signals=True)


if __name__ == "__main__":
    sys.exit(main())
