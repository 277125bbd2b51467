"""Pipeline adapter for task causal-lm: benchmark every LM the run produced on the test documents.

Rows come from artifact metadata (type, role, precision, runtime), never from names: every Hugging Face LM in
PyTorch on CPU (and the teacher on CUDA when there is one), every KV-cache ONNX file (fp32, int8, int4) on
ONNX Runtime, an LM bundle (generation.json) through deploy/edgekd_generate.py, and a peer row and an ONNX
Runtime GenAI build of our own model (artifact type "genai", the bundle's) on whatever runtime they name when a
runner for it exists. Speed-ups are paired against the teacher on ONNX Runtime fp32,
the teacher in PyTorch, and the peer row; agreement is measured against the teacher (PyTorch fp32 first).
"""

import json
import logging
from pathlib import Path

from edgekd.artifacts import Artifact, atomic_write_json, folder_size
from edgekd.bench.config import BenchConfig
from edgekd.bench.core import DEPLOY_RUNTIME, Target
from edgekd.bench.lm_core import run_lm_benchmark
from edgekd.bench.lm_inputs import per_tokenizer
from edgekd.bench.lm_runners import LM_RUNNERS
from edgekd.bench.stage import _parameters
from edgekd.errors import ConfigError, EdgekdError
from edgekd.stage_context import StageContext

log = logging.getLogger(__name__)


def onnx_bytes(path: Path) -> int:
    """The graph plus its external-data file (model.onnx.data / model.onnx_data), where one was written."""
    files = [path, path.with_name(path.name + ".data"), path.with_name(path.name + "_data")]
    return sum(f.stat().st_size for f in files if f.is_file())


def _hf_params(artifacts: dict[str, Artifact], name: str | None) -> int | None:
    art = artifacts.get(name) if name else None
    return _parameters(art.path) if art is not None and art.type == "hf-model" else None


