"""The runtime comparison of a classification report: the Pareto front, latency spread and size/memory plots.

Rows now come from several runtimes (ONNX Runtime .onnx/.ort, PyTorch, ExecuTorch .pte, LiteRT .tflite, the
bundle), so every plot colours by runtime with one fixed colour per runtime, and every plot takes its rows from
one function that the markdown also calls: report.md references a plot exactly when write_report writes it.
Matplotlib is imported inside the plotting functions only (the markdown and pareto_front do not need it).
"""

import logging
from pathlib import Path

log = logging.getLogger(__name__)

# Fixed colours, so a runtime keeps its colour across the three plots and across reports.
RUNTIME_COLOURS = {"onnxruntime": "tab:blue", "pytorch": "tab:orange", "executorch": "tab:purple",
                   "litert": "tab:olive", "bundle": "tab:gray"}
OTHER_COLOURS = ("tab:brown", "tab:pink", "tab:cyan", "tab:red", "tab:green")  # runtimes not listed above
RUNTIME_NAMES = {"onnxruntime": "ORT", "pytorch": "PyTorch", "executorch": "ExecuTorch", "litert": "LiteRT",
                 "bundle": "bundle"}
ROLE_MARKERS = {"teacher": "s", "student": "o", "peer": "D", "ablation": "^"}
ROLE_NAMES = {"teacher": "teacher", "student": "student", "peer": "peer path (optimum int8)", "ablation": "ablation"}
LATENCY_PNG, SIZE_PNG = "report_latency.png", "report_size.png"


