"""Pipeline adapter for task causal-lm: the generation bundle (model.onnx, tokenizer.json, generation.json,
bundle.json) that deploy/edgekd_generate.py runs without torch, behind a perplexity gate against the teacher.

With lm.genai, the same model (its Hugging Face source) is also built by ONNX Runtime GenAI's model builder
into bundle.genai-<precision>: the format on-device apps load with og.Model, and GenAI's fused int4 graph
decodes faster than our MatMulNBits file. It passes the same gate on the same validation windows."""

import json
import logging
import shutil

from edgekd.artifacts import atomic_write_json, folder_size
from edgekd.assets.wheel import sha256_of
from edgekd.bench.lm_stage import model_bytes
from edgekd.bundle.config import BundleConfig, BundleLMConfig, lm_genai_artifact
from edgekd.bundle.stage import make_world_readable
from edgekd.errors import ConfigError, ParityError
from edgekd.export.causal_lm import onnx_lm_perplexity
from edgekd.models import load_tokenizer
from edgekd.peer.genai import build_genai_model, genai_validation_scores, require_genai
from edgekd.stage_context import StageContext
from edgekd.version import __version__

log = logging.getLogger(__name__)


def generation_settings(hf_dir, max_new_tokens: int) -> dict:
    """EOS ids, pad id and context length from a Hugging Face folder's config.json and generation_config.json."""
    config = json.loads((hf_dir / "config.json").read_text())
    gen_path = hf_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    eos = gen.get("eos_token_id", config.get("eos_token_id"))
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    context = config.get("max_position_embeddings") or config.get("n_positions")
    if not eos or not context:
        raise ConfigError(f"bundle: {hf_dir} names no EOS token id or no context length (max_position_embeddings)")
    return {"eos_token_ids": eos, "pad_token_id": gen.get("pad_token_id", config.get("pad_token_id")),
            "max_context": context, "max_new_tokens": max_new_tokens}


def teacher_validation_perplexity(history: list[dict]) -> float:
    teacher = next((h for h in history if h.get("kind") == "teacher"), None)
    if teacher is None or "perplexity" not in teacher.get("metrics", {}).get("validation", {}):
        raise ConfigError("bundle: the quality gate compares with the teacher's validation perplexity; put a teacher "
                          "stage before the bundle")
    return teacher["metrics"]["validation"]["perplexity"]


def perplexity_gate(what: str, perplexity: float, teacher: float, lm: BundleLMConfig, windows: int) -> dict:
    """The quality gate of one shipped file: its validation perplexity against the teacher's on the same
    windows. Over lm.max_perplexity_ratio it raises ParityError, or warns when lm.allow_over_ratio is set."""
    ratio = perplexity / teacher
    over = ratio > lm.max_perplexity_ratio
    gate = {"perplexity": round(perplexity, 4), "teacher_perplexity": teacher, "ratio": round(ratio, 4),
            "limit": lm.max_perplexity_ratio, "over": over, "overridden": over and lm.allow_over_ratio,
            "windows": windows}
    if over and not lm.allow_over_ratio:
        raise ParityError(f"bundle: {what} has validation perplexity {perplexity:.4g}, {ratio:.2f}x the teacher's "
                          f"{teacher:.4g} (limit lm.max_perplexity_ratio {lm.max_perplexity_ratio}); train the student "
                          "longer, prune less, or set lm.allow_over_ratio: true to ship it anyway")
    if over:
        log.warning("bundle: %s is %.2fx the teacher's perplexity, over the %.2fx limit; bundled because "
                    "lm.allow_over_ratio is set", what, ratio, lm.max_perplexity_ratio)
    return gate


