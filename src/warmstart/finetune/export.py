"""Export a text tower to ONNX and quantise it to int8, for `warmstart.text.OnnxEncoder`.

The int8 model has to stay within cosine 0.99 of fp32 text by text, not only on average. Plain
dynamic quantisation of every MatMul did not (CiteULike-a: mean 0.993, but 6.6 % of the texts
below 0.99, the lowest at 0.974). Measured causes, and what this export does about each:

- MiniLM has outlier channels. A few LayerNorm outputs (channel 99 reaches ~30) and a few GELU
  units (up to ~25) are 10-15x larger than the median channel, and dynamic quantisation gives a
  whole activation tensor one scale, so every other channel keeps only a few levels.
  The GELU units that spike are computed in fp32 beside the int8 product (their columns of the
  up projection, their rows of the down projection: at most 8 units, so a few thousand
  multiply-adds per token). The inputs of attention and of the up projection are divided, per
  channel, by a smoothing factor that the weights absorb (SmoothQuant, alpha 0.5, only for
  channels above twice the median): their range shrinks about 4x at the cost of one Mul.
- x86 CPUs without VNNI (AVX2) multiply uint8 x int8 pairs into a saturating int16
  (VPMADDUBSW). Evened-out activations fill their 8 bits, and the products clip. Weights are
  therefore quantised to 7 bits (`reduce_range`), except those of the down projection, whose
  input stays small: there the full 8 bits measured better.
- Dynamic quantisation measures each activation's range per batch, so a text's vector
  depended on the texts batched with it (by up to 0.01 in cosine: a cached vector and a fresh
  one differed), and masked [PAD] rows, whose activations are extreme, widened the range of the
  real ones. The ranges are fixed at export instead (calibrated per tensor; static activation
  quantisation): vectors no longer depend on the batch, and agreement did not suffer.
- onnxruntime's transformer optimizer first fuses attention, LayerNorm and GELU: that is faster,
  and it gives the patterns above one shape to look for. Attention is exported in its eager
  form, which is the pattern the optimizer recognises.

Weights are int8 per output channel throughout. Channel ranges come from a fixed set of
calibration sentences, run on one thread, so an export is deterministic and offline: the same
tower always gives the same int8 model. If the optimizer finds nothing to fuse (another
architecture), the model is quantised plainly, and the export warns when its agreement with fp32
on the calibration sentences falls below 0.99.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from warmstart._io import staged_dir, write_json
from warmstart.finetune.tower import FineTunedEncoder, TextTower
from warmstart.text.core import MissingDependencyError
from warmstart.text.onnx_encoder import INT8_RECIPE, META

log = logging.getLogger(__name__)

# Varied on purpose (titles, abstracts, plots, product text, lists, several languages and
# scripts, very short and long), so that every outlier channel shows up.
CALIBRATION_TEXTS: tuple[str, ...] = (
    "Dynamo: a transparent dynamic optimization system",
    "The structure and function of complex networks",
    "Toy Story (1995). Animation, Children's, Comedy.",
    "romance, comedy",
    "A quiet film about a lighthouse keeper, his daughter and the sea that took her mother.",
    "Wireless noise-cancelling headphones with 30-hour battery life and a carrying case.",
    "Graph neural networks for predicting molecular properties from atoms and bonds.",
    "We study the problem of recommending items that no user has interacted with yet. Content "
    "features such as titles, abstracts and descriptions are mapped into the latent space of a "
    "matrix factorisation model, so that new items can be ranked as soon as they are added to "
    "the catalogue. Experiments on citation and movie data show consistent gains over "
    "popularity and pure content baselines, in particular for users with short histories.",
    "Protein folding is the physical process by which a polypeptide chain acquires its native "
    "three-dimensional structure. Misfolded proteins are implicated in several "
    "neurodegenerative diseases. Here we combine molecular dynamics simulations with "
    "single-molecule force spectroscopy to map the energy landscape of a small globular "
    "protein, and we identify an intermediate state that is stabilised by non-native contacts. "
    "The results suggest that kinetic traps play a larger role than previously assumed, and "
    "they offer a quantitative framework for interpreting folding experiments. " * 2,
    "Ein stiller Film über einen Leuchtturmwärter und das Meer.",
    "Un roman sur la mémoire, l'exil et la reconstruction d'une famille après la guerre.",
    "Una novela sobre la memoria y el exilio, contada por tres generaciones de mujeres.",
    "Исследование устойчивости нейронных сетей к шуму во входных данных.",
    "深層学習による画像認識の研究",
    "基于图神经网络的分子性质预测",
    "SELECT title, year FROM movies WHERE rating > 4 ORDER BY year DESC;",
    "iPhone 15 Pro, 256 GB, titanium — 6.1-inch display, USB-C, 48 MP camera.",
    "Q: How do I reset my password? A: Open Settings, choose Account, then Reset password.",
    "2001: A Space Odyssey",
    "x",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG!!!",
    "Hyperparameter optimisation; Bayesian methods; Gaussian processes; bandits; AutoML.",
    "A documentary following three chefs in Lagos, Lima and Hanoi as they reinvent street "
    "food for a new generation, told through markets, family recipes and late-night kitchens.",
    "Stochastic gradient descent converges for convex objectives under a decaying step size; "
    "we extend the analysis to non-convex losses with Polyak-Lojasiewicz conditions, and show "
    "matching lower bounds. " * 3,
)

_SMOOTH_ALPHA = 0.5  # SmoothQuant's migration strength
_SMOOTH_FROM = 2.0  # smooth channels whose range exceeds this many times the median channel's
_SPLIT_FROM = 3.0  # split off GELU units whose range exceeds this many times the median's
_SPLIT_MOST = 8  # at most this many GELU units per layer in fp32
_GELU_OPS = ("BiasGelu", "FastGelu")  # fused GELU(input + bias): GELU(0 + 0) == 0


def export_onnx(
    tower: TextTower,
    directory: str | Path,
    *,
    name: str | None = None,
    max_length: int | None = None,
) -> Path:
    """Write the tower (LoRA merged in) as fp32 and int8 ONNX, with its tokenizer, atomically.

    `model.onnx` is the plain fp32 graph (the reference); `model.int8.onnx` the fused, smoothed
    and quantised one described in the module docstring. `max_length` defaults to the tower's
    training length.
    """
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
        from onnxruntime.quantization import quantize_dynamic  # noqa: F401
        from onnxruntime.transformers.optimizer import optimize_model  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"ONNX export needs torch, onnx and onnxruntime ({exc}); run: make install"
        ) from exc
    directory = Path(directory)
    length = max_length or tower.config.max_length
    with staged_dir(directory) as tmp:
        shape = _export_fp32(tower, tmp / "model.onnx")
        feeds = _calibration_feeds(tower, length)
        with _quiet():
            report = _quantize_int8(tmp / "model.onnx", tmp / "model.int8.onnx", shape, feeds)
        agreement = _agreement(tmp / "model.onnx", tmp / "model.int8.onnx", feeds)
        if agreement < 0.99:
            log.warning(
                "int8 ONNX export agrees with fp32 only to cosine %.4f on the calibration "
                "sentences (%s); encode with int8=False or the torch tower if that matters",
                agreement,
                report,
            )
        tower.tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        write_json(
            tmp / META,
            {
                "name": name or FineTunedEncoder(tower).name,
                "dim": tower.dim,
                "max_length": length,
                "pad_id": int(tower.tokenizer.pad_token_id),
                "pad_token": str(tower.tokenizer.pad_token),
                "model": "model.onnx",
                "int8_model": "model.int8.onnx",
                "int8_recipe": INT8_RECIPE,
                "int8": {**report.as_json(), "calibration_min_cosine": round(agreement, 5)},
            },
        )
    return directory


def base_onnx(cache_dir: str | Path) -> Path:
    """The packaged MiniLM itself (no fine-tuning) exported by `export_onnx`, once per cache
    folder and recipe: `cache_dir/onnx/<name>-<recipe>`.

    Exporting takes about 25 s; processes starting together (`serve --workers N`) take a file
    lock, so one exports and the others load what it wrote.
    """
    import fcntl

    from warmstart.finetune.config import FineTuneConfig
    from warmstart.text.encoders import MiniLMEncoder

    name = MiniLMEncoder().name
    slug = "".join(c if c.isalnum() or c in "-." else "_" for c in name)
    folder = Path(cache_dir) / "onnx" / f"{slug}-{INT8_RECIPE}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / META).is_file():
            log.info("exporting %s to int8 ONNX in %s (once)", name, folder)
            # The top layer "trainable" but untrained: the tower is MiniLM's own weights.
            tower = TextTower(FineTuneConfig(method="top", layers=1))
            export_onnx(tower, folder, name=name, max_length=_MINILM_MAX_LENGTH)
    return folder


_MINILM_MAX_LENGTH = 256  # what sentence-transformers truncates all-MiniLM-L6-v2's input to


# ---- fp32 export ------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class _Shape:
    heads: int
    hidden: int


def _export_fp32(tower: TextTower, path: Path) -> _Shape:
    """The merged tower as plain fp32 ONNX, attention in its eager form (what the fuser knows)."""
    import torch

    model = copy.deepcopy(tower.model)
    if tower.config.method == "lora":
        model = model.merge_and_unload()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    else:  # older transformers read it from the config at call time
        model.config._attn_implementation = "eager"
    sample = tower.tokenizer(["an example text", "a second one"], padding=True, return_tensors="pt")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            _pooled(model),
            (sample["input_ids"], sample["attention_mask"]),
            str(path),
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
    return _Shape(int(model.config.num_attention_heads), int(model.config.hidden_size))


def _calibration_feeds(tower: TextTower, max_length: int) -> list[dict[str, np.ndarray]]:
    """The calibration sentences as model inputs, in batches of 8."""
    feeds = []
    for start in range(0, len(CALIBRATION_TEXTS), 8):
        batch = tower.tokenizer(
            list(CALIBRATION_TEXTS[start : start + 8]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        feeds.append(
            {
                "input_ids": np.asarray(batch["input_ids"], dtype=np.int64),
                "attention_mask": np.asarray(batch["attention_mask"], dtype=np.int64),
            }
        )
    return feeds


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's optimizer and quantiser log advice on the root logger and warn freely."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _session(model: Any) -> Any:
    """A one-thread CPU session (one thread: the same sums in the same order, every time)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


