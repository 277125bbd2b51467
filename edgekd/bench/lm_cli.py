"""`edgekd bench` on causal LMs: KV-cache ONNX files, Hugging Face LM folders and LM bundles.

A model is a causal LM when its ONNX graph takes past_key_values.* inputs, its config.json names a
...ForCausalLM / ...LMHeadModel architecture, or its bundle has a generation.json. Prompts come from --data
(documents: a folder of .txt files or a table's text column, tokenised with each model's tokenizer) or are
random token ids. The flags --prompts, --prompt-tokens, --new-tokens and --eval-windows (add_lm_arguments)
default to LMBenchConfig's defaults when the parser does not define them.
"""

import json
import logging
import tempfile
from pathlib import Path

from pydantic import ValidationError

from edgekd.artifacts import atomic_write_json, folder_size
from edgekd.bench.config import BenchConfig, LMBenchConfig
from edgekd.bench.core import DEPLOY_RUNTIME, Target
from edgekd.bench.lm_core import run_lm_benchmark
from edgekd.bench.lm_inputs import per_tokenizer, synthetic
from edgekd.bench.lm_stage import onnx_bytes
from edgekd.errors import ConfigError, EdgekdError

log = logging.getLogger(__name__)
LM_FLAGS = ("prompts", "prompt_tokens", "new_tokens", "eval_windows")


def add_lm_arguments(parser) -> None:
    """The causal-LM flags of `edgekd bench` (call from edgekd.cli's bench parser)."""
    g = parser.add_argument_group("causal language models (chosen automatically for KV-cache ONNX files, "
                                  "...ForCausalLM folders and LM bundles)")
    defaults = LMBenchConfig()
    for flag in LM_FLAGS:
        g.add_argument(f"--{flag.replace('_', '-')}", type=int, default=getattr(defaults, flag),
                       help=f"{LMBenchConfig.model_fields[flag].description} (default {getattr(defaults, flag)})")


def _config_json(path: Path) -> dict | None:
    config = (path if path.is_dir() else path.parent) / "config.json"
    try:
        return json.loads(config.read_text()) if config.is_file() else None
    except ValueError:
        return None


def is_causal_lm(path: Path) -> bool:
    """True for a KV-cache ONNX graph, a ...ForCausalLM folder or an LM bundle (generation.json)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".onnx":
        import onnx

        try:
            graph = onnx.load(str(path), load_external_data=False).graph
        except Exception:  # (a corrupt file: the classifier path reports it in one line)
            return False
        return any(i.name.startswith("past_key_values.") for i in graph.input)
    if path.is_dir() and (path / "bundle.json").is_file():
        return (path / "generation.json").is_file()
    if path.is_dir():
        archs = (_config_json(path) or {}).get("architectures") or []
        return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    return False


def onnx_precision(path: Path) -> str:
    """int4 (MatMulNBits), int8 (integer MatMul / QDQ) or fp32, read from the graph's operators."""
    import onnx

    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    if "MatMulNBits" in ops:
        return "int4"
    return "int8" if ops & {"MatMulInteger", "DynamicQuantizeMatMul", "DequantizeLinear", "QLinearMatMul"} else "fp32"


def lm_target_for(path: Path) -> Target:
    path = Path(path)
    if path.is_file():
        return Target(name=f"{path.parent.name}/{path.name} onnxruntime cpu", path=path, runtime="onnxruntime",
                      pad_id=0, model=path.stem, format="onnx", precision=onnx_precision(path),
                      file_bytes=onnx_bytes(path))
    if (path / "bundle.json").is_file():
        if not DEPLOY_RUNTIME.with_name("edgekd_generate.py").is_file():
            raise EdgekdError(f"{path}: timing an LM bundle needs edgekd_generate.py, which ships with a source "
                              "checkout of edgekd (pip install -e .)")
        manifest = json.loads((path / "bundle.json").read_text())
        return Target(name=f"{path.name} bundle end-to-end", path=path, runtime="bundle", pad_id=0, model=path.name,
                      format="bundle", precision=manifest.get("precision", "fp32"),
                      file_bytes=folder_size(path / manifest.get("model", "model.onnx")))
    weights = list(path.glob("*.safetensors"))
    return Target(name=f"{path.name} pytorch cpu", path=path, runtime="pytorch", pad_id=0, model=path.name,
                  format="pytorch", file_bytes=sum(folder_size(w) for w in weights) or None)


