"""Structured pruning of tiny random decoder LMs (Llama, and Qwen2 with sliding-window layers as a second layout)."""

import copy

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from edgekd.errors import ConfigError, DataError
from edgekd.prune.causal_lm import drop_layers, prune_causal_lm, prune_ffn, prune_kv_groups
from edgekd.prune.causal_lm_scores import layer_scores

FAMILIES = ["llama", "qwen2"]
PLANTED = 2  # the layer made an identity in the tests that plant one


def build(family: str, seed: int = 0) -> nn.Module:
    """hidden 64, 4 heads / 2 KV heads (head_dim 16), 4 layers, FFN 128, vocab 128, tied embeddings. A large
    init (0.2) makes every layer matter, so a wrong slice or a stale head_dim moves the logits visibly."""
    common = dict(vocab_size=128, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=4,
                  intermediate_size=128, max_position_embeddings=64, tie_word_embeddings=True, initializer_range=0.2,
                  pad_token_id=0, bos_token_id=1, eos_token_id=None)
    torch.manual_seed(seed)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        # Layers 2-3 slide over 6 tokens: the mask and cache of each layer depend on config.layer_types by index.
        model = Qwen2ForCausalLM(Qwen2Config(**common, use_sliding_window=True, sliding_window=6, max_window_layers=2))
    with torch.no_grad():  # trained RMSNorm weights are not all ones (with ones, the final norm keeps cosines)
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    return model.eval()


