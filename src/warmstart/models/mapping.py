"""Text-to-factor maps (ridge, small MLP) fitted with scikit-learn, stored as plain arrays.

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
    """y = relu(...relu(x W0 + b0)...) W_last + b_last; a single layer is plain ridge."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    alpha: float | None = None  # the ridge penalty chosen, so a refit can reuse it

    @property
    def input_dim(self) -> int:
        return int(self.weights[0].shape[0])

    def predict(self, x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, dtype=np.float32)
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
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str) -> FactorMap:
        n = int(arrays[f"{prefix}_n_layers"])
        return cls(
            weights=tuple(arrays[f"{prefix}_w{i}"] for i in range(n)),
            biases=tuple(arrays[f"{prefix}_b{i}"] for i in range(n)),
        )


def fit_factor_map(
    x: np.ndarray,
    y: np.ndarray,
    *,
    kind: Literal["ridge", "mlp"] = "ridge",
    sample_weight: np.ndarray | None = None,
    alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0),
    hidden: int = 256,
    seed: int = 0,
) -> FactorMap:
    """Learn text features -> CF factors. Ridge picks its penalty by efficient leave-one-out."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if kind == "ridge":
        from sklearn.linear_model import Ridge, RidgeCV

        ridge: Ridge | RidgeCV
        if len(alphas) == 1:
            ridge = Ridge(alpha=alphas[0], fit_intercept=True)
        else:
            ridge = RidgeCV(alphas=alphas, fit_intercept=True)
        ridge.fit(x, y, sample_weight=sample_weight)
        return FactorMap(
            weights=(np.asarray(ridge.coef_.T, dtype=np.float32),),
            biases=(np.asarray(ridge.intercept_, dtype=np.float32).reshape(-1),),
            alpha=float(ridge.alpha_ if isinstance(ridge, RidgeCV) else ridge.alpha),
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