def _lm_config(args) -> BenchConfig:
    try:
        lm = LMBenchConfig(**{f: getattr(args, f, getattr(LMBenchConfig(), f)) for f in LM_FLAGS})
        return BenchConfig(rounds=args.rounds, threads=args.threads, strict=args.strict,
                           max_other_cpu=args.max_other_cpu, cuda="off", lm=lm)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"--{str(err['loc'][-1]).replace('_', '-')}: {err['msg']} (got {err.get('input')!r})") \
            from None


def lm_bench_command(args, baseline: str) -> dict:
    """The causal-LM benchmark of args.models; speed-ups and agreement relative to the ``baseline`` row."""
    from edgekd.bench.cli import _model_tokenizers, _vocab_size

    targets = [lm_target_for(p) for p in args.models]
    cfg = _lm_config(args)
    lm = cfg.lm_settings()
    contexts = [c.get("max_position_embeddings") for p in args.models if (c := _config_json(Path(p)))]
    if contexts and None not in contexts and lm.prompt_tokens + lm.new_tokens > min(contexts):
        raise ConfigError(f"--prompt-tokens {lm.prompt_tokens} + --new-tokens {lm.new_tokens} exceed the models' "
                          f"context of {min(contexts)} positions")
    window = min([args.max_length] + [c for c in contexts if c])
    with tempfile.TemporaryDirectory(prefix="edgekd-bench-") as tmp:
        if args.data:
            from edgekd.data.text import read_documents

            docs = read_documents(Path(args.data), args.text_column)
            dirs = [Path(args.tokenizer)] * len(targets) if args.tokenizer else _model_tokenizers(targets)
            per_model = per_tokenizer(dirs, docs, window, lm, args.seed, Path(tmp),
                                      describe=f"{len(docs)} documents of {args.data}")
            for t, d in zip(targets, dirs):
                t.inputs = per_model[d]
            inputs = targets[0].inputs
        else:
            vocab = args.vocab_size or min(_vocab_size(p) for p in args.models)
            inputs = synthetic(vocab, min(1000, vocab // 2), window, lm, args.seed, Path(tmp))
        refs = [baseline] if len(targets) > 1 else []
        result = run_lm_benchmark(targets, inputs, cfg, refs, teacher=baseline)
    for row in result["rows"]:
        row["path"] = str(next(t.path for t in targets if t.name == row["name"]))
    atomic_write_json(args.out, result)
    return result


def format_lm_table(result: dict) -> str:
    """One line per model: prefill/TTFT p50, decode tokens/s with its interval, paired speed-up, quality."""
    tag = next(iter(result["threads"]))
    key = next(k for k in result["settings"] if k.endswith(f"_{tag}"))
    ref = (result["references"] or [None])[0]
    head = ["model", "size MB", "load s", f"prefill p50 ms {tag}", "TTFT p50 ms", "decode tok/s", "CV",
            "peak RSS MB", "perplexity", "next-token acc", "agreement", f"decode speed-up vs {ref or '-'}"]
    lines = [head]
    for r in result["rows"]:
        rate = r["decode_tokens_per_s"].get(key, {})
        s = r.get("speedup_vs", {}).get(ref, {}).get(key, {}).get("decode_tokens_per_s")
        pct = (lambda v: "-" if v is None else f"{100 * v:.2f}%")
        lines.append([r["name"], "-" if r["file_bytes"] is None else f"{r['file_bytes'] / 1e6:.1f}",
                      f"{r['load_s']:.2f}", f"{r['prefill_ms'][key]['p50']:.2f}", f"{r['ttft_ms'][key]['p50']:.2f}",
                      f"{rate['median']:.1f} [{rate['low']:.1f}-{rate['high']:.1f}]", f"{r['cv'][key]:.1%}",
                      f"{r['peak_rss_mb']:.0f}", "-" if r["perplexity"] is None else f"{r['perplexity']:.4g}",
                      pct(r["next_token_accuracy"]), pct(r.get("agreement_with_teacher")),
                      f"{s['median']:.2f}x [{s['low']:.2f}-{s['high']:.2f}]" if s else "-"])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines]
    inputs, load = result["inputs"], result["load"]
    out.append(f"\n{inputs['describe']}; {inputs['prompts']} prompts of {inputs['prompt_tokens']} tokens + "
               f"{result['lm']['new_tokens']} greedy tokens per round, {result['config']['rounds']} rounds, threads "
               f"{result['threads']}; quality on {inputs['windows']} windows of {inputs['window_tokens']} tokens; "
               f"other processes used {load['other_processes_cores_mean']:.2f} cores"
               + (" (DISTURBED)" if load["disturbed"] else ""))
    return "\n".join(out)


__all__ = ["add_lm_arguments", "format_lm_table", "is_causal_lm", "lm_bench_command", "lm_target_for"]
