"""deploy/edgekd_generate.py: greedy parity with transformers on tiny exported decoders (optimum), and sampling, EOS,
context, streaming and bundle errors on a hand-built ONNX decoder (both venvs)."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

GENERATE = Path(__file__).parents[2] / "deploy" / "edgekd_generate.py"
CORPUS = ["The match ended in a draw after a late goal.", "Shares rose as the bank reported higher profits.",
          "The minister said the new law would cut costs.", "Café owners in Zürich welcomed the film festival."]


def _load_generate():
    spec = importlib.util.spec_from_file_location("edgekd_generate_under_test", GENERATE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generate()


def _tokenizer(path: Path) -> int:
    """A byte-level BPE (like SmolLM2's) with <pad>=0, <s>=1 (added to every prompt), </s>=2; returns the vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(str(path))
    return tok.get_vocab_size()


def _model(arch: str, vocab: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    # a wide init gives peaked logits, so greedy choices are not near-ties that fp32 rounding could flip
    ids = dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.2)
    dims = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**dims, **ids)).eval()
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**dims, **ids)).eval()
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **ids)).eval()


def _bundle(root: Path, arch: str):
    """Export with optimum into root/bundle, as the bundle stage will lay it out; returns (folder, torch model)."""
    export = pytest.importorskip("optimum.exporters.onnx")
    folder = root / "bundle"
    folder.mkdir(parents=True)
    model = _model(arch, _tokenizer(folder / "tokenizer.json"))
    model.save_pretrained(root / "hf")
    export.main_export(str(root / "hf"), str(root / "onnx"), task="text-generation-with-past")
    shutil.copyfile(root / "onnx" / "model.onnx", folder / "model.onnx")
    (folder / "generation.json").write_text(json.dumps(gen.generation_settings(root / "hf")))
    manifest = {"format": "edgekd-lm-bundle", "version": 1, "model_sha256": gen._sha256(folder / "model.onnx")}
    (folder / "bundle.json").write_text(json.dumps(manifest))
    return folder, model


@pytest.fixture(scope="module", params=["llama", "qwen2", "gpt2"])
def arch_bundle(request, tmp_path_factory):
    return _bundle(tmp_path_factory.mktemp(request.param), request.param)


