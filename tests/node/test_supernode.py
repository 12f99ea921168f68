"""The warm SuperNode launcher (node/supernode.py), one of the overhead cuts of `twinledger bench overhead`."""

import time

import pytest

from deploy import processes
from node import supernode


def test_idle_poll_is_shortened_only_in_flowers_main_loop(monkeypatch):
    from flwr.supernode import start_client_internal as loop

    monkeypatch.setattr(loop, "time", time)
    assert supernode._shorten_idle_poll(0.01)
    started = time.perf_counter()
    loop.time.sleep(3)
    assert time.perf_counter() - started < 1.0
    assert loop.time.monotonic is time.monotonic
    assert time.sleep is not loop.time.sleep  # the time module itself is untouched


@pytest.mark.parametrize("warm", [True, False])
def test_supernode_command(warm):
    command = processes.supernode_command(warm=warm)
    if warm:
        assert command[-1] == "from node.supernode import main; main()"
    else:
        assert command[0].endswith("flower-supernode")


def test_launcher_sets_the_isolation_itself():
    with pytest.raises(SystemExit):
        supernode.main(["--insecure", "--isolation", "subprocess"])
