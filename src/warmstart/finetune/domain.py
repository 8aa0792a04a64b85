"""Domain-adaptive pre-training: a short masked-language-model pass over the catalogue's text.

MiniLM learned general English; a paper catalogue or a film database has words of its own.
Predicting masked tokens of the items' own texts, with the same parameters that the main
objective trains next (LoRA adapters or the top layers), adapts the encoder to that vocabulary
before it learns what people pick (Gururangan et al., "Don't Stop Pretraining", 2020).

The packaged MiniLM ships no masked-LM head, so a small one (dense + GELU + LayerNorm, output
weights tied to the frozen token embeddings) trains alongside and is then thrown away. Token
logits are computed for the masked positions only, which keeps a step cheap on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from warmstart.finetune.batching import length_batches, linear_schedule
from warmstart.finetune.tower import TextTower
from warmstart.text.core import has_text

if TYPE_CHECKING:
    import torch

MASK_PROBABILITY = 0.15


def _head(tower: TextTower) -> Any:
    import torch

    embeddings = tower.bert.embeddings.word_embeddings.weight  # (vocab, dim), tied

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transform = torch.nn.Sequential(
                torch.nn.Linear(tower.dim, tower.dim),
                torch.nn.GELU(),
                torch.nn.LayerNorm(tower.dim, eps=1e-12),
            )
            self.bias = torch.nn.Parameter(torch.zeros(embeddings.shape[0]))

        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            return self.transform(hidden) @ embeddings.T + self.bias

    return Head()


def adapt_to_domain(
    tower: TextTower,
    texts: Sequence[str],
    *,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> list[float]:
    """`tower.config.mlm_epochs` passes of masked-token prediction over `texts`; mean loss per pass.

    Trains the tower's trainable parameters in place. Deterministic for a given seed.
    """
    import torch
    from transformers import DataCollatorForLanguageModeling

    from warmstart._progress import tqdm

    cfg = tower.config
    texts = [t for t in texts if has_text(t)]
    if cfg.mlm_epochs == 0 or len(texts) < 2:
        return []
    ids = tower.tokenizer(texts, truncation=True, max_length=cfg.max_length)["input_ids"]
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    collator = DataCollatorForLanguageModeling(
        tower.tokenizer, mlm_probability=MASK_PROBABILITY, seed=cfg.seed
    )
    head = _head(tower)
    params = tower.trainable_parameters() + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = -(-len(texts) // cfg.batch_size)
    total = cfg.mlm_epochs * per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(total, max(1, round(cfg.warmup_fraction * total)))
    )
    torch.manual_seed(cfg.seed)
    tower.model.train()
    head.train()
    means: list[float] = []
    for epoch in range(1, cfg.mlm_epochs + 1):
        rng = np.random.default_rng([cfg.seed, 31, epoch])
        losses: list[float] = []
        bar = tqdm(
            total=per_epoch, desc=f"MLM {epoch}/{cfg.mlm_epochs}", disable=not progress, unit="step"
        )
        with bar:
            for batch in length_batches(rng.permutation(len(ids)), lengths, cfg.batch_size, rng):
                loss = _masked_loss(tower, head, collator([{"input_ids": ids[i]} for i in batch]))
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        means.append(float(np.mean(losses)))
        say(f"domain adaptation {epoch}/{cfg.mlm_epochs}: masked-LM loss {means[-1]:.4f}")
    return means


def _masked_loss(tower: TextTower, head: Any, batch: Any) -> torch.Tensor:
    import torch

    labels = batch["labels"]
    masked = labels != -100
    if not bool(masked.any()):
        return torch.zeros((), requires_grad=True)
    hidden = tower.token_states(batch["input_ids"], batch["attention_mask"])
    logits = head(hidden[masked])
    return torch.nn.functional.cross_entropy(logits, labels[masked])
