"""Where each encoder family keeps its layers, attention projections and FFN, and its config names.

Pruning and layout-aware loading need to find the same modules in BERT-like models (BERT, RoBERTa,
XLM-R, ELECTRA, MPNet) and DistilBERT. One small table per family; no registry, no magic.
"""

from dataclasses import dataclass

from torch import nn

from edgekd.errors import EdgekdError


@dataclass(frozen=True)
class EncoderArch:
    family: str
    layers_path: tuple[str, ...]  # attribute path from the base model to the nn.ModuleList of layers
    attention: str  # path inside a layer to the module holding q/k/v and the head count
    qkv: tuple[str, str, str]  # names of the q, k, v Linear layers inside ``attention``
    out: str  # path inside a layer to the attention output Linear
    ffn_in: str  # path inside a layer to the FFN up-projection Linear
    ffn_out: str  # path inside a layer to the FFN down-projection Linear
    heads_attr: str  # attribute on ``attention`` holding the number of heads
    all_head_attr: str  # attribute on ``attention`` holding heads * head_dim
    # config keys: number of layers, heads, hidden width, FFN width
    cfg_layers: str = "num_hidden_layers"
    cfg_heads: str = "num_attention_heads"
    cfg_hidden: str = "hidden_size"
    cfg_ffn: str = "intermediate_size"


_BERT_LIKE = dict(
    layers_path=("encoder", "layer"), attention="attention.self", qkv=("query", "key", "value"),
    out="attention.output.dense", ffn_in="intermediate.dense", ffn_out="output.dense",
    heads_attr="num_attention_heads", all_head_attr="all_head_size",
)
ARCHS = {
    "bert": EncoderArch("bert", **_BERT_LIKE),
    "roberta": EncoderArch("roberta", **_BERT_LIKE),
    "xlm-roberta": EncoderArch("xlm-roberta", **_BERT_LIKE),
    "electra": EncoderArch("electra", **_BERT_LIKE),
    "mpnet": EncoderArch(
        "mpnet", layers_path=("encoder", "layer"), attention="attention.attn", qkv=("q", "k", "v"),
        out="attention.attn.o", ffn_in="intermediate.dense", ffn_out="output.dense",
        heads_attr="num_attention_heads", all_head_attr="all_head_size",
    ),
    "distilbert": EncoderArch(
        "distilbert", layers_path=("transformer", "layer"), attention="attention", qkv=("q_lin", "k_lin", "v_lin"),
        out="attention.out_lin", ffn_in="ffn.lin1", ffn_out="ffn.lin2", heads_attr="n_heads", all_head_attr="dim",
        cfg_layers="n_layers", cfg_heads="n_heads", cfg_hidden="dim", cfg_ffn="hidden_dim",
    ),
}


def arch_of(model_or_config) -> EncoderArch:
    config = getattr(model_or_config, "config", model_or_config)
    try:
        return ARCHS[config.model_type]
    except KeyError:
        raise EdgekdError(
            f"model type {config.model_type!r} is not supported for pruning; supported: {', '.join(sorted(ARCHS))}"
        ) from None


def _get(module: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def _set(module: nn.Module, dotted: str, value: nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(_get(module, parent) if parent else module, leaf, value)


def base_model(model: nn.Module) -> nn.Module:
    return getattr(model, model.base_model_prefix)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    module = base_model(model)
    for part in arch_of(model).layers_path:
        module = getattr(module, part)
    return module


def layer_modules(model: nn.Module, layer: nn.Module) -> dict[str, nn.Module]:
    """The modules of one layer that pruning touches: attention, q, k, v, out, ffn_in, ffn_out."""
    arch = arch_of(model)
    attention = _get(layer, arch.attention)
    q, k, v = (getattr(attention, name) for name in arch.qkv)
    return {"attention": attention, "q": q, "k": k, "v": v, "out": _get(layer, arch.out),
            "ffn_in": _get(layer, arch.ffn_in), "ffn_out": _get(layer, arch.ffn_out)}


def set_heads(model: nn.Module, layer: nn.Module, heads: int, head_dim: int) -> None:
    """Tell a layer's attention module its (pruned) head count; torch-pruning only resizes Linears.

    Every attribute the module derived from the head count in ``__init__`` must follow, or the layer
    computes silently wrong attention: transformers 5 caches the softmax ``scaling`` (head_dim ** -0.5)
    on BERT, RoBERTa, XLM-R, ELECTRA and DistilBERT (4.x computed it in forward; MPNet still does).
    """
    arch = arch_of(model)
    attention = _get(layer, arch.attention)
    setattr(attention, arch.heads_attr, heads)
    setattr(attention, arch.all_head_attr, heads * head_dim)
    if hasattr(attention, "attention_head_size"):
        attention.attention_head_size = head_dim
    if hasattr(attention, "scaling"):
        attention.scaling = head_dim**-0.5


def resize_layer(model: nn.Module, layer: nn.Module, hidden: int, heads: int, head_dim: int, ffn: int) -> None:
    """Replace a layer's Linears with empty ones of the pruned shapes (weights are loaded afterwards)."""
    arch = arch_of(model)
    attn_width = heads * head_dim
    shapes = {  # (in_features, out_features) per Linear, as nn.Linear stores weight [out, in]
        f"{arch.attention}.{arch.qkv[0]}": (hidden, attn_width),
        f"{arch.attention}.{arch.qkv[1]}": (hidden, attn_width),
        f"{arch.attention}.{arch.qkv[2]}": (hidden, attn_width),
        arch.out: (attn_width, hidden),
        arch.ffn_in: (hidden, ffn),
        arch.ffn_out: (ffn, hidden),
    }
    for path, (n_in, n_out) in shapes.items():
        old = _get(layer, path)
        _set(layer, path, nn.Linear(n_in, n_out, bias=old.bias is not None))
    set_heads(model, layer, heads, head_dim)
