"""Checks that run before the first stage, so bad input stops in seconds instead of after training.

Everything that can be known from the model folder, the settings and the labels is checked here:
the weights file can be opened (and is not a pickle unless the user opted in), the tokenizer loads,
``max_length`` fits the position table, ``keep_layers`` and ``layer_map`` name existing layers, and a
teacher used as given (``finetune: false``) has a head for exactly the data's labels, in their order.
Problems inside the data file itself (encoding, malformed rows, label spellings) are reported by
:mod:`edgekd.data.read` and :mod:`edgekd.data.split` where the file is read.
"""

import json
import logging
from pathlib import Path

from edgekd.assets import resolve_dataset_file, resolve_model_dir
from edgekd.errors import AssetError, ConfigError
from edgekd.models.io import load_tokenizer, saved_label_names

log = logging.getLogger(__name__)

# RoBERTa-style embeddings number the positions of a text from padding_idx + 1 on, so the first
# padding_idx + 1 rows of the position table are never used by a token.
_PADDING_OFFSET_TYPES = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "ibert",
                         "longformer", "mpnet"}
_FIXED_PADDING_IDX = {"mpnet": 1}  # MPNet's embeddings use 1 whatever pad_token_id says
_PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_OTHER_WEIGHT_FILES = ("tf_model.h5", "flax_model.msgpack", "model.ckpt.index")
# Every supported family (BERT, RoBERTa, XLM-R, ELECTRA, MPNet, DistilBERT) names its head "classifier".
_HEAD_PREFIX = "classifier."


def check_pipeline(config) -> None:
    """Raise an :class:`~edgekd.errors.EdgekdError` for any input problem found without training.

    ``config`` is an :class:`edgekd.config.PipelineConfig`. Hub models skip the folder checks: their
    files are only on this machine once the teacher stage has downloaded them.
    """
    distill = _stage(config, "distill")
    if distill is not None and distill.extra_data.unlabelled and not getattr(config.data, "unlabelled_labels", None):
        raise ConfigError("distill.extra_data.unlabelled: true needs an unlabelled pool; name the labels of the "
                          "unlabelled rows in data.unlabelled_labels (e.g. [plot])")
    # The peer and bundle stages run after training: name a missing package before the teacher trains.
    bundle = _stage(config, "bundle")
    if _stage(config, "peer") is not None and config.task == "causal-lm":
        from edgekd.peer.genai import require_genai

        require_genai()
    elif _stage(config, "peer") is not None:
        from edgekd.peer.core import require_optimum

        require_optimum()
    if bundle is not None and bundle.lm is not None and bundle.lm.genai:
        from edgekd.peer.genai import require_genai

        require_genai("bundle lm.genai", "remove lm.genai from the bundle stage")
    source = config.model.source
    if source.startswith("hub:"):
        log.info("preflight: %s is a hub model; its folder is not checked before it is downloaded", source)
        return
    folder = Path(resolve_model_dir(source))
    model_config = read_model_config(folder)
    tensor_names = check_weights(folder, config.model.allow_pickle)
    # The export stage ships tokenizer.json next to each ONNX model; quantize, bundle and bench read it from there.
    check_tokenizer(folder, needs_tokenizer_json=_stage(config, "export") is not None)
    check_max_length(folder, model_config, config.model.max_length)
    if config.task == "causal-lm":
        check_causal_lm(folder, model_config)
        check_lm_prune(folder, model_config, _stage(config, "prune"))
        log.info("preflight: %s and the pipeline settings look usable", folder)
        return
    check_layers(folder, model_config, _stage(config, "prune"), _stage(config, "distill"))
    teacher = _stage(config, "teacher")
    if teacher is not None and not teacher.finetune:
        check_head_fits_labels(folder, model_config, tensor_names, data_label_names(config))
    log.info("preflight: %s and the pipeline settings look usable", folder)


def _stage(config, kind: str):
    return next((stage for stage in config.stages if stage.kind == kind), None)


