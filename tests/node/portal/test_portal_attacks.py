"""Attacks on the patient portal that issue 12 found: a huge unauthenticated login body (#5), wrong logins and
an undeclared proxy stopping a patient from withdrawing (#3), a password change leaving other sessions alive
(#11)."""

from __future__ import annotations

import pytest

from node.portal import accounts
from node.portal.models import LoginFailure
from tests.federation.test_web_attacks import MiB, Attacker, _post
from tests.node.portal.test_portal import PASSWORD, Portal


@pytest.fixture
def portal(chain, tmp_path):
    return Portal(chain, tmp_path / "node")


def test_a_huge_unauthenticated_login_is_refused_with_413_before_it_is_read(portal):
    attacker = Attacker(200 * MiB)
    status, _ = _post(portal.app, "/login", attacker, content_type="application/x-www-form-urlencoded",
                      content_length=None)
    assert status == 413
    assert attacker.pulled <= 16 * 1024 + 64 * 1024
    attacker = Attacker(200 * MiB)
    status, body = _post(portal.app, "/api/session", attacker, content_type="application/json", content_length=10)
    assert status == 413 and body["error"]["status"] == 413
    assert attacker.pulled <= 256 * 1024 + 64 * 1024
