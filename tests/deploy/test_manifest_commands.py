"""The commands the compose file, the Kubernetes manifests and the images run would start (issue 14 item 2).

tests/deploy/test_manifests.py checks that each `twinledger ...` command parses; these tests go one step
further for the services whose command the CLI can refuse after parsing: the web apps are run through the real
CLI function up to the point where uvicorn would start (their serving checks: a certificate, or plain HTTP asked
for explicitly), and the chain image is checked to run the launcher that keeps its state file whole.
"""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from tests.deploy.test_manifests import COMPOSE, DOCKER, ROOT, _compose, _deployment, _manifests, _stages

# The web apps' commands: (words after `twinledger`, the home's config file, the module whose create_app serves).
WEB_APPS = {
    ("portal", "serve"): ("node.toml", "node.portal.app"),
    ("node", "console"): ("node.toml", "node.console.app"),
    ("console", "serve"): ("coordinator.toml", "coordinator.console.app"),
}
WEB_SETTINGS_ENV = ("TWINLEDGER_PORTAL_", "TWINLEDGER_NODE_CONSOLE_", "TWINLEDGER_CONSOLE_")


def _compose_web_apps() -> list[tuple[str, list[str], dict, str]]:
    """(where, argv after `twinledger`, environment, the TLS proxy's nginx configuration) of each compose web app."""
    services = _compose()["services"]
    apps = []
    for name, service in services.items():
        command = service.get("command") or []
        if command[:1] != ["twinledger"] or tuple(command[1:3]) not in WEB_APPS:
            continue
        namespace = service.get("network_mode", f"service:{name}")
        proxies = [proxy for proxy in services.values() if proxy.get("network_mode") == namespace
                   and str(proxy.get("image", "")).startswith("nginxinc/")]
        assert len(proxies) == 1, f"compose {name}: one TLS proxy shares its network namespace"
        conf = next(volume.split(":")[0] for volume in proxies[0]["volumes"]
                    if isinstance(volume, str) and volume.endswith("/etc/nginx/conf.d/default.conf:ro"))
        apps.append((f"compose {name}", command[1:], service.get("environment", {}),
                     (COMPOSE.parent / conf).read_text()))
    return apps


def _k8s_web_apps() -> list[tuple[str, list[str], dict, str]]:
    config_maps = {doc["metadata"]["name"]: doc["data"] for _, doc in _manifests() if doc["kind"] == "ConfigMap"}
    pod = _deployment()["spec"]["template"]["spec"]
    apps = []
    for container in pod["containers"]:
        args = container.get("args") or []
        if args[:1] != ["twinledger"] or tuple(args[1:3]) not in WEB_APPS:
            continue
        environment = {}
        for source in container.get("envFrom", []):
            environment.update(config_maps[source["configMapRef"]["name"]])
        environment.update({item["name"]: item["value"] for item in container.get("env", []) if "value" in item})
        apps.append((f"k8s {container['name']}", args[1:], environment,
                     config_maps["twinledger-node-tls-proxy"]["default.conf"]))
    return apps


WEB_APP_COMMANDS = _compose_web_apps() + _k8s_web_apps()


def test_every_portal_and_console_of_the_manifests_is_checked():
    names = sorted(where for where, *_ in WEB_APP_COMMANDS)
    assert names == ["compose hospital-a-console", "compose hospital-a-portal", "compose hospital-b-console",
                     "compose hospital-b-portal", "compose operator-console", "k8s console", "k8s portal"]


@pytest.mark.parametrize("where, argv, environment, proxy_conf", WEB_APP_COMMANDS,
                         ids=[where for where, *_ in WEB_APP_COMMANDS])
