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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_tokenizer(folder: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise AssetError(f"no usable tokenizer in {folder!r}: {str(exc).splitlines()[0]}") from exc


def _label_kwargs(label_names: list[str] | None) -> dict:
    if label_names is None:
        return {}
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)}}


def load_classifier(folder: str, label_names: list[str] | None = None, attn_implementation: str = "sdpa") -> nn.Module:
    """A sequence classifier from ``folder`` (a new head is created if ``label_names`` differ)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise AssetError(f"cannot read a model config from {folder!r}: {str(exc).splitlines()[0]}") from exc
    layout = getattr(config, LAYOUT_KEY, None)
    if layout is None or _stock_compatible(config, layout):
        return AutoModelForSequenceClassification.from_pretrained(
            folder, attn_implementation=attn_implementation, **_label_kwargs(label_names)
        )
    return _load_with_layout(folder, config, layout, attn_implementation)


def _stock_compatible(config, layout: dict) -> bool:
    """True when a stock ``from_pretrained`` builds the right shapes (uniform, heads * head_dim == hidden)."""
    arch = arch_of(config)
    return (
        len(set(layout["heads"])) == 1 and len(set(layout["ffn"])) == 1
        and layout["heads"][0] == getattr(config, arch.cfg_heads)
        and layout["ffn"][0] == getattr(config, arch.cfg_ffn)
        and layout["heads"][0] * layout["head_dim"] == getattr(config, arch.cfg_hidden)
    )


def _load_with_layout(folder: str, config, layout: dict, attn_implementation: str) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    arch = arch_of(config)
    build = config.__class__.from_dict(config.to_dict())
    # Build with one head (it divides any hidden width), then give every layer its real shapes.
    setattr(build, arch.cfg_heads, 1)
    model = AutoModelForSequenceClassification.from_config(build, attn_implementation=attn_implementation)
    hidden = getattr(config, arch.cfg_hidden)
    for layer, heads, ffn in zip(encoder_layers(model), layout["heads"], layout["ffn"]):
        resize_layer(model, layer, hidden, heads, layout["head_dim"], ffn)
    weights = Path(folder) / "model.safetensors"
    if not weights.is_file():
        raise AssetError(f"{folder}: pruned layout needs model.safetensors next to config.json")
    model.load_state_dict(load_file(str(weights)), strict=True)
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