def model_bytes(folder) -> int:
    """The model files of a runtime folder (ONNX graphs and their external data), not its logs or tokenizer,
    so every row's size counts the same things."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith((".onnx", ".onnx.data", ".onnx_data")))


def plan_lm_targets(artifacts: dict[str, Artifact], cfg: BenchConfig) -> list[Target]:
    """One target per (model, runtime), teacher rows first."""
    targets = []
    for name, art in artifacts.items():
        if (art.role == "peer" and art.type != "hf-model") or art.type == "genai":
            # The peer, and a GenAI build of our own model (the bundle's): a row on the runtime the artifact names.
            if art.runtime not in LM_RUNNERS:
                log.warning("no %s row for %s: no LM runner for runtime %r (known: %s)", art.role, name, art.runtime,
                            ", ".join(LM_RUNNERS))
                continue
            targets.append(Target(name=f"{name} {art.runtime}", path=art.path, runtime=art.runtime, pad_id=0,
                                  model=art.source or name, role=art.role, format=art.type,
                                  precision=art.precision or "fp32", file_bytes=model_bytes(art.path),
                                  parameters=_hf_params(artifacts, art.source)))
        elif art.type == "hf-model" and art.role in ("teacher", "student"):
            common = dict(path=art.path, pad_id=art.pad_id or 0, model=name, role=art.role, format="pytorch",
                          precision=art.precision or "fp32", file_bytes=folder_size(art.path / "model.safetensors"),
                          parameters=_parameters(art.path))
            targets.append(Target(name=f"{name} pytorch cpu", runtime="pytorch", **common))
            if art.role == "teacher" and cfg.cuda == "auto":
                import torch

                if torch.cuda.is_available():
                    targets.append(Target(name=f"{name} pytorch cuda", runtime="pytorch", device="cuda", **common,
                                          extra={"device_name": torch.cuda.get_device_name(0), "dtype": "bfloat16"}))
        elif art.type == "hf-model" and art.role == "ablation":
            # The non-distilled student: scored on the test windows beside the distilled one, not timed (same shape).
            targets.append(Target(name=f"{name} pytorch cpu", path=art.path, runtime="pytorch", pad_id=art.pad_id or 0,
                                  model=name, role="ablation", format="pytorch", precision="fp32", timed=False,
                                  file_bytes=folder_size(art.path / "model.safetensors"),
                                  parameters=_parameters(art.path), extra={"variant": art.meta.get("variant")}))
        elif art.type == "onnx":
            targets.append(Target(
                name=f"{name.removesuffix('.onnx')} onnxruntime cpu", path=art.path, runtime="onnxruntime",
                pad_id=art.pad_id or 0, model=art.source, role=art.role, format="onnx", precision=art.precision,
                file_bytes=onnx_bytes(art.path), parameters=_hf_params(artifacts, art.source)))
        elif art.type == "bundle" and cfg.bundle and (art.path / "generation.json").is_file():
            if not DEPLOY_RUNTIME.with_name("edgekd_generate.py").is_file():
                log.warning("no bundle row: edgekd_generate.py ships with a source checkout of edgekd")
                continue
            model = artifacts.get(art.source)
            targets.append(Target(
                name="bundle (edgekd_generate)", path=art.path, runtime="bundle", pad_id=art.pad_id or 0,
                model=model.source if model else art.source, role=art.role, format="bundle", precision=art.precision,
                file_bytes=folder_size(art.path), parameters=_hf_params(artifacts, model.source if model else None)))
    if not targets:
        raise EdgekdError("the bench stage found no language model to measure: add a teacher, distill, export or "
                          "quantize stage before it")
    return sorted(targets, key=lambda t: t.role != "teacher")


def lm_references(targets: list[Target]) -> list[str]:
    """The teacher on ONNX Runtime fp32, the teacher in PyTorch on CPU, then the peer row(s), where present."""
    teacher = [t for t in targets if t.role == "teacher" and t.device == "cpu" and t.precision == "fp32"
               and t.runtime in ("onnxruntime", "pytorch")]
    teacher.sort(key=lambda t: t.runtime == "pytorch")  # ONNX Runtime first: it is the headline
    return [t.name for t in teacher + [t for t in targets if t.role == "peer"]]


def agreement_reference(targets: list[Target]) -> str | None:
    """The teacher row agreement is measured against: PyTorch fp32 on CPU first (the model as trained)."""
    teacher = [t for t in targets if t.role == "teacher" and t.device == "cpu" and t.precision == "fp32"]
    teacher.sort(key=lambda t: t.runtime != "pytorch")
    return teacher[0].name if teacher else None


def _context_limit(path: Path) -> int | None:
    config = path / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    return next((data[k] for k in ("max_position_embeddings", "n_positions") if isinstance(data.get(k), int)), None)


def run_causal_lm(cfg: BenchConfig, ctx: StageContext) -> None:
    lm = cfg.lm_settings()
    targets = plan_lm_targets(ctx.artifacts, cfg)
    limits = [n for art in ctx.artifacts.values() if art.type == "hf-model" and (n := _context_limit(art.path))]
    if limits and lm.prompt_tokens + lm.new_tokens > min(limits):
        raise ConfigError(f"bench lm: prompt_tokens {lm.prompt_tokens} + new_tokens {lm.new_tokens} exceed the "
                          f"models' context of {min(limits)} positions; lower one of them")
    by_path = {art.path: art for art in ctx.artifacts.values()}
    tokenizers = [by_path[t.path].tokenizer or (t.path if t.path.is_dir() else t.path.parent) for t in targets]
    per_model = per_tokenizer(tokenizers, ctx.splits.test, ctx.max_length, lm, ctx.seed, ctx.out,
                              describe=f"the test split ({len(ctx.splits.test)} documents)")
    for target, tokenizer in zip(targets, tokenizers):
        target.inputs = per_model[tokenizer]
    inputs = targets[0].inputs
    log.info("benchmarking %d language models: %d prompts of %d tokens + %d new tokens per round, %d rounds; "
             "quality on %d windows of %d tokens", len(targets), inputs.prompts, inputs.prompt_tokens, lm.new_tokens,
             cfg.rounds, inputs.windows, inputs.window_tokens)
    bench = run_lm_benchmark(targets, inputs, cfg, lm_references(targets), agreement_reference(targets))
    for row in bench["rows"]:
        row["path"] = str(next(t.path for t in targets if t.name == row["name"]).relative_to(ctx.out.parent))
    atomic_write_json(ctx.add_output("bench.json", "json", "bench.json"), bench)
    ctx.metrics.update(rows=len(bench["rows"]), load=bench["load"])
    ctx.add_output("bench.inputs", "data", inputs.npz.name)