# ---- int8 -------------------------------------------------------------------------------------
@dataclass
class _Report:
    """What the int8 export did, for the metadata (and a warning, should agreement be poor)."""

    fused: dict[str, int] = field(default_factory=dict)
    smoothed: int = 0  # inputs divided by per-channel factors
    split_units: int = 0  # GELU units computed in fp32, over all layers
    quantised: int = 0  # MatMul and Attention nodes in int8
    static_inputs: int = 0  # activations quantised with a fixed (calibrated) range

    def as_json(self) -> dict[str, Any]:
        return {
            "fused": self.fused,
            "smoothed_inputs": self.smoothed,
            "fp32_gelu_units": self.split_units,
            "quantised_nodes": self.quantised,
            "static_activation_ranges": self.static_inputs,
        }

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.as_json().items())


def _quantize_int8(
    fp32: Path, out: Path, shape: _Shape, feeds: list[dict[str, np.ndarray]]
) -> _Report:
    """Fuse, smooth, split off the outlier GELU units, then quantise (see the module docstring)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    report = _Report()
    fused = optimize_model(
        str(fp32),
        model_type="bert",
        num_heads=shape.heads,
        hidden_size=shape.hidden,
        opt_level=0,  # the Python fusions only, not onnxruntime's own (they run at load)
        optimization_options=FusionOptions("bert"),
    )
    report.fused = {k: int(v) for k, v in fused.get_fused_operator_statistics().items() if v}
    fused.topological_sort()
    if not any(o.domain == "com.microsoft" for o in fused.model.opset_import):
        fused.model.opset_import.add(domain="com.microsoft", version=1)  # the fused ops' domain
    graph = _Graph(fused.model)
    ranges = _channel_ranges(fused.model, graph.calibrated_inputs(), feeds)
    down, side = [], []
    for node in graph.down_projections():
        units = _outliers(ranges[node.input[0]], _SPLIT_FROM, _SPLIT_MOST)
        side += graph.split_gelu_units(node, units)
        down.append(node.name)
        report.split_units += len(units)
    for node in graph.smoothable():
        report.smoothed += graph.smooth(node, _smoothing(ranges[node.input[0]]))
    model = graph.finish()
    extra = {"DefaultTensorType": TensorProto.FLOAT}  # contrib ops have no inferred types
    common: dict[str, Any] = {"per_channel": True, "weight_type": QuantType.QInt8}
    rest = out.with_name(out.name + ".7bit")
    quantize_dynamic(
        model,
        rest,
        op_types_to_quantize=["MatMul", "Attention"],
        nodes_to_exclude=side + down,
        reduce_range=True,
        extra_options=extra,
        **common,
    )
    if down:  # an empty nodes_to_quantize would mean every node
        quantize_dynamic(
            rest,
            out,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=down,
            reduce_range=False,
            extra_options=extra,
            **common,
        )
        rest.unlink()
    else:
        rest.replace(out)
    report.quantised = graph.quantisable
    report.static_inputs = _fix_activation_ranges(out, feeds)
    return report


def _calibration_values(
    model: Any, tensors: list[str], feeds: list[dict[str, np.ndarray]]
) -> Iterator[tuple[str, np.ndarray]]:
    """Each tensor's values at the real (unpadded) tokens, batch by calibration batch."""
    from onnx import TensorProto, helper

    probe = copy.deepcopy(model)
    known = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in known:
            probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = _session(probe)
    for feed in feeds:
        real = feed["attention_mask"].astype(bool)
        for name, value in zip(tensors, session.run(tensors, feed), strict=True):
            flat = value.reshape(-1, value.shape[-1])
            yield name, value[real] if value.shape[:2] == real.shape else flat


