"""Causal-LM ONNX export with a KV cache, and the parity gate against PyTorch.

Why a separate module: a decoder is used in two modes that must agree, a full teacher-forced pass (perplexity)
and prefill + token-by-token decode through ``past_key_values`` (generation). The graph comes from optimum's
``text-generation-with-past`` exporter: ONE model.onnx taking input_ids, attention_mask, position_ids (where the
layout has them) and past_key_values.{i}.key/value [batch, kv_heads, past, head_dim]; it returns logits and
present.{i}.key/value. An empty past (past = 0) is the prefill. The parity check runs both modes.
"""

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.errors import AssetError, ConfigError, ParityError
from edgekd.export.core import optimum_exporter_installed
from edgekd.ort import make_session

log = logging.getLogger(__name__)

TASK = "text-generation-with-past"


def lm_io_info(onnx_path: Path) -> dict:
    """What a runtime needs to drive the graph: I/O names, layers, KV heads, head dim, opset (read from the graph)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inputs = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    past = sorted((n for n in inputs if n.startswith("past_key_values.") and n.endswith(".key")),
                  key=lambda n: int(n.split(".")[1]))
    if not past:
        raise AssetError(f"{onnx_path}: no past_key_values.*.key input; export with task {TASK!r}")
    shape = inputs[past[0]]  # [batch, kv_heads, past_sequence_length, head_dim]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"inputs": list(inputs), "outputs": [o.name for o in model.graph.output], "num_layers": len(past),
            "num_kv_heads": shape[1], "head_dim": shape[3], "opset": opset,
            "has_position_ids": "position_ids" in inputs}


def export_causal_lm(model_dir: Path, out_dir: Path, opset: int | None = None) -> Path:
    """Export a Hugging Face causal LM folder to ``out_dir``/model.onnx with a KV cache; returns the path.

    Writes ``out_dir``/lm_io.json (see :func:`lm_io_info`). Needs optimum-onnx (transformers < 4.58); the folder
    needs no tokenizer.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.json").is_file():
        raise AssetError(f"{model_dir}: no config.json; expected a folder written by save_pretrained")
    if not optimum_exporter_installed():
        raise ConfigError(f"{model_dir}: exporting a causal LM with a KV cache needs optimum-onnx "
                          "(pip install optimum-onnx; it requires transformers < 4.58)")
    from optimum.exporters.onnx import main_export

    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        # do_validation=False: optimum's own check uses atol 1e-5 and warns on correct models (logits diff ~2e-3
        # on SmolLM2); lm_parity is the gate. Post-processing stays on: it de-duplicates tied weights.
        main_export(str(model_dir), out_dir, task=TASK, opset=opset, device="cpu", do_validation=False,
                    library_name="transformers")
    except ValueError as exc:  # unsupported architecture / task, raised by optimum's task manager
        raise ConfigError(f"{model_dir}: optimum cannot export it for {TASK!r}: {str(exc).splitlines()[0]}") from exc
    path = out_dir / "model.onnx"
    info = lm_io_info(path)
    (out_dir / "lm_io.json").write_text(json.dumps(info, indent=2))
    log.info("exported %s to %s in %.1f s (%d layers, %s KV heads x %s, opset %s)", model_dir, path,
             time.perf_counter() - start, info["num_layers"], info["num_kv_heads"], info["head_dim"], info["opset"])
    return path


class LMSession:
    """One ONNX Runtime session driven like a decoder: ``step(ids, past)`` -> (logits [1, n, vocab], present)."""

    def __init__(self, onnx_path: Path, threads: int = 1):
        self.session = make_session(onnx_path, threads=threads)
        self.info = lm_io_info(onnx_path)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def empty_past(self) -> dict[str, np.ndarray]:
        shape = (1, self.info["num_kv_heads"], 0, self.info["head_dim"])
        return {n: np.zeros(shape, np.float32) for n in self.input_names if n.startswith("past_key_values.")}

    def step(self, ids: list[int], past: dict[str, np.ndarray], past_len: int):
        """Feed ``ids`` after ``past_len`` cached tokens; present.* come back renamed as the next past."""
        n = len(ids)
        feed = {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, past_len + n), np.int64),
                "position_ids": np.arange(past_len, past_len + n, dtype=np.int64)[None], **past}
        outputs = dict(zip(self.output_names, self.session.run(None, {k: v for k, v in feed.items()
                                                                      if k in self.input_names})))
        present = {n.replace("present.", "past_key_values.", 1): v for n, v in outputs.items()
                   if n.startswith("present.")}
        return outputs["logits"], present


def onnx_lm_perplexity(onnx_path: Path, windows: list[list[int]], threads: int = 1) -> dict:
    """Teacher-forced perplexity and top-1 next-token accuracy of an ONNX decoder on ``windows`` (each scored
    alone, from an empty cache), with no PyTorch model: how the bundle and the bench score shipped files."""
    lm = LMSession(onnx_path, threads)
    nll, correct, predicted = 0.0, 0, 0
    for w in windows:
        logits = lm.step(list(map(int, w)), lm.empty_past(), 0)[0][0]  # [len, vocab]
        targets = np.asarray(w[1:])
        nll += float(_nll(logits[:-1], targets).sum())
        correct += int((logits[:-1].argmax(-1) == targets).sum())
        predicted += len(targets)
    if not predicted:
        raise ConfigError(f"{onnx_path.name}: no windows of 2 or more tokens to score")
    return {"perplexity": float(np.exp(nll / predicted)), "next_token_accuracy": correct / predicted,
            "tokens": predicted}


