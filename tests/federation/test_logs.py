"""One logging setup for every process (federation/logs.py): JSON lines on request, no colour codes off a
terminal, Flower's lines formatted like ours and once, and no line per poll."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest

from federation.logs import ANSI, RoutineRequests, clean_line, setup_logging
from federation.settings import SettingsError


@pytest.fixture(autouse=True)
def restored_logging(monkeypatch):
    """setup_logging reconfigures the process's root logger: put back what pytest and the suite had."""
    monkeypatch.delenv("TWINLEDGER_LOG_FORMAT", raising=False)
    monkeypatch.delenv("TWINLEDGER_LOG_LEVEL", raising=False)
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in ("flwr", "httpx", "uvicorn", "uvicorn.error", "uvicorn.access",
                                                          "twinledger.test")]
    saved = (root.handlers[:], root.level, [(lg, lg.handlers[:], lg.level, lg.filters[:], lg.propagate)
                                            for lg in loggers])
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    for logger, handlers, level, filters, propagate in saved[2]:
        logger.handlers[:], logger.level, logger.filters[:], logger.propagate = handlers, level, filters, propagate


def access_record(path: str, status: int) -> logging.LogRecord:
    """What uvicorn's access logger emits for one request."""
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                             ("127.0.0.1:5000", "GET", path, "1.1", status), None)


def test_json_lines_parse_and_carry_time_level_logger_message_and_exception(monkeypatch):
    monkeypatch.setenv("TWINLEDGER_LOG_FORMAT", "json")
    stream = io.StringIO()
    assert setup_logging(stream=stream).format == "json"
    log = logging.getLogger("twinledger.test")
    log.info("round %d anchored", 3)
    try:
        raise ValueError("bad weights")
    except ValueError:
        log.exception("the reply was refused")
    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert first["level"] == "INFO" and first["logger"] == "twinledger.test" and first["message"] == "round 3 anchored"
    assert first["time"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError: bad weights" in second["exception"]


def test_a_wrong_log_format_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("TWINLEDGER_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError, match="TWINLEDGER_LOG_FORMAT"):
        setup_logging(stream=io.StringIO())


def test_text_lines_off_a_terminal_have_no_colour_codes_and_flower_logs_once_through_ours():
    import logging.config

    from flwr.common.logger import log as flower_log  # attaches Flower's colouring handler
    from uvicorn.config import LOGGING_CONFIG

    logging.config.dictConfig(LOGGING_CONFIG)  # a uvicorn that ran earlier in this process with its own config

    stream = io.StringIO()
    assert not stream.isatty()
    setup_logging(stream=stream)
    flower_log(logging.INFO, "aggregate_train: Received 4 results and 0 failures")
    flower_log(logging.DEBUG, "ServerApp finished running.")  # Flower's logger is at DEBUG; our level holds
    logging.getLogger("uvicorn.error").info("Uvicorn running on http://127.0.0.1:8800")
    text = stream.getvalue()
    assert not ANSI.search(text)
    assert text.count("aggregate_train: Received 4 results") == 1 and " flwr: aggregate_train" in text
    assert "ServerApp finished running" not in text
    assert "uvicorn.error: Uvicorn running" in text


def test_requests_of_every_poll_are_not_logged_and_everything_else_is():
    stream = io.StringIO()
    setup_logging(stream=stream)
    logging.getLogger("httpx").info('HTTP Request: POST https://127.0.0.1:9093/v1/runtime/pull-messages "200 OK"')
    access = logging.getLogger("uvicorn.access")
    for path, status in (("/readyz", 200), ("/metrics", 200), ("/v1/fleet/pull-messages", 200),
                         ("/readyz", 503), ("/api/health", 200)):
        access.handle(access_record(path, status))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and '"GET /readyz HTTP/1.1" 503' in lines[0] and "/api/health" in lines[1]
    assert RoutineRequests().filter(access_record("/healthz?x=1", 204)) is False


def test_the_flwr_run_log_keeps_its_lines_without_colours_or_polls():
    assert clean_line("\x1b[92mINFO \x1b[0m:      Starting logstream for run_id `93`\n") == (
        "INFO :      Starting logstream for run_id `93`\n")
    poll = ('2026-11-30 08:40:30,967 httpx INFO HTTP Request: POST https://127.0.0.1:43187/v1/runtime/pull-messages '
            '"HTTP/1.1 200 OK"\n')
    assert clean_line(poll) is None
    failed = poll.replace("200 OK", "500 Internal Server Error")
    assert clean_line(failed) == failed
    round_line = "2026-11-30 08:40:32,796 twinledger.coordinator INFO round 1: pinned block 45; training on 4 node(s)\n"
    assert clean_line(round_line) == round_line


def test_the_relay_runs_the_command_and_passes_on_its_clean_output_and_exit_status():
    script = ("import sys; print('\\x1b[92mINFO \\x1b[0m: started'); "
              "print('x httpx INFO HTTP Request: POST https://h:1/v1/runtime/push-logs \"HTTP/1.1 200 OK\"'); "
              "print('round 1 done', file=sys.stderr); sys.exit(3)")
    done = subprocess.run([sys.executable, "-m", "federation.logs", "--", sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stdout.splitlines() == ["INFO : started", "round 1 done"]
