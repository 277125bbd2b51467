"""`edgekd bench MODEL [MODEL ...]`: the pipeline's benchmark on models edgekd did not make.

A MODEL is an .onnx or .ort (ONNX Runtime Mobile) file, an ExecuTorch .pte or LiteRT .tflite file (as the mobile
stage writes them), a Hugging Face model folder (config.json) or an edgekd bundle (bundle.json). Inputs come from a
dataset file (its text column, tokenised with each model's own tokenizer) or are synthesised: random token ids with
lengths drawn from a range.
"""

import json
import logging
import tempfile
from pathlib import Path

from pydantic import ValidationError

from edgekd.artifacts import atomic_write_json, folder_size
from edgekd.bench.config import BenchConfig
from edgekd.bench.core import DEPLOY_RUNTIME, Target, run_benchmark
from edgekd.bench.inputs import per_tokenizer, synthetic
from edgekd.bench.mobile_runners import SUFFIX_RUNTIMES, max_input_length
from edgekd.errors import ConfigError, EdgekdError

log = logging.getLogger(__name__)


def _json(path: Path) -> dict:
    """A JSON object from ``path``; a broken file is a one-line error naming it."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EdgekdError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise EdgekdError(f"{path}: expected a JSON object")
    return data


def _tokenizer_dir(path: Path) -> Path | None:
    folder = path if path.is_dir() else path.parent
    return folder if (folder / "tokenizer.json").is_file() else None


def _pad_id(tokenizer_dir: Path | None) -> int:
    """The pad id a tokenizer folder declares (tokenizer_config.json, then tokenizer.json), else 0."""
    if tokenizer_dir is None:
        return 0
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    config = tokenizer_dir / "tokenizer_config.json"
    pad = _json(config).get("pad_token") if config.is_file() else None
    if isinstance(pad, dict):
        pad = pad.get("content")
    for token in (pad, "[PAD]", "<pad>"):
        if token and tok.token_to_id(token) is not None:
            return tok.token_to_id(token)
    return 0


def _label_names(path: Path) -> list[str] | None:
    """A model's class names in id order: a bundle's labels.json, else config.json's id2label."""
    folder = path if path.is_dir() else path.parent
    if (folder / "bundle.json").is_file():
        labels = json.loads((folder / "labels.json").read_text()) if (folder / "labels.json").is_file() else None
        return labels if isinstance(labels, list) else None
    config = folder / "config.json"
    if not config.is_file():
        return None
    id2label = _json(config).get("id2label")
    return [id2label[k] for k in sorted(id2label, key=int)] if id2label else None


def _shared_labels(paths: list[Path]) -> list[str] | None:
    """The class names every model agrees on; models whose labels differ cannot be scored on one key."""
    found = {str(p): _label_names(p) for p in paths}
    known = {p: names for p, names in found.items() if names is not None}
    if len({tuple(n) for n in known.values()}) > 1:
        detail = "; ".join(f"{p}: {n}" for p, n in known.items())
        raise EdgekdError(f"the models' labels differ, so one accuracy cannot be scored for all: {detail}")
    if known and len(known) < len(found):
        return None  # some model does not say what its outputs mean
    return next(iter(known.values()), None)


def target_for(path: Path) -> Target:
    path = Path(path)
    tok = _tokenizer_dir(path)
    if path.is_file() and path.suffix in (".onnx", ".ort"):  # onnxruntime reads both (.ort: ONNX Runtime Mobile)
        return Target(name=f"{path.parent.name}/{path.name} onnxruntime cpu", path=path, runtime="onnxruntime",
                      pad_id=_pad_id(tok), model=path.stem, format=path.suffix[1:], file_bytes=folder_size(path))
    if path.is_file() and path.suffix in SUFFIX_RUNTIMES:  # on-device formats, run by their own runtimes
        runtime = SUFFIX_RUNTIMES[path.suffix]
        return Target(name=f"{path.parent.name}/{path.name} {runtime} cpu", path=path, runtime=runtime,
                      pad_id=_pad_id(tok), model=path.stem, format=path.suffix[1:], file_bytes=folder_size(path))
    if path.is_dir() and (path / "bundle.json").is_file():
        if not DEPLOY_RUNTIME.is_file():
            raise EdgekdError(f"{path}: timing a bundle needs {DEPLOY_RUNTIME.name}, which ships with a source "
                              "checkout of edgekd (pip install -e .)")
        manifest = _json(path / "bundle.json")
        if "model" not in manifest:
            raise EdgekdError(f"{path / 'bundle.json'}: no 'model' entry; is this an edgekd bundle?")
        return Target(name=f"{path.name} bundle end-to-end", path=path, runtime="bundle",
                      pad_id=manifest.get("pad_id", _pad_id(path)), model=path.name, format="bundle",
                      precision=manifest.get("precision", "fp32"), file_bytes=folder_size(path / manifest["model"]))
    if path.is_dir() and (path / "config.json").is_file():
        weights = list(path.glob("*.safetensors"))
        return Target(name=f"{path.name} pytorch cpu", path=path, runtime="pytorch", pad_id=_pad_id(tok),
                      model=path.name, format="pytorch", file_bytes=sum(folder_size(w) for w in weights) or None)
    raise EdgekdError(f"{path}: not an .onnx file, an .ort file (ONNX Runtime Mobile), a .pte (ExecuTorch) or "
                      ".tflite (LiteRT) file, a Hugging Face model folder (config.json) or an edgekd bundle "
                      "(bundle.json)")


