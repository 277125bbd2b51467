"""Command line: edgekd run | validate | bench | report.

Errors caused by input (config, files, data) print one line and exit with status 2; --debug shows
the traceback. Ctrl-C leaves every finished stage in place: the same command resumes.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

from edgekd.errors import ConfigError, EdgekdError
from edgekd.version import __version__

log = logging.getLogger("edgekd")

EPILOG = """examples:
  edgekd run pipelines/minilm-rotten-tomatoes.yaml
  edgekd run pipelines/minilm-rotten-tomatoes.yaml stages.teacher.epochs=1 name=quick
  edgekd validate pipelines/minilm-rotten-tomatoes.yaml
  edgekd report runs/minilm-rotten-tomatoes

Overrides are key=value with dotted keys; stages are addressed by kind or index
(stages.prune.head_ratio=0.25 or stages.1.head_ratio=0.25); values are read as YAML."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgekd", description="Prune, distil, export, quantize and benchmark a Hugging Face classifier for CPUs "
        "and phones.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edgekd {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a pipeline (finished stages are reused)",
                         description="Run a pipeline file end to end. Stages that finished in an earlier run with the "
                         "same inputs are reused, so an interrupted run resumes where it stopped.",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("pipeline", type=Path, help="pipeline YAML file (see pipelines/)")
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. stages.teacher.epochs=1")
    run.add_argument("--run-dir", type=Path, help="run directory (default: OUTPUT_DIR/NAME from the pipeline)")
    run.add_argument("--rerun", action="append", default=[], metavar="KIND",
                     help="recompute this stage kind even if it finished before (repeatable), e.g. --rerun bench "
                     "for a fresh measurement; the stages after it follow")

    validate = sub.add_parser("validate", help="check a pipeline file without running it",
                              description="Validate a pipeline file and overrides: types, ranges, unknown keys and "
                              "stage order. Prints the resolved config.")
    validate.add_argument("pipeline", type=Path, help="pipeline YAML file")
    validate.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")

    _add_bench_parser(sub)

    report = sub.add_parser("report", help="rebuild and print the report of a finished run",
                            description="Rebuild report.json, report.md and the plot from a run directory's benchmark "
                            "results and print the Markdown.")
    report.add_argument("run_dir", type=Path, help="run directory, e.g. runs/minilm-rotten-tomatoes")
    return parser


BENCH_EPILOG = """examples:
  edgekd bench model.onnx                                  # synthetic inputs, 8-128 tokens
  edgekd bench model.onnx model.ort --data test.csv        # the same model for ONNX Runtime Mobile, side by side
  edgekd bench teacher/model.onnx student/model.int8.onnx --data test.csv --label-column label
  edgekd bench my-hf-folder/ model.onnx --data reviews.jsonl --text-column review --out bench.json

Every model runs in its own process and sees exactly the same inputs in the same order; models
take turns round by round, and speed-ups are the median of paired per-round ratios against the
baseline (the first model unless --baseline), with an order-statistic interval."""


