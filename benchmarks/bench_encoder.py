"""Encoder throughput: sentence-transformers fp32 vs the int8 ONNX path, on the same texts.

All encode the same model (all-MiniLM-L6-v2, 256 tokens at most) from an empty cache, in the
same process; the ONNX model is exported from the packaged weights first. The texts are cut
into `--rounds` consecutive slices, and each round runs every encoder on one slice, in a
rotating order: a machine shared with other jobs then slows all encoders alike, instead of
whichever happened to run while it was busiest. Times are summed over the rounds.

Agreement is the cosine of each text's vector to sentence-transformers fp32: mean, 1st
percentile, minimum, and the share of texts at 0.99 or more (the issue's bar, text by text).

    .venv/bin/python benchmarks/bench_encoder.py --n 10000      # CiteULike-a texts
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from common import machine_line, usable_cores

from warmstart._io import write_json
from warmstart.data.builtin import load_builtin
from warmstart.finetune import FineTuneConfig, TextTower
from warmstart.finetune.export import export_onnx
from warmstart.text import MiniLMEncoder, TextEncoder
from warmstart.text.onnx_encoder import META, OnnxEncoder

BASE = "sentence-transformers fp32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="citeulike-a")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/encoder.json"))
    args = parser.parse_args()
    texts = [t for t in load_builtin(args.dataset).item_texts() if t.strip()][: args.n]
    slices = np.array_split(np.arange(len(texts)), max(1, min(args.rounds, len(texts))))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        tower = TextTower(FineTuneConfig(max_length=256))
        folder = export_onnx(tower, Path(tmp) / "onnx", name=MiniLMEncoder.MODEL)
        export_s = time.perf_counter() - start
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        del tower
        encoders: dict[str, TextEncoder] = {
            BASE: MiniLMEncoder(),
            "onnx int8": OnnxEncoder(folder, int8=True),
            "onnx fp32": OnnxEncoder(folder, int8=False),
        }
    for encoder in encoders.values():
        encoder.encode(texts[:64], show_progress=False)  # load and warm up, not timed
    labels = list(encoders)
    seconds = dict.fromkeys(labels, 0.0)
    parts: dict[str, list[np.ndarray]] = {label: [] for label in labels}
    for r, idx in enumerate(slices):
        batch = [texts[i] for i in idx]
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            start = time.perf_counter()
            parts[label].append(encoders[label].encode(batch, show_progress=False))
            seconds[label] += time.perf_counter() - start
        done = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
        print(f"round {r + 1}/{len(slices)}: {done}", flush=True)
    vectors = {label: np.concatenate(parts[label]) for label in labels}
    results: dict[str, dict[str, Any]] = {}
    for label in labels:
        results[label] = {
            "seconds": round(seconds[label], 2),
            "texts_per_s": round(len(texts) / seconds[label], 1),
            "speedup": round(seconds[BASE] / seconds[label], 2),
        }
        if label != BASE:
            cos = np.sum(vectors[label] * vectors[BASE], axis=1)
            results[label]["cosine_to_st_fp32"] = {
                "mean": round(float(cos.mean()), 4),
                "p1": round(float(np.percentile(cos, 1)), 4),
                "min": round(float(cos.min()), 4),
                "share_at_least_0.99": round(float(np.mean(cos >= 0.99)), 4),
                "texts_below_0.99": int(np.sum(cos < 0.99)),
            }
    payload = {
        "date": date.today().isoformat(),
        "machine": machine_line(usable_cores(), python=False),
        "dataset": args.dataset,
        "n_texts": len(texts),
        "rounds": len(slices),
        "export_seconds": round(export_s, 1),
        "int8_recipe": meta.get("int8_recipe"),
        "int8_export": meta.get("int8"),
        "results": results,
    }
    write_json(args.output, payload)
    print(json.dumps(payload, indent=2))
    print(_table(results))


def _table(results: dict[str, dict[str, Any]]) -> str:
    """The results as the Markdown table BENCHMARKS.md keeps."""
    rows = [
        "| encoder | seconds | texts/s | speed-up | cosine to ST fp32: mean / 1st pct / min "
        "| share ≥ 0.99 |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for label, r in results.items():
        cos = r.get("cosine_to_st_fp32")
        agreement = f"{cos['mean']:.4f} / {cos['p1']:.4f} / {cos['min']:.4f}" if cos else ""
        share = f"{100 * cos['share_at_least_0.99']:.2f} %" if cos else ""
        rows.append(
            f"| {label} | {r['seconds']:.1f} | {r['texts_per_s']} | {r['speedup']:.2f}× "
            f"| {agreement} | {share} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