def _positions(path: Path) -> int:
    """Longest input the model's position table allows (config.json) and, for a .pte / .tflite file, the longest it
    was exported for; a large number if unknown."""
    from types import SimpleNamespace

    from edgekd.preflight import usable_positions

    own = max_input_length(path) if path.suffix in SUFFIX_RUNTIMES else None
    config = (path if path.is_dir() else path.parent) / "config.json"
    table = usable_positions(SimpleNamespace(**_json(config))) if config.is_file() else None
    return min(own or 1 << 30, table or 1 << 30)


def _vocab_size(path: Path) -> int:
    """Vocabulary size for synthetic token ids: the tokenizer's, else config.json's."""
    tok = _tokenizer_dir(path)
    if tok is not None:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(tok / "tokenizer.json")).get_vocab_size()
    config = (path if path.is_dir() else path.parent) / "config.json"
    vocab = _json(config).get("vocab_size") if config.is_file() else None
    if vocab:
        return vocab
    raise EdgekdError(f"{path}: no tokenizer.json or config.json beside it to size synthetic inputs; pass "
                      "--vocab-size N, or --data FILE with --tokenizer FOLDER")


def _read_texts(data: Path, text_column: str, label_column: str | None) -> tuple[list[str], list[str] | None]:
    from edgekd.data.read import _rows, read_labelled_text

    if label_column:
        pairs = read_labelled_text(data, text_column, label_column, [])
        return [t for t, _ in pairs], [label for _, label in pairs]
    rows = _rows(data)[0]
    if rows and text_column not in rows[0]:
        raise EdgekdError(f"{data}: no column {text_column!r}; columns are {', '.join(sorted(map(str, rows[0])))}")
    return [str(r[text_column]) for r in rows if r.get(text_column)], None


def _model_tokenizers(targets: list[Target]) -> list[Path]:
    """Each model's own tokenizer folder; models with different tokenizers read the same texts with their own."""
    dirs = {t.name: _tokenizer_dir(t.path) for t in targets}
    missing = [n for n, d in dirs.items() if d is None]
    if missing:
        raise EdgekdError(f"{missing[0]}: no tokenizer.json next to the model; pass --tokenizer FOLDER, or use "
                          "synthetic inputs (no --data)")
    return list(dirs.values())


def _config(args, fixed_length: int) -> BenchConfig:
    try:
        return BenchConfig(rounds=args.rounds, sample=args.sample, warmup=args.warmup, threads=args.threads,
                           fixed_length=fixed_length, strict=args.strict, max_other_cpu=args.max_other_cpu,
                           fixed_runs=args.fixed_runs, throughput_batch=args.throughput_batch, cuda="off")
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']} (got {err.get('input')!r})") from None


def _baseline_name(baseline: int | str, names: list[str]) -> str:
    if isinstance(baseline, int):
        if baseline >= len(names):
            raise EdgekdError(f"--baseline {baseline}: there are {len(names)} models (indices 0..{len(names) - 1})")
        return names[baseline]
    if baseline not in names:
        raise EdgekdError(f"--baseline {baseline!r} is none of the models: {', '.join(names)}")
    return baseline


