"""`warmstart serve`: keys and settings from the options, and the server run to its end."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from warmstart.cli.configs import build_config
from warmstart.errors import ConfigError
from warmstart.serve.app import ServeSettings

# Names both logging and uvicorn accept.
LOG_LEVELS: tuple[str, ...] = ("critical", "error", "warning", "info", "debug")

OPTIONS: dict[str, str] = {
    "model_dir": "--model",
    "db_url": "--db",
    "api_keys": "--api-key",
    "admin_keys": "--admin-key",
    "neighbour_weight": "--neighbour-weight",
    "popularity_weight": "--popularity-weight",
    "popularity_fade": "--popularity-fade",
    "index_cache": "--index-cache",
    "max_body_bytes": "--max-body-bytes",
    "header_timeout": "--header-timeout",
    "body_timeout": "--body-timeout",
    "max_connections": "--max-connections",
    "read_threads": "--read-threads",
    "text_cache_bytes": "--text-cache-mib",
    "query_encoder": "--query-encoder",
}


def keys(given: list[str] | None, env_var: str) -> tuple[str, ...]:
    """The repeatable option's keys, then the comma-separated ones in `env_var`."""
    from_env = [k.strip() for k in os.environ.get(env_var, "").split(",") if k.strip()]
    return (*(given or ()), *from_env)


def log_level(name: str) -> str:
    """`name` in lower case, checked before the model loads rather than by uvicorn after."""
    level = name.lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"--log-level must be one of {'|'.join(LOG_LEVELS)}, not {name!r}")
    return level


def settings(values: Mapping[str, Any]) -> ServeSettings:
    """`ServeSettings` from the options; the keys never appear in an error message."""
    return build_config(ServeSettings, values, OPTIONS, secret=("api_keys", "admin_keys"))


def run(config: ServeSettings, *, host: str, port: int, level: str, workers: int = 1) -> bool:
    """Serve until stopped, in this process or in `workers` processes behind the one port;
    False when the model could not be loaded (the log says why)."""
    from warmstart.serve import workers as processes

    if workers == 1:
        return processes.serve(config, host=host, port=port, level=level)
    shared = config.model_copy(update={"read_threads": config.reads_at_once(workers)})
    return processes.serve_workers(shared, host=host, port=port, level=level, workers=workers)
