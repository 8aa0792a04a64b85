"""`warmstart serve`: keys and settings from the options, and the server run to its end."""

from __future__ import annotations

import os
import threading
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
    "text_cache_bytes": "--text-cache-mib",
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


def run(config: ServeSettings, *, host: str, port: int, level: str) -> bool:
    """Serve until stopped; False when the model could not be loaded (the log says why)."""
    import uvicorn
    from threadpoolctl import threadpool_limits

    from warmstart.serve.app import create_app
    from warmstart.serve.http import server_config

    # Requests run in parallel on the thread pool; a BLAS that also splits each small product
    # over both cores spends more time spinning than computing (ML-100K, warm users at 100
    # requests/s: 17 ms of CPU per request with 2 BLAS threads, 8 ms with 1; BENCHMARKS.md).
    threadpool_limits(1)
    failed = threading.Event()

    def stop() -> None:
        failed.set()
        server.should_exit = True

    application = create_app(config, on_load_failure=stop)
    server = uvicorn.Server(
        server_config(
            application,
            host=host,
            port=port,
            header_timeout=config.header_timeout,
            max_header_bytes=config.max_header_bytes,
            max_connections=config.max_connections,
            log_level=level,
        )
    )
    server.run()
    return not failed.is_set()
