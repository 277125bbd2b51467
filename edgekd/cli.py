"""Command line: edgekd run | validate | report.

Errors caused by input (config, files, data) print one line and exit with status 2; --debug shows
the traceback. Ctrl-C leaves every finished stage in place: the same command resumes.
"""

import argparse
import logging
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

    report = sub.add_parser("report", help="rebuild and print the report of a finished run",
                            description="Rebuild report.json, report.md and the plot from a run directory's benchmark "
                            "results and print the Markdown.")
    report.add_argument("run_dir", type=Path, help="run directory, e.g. runs/minilm-rotten-tomatoes")
    return parser


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
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


def _cmd_report(args) -> int:
    from edgekd.report.core import rebuild_report

    md_path = rebuild_report(args.run_dir)
    print(md_path.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.debug, args.quiet)
    commands = {"run": _cmd_run, "validate": _cmd_validate, "report": _cmd_report}
    try:
        return commands[args.command](args)
    except EdgekdError as exc:
        if args.debug:
            raise
        print(f"edgekd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgekd: interrupted; finished stages are kept, run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
