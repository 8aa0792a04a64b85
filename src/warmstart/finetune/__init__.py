"""Fine-tuning the text encoder on interactions (LoRA, top layers or full), on CPU."""

from warmstart.finetune.config import FineTuneConfig
from warmstart.finetune.tower import FineTunedEncoder, TextTower
from warmstart.finetune.trainer import FineTuneResult, finetune, load_tower

__all__ = [
    "FineTuneConfig",
    "FineTuneResult",
    "FineTunedEncoder",
    "TextTower",
    "finetune",
    "load_tower",
]
