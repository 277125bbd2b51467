"""Pipeline adapter for task causal-lm: int8 (dynamic, per-tensor) and int4 (MatMulNBits) versions of
each exported LM, scored on validation windows against its fp32 export; a perplexity-drift gate."""

import logging

from edgekd.errors import ParityError
from edgekd.export.causal_lm import lm_parity
from edgekd.models import load_tokenizer
from edgekd.quantize.causal_lm import quantize_causal_lm
from edgekd.quantize.config import QuantizeConfig, QuantizeLMConfig
from edgekd.stage_context import StageContext
from edgekd.tasks.causal_lm import load_causal_lm

log = logging.getLogger(__name__)
# Artifact suffix and precision per mode: int8 dynamic keeps the classifier path's name.
LM_MODES = {"dynamic": ("int8-dynamic", "int8"), "int4": ("int4", "int4")}


def run_causal_lm(cfg: QuantizeConfig, ctx: StageContext) -> None:
    lm = cfg.lm or QuantizeLMConfig()
    for name in cfg.models:
        src = ctx.artifact(f"{name}.onnx")
        tokenizer = load_tokenizer(str(src.tokenizer))
        model, _ = load_causal_lm(str(ctx.artifact(name).path))
        windows = ctx.task.validation_windows(tokenizer, ctx.splits, ctx.max_length)[: lm.windows]
        for mode in lm.modes:
            suffix, precision = LM_MODES[mode]
            folder = ctx.out / f"{name}.{suffix}"
            dst = folder / "model.onnx"
            info = quantize_causal_lm(src.path, dst, precision, lm.block_size, lm.accuracy_level)
            info.pop("path", None)  # (this stage's staging folder: not a stable fact)
            tokenizer.save_pretrained(folder)
            # Scored against PyTorch fp32 with loose bounds; the drift gate below decides.
            score = lm_parity(model, dst, windows, ppl_rtol=float("inf"), min_agreement=0.0)
            ratio = score["ppl_onnx"] / score["ppl_torch"]
            ctx.metrics[f"{name}.{suffix}"] = {**info, "validation": {
                "perplexity": round(score["ppl_onnx"], 4), "fp32_perplexity": round(score["ppl_torch"], 4),
                "perplexity_ratio": round(ratio, 4), "top1_agreement_with_fp32": round(score["top1_agreement"], 4),
                "windows": score["windows"]}}
            log.info("%s %s: %.1f MB, validation perplexity %.3g (fp32 %.3g, x%.3f)", name, suffix,
                     info["out_bytes"] / 1e6,
                     score["ppl_onnx"], score["ppl_torch"], ratio)
            if lm.max_perplexity_ratio is not None and ratio > lm.max_perplexity_ratio:
                raise ParityError(f"quantize {name} {suffix}: validation perplexity {score['ppl_onnx']:.4g} is "
                                  f"{ratio:.3f}x the fp32 model's {score['ppl_torch']:.4g}, above "
                                  f"max_perplexity_ratio {lm.max_perplexity_ratio}; try int4 block_size 32 or "
                                  "keep this model in fp32")
            ctx.add_output(f"{name}.{suffix}.onnx", "onnx", f"{name}.{suffix}/model.onnx", role=src.role,
                           source=name, precision=precision, runtime="onnxruntime", tokenizer=f"{name}.{suffix}",
                           pad_id=src.pad_id, task=src.task, kv_cache=True)
