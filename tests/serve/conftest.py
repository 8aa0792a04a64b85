"""Fixtures shared by the service's test modules (test_serve, test_edge, test_web, ...)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.synthetic import CF, Synthetic
from warmstart.models.hybrid import WarmStartRecommender


@pytest.fixture(scope="session")
def model_dir(data: Synthetic, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fitted `warmstart` model on the synthetic data, saved once (tests copy it to change it)."""
    model = WarmStartRecommender(encoder="hashing", cf=CF).fit(data.dataset)
    return model.save(tmp_path_factory.mktemp("model") / "warmstart")


PG_URL = os.environ.get("WARMSTART_TEST_POSTGRES_URL", "").strip()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL nobody else uses: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    if not PG_URL:
        pytest.skip(
            "PostgreSQL variant: WARMSTART_TEST_POSTGRES_URL is not set "
            "(export WARMSTART_TEST_POSTGRES_URL=$(.ci/postgres.sh))"
        )
    schema = f"test_{uuid.uuid4().hex[:16]}"
    base = make_url(PG_URL)
    admin = create_engine(base.set(drivername="postgresql+psycopg"))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        # search_path puts every table the store creates into this test's schema.
        scoped = base.update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
