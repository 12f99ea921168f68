"""docs/deployment.md is followed literally: path (b)'s steps run in order on loopback and end where the page says
(consented patients, one anchored round, an audit with 0 violations); every `twinledger` command on the page (both
paths) parses with the real command line; path (a)'s compose services exist; links into the page resolve.

The walk runs the page's ```sh blocks as one bash script (`set -euo pipefail`), with B0's values (ports, the
trial directory) given as free ports and a temporary directory, and the services started the way the page
starts them (in the background). Everything it started carries a marker in its environment and is stopped by
process id at the end.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from deploy.cli import build_parser
from deploy.processes import free_port
from tests.deploy import deployment_page as page

ROOT = Path(__file__).resolve().parents[2]
WALK_TIMEOUT_S = 900
MARKER = "TWINLEDGER_DOCS_WALK"


def _all_commands() -> list[list[str]]:
    text = page.page_text()
    commands = []
    for letter in ("a", "b"):
        section = page.path_section(text, letter)
        for fence in (page.RUN_FENCE, page.EXAMPLE_FENCE):
            for block in page.blocks(section, fence):
                commands += page.twinledger_commands(block)
    return commands


def test_every_twinledger_command_on_the_page_parses():
    commands = _all_commands()
    assert len(commands) >= 30, f"too few commands found on the page: {commands}"
    parser = build_parser()
    for words in commands:
        try:
            parser.parse_args(words)
        except SystemExit:
            pytest.fail(f"docs/deployment.md: `twinledger {' '.join(words)}` does not parse (see the error above)")


def test_path_b_runs_commands_only_in_run_blocks_and_sets_its_values_first():
    section = page.path_section(page.page_text(), "b")
    steps = page.blocks(section)
    assert "export TL_DIR=${TL_DIR:-" in steps[0], "path (b)'s first block sets the values the walk overrides"
    set_first = set(re.findall(r"export (?:[A-Z_]+=\S+ )*?([A-Z_]+)=\$\{\1:-", steps[0]))
    set_first |= set(re.findall(r"\b([A-Z_]+)=\$\{\1:-", steps[0]))
    assert {"TL_DIR", "CHAIN_PORT", "CHAIN_TLS_PORT", "FLEET_PORT", "CONTROL_PORT", "SUPERNODE_PORT",
            "PORTAL_PORT"} <= set_first
    script = "\n".join(steps)
    assert "--insecure" not in script.replace("--insecure-http", ""), "path (b) uses TLS everywhere"
    assert "--plaintext-key" not in script, "path (b) keeps every key in a keystore"


def _compose_services_named(line: str) -> set[str]:
    """The services a `$C VERB ...` line (C="docker compose -f deploy/compose.yaml") names."""
    words = shlex.split(line.split("|", 1)[0].split(">", 1)[0])
    if len(words) < 2 or words[0] != "$C":
        return set()
    verb, rest = words[1], [w for w in words[2:] if not w.startswith("-")]
    if verb in ("run", "exec"):
        return {rest[0]}
    if verb == "logs":
        return set(rest)
    if verb == "cp":
        return {w.split(":", 1)[0] for w in rest[:2] if ":" in w}
    return set()


def test_path_a_names_only_services_of_the_compose_file():
    services = set(yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"])
    section = page.path_section(page.page_text(), "a")
    named = {service for block in page.blocks(section, page.EXAMPLE_FENCE)
             for line in page.command_lines(block) for service in _compose_services_named(line)}
    assert {"operator", "coordinator", "hospital-a-portal", "hospital-a-init", "hospital-b-init"} <= named, named
    assert named <= services, f"path (a) names services compose.yaml lacks: {sorted(named - services)}"


def test_links_into_the_page_resolve():
    headings = re.findall(r"^#+ (.+)$", page.page_text(), re.M)

    def anchor(heading: str) -> str:
        text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
        return text.replace(" ", "-")

    anchors = {anchor(h) for h in headings}
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for source in sources:
        for target in re.findall(r"deployment\.md#([\w\-]+)", source.read_text()):
            if target not in anchors:
                broken.append(f"{source.name}: #{target}")
        if source.name == "deployment.md":
            for target in re.findall(r"\]\(#([\w\-]+)\)", source.read_text()):
                if target not in anchors:
                    broken.append(f"deployment.md: #{target}")
    assert not broken, f"links to headings docs/deployment.md does not have: {broken}"


def test_the_page_has_no_author_paths():
    text = page.page_text()
    for pattern in (r"/tmp/", r"/work/", r"/home/\w", r"/root/"):
        assert not re.search(pattern, text), f"docs/deployment.md names a path of its author's machine: {pattern}"


def _marked_pids(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"{MARKER}={marker}".encode() in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def _stop_marked(marker: str, *, timeout_s: float = 30.0) -> None:
    """SIGTERM to every process the walk started (so each service stops its children), then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _marked_pids(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        while _marked_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not _marked_pids(marker):
            return


def _slowest(trace: Path, count: int = 6) -> str:
    """The commands that took longest, from the xtrace lines `+ <epoch seconds> <command>` (substitutions too)."""
    steps = [(float(m.group(1)), m.group(2)[:60]) for m in re.finditer(r"^\++ (\d+\.\d+) (.*)$",
                                                                       trace.read_text(errors="replace"), re.M)]
    steps.sort()  # a background job traces its line from its own process, possibly after the next command
    spans = sorted(((after[0] - before[0], before[1]) for before, after in zip(steps, steps[1:])), reverse=True)
    return "; ".join(f"{took:.0f} s {command}" for took, command in spans[:count])


@pytest.mark.e2e
def test_path_b_followed_literally_ends_with_an_anchored_audited_round(tmp_path):
    steps = page.blocks(page.path_section(page.page_text(), "b"))
    script = tmp_path / "walk.sh"
    trace = tmp_path / "trace.log"
    # Each command's start time goes to trace.log (bash's xtrace on its own descriptor): where the walk's time goes.
    script.write_text(f"exec 9>'{trace}'; BASH_XTRACEFD=9; PS4='+ $EPOCHREALTIME '; set -x\n"
                      "set -euo pipefail\n" + "\n".join(steps))
    trial = tmp_path / "trial"
    marker = uuid.uuid4().hex
    env = {
        **os.environ,
        MARKER: marker,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{ROOT / 'node_modules' / '.bin'}{os.pathsep}"
                f"{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "TL_DIR": str(trial),
        **{name: str(free_port()) for name in ("CHAIN_PORT", "CHAIN_TLS_PORT", "FLEET_PORT", "CONTROL_PORT",
                                               "SUPERNODE_PORT", "PORTAL_PORT")},
    }
    log = tmp_path / "walk.log"
    started = time.monotonic()
    try:
        with log.open("w") as out:
            walk = subprocess.run(["bash", str(script)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                  cwd=tmp_path, timeout=WALK_TIMEOUT_S, check=False)
        took_s = time.monotonic() - started
        output = log.read_text(errors="replace")
        assert walk.returncode == 0, f"the page's steps stopped (status {walk.returncode}):\n{output[-6000:]}"
    finally:
        _stop_marked(marker)
    print(f"docs walk of path (b): {took_s:.0f} s; slowest commands: {_slowest(trace)}")

    # B7's loop prints each trial patient's grant: "recorded <block>" (or "sent null" when the chain took longer
    # than the portal's relay-wait-s; then the round may leave that patient out), never "failed".
    patients = int(re.search(r"for i in \$\(seq 1 (\d+)\)", "\n".join(steps)).group(1))
    grants = re.findall(r"^(recorded|sent|failed) (\S+)$", output, re.M)
    assert len(grants) == patients and {status for status, _ in grants} <= {"recorded", "sent"}, grants
    assert [status for status, _ in grants].count("recorded") >= patients // 2, grants
    report = json.loads((trial / "coordinator" / "coordinator-home" / "runs" / "run" / "report.json").read_text())
    assert report["status"] == "finished"
    assert [r.get("anchor_block") is not None for r in report["rounds"]] == [True], report["rounds"]
    audit = json.loads(output[output.rindex("{\n \"violations\""):].split("\n}\n", 1)[0] + "\n}")
    assert audit["violations"] == 0 and audit["rounds"] == 1 and audit["checked"] > 0, audit
    print(f"docs walk: {len(grants)} grants, report {report['status']}, audit {json.dumps(audit)}")