def read_model_config(folder: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as exc:
        raise AssetError(f"{folder / 'config.json'}: not a usable model config: {str(exc).splitlines()[0]}") from exc


def _safetensors_names(path: Path) -> list[str]:
    """Tensor names from the file's header; a truncated or foreign file fails here, not in from_pretrained."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
    except (SafetensorError, OSError) as exc:
        raise AssetError(f"{path}: not a readable safetensors file ({exc}); copy or save the model again") from None
    if not names:
        raise AssetError(f"{path}: holds no tensors; copy or save the model again")
    return names


def _sharded_safetensors_names(index: Path) -> list[str]:
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise AssetError(f"{index}: not a safetensors index (a JSON object with a weight_map): {exc}") from None
    names = []
    for shard in shards:
        if not (index.parent / shard).is_file():
            raise AssetError(f"{index}: lists {shard}, which is not in {index.parent}")
        names += _safetensors_names(index.parent / shard)
    return names


def check_weights(folder: Path, allow_pickle: bool) -> list[str] | None:
    """The tensor names of the folder's safetensors weights; None for pickled weights the user accepted."""
    if (folder / "model.safetensors").is_file():
        return _safetensors_names(folder / "model.safetensors")
    if (folder / "model.safetensors.index.json").is_file():
        return _sharded_safetensors_names(folder / "model.safetensors.index.json")
    pickles = [name for name in _PICKLE_FILES if (folder / name).is_file()]
    if pickles and not allow_pickle:
        raise AssetError(
            f"{folder / pickles[0]}: the only weights are a pickle, which can run code when loaded; convert them to "
            f"model.safetensors (save_pretrained) or set model.allow_pickle: true if you trust the source"
        )
    if pickles:
        log.warning("%s: loading pickled weights because model.allow_pickle is true", folder / pickles[0])
        return None
    others = [name for name in _OTHER_WEIGHT_FILES if (folder / name).is_file()]
    found = f" (found only {', '.join(others)}, which edgekd does not load)" if others else ""
    raise AssetError(f"{folder}: no weights file; expected model.safetensors{found}")


def check_tokenizer(folder: Path, needs_tokenizer_json: bool) -> None:
    """The tokenizer loads; ONNX stages also need it as a fast tokenizer (they ship tokenizer.json)."""
    tokenizer = load_tokenizer(str(folder))
    if needs_tokenizer_json and not tokenizer.is_fast:
        raise AssetError(
            f"{folder}: {type(tokenizer).__name__} is not a fast tokenizer, so no tokenizer.json can go with the ONNX "
            f"model; add the model's tokenizer.json to the folder"
        )


def usable_positions(model_config) -> int | None:
    """How many tokens one text may have before the position table runs out (None: no table)."""
    positions = getattr(model_config, "max_position_embeddings", None)
    if positions is None:
        return None
    if model_config.model_type not in _PADDING_OFFSET_TYPES:
        return positions
    pad = getattr(model_config, "pad_token_id", None)
    padding_idx = _FIXED_PADDING_IDX.get(model_config.model_type, 1 if pad is None else pad)
    return positions - padding_idx - 1


def check_max_length(folder: Path, model_config, max_length: int) -> None:
    usable = usable_positions(model_config)
    if usable is None or max_length <= usable:
        return
    offset = usable != model_config.max_position_embeddings
    raise ConfigError(
        f"model.max_length: {max_length} is longer than the model allows: {folder / 'config.json'} has "
        f"max_position_embeddings {model_config.max_position_embeddings}"
        f"{f' ({usable} usable after the padding offset)' if offset else ''}; set model.max_length to {usable} or less"
    )


def causal_lm_head_problem(model_config) -> str | None:
    """Why this config is not a decoder language model, or None. BERT has a causal-LM class in transformers
    too, so the saved architecture decides: a sequence classifier is not a language model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    allowed = "task causal-lm needs a decoder language model (Llama, Qwen2, GPT-2, SmolLM2, ...)"
    if model_config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or model_config.is_encoder_decoder:
        return f"model_type {model_config.model_type!r} has no causal-LM head in transformers; {allowed}"
    heads = [a for a in (model_config.architectures or []) if a.endswith(("ForCausalLM", "LMHeadModel"))]
    if model_config.architectures and not heads:
        return (f"architecture {', '.join(model_config.architectures)} has no causal-LM head "
                f"(model_type {model_config.model_type!r}); {allowed}")
    return None


def check_causal_lm(folder: Path, model_config) -> None:
    """A decoder with a language-model head and a tokenizer with an EOS token (put after every document)."""
    problem = causal_lm_head_problem(model_config)
    if problem:
        raise ConfigError(f"{folder / 'config.json'}: {problem}")
    if load_tokenizer(str(folder)).eos_token_id is None:
        raise ConfigError(f"{folder}: the tokenizer has no EOS token; causal-lm training puts one after every "
                          "document (set eos_token in tokenizer_config.json)")


# Decoder layouts the causal-LM pruner handles (q/k/v/o attention, gate/up/down MLP, model.layers); tested on llama
# and qwen2, mistral has the same modules.
PRUNABLE_LM_TYPES = ("llama", "mistral", "qwen2")


def check_lm_prune(folder: Path, model_config, prune) -> None:
    if prune is None:
        return
    if model_config.model_type not in PRUNABLE_LM_TYPES:
        raise ConfigError(f"prune: {folder / 'config.json'} is a {model_config.model_type!r} model; causal-lm pruning "
                          f"supports {', '.join(PRUNABLE_LM_TYPES)} layouts so far (export, quantize and bench work "
                          "for any causal LM: leave prune and distill out)")
    layers = model_config.num_hidden_layers
    bad = [i for i in prune.keep_layers or [] if not 0 <= i < layers]
    if bad:
        raise ConfigError(f"prune.keep_layers: {bad} out of range; {folder / 'config.json'} has {layers} layers "
                          f"(0..{layers - 1})")


def check_layers(folder: Path, model_config, prune, distill) -> None:
    """``keep_layers``, MPNet head pruning and ``layer_map`` against the model's real layer count."""
    if prune is None:  # distill needs the pruned model, so without prune there is nothing to check
        return
    from edgekd.models.arch import arch_of
    from edgekd.prune.core import layers_to_keep

    arch = arch_of(model_config)  # an unsupported model type stops here, before the teacher trains
    n_layers = getattr(model_config, arch.cfg_layers)
    if prune.keep_layers is not None:
        bad = sorted(i for i in prune.keep_layers if i >= n_layers)
        if bad:
            raise ConfigError(f"prune.keep_layers: {bad} out of range; the model in {folder} has {n_layers} layers "
                              f"(0..{n_layers - 1})")
    if arch.family == "mpnet" and prune.head_ratio > 0:
        raise ConfigError("prune.head_ratio: head pruning is not supported for MPNet; set head_ratio: 0")
    kept = len(layers_to_keep(n_layers, prune))
    layer_map = distill.layer_map if distill is not None else None
    for student, teacher in sorted((layer_map or {}).items()):
        if not 0 <= student < kept:
            raise ConfigError(f"distill.layer_map: student layer {student} (in {student}: {teacher}) out of range; "
                              f"the pruned student keeps {kept} layers (0..{kept - 1})")
        if not 0 <= teacher < n_layers:
            raise ConfigError(f"distill.layer_map: teacher layer {teacher} (in {student}: {teacher}) out of range; "
                              f"the teacher in {folder} has {n_layers} layers (0..{n_layers - 1})")


def data_label_names(config) -> list[str]:
    """The class names in class-index order, exactly as the pipeline's data step will order them."""
    from edgekd.data import make_splits, read_labelled_text

    data = config.data
    pairs = read_labelled_text(resolve_dataset_file(data.source), data.text_column, data.label_column,
                               data.drop_labels, data.hub_split)
    return make_splits(pairs, data.validation_fraction, data.test_fraction, config.seed, data.max_train_examples,
                       where=data.source, unlabelled_labels=data.unlabelled_labels).label_names


def check_head_fits_labels(folder: Path, model_config, tensor_names: list[str] | None, labels: list[str]) -> None:
    """A model used without fine-tuning must already classify into exactly ``labels``, in that order."""
    where = folder / "config.json"
    fix = "or set teacher.finetune: true to train a new head"
    if tensor_names is not None and not any(name.startswith(_HEAD_PREFIX) for name in tensor_names):
        raise ConfigError(f"teacher.finetune: false, but {folder} has no trained classification head (no classifier "
                          f"weights); set teacher.finetune: true")
    if model_config.num_labels != len(labels):
        raise ConfigError(f"teacher.finetune: false, but {where} has {model_config.num_labels} labels and the data "
                          f"{len(labels)} ({', '.join(labels)}); use data with the model's labels, {fix}")
    saved = saved_label_names(model_config)
    if saved is None:
        # LABEL_0, LABEL_1... say nothing about meaning, except that data labelled 0, 1... uses the same indices.
        if labels != [str(i) for i in range(len(labels))]:
            raise ConfigError(f"teacher.finetune: false, but {where} names its labels LABEL_0..LABEL_{len(labels) - 1}"
                              f", so which one is {labels[0]!r} is unknown; write the data's labels {labels} into its "
                              f"id2label in class-index order, {fix}")
        return
    if saved == labels:
        return
    if sorted(saved) == sorted(labels):
        # Renaming either side would swap what the trained head's outputs mean.
        raise ConfigError(f"teacher.finetune: false, but the labels in {where} {saved} are in another order than the "
                          f"data's {labels} (strings sorted, integers numerically) and are never swapped silently; "
                          f"set teacher.finetune: true to train a new head")
    raise ConfigError(f"teacher.finetune: false, but the labels in {where} {saved} differ from the data's {labels}; "
                      f"rename the data's labels to the model's, {fix}")
