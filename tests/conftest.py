"""Fixtures shared by more than one test package; tests/serve/conftest.py has the service's.

The tests mirror `src/warmstart/` (tests/models/ tests `warmstart.models`, ...). tests/ and every
folder in it are packages, so test modules and helpers import each other by their full name
(`from tests.synthetic import ...`, `from tests.serve.test_serve import ...`) from the
repository root, which `pythonpath` in pyproject.toml puts on `sys.path`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from threadpoolctl import threadpool_limits

from tests.synthetic import Synthetic, make_synthetic
from warmstart.models import Recommendations, Recommender


@pytest.fixture(scope="session")
def data() -> Synthetic:
    return make_synthetic()


@pytest.fixture(scope="module")
def _environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Loaded text-aware models build their encoder with the default cache: keep it in tmp.

    BLAS runs single-threaded: the matrices are tiny, and threads only oversubscribe a busy
    machine (sklearn's MLP ran 6x slower with them).

    Not autouse: a module asks for it with `pytestmark = pytest.mark.usefixtures("_environment")`.
    """
    with pytest.MonkeyPatch.context() as mp, threadpool_limits(1):
        mp.setenv("WARMSTART_CACHE_DIR", str(tmp_path_factory.mktemp("embedding-cache")))
        yield


# ---- the model contract's (tests/models/test_models.py: `ModelContract`) ----------------------
@pytest.fixture(scope="class")
def model(
    request: pytest.FixtureRequest, data: Synthetic, tmp_path_factory: pytest.TempPathFactory
) -> Recommender:
    """The test class's model, fitted once per class; tests must not mutate it."""
    return request.cls.make(tmp_path_factory.mktemp("cache")).fit(data.dataset)


@pytest.fixture(scope="class")
def recs(model: Recommender, data: Synthetic) -> Recommendations:
    """Top-5 of every warm user, in `data.warm_users` order."""
    return model.recommend(data.warm_users, k=5)
