"""How close the service's int8 ONNX MiniLM (its query encoder) stays to fp32 MiniLM, text by
text, on real catalogues: the min and mean cosine, and how many texts fall below 0.99.

    .venv/bin/python benchmarks/int8_agreement.py --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from common import command_line, log, machine_info, write_result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--citeulike-texts", type=int, default=2000, help="abstracts, evenly spaced")
    p.add_argument("--cache-dir", type=Path, default=None, help="where the export is kept")
    p.add_argument("--output", type=Path, default=Path("runs/int8-agreement.json"))
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from warmstart.data import load_builtin
    from warmstart.finetune.export import base_onnx
    from warmstart.text.encoders import MiniLMEncoder
    from warmstart.text.onnx_encoder import OnnxEncoder

    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="int8-agreement-"))
    fast, reference = OnnxEncoder(base_onnx(cache), threads=1), MiniLMEncoder()
    out: dict[str, Any] = {}
    for name, n in (("ml-100k", None), ("citeulike-a", args.citeulike_texts)):
        texts = [t for t in load_builtin(name, args.data_dir).item_text if t]
        if n:
            texts = texts[:: max(1, len(texts) // n)][:n]
        a = reference.encode(texts, batch_size=64, show_progress=False)
        b = fast.encode(texts, batch_size=64, show_progress=False)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        worst = int(cos.argmin())
        out[name] = {
            "texts": len(texts),
            "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()),
            "below_0.99": int((cos < 0.99).sum()),
            "lowest_text": texts[worst][:120],
        }
        log(f"{name}: {out[name]}")
    write_result(
        args.output,
        {"command": command_line(), "machine": machine_info(("onnxruntime",)), "results": out},
    )
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
