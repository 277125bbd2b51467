"""Pipeline adapter: benchmark every model the run produced on the test split, side by side.

Rows come from artifact metadata (type, role, runtime, precision), never from names: every PyTorch
model on CPU (and the teacher on CUDA when there is one), every ONNX and ONNX Runtime Mobile (.ort)
file on ONNX Runtime, ExecuTorch (.pte) and LiteRT (.tflite) files on their own runtimes (XNNPACK), and the
deploy bundle end to end. Speed-ups are paired against the teacher on
ONNX Runtime fp32 (the same runtime as the students) and against the teacher in PyTorch eager.
"""

import logging
import math

import numpy as np

from edgekd.artifacts import Artifact, atomic_write_json, folder_size
from edgekd.bench.config import BenchConfig
from edgekd.bench.core import DEPLOY_RUNTIME, Target, run_benchmark
from edgekd.bench.inputs import per_tokenizer
from edgekd.errors import EdgekdError
from edgekd.stage_context import StageContext

log = logging.getLogger(__name__)


def _parameters(model_dir) -> int:
    """Parameter count read from the safetensors header (no model is built)."""
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "np") as f:
        return sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())


# What runs an ONNX Runtime row's kernels, named in the row's delegate field beside ExecuTorch's and LiteRT's XNNPACK.
ORT_PROVIDER = "CPU execution provider"


def plan_targets(artifacts: dict[str, Artifact], cfg: BenchConfig) -> list[Target]:
    """One target per (model, runtime), teacher rows first, accuracy-only rows (ablation models) last."""
    targets = []
    for name, art in artifacts.items():
        if art.type == "hf-model" and art.role in ("teacher", "student"):
            common = dict(path=art.path, pad_id=art.pad_id, model=name, role=art.role, format="pytorch",
                          precision=art.precision or "fp32", file_bytes=folder_size(art.path / "model.safetensors"),
                          parameters=_parameters(art.path))
            targets.append(Target(name=f"{name} pytorch cpu", runtime="pytorch", **common))
            if art.role == "teacher" and cfg.cuda == "auto":
                import torch

                if torch.cuda.is_available():  # the GPU-trained teacher as it would serve: fp32 and fp16 weights
                    gpu = {"device_name": torch.cuda.get_device_name(0)}
                    targets.append(Target(name=f"{name} pytorch cuda", runtime="pytorch", device="cuda", **common,
                                          extra=gpu))
                    targets.append(Target(name=f"{name}.fp16 pytorch cuda", runtime="pytorch", device="cuda",
                                          **{**common, "precision": "fp16"}, extra=gpu))
        elif art.type == "hf-model" and art.role == "ablation":
            # Not a deployment candidate: scored on the test split beside the distilled student, never timed.
            targets.append(Target(
                name=f"{name} pytorch cpu", path=art.path, runtime="pytorch", pad_id=art.pad_id, model=name,
                role=art.role, format="pytorch", precision=art.precision or "fp32", timed=False,
                file_bytes=folder_size(art.path / "model.safetensors"), parameters=_parameters(art.path),
                extra={"variant": art.meta.get("variant")}))
        elif art.type == "onnx":
            source = artifacts.get(art.source)
            targets.append(Target(
                name=f"{name.removesuffix('.onnx')} onnxruntime cpu", path=art.path, runtime="onnxruntime",
                pad_id=art.pad_id, model=art.source, role=art.role, format="onnx", precision=art.precision,
                file_bytes=folder_size(art.path), parameters=_parameters(source.path) if source else None,
                extra={"delegate": ORT_PROVIDER}))
        elif art.type == "ort":
            # ONNX Runtime Mobile's format, loaded by the same onnxruntime runner; its source is the .onnx it came from.
            onnx = artifacts.get(art.source)
            model = artifacts.get(onnx.source) if onnx else None
            targets.append(Target(
                name=f"{name} onnxruntime cpu", path=art.path, runtime="onnxruntime", pad_id=art.pad_id,
                model=model.name if model else art.source, role=art.role, format="ort", precision=art.precision,
                file_bytes=folder_size(art.path), extra={"delegate": ORT_PROVIDER},
                parameters=_parameters(model.path) if model and model.type == "hf-model" else None))
        elif art.type in ("pte", "tflite"):
            # ExecuTorch / LiteRT files, converted from the PyTorch model (their source); runner by art.runtime.
            model = artifacts.get(art.source)
            extra = {k: art.meta[k] for k in ("delegate", "buckets") if k in art.meta}
            extra["throughput_batching"] = "one text at a time"  # exported for batch 1: a batch is a loop of calls
            targets.append(Target(
                name=f"{name} {art.runtime} cpu", path=art.path, runtime=art.runtime, pad_id=art.pad_id,
                model=art.source, role=art.role, format=art.type, precision=art.precision,
                file_bytes=folder_size(art.path), extra=extra,
                parameters=_parameters(model.path) if model and model.type == "hf-model" else None))
        elif art.type == "bundle" and cfg.bundle and not DEPLOY_RUNTIME.is_file():
            log.warning("no bundle row: %s is not installed (it ships with a source checkout of edgekd)",
                        DEPLOY_RUNTIME.name)
        elif art.type == "bundle" and cfg.bundle:
            model = artifacts.get(art.source)
            targets.append(Target(
                name="bundle end-to-end (tokenizer + onnxruntime)", path=art.path, runtime="bundle",
                pad_id=art.pad_id, model=model.source if model else art.source, role=art.role, format="bundle",
                # (the bundle's phone files, model.ort / .tflite / .pte, are not what this row runs)
                precision=art.precision, file_bytes=folder_size(art.path) - art.meta.get("mobile_bytes", 0),
                parameters=_parameters(artifacts[model.source].path) if model and model.source in artifacts else None))
    if not targets:
        raise EdgekdError("the bench stage found no model to measure: add a teacher, distill, export or quantize "
                          "stage before it")
    return sorted(targets, key=lambda t: (t.role != "teacher", not t.timed))