def _toy_decoder(path: Path, vocab: int, layers: int = 2, with_past: bool = True) -> None:
    """A hand-built KV-cache decoder: next token = (last id + its position + KV length + 1000 * (mask length - KV
    length)) % vocab, with logits -|i - next| / 4 [b, s, vocab]. Its tokens are known exactly, it has a spread to
    sample from, and a wrong position, a dropped cache or a mask of the wrong length all change them."""
    import onnx
    from onnx import TensorProto as TP, helper as h, numpy_helper

    past = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")] if with_past else []

    def const(name, value, dtype=np.int64):
        return h.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, dtype=dtype), name))

    nodes = [const("axes", [1, 3]), const("kv_shape", [1, 2, 1, 4]), const("V", vocab), const("K", 1000),
             const("vocab_ids", np.arange(vocab), np.float32), const("quarter", 0.25, np.float32),
             const("last", [-1]), h.make_node("Cast", ["input_ids"], ["ids_f"], to=TP.FLOAT),
             h.make_node("Unsqueeze", ["ids_f", "axes"], ["ids_4d"]),  # [b, 1, s, 1]
             h.make_node("Expand", ["ids_4d", "kv_shape"], ["new_kv"])]  # [b, kv_heads=2, s, head_dim=4]
    nodes += [h.make_node("Concat", [p, "new_kv"], [p.replace("past_key_values", "present")], axis=2) for p in past]
    ops = [("Shape", ["present.0.key" if with_past else "new_kv"], "kv_len", dict(start=2, end=3)),
           ("Shape", ["attention_mask"], "mask_len", dict(start=1, end=2)), ("Sub", ["mask_len", "kv_len"], "off", {}),
           ("Mul", ["off", "K"], "penalty", {}), ("Add", ["input_ids", "position_ids"], "a", {}),
           ("Add", ["a", "kv_len"], "b", {}), ("Add", ["b", "penalty"], "c", {}), ("Mod", ["c", "V"], "target", {}),
           ("Cast", ["target"], "target_f", dict(to=TP.FLOAT)), ("Unsqueeze", ["target_f", "last"], "target_3d", {}),
           ("Sub", ["target_3d", "vocab_ids"], "d", {}), ("Abs", ["d"], "abs_d", {}), ("Neg", ["abs_d"], "neg_d", {}),
           ("Mul", ["neg_d", "quarter"], "logits", {})]
    nodes += [h.make_node(op, ins, [out], **attrs) for op, ins, out, attrs in ops]

    def kv(name, length):
        return h.make_tensor_value_info(name, TP.FLOAT, ["batch", 2, length, 4])

    inputs = [h.make_tensor_value_info("input_ids", TP.INT64, ["batch", "seq"]),
              h.make_tensor_value_info("attention_mask", TP.INT64, ["batch", "total"]),
              h.make_tensor_value_info("position_ids", TP.INT64, ["batch", "seq"])] + [kv(p, "past") for p in past]
    outputs = [h.make_tensor_value_info("logits", TP.FLOAT, ["batch", "seq", vocab])]
    outputs += [kv(p.replace("past_key_values", "present"), "total") for p in past]
    graph = h.make_graph(nodes, "toy_decoder", inputs, outputs)
    # ir_version 9: onnxruntime 1.31 reads IR <= 13 and onnx 1.23 writes 14 by default
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 18)], ir_version=9), str(path))


def _toy_expected(prompt: list[int], n: int, vocab: int) -> list[int]:
    token, out = (prompt[-1] + 2 * len(prompt) - 1) % vocab, []  # prefill: last id + position L-1 + KV length L
    for k in range(1, n + 1):
        out.append(token)
        token = (token + 2 * (len(prompt) + k) - 1) % vocab  # fed at position L+k-1 with KV length L+k
    return out


def _toy_bundle(folder: Path, with_past: bool = True) -> Path:
    folder.mkdir(parents=True)
    _toy_decoder(folder / "model.onnx", _tokenizer(folder / "tokenizer.json"), with_past=with_past)
    (folder / "generation.json").write_text(json.dumps({"eos_token_ids": [], "pad_token_id": 0, "max_context": 64}))
    (folder / "bundle.json").write_text(json.dumps({"model_sha256": gen._sha256(folder / "model.onnx")}))
    return folder


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return _toy_bundle(tmp_path_factory.mktemp("toy") / "bundle")


@pytest.fixture
def toy_copy(tmp_path, toy):
    return shutil.copytree(toy, tmp_path / "bundle")


def _set_generation(folder: Path, **changes) -> None:
    settings = json.loads((folder / "generation.json").read_text())
    (folder / "generation.json").write_text(json.dumps({**settings, **changes}))


@pytest.mark.parametrize("prompt", [CORPUS[0], [1, 40, 41, 42, 43, 44]])
def test_greedy_equals_transformers_generate(arch_bundle, prompt):
    import torch

    folder, model = arch_bundle
    lm = gen.Generator(folder)
    assert lm.num_layers == 2 and lm.max_context == 64 and lm.eos_token_ids == {2}
    ids = lm.encode(prompt)
    assert ids[0] == 1  # the tokenizer's post-processor added <s>
    out = lm.generate(prompt, max_new_tokens=12)
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             do_sample=False, max_new_tokens=12, eos_token_id=2, pad_token_id=0)
    assert out.ids == ref[0, len(ids):].tolist()
    assert len(set(out.ids)) > 2, out.ids  # a real sequence, not one token repeated
    assert out.timings.stop_reason in ("eos", "max_new_tokens") and out.timings.prompt_tokens == len(ids)


