"""Causal-LM ONNX export with a KV cache, the PyTorch parity gate, and int8 / int4 quantization.

Tiny random decoders of three layouts: Llama with tied embeddings (optimum writes the lm_head as
MatMul(Transpose(embed))), Qwen2 untied (q/k/v biases), GPT-2 tied (Conv1D exported as Gemm).
initializer_range=0.1 keeps the logits peaked enough that argmax comparisons are meaningful.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.errors import ConfigError, ParityError

VOCAB, HIDDEN = 256, 64


def build_model(layout: str):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.1)
    if layout == "llama-tied":
        return LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True)).eval()
    if layout == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=False)).eval()
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=2, n_head=4, n_positions=128,
                                      initializer_range=0.1)).eval()


WINDOWS = torch.randint(0, VOCAB, (4, 32), generator=torch.Generator().manual_seed(1)).tolist()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """layout -> (model, model.onnx); each layout exported once per module."""
    pytest.importorskip("optimum.exporters.onnx")
    from edgekd.export.causal_lm import export_causal_lm

    root, cache = tmp_path_factory.mktemp("lm"), {}

    def get(layout: str):
        if layout not in cache:
            model = build_model(layout)
            model.save_pretrained(root / layout)  # config + safetensors only: no tokenizer is needed
            cache[layout] = model, export_causal_lm(root / layout, root / f"{layout}-onnx")
        return cache[layout]

    return get


@pytest.mark.parametrize("layout", ["llama-tied", "qwen2", "gpt2"])
def test_export_records_io_and_passes_parity(exported, layout):
    import json

    from edgekd.export.causal_lm import lm_parity

    model, path = exported(layout)
    info = json.loads((path.parent / "lm_io.json").read_text())
    assert info["num_layers"] == 2 and info["head_dim"] == 16 and info["opset"] >= 14
    assert info["num_kv_heads"] == (4 if layout == "gpt2" else 2)  # GPT-2 has no grouped-query attention
    assert {"input_ids", "attention_mask", "position_ids", "past_key_values.1.value"} <= set(info["inputs"])
    assert info["outputs"][0] == "logits" and "present.1.key" in info["outputs"]
    result = lm_parity(model, path, WINDOWS)
    assert result["ppl_rel_diff"] < 1e-5 and result["top1_agreement"] == 1.0
    assert result["max_abs_diff"] < 1e-4 and result["kv_max_abs_diff"] < 1e-4
    assert result["predicted_tokens"] == 4 * 31 and result["kv_positions"] == 16 + 8
    # a random model predicts roughly uniformly: perplexity near the vocabulary size, not 1 or inf
    assert VOCAB / 2 < result["ppl_torch"] < VOCAB * 3


def test_perturbed_onnx_fails_parity(exported, tmp_path):
    import onnx
    from onnx import numpy_helper

    from edgekd.export.causal_lm import lm_parity

    model, path = exported("llama-tied")
    broken = onnx.load(str(path))
    rng = np.random.default_rng(0)
    for i, tensor in enumerate(broken.graph.initializer):
        if len(tensor.dims) == 2 and tensor.dims[0] == HIDDEN:  # every [hidden, out] projection weight
            array = numpy_helper.to_array(tensor)
            broken.graph.initializer[i].CopyFrom(numpy_helper.from_array(array + rng.normal(0, 0.3, array.shape)
                                                                         .astype(np.float32), tensor.name))
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    with pytest.raises(ParityError, match="broken.onnx: ONNX differs from PyTorch .*perplexity"):
        lm_parity(model, tmp_path / "broken.onnx", WINDOWS)


def test_kv_decode_matches_full_sequence(exported):
    from edgekd.export.causal_lm import LMSession

    model, path = exported("qwen2")
    window = WINDOWS[0][:20]
    lm = LMSession(path)
    full = lm.step(window, lm.empty_past(), 0)[0][0]  # [20, vocab]
    with torch.inference_mode():
        ref = model(input_ids=torch.tensor([window])).logits[0].numpy()
    logits, past = lm.step(window[:6], lm.empty_past(), 0)
    assert past["past_key_values.0.key"].shape == (1, 2, 6, 16)
    cached, uncached = [], []
    for pos in range(6, 20):
        step, past = lm.step([window[pos]], past, pos)
        cached.append(step[0, 0])
        uncached.append(lm.step([window[pos]], lm.empty_past(), pos)[0][0, 0])  # the same token without its context
    cached, uncached = np.stack(cached), np.stack(uncached)
    assert past["past_key_values.1.value"].shape == (1, 2, 20, 16)
    assert np.abs(cached - full[6:]).max() < 1e-4 and np.abs(cached - ref[6:]).max() < 1e-4
    assert np.abs(uncached - full[6:]).max() > 1e-2  # the check can fail: dropping the cache changes the logits


def _graph(path: Path):
    import onnx

    return onnx.load(str(path)).graph


def fp32_size(path: Path) -> int:
    return path.stat().st_size


def _producer(graph, name: str):
    return next(n for n in graph.node if name in n.output)


def test_int8_and_int4_of_a_tied_model(exported, tmp_path):
    from edgekd.export.causal_lm import lm_parity
    from edgekd.quantize.causal_lm import quantize_causal_lm

    model, path = exported("llama-tied")
    fp32 = lm_parity(model, path, WINDOWS)
    int8 = quantize_causal_lm(path, tmp_path / "int8.onnx", "int8")
    int4 = quantize_causal_lm(path, tmp_path / "int4.onnx", "int4", block_size=32)
    assert int4["out_bytes"] < int8["out_bytes"] < 0.6 * fp32_size(path)
    for summary in (int8, int4):
        assert summary["lm_head_quantized"] and summary["tied_embedding"]
        assert summary["float_matmuls_with_weight"] == 0 and summary["float_gathers_with_table"] == 0
        scored = lm_parity(model, Path(summary["path"]), WINDOWS, ppl_rtol=0.1, min_agreement=0.3)
        assert abs(scored["ppl_onnx"] - fp32["ppl_onnx"]) / fp32["ppl_onnx"] < 0.1
    assert int8["quantized_ops"]["MatMulInteger"] == 15  # 7 per layer x 2 + lm_head
    assert int4["quantized_ops"] == {"GatherBlockQuantized": 1, "MatMulNBits": 15}
    graph = _graph(tmp_path / "int4.onnx")
    head = _producer(graph, "logits")
    assert head.op_type == "MatMulNBits"  # the tied lm_head MatMul(Transpose(embed)) became 4-bit
    # the embedding reads the lm_head's 4-bit blocks: no [vocab, hidden] table of any dtype is stored twice
    gather = next(n for n in graph.node if n.op_type == "GatherBlockQuantized")
    assert _producer(graph, gather.input[0]).input[0] == head.input[1] and gather.input[2] == head.input[2]
    assert int4["embedding_shared_with_lm_head"]
    assert not any(t.data_type == 1 and np.prod(t.dims) >= VOCAB * HIDDEN for t in graph.initializer)


@pytest.mark.parametrize("layout,symmetric", [("qwen2", True), ("gpt2", True), ("llama-tied", False)])
def test_int4_other_layouts(exported, tmp_path, layout, symmetric):
    from edgekd.export.causal_lm import lm_parity
    from edgekd.quantize.causal_lm import quantize_causal_lm

    model, path = exported(layout)
    summary = quantize_causal_lm(path, tmp_path / "int4.onnx", "int4", symmetric=symmetric)
    assert summary["lm_head_quantized"] and summary["float_matmuls_with_weight"] == 0
    assert summary["out_bytes"] < 0.45 * fp32_size(path)
    assert _producer(_graph(tmp_path / "int4.onnx"), "logits").op_type == "MatMulNBits"
    # GPT-2's Conv1D Gemms are rewritten to MatMul so that they become MatMulNBits too
    assert summary["gemm_rewritten"] == (8 if layout == "gpt2" else 0)
    # asymmetric blocks carry zero points MatMulNBits and GatherBlockQuantized store differently: a second 4-bit copy
    assert summary["embedding_shared_with_lm_head"] == (layout != "qwen2" and symmetric)
    scored = lm_parity(model, tmp_path / "int4.onnx", WINDOWS, ppl_rtol=0.1, min_agreement=0.3)
    assert scored["ppl_rel_diff"] < 0.1


def test_export_without_optimum_names_the_package(tmp_path, monkeypatch):
    import edgekd.export.causal_lm as lm

    build_model("llama-tied").save_pretrained(tmp_path / "m")
    monkeypatch.setattr(lm, "optimum_exporter_installed", lambda: False)  # what the transformers-5 venv sees
    with pytest.raises(ConfigError, match="needs optimum-onnx"):
        lm.export_causal_lm(tmp_path / "m", tmp_path / "out")


def test_quantize_rejects_bad_arguments(tmp_path):
    from edgekd.quantize.causal_lm import quantize_causal_lm

    with pytest.raises(ConfigError, match="'int2' is not allowed"):
        quantize_causal_lm(tmp_path / "x.onnx", tmp_path / "y.onnx", "int2")
    with pytest.raises(ConfigError, match="block_size 24"):
        quantize_causal_lm(tmp_path / "x.onnx", tmp_path / "y.onnx", "int4", block_size=24)
