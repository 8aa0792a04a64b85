"""`fit --engine ray`: the hybrid's model-selection fits side by side on Ray, choosing what
they choose one after another here."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_cli import _cli, _write_data
from tests.synthetic import Synthetic
from warmstart.models.hybrid.config import WarmStartConfig
from warmstart.models.hybrid.selection import choose_cf
from warmstart.registry import MODELS
from warmstart.scale import RayExecutor, ray_cluster

pytestmark = pytest.mark.usefixtures("_environment")  # one BLAS thread, as a 1-CPU Ray task

CF = {"factors": 8, "iterations": 6, "num_threads": 1}


def test_the_als_search_on_ray_chooses_what_it_chooses_locally(
    data: Synthetic, ray_address: str | None
) -> None:
    seen = data.dataset.matrix().tocsr()
    seen.data[:] = 1.0 + (np.arange(seen.nnz) % 3)  # strengths: the alpha grid is searched too
    held = np.random.default_rng(0).random(seen.nnz) < 0.2
    train, valid = seen.copy(), seen.copy()
    train.data[held], valid.data[~held] = 0.0, 0.0
    train.eliminate_zeros(), valid.eliminate_zeros()
    cfg = WarmStartConfig(
        cf=CF,
        cf_factor_grid=(4, 8),
        cf_regularization_grid=(0.01, 1.0),
        cf_alpha_grid=(1.0, 4.0),
        cf_search_seconds=3600,
    )
    local_cf, local = choose_cf(train, valid, cfg)
    with ray_cluster(ray_address):
        ray_cf, on_ray = choose_cf(train, valid, cfg, RayExecutor(ray_address))
    assert ray_cf == local_cf
    assert replace(on_ray, seconds=0) == replace(local, seconds=0)
    assert local.fits >= 6 and not local.stopped_by_budget


def test_a_fit_on_ray_equals_the_local_fit(
    data: Synthetic, tmp_path: Path, ray_address: str | None
) -> None:
    def fitted(runner: RayExecutor | None):  # type: ignore[no-untyped-def]
        model = MODELS["warmstart"](cache_dir=tmp_path, encoder="hashing", cf=CF)  # type: ignore[call-arg]
        model.set_executor(runner)  # type: ignore[attr-defined]
        return model.fit(data.dataset)

    local = fitted(None)
    with ray_cluster(ray_address):
        on_ray = fitted(RayExecutor(ray_address))
    assert replace(on_ray.cf_choice_, seconds=0) == replace(local.cf_choice_, seconds=0)
    for name in ("item_vectors", "user_vectors"):
        np.testing.assert_array_equal(getattr(on_ray, name), getattr(local, name))


def test_fit_command_on_ray_and_what_it_refuses(tmp_path: Path, ray_address: str | None) -> None:
    _write_data(tmp_path)
    data = ["--interactions", str(tmp_path / "ratings.csv"), "--items", str(tmp_path / "items.csv")]
    data += ["--user-col", "user", "--rating-col", "stars", "--encoder", "hashing"]
    where = ["--address", ray_address] if ray_address else []
    out = tmp_path / "model"
    res = _cli("fit", *data, "--engine", "ray", *where, "--output", str(out), cache=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "collaborative filtering: als" in res.stderr and (out / "model.json").exists()
    res = _cli("fit", *data, "--model-name", "popularity", "--engine", "ray", "--output", str(out),
               cache=tmp_path)  # fmt: skip
    assert res.returncode == 2 and "popularity has no model selection to run on Ray" in res.stderr
    res = _cli("fit", *data, "--address", "127.0.0.1:1", "--output", str(out), cache=tmp_path)
    assert res.returncode == 2 and "--address names a Ray cluster" in res.stderr