def run_causal_lm(cfg: BundleConfig, ctx: StageContext) -> None:
    lm = cfg.lm or BundleLMConfig()
    if lm.genai:  # before any work: the GenAI build comes last
        require_genai("bundle lm.genai", "remove lm.genai from the bundle stage")
    src = ctx.artifact(cfg.model)
    if src.type != "onnx":
        raise ConfigError(f"bundle model: {cfg.model!r} is a {src.type} artifact; a generation bundle ships an ONNX "
                          "export or quantized model")
    tokenizer = load_tokenizer(str(src.tokenizer))
    # The teacher stage scored the same validation windows (same text, tokenizer and data settings).
    windows = ctx.task.validation_windows(tokenizer, ctx.splits, ctx.max_length)
    score = onnx_lm_perplexity(src.path, windows)
    teacher = teacher_validation_perplexity(ctx.history)
    gate = perplexity_gate(cfg.model, score["perplexity"], teacher, lm, len(windows))
    ctx.metrics["quality_gate"] = gate
    folder = ctx.out / "bundle"
    folder.mkdir()
    shutil.copyfile(src.path, folder / "model.onnx")
    shutil.copyfile(src.tokenizer / "tokenizer.json", folder / "tokenizer.json")
    hf_source = ctx.artifact(src.source).path if src.source in ctx.artifacts else None
    if hf_source is None or ctx.artifact(src.source).type != "hf-model":
        raise ConfigError(f"bundle: cannot find the Hugging Face model {cfg.model} was made from (its generation "
                          "settings: EOS ids, context length)")
    atomic_write_json(folder / "generation.json", generation_settings(hf_source, lm.max_new_tokens))
    atomic_write_json(folder / "bundle.json", {
        "format": "edgekd-generation-bundle", "version": 1, "edgekd": __version__, "model": "model.onnx",
        "tokenizer": "tokenizer.json", "generation": "generation.json", "source_artifact": cfg.model,
        "precision": src.precision, "model_sha256": sha256_of(folder / "model.onnx"),
        "validation_perplexity": gate["perplexity"], "teacher_validation_perplexity": teacher,
        "runtime": "onnxruntime (CPUExecutionProvider) with a KV cache: deploy/edgekd_generate.py"})
    make_world_readable(folder)
    ctx.metrics.update(source=cfg.model, bundle_bytes=folder_size(folder))
    ctx.add_output("bundle", "bundle", "bundle", role=src.role, source=cfg.model, precision=src.precision,
                   runtime="bundle", tokenizer="bundle", pad_id=src.pad_id, task=src.task, kv_cache=True)
    if lm.genai:
        genai_bundle(lm, ctx, src.source, tokenizer, windows, teacher)


def genai_bundle(lm: BundleLMConfig, ctx: StageContext, hf_name: str, tokenizer, windows: list, teacher: float) -> None:
    """ONNX Runtime GenAI's builder on the bundled model's Hugging Face source ``hf_name``, gated like the ONNX
    bundle on the same validation windows (scored through og.Model, 1 thread, as the peer is)."""
    hf = ctx.artifact(hf_name)
    name = lm_genai_artifact(lm.genai)
    info = build_genai_model(hf.path, ctx.out / name, lm.genai)
    validation = genai_validation_scores(ctx.out / name, windows, threads=1)
    what = f"{name} (ONNX Runtime GenAI's {lm.genai} build of {hf_name})"
    gate = perplexity_gate(what, validation["perplexity"], teacher, lm, len(windows))
    tokenizer.save_pretrained(ctx.out / name)  # the bench encodes prompts with it, as for the peer
    make_world_readable(ctx.out / name)
    ctx.metrics["genai"] = {"precision": lm.genai, "source": hf_name, "file_bytes": model_bytes(ctx.out / name),
                            "seconds": info["seconds"], "workarounds": info["workarounds"],
                            "num_hidden_layers": info["num_hidden_layers"], "validation": validation,
                            "quality_gate": gate}
    log.info("bundle %s: %.1f MB, validation perplexity %.4g (%.2fx the teacher's)", name,
             ctx.metrics["genai"]["file_bytes"] / 1e6, validation["perplexity"], gate["ratio"])
    ctx.add_output(name, "genai", name, role=hf.role, source=hf_name, precision=lm.genai,
                   runtime="onnxruntime-genai", tokenizer=name, pad_id=hf.pad_id, task=hf.task, kv_cache=True)
