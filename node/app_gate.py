"""Only approved code runs at a hospital: a ClientApp task body that checks the run's app before anything runs.

Flower 1.41's own task body (`flwr.supernode.runtime.run_clientapp.run_clientapp`) installs the FAB the
coordinator submitted and loads the ClientApp *that FAB names*, from the FAB's own directory: whoever can
submit a run executes code at every hospital (and Flower's `--trusted-entities` check needs a licensed
SuperLink). `run_gated_clientapp` is the same task body with two changes:

1. before anything else it hashes the FAB it was handed (`sha256(fab.content)`, the value Flower calls
   `fab_hash`; the SuperNode itself never re-hashes it) and requires it to equal both the digest the study
   approved (on chain, looked up by the caller from the run config) and the digest of the app installed at this
   hospital (`installed_app_digest`, computed once at start-up); otherwise it replies with an error
   (`APP_NOT_APPROVED`) and logs, running nothing of the FAB;
2. it never installs or imports the FAB: it calls the ClientApp installed here (`installed_app`, an import
   reference such as "node.client_app:app").

The hospital's executor (the warm SuperNode, `--isolation process`) runs this instead of `run_clientapp`
for every task it acquires.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path

from federation.app_digest import digest_of, fab_digest

log = logging.getLogger("twinledger.app_gate")

APP_NOT_APPROVED = 4010  # error code of the refusal reply (to join federation.protocol's codes after issue 10)


class AppNotApproved(Exception):
    """The run's app is not the one the study approved and this hospital installed."""


class ApprovalUnknown(Exception):
    """The study's approved app cannot be learnt now (e.g. its chain does not answer). A query message (which reads
    no patient data: the node's identify) then runs if its FAB is the installed app; train and evaluate are refused
    with this `code` and `reason` (the node's usual refusal, e.g. chain unavailable)."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


def app_digest(fab_content: bytes) -> str:
    """The FAB's digest as Flower computes it (`hashlib.sha256(fab_bytes).hexdigest()`, 64 hex digits)."""
    return digest_of(fab_content)


def installed_app_digest(app_dir: Path) -> str:
    """Digest of the FAB `flwr build` makes from the app installed at `app_dir` (deterministic: fixed zip dates).

    Requires: `app_dir` holds the Flower app's pyproject.toml. Returns 64 hex digits.
    """
    return fab_digest(app_dir)


def check_app(fab_content: bytes, *, approved: str, installed: str) -> str:
    """Return the FAB's digest if it equals the study's `approved` digest and the `installed` one.

    Digests are hex, with or without "0x" (on-chain bytes32 read as hex). Raises AppNotApproved otherwise.
    """
    digest = app_digest(fab_content)
    want = {approved.lower().removeprefix("0x"), installed.lower().removeprefix("0x")}
    if want != {digest}:
        raise AppNotApproved(
            f"app {digest[:16]}… is not the approved {approved[:18]}… / installed {installed[:16]}… app"
        )
    return digest


def _approved(approved_digest: Callable[[object], str], message, context, installed_digest: str) -> str:
    """The study's approved digest; for a query whose study's approval cannot be learnt now, the installed one."""
    try:
        return approved_digest(context)
    except ApprovalUnknown as exc:
        if not str(message.metadata.message_type).startswith("query"):
            raise
        log.warning("%s: the installed app answers this query (it reads no patient data)", exc.reason)
        return installed_digest


def refusal_of(exc: Exception) -> tuple[int, str]:
    """The error code and reason a refusal is answered with: the exception's own (`code`, `reason`) when it
    carries them (the node's Refusal, e.g. chain unavailable), else APP_NOT_APPROVED."""
    code, reason = getattr(exc, "code", None), getattr(exc, "reason", None)
    if isinstance(code, int) and isinstance(reason, str):
        return code, reason
    return APP_NOT_APPROVED, f"app not approved: {exc}"


