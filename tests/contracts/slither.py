"""Static analysis of the Solidity contracts with Slither, offline.

Slither (PyPI ``slither-analyzer``) pins ``web3<8`` while the project uses web3 8, so it lives in a
virtual environment of its own (``.venv-slither`` at the project root by default), which
:func:`ensure_venv` creates on first use from PyPI with pinned versions.

Nothing else is downloaded, and solc-select is never used: Slither compiles through crytic-compile's
standard-JSON platform (``--solc-standard-json``) with ``--solc`` pointing at the solc-js shim
(``contracts/solc``), which answers ``solc --version`` and ``solc --standard-json`` (crytic-compile's extra
``--allow-paths DIR`` argument is ignored by the shim). Slither runs in the sources directory on the
target ``.``, so the source names it sends (``./Consortium.sol``) resolve against the shim's
``--base-path`` (``contracts/src``); ``@openzeppelin/...`` imports resolve through the shim's
``--include-path`` (``node_modules``), and crytic-compile finds those files on disk by looking for
``node_modules`` in the parent directories.

Scope: only findings with at least one element in our sources are kept (``--include-paths`` on the
sources directory). This drops findings that lie wholly inside OpenZeppelin (``node_modules``) but,
unlike ``--filter-paths node_modules`` (which drops a finding as soon as *any* of its elements is in
``node_modules``), keeps a finding in our code that also points into a dependency.

A test tool, not part of the shipped package. Command line: ``python -m tests.contracts.slither`` prints a
summary and exits 1 on a High finding.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = PROJECT_ROOT / "contracts"
SOURCES_DIR = CONTRACTS_DIR / "src"
SOLC_SHIM = CONTRACTS_DIR / "solc"
DEFAULT_VENV = PROJECT_ROOT / ".venv-slither"

# crytic-compile and solc-select are pinned too: the offline route above relies on crytic-compile's
# standard-JSON platform as it is in this version.
SLITHER_REQUIREMENTS = (
    "slither-analyzer==0.11.6",
    "crytic-compile==0.4.2",
    "solc-select==1.2.0",
)
_STAMP_NAME = "twinledger-slither-requirements.txt"

IMPACT_ORDER = ("High", "Medium", "Low", "Informational", "Optimization")


class StaticAnalysisError(RuntimeError):
    """Slither could not be installed or could not analyse the sources."""


class _Deadline:
    def __init__(self, timeout_s: float):
        self._end = time.monotonic() + timeout_s
        self.timeout_s = timeout_s

    def remaining(self, what: str) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise StaticAnalysisError(f"timed out ({self.timeout_s:.0f} s) before {what}")
        return left


def _run(cmd: list[str], *, timeout_s: float, **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd``; on time-out kill its whole process group (the shim starts node), then raise."""
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        **kwargs,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise StaticAnalysisError(
                f"timed out after {timeout_s:.0f} s: {' '.join(map(str, cmd))}"
            ) from None
    return subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def _venv_lock(venv: Path):
    """Serialise venv creation between processes (e.g. two test runs at once)."""
    key = hashlib.sha256(str(venv).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"twinledger-slither-{key}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _python_works(python: Path) -> bool:
    if not python.exists():
        return False
    try:
        return subprocess.run([python, "-c", ""], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_venv(venv: Path = DEFAULT_VENV, *, timeout_s: float = 600.0) -> Path:
    """Create (or complete) Slither's own virtual environment; return the ``slither`` executable.

    Installs :data:`SLITHER_REQUIREMENTS` from PyPI with the ``python3`` running this module. A stamp
    file records what was installed, so an existing, complete venv costs nothing.
    """
    venv = Path(venv).absolute()
    deadline = _Deadline(timeout_s)
    slither = venv / "bin" / "slither"
    python = venv / "bin" / "python"
    stamp = venv / _STAMP_NAME
    wanted = "\n".join(SLITHER_REQUIREMENTS) + "\n"
    with _venv_lock(venv):
        if slither.exists() and stamp.exists() and stamp.read_text() == wanted:
            return slither
        if not _python_works(python):
            if venv.exists() and any(venv.iterdir()) and not (venv / "pyvenv.cfg").exists():
                raise StaticAnalysisError(f"{venv} exists and is not a virtual environment")
            created = _run(
                [sys.executable, "-m", "venv", "--clear", str(venv)],
                timeout_s=deadline.remaining("creating the Slither venv"),
            )
            if created.returncode != 0:
                raise StaticAnalysisError(
                    f"could not create the Slither venv {venv}:\n{_tail(created.stderr)}"
                )
            # Keep the venv out of version control wherever it is created.
            (venv / ".gitignore").write_text("*\n")
        installed = _run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
             *SLITHER_REQUIREMENTS],
            timeout_s=deadline.remaining("installing Slither"),
        )
        if installed.returncode != 0 or not slither.exists():
            raise StaticAnalysisError(
                f"could not install {' '.join(SLITHER_REQUIREMENTS)} into {venv}:\n"
                f"{_tail(installed.stderr)}"
            )
        stamp.write_text(wanted)
    return slither


