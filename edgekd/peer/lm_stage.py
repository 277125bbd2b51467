"""Pipeline adapter for task causal-lm: the peer path, ONNX Runtime GenAI's model builder applied to the
tuned teacher (what a user would ship without edgekd), scored on the validation windows the teacher was."""

import logging

from edgekd.bench.lm_stage import model_bytes
from edgekd.models import load_tokenizer
from edgekd.peer.config import PeerConfig, PeerLMConfig, lm_peer_artifact
from edgekd.peer.genai import build_genai_model, genai_validation_scores, require_genai
from edgekd.stage_context import StageContext

log = logging.getLogger(__name__)


def run_causal_lm(cfg: PeerConfig, ctx: StageContext) -> None:
    require_genai()
    lm = cfg.lm or PeerLMConfig()
    src = ctx.artifact(cfg.model)
    name = lm_peer_artifact(lm.precision)
    info = build_genai_model(src.path, ctx.out / name, lm.precision)
    info.pop("path", None)  # (this stage's staging folder: not a stable fact)
    tokenizer = load_tokenizer(str(src.tokenizer or src.path))
    windows = ctx.task.validation_windows(tokenizer, ctx.splits, ctx.max_length)
    validation = genai_validation_scores(ctx.out / name, windows, threads=1)
    ctx.metrics["peer"] = {**info, "model": cfg.model, "precision": lm.precision,
                           "file_bytes": model_bytes(ctx.out / name), "validation": validation}
    log.info("peer %s: %.1f MB, validation perplexity %.4g", name, ctx.metrics["peer"]["file_bytes"] / 1e6,
             validation["perplexity"])
    tokenizer.save_pretrained(ctx.out / name)  # the bench encodes prompts with the teacher's tokenizer
    ctx.add_output(name, "genai", name, role="peer", source=cfg.model, precision=lm.precision,
                   runtime="onnxruntime-genai", tokenizer=name, pad_id=src.pad_id, task=src.task, kv_cache=True)
