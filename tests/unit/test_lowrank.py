import pytest
import torch
from pydantic import ValidationError

from edgekd.config import validate_pipeline
from edgekd.errors import ConfigError
from edgekd.export.config import ExportConfig
from edgekd.export.core import check_parity, export_onnx, parity_inputs
from edgekd.models import count_parameters, load_classifier, save_classifier
from edgekd.models.arch import encoder_layers, layer_modules
from edgekd.prune.config import LowRankConfig
from edgekd.prune.lowrank import LowRankLinear, choose_rank, factorize_linears
from tests.conftest import build_tokenizer, make_texts, make_tiny_model_dir
from tests.unit.test_export_quantize import requires_optimum
from tests.unit.test_prune import _calibration


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("lowrank"), "bert", num_hidden_layers=2)


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _designed_weight(out_features, in_features, singular_values):
    """W [out, in] = U diag(s) V^T with random orthonormal U, V."""
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(out_features, len(singular_values), generator=g))
    v, _ = torch.linalg.qr(torch.randn(in_features, len(singular_values), generator=g))
    return u @ torch.diag(torch.tensor(singular_values)) @ v.T


def test_energy_picks_the_documented_rank(tiny_dir):
    # five singular values of 10, 59 of 1: sum(S^2) = 559. Five keep 500/559 = 89.4%; 95% needs 5 + 32 = 37
    # (500 + 32 >= 0.95 * 559 = 531.05), rounded up to 40 with multiple 8.
    s = [10.0] * 5 + [1.0] * 59
    assert choose_rank(torch.tensor(s), None, 0.85, 1) == 5
    assert choose_rank(torch.tensor(s), None, 0.85, 8) == 8
    assert choose_rank(torch.tensor(s), None, 0.95, 1) == 37
    assert choose_rank(torch.tensor(s), None, 0.95, 8) == 40
    assert choose_rank(torch.tensor(s), 70, None, 16) == 64  # capped at the full rank
    model = load_classifier(str(tiny_dir))
    for layer in encoder_layers(model):  # ffn_in: weight [128, 64]
        with torch.no_grad():
            layer_modules(model, layer)["ffn_in"].weight.copy_(_designed_weight(128, 64, s))
    report = factorize_linears(model, None, 0.95, ["ffn_in"], multiple=8)
    assert report.ranks == {"ffn_in": [40, 40]}
    assert all(isinstance(layer_modules(model, layer)["ffn_in"], LowRankLinear) for layer in encoder_layers(model))


def test_reconstruction_error_falls_with_rank_and_parameters_drop(tiny_dir):
    errors = []
    for rank in (8, 16, 32):
        model = load_classifier(str(tiny_dir))
        before = count_parameters(model)
        report = factorize_linears(model, rank, None, ["ffn_in", "ffn_out", "out"])
        assert report.ranks["ffn_in"] == [rank, rank] and report.ranks["ffn_out"] == [rank, rank]
        # out is [64, 64]: rank 32 would cost 32 * 128 = 64 * 64 parameters, so it stays full rank
        assert report.ranks["out"] == ([None, None] if rank == 32 else [rank, rank])
        assert report.parameters_before == before and report.parameters_after == count_parameters(model) < before
        errors.append(report.relative_error["ffn_in"][0])
    assert errors[0] > errors[1] > errors[2] > 0


