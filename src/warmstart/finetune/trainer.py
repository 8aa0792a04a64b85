"""Fine-tune the text tower on interactions: training loop, early stopping, checkpoints, resume.

CPU is the budget, so each step encodes only item texts with gradients. The user side of the
contrastive objective is a memory bank: user profiles are pooled from the item embeddings of the
previous epoch (refreshed once per epoch, the same pass that measures validation recall), as in
MoCo-style training. A slice of items is held out entirely and ranked, after every epoch, for the
users who picked them, exactly as cold items are; the best epoch's weights are kept, and if no
epoch beats the untrained encoder, the untrained encoder is kept.

Checkpoints (when an output folder is given) are written whole or not at all, once per epoch, so
an interrupted run (Ctrl-C, a killed process) leaves the last good one, and `resume=True` goes on
from it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from warmstart._io import read_npz, staged_dir, write_json, write_npz
from warmstart.data.dataset import Dataset
from warmstart.errors import ConfigError, DataError, DataNotFoundError, ModelFormatError
from warmstart.finetune.batching import length_batches, linear_schedule, random_batches
from warmstart.finetune.config import FineTuneConfig
from warmstart.finetune.tower import TextTower
from warmstart.plots import figure, save_png
from warmstart.text.core import has_text

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"


@dataclass
class FineTuneResult:
    """The tower with its best weights loaded, and what happened per epoch."""

    tower: TextTower
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0  # 0: the untrained encoder was best on validation
    best_recall: float = float("nan")
    seconds: float = 0.0
    mlm_losses: list[float] = field(default_factory=list)  # domain adaptation, per pass


@dataclass
class _Data:
    """The interactions as the trainer uses them; validation items are removed from `train`."""

    item_texts: list[str]
    user_texts: list[str]
    train: sp.csr_matrix  # users x items, binary
    train_values: sp.csr_matrix  # the same pairs with their weights (ratings, where given)
    train_by_item: sp.csc_matrix
    items: np.ndarray  # items with at least one training user: what a step draws from
    valid: sp.csr_matrix  # users x items: only validation items, with their weights
    valid_items: np.ndarray


def _prepare(dataset: Dataset, cfg: FineTuneConfig) -> _Data:
    values = dataset.matrix().tocsr()
    seen = values.copy()
    seen.data[:] = 1.0
    counts = np.bincount(seen.indices, minlength=seen.shape[1])
    active = np.flatnonzero(counts > 0)
    rng = np.random.default_rng([cfg.seed, 7])
    n_valid = round(cfg.validation_fraction * len(active))
    valid_items = np.sort(rng.choice(active, size=n_valid, replace=False)) if n_valid >= 5 else None
    keep = np.ones(seen.shape[1], dtype=np.float32)
    if valid_items is not None:
        keep[valid_items] = 0.0
    train = (seen @ sp.diags(keep)).tocsr()
    train.eliminate_zeros()
    train_values = (values @ sp.diags(keep)).tocsr()
    train_values.eliminate_zeros()
    valid = (values @ sp.diags(1.0 - keep)).tocsr()
    valid.eliminate_zeros()
    items = np.flatnonzero(np.bincount(train.indices, minlength=seen.shape[1]) > 0)
    if len(items) < 2:
        raise DataError("fine-tuning needs at least two items with interactions")
    return _Data(
        item_texts=dataset.item_texts(),
        user_texts=[t or "" for t in dataset.user_texts()],
        train=train,
        train_values=train_values,
        train_by_item=train.tocsc(),
        items=items,
        valid=valid,
        valid_items=np.empty(0, dtype=np.int64) if valid_items is None else valid_items,
    )


def _profiles(
    train: sp.csr_matrix, item_emb: np.ndarray, user_emb: np.ndarray, users: np.ndarray
) -> np.ndarray:
    """Each user's taste in text space: mean of their items' embeddings plus their own text."""
    rows = train[users]
    n = np.maximum(np.diff(rows.indptr), 1).astype(np.float32)
    mean = np.asarray(rows @ item_emb, dtype=np.float32) / n[:, None]
    out = mean + user_emb[users]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


def _validation_truth(data: _Data) -> tuple[sp.csr_matrix, np.ndarray]:
    """Binary held-out items of the users who picked one and also have training items."""
    truth = data.valid[:, data.valid_items].tocsr()
    truth.data[:] = 1.0
    users = np.flatnonzero((np.diff(truth.indptr) > 0) & (np.diff(data.train.indptr) > 0))
    return truth[users], users


def text_profile_scores(
    data: _Data, item_emb: np.ndarray, user_emb: np.ndarray, users: np.ndarray
) -> np.ndarray:
    """Held-out items scored by text alone: each user's profile (mean of their training items'
    embeddings plus their own text) against the items' embeddings."""
    return _profiles(data.train, item_emb, user_emb, users) @ item_emb[data.valid_items].T


