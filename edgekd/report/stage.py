"""Pipeline adapter: turn the benchmark results and stage manifests into the report."""

import json

from edgekd.report.config import ReportConfig
from edgekd.report.core import build_report, write_report
from edgekd.stage_context import StageContext


def run(cfg: ReportConfig, ctx: StageContext) -> None:
    bench = json.loads(ctx.artifact("bench.json").path.read_text())
    report = build_report(bench, ctx.history, ctx.setting("pipeline"), cfg.latency_setting)
    for name, path in write_report(report, ctx.out).items():
        ctx.add_output(name, "json" if name.endswith(".json") else "file", path.name)
    ctx.metrics["rows"] = len(report["rows"])
