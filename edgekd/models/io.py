"""Load and save encoder classifiers as Hugging Face folders (safetensors, never pickles).

A pruned model whose layers no longer have the stock shapes (heads pruned with the hidden width
kept, or widths that differ per layer) carries ``edgekd_layout`` in its config.json:
``{"head_dim": 32, "heads": [6, 6, 6], "ffn": [768, 768, 768], "source_layers": [0, 2, 5]}``.
:func:`load_classifier` rebuilds those Linear shapes on a stock model class before loading the
weights, so the result is still a plain ``*ForSequenceClassification`` that exporters accept.
"""

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from edgekd.errors import AssetError
from edgekd.models.arch import arch_of, encoder_layers, resize_layer

log = logging.getLogger(__name__)
LAYOUT_KEY = "edgekd_layout"
LOW_RANK_KEY = "edgekd_low_rank"  # {"ranks": {"ffn_in": [r or null per layer], ...}}, see edgekd.prune.lowrank


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Files from which AutoTokenizer can build a tokenizer: the fast-tokenizer file or a vocabulary.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model", "spm.model",
                   "tokenizer.model", "sentencepiece.model")


def load_tokenizer(folder: str):
    """The folder's tokenizer; a missing or broken one is an :class:`AssetError` naming the folder and its files."""
    from transformers import AutoTokenizer

    path = Path(folder)
    present = [name for name in TOKENIZER_FILES if (path / name).is_file()]
    if path.is_dir() and not present:
        # Without this check transformers fails deep inside with "stat: path should be string... not NoneType".
        raise AssetError(f"{folder}: no tokenizer files; expected tokenizer.json (or a vocabulary such as vocab.txt, "
                         f"vocab.json + merges.txt, sentencepiece.bpe.model); save the tokenizer into the model folder")
    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception as exc:  # tokenizers raises a bare Exception for a corrupt file, transformers many types
        files = f" ({', '.join(present)})" if present else ""
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AssetError(f"{folder}: tokenizer{files} cannot be loaded: {message}") from exc


def _label_kwargs(label_names: list[str] | None) -> dict:
    if label_names is None:
        return {}
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)}}


def saved_label_names(config) -> list[str] | None:
    """A config's label names in class-index order; None for transformers' placeholders LABEL_0, LABEL_1..."""
    names = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]
    return None if names == [f"LABEL_{i}" for i in range(len(names))] else names


def _new_head_reason(config, label_names: list[str] | None) -> str | None:
    """Why the saved classification head cannot serve ``label_names`` (None when it can)."""
    if label_names is None:
        return None
    if config.num_labels != len(label_names):
        return f"the folder has {config.num_labels} labels, the data {len(label_names)}"
    saved = saved_label_names(config)
    if saved is not None and saved != list(label_names):
        return f"the folder's labels {saved} are not the data's {list(label_names)}"
    return None


def _supported_attention(config, requested: str) -> str:
    """``requested``, or eager where the model class has no SDPA attention (ELECTRA, MPNet in transformers 4.x)."""
    if requested != "sdpa":
        return requested
    from transformers import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    try:
        model_class = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    except KeyError:
        return requested  # from_pretrained names the unsupported model type itself
    if getattr(model_class, "_supports_sdpa", False):
        return requested
    log.info("%s has no SDPA attention; using eager attention", model_class.__name__)
    return "eager"


def _is_head_key(model: nn.Module, key: str) -> bool:
    return key.split(".", 1)[0] != model.base_model_prefix


