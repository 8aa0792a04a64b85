"""Text-to-factor maps (ridge, RBF-kernel ridge, small MLP) fitted with scikit-learn, stored as arrays.

Keeping only arrays makes save/load exact and pickle-free; prediction is a few numpy lines.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class FactorMap:
    """y = relu(...relu(h W0 + b0)...) W_last + b_last; a single layer is plain ridge.

    h is x itself, or, for the kernel map, exp(-gamma * |x/|x| - l|^2) against unit-length
    landmark texts l: ridge regression in a Nystroem approximation of the RBF kernel's space.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    alpha: float | None = None  # the ridge penalty chosen, so a refit can reuse it
    landmarks: np.ndarray | None = None
    gamma: float = 0.0

    @property
    def input_dim(self) -> int:
        if self.landmarks is not None:
            return int(self.landmarks.shape[1])
        return int(self.weights[0].shape[0])

    def predict(self, x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, dtype=np.float32)
        if self.landmarks is not None:
            h = _rbf_features(h, self.landmarks, self.gamma)
        for layer, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if layer < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return np.asarray(h, dtype=np.float32)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}_n_layers": np.asarray(len(self.weights))}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            out[f"{prefix}_w{i}"] = w
            out[f"{prefix}_b{i}"] = b
        if self.landmarks is not None:
            out[f"{prefix}_landmarks"] = self.landmarks
            out[f"{prefix}_gamma"] = np.asarray(self.gamma)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str) -> FactorMap:
        n = int(arrays[f"{prefix}_n_layers"])
        kernel = f"{prefix}_landmarks" in arrays
        return cls(
            weights=tuple(arrays[f"{prefix}_w{i}"] for i in range(n)),
            biases=tuple(arrays[f"{prefix}_b{i}"] for i in range(n)),
            landmarks=arrays[f"{prefix}_landmarks"] if kernel else None,
            gamma=float(arrays[f"{prefix}_gamma"]) if kernel else 0.0,
        )


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _nystroem(
    x_unit: np.ndarray, landmarks: int, gamma: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks drawn from the inputs, and K_mm^(-1/2) (Williams & Seeger's Nystroem method).

    sklearn's `Nystroem` computes the same with an SVD; the kernel matrix is symmetric, so an
    eigendecomposition gives it several times faster, which matters because a fit makes three maps.
    """
    rng = np.random.default_rng(seed)
    n = len(x_unit)
    pick = np.sort(rng.choice(n, size=landmarks, replace=False)) if landmarks < n else np.arange(n)
    chosen = np.asarray(x_unit[pick], dtype=np.float32)
    values, vectors = np.linalg.eigh(_rbf_features(chosen, chosen, gamma).astype(np.float64))
    inv_sqrt = 1.0 / np.sqrt(np.maximum(values, 1e-12))
    return chosen, (vectors * inv_sqrt) @ vectors.T


def _rbf_features(x: np.ndarray, landmarks: np.ndarray, gamma: float) -> np.ndarray:
    """RBF kernel between unit-length rows of x and the landmarks (a text-less zero row stays 0)."""
    x = _unit_rows(np.asarray(x, dtype=np.float32))
    sq = (
        np.sum(x * x, axis=1, keepdims=True)
        - 2.0 * (x @ landmarks.T)
        + np.sum(landmarks * landmarks, axis=1)[None, :]
    )
    return np.exp(-gamma * np.maximum(sq, 0.0)).astype(np.float32)


def fit_factor_map(
    x: np.ndarray,
    y: np.ndarray,
    *,
    kind: Literal["ridge", "kernel", "mlp"] = "ridge",
    sample_weight: np.ndarray | None = None,
    alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0),
    hidden: int = 256,
    landmarks: int = 2000,
    gamma: float = 1.0,
    seed: int = 0,
) -> FactorMap:
    """Learn text features -> CF factors. Ridge picks its penalty by efficient leave-one-out.

    `kernel` is ridge on Nystroem RBF features of the unit-length inputs (`landmarks` of them,
    all inputs when there are fewer): nonlinear, still closed form, and exact kernel ridge on
    small catalogues.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
    if kind in ("ridge", "kernel"):
        from sklearn.linear_model import Ridge, RidgeCV

        nystroem = None
        if kind == "kernel":
            nystroem = _nystroem(_unit_rows(x), landmarks, gamma, seed)
            x = _rbf_features(x, nystroem[0], gamma).astype(np.float64) @ nystroem[1]
        ridge: Ridge | RidgeCV
        if len(alphas) == 1:
            ridge = Ridge(alpha=alphas[0], fit_intercept=True)
        else:
            ridge = RidgeCV(alphas=alphas, fit_intercept=True)
        ridge.fit(x, y, sample_weight=sample_weight)
        # (n_features, n_targets) even for one target, where sklearn may return a flat vector
        coef = np.asarray(ridge.coef_, dtype=np.float64).reshape(y.shape[1], -1).T
        chosen = float(ridge.alpha_ if isinstance(ridge, RidgeCV) else ridge.alpha)
        bias = np.asarray(ridge.intercept_, dtype=np.float32).reshape(-1)
        if nystroem is None:
            return FactorMap(weights=(coef.astype(np.float32),), biases=(bias,), alpha=chosen)
        # The features are K(x, landmarks) @ K_mm^(-1/2): fold the second factor into the weights.
        return FactorMap(
            weights=(np.asarray(nystroem[1] @ coef, dtype=np.float32),),
            biases=(bias,),
            alpha=chosen,
            landmarks=nystroem[0],
            gamma=float(gamma),
        )
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    mlp = MLPRegressor(
        hidden_layer_sizes=(hidden,),
        alpha=1e-3,
        learning_rate_init=1e-3,
        early_stopping=True,
        n_iter_no_change=10,
        max_iter=300,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x, y)
    return FactorMap(
        weights=tuple(np.asarray(w, dtype=np.float32) for w in mlp.coefs_),
        biases=tuple(np.asarray(b, dtype=np.float32) for b in mlp.intercepts_),
    )
