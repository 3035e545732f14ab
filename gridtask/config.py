"""Where a client, node or relay finds the network: a config file, then GRIDTASK_* variables.

The devnet writes the config file; on any other chain an operator writes it (or sets
the variables). This is the only module that reads the environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from gridtask.exceptions import ConfigError

ENV_PREFIX = "GRIDTASK_"
DEFAULT_CONFIG_PATH = Path.home() / ".gridtask" / "config.json"


class NetworkConfig(BaseModel):
    """How to reach the network, and who you are on it."""

    model_config = ConfigDict(extra="ignore")

    rpc_url: str
    contract: str
    relay_url: str
    private_key: SecretStr = SecretStr("")
    """Secret: its repr, ``str`` and ``model_dump`` show ``**********``; only
    ``get_secret_value()`` (``Identity.from_hex`` takes either) and ``save_config`` read it."""
    ws_url: str = ""
    chain_id: int = 0
    deploy_block: int | None = Field(default=None, ge=0)
    """The block the contract was deployed in: log searches start there (found by bisection,
    once per process, when not set)."""
    source_registry: str = ""
    """The SourceRegistry contract (OpenGPU-style sources, ``gridtask.sdk.opengpu``); empty
    where the network has none."""
    confirmations: int = Field(default=0, ge=0)
    """How many blocks deep an event must be before it is acted on (0 on the devnet); a reorg
    shallower than this is never seen."""


def config_path(path: Path | str | None = None) -> Path:
    if path:
        return Path(path)
    return Path(os.environ.get(f"{ENV_PREFIX}CONFIG", DEFAULT_CONFIG_PATH))


def env_overrides() -> dict[str, str]:
    """GRIDTASK_RPC_URL, GRIDTASK_CONTRACT, GRIDTASK_RELAY_URL, GRIDTASK_PRIVATE_KEY, ..."""
    out = {}
    for name in NetworkConfig.model_fields:
        value = os.environ.get(ENV_PREFIX + name.upper())
        if value:
            out[name] = value
    return out


def env(name: str, default: str | None = None) -> str | None:
    """One GRIDTASK_* variable (daemon settings read theirs through here)."""
    return os.environ.get(ENV_PREFIX + name.upper(), default)


def load_config(path: Path | str | None = None, **overrides: Any) -> NetworkConfig:
    """File, then environment, then explicit keyword arguments, each overriding the last."""
    file = config_path(path)
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{file} is not valid JSON: {exc}") from exc
    data |= env_overrides()
    data |= {k: v for k, v in overrides.items() if v is not None}
    try:
        return NetworkConfig(**data)
    except ValidationError as exc:
        wrong = [e for e in exc.errors() if e["type"] != "missing"]
        if wrong:  # a value that is there but unusable (never echoed: it may be the key)
            what = "; ".join(f"{e['loc'][0]} ({ENV_PREFIX}{str(e['loc'][0]).upper()}): {e['msg']}" for e in wrong)
            raise ConfigError(f"bad network setting in {file} or the environment: {what}") from None
        missing = ", ".join(str(e["loc"][0]) for e in exc.errors())
        raise ConfigError(
            f"no network configured ({missing} missing): start one with `gridtask devnet`, "
            f"or write {file}, or set {ENV_PREFIX}RPC_URL, {ENV_PREFIX}CONTRACT and "
            f"{ENV_PREFIX}RELAY_URL"
        ) from None


def secret_value(secret: SecretStr | str) -> str:
    """The text of a secret that may still be a plain ``str`` (``model_copy`` does not validate)."""
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def save_config(config: NetworkConfig, path: Path | str | None = None) -> Path:
    file = config_path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    data = config.model_dump() | {"private_key": secret_value(config.private_key)}
    file.write_text(json.dumps(data, indent=2) + "\n")
    file.chmod(0o600)
    return file