def _channel_ranges(
    model: Any, tensors: list[str], feeds: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Largest |value| per channel (last axis) of each tensor over the calibration tokens."""
    ranges: dict[str, np.ndarray] = {}
    for name, value in _calibration_values(model, tensors, feeds):
        top = np.abs(value).max(axis=0)
        ranges[name] = np.maximum(ranges[name], top) if name in ranges else top
    return ranges


def _fix_activation_ranges(path: Path, feeds: list[dict[str, np.ndarray]]) -> int:
    """Replace each DynamicQuantizeLinear by a QuantizeLinear of the calibrated range.

    The scale and zero point are computed as DynamicQuantizeLinear computes them per batch
    (uint8, the range stretched to include 0), once, from the calibration sentences.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    dynamic = [n for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"]
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for name, value in _calibration_values(model, sorted({n.input[0] for n in dynamic}), feeds):
        low[name] = min(low.get(name, 0.0), float(value.min()))
        high[name] = max(high.get(name, 0.0), float(value.max()))
    nodes = []
    for node in model.graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        x, (quantised, scale_name, zero_name) = node.input[0], node.output
        scale = (high[x] - low[x]) / 255.0 or 1.0
        zero = np.clip(np.round(-low[x] / scale), 0, 255)
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(scale, dtype=np.float32), scale_name),
                numpy_helper.from_array(np.array(zero, dtype=np.uint8), zero_name),
            ]
        )
        nodes.append(
            helper.make_node(
                "QuantizeLinear", [x, scale_name, zero_name], [quantised], name=node.name
            )
        )
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(path))
    return len(dynamic)