def test_toy_decoder_tokens_are_exact(toy):
    lm = gen.Generator(toy)
    vocab = lm.session.get_outputs()[0].shape[-1]
    assert lm.num_layers == 2 and lm.max_context == 64 and lm.eos_token_ids == set()
    for prompt in ([5, 6, 7], [40], lm.encode(CORPUS[0])):
        assert lm.generate(prompt, max_new_tokens=20).ids == _toy_expected(prompt, 20, vocab)


def test_sampling_is_seeded_and_filters(toy):
    lm = gen.Generator(toy)
    runs = {seed: lm.generate(CORPUS[1], 10, do_sample=True, temperature=1.5, seed=seed).ids for seed in range(4)}
    assert lm.generate(CORPUS[1], 10, do_sample=True, temperature=1.5, seed=0).ids == runs[0]
    assert len({tuple(ids) for ids in runs.values()}) == 4
    greedy = lm.generate(CORPUS[1], 10).ids
    assert greedy not in runs.values()
    # top_k=1 and a tiny top_p leave only the most likely token: sampling then equals greedy
    assert lm.generate(CORPUS[1], 10, do_sample=True, top_k=1, seed=3).ids == greedy
    assert lm.generate(CORPUS[1], 10, do_sample=True, top_p=1e-6, seed=3).ids == greedy
    with pytest.raises(gen.GenerateError, match="temperature > 0"):
        lm.generate(CORPUS[1], 10, do_sample=True, temperature=0.0)


def test_top_k_and_top_p_keep_the_right_tokens():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))

    def draws(top_k=0, top_p=1.0):
        return {gen.Generator._choose(logits.copy(), rng, 1.0, top_k, top_p) for _ in range(400)}

    assert draws() == {0, 1, 2, 3}
    assert draws(top_k=2) == {0, 1}
    assert draws(top_p=0.79) == {0, 1}  # 0.5 + 0.3 reaches 0.79
    assert draws(top_p=0.81) == {0, 1, 2}
    assert gen.Generator._choose(logits.copy(), None, 1.0, 0, 1.0) == 0


def test_eos_stops_generation(toy_copy):
    free = gen.Generator(toy_copy).generate(CORPUS[2], max_new_tokens=12)
    assert free.timings.stop_reason == "max_new_tokens" and len(free.ids) == 12
    eos = free.ids[4]
    _set_generation(toy_copy, eos_token_ids=[3, eos])
    stopped = gen.Generator(toy_copy).generate(CORPUS[2], max_new_tokens=12)
    assert stopped.ids == free.ids[: free.ids.index(eos) + 1] and stopped.timings.stop_reason == "eos"


def test_context_length_is_never_exceeded(toy):
    lm = gen.Generator(toy)
    with pytest.raises(gen.GenerateError) as info:
        lm.generate(list(range(3, 67)), max_new_tokens=4)
    message = str(info.value)
    assert "\n" not in message and "64 tokens" in message and "max_context" in message and "at most 63" in message
    out = lm.generate(list(range(3, 63)), max_new_tokens=10)  # 60 prompt tokens leave room for 4
    assert len(out.ids) == 4 and out.timings.stop_reason == "context"
    assert lm.generate(list(range(3, 63)), max_new_tokens=4).timings.stop_reason == "max_new_tokens"
    with pytest.raises(gen.GenerateError, match="empty"):
        lm.stream([], max_new_tokens=4)  # raised when the stream is made, not at its first token
    with pytest.raises(gen.GenerateError, match=r"prompt token ids must lie in \[0, \d+\)"):
        lm.generate([5, 100_000], max_new_tokens=4)


