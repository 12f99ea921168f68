"""One settings mechanism for every TwinLedger component, built on pydantic-settings.

A component's settings live in one TOML file in its home (`node.toml`, `coordinator.toml`, `portal.toml`,
`console.toml`) with hyphenated keys (`rpc-url = "..."`), and environment variables override the file:

- `TWINLEDGER_<FIELD>` for the chain fields every component shares: TWINLEDGER_RPC_URL,
  TWINLEDGER_DEPLOYMENT_FILE, TWINLEDGER_CHAIN_TIMEOUT_S, TWINLEDGER_DATABASE_URL;
- `TWINLEDGER_<APP>_<FIELD>` for a component's own fields, `<APP>` being the class's `env_prefix`
  (NODE, COORDINATOR, PORTAL, NODE_CONSOLE for the hospital IT console, CONSOLE for the operator console).

A key the class does not know is refused, and a bad value (`cookie-secure = "maybe"`) is refused naming the
file or the variable and the key: every problem is a `SettingsError`. Booleans are parsed by pydantic
(true/false, yes/no, on/off, 1/0). docs/configuration.md has every file, key, default and variable.

Constructing a class by keyword (`NodeSettings(home=..., hospital=...)`) reads neither the file nor the
environment: `init` commands and tests build settings that way, then `save()` them; `settings.replace(key=value)`
is a validated copy. `ChainSettings` holds the chain fields the node and the coordinator share.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import pydantic_settings
from pydantic import BeforeValidator, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

DEFAULT_RPC_URL = "http://127.0.0.1:8545"
SHARED_ENV_PREFIX = "TWINLEDGER_"
# The chain fields every component reads from the same variable (TWINLEDGER_RPC_URL, ...).
SHARED_FIELDS = frozenset({"rpc_url", "deployment_file", "chain_timeout_s", "database_url", "chain_ca_file",
                           "allow_plain_rpc"})

# An empty string (what `save()` writes for "none") means no path.
OptionalPath = Annotated[Path | None, BeforeValidator(lambda value: value or None)]


class SettingsError(Exception):
    """A component's configuration is missing or malformed; the message names the file or variable and the key."""


# The class being loaded and its file; unset while a class is constructed by keyword (no file, no environment).
_loading: ContextVar[tuple[type, Path] | None] = ContextVar("twinledger_settings_loading", default=None)