def test_each_web_app_command_passes_the_clis_serving_checks_and_serves_what_its_tls_proxy_dials(
        where, argv, environment, proxy_conf, tmp_path, monkeypatch):
    """The real `twinledger ...` function runs on a scratch home until uvicorn would start: a command that the
    CLI refuses (no certificate and no --insecure-http) fails here, as it would fail in the container."""
    import importlib

    from deploy.cli import build_parser
    from federation.web import serving

    config_name, app_module = WEB_APPS[tuple(argv[:2])]
    (tmp_path / config_name).write_text('hospital = "hospital-a"\n' if config_name == "node.toml" else "")
    argv = list(argv)
    argv[argv.index("--home") + 1] = str(tmp_path)
    for name in [name for name in list(__import__("os").environ) if name.startswith("TWINLEDGER_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        if name.startswith(WEB_SETTINGS_ENV):
            monkeypatch.setenv(name, str(value))
    served = {}

    def fake_serve(app, settings, *, host, port, insecure_http=False):
        served.update(settings=settings, host=host, port=port,
                      tls=serving.uvicorn_options(settings, insecure_http=insecure_http))

    monkeypatch.setattr(serving, "serve", fake_serve)
    monkeypatch.setattr(importlib.import_module(app_module), "create_app", lambda settings: object())
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except serving.InsecureServing as refused:
        pytest.fail(f"{where}: `twinledger {' '.join(argv)}` would not start: {refused}")
    # The proxy shares the app's network namespace and dials it on loopback, in plain HTTP when the app serves it.
    assert served["host"] == "127.0.0.1", f"{where}: on its loopback only, behind the proxy"
    scheme = "https" if served["tls"] else "http"
    assert f"proxy_pass {scheme}://127.0.0.1:{served['port']};" in proxy_conf, where
    # Behind the proxy every client arrives from 127.0.0.1: the per-client login limits need its X-Forwarded-For.
    assert "127.0.0.1" in served["settings"].trusted_proxies, where


def _chain_commands() -> dict[str, list[str]]:
    cmd = next(line for line in _stages(DOCKER / "chain.Dockerfile")[-1] if line.startswith("CMD"))
    return {"chain.Dockerfile CMD": json.loads(cmd[len("CMD"):]),
            "compose chain": _compose()["services"]["chain"]["command"]}


def test_the_chain_image_runs_the_launcher_whose_keeper_keeps_the_state_file_whole():
    """Bare anvil dumps its state in place: a kill mid-dump leaves state.json cut short. `twinledger chain start`
    restores the keeper's last complete copy (contracts/devchain/state.py) before anvil loads it."""
    from deploy.cli import build_parser

    documented = re.search(r"`--state-interval-s` seconds \(default (\d+)\)", (ROOT / "docs" / "operations.md").read_text())
    assert documented, "docs/operations.md states the launcher's dump interval"
    parser = build_parser()
    for where, command in _chain_commands().items():
        assert command[:3] == ["twinledger", "chain", "start"], f"{where}: the launcher, not bare anvil"
        args = parser.parse_args(command[1:])
        assert args.state.startswith("/var/lib/anvil/") and not args.ephemeral, where
        assert args.state_interval_s == int(documented.group(1)) == parser.parse_args(["chain", "start"]).state_interval_s
        assert args.host == "127.0.0.1" and args.tls_ca_dir is None, f"{where}: chain-tls faces the network"
    assert "chain-state:/var/lib/anvil" in _compose()["services"]["chain"]["volumes"]


def test_the_chain_image_has_the_launcher_and_anvil_on_its_path():
    final = _stages(DOCKER / "chain.Dockerfile")[-1]
    text = "\n".join(final)
    assert re.search(r"COPY --from=\S+ /opt/twinledger /opt/twinledger", text), "the launcher's virtual environment"
    assert re.search(r"COPY --from=\S+ \S*/anvil-linux-amd64/bin/anvil /usr/local/bin/anvil", text), \
        "anvil where contracts.devchain.anvil.anvil_binary finds it (the PATH)"
    assert not any(line.startswith("ENTRYPOINT") and "anvil" in line for line in final)


def test_the_coordinator_image_deploys_the_shipped_contracts_without_a_compiler():
    """`twinledger chain deploy` reads contracts/compiled.json (tests/contracts/test_compiled_artifacts.py): the
    image needs the wheel's package data, not Node.js, solc-js or the solc shim."""
    text = (DOCKER / "coordinator.Dockerfile").read_text()
    code = "\n".join(line for stage in _stages(DOCKER / "coordinator.Dockerfile") for line in stage)
    for needless in ("nodejs", "npm", "solc", "compile_contracts", "node_modules", "NODE_IMAGE"):
        assert needless not in code, needless
    assert "pip install --no-cache-dir /wheels/twinledger-*.whl" in text
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["contracts"]
    assert {"compiled.json", "src/*.sol"} <= set(shipped), "the artifacts and the sources their digest is checked on"