def _nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-token negative log-likelihood; logits [n, vocab] predict targets [n] (float64 for a stable sum)."""
    z = logits.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    return np.log(np.exp(z).sum(-1)) - z[np.arange(len(targets)), targets]


@torch.inference_mode()
def _torch_logits(model: nn.Module, window: list[int]) -> np.ndarray:
    ids = torch.tensor([window], dtype=torch.long)
    return model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[0].float().numpy()


def _kv_check(lm: LMSession, window: list[int], ref: np.ndarray, decode_steps: int) -> tuple[float, int, int]:
    """Prefill the first half of ``window``, then decode the rest one token at a time (teacher-forced, present ->
    past). Returns (max |logit diff| vs the full-sequence reference [len, vocab], argmax matches, positions)."""
    prompt = max(1, len(window) // 2)
    logits, past = lm.step(window[:prompt], lm.empty_past(), 0)
    diffs = [float(np.abs(logits[0] - ref[:prompt]).max())]  # logits [1, prompt, vocab]
    agree = int((logits[0].argmax(-1) == ref[:prompt].argmax(-1)).sum())
    for pos in range(prompt, min(len(window), prompt + decode_steps)):
        logits, past = lm.step([window[pos]], past, pos)  # logits [1, 1, vocab]
        diffs.append(float(np.abs(logits[0, 0] - ref[pos]).max()))
        agree += int(logits[0, 0].argmax() == ref[pos].argmax())
    positions = min(len(window), prompt + decode_steps)
    return max(diffs), agree, positions


def lm_parity(model: nn.Module, onnx_path: Path, windows: list[list[int]], ppl_rtol: float = 0.01,
              min_agreement: float = 0.98, decode_steps: int = 8, threads: int = 1) -> dict:
    """Teacher-forced perplexity, top-1 agreement and max |logit diff| of ONNX vs PyTorch on ``windows`` (token ids,
    each scored alone), plus a KV-cache check on the first window: prefill, then ``decode_steps`` cached steps whose
    logits are compared with PyTorch's full-sequence logits. Raises :class:`ParityError` when perplexity differs by
    more than ``ppl_rtol`` (relative) or either agreement is below ``min_agreement``. Also used with loose bounds
    to score quantized files against the fp32 model.
    """
    windows = [list(map(int, w)) for w in windows if len(w) >= 2]
    if not windows:
        raise ConfigError(f"{onnx_path.name}: lm_parity needs at least one window of 2 or more tokens")
    model = model.eval()
    lm = LMSession(onnx_path, threads)
    nll_t, nll_o, agree, tokens, max_diff = 0.0, 0.0, 0, 0, 0.0
    refs = []
    for w in windows:
        ref = _torch_logits(model, w)  # [len, vocab]
        out = lm.step(w, lm.empty_past(), 0)[0][0]
        refs.append(ref)
        targets = np.asarray(w[1:])
        nll_t += float(_nll(ref[:-1], targets).sum())
        nll_o += float(_nll(out[:-1], targets).sum())
        max_diff = max(max_diff, float(np.abs(out - ref).max()))
        agree += int((out.argmax(-1) == ref.argmax(-1)).sum())
        tokens += len(w)
    predicted = sum(len(w) - 1 for w in windows)
    ppl_t, ppl_o = float(np.exp(nll_t / predicted)), float(np.exp(nll_o / predicted))
    kv_diff, kv_agree, kv_positions = _kv_check(lm, windows[0], refs[0], decode_steps)
    result = {"ppl_torch": ppl_t, "ppl_onnx": ppl_o, "ppl_rel_diff": abs(ppl_o - ppl_t) / ppl_t,
              "top1_agreement": agree / tokens, "max_abs_diff": max_diff, "kv_max_abs_diff": kv_diff,
              "kv_top1_agreement": kv_agree / kv_positions, "kv_positions": kv_positions,
              "windows": len(windows), "predicted_tokens": predicted}
    log.info("LM parity %s: ppl %.4g (torch) vs %.4g (onnx), top-1 %.4f, max|dlogit| %.2e, KV max|dlogit| %.2e",
             onnx_path.name, ppl_t, ppl_o, result["top1_agreement"], max_diff, kv_diff)
    if (result["ppl_rel_diff"] > ppl_rtol or result["top1_agreement"] < min_agreement
            or result["kv_top1_agreement"] < min_agreement):
        raise ParityError(f"{onnx_path.name}: ONNX differs from PyTorch (perplexity {ppl_o:.4g} vs {ppl_t:.4g}, "
                          f"relative diff {result['ppl_rel_diff']:.2e}, allowed {ppl_rtol:.0e}; top-1 agreement "
                          f"{result['top1_agreement']:.4f}, KV-decode agreement {result['kv_top1_agreement']:.4f}, "
                          f"required {min_agreement}; max |logit diff| {max_diff:.2e})")
    return result
