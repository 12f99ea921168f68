"""The one settings mechanism (federation.settings) as each component sees it: file, environment, refusals."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from coordinator.console.settings import ConsoleSettings as OperatorConsoleSettings
from coordinator.settings import CoordinatorSettings
from federation.settings import ComponentSettings, SettingsError
from node.console.settings import ConsoleSettings as NodeConsoleSettings
from node.portal.settings import PortalSettings
from node.settings import NodeSettings

ALL = (NodeSettings, CoordinatorSettings, PortalSettings, NodeConsoleSettings, OperatorConsoleSettings)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("TWINLEDGER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def node_home(tmp_path) -> Path:
    NodeSettings(home=tmp_path, hospital="cleveland", rpc_url="http://chain.example:8545").save()
    return tmp_path


@pytest.fixture
def coordinator_home(tmp_path) -> Path:
    CoordinatorSettings(home=tmp_path, deployment_file=tmp_path / "deployment.json").save()
    return tmp_path


def test_a_saved_node_file_loads_back_the_same_settings(tmp_path):
    saved = NodeSettings(home=tmp_path.resolve(), hospital="cleveland", rpc_url="http://chain.example:8545",
                         deployment_file=tmp_path / "deployment.json", chain_timeout_s=4.5,
                         allow_non_private_studies=True)
    path = saved.save()
    assert path == tmp_path / "node.toml"
    assert 'rpc-url = "http://chain.example:8545"' in path.read_text()
    assert NodeSettings.load(tmp_path) == saved


def test_a_saved_coordinator_file_loads_back_the_same_settings(tmp_path):
    saved = CoordinatorSettings(home=tmp_path.resolve(), min_nodes=3, round_timeout_s=600)
    saved.save()
    loaded = CoordinatorSettings.load(tmp_path)
    assert loaded == saved and loaded.deployment_file is None
    assert loaded.key_file == tmp_path.resolve() / "keys" / "coordinator.key"


def test_hyphenated_keys_in_the_file_set_the_fields(node_home):
    (node_home / "node.toml").write_text('hospital = "basel"\nmax-pinned-block-age-s = 60\n'
                                         'database-url = "sqlite:////tmp/x.db"\n')
    settings = NodeSettings.load(node_home)
    assert (settings.hospital, settings.max_pinned_block_age_s) == ("basel", 60.0)
    assert settings.resolved_database_url == "sqlite:////tmp/x.db"
    assert settings.rpc_url == "http://127.0.0.1:8545"  # the default


def test_the_shared_chain_variables_override_every_component_file(node_home, coordinator_home, monkeypatch):
    monkeypatch.setenv("TWINLEDGER_RPC_URL", "http://other.example:8545")
    monkeypatch.setenv("TWINLEDGER_CHAIN_TIMEOUT_S", "2.5")
    monkeypatch.setenv("TWINLEDGER_DEPLOYMENT_FILE", "/srv/deployment.json")
    for settings in (NodeSettings.load(node_home), CoordinatorSettings.load(coordinator_home),
                     PortalSettings.load(node_home).node, OperatorConsoleSettings.load(coordinator_home).coordinator):
        assert settings.rpc_url == "http://other.example:8545"
        assert settings.chain_timeout_s == 2.5
        assert settings.deployment_file == Path("/srv/deployment.json")


def test_an_app_variable_overrides_its_own_file_only(node_home, monkeypatch):
    (node_home / "portal.toml").write_text("cookie-secure = true\nsession-ttl-s = 100\n")
    monkeypatch.setenv("TWINLEDGER_PORTAL_COOKIE_SECURE", "false")
    monkeypatch.setenv("TWINLEDGER_PORTAL_SESSION_TTL_S", "200")
    portal = PortalSettings.load(node_home)
    assert (portal.cookie_secure, portal.session_ttl_s) == (False, 200)
    assert NodeConsoleSettings.load(node_home).cookie_secure is True


def test_the_command_line_superlink_wins_over_the_environment(node_home, monkeypatch):
    monkeypatch.setenv("TWINLEDGER_NODE_CONSOLE_SUPERLINK", "10.0.0.1:8000")
    assert NodeConsoleSettings.load(node_home).superlink == "10.0.0.1:8000"
    assert NodeConsoleSettings.load(node_home, superlink="10.0.0.2:8000").superlink == "10.0.0.2:8000"


def test_former_variable_names_still_work_after_the_new_ones(node_home, coordinator_home, monkeypatch):
    monkeypatch.setenv("TWINLEDGER_SUPERLINK", "10.0.0.1:8000")
    monkeypatch.setenv("TWINLEDGER_CONSOLE_OPERATOR_KEY", str(coordinator_home / "op.key"))
    assert NodeConsoleSettings.load(node_home).superlink == "10.0.0.1:8000"
    assert OperatorConsoleSettings.load(coordinator_home).operator_key == (coordinator_home / "op.key").resolve()
    monkeypatch.setenv("TWINLEDGER_NODE_CONSOLE_SUPERLINK", "10.0.0.9:8000")
    assert NodeConsoleSettings.load(node_home).superlink == "10.0.0.9:8000"


def test_keyword_construction_reads_neither_file_nor_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TWINLEDGER_RPC_URL", "http://other.example:8545")
    (tmp_path / "node.toml").write_text('hospital = "basel"\nchain-timeout-s = 1.0\n')
    settings = NodeSettings(home=tmp_path, hospital="cleveland")
    assert (settings.rpc_url, settings.chain_timeout_s) == ("http://127.0.0.1:8545", 10.0)


def test_replace_builds_a_validated_copy(node_home):
    portal = PortalSettings.load(node_home)
    faster = portal.replace(relay_wait_s=0.2)
    assert faster.relay_wait_s == 0.2 and faster.node == portal.node
    with pytest.raises(ValueError):
        portal.replace(explorer_block_url="ftp://nowhere")


def test_an_unknown_key_is_refused_naming_the_file_and_the_key(node_home):
    (node_home / "console.toml").write_text("superlink = \"127.0.0.1:8000\"\nsuperlnk = \"typo\"\n")
    with pytest.raises(SettingsError, match=r"console\.toml: unknown setting\(s\) superlnk; known: .*superlink"):
        NodeConsoleSettings.load(node_home)


def test_a_fixed_field_is_not_a_key(node_home):
    (node_home / "portal.toml").write_text('cookie-name = "other"\n')
    with pytest.raises(SettingsError, match="unknown setting.*cookie-name"):
        PortalSettings.load(node_home)


@pytest.mark.parametrize("value", ['"maybe"', "2", '"sometimes"'])
def test_a_bad_boolean_in_the_file_is_refused_naming_the_key(node_home, value):
    (node_home / "portal.toml").write_text(f"cookie-secure = {value}\n")
    with pytest.raises(SettingsError, match=r"portal\.toml: cookie-secure: Input should be a valid boolean"):
        PortalSettings.load(node_home)


def test_a_bad_boolean_in_the_environment_is_refused_naming_the_variable(node_home, monkeypatch):
    monkeypatch.setenv("TWINLEDGER_NODE_ALLOW_NON_PRIVATE_STUDIES", "maybe")
    with pytest.raises(SettingsError, match="TWINLEDGER_NODE_ALLOW_NON_PRIVATE_STUDIES .*allow-non-private-studies"
                                            ".*valid boolean.*'maybe'"):
        NodeSettings.load(node_home)


@pytest.mark.parametrize(("text", "expected"), [("yes", True), ("0", False), ("off", False), ("TRUE", True)])
def test_booleans_are_parsed_by_pydantic_everywhere(node_home, monkeypatch, text, expected):
    monkeypatch.setenv("TWINLEDGER_NODE_CONSOLE_COOKIE_SECURE", text)
    assert NodeConsoleSettings.load(node_home).cookie_secure is expected


def test_a_missing_node_file_says_how_to_create_it(tmp_path):
    with pytest.raises(SettingsError, match=r"no node configuration at .*node\.toml: run 'twinledger node init'"):
        NodeSettings.load(tmp_path / "nowhere")
    with pytest.raises(SettingsError, match="no node configuration"):
        PortalSettings.load(tmp_path / "nowhere")


def test_a_missing_coordinator_file_says_how_to_create_it(tmp_path):
    with pytest.raises(SettingsError, match=r"no coordinator configuration at .*coordinator\.toml"):
        OperatorConsoleSettings.load(tmp_path)


def test_the_app_files_are_optional(node_home, coordinator_home):
    assert PortalSettings.load(node_home).session_ttl_s == 3600
    assert NodeConsoleSettings.load(node_home).superlink == ""
    assert OperatorConsoleSettings.load(coordinator_home).superlink == "127.0.0.1:8000"


def test_a_missing_required_key_and_invalid_toml_are_refused(node_home):
    (node_home / "node.toml").write_text('rpc-url = "http://x"\n')
    with pytest.raises(SettingsError, match=r"node\.toml: hospital: Field required"):
        NodeSettings.load(node_home)
    (node_home / "node.toml").write_text("hospital = [\n")
    with pytest.raises(SettingsError, match=r"node\.toml is not valid TOML"):
        NodeSettings.load(node_home)


def test_values_are_checked_where_they_are_read(node_home, coordinator_home, monkeypatch):
    (node_home / "portal.toml").write_text('explorer-block-url = "https://explorer.example/block"\n')
    with pytest.raises(SettingsError, match="explorer-block-url: must be an http.s. address containing {block}"):
        PortalSettings.load(node_home)
    monkeypatch.setenv("TWINLEDGER_CONSOLE_SUPERLINK", "no-port")
    with pytest.raises(SettingsError, match="TWINLEDGER_CONSOLE_SUPERLINK .*HOST:PORT"):
        OperatorConsoleSettings.load(coordinator_home)
    monkeypatch.setenv("TWINLEDGER_PORTAL_HOSPITAL_NAMES", "{not json")
    (node_home / "portal.toml").unlink()
    with pytest.raises(SettingsError, match="TWINLEDGER_PORTAL_HOSPITAL_NAMES must hold a JSON object"):
        PortalSettings.load(node_home)


def test_hospital_names_come_from_a_table_with_accounts_in_lower_case(node_home):
    (node_home / "portal.toml").write_text('hospital-names = { "0xAbC" = "Hungary" }\n')
    assert PortalSettings.load(node_home).hospital_names == {"0xabc": "Hungary"}


def test_the_configuration_page_lists_every_key_and_variable():
    text = DOCS.read_text()
    for cls in ALL:
        assert f"`{cls.config_name}`" in text, cls.config_name
        for key, field in cls.keys().items():
            assert re.search(rf"`{re.escape(key)}`", text), (cls.__name__, key)
            for variable in cls.env_names(field):
                assert f"`{variable}`" in text, (cls.__name__, variable)


def test_each_settings_module_names_its_file_keys_and_variables():
    for cls in ALL:
        doc = sys.modules[cls.__module__].__doc__
        assert cls.config_name in doc, cls.__module__
        for key, field in cls.keys().items():
            assert re.search(rf"\b{re.escape(key)}\b", doc) and cls.env_names(field)[0] in doc, (cls.__module__, key)


def test_every_component_uses_the_one_mechanism():
    assert all(issubclass(cls, ComponentSettings) for cls in ALL)
    assert len({cls.model_config["env_prefix"] for cls in ALL}) == len(ALL)


def test_an_app_file_written_by_save_to_loads_back(node_home):
    portal = PortalSettings.load(node_home).model_copy(update={"hospital_names": {"0xab": "Hungary"},
                                                               "explorer_block_url": "https://x.example/b/{block}"})
    assert portal.save_to(node_home) == node_home / "portal.toml"
    assert PortalSettings.load(node_home) == portal
    NodeConsoleSettings.load(node_home).save_to(node_home)
    assert NodeConsoleSettings.load(node_home).superlink == ""
