"""Running on Ray: connecting to a cluster (or starting one for the run) and the checks that
keep a Ray job from hanging or joining the wrong cluster.

Ray is an optional extra (`pip install 'warmstart[ray]'`): nothing here imports it until a
command asks for `--engine ray`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from warmstart.errors import ConfigError
from warmstart.text.core import MissingDependencyError

T = TypeVar("T")
Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = ("local", "ray")


def require_ray() -> ModuleType:
    """`ray`, or an error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(
            "--engine ray needs Ray, an optional extra: pip install 'warmstart[ray]'"
        ) from None
    return ray


def check_engine(engine: str) -> Engine:
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    return "ray" if engine == "ray" else "local"


@contextlib.contextmanager
def ray_cluster(address: str | None = None, num_cpus: int | None = None) -> Iterator[int]:
    """Connect this process to the Ray cluster at `address` for the block, or, without one,
    start a Ray of its own on this machine (`num_cpus` CPUs, default all) and stop it after.
    Yields the cluster's CPU count.

    A Ray this process already joined is used as it is and left connected. A bare
    `ray.init()` would join whatever cluster `/tmp/ray/ray_current_cluster` names, even a
    stopped one; "no address" here always means a new local Ray (`address="local"`).
    """
    ray = require_ray()
    if ray.is_initialized():
        yield int(ray.cluster_resources().get("CPU", 0))
        return
    if address is not None:
        _check_reachable(address)
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address is None:
            ray.init(address="local", num_cpus=num_cpus, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ConfigError(
            f"could not start or join {where}: {exc}\n(is it running? A cluster started with "
            "token authentication needs RAY_AUTH_MODE=token and its RAY_AUTH_TOKEN here too)"
        ) from exc
    _quiet_ray_data()
    try:
        yield int(ray.cluster_resources().get("CPU", 0))
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing listens at `address` (HOST:PORT, or ray://HOST:PORT): Ray's
    own connect retries for minutes (more than 5 against a closed port, Ray 2.60)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # not HOST:PORT ("auto", say): Ray's to resolve
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"nothing answers at {address} ({exc.strerror or exc}): is the Ray head running "
            "there? (`ray start --head` prints the address to give)"
        ) from None


def _quiet_ray_data() -> None:
    """Ray Data logs every stage of every run at INFO and draws its own progress bars; the
    commands show one bar of their own instead."""
    with contextlib.suppress(ImportError):
        from ray.data import DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
    # After the import, which sets up Ray Data's loggers; ERROR: it warns that bars are off.
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def check_actor_layout(actors: int, cpus_per_actor: float, cluster_cpus: int) -> None:
    """Refuse a pool of actors that does not fit the cluster's CPUs: Ray Data would quietly
    run fewer actors than asked (3 asked of 2 CPUs ran 2)."""
    if actors < 1 or cpus_per_actor <= 0:
        raise ConfigError(
            f"need at least one actor with some CPU: got {actors} actors x {cpus_per_actor} CPUs"
        )
    if actors * cpus_per_actor > cluster_cpus:
        raise ConfigError(
            f"{actors} actors x {cpus_per_actor:g} CPUs need {actors * cpus_per_actor:g} CPUs; "
            f"the Ray cluster has {cluster_cpus}: use fewer actors or fewer CPUs per actor"
        )


def map_on_ray(
    fn: Callable[..., T],
    items: Sequence[Any],
    shared: Mapping[str, Any],
    address: str | None = None,
    cpus_per_task: float = 1.0,
) -> Iterator[tuple[int, T]]:
    """`fn(item, **shared)` for every item, each a Ray task of `cpus_per_task` CPUs, yielded
    as (position in `items`, result) as they finish. Each of `shared` goes into the object
    store once and every task reads it from there, instead of a copy per task."""
    ray = require_ray()
    with ray_cluster(address):
        refs = {name: ray.put(value) for name, value in shared.items()}
        task = ray.remote(num_cpus=cpus_per_task, max_retries=0)(_call)
        pending = {task.remote(fn, item, **refs): i for i, item in enumerate(items)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(done[0]), ray.get(done[0])


def _call(fn: Callable[..., T], item: Any, **shared: Any) -> T:
    return fn(item, **shared)


class Executor(Protocol):
    """Runs `fn(item, **shared)` for each item and yields (position, result) as each is done.

    `parallel` executors start every item at once (Ray); the others run one at a time, in
    order, when the next result is asked for, so a caller can stop between two (a time
    budget) without paying for the rest.
    """

    parallel: ClassVar[bool]

    def map(
        self, fn: Callable[..., T], items: Sequence[Any], shared: Mapping[str, Any]
    ) -> Iterator[tuple[int, T]]: ...


@dataclass(frozen=True)
class LocalExecutor:
    """One item after another, in this process."""

    parallel: ClassVar[bool] = False

    def map(
        self, fn: Callable[..., T], items: Sequence[Any], shared: Mapping[str, Any]
    ) -> Iterator[tuple[int, T]]:
        return ((i, fn(item, **shared)) for i, item in enumerate(items))


@dataclass(frozen=True)
class RayExecutor:
    """Each item a Ray task (`map_on_ray`) on the cluster at `address`, or a local Ray.

    Inside `ray_cluster(...)` every map uses that connection; outside, each map starts and
    stops a Ray of its own.
    """

    address: str | None = None
    cpus_per_task: float = 1.0
    parallel: ClassVar[bool] = True

    def map(
        self, fn: Callable[..., T], items: Sequence[Any], shared: Mapping[str, Any]
    ) -> Iterator[tuple[int, T]]:
        return map_on_ray(fn, items, shared, self.address, self.cpus_per_task)


def executor(engine: str, address: str | None = None) -> Executor:
    """The executor an `--engine` option names."""
    if check_engine(engine) == "ray":
        require_ray()
        return RayExecutor(address)
    if address is not None:
        raise ConfigError("--address names a Ray cluster: it needs --engine ray")
    return LocalExecutor()