def references(targets: list[Target]) -> list[str]:
    """The teacher on ONNX Runtime fp32 (same runtime as the int8 students), the teacher in PyTorch on
    CPU, then the peer path (optimum's own int8 of the teacher), each where the run has it."""
    teacher = [t for t in targets if t.role == "teacher" and t.device == "cpu" and t.format in ("onnx", "pytorch")
               and (t.runtime, t.precision) in (("onnxruntime", "fp32"), ("pytorch", "fp32"))]
    teacher.sort(key=lambda t: t.runtime == "pytorch")  # ONNX Runtime first: it is the headline
    peers = [t for t in targets if t.role == "peer" and t.runtime == "onnxruntime"]
    return [t.name for t in teacher + peers]


def add_agreement_with_pytorch(rows: list[dict]) -> None:
    """row["agreement_vs_pytorch"]: the share of test texts on which a converted file (ONNX, .ort, .pte, .tflite, the
    bundle) predicts what its PyTorch model's CPU row predicts, one text at a time. Reported only: the mobile stage's
    gate decided on the validation split, and the test split never selects."""
    pytorch = {r["model"]: r for r in rows if r["format"] == "pytorch" and r["device"] == "cpu"}
    for row in rows:
        ref = pytorch.get(row["model"])
        if ref is None or ref is row or row["format"] == "pytorch":
            continue
        same = np.asarray(row["predictions"]) == np.asarray(ref["predictions"])
        row["agreement_vs_pytorch"] = {"reference": ref["name"], "agreement": round(float(same.mean()), 6),
                                       "n": int(same.size)}


def run(cfg: BenchConfig, ctx: StageContext) -> None:
    if ctx.task.name == "causal-lm":
        from edgekd.bench.lm_stage import run_causal_lm

        return run_causal_lm(cfg, ctx)
    splits = ctx.splits
    targets = plan_targets(ctx.artifacts, cfg)
    # Each model reads the test texts with its own artifact's tokenizer (a vocabulary-trimmed student numbers
    # its tokens differently from the teacher): the same texts and sampled rows in the same order for every
    # model, one tokenisation per distinct tokenizer.json.
    by_path = {art.path: art for art in ctx.artifacts.values()}
    tokenizers = [by_path[t.path].tokenizer / "tokenizer.json" for t in targets]
    per_model = per_tokenizer(tokenizers, splits.test.texts, splits.test.labels, ctx.max_length,
                              min(cfg.fixed_length, ctx.max_length), cfg.sample, ctx.seed, ctx.out,
                              describe=f"the test split ({len(splits.test)} texts)")
    for target, tokenizer in zip(targets, tokenizers):
        target.inputs = per_model[tokenizer]
    inputs = targets[0].inputs
    log.info("benchmarking %d models on %d test inputs per round (%d rounds, %d tokenisations), accuracy on all %d",
             len(targets), inputs.sample, cfg.rounds, len({i.npz for i in per_model.values()}), len(splits.test))
    bench = run_benchmark(targets, inputs, cfg, splits.label_names, references(targets))
    add_agreement_with_pytorch(bench["rows"])
    for i, row in enumerate(bench["rows"], 1):
        atomic_write_json(ctx.out / "predictions" / f"{i:02d}.json",
                          {"name": row["name"], "predictions": row.pop("predictions")})
        row["path"] = str(next(t.path for t in targets if t.name == row["name"]).relative_to(ctx.out.parent))
    atomic_write_json(ctx.add_output("bench.json", "json", "bench.json"), bench)
    ctx.metrics.update(rows=len(bench["rows"]), load=bench["load"])
    ctx.add_output("bench.inputs", "data", "inputs.npz")
