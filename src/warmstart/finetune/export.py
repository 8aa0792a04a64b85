"""Export a text tower to ONNX and quantise it to int8, for `warmstart.text.OnnxEncoder`."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any

from warmstart._io import staged_dir, write_json
from warmstart.finetune.tower import FineTunedEncoder, TextTower
from warmstart.text.encoders import MissingDependencyError
from warmstart.text.onnx_encoder import META


def _pooled(model: Any) -> Any:
    """The transformer plus mean pooling and L2 normalisation, as one exportable module."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)
            hidden = hidden.last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return Pooled().eval()


def export_onnx(
    tower: TextTower,
    directory: str | Path,
    *,
    name: str | None = None,
    max_length: int | None = None,
) -> Path:
    """Write the tower (LoRA merged in) as fp32 and int8 ONNX, with its tokenizer, atomically.

    int8 is dynamic quantisation of the MatMul weights, per output channel (onnxruntime): the
    attention and feed-forward products that dominate CPU time. `max_length` defaults to the
    tower's training length.
    """
    try:
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise MissingDependencyError(
            f"ONNX export needs torch, onnx and onnxruntime ({exc}); run: make install"
        ) from exc
    directory = Path(directory)
    model = copy.deepcopy(tower.model)
    if tower.config.method == "lora":
        model = model.merge_and_unload()
    module = _pooled(model)
    sample = tower.tokenizer(["an example text", "a second one"], padding=True, return_tensors="pt")
    with staged_dir(directory) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
            torch.onnx.export(
                module,
                (sample["input_ids"], sample["attention_mask"]),
                str(tmp / "model.onnx"),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                    "embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # onnxruntime logs advice on the root logger
        try:
            quantize_dynamic(
                str(tmp / "model.onnx"),
                str(tmp / "model.int8.onnx"),
                per_channel=True,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
            )
        finally:
            root.setLevel(level)
        tower.tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        write_json(
            tmp / META,
            {
                "name": name or FineTunedEncoder(tower).name,
                "dim": tower.dim,
                "max_length": max_length or tower.config.max_length,
                "pad_id": int(tower.tokenizer.pad_token_id),
                "pad_token": str(tower.tokenizer.pad_token),
                "model": "model.onnx",
                "int8_model": "model.int8.onnx",
            },
        )
    return directory