def load_installed_app(reference: str):  # -> flwr.clientapp.ClientApp
    """Import the ClientApp installed at this hospital from "module:attribute" (never from a FAB)."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute or "app")


def run_gated_clientapp(runtime_api_address: str, token: str, *, installed_app: str, installed_digest: str,
                        approved_digest: Callable[[object], str], insecure: bool = True,
                        certificates: bytes | None = None, parent_pid: int | None = None,
                        on_refusal: Callable[[object, object, int, str], None] | None = None) -> bool:
    """Run one ClientApp task of the SuperNode at `runtime_api_address` (its Runtime API) under the app gate.

    Requires: `token` from the SuperNode's AcquireTask; `approved_digest(context)` returns the study's approved
    app digest for the run (e.g. from chain, by `context.run_config["study-id"]`) and may raise to refuse (an
    exception with an int `code` and a `reason`, like the node's Refusal, is answered with that code, e.g. chain
    unavailable; any other with APP_NOT_APPROVED). `on_refusal(message, context, code, reason)`, when given, is
    told of each refusal (the node keeps it for hospital IT).
    Pulls the task input, refuses (error reply, nothing of the FAB runs) unless `check_app` passes, else calls
    `load_installed_app(installed_app)(message, context)`; pushes the reply and the task's final status.
    Like Flower's body it sends the task's heartbeat while it runs and, given `parent_pid` (the SuperNode),
    stops when that process dies. Returns whether the app ran.
    """
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.app_utils import start_parent_process_monitor
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address, insecure=insecure, root_certificates=certificates,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                      RuntimeTokenHttpInterceptor(token)],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    if parent_pid is not None:
        start_parent_process_monitor(parent_pid)
    context, reply, ran = None, None, False
    status, details = SubStatus.FAILED, "refused"
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    try:
        message, context, run, fab = pull_task_input(client)
        try:
            digest = check_app(fab.content, approved=_approved(approved_digest, message, context, installed_digest),
                               installed=installed_digest)
        except Exception as exc:  # noqa: BLE001 - any doubt about the app is a refusal
            code, reason = refusal_of(exc)
            log.error("run %s refused: %s", run.run_id, reason)
            reply = Message(Error(code=code, reason=reason), reply_to=message)
            if on_refusal is not None:
                try:
                    on_refusal(message, context, code, reason)
                except Exception as record_exc:  # noqa: BLE001 - keeping it must not turn a refusal into a crash
                    log.warning("could not keep the refusal: %s", record_exc)
        else:
            log.info("run %s: app %s… approved; running the installed %s", run.run_id, digest[:16], installed_app)
            try:
                reply = load_installed_app(installed_app)(message=message, context=context)
                status, details, ran = SubStatus.COMPLETED, "", True
            except Exception as exc:  # noqa: BLE001 - Flower replies with an error too
                log.exception("the installed ClientApp raised")
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=repr(exc)),
                                reply_to=message)
        if context is not None:
            push_message(client, reply, context)
    finally:
        push_task_output(client=client, context=context, sub_status=status, details=details)
        if heartbeat.is_running:
            heartbeat.stop()
        client.close()
    return ran


def serve_gated_tasks(runtime_api_address: str, stop, *, poll_s: float = 0.2, **gate) -> None:
    """What `flower-superexec` does for ClientApp tasks, with every task run by `run_gated_clientapp(**gate)`.

    Requires: the SuperNode runs with `--isolation process` and its Runtime API at `runtime_api_address`;
    `stop` is a `threading.Event`. Runs each task in a thread of this process until `stop` is set (the warm
    SuperNode forks a process per task instead: use `run_gated_clientapp` as that process's body).
    """
    import threading

    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    while not stop.is_set():
        try:
            acquired = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        except Exception as exc:  # noqa: BLE001 - the SuperNode is starting or stopping
            log.debug("no task: %s", exc)
            stop.wait(1.0)
            continue
        if acquired.HasField("task") and acquired.token:
            threading.Thread(target=run_gated_clientapp, args=(runtime_api_address, acquired.token), kwargs=gate,
                             name=f"gated-task-{acquired.task.task_id}", daemon=True).start()
            continue
        stop.wait(poll_s)
    client.close()