def _outliers(top: np.ndarray, factor: float, most: int) -> np.ndarray:
    """Channels whose range exceeds `factor` times the median channel's, the largest `most`."""
    order = np.argsort(-top, kind="stable")[:most]
    return np.sort(order[top[order] > factor * np.median(top)])


def _smoothing(top: np.ndarray) -> np.ndarray:
    """SmoothQuant factors that only shrink channels above `_SMOOTH_FROM` x the median."""
    ratio = np.maximum(1.0, top / (_SMOOTH_FROM * np.median(top)))
    return (ratio**_SMOOTH_ALPHA).astype(np.float32)


class _Graph:
    """The fused graph and the three patterns that the int8 recipe rewrites."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.graph = model.graph
        self.weights = {t.name: t for t in self.graph.initializer}
        self.uses: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.quantisable = sum(1 for n in self.graph.node if self._weighted(n))
        self._before: dict[str, list[Any]] = {}
        self._after: dict[str, list[Any]] = {}

    # -- patterns
    def _weighted(self, node: Any) -> bool:
        """A MatMul by a constant, or a fused Attention (its QKV weights are constant)."""
        if node.op_type not in ("MatMul", "Attention") or len(node.input) < 2:
            return False
        return node.input[1] in self.weights and self.uses[node.input[1]] == 1

    def _gelu_after(self, node: Any) -> Any | None:
        """The fused GELU that reads this MatMul's output (with a constant bias), if any."""
        users = self.consumers.get(node.output[0], [])
        if node.op_type != "MatMul" or len(users) != 1:
            return None
        gelu = users[0]
        ok = gelu.op_type in _GELU_OPS and len(gelu.input) == 2 and gelu.input[0] == node.output[0]
        return gelu if ok and gelu.input[1] in self.weights else None

    def down_projections(self) -> list[Any]:
        """MatMuls whose input is a fused GELU fed by a constant up projection."""
        found = []
        for node in self.graph.node:
            if node.op_type != "MatMul" or not self._weighted(node):
                continue
            gelu = self.producer.get(node.input[0])
            if gelu is None or gelu.op_type not in _GELU_OPS:
                continue
            up = self.producer.get(gelu.input[0])
            if up is not None and self._weighted(up) and self._gelu_after(up) is gelu:
                found.append(node)
        return found

    def smoothable(self) -> list[Any]:
        """Fused attention, and the up projections (MatMul then GELU)."""
        return [
            n
            for n in self.graph.node
            if self._weighted(n) and (n.op_type == "Attention" or self._gelu_after(n) is not None)
        ]

    def calibrated_inputs(self) -> list[str]:
        names = [n.input[0] for n in self.down_projections() + self.smoothable()]
        return sorted(set(names))

    # -- rewrites
    def _array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return np.array(numpy_helper.to_array(self.weights[name]), dtype=np.float32)

    def _set(self, name: str, value: np.ndarray) -> None:
        from onnx import numpy_helper

        self.weights[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    def _add(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.graph.initializer.append(numpy_helper.from_array(value, name))
        self.weights[name] = self.graph.initializer[-1]
        return name

    def split_gelu_units(self, down: Any, units: np.ndarray) -> list[str]:
        """Compute these GELU units in fp32 beside the int8 path; returns the side MatMuls."""
        from onnx import helper

        if not len(units):
            return []
        gelu = self.producer[down.input[0]]
        up = self.producer[gelu.input[0]]
        w1, b1 = self._array(up.input[1]), self._array(gelu.input[1])
        w2 = self._array(down.input[1])
        p = down.name
        side_up = self._add(f"{p}_fp32_up", np.ascontiguousarray(w1[:, units]))
        side_bias = self._add(f"{p}_fp32_bias", np.ascontiguousarray(b1[units]))
        side_down = self._add(f"{p}_fp32_down", np.ascontiguousarray(w2[units]))
        w1[:, units], b1[units], w2[units] = 0.0, 0.0, 0.0  # int8 path: these units are 0
        self._set(up.input[1], w1)
        self._set(gelu.input[1], b1)
        self._set(down.input[1], w2)
        attrs = {a.name: helper.get_attribute_value(a) for a in gelu.attribute}
        out, part = down.output[0], f"{p}_int8_part"
        down.output[0] = part
        self._after.setdefault(down.name, []).extend(
            [
                helper.make_node("MatMul", [up.input[0], side_up], [f"{p}_z"], name=f"{p}_fp32_up"),
                helper.make_node(
                    gelu.op_type,
                    [f"{p}_z", side_bias],
                    [f"{p}_g"],
                    name=f"{p}_fp32_gelu",
                    domain=gelu.domain,
                    **attrs,
                ),
                helper.make_node(
                    "MatMul", [f"{p}_g", side_down], [f"{p}_y"], name=f"{p}_fp32_down"
                ),
                helper.make_node("Add", [part, f"{p}_y"], [out], name=f"{p}_sum"),
            ]
        )
        return [f"{p}_fp32_up", f"{p}_fp32_down"]

    def smooth(self, node: Any, factors: np.ndarray) -> bool:
        """Divide the input by per-channel factors that the weight rows absorb (exact in fp32)."""
        from onnx import helper

        if np.all(factors == 1.0):
            return False
        weight = node.input[1]
        self._set(weight, self._array(weight) * factors[:, None])
        scale = self._add(f"{node.name}_smoothing", (1.0 / factors).astype(np.float32))
        smoothed = f"{node.name}_smoothed_input"
        self._before.setdefault(node.name, []).append(
            helper.make_node("Mul", [node.input[0], scale], [smoothed], name=scale)
        )
        node.input[0] = smoothed
        return True

    def finish(self) -> Any:
        """The model with the new nodes in place (topologically sorted, as ONNX requires)."""
        nodes = []
        for node in self.graph.node:
            nodes += [*self._before.get(node.name, []), node, *self._after.get(node.name, [])]
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        self._before.clear()
        self._after.clear()
        return self.model


def _agreement(fp32: Path, int8: Path, feeds: list[dict[str, np.ndarray]]) -> float:
    """The lowest cosine between the two models' embeddings of the calibration sentences."""
    a, b = _session(str(fp32)), _session(str(int8))
    cosines = [np.sum(a.run(None, f)[0] * b.run(None, f)[0], axis=1) for f in feeds]
    return float(np.concatenate(cosines).min())
