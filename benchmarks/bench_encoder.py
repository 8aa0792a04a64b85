"""Encoder throughput: sentence-transformers fp32 vs the int8 ONNX path, on the same texts.

Both encode the same model (all-MiniLM-L6-v2, 256 tokens at most) from an empty cache, in the
same process, one after the other; the ONNX model is exported from the packaged weights first.

    .venv/bin/python benchmarks/bench_encoder.py --n 10000      # CiteULike-a abstracts
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from warmstart._io import write_json
from warmstart.data.builtin import load_builtin
from warmstart.finetune import FineTuneConfig, TextTower
from warmstart.finetune.export import export_onnx
from warmstart.text import MiniLMEncoder
from warmstart.text.onnx_encoder import OnnxEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="citeulike-a")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/encoder.json"))
    args = parser.parse_args()
    texts = [t for t in load_builtin(args.dataset).item_texts() if t.strip()][: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        tower = TextTower(FineTuneConfig(max_length=256))
        folder = export_onnx(tower, Path(tmp) / "onnx", name=MiniLMEncoder.MODEL)
        export_s = time.perf_counter() - start
        del tower
        results = {}
        vectors = {}
        for label, encoder in (
            ("sentence-transformers fp32", MiniLMEncoder()),
            ("onnx int8", OnnxEncoder(folder, int8=True)),
            ("onnx fp32", OnnxEncoder(folder, int8=False)),
        ):
            encoder.encode(texts[:64], show_progress=False)  # load and warm up, not timed
            start = time.perf_counter()
            vectors[label] = encoder.encode(texts, show_progress=True)
            seconds = time.perf_counter() - start
            results[label] = {
                "seconds": round(seconds, 2),
                "texts_per_s": round(len(texts) / seconds, 1),
            }
            print(f"{label}: {seconds:.1f} s, {len(texts) / seconds:.1f} texts/s", flush=True)
    base = vectors["sentence-transformers fp32"]
    for label in ("onnx int8", "onnx fp32"):
        cos = np.sum(vectors[label] * base, axis=1)
        results[label]["cosine_to_st_fp32"] = {
            "mean": round(float(cos.mean()), 4),
            "p1": round(float(np.percentile(cos, 1)), 4),
            "min": round(float(cos.min()), 4),
            "share_at_least_0.99": round(float(np.mean(cos >= 0.99)), 4),
        }
        results[label]["speedup"] = round(
            results["sentence-transformers fp32"]["seconds"] / results[label]["seconds"], 2
        )
    payload = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "dataset": args.dataset,
        "n_texts": len(texts),
        "export_seconds": round(export_s, 1),
        "results": results,
    }
    write_json(args.output, payload)
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