@torch.no_grad()
def test_no_saving_keeps_the_linear_and_factors_hold_the_svd(tiny_dir):
    model = load_classifier(str(tiny_dir))
    linear = layer_modules(model, encoder_layers(model)[0])["ffn_in"]  # weight [128, 64]
    report = factorize_linears(model, 64, None, ["ffn_in"])  # 64 * (64 + 128) > 64 * 128: no saving
    assert report.ranks == {"ffn_in": [None, None]}
    assert layer_modules(model, encoder_layers(model)[0])["ffn_in"] is linear
    report = factorize_linears(model, 40, None, ["ffn_in"])
    new = layer_modules(model, encoder_layers(model)[0])["ffn_in"]
    assert new.rank == 40 and new.in_features == 64 and new.out_features == 128
    approx = new.up.weight @ new.down.weight  # [128, 40] @ [40, 64]
    s = torch.linalg.svdvals(linear.weight)
    # Eckart-Young: the truncated SVD's error is the norm of the dropped singular values
    expected = float(torch.sqrt((s[40:] ** 2).sum() / (s**2).sum()))
    assert report.relative_error["ffn_in"][0] == pytest.approx(expected, rel=1e-3)
    assert float(torch.linalg.norm(approx - linear.weight) / torch.linalg.norm(linear.weight)) == pytest.approx(
        expected, rel=1e-3)
    torch.testing.assert_close(new.up.bias, linear.bias)


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_save_reload_gives_identical_logits(tmp_path, arch):
    model = load_classifier(str(make_tiny_model_dir(tmp_path / "m", arch, initializer_range=0.2)))
    report = factorize_linears(model, None, 0.5, ["ffn_in", "ffn_out", "out"], multiple=8)
    assert any(r is not None for ranks in report.ranks.values() for r in ranks)
    batch = _calibration(1)[0][0]
    expected = _logits(model.eval(), batch)
    save_classifier(model, build_tokenizer(tmp_path / "tok"), tmp_path / "lr")
    reloaded = load_classifier(str(tmp_path / "lr"))
    assert type(reloaded).__name__ == type(model).__name__  # a stock class with factorised Linears
    assert count_parameters(reloaded) == report.parameters_after
    torch.testing.assert_close(_logits(reloaded, batch), expected, rtol=0, atol=0)


def test_pruned_then_factorised_reloads(tmp_path, tiny_dir):
    from edgekd.prune.config import PruneConfig
    from edgekd.prune.core import prune

    student, pruned = prune(load_classifier(str(tiny_dir)), PruneConfig(head_ratio=0.5, ffn_ratio=0.5,
                                                                         layer_ratio=0.0), _calibration())
    factorize_linears(student, 16, None, ["ffn_in", "ffn_out"])
    batch = _calibration(1)[0][0]
    expected = _logits(student.eval(), batch)
    save_classifier(student, build_tokenizer(tmp_path / "tok"), tmp_path / "lr", layout=pruned.layout)
    torch.testing.assert_close(_logits(load_classifier(str(tmp_path / "lr")), batch), expected, rtol=0, atol=0)


@pytest.mark.parametrize("exporter", [pytest.param("optimum", marks=requires_optimum), "torch"])
def test_onnx_export_parity(tmp_path, tiny_dir, exporter):
    model = load_classifier(str(tiny_dir))
    factorize_linears(model, 16, None, ["ffn_in", "ffn_out", "out"])
    save_classifier(model, build_tokenizer(tmp_path / "tok"), tmp_path / "lr")
    model = load_classifier(str(tmp_path / "lr"), attn_implementation="eager")
    result = export_onnx(model, tmp_path / "onnx", ExportConfig(exporter=exporter))
    assert result.exporter == exporter
    tok = build_tokenizer(tmp_path / "tok")
    ids = tok([t for t, _ in make_texts(16, seed=5)], truncation=True, max_length=32)["input_ids"]
    parity = check_parity(model, result.path, parity_inputs(ids, [(1, 5), (3, 17)], tok.pad_token_id), atol=1e-4)
    assert parity["max_abs_diff"] < 1e-4 and parity["argmax_agreement"] == 1.0


def test_config_validation_names_the_field():
    with pytest.raises(ValidationError, match="exactly one of rank"):
        LowRankConfig()
    with pytest.raises(ValidationError, match="exactly one of rank"):
        LowRankConfig(rank=8, energy=0.9)
    with pytest.raises(ConfigError, match=r"stages\.1\.prune\.low_rank\.energy"):
        validate_pipeline({"stages": [{"kind": "teacher"}, {"kind": "prune", "low_rank": {"energy": 1.5}}]})
    with pytest.raises(ConfigError, match=r"stages\.1\.prune\.low_rank\.include\.0.*'ffn_in', 'ffn_out' or 'out'"):
        validate_pipeline({"stages": [{"kind": "teacher"}, {"kind": "prune", "low_rank": {"rank": 8,
                                                                                         "include": ["query"]}}]})
    cfg = validate_pipeline({"stages": [{"kind": "teacher"}, {"kind": "prune", "low_rank": {"energy": 0.9}}]})
    assert cfg.stages[1].low_rank.include == ["ffn_in", "ffn_out"] and cfg.stages[1].low_rank.multiple_of == 8
    with pytest.raises(ConfigError, match="low_rank.include: \\['query'\\] not allowed"):
        factorize_linears(None, 8, None, ["query"])
