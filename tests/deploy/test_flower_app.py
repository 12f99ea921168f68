"""The packaged Flower app (coordinator/flower_app): what `flwr run` submits, found without the repository."""

import tomllib
import zipfile
from io import BytesIO

from flwr.cli.build import build_fab_from_disk
from flwr.cli.config_utils import load_and_validate

from coordinator.processes import FLOWER_APP_DIR
from federation.defaults import TRAINING


def _app_config() -> dict:
    return tomllib.loads((FLOWER_APP_DIR / "pyproject.toml").read_text())["tool"]["flwr"]["app"]


def test_run_config_training_values_equal_the_training_defaults():
    config = _app_config()["config"]
    for key, value in TRAINING.as_run_config().items():
        assert key in config, f"{key} missing from the Flower app's run config: a run could not override it"
        assert config[key] == value and type(config[key]) is type(value), (key, config[key], value)


def test_flower_validates_the_app_and_finds_its_components_in_the_installed_packages():
    config, warnings = load_and_validate(FLOWER_APP_DIR / "pyproject.toml", check_module=True)
    assert warnings == []
    assert config["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "coordinator.server_app:app", "clientapp": "node.client_app:app"}


def test_the_fab_holds_no_python_file_to_shadow_the_installed_code():
    with zipfile.ZipFile(BytesIO(build_fab_from_disk(FLOWER_APP_DIR))) as fab:
        assert sorted(fab.namelist()) == [".info/CONTENT", "pyproject.toml"]
