"""The restarted SuperNode's memory of its node id (node/supernode_rejoin.py): where it is kept, and that a
refusal other than "still online" is never answered with a deactivation. The rejoin itself runs on the real
processes in test_federation_faults.py."""

from __future__ import annotations

import httpx

from node import supernode_rejoin as rejoin


def test_the_node_id_is_kept_beside_the_node_key_by_superlink(tmp_path):
    key = tmp_path / "keys" / "node.key"
    key.parent.mkdir()
    path, superlink = rejoin.node_ids_file(["--superlink", "link.example:8000", "--auth-supernode-private-key",
                                            str(key), "--root-certificates", "ca.pem"])
    assert path == key.parent / rejoin.NODE_IDS_FILE and superlink == "link.example:8000"
    assert rejoin.remembered_node_id(path, superlink) is None
    rejoin.remember_node_id(path, superlink, 2**63 + 5)  # Flower's node ids are unsigned 64-bit
    rejoin.remember_node_id(path, "other:8000", 7)
    assert rejoin.remembered_node_id(path, superlink) == 2**63 + 5
    assert rejoin.remembered_node_id(path, "other:8000") == 7
    path.write_text("not json")
    assert rejoin.remembered_node_id(path, superlink) is None


def test_a_node_without_a_key_remembers_nothing():
    assert rejoin.node_ids_file(["--insecure", "--superlink", "127.0.0.1:8000"]) is None


def test_only_the_still_online_refusal_counts():
    from flwr.supercore.error import ApiErrorCode, FlowerError

    request = httpx.Request("POST", "https://link/v1/fleet/activate-node")

    def refused(code):
        payload = FlowerError(code, "internal").to_json("public")
        return httpx.HTTPStatusError("refused", request=request, response=httpx.Response(
            400, request=request, json=payload))

    assert rejoin.refusal_code(refused(ApiErrorCode.FLEET_NODE_ACTIVATION_FAILED)) == rejoin.ACTIVATION_REFUSED
    assert rejoin.refusal_code(refused(ApiErrorCode.FLEET_INVALID_HEARTBEAT_INTERVAL)) != rejoin.ACTIVATION_REFUSED
    assert rejoin.refusal_code(ValueError("no")) is None
