"""Fixtures shared by the service's test modules (test_serve, test_edge, test_web, ...)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.synthetic import CF, Synthetic
from warmstart.models.hybrid import WarmStartRecommender


@pytest.fixture(scope="session")
def model_dir(data: Synthetic, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fitted `warmstart` model on the synthetic data, saved once (tests copy it to change it)."""
    model = WarmStartRecommender(encoder="hashing", cf=CF).fit(data.dataset)
    return model.save(tmp_path_factory.mktemp("model") / "warmstart")
