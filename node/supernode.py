"""A hospital's Flower SuperNode with warm ClientApp processes.

    python -c 'from node.supernode import main; main()' --insecure --superlink HOST:PORT --port RUNTIME_PORT \
        --node-config 'node-home="..."'

(`python -m node.supernode` works too, but then every forked process re-runs this module as `__mp_main__`.)

Takes the arguments of `flower-supernode` and runs Flower's own SuperNode (flwr 1.41) in this process, with
two changes that cut the time a round spends outside training:

- **warm ClientApp processes.** The SuperNode runs with `--isolation process`, and instead of
  `flower-superexec` (which starts a fresh `flwr-clientapp` for every message, importing torch, web3, Opacus
  and flwr each time: seconds per message) this process asks the SuperNode's Runtime API for tasks and forks
  each ClientApp from a server that imported all of that once (`multiprocessing`'s forkserver with preloaded
  modules). Each message still runs in a process of its own, started from the same pristine state, and talks
  to the SuperNode over the Runtime API exactly as `flwr-clientapp` does (Flower's own `run_clientapp`).
  The ClientApp is the node code installed on this machine (the preloaded `node.client_app`), not a copy
  from the FAB the coordinator submitted.
- **a shorter idle poll.** With no message waiting, flwr 1.41's SuperNode sleeps 3 s before asking the
  SuperLink again (`start_client_internal`, not configurable); here it asks every `--idle-poll-s` seconds.

Both are plain processes the hospital runs; the SuperLink, the protocol and the messages are unchanged.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import threading
import time
import types
from pathlib import Path

from federation.logs import setup_logging
# A restarted SuperNode takes its hospital's place again at once.
from node.supernode_rejoin import (
    HEARTBEAT_S,
    REJOIN_WAIT_S,
    ActivationRefused,
    node_ids_file,
    rejoin_after_a_crash,
    replace_stale_session,
)

log = logging.getLogger("twinledger.supernode")

INSTALLED_APP = "node.client_app:app"  # the ClientApp this hospital installed: the only one that runs here

# What every ClientApp process needs, imported once in the fork server instead of once per message.
PRELOAD = (
    "node.supernode",
    "flwr.supernode.runtime.run_clientapp",
    "node.client_app",
    "node.app_gate",
    "node.privacy",
    "node.trainer",
    "opacus",
    "torch._dynamo",  # imported by the first torch optimizer of a process: about 2 s
)
# Only imports: no torch operation may run in the fork server, or its OpenMP threads would hang the forked
# ClientApp processes (GNU OpenMP does not survive fork; seen here with a warm-up DP-SGD step).


PARENT_ENV = "TWINLEDGER_SUPERNODE_PID"  # set by the SuperNode before it starts its fork server


def die_with_parent(signum: int) -> bool:
    """Linux: this process gets `signum` when the thread that started it exits (prctl PR_SET_PDEATHSIG), so that
    a SuperNode killed outright leaves no fork server or ClientApp behind (issue 15 found its fork server
    orphaned). False where prctl is not there."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    pr_set_pdeathsig = 1
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _guard_fork_server() -> None:
    """In the fork server (which imports this module first, PRELOAD): die with the SuperNode that started it, and
    exit at once if it is gone already (it may have died before the prctl)."""
    supernode_pid = os.environ.get(PARENT_ENV)
    if supernode_pid and "multiprocessing.forkserver" in sys.modules and os.getpid() != int(supernode_pid):
        import signal

        die_with_parent(signal.SIGKILL)
        if os.getppid() != int(supernode_pid):
            os._exit(0)


_guard_fork_server()


def _shorten_idle_poll(idle_poll_s: float) -> bool:
    """Make flwr's SuperNode main loop sleep at most `idle_poll_s` where it would sleep 3 s (or 0.5 s)."""
    import flwr
    from flwr.supernode import start_client_internal as loop

    if not flwr.__version__.startswith("1.41.") or getattr(loop, "time", None) is not time:
        log.warning("flwr %s: the SuperNode keeps its own idle poll", flwr.__version__)
        return False
    clock = types.ModuleType("time")
    clock.__dict__.update(time.__dict__)
    clock.sleep = lambda seconds: time.sleep(min(seconds, idle_poll_s))
    loop.time = clock
    return True