def runtime_colours(rows: list[dict]) -> dict[str, str]:
    """Colour of each runtime in ``rows``: the fixed one, else the next spare colour in order of appearance."""
    spare = iter(OTHER_COLOURS * (1 + len(rows) // len(OTHER_COLOURS)))
    out: dict[str, str] = {}
    for r in rows:
        if r["runtime"] not in out:
            out[r["runtime"]] = RUNTIME_COLOURS.get(r["runtime"]) or next(spare)
    return out


def short_name(row: dict) -> str:
    """'student.int8-dynamic onnxruntime cpu' -> 'student.int8-dynamic ORT': the runtime abbreviated, cpu dropped."""
    if row.get("format") == "bundle" or row["runtime"] == "bundle":
        return "bundle end-to-end"
    runtime, device = row["runtime"], row.get("device", "cpu")
    stem = row["name"].removesuffix(f" {device}").removesuffix(f" {runtime}")
    name = f"{stem} {RUNTIME_NAMES.get(runtime, runtime)}" + ("" if device == "cpu" else f" {device}")
    return name if len(name) <= 34 else name[:33] + "…"


def _p50(row: dict, setting: str) -> float:
    return row["latency_ms"][setting]["p50"]


def pareto_front(rows: list[dict], setting: str) -> list[dict]:
    """The rows no other row dominates on (p50 at ``setting``, accuracy), fastest first.

    Row b dominates a when b is at least as fast and at least as accurate and strictly better on one of the two;
    rows without accuracy or without a timing at ``setting`` take no part. Two rows with the same p50 and the same
    accuracy are both on the front. Quadratic, which is fine for the ~15 rows of a report.
    """
    scored = [r for r in rows if "accuracy" in r and setting in r.get("latency_ms", {})]

    def dominates(b: dict, a: dict) -> bool:
        fast, acc = _p50(b, setting) <= _p50(a, setting), b["accuracy"] >= a["accuracy"]
        return fast and acc and (_p50(b, setting) < _p50(a, setting) or b["accuracy"] > a["accuracy"])

    front = [a for a in scored if not any(dominates(b, a) for b in scored if b is not a)]
    return sorted(front, key=lambda r: (_p50(r, setting), -r["accuracy"]))


def latency_rows(report: dict) -> list[dict]:
    """Timed rows with the headline setting's min, p50, p90 and p99, fastest first."""
    setting = report["bench"]["latency_setting"]
    rows = [r for r in report["rows"] if r.get("timed", True)
            and {"min", "p50", "p90", "p99"} <= set(r.get("latency_ms", {}).get(setting, {}))]
    return sorted(rows, key=lambda r: _p50(r, setting))


def size_rows(report: dict) -> list[dict]:
    """The latency plot's rows (same order) that have a file size and a peak RSS: the deployed models, not the
    accuracy-only ablation rows."""
    return [r for r in latency_rows(report) if r.get("file_bytes") and r.get("peak_rss_mb")]


def runtimes_lines(report: dict) -> list[str]:
    """report.md's "Runtimes" section: the plots write_report writes for this report, one sentence each."""
    setting = report["bench"]["latency_setting"]
    lines = []
    if latency_rows(report):
        lines += [f"Latency per input at `{setting}`: whiskers from the fastest input to p99, the box from p50 to "
                  "p90, coloured by runtime, fastest model on top.", "", f"![latency spread]({LATENCY_PNG})", ""]
    if size_rows(report):
        lines += ["File size and peak resident memory of each model's benchmark process, in the same order.", "",
                  f"![file size and peak RSS]({SIZE_PNG})", ""]
    return ["", "## Runtimes", "", *lines[:-1]] if lines else []


def save(fig, path: Path) -> None:
    """Write ``fig`` to ``path`` atomically: a hidden temporary file in the same folder, then replace."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _runtime_legend(ax, rows: list[dict], **kw) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=c, alpha=0.8, label=RUNTIME_NAMES.get(rt, rt)) for rt, c in runtime_colours(rows).items()]
    ax.legend(handles=handles, title="runtime", fontsize=8, title_fontsize=8, **kw)


def plot_latency(report: dict, path: Path) -> bool:
    """report_latency.png: min..p99 whisker and p50..p90 box per timed row; False (nothing written) without rows."""
    rows, setting = latency_rows(report), report["bench"]["latency_setting"]
    if not rows:
        return False
    plt = pyplot()
    colours = runtime_colours(rows)
    fig, ax = plt.subplots(figsize=(8.5, 1.4 + 0.36 * len(rows)), dpi=120)
    for y, r in enumerate(rows):
        s, c = r["latency_ms"][setting], colours[r["runtime"]]
        ax.hlines(y, s["min"], s["p99"], color=c, linewidth=1.2)  # whisker: fastest input to p99
        ax.vlines([s["min"], s["p99"]], y - 0.15, y + 0.15, color=c, linewidth=1.2)
        ax.barh(y, s["p90"] - s["p50"], left=s["p50"], height=0.55, color=c, alpha=0.55, edgecolor=c)
        ax.vlines(s["p50"], y - 0.3, y + 0.3, color="black", linewidth=1.6)  # the median
        ax.annotate(f"p50 {s['p50']:.2f} ms", (s["p99"], y), xytext=(6, 0), textcoords="offset points",
                    va="center", fontsize=7)
    lo = min(r["latency_ms"][setting]["min"] for r in rows)
    hi = max(r["latency_ms"][setting]["p99"] for r in rows)
    if hi > 10 * lo:  # a spread over a decade: linear scale would squash the fast rows into one pixel column
        import matplotlib.ticker

        ax.set_xscale("log")
        ax.set_xlim(lo / 1.2, hi * 2.6)
        # Plain numbers (0.5, 1, 2), not 10^0; minor ticks labelled at 2, 3 and 5 only so they do not collide.
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
            lambda v, _: f"{v:g}" if f"{v:e}"[0] in "235" else ""))
        ax.tick_params(axis="x", which="minor", labelsize=7)
    else:
        ax.set_xlim(0, hi * 1.3)
    ax.set_yticks(range(len(rows)), [short_name(r) for r in rows], fontsize=8)
    ax.invert_yaxis()  # fastest on top
    ax.set_xlabel(f"latency per input, ms ({setting}; whiskers min–p99, box p50–p90, black tick p50)")
    ax.set_title(f"{report['run']['name']}: latency spread by runtime")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    _runtime_legend(ax, rows, loc="upper right")  # fastest rows on top end furthest left: room there
    fig.tight_layout()
    save(fig, path)
    return True


def plot_size(report: dict, path: Path) -> bool:
    """report_size.png: file size and peak RSS (MB) per row, two bar panels; False (nothing written) without rows."""
    rows = size_rows(report)
    if not rows:
        return False
    plt = pyplot()
    colours = [runtime_colours(rows)[r["runtime"]] for r in rows]
    fig, axes = plt.subplots(1, 2, sharey=True, figsize=(10, 1.4 + 0.36 * len(rows)), dpi=120)
    panels = [("file size, MB", [r["file_bytes"] / 1e6 for r in rows]),
              ("peak RSS, MB", [r["peak_rss_mb"] for r in rows])]
    for ax, (label, values) in zip(axes, panels):
        ax.barh(range(len(rows)), values, color=colours, alpha=0.8)
        for y, v in enumerate(values):
            ax.annotate(f"{v:.1f}" if v < 100 else f"{v:.0f}", (v, y), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=7)
        ax.set_xlim(0, max(values) * 1.18)
        ax.set_xlabel(label)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), [short_name(r) for r in rows], fontsize=8)
    axes[0].invert_yaxis()  # shared y: the same order as the latency plot, fastest on top
    _runtime_legend(axes[1], rows, loc="upper right")  # the fast rows on top are the small ones: room there
    fig.suptitle(f"{report['run']['name']}: file size and peak memory by runtime")
    fig.tight_layout()
    save(fig, path)
    return True
