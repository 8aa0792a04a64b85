"""warmstart-ft variants on CiteULike-a's DropoutNet *validation* papers (test papers unseen).

`warmstart evaluate --split dropoutnet` tests on the split's 2,378 test papers and never uses
its 1,018 validation papers. This script does the reverse for development: the validation
papers are the cold items ranked, the test papers are removed from training like them and are
never scored, so choosing a fine-tuning setting here reads no test interaction.

    .venv/bin/python benchmarks/ft_dev.py --model warmstart \\
        --model 'warmstart-ft:{"finetune": {"epochs": 2}}'
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence

from warmstart.cli.data_options import DataSpec
from warmstart.data.builtin import citeulike_dropoutnet_split
from warmstart.eval.runner import evaluate_segment
from warmstart.eval.splits import cold_item_split, dropoutnet_items
from warmstart.registry import model_class
from warmstart.text import encoder_from_name


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="name or name:{json}")
    parser.add_argument("--ks", default="10,20,50")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    spec = DataSpec(dataset="citeulike-a")
    data = spec.load()
    parts = dropoutnet_items(citeulike_dropoutnet_split(spec.data_dir), data)
    split = cold_item_split(data, test_items=parts["vali"], validation_items=parts["test"])
    cold = next(s for s in split.segments if s.name == "cold")
    ks = tuple(int(k) for k in args.ks.split(","))
    encoder = encoder_from_name("default")
    for text in args.model:
        name, _, params = text.partition(":")
        model = model_class(name)(**(json.loads(params) if params else {}))
        if name == "warmstart":
            model.set_encoder(encoder)
        start = time.perf_counter()
        model.fit(split.train)
        fit_s = time.perf_counter() - start
        values = evaluate_segment(model, cold, data, ks, progress=False)[0]
        figures = ", ".join(f"{m} {v.mean():.4f}" for m, v in values.items())
        history = getattr(model, "finetune_history_", [])
        epochs = ", ".join(f"{h['recall']:.4f}" for h in history)
        print(
            f"{text}\n  {figures}\n  fit {fit_s:.0f} s; fine-tune validation {epochs}", flush=True
        )


if __name__ == "__main__":
    main()