def approved_app_digest(context) -> str:
    """The app digest the run's study recorded on chain (`Consortium.setStudyApp`), read with this node's
    settings (`--node-config node-home=...`) at the chain's latest block, so an operator who replaces or withdraws
    a study's app is obeyed from the next message on. Raises (the gate then refuses the message) when the run
    names no study, the node home or the chain cannot be read, or the study records no app. A chain that does
    not answer raises ApprovalUnknown: train and evaluate get the node's usual "chain unavailable" refusal, the
    identify query (no patient data) runs the installed app."""
    from contracts.ledger import ChainUnavailable, Ledger, LedgerError
    from federation import protocol
    from federation.ids import StudyId
    from node.app_gate import ApprovalUnknown, AppNotApproved
    from node.settings import NodeSettings

    home, study = context.node_config.get("node-home"), context.run_config.get("study-id")
    if not home or not study:
        raise AppNotApproved("the run names no study (run config study-id) or the node no home (node-home)")
    try:
        terms = Ledger.from_settings(NodeSettings.load(str(home))).study(StudyId.parse(study))
    except ChainUnavailable as exc:  # the same refusal the node gives for any round it cannot check on chain
        raise ApprovalUnknown(protocol.CHAIN_UNAVAILABLE, f"no data used: {exc}") from exc
    except LedgerError as exc:
        raise AppNotApproved(f"the app of study {study} cannot be read from chain: {exc}") from exc
    if terms.app_digest_hex is None:
        raise AppNotApproved(f"study {study} records no app digest on chain: nothing may run for it")
    return terms.app_digest_hex


def keep_refusal(message, context, code: int, reason: str) -> None:
    """Keep a train or evaluate message's refusal by the app gate in the node's store, as the ClientApp keeps its
    own, so hospital IT sees it (node console); other messages carry no round."""
    from federation import monitoring, protocol
    from federation.ids import StudyId
    from node.settings import NodeSettings
    from node.store import RoundRefusal, Store

    monitoring.refused(code)
    phase = str(message.metadata.message_type).split(".")[0]
    home = context.node_config.get("node-home")
    if phase not in ("train", "evaluate") or not home:
        return
    config = protocol.RoundConfig.from_record(message.content[protocol.ROUND_CONFIG])
    Store(NodeSettings.load(str(home)).resolved_database_url).record_refusal(RoundRefusal(
        study_id=str(StudyId(config.study_id)), round=config.round, phase=phase, code=code, reason=reason[:500]))


def _run_clientapp(runtime_api_address: str, token: str, supernode_pid: int, installed_digest: str) -> None:
    """One ClientApp task, in a process forked from the warm server: Flower's `flwr-clientapp` body behind the
    app gate (node/app_gate.py): only a FAB with the installed app's digest, and the installed ClientApp runs."""
    import signal

    from node import app_gate

    setup_logging()  # the fork server imported opacus, whose basicConfig would format this process's lines
    die_with_parent(signal.SIGTERM)  # the fork server; it dies with the SuperNode
    app_gate.run_gated_clientapp(
        runtime_api_address, token, installed_app=INSTALLED_APP, installed_digest=installed_digest,
        approved_digest=approved_app_digest, on_refusal=keep_refusal,
        parent_pid=supernode_pid,
    )


