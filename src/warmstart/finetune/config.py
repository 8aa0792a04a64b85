"""Settings for fine-tuning the text encoder on interactions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FineTuneConfig(BaseModel):
    """What to train, how, and for how long. Defaults suit a 2-core CPU and MiniLM.

    objective:
      - `contrastive` (default): each item's text is pulled towards the profile of a user who
        picked it (the mean embedding of that user's other items, and their own text), against
        the other pairs of the batch, with temperature `temperature` (InfoNCE, both directions).
      - `alignment`: a linear head on the text embedding is trained to reproduce the item's warm
        collaborative factors and their ranking among the batch (distillation from ALS).
      - `rating`: a bilinear head on (item text, user profile) predicts the rating, squared
        error; validation also reports the RMSE of the held-out items' ratings.
      - `click`: the same head tells a user's items from another user's (binary cross-entropy,
        the other pairs of the batch as negatives); validation also reports AUC.
      Whatever the objective, early stopping follows recall of the held-out items.
    mlm_epochs: passes of masked-language modelling over the texts of the items with training
    interactions, before the objective (domain-adaptive pre-training; 0: none). It trains the
    same parameters; epoch 0 of the history (the fallback if no epoch helps) is then the
    adapted encoder.
    hard_negatives: contrastive only: add, for each pair, an item the ALS model ranks among the
    user's top `hard_negative_pool` that they never picked (one more text per pair and step).
    method: `lora` adapters on the attention projections (default), the whole top `layers`
    transformer layers (`top`), or `full` fine-tuning of everything.
    layers: how many of the top transformer layers train (LoRA adapters on them, or the whole
    layers); None: all of them. The layers below never change, so their output for each text is
    computed once and cached, and a training step runs only the top `layers`: with 2 of
    MiniLM's 6 layers a step costs about a third. `full` trains everything and ignores it.
    """

    # strict like the model configs (this package does not import warmstart.models)
    model_config = ConfigDict(extra="forbid", frozen=True)

    objective: Literal["contrastive", "alignment", "rating", "click"] = "contrastive"
    method: Literal["lora", "top", "full"] = "lora"
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.1, ge=0, lt=1)
    lora_targets: tuple[str, ...] = ("query", "key", "value")
    layers: int | None = Field(default=2, ge=1)
    epochs: int = Field(default=3, ge=1)
    max_steps: int | None = Field(default=None, ge=1)  # stop after this many steps in all
    batch_size: int = Field(default=32, ge=2)
    learning_rate: float | None = Field(default=None, gt=0)  # None: see `lr`
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    temperature: float = Field(default=0.05, gt=0)
    max_length: int = Field(default=128, ge=8)  # tokens per text while training and encoding
    mlm_epochs: int = Field(default=0, ge=0)
    hard_negatives: bool = False
    hard_negative_pool: int = Field(default=50, ge=1)
    history_items: int = Field(default=20, ge=1)  # a user's items pooled into their profile
    validation_fraction: float = Field(default=0.05, ge=0, lt=1)  # items held out, for stopping
    validation_k: int = Field(default=20, ge=1)
    patience: int = Field(default=1, ge=0)  # epochs without a better validation recall
    seed: int = 0
    num_threads: int = Field(default=0, ge=0)  # 0: torch's default

    @model_validator(mode="after")
    def _hard_negatives_are_contrastive(self) -> FineTuneConfig:
        if self.hard_negatives and self.objective != "contrastive":
            raise ValueError(
                f"hard_negatives applies to the contrastive objective, not {self.objective!r}"
            )
        return self

    @property
    def lr(self) -> float:
        """`learning_rate`, else 5e-5 for whole layers, and for LoRA 5e-4 (alignment, rating)
        or 2e-4 (contrastive, click). With in-batch negatives at temperature 0.05, 5e-4 overfit
        within the first epoch of 3 on ML-100K (validation recall 0.372 -> 0.354); 2e-4 gave
        0.403 after one epoch (1e-4: 0.392)."""
        if self.learning_rate is not None:
            return self.learning_rate
        if self.method != "lora":
            return 5e-5
        return 2e-4 if self.objective in ("contrastive", "click") else 5e-4
