"""Pipeline adapter: benchmark every model the run produced, the teacher first."""

import logging
import math
import time

from edgekd.artifacts import Artifact, atomic_write_json, folder_size
from edgekd.bench.config import BenchConfig
from edgekd.bench.core import LoadSampler, benchmark, prepare_inputs
from edgekd.stage_context import StageContext
from edgekd.versions import library_versions, machine_info

log = logging.getLogger(__name__)


def _role(model_name: str) -> str:
    return "teacher" if model_name == "teacher" else "student"


def _parameters(model_dir) -> int:
    """Parameter count read from the safetensors header (no model is built)."""
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "np") as f:
        return sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())


def plan_rows(artifacts: dict[str, Artifact], cfg: BenchConfig) -> list[dict]:
    """One row per (model file, runtime): PyTorch folders, ONNX files, and the teacher on CUDA if present."""
    import torch

    rows = []
    for name, art in artifacts.items():
        if art.type == "hf-model":
            base = {"model": name, "role": _role(name), "format": "pytorch", "precision": "fp32", "path": art.path,
                    "file_bytes": folder_size(art.path / "model.safetensors"), "parameters": _parameters(art.path)}
            rows.append({**base, "name": f"{name} pytorch cpu", "runtime": "pytorch", "device": "cpu"})
            if name == "teacher" and cfg.cuda == "auto" and torch.cuda.is_available():
                rows.append({**base, "name": f"{name} pytorch cuda", "runtime": "pytorch", "device": "cuda",
                             "device_name": torch.cuda.get_device_name(0)})
        elif art.type == "onnx":
            source = art.meta.get("source", name.split(".")[0])
            params = _parameters(artifacts[source].path) if source in artifacts else None
            rows.append({"name": f"{name.removesuffix('.onnx')} onnxruntime cpu", "model": source, "role": _role(source),
                         "format": "onnx", "precision": art.meta.get("precision", "fp32"), "runtime": "onnxruntime",
                         "device": "cpu", "path": art.path, "file_bytes": folder_size(art.path), "parameters": params})
    return rows


def run(cfg: BenchConfig, ctx: StageContext) -> None:
    splits = ctx.splits
    teacher_dir = ctx.artifact("teacher").path if "teacher" in ctx.artifacts else None
    tokenizer_json = (teacher_dir or next(a.path for a in ctx.models().values())) / "tokenizer.json"
    inputs = ctx.out / "inputs.npz"
    # The fixed-length setting cannot exceed what the pipeline feeds the models.
    pad_id = prepare_inputs(tokenizer_json, splits.test.texts, splits.test.labels, ctx.max_length,
                            min(cfg.fixed_length, ctx.max_length),
                            inputs)
    rows = plan_rows(ctx.artifacts, cfg)
    log.info("benchmarking %d model/runtime pairs on %d test examples", len(rows), len(splits.test))
    results = []
    with LoadSampler() as load:
        for i, row in enumerate(rows, 1):
            start = time.perf_counter()
            measured = benchmark(row["path"], row["runtime"], cfg, inputs, pad_id, len(splits.label_names),
                                 row["device"])
            predictions = measured.pop("predictions")
            row = {**{k: v for k, v in row.items() if k != "path"}, "path": str(row["path"].relative_to(ctx.out.parent)),
                   **measured}
            results.append(row)
            atomic_write_json(ctx.out / "predictions" / f"{i:02d}.json", {"name": row["name"], "predictions": predictions})
            first = next(iter(measured["latency_ms"].values()))
            log.info("[%d/%d] %s: accuracy %.4f, p50 %.2f ms (%s), peak RSS %.0f MB, %.0f s", i, len(rows), row["name"],
                     measured["accuracy"], first["p50"], next(iter(measured["latency_ms"])), measured["peak_rss_mb"],
                     time.perf_counter() - start)
    bench = {"schema_version": 1, "config": cfg.model_dump(mode="json"), "machine": machine_info(),
             "versions": library_versions(), "load": load.summary(), "test_examples": len(splits.test),
             "label_names": splits.label_names, "rows": results}
    atomic_write_json(ctx.add_output("bench.json", "json", "bench.json"), bench)
    ctx.metrics.update(rows=len(results), load=bench["load"])
    ctx.add_output("bench.inputs", "data", "inputs.npz")