def _serve_tasks(runtime_api_address: str, *, task_poll_s: float, stop: threading.Event,
                 installed_digest: str, auth_secret: bytes | None = None) -> None:
    """What `flower-superexec` does for ClientApp tasks, launching each into a warm forked process.

    `auth_secret`: the SuperNode's `--superexec-auth-secret-file` content; task requests are signed with it
    as `flower-superexec` signs them (the SuperNode refuses unsigned ones then)."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    from node.supernode import _run_clientapp as run_task  # by its module's name, also when this file runs as __main__

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    os.environ[PARENT_ENV] = str(os.getpid())  # the fork server inherits it: _guard_fork_server
    # Start the fork server (and its imports) now, while the node is idle, not when the first message arrives.
    warm_up = context.Process(target=int)
    warm_up.start()
    warm_up.join()
    log.info("warm ClientApp server ready (preloaded %s)", ", ".join(PRELOAD))
    interceptors = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    if auth_secret:
        from flwr.supercore.interceptors.http.superexec_auth import SuperExecAuthHttpInterceptor

        interceptors.append(SuperExecAuthHttpInterceptor(
            master_secret=auth_secret, protected_methods=frozenset({"/flwr.proto.Runtime/AcquireTask"})))
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address, insecure=True, root_certificates=None,
        interceptors=interceptors, retry_invoker=make_simple_http_retry_invoker(),
    )
    while not stop.is_set():
        try:
            reply = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        except Exception as exc:  # noqa: BLE001 - the SuperNode is starting or stopping: try again
            log.debug("no task: %s", exc)
            stop.wait(1.0)
            continue
        if reply.HasField("task") and reply.token and not stop.is_set():
            try:
                context.Process(
                    target=run_task, args=(runtime_api_address, reply.token, os.getpid(), installed_digest),
                    name=f"clientapp-{reply.task.task_id}",
                ).start()
            except OSError as exc:  # the SuperNode is stopping; the task expires on its side
                log.warning("could not start the ClientApp for task %d: %s", reply.task.task_id, exc)
            continue  # another task may be waiting
        multiprocessing.active_children()  # reap finished ClientApp processes
        stop.wait(task_poll_s)


def default_app_dir() -> Path | None:
    """The packaged Flower app installed beside this node (coordinator/flower_app in the same distribution),
    located without importing the coordinator's code; None if it is not installed."""
    from federation.app_digest import packaged_app_dir

    return packaged_app_dir()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    parser.add_argument("--idle-poll-s", type=float, default=0.5,
                        help="seconds between the SuperNode's requests for messages when idle (flwr: 3)")
    parser.add_argument("--task-poll-s", type=float, default=0.1,
                        help="seconds between requests for ClientApp tasks to the local Runtime API (flwr: 1)")
    parser.add_argument("--port", type=int, default=9094, help="the SuperNode's Runtime API port")
    parser.add_argument("--installed-app-dir", type=Path, default=None,
                        help="the Flower app installed here (default: the packaged coordinator/flower_app); only "
                             "FABs with its digest run, and only the installed ClientApp")
    parser.add_argument("--superexec-auth-secret-file", type=Path, default=None,
                        help="shared secret the SuperNode requires on ClientApp task requests (passed on to it)")
    ours, flower_args = parser.parse_known_args(argv)
    if "--isolation" in flower_args:
        parser.error("--isolation is set by this launcher (process: ClientApps come from its warm server)")
    if any(arg.startswith("--ssl-") for arg in flower_args):
        parser.error("the warm ClientApps reach the Runtime API over plain HTTP on loopback: no --ssl-* options")
    _shorten_idle_poll(ours.idle_poll_s)  # imports Flower, whose coloured handler setup_logging takes off
    setup_logging()
    rejoin_after_a_crash(HEARTBEAT_S)
    if (remembered := node_ids_file(flower_args)) is not None:
        replace_stale_session(*remembered)
    app_dir = ours.installed_app_dir or default_app_dir()
    if app_dir is None:
        parser.error("no installed Flower app to gate on: give --installed-app-dir")
    from node.app_gate import installed_app_digest

    installed_digest = installed_app_digest(app_dir)
    log.info("app gate: only the installed app %s (digest %s…) runs", app_dir, installed_digest[:16])
    secret = None
    if ours.superexec_auth_secret_file is not None:
        secret = ours.superexec_auth_secret_file.read_bytes()
        flower_args += ["--superexec-auth-secret-file", str(ours.superexec_auth_secret_file)]
    stop = threading.Event()
    threading.Thread(
        target=_serve_tasks, args=(f"127.0.0.1:{ours.port}",),
        kwargs={"task_poll_s": ours.task_poll_s, "stop": stop, "installed_digest": installed_digest,
                "auth_secret": secret},
        name="warm-clientapps", daemon=True,
    ).start()
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv = ["flower-supernode", *flower_args, "--port", str(ours.port), "--isolation", "process"]
    try:
        flower_supernode()
    except ActivationRefused:
        stop.set()
        log.warning("the SuperLink still holds this node's session from before it stopped: starting again in %g s",
                    REJOIN_WAIT_S)
        time.sleep(REJOIN_WAIT_S)
        # A fresh process: Flower's servers, threads and exit handlers of this one go (its fork server with them).
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    finally:
        stop.set()


def superexec_secret(node_home: Path) -> Path:
    """`<node home>/keys/superexec.secret` (0600, made on first use): the warm executor signs its task requests
    with it (`--superexec-auth-secret-file`), so no other local process can take the node's ClientApp tasks."""
    import secrets

    from federation.files import write_secret

    path = node_home / "keys" / "superexec.secret"
    if not path.exists():
        write_secret(path, secrets.token_hex(32).encode())
    return path


def security_options(node_home: Path, *, root_certificates: Path, warm: bool,
                     installed_app_dir: Path | None = None) -> list[str]:
    """The SuperNode's options for a TLS link with node authentication: trust the consortium CA, sign with the
    node home's key (generated if absent); the warm SuperNode also gets its SuperExec secret and the app to gate on."""
    from node.node_keys import ensure_node_keys

    options = ["--root-certificates", str(root_certificates),
               "--auth-supernode-private-key", str(ensure_node_keys(node_home).private_key)]
    if warm:
        options += ["--superexec-auth-secret-file", str(superexec_secret(node_home))]
        if installed_app_dir is not None:
            options += ["--installed-app-dir", str(installed_app_dir)]
    return options


def command(*, warm: bool = True) -> list[str]:
    """How to start a hospital's SuperNode: this launcher (`warm`), else Flower's stock `flower-supernode`."""
    # -c rather than -m: the fork server then has no __main__ module to re-run in every ClientApp process.
    if warm:
        return [sys.executable, "-c", "from node.supernode import main; main()"]
    return [str(Path(sys.executable).parent / "flower-supernode")]


def environment(flwr_home: Path) -> dict[str, str]:
    """This process's environment for the SuperNode: its FLWR_HOME, no telemetry, no update check."""
    env = dict(os.environ)
    env.update({"FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                "PYTHONUNBUFFERED": "1"})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


if __name__ == "__main__":
    main()
