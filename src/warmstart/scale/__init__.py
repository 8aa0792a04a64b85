"""Work too big for one process: the offline stages (encoding, model selection, evaluation) on
this machine or on a Ray cluster (`--engine ray`, the optional `warmstart[ray]` extra)."""

from warmstart.scale.cluster import (
    ENGINES,
    Executor,
    LocalExecutor,
    RayExecutor,
    check_actor_layout,
    check_engine,
    executor,
    map_on_ray,
    ray_cluster,
    require_ray,
)
from warmstart.scale.encode import EncodeReport, encode_items, encode_texts

__all__ = [
    "ENGINES",
    "EncodeReport",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "check_actor_layout",
    "check_engine",
    "encode_items",
    "encode_texts",
    "executor",
    "map_on_ray",
    "ray_cluster",
    "require_ray",
]
