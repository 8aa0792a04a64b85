"""The Ray cluster the `--engine ray` tests run on."""

from __future__ import annotations

import os

import pytest

RAY_ADDRESS = os.environ.get("WARMSTART_TEST_RAY_ADDRESS") or None


@pytest.fixture(scope="session")
def ray_address() -> str | None:
    """The cluster $WARMSTART_TEST_RAY_ADDRESS names (CI: a head and a worker node, each its
    own `ray start`, from .ci/ray-cluster.sh), checked to have two live nodes; else None, and
    each run starts a Ray of its own on this machine."""
    pytest.importorskip("ray")
    if RAY_ADDRESS is not None:
        from warmstart.scale import ray_cluster

        with ray_cluster(RAY_ADDRESS):
            import ray

            alive = [n for n in ray.nodes() if n["Alive"]]
        assert len(alive) == 2, f"expected a 2-node cluster at {RAY_ADDRESS}, found {alive}"
    return RAY_ADDRESS