def _reset_head(model: nn.Module) -> None:
    """Fresh weights for every module outside the encoder (classifier, pre-classifier, dense + out_proj).

    Initialised here rather than with ``model._init_weights``: transformers 5 skips modules it marked
    as initialised when loading, which would leave the old head in place under the new labels.
    """
    std = getattr(model.config, "initializer_range", 0.02)
    for name, child in model.named_children():
        if name == model.base_model_prefix:
            continue
        for module in child.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def load_classifier(folder: str, label_names: list[str] | None = None, attn_implementation: str = "sdpa") -> nn.Module:
    """A sequence classifier from ``folder``; a new head is created if ``label_names`` differ from the saved labels.

    SDPA attention is used where the architecture has it, eager attention otherwise.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise AssetError(f"cannot read a model config from {folder!r}: {str(exc).splitlines()[0]}") from exc
    attn_implementation = _supported_attention(config, attn_implementation)
    new_head = _new_head_reason(config, label_names)
    layout = getattr(config, LAYOUT_KEY, None)
    # Low-rank factorised Linears (edgekd.prune.lowrank) have other parameter names: never the stock loader.
    low_rank = getattr(config, LOW_RANK_KEY, None)
    if low_rank is None and (layout is None or _stock_compatible(config, layout)):
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, attn_implementation=attn_implementation, **_label_kwargs(label_names),
            # a different number of labels gives the classifier another shape: make it new instead of failing
            ignore_mismatched_sizes=new_head is not None,
        )
    else:
        model = _load_with_layout(folder, config, layout, attn_implementation, label_names, new_head is not None)
    if new_head is not None:
        _reset_head(model)
        log.info("%s: created a new classification head for labels %s (%s)", folder, list(label_names), new_head)
    return model


def _stock_compatible(config, layout: dict) -> bool:
    """True when a stock ``from_pretrained`` builds the right shapes (uniform, heads * head_dim == hidden)."""
    arch = arch_of(config)
    return (
        len(set(layout["heads"])) == 1 and len(set(layout["ffn"])) == 1
        and layout["heads"][0] == getattr(config, arch.cfg_heads)
        and layout["ffn"][0] == getattr(config, arch.cfg_ffn)
        and layout["heads"][0] * layout["head_dim"] == getattr(config, arch.cfg_hidden)
    )


def _load_with_layout(folder: str, config, layout: dict, attn_implementation: str, label_names: list[str] | None,
                      new_head: bool) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    arch = arch_of(config)
    for key, value in _label_kwargs(label_names).items():
        setattr(config, key, value)
    build = config.__class__.from_dict(config.to_dict())
    reshape = layout is not None and not _stock_compatible(config, layout)  # else only low-rank modules differ
    if reshape:
        # Build with one head (it divides any hidden width), then give every layer its real shapes.
        setattr(build, arch.cfg_heads, 1)
    model = AutoModelForSequenceClassification.from_config(build, attn_implementation=attn_implementation)
    hidden = getattr(config, arch.cfg_hidden)
    if reshape:
        for layer, heads, ffn in zip(encoder_layers(model), layout["heads"], layout["ffn"]):
            resize_layer(model, layer, hidden, heads, layout["head_dim"], ffn)
    low_rank = getattr(config, LOW_RANK_KEY, None)
    if low_rank is not None:
        from edgekd.prune.lowrank import apply_low_rank_layout  # the module that makes these layers rebuilds them

        apply_low_rank_layout(model, low_rank)
    weights = Path(folder) / "model.safetensors"
    if not weights.is_file():
        raise AssetError(f"{folder}: pruned layout needs model.safetensors next to config.json")
    state = load_file(str(weights))
    if new_head:  # the saved head is replaced: load the encoder only
        state = {key: value for key, value in state.items() if not _is_head_key(model, key)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not _is_head_key(model, key) for key in missing):
            raise AssetError(f"{weights}: weights do not fit the layout in config.json "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    else:
        model.load_state_dict(state, strict=True)
    model.config = config
    model.config._attn_implementation = attn_implementation
    return model.eval()


def save_classifier(model: nn.Module, tokenizer, folder: Path, layout: dict | None = None) -> None:
    """Save weights (safetensors), config (with the layout if any) and tokenizer into ``folder``."""
    folder = Path(folder)
    if layout is not None:
        setattr(model.config, LAYOUT_KEY, layout)
    # Shared or non-contiguous tensors after pruning would make safetensors refuse to save.
    for p in model.parameters():
        p.data = p.data.contiguous()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    log.debug("saved %s (%d parameters) to %s", type(model).__name__, count_parameters(model), folder)


def layout_of(model: nn.Module, source_layers: list[int]) -> dict:
    """Describe each layer's head count and FFN width, as measured on the live modules."""
    from edgekd.models.arch import layer_modules

    arch = arch_of(model)
    heads, ffn, head_dim = [], [], None
    for layer in encoder_layers(model):
        parts = layer_modules(model, layer)
        n_heads = getattr(parts["attention"], arch.heads_attr)
        head_dim = parts["q"].out_features // n_heads
        heads.append(n_heads)
        ffn.append(parts["ffn_in"].out_features)
    return {"head_dim": head_dim, "heads": heads, "ffn": ffn, "source_layers": source_layers}


def torch_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise AssetError("device 'cuda' requested but no CUDA GPU is visible to torch")
    return torch.device(name)
