from typing import Literal

from pydantic import Field

from edgekd._config_base import StrictModel


class ReportConfig(StrictModel):
    """report.json, report.md and the accuracy-vs-latency plot, from the benchmark results."""

    kind: Literal["report"] = "report"
    latency_setting: str = Field("real_b1_t1", description="latency setting plotted and used for speed-up ratios "
                                 "(a causal LM's report: the bench's first setting, prompt/new tokens at 1 thread, "
                                 "unless one is named)")

    @staticmethod
    def summary(m: dict) -> str:
        return ""

    def requires(self) -> list[str]:
        return ["bench.json"]

    def provides(self) -> list[str]:
        return ["report.json", "report.md", "report.png"]
