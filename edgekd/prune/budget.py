"""Pick the student shape from a latency budget measured on this machine.

A candidate shape (layers, hidden width, heads, FFN width) is the teacher's architecture with new
sizes and random weights (latency depends on shapes, not values), exported with torch.onnx and
dynamically quantized to int8 exactly as the quantize stage does, then timed batch-1 with ONNX Runtime
at the target's thread count: warm-up calls, then the median of ``repeats`` calls cycling over a fixed
set of inputs of one length (thread CPU time at one thread: see :func:`latency_clock`). The teacher is
timed the same way, as fp32 ONNX, for ``speedup`` targets.

Which shape wins (an accuracy proxy, since accuracy cannot be measured before distillation): more
layers first, then a wider hidden (residual) stream, then more heads, then a wider FFN, compared in that
order. Depth first because compact students lose more from losing depth than width (Turc et al. 2019,
"Well-Read Students Learn Better"); the hidden width next because every layer and the embeddings read
and write it; heads before FFN because the FFN is two thirds of a layer's matmul work at these lengths,
so thinning it buys the most latency. A most-parameters rule was not used: the word embeddings are half
of a small encoder's parameters (11.9M of 22.7M in MiniLM-L6), so it would mostly reward hidden width
and ignore depth. The lexicographic rule also keeps the search cheap: latency grows along every axis,
so each axis is a binary search with the later axes at their smallest values, a handful of timings
instead of the whole grid (see :func:`lexicographic_choice`).
"""

import logging
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import nn

from edgekd.errors import ConfigError
from edgekd.export.config import ExportConfig
from edgekd.export.core import export_with_torch
from edgekd.models.arch import arch_of, base_model, encoder_layers, layer_modules, resize_layer
from edgekd.models.io import count_parameters
from edgekd.ort import feed, make_session
from edgekd.preflight import usable_positions
from edgekd.prune.config import PruneConfig, PruneTarget
from edgekd.prune.core import kept_width
from edgekd.prune.layers import layers_kept_count
from edgekd.quantize.core import quantize_dynamic_int8

log = logging.getLogger(__name__)

OPSET = ExportConfig.model_fields["opset"].default  # the export stage's default graph
# Candidates get a vocabulary this small: a batch-1 lookup reads `length` rows whatever the table size
# (a MiniLM-shaped int8 model timed 3.21 ms with 30522 rows, 3.22 ms with 1024), and the smaller table
# halves export + quantize time per candidate. Parameter counts are reported for the real vocabulary.
CANDIDATE_VOCAB = 1024
INPUT_ROWS = 8  # distinct token rows the timed calls cycle over


@dataclass(frozen=True)
class Candidate:
    """One grid point, in the terms the prune config uses."""

    layers: int
    hidden_ratio: float
    head_ratio: float
    ffn_ratio: float


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int  # per layer; head_dim stays the teacher's
    ffn: int