def windows(n: int = 6, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 128, (int(torch.randint(10, 17, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def plant_identity(model: nn.Module, index: int = PLANTED) -> None:
    """Layer ``index`` adds nothing to the residual stream: its output equals its input exactly."""
    layer = model.model.layers[index]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()


def logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def assert_reloads_identically(model: nn.Module, folder) -> nn.Module:
    model.save_pretrained(folder)
    reloaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.tensor([windows(1, seed=7)[0]])
    torch.testing.assert_close(logits(reloaded, ids), logits(model, ids), atol=1e-6, rtol=0)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()  # still tied
    return reloaded


def assert_cache_generation_matches(model: nn.Module) -> None:
    # 12 new tokens after a 5-token prompt: the sliding layers (window 6) run past their window with a cache.
    prompt = torch.tensor([[1, 5, 9, 20, 33]])
    runs = [model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, min_new_tokens=12,
                           do_sample=False, use_cache=use_cache) for use_cache in (True, False)]
    assert runs[0].shape[1] == 17
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("family", FAMILIES)
def test_block_influence_scores_identity_layer_lowest_and_masks_padding(family):
    model = build(family)
    plant_identity(model)
    calib = windows()
    scores = layer_scores(model, calib, "block_influence")
    assert len(scores) == 4
    assert abs(scores[PLANTED]) < 1e-6 and min(scores) == scores[PLANTED]
    assert all(s > 1e-3 for i, s in enumerate(scores) if i != PLANTED)
    # Reference: each window alone (no padding), from output_hidden_states of a copy whose final norm is removed
    # (its last entry is the final-norm output, not the last layer's).
    ref_model = copy.deepcopy(model)
    ref_model.model.norm = nn.Identity()
    total, tokens = torch.zeros(4, dtype=torch.float64), 0
    for window in calib:
        with torch.no_grad():
            states = ref_model(input_ids=torch.tensor([window]), output_hidden_states=True).hidden_states
        for i in range(4):
            total[i] += nn.functional.cosine_similarity(states[i], states[i + 1], dim=-1).sum().double()
        tokens += len(window)
    torch.testing.assert_close(torch.tensor(scores, dtype=torch.float64), 1 - total / tokens, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_perplexity_score_planted_layer_costs_nothing(family):
    model = build(family)
    plant_identity(model)
    # Text sampled from the model itself: removing a layer that does something raises its perplexity on it.
    torch.manual_seed(3)
    prompt = torch.ones((8, 1), dtype=torch.long)
    sampled = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, max_new_tokens=31,
                             min_new_tokens=31, top_k=0, top_p=1.0)
    scores = layer_scores(model, sampled.tolist(), "perplexity")
    assert abs(scores[PLANTED]) < 1e-6
    assert all(s > 0.01 for i, s in enumerate(scores) if i != PLANTED)


@pytest.mark.parametrize("family", FAMILIES)
def test_drop_layers_equals_skipping_them_and_reloads(family, tmp_path):
    model = build(family)
    reference = copy.deepcopy(model)
    ids = torch.tensor([windows(1, seed=9)[0]])
    # The reference skips layers 1 and 2 by making them identities (their outputs replaced by their inputs).
    hooks = [reference.model.layers[i].register_forward_hook(lambda m, a, k, o: a[0] if a else k["hidden_states"],
                                                             with_kwargs=True) for i in (1, 2)]
    expected = logits(reference, ids)
    for h in hooks:
        h.remove()
    drop_layers(model, [0, 3])
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    assert model.config.num_hidden_layers == 2
    if family == "qwen2":
        assert model.config.layer_types == ["full_attention", "sliding_attention"]
    torch.testing.assert_close(logits(model, ids), expected, atol=1e-5, rtol=0)
    reloaded = assert_reloads_identically(model, tmp_path)
    assert len(reloaded.model.layers) == 2
    assert_cache_generation_matches(reloaded)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_prune_ffn_uniform_width_drops_planted_weak_channels(family, importance, tmp_path):
    model = build(family)
    weak = torch.arange(1, 128, 4)  # 32 channels per layer with almost no weight: pruning 25% removes them
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate_proj.weight[weak] *= 1e-3
            layer.mlp.up_proj.weight[weak] *= 1e-3
            layer.mlp.down_proj.weight[:, weak] *= 1e-3
    reference = copy.deepcopy(model)
    kept = prune_ffn(model, 0.25, windows(), multiple_of=32, importance=importance)
    assert kept == 96 and model.config.intermediate_size == 96
    strong = [c for c in range(128) if c not in set(weak.tolist())]
    for layer, ref_layer in zip(model.model.layers, reference.model.layers):
        mlp = layer.mlp
        assert (mlp.gate_proj.out_features, mlp.up_proj.out_features, mlp.down_proj.in_features) == (96, 96, 96)
        assert layer.self_attn.q_proj.out_features == 64 and layer.mlp.down_proj.out_features == 64
        torch.testing.assert_close(layer.mlp.gate_proj.weight, ref_layer.mlp.gate_proj.weight[strong], atol=0, rtol=0)
    # The reference with the weak channels silenced (down_proj columns zeroed) computes the same logits.
    with torch.no_grad():
        for ref_layer in reference.model.layers:
            ref_layer.mlp.down_proj.weight[:, weak] = 0.0
    ids = torch.tensor([windows(1, seed=5)[0]])
    torch.testing.assert_close(logits(model, ids), logits(reference, ids), atol=1e-5, rtol=0)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert_reloads_identically(model, tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_prune_kv_groups_matches_zeroed_heads_and_reloads(family, tmp_path):
    model = build(family)
    with torch.no_grad():  # layer 1: group 1 (query heads 2-3) writes almost nothing, so group 0 must stay
        model.model.layers[1].self_attn.o_proj.weight[:, 32:] *= 1e-3
    reference = copy.deepcopy(model)
    kept = prune_kv_groups(model, 1, windows())
    assert len(kept) == 4 and all(len(k) == 1 for k in kept) and kept[1] == [0]
    config = model.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (2, 1, 16)
    for layer in model.model.layers:
        attn = layer.self_attn
        assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.o_proj.in_features) == (32, 16, 32)
        assert attn.num_key_value_groups == 2  # the GQA ratio is unchanged
    with torch.no_grad():  # reference: the removed group's query heads silenced in the full model
        for ref_layer, (group,) in zip(reference.model.layers, kept):
            removed = 1 - group
            ref_layer.self_attn.o_proj.weight[:, removed * 32:(removed + 1) * 32] = 0.0
    ids = torch.tensor([windows(1, seed=4)[0]])
    torch.testing.assert_close(logits(model, ids), logits(reference, ids), atol=1e-5, rtol=0)
    reloaded = assert_reloads_identically(model, tmp_path)
    assert_cache_generation_matches(reloaded)


@pytest.mark.parametrize("family", FAMILIES)
def test_prune_causal_lm_composes_and_reports(family, tmp_path):
    model = build(family)
    plant_identity(model)
    before = sum(p.numel() for p in model.parameters())
    report = prune_causal_lm(model, windows(), keep_layers=3, ffn_ratio=0.5, kv_groups=1)
    assert report["kept_layers"] == [0, 1, 3]
    assert min(report["layer_scores"]) == report["layer_scores"][PLANTED]
    assert (report["heads_after"], report["kv_heads_after"], report["ffn_after"]) == (2, 1, 64)
    assert report["parameters_before"] == before
    assert report["parameters_after"] == sum(p.numel() for p in model.parameters()) < before
    assert model.lm_head.weight is model.model.embed_tokens.weight
    reloaded = assert_reloads_identically(model, tmp_path)
    assert reloaded.config.num_hidden_layers == 3 and reloaded.config.intermediate_size == 64
    assert_cache_generation_matches(reloaded)


def test_user_mistakes_raise_one_line_errors():
    model = build("llama")
    calib = windows(2)
    with pytest.raises(ConfigError, match="keep_layers"):
        drop_layers(model, [0, 4])
    with pytest.raises(ConfigError, match="keep_layers"):
        prune_causal_lm(model, calib, keep_layers=0)
    with pytest.raises(ConfigError, match="kv_groups"):
        prune_kv_groups(model, 3, calib)
    with pytest.raises(ConfigError, match="ffn_ratio"):
        prune_ffn(model, 1.0, calib)
    with pytest.raises(ConfigError, match="layer_method"):
        layer_scores(model, calib, "random")
    with pytest.raises(DataError, match="windows"):
        layer_scores(model, [], "block_influence")
    assert model.config.num_hidden_layers == 4  # nothing was changed by the rejected calls