def validation_recall(data: _Data, scores: Callable[[np.ndarray], np.ndarray], k: int) -> float:
    """Recall@k of the held-out items, ranked among themselves for the users who picked them.

    `scores(users)` gives a users x held-out items matrix: how the objective would rank them.
    """
    if data.valid_items.size == 0:
        return float("nan")
    truth, users = _validation_truth(data)
    if users.size == 0:
        return float("nan")
    s = scores(users)
    kk = min(k, s.shape[1])
    top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
    hits = np.asarray(truth[np.arange(len(users))[:, None], top].todense()).sum(axis=1)
    relevant = np.minimum(np.diff(truth.indptr), kk)
    return float(np.mean(hits / relevant))


Embed = Callable[[np.ndarray], "torch.Tensor"]  # item indices -> their embeddings, with gradients


class _Objective:
    """A batch of items in, a scalar loss out."""

    data: _Data
    cfg: FineTuneConfig
    extra: list[Any]  # trainable modules besides the tower (saved with it)
    # The batch's other items are the negatives, so batches are drawn at random. Batches of
    # similar token length padded less, but their items were alike and the negatives with them:
    # one contrastive epoch on ML-100K took validation recall from 0.372 to 0.353 with
    # length-bucketed batches, to 0.412 with random ones. (`TextTower.embed_states` still runs
    # a random batch in length groups, which saves the padding without that cost.)
    in_batch: bool = True

    def loss(self, embed: Embed, batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        raise NotImplementedError

    def refresh(self, item_emb: np.ndarray, user_emb: np.ndarray) -> None:
        """New memory bank after an epoch (contrastive uses it; others ignore it)."""

    def validate(self, item_emb: np.ndarray, user_emb: np.ndarray) -> dict[str, float]:
        """The objective's own figure on the held-out items (rating: RMSE, click: AUC)."""
        return {}

    def validation_scores(
        self, item_emb: np.ndarray, user_emb: np.ndarray
    ) -> Callable[[np.ndarray], np.ndarray]:
        """How held-out items are ranked for early stopping: by text profiles, unless the
        objective trains for another use of the embeddings."""
        return lambda users: text_profile_scores(self.data, item_emb, user_emb, users)


def _info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    import torch

    logits = a @ b.T / temperature
    labels = torch.arange(len(a))
    ce = torch.nn.functional.cross_entropy
    return (ce(logits, labels) + ce(logits.T, labels)) / 2


def _cf_factors(data: _Data, cfg: FineTuneConfig) -> tuple[np.ndarray, np.ndarray]:
    """ALS user and item factors of the training interactions: the collaborative teacher."""
    from warmstart.models.cf import CFConfig, fit_factors

    return fit_factors(data.train, CFConfig(seed=cfg.seed))


class _Contrastive(_Objective):
    """Item text vs the profile of one of its users (their other items, and their own text).

    With `hard_negatives`, each user's row of the loss also holds an item that the ALS model
    ranks among its top `hard_negative_pool` for that user but which they never picked: a
    near miss, harder to tell apart than the batch's random items. It costs one more text per
    pair in every step.
    """

    def __init__(self, data: _Data, cfg: FineTuneConfig) -> None:
        self.data, self.cfg = data, cfg
        self.extra = []
        self.item_emb = np.zeros((0, 0), dtype=np.float32)
        self.user_emb = np.zeros((0, 0), dtype=np.float32)
        self.user_factors = self.item_factors = np.zeros((0, 0), dtype=np.float32)
        if cfg.hard_negatives:
            self.user_factors, self.item_factors = _cf_factors(data, cfg)

    def hard_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each user, one random item of the CF model's top picks that they never chose."""
        items = self.data.items
        scores = self.user_factors[users] @ self.item_factors[items].T
        seen = self.data.train[users][:, items]
        scores[seen.nonzero()] = -np.inf
        pool = min(self.cfg.hard_negative_pool, len(items) - 1)
        top = np.argpartition(-scores, pool - 1, axis=1)[:, :pool]
        picks = top[np.arange(len(users)), rng.integers(0, pool, size=len(users))]
        return np.asarray(items[picks], dtype=np.int64)

    def refresh(self, item_emb: np.ndarray, user_emb: np.ndarray) -> None:
        # Centred: what sets a user's items apart from the catalogue's average, not the average
        # itself (pooled text embeddings share a large common part that carries no taste).
        self.item_emb = item_emb - item_emb[self.data.items].mean(axis=0)
        texted = np.any(user_emb, axis=1)
        centre = user_emb[texted].mean(axis=0) if texted.any() else 0.0
        self.user_emb = np.where(texted[:, None], user_emb - centre, 0.0).astype(np.float32)

    def pairs(
        self, batch: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each item, one user who picked it and that user's profile from the memory bank.

        Items whose user has no other item and no text are dropped: they say nothing about it.
        """
        by_item, train = self.data.train_by_item, self.data.train
        keep, users, targets = [], [], []
        for i in batch:
            picked_by = by_item.indices[by_item.indptr[i] : by_item.indptr[i + 1]]
            u = int(rng.choice(picked_by))
            others = train.indices[train.indptr[u] : train.indptr[u + 1]]
            others = others[others != i]
            if others.size > self.cfg.history_items:
                others = rng.choice(others, size=self.cfg.history_items, replace=False)
            vec = self.user_emb[u].copy()
            if others.size:
                vec += self.item_emb[others].mean(axis=0)
            norm = float(np.linalg.norm(vec))
            if norm == 0:
                continue
            keep.append(int(i))
            users.append(u)
            targets.append(vec / norm)
        if not keep:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        return np.asarray(keep), np.asarray(users), np.stack(targets).astype(np.float32)

    @property
    def dim(self) -> int:
        return int(self.item_emb.shape[1])

    def loss(self, embed: Embed, batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        import torch

        keep, users, targets = self.pairs(batch, rng)
        if len(keep) < 2:
            return torch.zeros((), requires_grad=True)
        u = torch.from_numpy(targets)
        if not self.cfg.hard_negatives:
            return _info_nce(embed(keep), u, self.cfg.temperature)
        z = embed(np.concatenate([keep, self.hard_negatives(users, rng)]))
        labels = torch.arange(len(keep))
        ce = torch.nn.functional.cross_entropy
        to_items = ce(u @ z.T / self.cfg.temperature, labels)  # the batch's items + near misses
        to_users = ce(z[: len(keep)] @ u.T / self.cfg.temperature, labels)
        return (to_items + to_users) / 2

    def held_out_profiles(self, user_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Users who picked a held-out item and have training items, and their bank profiles."""
        _, users = _validation_truth(self.data)
        return users, _profiles(self.data.train, self.item_emb, self.user_emb, users)


class _PairHead:
    """score(item, user) = a * (z . W u) + b, W starting as the identity: a bilinear two-tower
    head, cheap to evaluate for every user-item pair at once."""

    def __new__(cls, dim: int, scale: float) -> Any:
        import torch

        class Head(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.w = torch.nn.Linear(dim, dim, bias=False)
                self.scale = torch.nn.Parameter(torch.tensor(scale))
                self.bias = torch.nn.Parameter(torch.tensor(0.0))
                with torch.no_grad():
                    self.w.weight.copy_(torch.eye(dim))

            def forward(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
                return self.scale * (z * self.w(u)).sum(-1) + self.bias

            def all_pairs(self, items: np.ndarray, users: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    u = self.w(torch.from_numpy(np.ascontiguousarray(users)))
                    out = self.scale * (u @ torch.from_numpy(items).T) + self.bias
                return out.numpy()

        return Head()


class _Rating(_Contrastive):
    """A head predicts the rating from the item's text and the user's profile (squared error)."""

    in_batch = False  # one squared error per pair: batches may group similar lengths

    def __init__(self, data: _Data, cfg: FineTuneConfig, dim: int) -> None:
        super().__init__(data, cfg)
        self.mean = float(data.train_values.data.mean()) if data.train_values.nnz else 0.0
        self.head = _PairHead(dim, scale=1.0)
        self.extra = [self.head]

    def loss(self, embed: Embed, batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        import torch

        keep, users, targets = self.pairs(batch, rng)
        if len(keep) < 1:
            return torch.zeros((), requires_grad=True)
        pred = self.mean + self.head(embed(keep), torch.from_numpy(targets))
        actual = np.asarray(self.data.train_values[users, keep], dtype=np.float32).ravel()
        return torch.nn.functional.mse_loss(pred, torch.from_numpy(actual))

    def validate(self, item_emb: np.ndarray, user_emb: np.ndarray) -> dict[str, float]:
        from warmstart.metrics import RMSE

        users, profiles = self.held_out_profiles(user_emb)
        truth = self.data.valid[users][:, self.data.valid_items].tocoo()
        if truth.nnz == 0:
            return {"rmse": float("nan")}
        scores = self.mean + self.head.all_pairs(item_emb[self.data.valid_items], profiles)
        return {"rmse": RMSE().calc(scores[truth.row, truth.col], truth.data)}


class _Click(_Contrastive):
    """A head tells a user's items from other users' items (binary cross-entropy).

    The negative for each (item, user) pair is the item with the user of another pair in the
    batch, so a step encodes no extra text.
    """

    def __init__(self, data: _Data, cfg: FineTuneConfig, dim: int) -> None:
        super().__init__(data, cfg)
        self.head = _PairHead(dim, scale=1.0 / cfg.temperature)
        self.extra = [self.head]

    def loss(self, embed: Embed, batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        import torch

        keep, _, targets = self.pairs(batch, rng)
        if len(keep) < 2:
            return torch.zeros((), requires_grad=True)
        z, u = embed(keep), torch.from_numpy(targets)
        logits = torch.cat([self.head(z, u), self.head(z, u.roll(1, dims=0))])
        labels = torch.cat([torch.ones(len(keep)), torch.zeros(len(keep))])
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)

    def validate(self, item_emb: np.ndarray, user_emb: np.ndarray) -> dict[str, float]:
        from warmstart.metrics import AUC

        users, profiles = self.held_out_profiles(user_emb)
        if users.size == 0:
            return {"auc": float("nan")}
        scores = self.head.all_pairs(item_emb[self.data.valid_items], profiles)
        return {"auc": AUC().calc(scores, self.data.valid[users][:, self.data.valid_items])}


class _Alignment(_Objective):
    """A linear head on the text embedding reproduces the item's ALS factors and their ranking.

    This trains the text for the cold-start bridge, so early stopping ranks the held-out items
    as the bridge would: a ridge map from the training items' embeddings to their factors,
    fitted afresh on each epoch's embeddings (so the untrained encoder is measured the same
    way), predicts the held-out items' factors, which are scored against the users' factors.
    """

    RIDGE = 1.0  # penalty of the validation map, for unit-length 384-d embeddings

    def __init__(self, data: _Data, cfg: FineTuneConfig, dim: int) -> None:
        import torch

        self.data, self.cfg = data, cfg
        self.user_factors, q = _cf_factors(data, cfg)
        self.item_factors = q
        scale = float(np.sqrt(np.mean(np.sum(q[data.items] ** 2, axis=1)))) or 1.0
        self.factors = torch.from_numpy(np.ascontiguousarray(q / scale, dtype=np.float32))
        self.head = torch.nn.Linear(dim, q.shape[1])
        self.extra = [self.head]

    def loss(self, embed: Embed, batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        import torch

        z = embed(batch)
        pred = self.head(z)
        target = self.factors[torch.from_numpy(batch)]
        mse = torch.nn.functional.mse_loss(pred, target)
        norm = torch.nn.functional.normalize
        return mse + _info_nce(norm(pred, dim=-1), norm(target, dim=-1), self.cfg.temperature)

    def validation_scores(
        self, item_emb: np.ndarray, user_emb: np.ndarray
    ) -> Callable[[np.ndarray], np.ndarray]:
        x = item_emb[self.data.items].astype(np.float64)
        gram = x.T @ x + self.RIDGE * np.eye(x.shape[1])
        weights = np.linalg.solve(gram, x.T @ self.item_factors[self.data.items])
        predicted = (item_emb[self.data.valid_items] @ weights).astype(np.float32)
        return lambda users: self.user_factors[users] @ predicted.T


def _objective(data: _Data, cfg: FineTuneConfig, dim: int) -> _Objective:
    if cfg.objective == "alignment":
        return _Alignment(data, cfg, dim)
    if cfg.objective == "rating":
        return _Rating(data, cfg, dim)
    if cfg.objective == "click":
        return _Click(data, cfg, dim)
    return _Contrastive(data, cfg)


# ---- checkpoints ------------------------------------------------------------------------
def _optimizer_arrays(optimizer: torch.optim.Optimizer) -> tuple[dict[str, np.ndarray], Any]:
    state = optimizer.state_dict()
    arrays = {
        f"{idx}.{key}": value.detach().cpu().numpy()
        for idx, slots in state["state"].items()
        for key, value in slots.items()
    }
    return arrays, state["param_groups"]


def _load_optimizer(
    optimizer: torch.optim.Optimizer, arrays: dict[str, np.ndarray], groups: Any
) -> None:
    import torch

    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in arrays.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = torch.from_numpy(value.copy())
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _module_state(modules: list[Any]) -> dict[str, np.ndarray]:
    return {
        f"extra{j}.{name}": p.detach().cpu().numpy().copy()
        for j, m in enumerate(modules)
        for name, p in m.named_parameters()
    }


def _load_module_state(modules: list[Any], arrays: dict[str, np.ndarray]) -> None:
    import torch

    with torch.no_grad():
        for j, m in enumerate(modules):
            for name, p in m.named_parameters():
                p.copy_(torch.from_numpy(arrays[f"extra{j}.{name}"].copy()))


# ---- the loop ---------------------------------------------------------------------------
@dataclass
class _Optimisation:
    """What updates the weights, and how many steps the whole run takes."""

    params: list[torch.nn.Parameter]  # the tower's trainable weights and the objective's heads
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    max_grad_norm: float
    steps_per_epoch: int
    total: int  # steps of all epochs, capped by `max_steps`

    def apply(self, loss: torch.Tensor) -> None:
        """One clipped gradient step, and the schedule's next rate."""
        import torch

        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()


@dataclass
class _Progress:
    """Where the run stands after an epoch: what a checkpoint holds and a resume restores."""

    epoch: int = 0  # the last finished epoch; 0: none yet
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, np.ndarray] = field(default_factory=dict)
    best_epoch: int = 0
    best_recall: float = float("nan")
    stale: int = 0  # epochs since the best one


@dataclass
class _Encoding:
    """The texts as the loop runs them: items with gradients in a step, everything without
    gradients in a refresh."""

    embed: Embed
    encode_items: Callable[[], np.ndarray]  # the `needed` items, in that order
    encode_users: Callable[[], np.ndarray]
    needed: np.ndarray  # items with training or validation interactions
    lengths: np.ndarray  # token length per catalogue item; 0 where not needed


def finetune(
    dataset: Dataset,
    config: FineTuneConfig | None = None,
    *,
    output: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    say: Callable[[str], None] = log.info,
) -> FineTuneResult:
    """Fine-tune the encoder on `dataset`'s interactions; checkpoint to `output` if given."""
    cfg = config or FineTuneConfig()
    start = time.perf_counter()
    out = Path(output) if output is not None else None
    data = _prepare(dataset, cfg)
    tower = TextTower(cfg)
    objective = _objective(data, cfg, tower.dim)
    opt = _optimisation(cfg, tower, objective, len(data.items))
    state = _resume(out, cfg, tower, objective, opt, say) if resume else _Progress()
    mlm_losses: list[float] = []
    if cfg.mlm_epochs and not resume:  # a checkpoint already holds the adapted weights
        mlm_losses = _adapt_to_domain(tower, data, progress, say)
    encoding = _encoding(tower, data, progress)
    figures = _refresh(data, cfg, tower, objective, encoding)
    if not resume:
        state.best_state, state.best_recall = tower.trainable_state(), figures["recall"]
        state.history.append({"epoch": 0, "step": 0, "loss": float("nan"), **figures})
        say(f"untrained encoder: {_describe(figures, cfg.validation_k)}")

    ckpt = out / CHECKPOINT if out is not None else None
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        if state.step >= opt.total or state.stale > cfg.patience:
            break  # done, or stopped early before a resume
        losses = _train_epoch(epoch, cfg, tower, objective, opt, encoding, state.step, progress)
        figures = _refresh(data, cfg, tower, objective, encoding)
        improved = _record_epoch(state, tower, epoch, losses, figures)
        if ckpt is not None:
            _write_checkpoint(ckpt, cfg, tower, objective, opt, state)
        say(
            f"epoch {epoch}: loss {np.mean(losses):.4f}, {_describe(figures, cfg.validation_k)}"
            f"{' (best)' if improved else ''}"
        )
        if state.stale > cfg.patience:
            say(f"stopping early: no better validation recall for {state.stale} epochs")
            break

    tower.load_trainable_state(state.best_state)
    result = FineTuneResult(
        tower=tower,
        history=state.history,
        best_epoch=state.best_epoch,
        best_recall=state.best_recall,
        seconds=time.perf_counter() - start,
        mlm_losses=mlm_losses,
    )
    if out is not None:
        write_outputs(result, out)
    return result


def _optimisation(
    cfg: FineTuneConfig, tower: TextTower, objective: _Objective, n_items: int
) -> _Optimisation:
    """AdamW over the trainable weights, warming up then decaying linearly over the run."""
    import torch

    params = tower.trainable_parameters() + [p for m in objective.extra for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(n_items / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(total, max(1, round(cfg.warmup_fraction * total)))
    )
    return _Optimisation(params, optimizer, scheduler, cfg.max_grad_norm, steps_per_epoch, total)


def resumable_checkpoint(out: Path | None, cfg: FineTuneConfig) -> dict[str, Any]:
    """The saved state (trainer.json) of `out`'s checkpoint, if a run with `cfg` can go on from
    it: checked before any data is read, and again when the run resumes."""
    meta_path = out / CHECKPOINT / "trainer.json" if out is not None else None
    if meta_path is None or not meta_path.is_file():
        raise DataNotFoundError(
            f"nothing to resume: no checkpoint in {out} (run without --resume to start)"
        )
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        saved = meta["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFormatError(f"{meta_path}: not a readable checkpoint ({exc})") from None
    if saved != cfg.model_dump(mode="json"):
        raise ConfigError(
            f"{meta_path.parent} was written with other fine-tuning settings; resume with the "
            "same settings, or start again in a new output folder"
        )
    return meta


def _resume(
    out: Path | None,
    cfg: FineTuneConfig,
    tower: TextTower,
    objective: _Objective,
    opt: _Optimisation,
    say: Callable[[str], None],
) -> _Progress:
    """Restore the checkpoint's weights, optimiser and schedule; return where the run stood.

    Only a checkpoint of the same settings resumes: another one would go on a different run.
    """
    meta = resumable_checkpoint(out, cfg)
    assert out is not None
    ckpt = out / CHECKPOINT
    weights = read_npz(ckpt / "weights.npz")
    tower.load_trainable_state({k: v for k, v in weights.items() if not k.startswith("extra")})
    _load_module_state(objective.extra, weights)
    _load_optimizer(opt.optimizer, read_npz(ckpt / "optimizer.npz"), meta["param_groups"])
    opt.scheduler.load_state_dict(meta["scheduler"])
    state = _Progress(
        epoch=int(meta["epoch"]),
        step=int(meta["step"]),
        history=meta["history"],
        best_state=read_npz(ckpt / "best.npz"),
        best_epoch=int(meta["best_epoch"]),
        best_recall=float(meta["best_recall"]),
        stale=int(meta["stale"]),
    )
    say(f"resuming after epoch {meta['epoch']} (step {state.step})")
    return state


def _adapt_to_domain(
    tower: TextTower, data: _Data, progress: bool, say: Callable[[str], None]
) -> list[float]:
    """Masked-language-model passes over the training items' texts; the loss of each pass."""
    from warmstart.finetune.domain import adapt_to_domain

    return adapt_to_domain(
        tower, [data.item_texts[i] for i in data.items], progress=progress, say=say
    )


def _encoding(tower: TextTower, data: _Data, progress: bool) -> _Encoding:
    """How the loop runs the texts. Only items with interactions (training or validation) take
    part: cold items in the catalogue are never trained on nor ranked here, so they are not
    encoded either."""
    needed = np.union1d(data.items, data.valid_items)
    texts = [data.item_texts[i] for i in needed]
    if tower.cacheable:
        return _cached_encoding(tower, data, needed, texts, progress)
    return _direct_encoding(tower, data, needed, texts, progress)


def _cached_encoding(
    tower: TextTower, data: _Data, needed: np.ndarray, texts: list[str], progress: bool
) -> _Encoding:
    """The frozen lower layers run once per text, here; steps and refreshes run only the rest."""
    local = np.full(len(data.item_texts), -1, dtype=np.int64)
    local[needed] = np.arange(len(needed))
    user_texted = any(has_text(t) for t in data.user_texts)
    states = tower.lower_states(texts, show_progress=progress)
    user_states = tower.lower_states(data.user_texts, show_progress=False) if user_texted else None
    lengths = np.zeros(len(data.item_texts), dtype=np.int64)
    lengths[needed] = states.lengths

    def embed(idx: np.ndarray) -> torch.Tensor:
        return tower.embed_states(states, local[idx])

    def encode_items() -> np.ndarray:
        return tower.encode_states(states, show_progress=progress)

    def encode_users() -> np.ndarray:
        if user_states is None:
            return np.zeros((len(data.user_texts), tower.dim), dtype=np.float32)
        return tower.encode_states(user_states, show_progress=False)

    return _Encoding(embed, encode_items, encode_users, needed, lengths)


def _direct_encoding(
    tower: TextTower, data: _Data, needed: np.ndarray, texts: list[str], progress: bool
) -> _Encoding:
    """Every text through the whole tower, each time (method 'full' trains every layer)."""
    lengths = np.zeros(len(data.item_texts), dtype=np.int64)
    lengths[needed] = tower.token_lengths(texts)

    def embed(idx: np.ndarray) -> torch.Tensor:
        return tower.embed([data.item_texts[i] for i in idx])

    def encode_items() -> np.ndarray:
        return tower.encode(texts, show_progress=progress)

    def encode_users() -> np.ndarray:
        return tower.encode(data.user_texts, show_progress=False)

    return _Encoding(embed, encode_items, encode_users, needed, lengths)


def _refresh(
    data: _Data, cfg: FineTuneConfig, tower: TextTower, objective: _Objective, encoding: _Encoding
) -> dict[str, float]:
    """Encode without gradients: the objective's new memory bank, and the validation figures
    of the weights as they stand."""
    item_emb = np.zeros((len(data.item_texts), tower.dim), dtype=np.float32)
    item_emb[encoding.needed] = encoding.encode_items()
    user_emb = encoding.encode_users()
    objective.refresh(item_emb, user_emb)
    scores = objective.validation_scores(item_emb, user_emb)
    recall = validation_recall(data, scores, cfg.validation_k)
    return {"recall": recall, **objective.validate(item_emb, user_emb)}


def _describe(figures: dict[str, float], k: int) -> str:
    """The validation figures as one phrase for the log."""
    extra = "".join(f", {name} {v:.4f}" for name, v in figures.items() if name != "recall")
    return f"validation recall@{k} {figures['recall']:.4f}{extra}"


def _epoch_batches(
    epoch: int, cfg: FineTuneConfig, objective: _Objective, items: np.ndarray, lengths: np.ndarray
) -> tuple[list[np.ndarray], np.random.Generator]:
    """The epoch's batches and the random stream its steps go on drawing from.

    Seeded by epoch, not carried over, so a resumed run draws what the whole run would have.
    """
    import torch

    rng = np.random.default_rng([cfg.seed, epoch])
    torch.manual_seed(cfg.seed * 1000 + epoch)
    order = rng.permutation(items)
    if objective.in_batch:
        return random_batches(order, cfg.batch_size), rng
    return length_batches(order, lengths, cfg.batch_size, rng), rng


def _train_epoch(
    epoch: int,
    cfg: FineTuneConfig,
    tower: TextTower,
    objective: _Objective,
    opt: _Optimisation,
    encoding: _Encoding,
    step: int,
    progress: bool,
) -> list[float]:
    """One pass over the training items, up to the run's last step; the loss of each step."""
    from warmstart._progress import tqdm

    batches, rng = _epoch_batches(epoch, cfg, objective, objective.data.items, encoding.lengths)
    tower.model.train()
    losses: list[float] = []
    bar = tqdm(
        total=min(opt.steps_per_epoch, opt.total - step),
        desc=f"epoch {epoch}/{cfg.epochs}",
        disable=not progress,
        unit="step",
    )
    with bar:
        for batch in batches[: opt.total - step]:
            loss = objective.loss(encoding.embed, batch, rng)
            opt.apply(loss)
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    return losses


def _record_epoch(
    state: _Progress,
    tower: TextTower,
    epoch: int,
    losses: list[float],
    figures: dict[str, float],
) -> bool:
    """Add the finished epoch to the history, keeping its weights if validation recall rose.

    Without validation items (recall NaN) every epoch counts as better: the last one is kept.
    """
    recall = figures["recall"]
    state.epoch, state.step = epoch, state.step + len(losses)
    state.history.append(
        {"epoch": epoch, "step": state.step, "loss": float(np.mean(losses)), **figures}
    )
    best = state.best_recall
    improved = math.isnan(best) or (not math.isnan(recall) and recall > best)
    if improved:
        state.best_state, state.best_recall = tower.trainable_state(), recall
        state.best_epoch, state.stale = epoch, 0
    else:
        state.stale += 1
    return improved


def _write_checkpoint(
    ckpt: Path,
    cfg: FineTuneConfig,
    tower: TextTower,
    objective: _Objective,
    opt: _Optimisation,
    state: _Progress,
) -> None:
    """One epoch's whole state, written to a temporary folder and swapped in."""
    with staged_dir(ckpt) as tmp:
        write_npz(tmp / "weights.npz", **tower.trainable_state(), **_module_state(objective.extra))
        arrays, groups = _optimizer_arrays(opt.optimizer)
        write_npz(tmp / "optimizer.npz", **arrays)
        write_npz(tmp / "best.npz", **state.best_state)
        write_json(
            tmp / "trainer.json",
            {
                "config": cfg.model_dump(mode="json"),
                "epoch": state.epoch,
                "step": state.step,
                "best_epoch": state.best_epoch,
                "best_recall": state.best_recall,
                "stale": state.stale,
                "history": state.history,
                "param_groups": groups,
                "scheduler": opt.scheduler.state_dict(),
            },
        )


MERGED = "merged"


def write_outputs(result: FineTuneResult, out: Path) -> None:
    """The best weights (`encoder.npz` + `encoder.json`), the same encoder merged into a plain
    model folder (`merged/`), the history and the learning curves."""
    out.mkdir(parents=True, exist_ok=True)
    result.tower.save_merged(out / MERGED)
    write_npz(out / "encoder.npz", **result.tower.trainable_state())
    write_json(
        out / "encoder.json",
        {
            "config": result.tower.config.model_dump(mode="json"),
            "best_epoch": result.best_epoch,
            "best_recall": result.best_recall,
            "seconds": round(result.seconds, 1),
            "history": result.history,
            "mlm_losses": result.mlm_losses,
        },
    )
    plot_history(result.history, out / "learning_curves.png")


def load_tower(directory: str | Path) -> TextTower:
    """A tower from `finetune`'s output folder, offline: packaged base weights + saved tensors."""
    directory = Path(directory)
    meta_path = directory / "encoder.json"
    if not meta_path.is_file():
        raise DataNotFoundError(f"{directory} holds no fine-tuned encoder (no encoder.json)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    tower = TextTower(FineTuneConfig(**meta["config"]))
    tower.load_trainable_state(read_npz(directory / "encoder.npz"))
    return tower


def plot_history(history: list[dict[str, float]], path: Path) -> Path:
    """Training loss and validation recall per epoch, side by side."""
    epochs = [h["epoch"] for h in history]
    fig = figure(9, 3.5)
    left, right = fig.subplots(1, 2)
    left.plot(epochs[1:], [h["loss"] for h in history[1:]], marker="o")
    left.set(title="training loss", xlabel="epoch")
    right.plot(epochs, [h["recall"] for h in history], marker="o", color="tab:green")
    right.set(title="validation recall (held-out items)", xlabel="epoch (0 = untrained)")
    return save_png(fig, path)
