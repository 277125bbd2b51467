import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from edgekd.models import load_classifier, save_classifier
from edgekd.models.arch import encoder_layers, layer_modules
from edgekd.prune.config import PruneConfig
from edgekd.prune.core import layers_to_keep, prune
from tests.conftest import build_tokenizer, make_tiny_model_dir

ARCHS = ["bert", "roberta", "distilbert"]
HEAD_DIM = 16  # tiny_config: hidden 64, 4 heads


def _calibration(n_batches=2, batch=4, seq=12, vocab=60):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(7, vocab, (batch, seq), generator=g)
        mask = torch.ones_like(ids)
        mask[1, 8:] = 0
        out.append(({"input_ids": ids, "attention_mask": mask}, torch.randint(0, 2, (batch,), generator=g)))
    return out


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory):
    # A large init (0.2, default 0.02) gives attention scores large enough that a wrong softmax scaling
    # changes logits by ~0.5; at the default init it hides below float32 test tolerances.
    folder = make_tiny_model_dir(tmp_path_factory.mktemp(request.param), request.param, initializer_range=0.2)
    return request.param, folder


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("importance", ["taylor", "magnitude", "activation"])
def test_prune_heads_ffn_layers_and_reload(tiny, importance, tmp_path):
    arch, folder = tiny
    model = load_classifier(str(folder), attn_implementation="eager")
    original = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = PruneConfig(importance=importance, head_ratio=0.5, ffn_ratio=0.5, layer_ratio=0.5)
    student, report = prune(model, cfg, _calibration())
    # the input model is untouched
    assert all(torch.equal(original[k], v) for k, v in model.state_dict().items())
    assert report.kept_layers == [0, 3]
    assert report.layout["heads"] == [2, 2] and report.layout["ffn"] == [64, 64]
    for layer in encoder_layers(student):
        parts = layer_modules(student, layer)
        assert parts["q"].out_features == 32 and parts["out"].in_features == 32
        assert parts["ffn_in"].out_features == 64 and parts["ffn_out"].in_features == 64
    assert report.parameters_after < report.parameters_before
    batch = _calibration(1)[0][0]
    expected = _logits(student, batch)
    save_classifier(student, build_tokenizer(tmp_path / "tok"), tmp_path / "pruned", layout=report.layout)
    reloaded = load_classifier(str(tmp_path / "pruned"), attn_implementation="eager")
    assert type(reloaded).__name__ == type(model).__name__  # a stock class, not a subclass
    torch.testing.assert_close(_logits(reloaded, batch), expected)