class ComponentSettings(BaseSettings):
    """Base of every component's settings: a TOML file in the component's home, then the environment."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", case_sensitive=True, env_prefix=SHARED_ENV_PREFIX)

    config_name: ClassVar[str] = ""  # the file in the component's home
    # Fields neither the file nor the environment sets (the home, the parent component's settings, constants).
    fixed: ClassVar[frozenset[str]] = frozenset()
    # Former variable names still read after the current one, for documents written before the one scheme.
    legacy_env: ClassVar[dict[str, tuple[str, ...]]] = {}
    # The message when the file is missing ("{path}" is replaced); None: the file is optional.
    missing_file: ClassVar[str | None] = None

    @classmethod
    def keys(cls) -> dict[str, str]:
        """The file's keys, each mapped to its field: `rpc-url` -> `rpc_url`."""
        return {name.replace("_", "-"): name for name in cls.model_fields if name not in cls.fixed}

    @classmethod
    def env_names(cls, field: str) -> tuple[str, ...]:
        """The variables that set a field, the current name first."""
        prefix = SHARED_ENV_PREFIX if field in SHARED_FIELDS else cls.model_config["env_prefix"]
        return (prefix + field.upper(), *cls.legacy_env.get(field, ()))

    @classmethod
    def load_file(cls, path: Path, **given: Any) -> Self:
        """The settings in `path` overridden by the environment; `given` values override both."""
        if cls.missing_file and not path.is_file():
            raise SettingsError(cls.missing_file.format(path=path))
        token = _loading.set((cls, path))
        try:
            return cls(**given)
        except ValidationError as exc:
            raise SettingsError(_explain(cls, exc, path)) from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise SettingsError(f"cannot read {path}: {exc}") from None
        except pydantic_settings.SettingsError as exc:  # a variable for a table that is not JSON
            field = str(exc).split('"')[1] if '"' in str(exc) else ""
            variable = next((name for name in cls.env_names(field) if name in os.environ), field)
            raise SettingsError(f"{variable} must hold a JSON object: {exc.__cause__ or exc}") from None
        finally:
            _loading.reset(token)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        loading = _loading.get()
        if loading is None or loading[0] is not settings_cls:
            return (init_settings,)  # keyword construction: exactly what the caller gave, and the defaults
        # Earlier sources win: the caller's values, then the environment, then the file.
        return (init_settings, _Environment(settings_cls), _HyphenatedToml(settings_cls, loading[1]))

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes`, validated like a keyword construction (pydantic's `model_copy(update=...)`
        would take `cookie_secure="maybe"` as it is)."""
        return type(self)(**{name: getattr(self, name) for name in type(self).model_fields} | changes)

    def save_to(self, home: Path) -> Path:
        """Write every configurable value to the component's file in `home`, in the form the loader reads."""
        home.mkdir(parents=True, exist_ok=True)
        path = home / self.config_name
        path.write_text("".join(f"{key} = {_toml(getattr(self, name))}\n" for key, name in self.keys().items()))
        return path


class ChainSettings(ComponentSettings):
    """A side that keeps a home directory and talks to the chain (a hospital node, the coordinator): the chain
    fields every such side reads from the same variables, and `load(home)` / `save()` of its file there."""

    fixed: ClassVar[frozenset[str]] = frozenset({"home"})

    home: Path
    rpc_url: str = DEFAULT_RPC_URL
    deployment_file: OptionalPath = None
    chain_timeout_s: float = 10.0
    # An https rpc-url is verified against chain-ca-file (the consortium CA's ca.pem; the system's CAs when empty).
    # Plain http is accepted for a loopback host only, unless allow-plain-rpc (development only): contracts/ledger
    # `connect` refuses it otherwise.
    chain_ca_file: OptionalPath = None
    allow_plain_rpc: bool = False

    @classmethod
    def load(cls, home: Path | str) -> Self:
        home = Path(home).expanduser().resolve()
        return cls.load_file(home / cls.config_name, home=home)

    def save(self) -> Path:
        return self.save_to(self.home)


class _HyphenatedToml(TomlConfigSettingsSource):
    """pydantic-settings' TOML source with hyphenated keys; a key the class does not know is refused."""

    def __init__(self, settings_cls: type[ComponentSettings], path: Path):
        self.settings_class = settings_cls
        super().__init__(settings_cls, toml_file=path)

    def _read_file(self, file_path: Path) -> dict[str, Any]:
        data = super()._read_file(file_path)
        keys = self.settings_class.keys()
        unknown = sorted(set(data) - set(keys))
        if unknown:
            raise SettingsError(f"{file_path}: unknown setting(s) {', '.join(unknown)}; "
                                f"known: {', '.join(sorted(keys))}")
        return {keys[key]: value for key, value in data.items()}


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source, reading exactly the variables `env_names` gives each field."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        settings_cls: type[ComponentSettings] = self.settings_cls  # type: ignore[assignment]
        if field_name in settings_cls.fixed:
            return None, field_name, False
        for name in settings_cls.env_names(field_name):
            if (value := self.env_vars.get(name)) is not None:
                return value, field_name, False
        return None, field_name, False


def _explain(cls: type[ComponentSettings], exc: ValidationError, path: Path) -> str:
    problems = []
    for error in exc.errors():
        field, *inner = error["loc"] or ("",)
        key = ".".join([str(field).replace("_", "-"), *map(str, inner)])
        variable = next((name for name in cls.env_names(str(field)) if name in os.environ), None)
        where = f"{variable} (overriding {key} in {path})" if variable and field not in cls.fixed else f"{path}: {key}"
        got = "" if error["type"] in ("missing", "value_error") else f" (got {error['input']!r})"
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}{got}")
    return "; ".join(problems)


def _toml(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Path):
        return json.dumps(str(value))
    return json.dumps(value)


class LogSettings(ComponentSettings):
    """How every TwinLedger process logs (federation/logs.py), from the environment only (no file):
    TWINLEDGER_LOG_FORMAT = text (default) | json (one JSON object a line, for a log collector), and
    TWINLEDGER_LOG_LEVEL = DEBUG | INFO (default) | WARNING | ERROR."""

    model_config = SettingsConfigDict(env_prefix="TWINLEDGER_LOG_")

    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def from_environment(cls) -> "LogSettings":
        """The settings the environment gives (a SettingsError names the variable when a value is wrong)."""
        return cls.load_file(Path("TWINLEDGER_LOG_* variables"))