def bench_command(args) -> dict:
    from edgekd.bench.lm_cli import is_causal_lm, lm_bench_command, lm_target_for

    lm = [is_causal_lm(p) for p in args.models]
    if any(lm):  # the causal-LM workload (prefill + greedy decode); every model must be a causal LM
        if not all(lm):
            other = next(p for p, is_lm in zip(args.models, lm) if not is_lm)
            raise EdgekdError(f"{other}: not a causal LM, but other models given are; benchmark classifiers and "
                              "language models in separate runs")
        names = [lm_target_for(p).name for p in args.models]
        if len(set(names)) != len(names):
            raise EdgekdError(f"the same model is given twice: {', '.join(n for n in names if names.count(n) > 1)}")
        return lm_bench_command(args, _baseline_name(args.baseline, names))
    targets = [target_for(p) for p in args.models]
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise EdgekdError(f"the same model is given twice: {', '.join(n for n in names if names.count(n) > 1)}")
    baseline = _baseline_name(args.baseline, names)
    # No input may outrun the smallest position table among the models (a 512-position BERT, say).
    cap = min(_positions(p) for p in args.models)
    fixed_length, max_length = min(args.fixed_length, cap), min(args.max_length, cap)
    if fixed_length < args.fixed_length:
        log.warning("fixed-length setting capped at %d tokens: the models' position table ends there", cap)
    cfg = _config(args, fixed_length)
    label_names = _shared_labels(args.models) if args.data and args.label_column else None
    with tempfile.TemporaryDirectory(prefix="edgekd-bench-") as tmp:
        if args.data:
            texts, labels = _read_texts(args.data, args.text_column, args.label_column)
            # --tokenizer: one tokenisation for every model; else each model's own (identical files share one).
            tokenizers = [Path(args.tokenizer)] * len(targets) if args.tokenizer else _model_tokenizers(targets)
            if args.tokenizer:
                for t in targets:
                    t.pad_id = _pad_id(Path(args.tokenizer))
            ids = None
            if labels is not None and label_names is not None:
                unknown = sorted(set(labels) - set(label_names))
                if unknown:
                    raise EdgekdError(f"{args.data}: label {unknown[0]!r} is not one of the model's labels "
                                      f"({', '.join(label_names)})")
                ids = [label_names.index(label) for label in labels]
            elif labels is not None:
                log.warning("not every model names its labels (config.json id2label, a bundle's labels.json): "
                            "accuracy cannot be scored")
            per_model = per_tokenizer([d / "tokenizer.json" for d in tokenizers], texts, ids, max_length,
                                      fixed_length, cfg.sample, args.seed, Path(tmp),
                                      describe=f"{len(texts)} texts of {args.data}")
            for t, d in zip(targets, tokenizers):
                t.inputs = per_model[d / "tokenizer.json"]
            inputs = targets[0].inputs
            if ids is None:
                label_names = None
        else:
            vocab = args.vocab_size or min(_vocab_size(p) for p in args.models)  # valid ids for every model
            low, high = args.lengths
            if high > cap:
                log.warning("synthetic lengths capped at %d tokens: the models' position table ends there", cap)
                low, high = min(low, cap), cap
            inputs = synthetic(vocab, min(1000, vocab // 2), (low, high), args.samples, fixed_length, args.seed,
                               Path(tmp))
        result = run_benchmark(targets, inputs, cfg, label_names, [baseline] if len(targets) > 1 else [])
    for row in result["rows"]:
        row.pop("predictions", None)
        row["path"] = str(next(t.path for t in targets if t.name == row["name"]))
    atomic_write_json(args.out, result)
    return result


def format_table(result: dict) -> str:
    """The terminal table: one line per model, paired speed-up against the baseline."""
    from edgekd.bench.lm_core import LM_SCHEMA

    if result.get("schema") == LM_SCHEMA:
        from edgekd.bench.lm_cli import format_lm_table

        return format_lm_table(result)
    tag = next(iter(result["threads"]))
    key = f"real_b1_{tag}"
    ref = (result["references"] or [None])[0]
    head = ["model", "size MB", "load s", "first ms", f"p50 ms {tag}", "p90", "p99", "mean", "CV", "ex/s",
            "peak RSS MB", "accuracy", f"speed-up vs {ref or '-'}"]
    lines = [head]
    for r in result["rows"]:
        lat = r["latency_ms"][key]
        s = r.get("speedup_vs", {}).get(ref, {}).get(key)
        lines.append([r["name"], "-" if r["file_bytes"] is None else f"{r['file_bytes'] / 1e6:.1f}", f"{r['load_s']:.2f}",
                      f"{r['first_inference_ms']:.1f}", f"{lat['p50']:.2f}", f"{lat['p90']:.2f}", f"{lat['p99']:.2f}",
                      f"{lat['mean']:.2f}", f"{r['cv'][key]:.1%}", f"{next(iter(r['throughput_eps'].values())):.0f}",
                      f"{r['peak_rss_mb']:.0f}", f"{100 * r['accuracy']:.2f}%" if "accuracy" in r else "-",
                      f"{s['median']:.2f}x [{s['low']:.2f}-{s['high']:.2f}]" if s else "-"])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines]
    load = result["load"]
    out.append(f"\n{result['inputs']['describe']}; {result['inputs']['sample']} timed per round, "
               f"{result['config']['rounds']} rounds, threads {result['threads']}; other processes used "
               f"{load['other_processes_cores_mean']:.2f} cores" + (" (DISTURBED)" if load["disturbed"] else ""))
    return "\n".join(out)