def test_stream_yields_the_generated_text_and_timings(toy):
    lm = gen.Generator(toy)
    whole = lm.generate("Café", max_new_tokens=40)
    tokens = list(lm.stream("Café", max_new_tokens=40))
    assert [t.id for t in tokens] == whole.ids and "".join(t.text for t in tokens) == whole.text
    t = lm.last_timings
    assert t.new_tokens == 40 and 0 < t.prefill_s <= t.ttft_s and t.decode_s > 0
    assert t.decode_tokens_per_s == pytest.approx(39 / t.decode_s)
    stream = lm.stream(CORPUS[3], max_new_tokens=16)
    next(stream), next(stream)
    stream.close()  # the caller stops early: timings still describe what was made
    assert lm.last_timings.new_tokens == 2 and lm.last_timings.stop_reason == "closed"
    # "é" is two byte-level tokens: its first byte adds no text, the second adds the whole character; a stream that
    # ends half-way through a character still shows what it has
    script = iter([lm.tokenizer.token_to_id(c) for c in "Ã©!Ã"])
    lm._choose = lambda *_: next(script)
    assert [t.text for t in lm.stream([5], max_new_tokens=3)] == ["", "é", "!"]
    assert [t.text for t in lm.stream([5], max_new_tokens=1)] == ["\ufffd"]
    del lm._choose


@pytest.mark.parametrize("name, role", [("model.onnx", "model"), ("tokenizer.json", "tokenizer"),
                                        ("generation.json", "generation")])
def test_missing_file_is_named(toy_copy, name, role):
    (toy_copy / name).unlink()
    with pytest.raises(FileNotFoundError) as info:
        gen.Generator(toy_copy)
    message = str(info.value)
    assert str(toy_copy / name) in message and f"bundle's {role} file" in message and "\n" not in message


def test_broken_bundles_are_one_line_errors(toy, toy_copy, tmp_path):
    with open(toy_copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(gen.BundleError, match="sha256 .* differs from model_sha256"):
        gen.Generator(toy_copy)
    shutil.copyfile(toy / "model.onnx", toy_copy / "model.onnx")
    for changes, needle in [({"max_context": None}, "max_context must be an int"),
                            ({"eos_token_ids": 2}, "eos_token_ids must be a list")]:
        _set_generation(toy_copy, **changes)
        with pytest.raises(gen.BundleError, match=f"generation.json: {needle}"):
            gen.Generator(toy_copy)
        _set_generation(toy_copy, max_context=64, eos_token_ids=[])
    with pytest.raises(gen.BundleError, match="model.onnx: no past_key_values"):
        gen.Generator(_toy_bundle(tmp_path / "no_cache", with_past=False))
    _toy_decoder(toy_copy / "model.onnx", vocab=100)  # a model for another, smaller tokenizer
    (toy_copy / "bundle.json").write_text("{}")  # no recorded hash: the swap itself goes unnoticed
    with pytest.raises(gen.BundleError, match="100 logits but the tokenizer has"):
        gen.Generator(toy_copy)


def test_generation_settings_from_a_hf_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"n_positions": 1024, "eos_token_id": 50256}))
    assert gen.generation_settings(tmp_path) == {"eos_token_ids": [50256], "pad_token_id": None, "max_context": 1024}
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 8192, "eos_token_id": 2}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7], "pad_token_id": 0}))
    assert gen.generation_settings(tmp_path) == {"eos_token_ids": [2, 7], "pad_token_id": 0, "max_context": 8192}
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(gen.BundleError, match="config.json: no max_position_embeddings or n_positions"):
        gen.generation_settings(tmp_path)


def test_command_line(toy_copy, capsys):
    assert gen.main([str(toy_copy), "The match", "--max-new-tokens", "5"]) == 0
    assert "5 tokens" in capsys.readouterr().err
    (toy_copy / "tokenizer.json").unlink()
    assert gen.main([str(toy_copy), "The match"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgekd_generate: error:") and "tokenizer.json" in err[0]


def test_importing_the_runtime_does_not_import_torch():
    code = (f"import sys; sys.path.insert(0, {str(GENERATE.parent)!r}); import edgekd_generate; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
