"""The accuracy-vs-latency plot of a report (matplotlib, headless)."""

from pathlib import Path

# Teacher rows red, edgekd's models blue, the peer path (optimum's int8 of the teacher) green.
ROLE_COLOURS = {"teacher": "tab:red", "peer": "tab:green"}


def point_label(row: dict) -> str:
    """The annotation of a row's point: its name and file size, and what the peer row stands for."""
    label = f"{row['name']}\n{row['file_bytes'] / 1e6:.1f} MB"
    return f"peer path (optimum int8)\n{label}" if row["role"] == "peer" else label


def plot(report: dict, path: Path) -> None:
    """Accuracy vs p50 latency (log x), marker area proportional to file size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    setting = report["bench"]["latency_setting"]
    rows = [r for r in report["rows"] if setting in r["latency_ms"] and "accuracy" in r]
    if not rows:  # nothing was scored (inputs without labels): no accuracy axis to plot
        return
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    biggest = max(r["file_bytes"] for r in rows)
    # Labels alternate above and below in latency order so neighbouring points stay readable.
    for i, r in enumerate(sorted(rows, key=lambda r: r["latency_ms"][setting]["p50"])):
        colour = ROLE_COLOURS.get(r["role"], "tab:blue")
        xy = (r["latency_ms"][setting]["p50"], 100 * r["accuracy"])
        ax.scatter(*xy, s=40 + 1200 * r["file_bytes"] / biggest, alpha=0.45, color=colour, edgecolors="black",
                   linewidths=0.6)
        ax.annotate(point_label(r), xy, fontsize=7, xytext=(8, 8 if i % 2 == 0 else -18), textcoords="offset points",
                    color="darkgreen" if r["role"] == "peer" else "black")
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo / 1.1, hi * 1.8)  # room for the slowest point's label
    ax.margins(y=0.12)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(f"p50 latency, ms ({setting}, log scale)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title(f"{report['run']['name']}: accuracy vs latency (marker area ∝ file size)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
