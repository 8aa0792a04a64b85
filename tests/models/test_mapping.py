"""Text-to-factor maps: the kernel map learns what a linear one cannot, and saves exactly."""

from __future__ import annotations

import numpy as np
import pytest

from warmstart.models.mapping import FactorMap, fit_factor_map


def _two_cones(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Directions near +a or -a map to 1, directions orthogonal to a map to 0.

    y depends on cos(x, a)^2, so no linear function of x separates the cases.
    """
    rng = np.random.default_rng(seed)
    a = np.zeros(8)
    a[0] = 1.0
    x = rng.normal(size=(n, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = (x @ a) ** 2
    return x.astype(np.float32), y[:, None].astype(np.float32)


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def test_kernel_map_fits_a_nonlinear_target_that_ridge_cannot() -> None:
    x, y = _two_cones(600)
    x_test, y_test = _two_cones(300, seed=1)
    linear = fit_factor_map(x, y, kind="ridge")
    kernel = fit_factor_map(x, y, kind="kernel", alphas=(0.01, 0.1, 1.0), gamma=1.0)
    assert _r2(y_test, linear.predict(x_test)) < 0.1
    assert _r2(y_test, kernel.predict(x_test)) > 0.8


def test_kernel_map_uses_at_most_the_given_landmarks() -> None:
    x, y = _two_cones(300)
    small = fit_factor_map(x, y, kind="kernel", landmarks=50)
    whole = fit_factor_map(x, y, kind="kernel", landmarks=5000)
    assert small.landmarks is not None and small.landmarks.shape == (50, 8)
    assert whole.landmarks is not None and whole.landmarks.shape == (300, 8)
    assert whole.input_dim == 8
    # Inputs are compared by direction only: scaling a text vector does not change its image.
    assert np.allclose(whole.predict(3.0 * x[:5]), whole.predict(x[:5]), atol=1e-5)


def test_kernel_map_handles_empty_text_rows() -> None:
    x, y = _two_cones(200)
    m = fit_factor_map(x, y, kind="kernel")
    out = m.predict(np.zeros((2, 8), dtype=np.float32))
    assert np.isfinite(out).all()
    assert np.allclose(out[0], out[1])


@pytest.mark.parametrize("kind", ["ridge", "kernel", "mlp"])
def test_maps_round_trip_through_arrays(kind: str) -> None:
    x, y = _two_cones(200)
    m = fit_factor_map(x, np.hstack([y, 1.0 - y]), kind=kind, hidden=16)  # type: ignore[arg-type]
    arrays = m.to_arrays("item_map")
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    back = FactorMap.from_arrays(arrays, "item_map")
    assert np.array_equal(back.predict(x), m.predict(x))
    assert back.gamma == m.gamma