def test_non_stock_layout_needs_the_layout_loader(tiny, tmp_path):
    arch, folder = tiny
    student, report = prune(load_classifier(str(folder)), PruneConfig(head_ratio=0.5, ffn_ratio=0.0, layer_ratio=0.0),
                            _calibration())
    save_classifier(student, build_tokenizer(tmp_path / "tok"), tmp_path / "pruned", layout=report.layout)
    # heads x head_dim != hidden: stock loading must fail loudly (a shape mismatch), not run wrong
    with pytest.raises(RuntimeError, match="size mismatch|ignore_mismatched_sizes"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned")
    assert load_classifier(str(tmp_path / "pruned")) is not None


def test_uniform_ffn_and_depth_pruning_stays_stock_loadable(tmp_path):
    folder = make_tiny_model_dir(tmp_path / "m", "bert")
    student, report = prune(load_classifier(str(folder)), PruneConfig(head_ratio=0.0, ffn_ratio=0.25, layer_ratio=0.5),
                            _calibration())
    save_classifier(student, build_tokenizer(tmp_path / "tok"), tmp_path / "pruned", layout=report.layout)
    stock = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned").eval()
    batch = _calibration(1)[0][0]
    torch.testing.assert_close(_logits(stock, batch), _logits(student.eval(), batch))


@pytest.mark.parametrize("importance", ["taylor", "activation"])
@pytest.mark.parametrize("arch", ARCHS)
def test_hidden_width_pruning(tmp_path, arch, importance):
    folder = make_tiny_model_dir(tmp_path / "m", arch)
    cfg = PruneConfig(importance=importance, head_ratio=0.5, ffn_ratio=0.5, hidden_ratio=0.25, layer_ratio=0.0)
    student, report = prune(load_classifier(str(folder)), cfg, _calibration())
    assert report.hidden_after == 48
    save_classifier(student, build_tokenizer(tmp_path / "tok"), tmp_path / "pruned", layout=report.layout)
    batch = _calibration(1)[0][0]
    torch.testing.assert_close(_logits(load_classifier(str(tmp_path / "pruned")), batch), _logits(student.eval(), batch))


def _kept_heads(model, student, head_dim=HEAD_DIM) -> list[list[int]]:
    """Which of the full model's heads each pruned layer kept, found by matching blocks of query weights."""
    kept = []
    for old, new in zip(encoder_layers(model), encoder_layers(student)):
        old_blocks = layer_modules(model, old)["q"].weight.split(head_dim)
        layer_kept = []
        for block in layer_modules(student, new)["q"].weight.split(head_dim):
            matches = [h for h, old_block in enumerate(old_blocks) if torch.equal(old_block, block)]
            assert len(matches) == 1
            layer_kept.append(matches[0])
        kept.append(layer_kept)
    return kept


def _with_heads_zeroed(model, kept: list[list[int]], head_dim=HEAD_DIM):
    """A copy of the full model in which only the kept heads reach the output: the other heads' columns of
    the attention output projection are zero. An exact reference on every transformers version (``head_mask``
    is silently ignored on 5.x)."""
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        for layer, layer_kept in zip(encoder_layers(reference), kept):
            out = layer_modules(reference, layer)["out"].weight
            for head in range(out.shape[1] // head_dim):
                if head not in layer_kept:
                    out[:, head * head_dim : (head + 1) * head_dim] = 0.0
    return reference


@pytest.mark.parametrize("arch", ARCHS)
def test_head_pruning_equals_zeroing_the_removed_heads_in_memory_and_reloaded(tmp_path, arch):
    """Removing heads must compute exactly what the full model computes without those heads, and so must the
    reloaded model (its loader builds one head per layer first, then sets the real head count)."""
    folder = make_tiny_model_dir(tmp_path / "m", arch, initializer_range=0.2)  # see the ``tiny`` fixture
    model = load_classifier(str(folder), attn_implementation="eager")
    student, report = prune(model, PruneConfig(head_ratio=0.5, ffn_ratio=0.0, layer_ratio=0.0), _calibration())
    assert report.layout["heads"] == [2, 2, 2, 2]
    batch = _calibration(1)[0][0]
    reference = _logits(_with_heads_zeroed(model, _kept_heads(model, student)), batch)
    assert (reference - _logits(model, batch)).abs().max() > 0.05  # the removed heads mattered
    in_memory = _logits(student.eval(), batch)
    torch.testing.assert_close(in_memory, reference, atol=1e-5, rtol=1e-5)
    save_classifier(student, build_tokenizer(tmp_path / "tok"), tmp_path / "pruned", layout=report.layout)
    for attn in ("eager", "sdpa"):
        reloaded = _logits(load_classifier(str(tmp_path / "pruned"), attn_implementation=attn), batch)
        torch.testing.assert_close(reloaded, in_memory, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(reloaded, reference, atol=1e-5, rtol=1e-5)


def test_layers_to_keep():
    assert layers_to_keep(6, PruneConfig(layer_ratio=0.5)) == [0, 2, 5]
    assert layers_to_keep(6, PruneConfig(layer_ratio=0.0)) == [0, 1, 2, 3, 4, 5]
    assert layers_to_keep(12, PruneConfig(layer_ratio=0.75)) == [0, 6, 11]
    assert layers_to_keep(6, PruneConfig(keep_layers=[5, 1])) == [1, 5]
    from edgekd.errors import ConfigError

    with pytest.raises(ConfigError, match="out of range"):
        layers_to_keep(4, PruneConfig(keep_layers=[7]))