def _lengths(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    if not (sep and low.isdigit() and high.isdigit()) or not 1 <= int(low) <= int(high):
        raise argparse.ArgumentTypeError(f"expected MIN-MAX token lengths like 8-128, got {text!r}")
    return int(low), int(high)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _baseline(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _add_bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="latency benchmark of ONNX, .ort, ExecuTorch (.pte) and LiteRT (.tflite) files, Hugging Face folders "
                         "or bundles",
                       description="Time one or more models on identical inputs: p50/p90/p99, mean, spread across "
                       "rounds, throughput, peak RSS, load and first-inference time, size, and accuracy when the "
                       "data has labels. Prints a table and writes JSON.", epilog=BENCH_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("models", nargs="+", type=Path, metavar="MODEL",
                   help=".onnx, .ort, .pte or .tflite file, Hugging Face model folder (config.json + safetensors) or "
                        "edgekd bundle folder")
    src = b.add_argument_group("inputs (a dataset, or synthetic token ids when --data is not given)")
    src.add_argument("--data", type=Path, help="dataset file (.csv .tsv .jsonl .json .parquet) whose text is tokenised "
                     "with each model's own tokenizer (the same texts for all)")
    src.add_argument("--text-column", default="text", help="text column of --data (default: text)")
    src.add_argument("--label-column", help="label column of --data; accuracy is scored when the model's config.json "
                     "has id2label")
    src.add_argument("--tokenizer", type=Path, help="folder with tokenizer.json, when none sits next to the models")
    src.add_argument("--max-length", type=_positive, default=128, help="truncate texts to this many tokens (default 128)")
    src.add_argument("--lengths", type=_lengths, default=(8, 128), metavar="MIN-MAX",
                     help="synthetic input lengths, uniform (default 8-128)")
    src.add_argument("--samples", type=_positive, default=256, help="number of synthetic inputs (default 256)")
    src.add_argument("--vocab-size", type=_positive, help="synthetic token ids are drawn below this (default: the "
                     "tokenizer's or config.json's vocabulary size)")
    t = b.add_argument_group("timing")
    t.add_argument("--rounds", type=int, default=5, help="rounds; each model is timed once per round (default 5)")
    t.add_argument("--sample", type=int, help="inputs timed per round, a seeded sample (default: all)")
    t.add_argument("--warmup", type=int, default=10, help="untimed calls per model before timing (default 10)")
    t.add_argument("--threads", type=int, nargs="+", default=[1, 0], metavar="N",
                   help="intra-op thread counts, the same for every runtime; 0 = all physical cores (default: 1 0)")
    t.add_argument("--fixed-length", type=int, default=128, help="token length of the fixed-length setting")
    t.add_argument("--fixed-runs", type=int, default=20, help="fixed-length calls per round (0: skip)")
    t.add_argument("--throughput-batch", type=int, default=32, help="batch size of the throughput setting")
    t.add_argument("--baseline", type=_baseline, default=0, metavar="INDEX|NAME",
                   help="the model speed-ups are relative to (default 0: the first)")
    t.add_argument("--max-other-cpu", type=float, default=0.1, help="flag the result when other processes use more "
                   "than this share of the cores (default 0.1)")
    t.add_argument("--strict", action="store_true", help="fail instead of flagging a disturbed result")
    t.add_argument("--seed", type=int, default=0, help="seed of the input sample and synthetic inputs")
    b.add_argument("--out", type=Path, default=Path("edgekd-bench.json"), help="JSON result (default edgekd-bench.json)")
    from edgekd.bench.lm_cli import add_lm_arguments

    add_lm_arguments(b)  # language models: prompts, prompt and generated lengths, scored windows


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun: rank 0 reports progress, the others only problems
        level = max(level, logging.WARNING)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    # edgekd logs at the chosen level; other libraries (ORT quantization logs INFO on the root logger)
    # only show errors unless --debug.
    edgekd_log = logging.getLogger("edgekd")
    edgekd_log.setLevel(level)
    edgekd_log.addHandler(handler)
    edgekd_log.propagate = False
    logging.basicConfig(level=logging.DEBUG if debug else logging.ERROR, handlers=[logging.StreamHandler()])
    if not debug:
        import warnings

        warnings.filterwarnings("ignore")
        try:
            import transformers

            transformers.logging.set_verbosity_error()
        except ImportError:
            pass


def _cmd_run(args) -> int:
    from edgekd.config import load_pipeline
    from edgekd.pipeline import run_pipeline

    config = load_pipeline(args.pipeline, args.overrides)
    kinds = [s.kind for s in config.stages]
    unknown = [k for k in args.rerun if k not in kinds]
    if unknown:
        raise ConfigError(f"--rerun {unknown[0]}: the pipeline has no such stage; its stages: {', '.join(kinds)}")
    result = run_pipeline(config, run_dir=args.run_dir, force=frozenset(args.rerun))
    ran = sum(r.status == "ran" for r in result.stages)
    log.info("run finished: %d stage(s) ran, %d reused; results in %s", ran, len(result.stages) - ran, result.run_dir)
    if (result.run_dir / "report.md").is_file():
        print(f"report: {result.run_dir / 'report.md'}")
    return 0


def _cmd_validate(args) -> int:
    from edgekd.config import load_pipeline

    config = load_pipeline(args.pipeline, args.overrides)
    import yaml

    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
    print(f"# {args.pipeline}: valid, {len(config.stages)} stages: {' -> '.join(s.kind for s in config.stages)}",
          file=sys.stderr)
    return 0


def _cmd_bench(args) -> int:
    from edgekd.bench.cli import bench_command, format_table

    result = bench_command(args)
    print(format_table(result))
    print(f"wrote {args.out}")
    return 0


def _cmd_report(args) -> int:
    from edgekd.report.core import rebuild_report

    md_path = rebuild_report(args.run_dir)
    print(md_path.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.debug, args.quiet)
    commands = {"run": _cmd_run, "validate": _cmd_validate, "bench": _cmd_bench, "report": _cmd_report}
    try:
        code = commands[args.command](args)
    except EdgekdError as exc:
        if args.debug:
            raise
        print(f"edgekd: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("edgekd: interrupted; finished stages are kept, run the same command to resume", file=sys.stderr)
        code = 130
    if "torch.distributed" in sys.modules:  # a torchrun worker that joined a process group ends here
        from edgekd.distributed import end_process

        end_process(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
