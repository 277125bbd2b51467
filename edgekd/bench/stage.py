"""Pipeline adapter: benchmark every model the run produced on the test split, side by side.

Rows come from artifact metadata (role, runtime, precision), never from names: every PyTorch
model on CPU (and the teacher on CUDA when there is one), every ONNX file on ONNX Runtime, and
the deploy bundle end to end. Speed-ups are paired against the teacher on ONNX Runtime fp32 (the
same runtime as the students) and against the teacher in PyTorch eager.
"""

import logging
import math

from edgekd.artifacts import Artifact, atomic_write_json, folder_size
from edgekd.bench.config import BenchConfig
from edgekd.bench.core import DEPLOY_RUNTIME, Target, run_benchmark
from edgekd.bench.inputs import from_texts
from edgekd.errors import EdgekdError
from edgekd.stage_context import StageContext

log = logging.getLogger(__name__)


def _parameters(model_dir) -> int:
    """Parameter count read from the safetensors header (no model is built)."""
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "np") as f:
        return sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())


def plan_targets(artifacts: dict[str, Artifact], cfg: BenchConfig) -> list[Target]:
    """One target per (model, runtime), teacher rows first."""
    targets = []
    for name, art in artifacts.items():
        if art.type == "hf-model" and art.role in ("teacher", "student"):
            common = dict(path=art.path, pad_id=art.pad_id, model=name, role=art.role, format="pytorch",
                          precision=art.precision or "fp32", file_bytes=folder_size(art.path / "model.safetensors"),
                          parameters=_parameters(art.path))
            targets.append(Target(name=f"{name} pytorch cpu", runtime="pytorch", **common))
            if art.role == "teacher" and cfg.cuda == "auto":
                import torch

                if torch.cuda.is_available():
                    targets.append(Target(name=f"{name} pytorch cuda", runtime="pytorch", device="cuda", **common,
                                          extra={"device_name": torch.cuda.get_device_name(0)}))
        elif art.type == "onnx":
            source = artifacts.get(art.source)
            targets.append(Target(
                name=f"{name.removesuffix('.onnx')} onnxruntime cpu", path=art.path, runtime="onnxruntime",
                pad_id=art.pad_id, model=art.source, role=art.role, format="onnx", precision=art.precision,
                file_bytes=folder_size(art.path), parameters=_parameters(source.path) if source else None))
        elif art.type == "bundle" and cfg.bundle and not DEPLOY_RUNTIME.is_file():
            log.warning("no bundle row: %s is not installed (it ships with a source checkout of edgekd)",
                        DEPLOY_RUNTIME.name)
        elif art.type == "bundle" and cfg.bundle:
            model = artifacts.get(art.source)
            targets.append(Target(
                name="bundle end-to-end (tokenizer + onnxruntime)", path=art.path, runtime="bundle",
                pad_id=art.pad_id, model=model.source if model else art.source, role=art.role, format="bundle",
                precision=art.precision, file_bytes=folder_size(art.path),
                parameters=_parameters(artifacts[model.source].path) if model and model.source in artifacts else None))
    if not targets:
        raise EdgekdError("the bench stage found no model to measure: add a teacher, distill, export or quantize "
                          "stage before it")
    return sorted(targets, key=lambda t: t.role != "teacher")


def references(targets: list[Target]) -> list[str]:
    """The teacher on ONNX Runtime fp32 (same runtime as the int8 students) and in PyTorch on CPU."""
    names = [t.name for t in targets if t.role == "teacher" and t.device == "cpu"
             and (t.runtime, t.precision) in (("onnxruntime", "fp32"), ("pytorch", "fp32"))]
    return sorted(names, key=lambda n: "pytorch" in n)  # ONNX Runtime first: it is the headline


def run(cfg: BenchConfig, ctx: StageContext) -> None:
    splits = ctx.splits
    targets = plan_targets(ctx.artifacts, cfg)
    # Every model of a run is pruned from the teacher and keeps its tokenizer: one tokenisation serves all.
    tokenizer = next(ctx.artifacts[t.model].tokenizer for t in targets if t.model in ctx.artifacts)
    inputs = from_texts(tokenizer / "tokenizer.json", splits.test.texts, splits.test.labels, ctx.max_length,
                        min(cfg.fixed_length, ctx.max_length), cfg.sample, ctx.seed, ctx.out,
                        describe=f"the test split ({len(splits.test)} texts)")
    log.info("benchmarking %d models on %d test inputs per round (%d rounds), accuracy on all %d",
             len(targets), inputs.sample, cfg.rounds, len(splits.test))
    bench = run_benchmark(targets, inputs, cfg, splits.label_names, references(targets))
    for i, row in enumerate(bench["rows"], 1):
        atomic_write_json(ctx.out / "predictions" / f"{i:02d}.json",
                          {"name": row["name"], "predictions": row.pop("predictions")})
        row["path"] = str(next(t.path for t in targets if t.name == row["name"]).relative_to(ctx.out.parent))
    atomic_write_json(ctx.add_output("bench.json", "json", "bench.json"), bench)
    ctx.metrics.update(rows=len(bench["rows"]), load=bench["load"])
    ctx.add_output("bench.inputs", "data", "inputs.npz")