@dataclass(frozen=True)
class TeacherDims:
    layers: int
    hidden: int
    heads: int
    head_dim: int
    ffn: int

    @classmethod
    def of(cls, model: nn.Module) -> "TeacherDims":
        arch = arch_of(model)
        parts = layer_modules(model, encoder_layers(model)[0])
        heads = getattr(parts["attention"], arch.heads_attr)
        return cls(len(encoder_layers(model)), parts["ffn_out"].out_features, heads,
                   parts["q"].out_features // heads, parts["ffn_in"].out_features)


def kept_heads(heads: int, ratio: float) -> int:
    """Heads left per layer: torch-pruning's local head pruning removes ceil(ratio * heads)."""
    return heads - math.ceil(ratio * heads)


def shape_of(c: Candidate, dims: TeacherDims, multiple_of: int = 1) -> Shape:
    """The sizes prune() produces for these ratios (widths rounded as ``PruneConfig.multiple_of`` says)."""
    hidden = kept_width(dims.hidden, c.hidden_ratio, multiple_of) if c.hidden_ratio > 0 else dims.hidden
    ffn = kept_width(dims.ffn, c.ffn_ratio, multiple_of) if c.ffn_ratio > 0 else dims.ffn
    return Shape(c.layers, hidden, kept_heads(dims.heads, c.head_ratio), ffn)


@dataclass
class BudgetResult:
    candidate: Candidate
    shape: Shape
    predicted_latency_ms: float  # measured on the random-weight candidate
    teacher_latency_ms: float  # fp32 ONNX teacher, same inputs and threads
    budget_ms: float
    threads: int
    sequence_length: int
    seconds: float  # the whole search
    candidates: list[dict]  # every timed shape, in timing order

    def metrics(self) -> dict:
        return {"chosen": asdict(self.shape), "predicted_latency_ms": round(self.predicted_latency_ms, 4),
                "predicted_speedup": round(self.teacher_latency_ms / self.predicted_latency_ms, 3),
                "teacher_latency_ms": round(self.teacher_latency_ms, 4), "budget_ms": round(self.budget_ms, 4),
                "threads": self.threads, "clock": "thread_cpu" if self.threads == 1 else "wall",
                "sequence_length": self.sequence_length,
                "search_seconds": round(self.seconds, 1), "candidates": self.candidates}


def _axis(values, size_of) -> list:
    """``values`` ordered largest resulting size first, one value per distinct size."""
    out, seen = [], set()
    for value in sorted(values, key=size_of, reverse=True):
        if size_of(value) not in seen:
            seen.add(size_of(value))
            out.append(value)
    return out


def candidate_axes(model: nn.Module, target: PruneTarget, multiple_of: int = 1) -> list[list]:
    """[layer counts, hidden ratios, head ratios, FFN ratios], each ordered from preferred (largest) to smallest."""
    dims, grid = TeacherDims.of(model), target.candidates
    layers = grid.layers or list(range(1, dims.layers + 1))
    if max(layers) > dims.layers:
        raise ConfigError(f"prune.target.candidates.layers: {sorted(layers)} asks for more than the teacher's "
                          f"{dims.layers} layers; allowed: 1..{dims.layers}")
    bad = [r for r in grid.head_ratios if kept_heads(dims.heads, r) < 1]
    if bad:
        raise ConfigError(f"prune.target.candidates.head_ratios: {bad} remove every one of the {dims.heads} heads; "
                          f"allowed: up to {(dims.heads - 1) / dims.heads:.3g}")
    if arch_of(model).family == "mpnet" and any(r > 0 for r in grid.head_ratios):
        raise ConfigError("prune.target.candidates.head_ratios: head pruning is not supported for MPNet; use [0.0]")
    return [
        _axis(layers, lambda n: n),
        _axis(grid.hidden_ratios, lambda r: shape_of(Candidate(1, r, 0.0, 0.0), dims, multiple_of).hidden),
        _axis(grid.head_ratios, lambda r: kept_heads(dims.heads, r)),
        _axis(grid.ffn_ratios, lambda r: shape_of(Candidate(1, 0.0, 0.0, r), dims, multiple_of).ffn),
    ]


def build_candidate(config, shape: Shape, head_dim: int, vocab: int) -> nn.Module:
    """A random-weight classifier of ``config``'s family with ``shape`` and a ``vocab``-row embedding table."""
    from transformers import AutoModelForSequenceClassification

    arch = arch_of(config)
    build = config.__class__.from_dict(config.to_dict())
    for key, value in ((arch.cfg_layers, shape.layers), (arch.cfg_hidden, shape.hidden), (arch.cfg_ffn, shape.ffn)):
        setattr(build, key, value)
    setattr(build, arch.cfg_heads, 1)  # one head divides any width; the real head count is set per layer below
    build.vocab_size = vocab
    model = AutoModelForSequenceClassification.from_config(build, attn_implementation="eager")
    for layer in encoder_layers(model):
        resize_layer(model, layer, shape.hidden, shape.heads, head_dim, shape.ffn)
    setattr(model.config, arch.cfg_heads, shape.heads)
    return model.eval()


def timing_inputs(vocab: int, pad_id: int, length: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """INPUT_ROWS (input_ids, attention_mask) pairs [1, length], seeded, no padding (and no pad token:
    RoBERTa-style models would count it as padding in their position ids)."""
    rng = np.random.default_rng(0)
    tokens = np.setdiff1d(np.arange(vocab), [pad_id])
    return [(rng.choice(tokens, size=(1, length)).astype(np.int64), np.ones((1, length), dtype=np.int64))
            for _ in range(INPUT_ROWS)]


def latency_clock(threads: int):
    """The clock candidates are timed with. One thread: ONNX Runtime computes on the calling thread, and that
    thread's CPU time is what the call costs on an idle machine, whatever other processes do (on this shared
    machine, the MiniLM teacher took 17-18 ms of wall time and 5.2 ms of thread CPU time per call with the
    load at 17; the bench measured 4.8 ms on a quiet machine). More threads: wall time, since the pool's
    workers spin and their CPU time is not the latency."""
    return time.thread_time if threads == 1 else time.perf_counter


def median_latency_ms(path: Path, inputs, threads: int, warmup: int, repeats: int) -> float:
    """Median batch-1 latency of the ONNX model at ``path`` over ``repeats`` calls cycling through ``inputs``."""
    session, clock = make_session(path, threads), latency_clock(threads)
    feeds = [feed(session, ids, mask) for ids, mask in inputs]
    for i in range(warmup):
        session.run(None, feeds[i % len(feeds)])
    times = []
    for i in range(repeats):
        start = clock()
        session.run(None, feeds[i % len(feeds)])
        times.append(clock() - start)
    return 1e3 * statistics.median(times)


def _binary_search(values: list, fits) -> object:
    """The first of ``values`` (ordered slowest first) that fits, given that the last one fits."""
    lo, hi = 0, len(values) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(values[mid]):
            hi = mid
        else:
            lo = mid + 1
    return values[hi]


def lexicographic_choice(axes: list[list], fits) -> tuple | None:
    """The preferred point of the grid ``axes`` (each ordered preferred = slowest first) for which
    ``fits(point)`` holds, assuming latency grows along every axis; None when even the fastest point misses.

    The full point is tried first (a generous budget costs one timing). Otherwise one axis is fixed at a
    time, largest first, with the axes after it at their smallest: the probe with the axis at its smallest
    value is the last probe that fitted, so every binary search starts from a known fit, and the returned
    point was itself probed. ``fits`` is called O(sum of log2 axis sizes) times, not once per grid point.
    """
    full, fastest = tuple(a[0] for a in axes), tuple(a[-1] for a in axes)
    if fits(full):
        return full
    if not fits(fastest):
        return None
    chosen: list = []
    for k, axis in enumerate(axes):
        rest = [a[-1] for a in axes[k + 1:]]
        chosen.append(_binary_search(axis, lambda v: fits((*chosen, v, *rest))))
    return tuple(chosen)


def time_int8_candidate(config, shape: Shape, head_dim: int, vocab: int, inputs, target: PruneTarget,
                        workdir: Path) -> tuple[float, int]:
    """(median int8 latency in ms, parameters with the real vocabulary) of a random-weight ``shape``."""
    model = build_candidate(config, shape, head_dim, vocab)
    parameters = count_parameters(model) + (config.vocab_size - vocab) * \
        base_model(model).embeddings.word_embeddings.embedding_dim
    fp32, int8 = workdir / "candidate.onnx", workdir / "candidate.int8.onnx"
    export_with_torch(model, fp32, OPSET)
    quantize_dynamic_int8(fp32, int8, target.preset)
    return median_latency_ms(int8, inputs, target.threads, target.warmup, target.repeats), parameters


def search_shape(teacher: nn.Module, target: PruneTarget, pad_id: int, sequence_length: int,
                 multiple_of: int = 1) -> BudgetResult:
    """The preferred candidate (see the module docstring) whose measured int8 latency meets ``target``.

    ``teacher``: the classifier to prune (eager attention, as the export stage exports it); ``pad_id``:
    its tokenizer's pad id; ``multiple_of``: the prune config's width rounding.
    """
    started = time.perf_counter()
    usable = usable_positions(teacher.config)
    if usable is not None and sequence_length > usable:
        raise ConfigError(f"prune.target.sequence_length: {sequence_length} is longer than the teacher's "
                          f"{usable} usable positions")
    dims, axes = TeacherDims.of(teacher), candidate_axes(teacher, target, multiple_of)
    vocab = min(teacher.config.vocab_size, max(CANDIDATE_VOCAB, pad_id + 1, (teacher.config.pad_token_id or 0) + 1))
    inputs = timing_inputs(vocab, pad_id, sequence_length)
    timed: dict[Candidate, float] = {}  # one timing per shape: the search probes some points twice
    table: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgekd-budget-") as tmp:
        export_with_torch(teacher.eval(), Path(tmp) / "teacher.onnx", OPSET)
        teacher_ms = median_latency_ms(Path(tmp) / "teacher.onnx", inputs, target.threads, target.warmup,
                                       target.repeats)
        budget_ms = target.latency_ms if target.latency_ms is not None else teacher_ms / target.speedup
        log.info("latency budget %.3f ms (teacher fp32 ONNX %.3f ms) at %d thread(s), length %d", budget_ms,
                 teacher_ms, target.threads, sequence_length)

        def fits(point: tuple) -> bool:
            c = Candidate(*point)
            if c not in timed:
                shape = shape_of(c, dims, multiple_of)
                timed[c], parameters = time_int8_candidate(teacher.config, shape, dims.head_dim, vocab, inputs,
                                                           target, Path(tmp))
                table.append({**asdict(shape), **asdict(c), "parameters": parameters,
                              "latency_ms": round(timed[c], 4), "meets_budget": timed[c] <= budget_ms})
                log.info("candidate %s: %.3f ms (budget %.3f ms)", shape, timed[c], budget_ms)
            return timed[c] <= budget_ms

        point = lexicographic_choice(axes, fits)
    if point is None:
        fastest = Candidate(*(axis[-1] for axis in axes))
        what = (f"latency_ms: {target.latency_ms:g} ms" if target.latency_ms is not None else
                f"speedup: {target.speedup:g} (budget {budget_ms:.3f} ms = teacher {teacher_ms:.3f} ms / "
                f"{target.speedup:g})")
        s = shape_of(fastest, dims, multiple_of)
        raise ConfigError(f"prune.target.{what} cannot be met: the fastest candidate ({s.layers} layers, hidden "
                          f"{s.hidden}, {s.heads} heads, FFN {s.ffn}) takes {timed[fastest]:.3f} ms at "
                          f"{target.threads} thread(s), length {sequence_length}; raise the budget or add smaller "
                          f"candidates")
    chosen = Candidate(*point)
    return BudgetResult(chosen, shape_of(chosen, dims, multiple_of), timed[chosen], teacher_ms, budget_ms,
                        target.threads, sequence_length, time.perf_counter() - started, table)


def prune_ratios(candidate: Candidate, num_layers: int) -> dict:
    """The prune config fields that make prune() produce ``candidate``'s shape."""
    layer_ratio = round(1.0 - candidate.layers / num_layers, 6)
    if layers_kept_count(num_layers, layer_ratio) != candidate.layers:
        raise RuntimeError(f"layer_ratio {layer_ratio} keeps {layers_kept_count(num_layers, layer_ratio)} of "
                           f"{num_layers} layers, not {candidate.layers}")
    return {"layer_ratio": layer_ratio, "hidden_ratio": candidate.hidden_ratio, "head_ratio": candidate.head_ratio,
            "ffn_ratio": candidate.ffn_ratio}


def median_length(tokenizer, texts: list[str], max_length: int) -> int:
    """Median token count of ``texts`` (special tokens included, truncated at ``max_length``)."""
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    return int(statistics.median(lengths))


def config_for_target(cfg: PruneConfig, teacher: nn.Module, pad_id: int, sequence_length: int
                      ) -> tuple[PruneConfig, dict]:
    """``cfg`` with the target replaced by the ratios the search picked, and the search's metrics."""
    result = search_shape(teacher, cfg.target, pad_id, sequence_length, cfg.multiple_of)
    ratios = prune_ratios(result.candidate, TeacherDims.of(teacher).layers)
    metrics = {"target": cfg.target.model_dump(mode="json"), "ratios": ratios, **result.metrics()}
    log.info("target %s: %s, predicted %.3f ms (%.2fx the fp32 teacher) in a %.0f s search", metrics["target"],
             result.shape, result.predicted_latency_ms, metrics["predicted_speedup"], result.seconds)
    return PruneConfig(**{**cfg.model_dump(exclude={"target"}), **ratios}), metrics