def run_slither(
    *,
    venv: Path = DEFAULT_VENV,
    timeout_s: float = 600.0,
    sources_dir: Path = SOURCES_DIR,
    solc: Path = SOLC_SHIM,
) -> dict:
    """Run Slither on the ``*.sol`` files of ``sources_dir``; return its parsed JSON output.

    ``timeout_s`` bounds the whole call, venv creation included. ``solc`` must be a shim whose
    ``--base-path`` is ``sources_dir`` (as ``contracts/solc`` is for ``contracts/src``).

    The result is Slither's ``--json`` document (``success``, ``error``, ``results.detectors``: one
    dict per finding, with ``check``, ``impact``, ``confidence``, ``description``,
    ``first_markdown_element``...), plus ``analyzed_files``: the absolute paths of every source
    file compiled (ours and the imported ones), taken from the compilation Slither reports (whose
    ASTs are dropped to keep the result small).
    """
    deadline = _Deadline(timeout_s)
    sources_dir = Path(sources_dir).resolve()
    if not any(sources_dir.glob("*.sol")):
        raise StaticAnalysisError(f"no *.sol file in {sources_dir}")
    slither = ensure_venv(venv, timeout_s=deadline.remaining("creating the Slither venv"))
    cmd = [
        str(slither),
        ".",  # the source names must be relative to the shim's --base-path
        "--solc-standard-json",
        "--solc", str(Path(solc).resolve()),
        # Keep findings with at least one element in our sources (see the module docstring).
        "--include-paths", re.escape(str(sources_dir)) + "/",
        "--json", "-",
        "--json-types", "detectors,compilations",
        "--fail-none",  # findings are data here, not a failure of the run
        "--disable-color",
    ]
    env = dict(os.environ)
    # solc-select (a dependency of crytic-compile) keeps its state under $VIRTUAL_ENV; it is never
    # used to fetch a compiler, since --solc names our shim.
    env["VIRTUAL_ENV"] = str(Path(venv).absolute())
    for name in ("PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    completed = _run(
        cmd, timeout_s=deadline.remaining("running Slither"), cwd=sources_dir, env=env
    )
    try:
        result = json.loads(completed.stdout)
    except json.JSONDecodeError:
        raise StaticAnalysisError(
            f"Slither printed no JSON (exit {completed.returncode}):\n{_tail(completed.stderr)}"
        ) from None
    if not result.get("success") or completed.returncode != 0:
        raise StaticAnalysisError(
            f"Slither failed (exit {completed.returncode}): {result.get('error')}\n"
            f"{_tail(completed.stderr)}"
        )
    results = result.setdefault("results", {})
    results.setdefault("detectors", [])
    analyzed = set()
    for compilation in results.pop("compilations", []):
        for unit in compilation.get("compilation_units", {}).values():
            analyzed.update(f["absolute"] for f in unit.get("filenames", []))
    result["analyzed_files"] = sorted(analyzed)
    return result


def findings(result: dict) -> list[dict]:
    """The detector findings of a :func:`run_slither` result, most severe first."""
    rank = {impact: i for i, impact in enumerate(IMPACT_ORDER)}
    return sorted(
        result["results"]["detectors"],
        key=lambda f: (rank.get(f["impact"], len(rank)), f["check"], f.get("first_markdown_element", "")),
    )


def format_finding(finding: dict) -> str:
    return (
        f"[{finding['impact']}/{finding['confidence']}] {finding['check']} "
        f"({finding.get('first_markdown_element', '?')})\n"
        + "\n".join("    " + line for line in finding["description"].strip().splitlines())
    )


def summary(result: dict) -> str:
    found = findings(result)
    counts = {impact: 0 for impact in IMPACT_ORDER}
    for finding in found:
        counts[finding["impact"]] = counts.get(finding["impact"], 0) + 1
    ours = [p for p in result.get("analyzed_files", []) if "/node_modules/" not in p]
    lines = [
        f"Slither: {len(found)} finding(s) in {', '.join(Path(p).name for p in ours) or '?'} "
        f"({len(result.get('analyzed_files', []))} files compiled)",
        "  " + ", ".join(f"{impact}: {n}" for impact, n in counts.items()),
        "",
    ]
    lines += [format_finding(f) + "\n" for f in found]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="Slither's venv (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON instead")
    args = parser.parse_args(argv)
    try:
        result = run_slither(venv=args.venv, timeout_s=args.timeout)
    except StaticAnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(findings(result), indent=2))
    else:
        print(summary(result))
    return 1 if any(f["impact"] == "High" for f in findings(result)) else 0


if __name__ == "__main__":
    sys.exit(main())
