"""report.png: accuracy vs p50 latency across runtimes and precisions, with the Pareto front (matplotlib, headless).

Colour is the runtime, marker shape the role (teacher, student, peer), marker area the file size; the front (rows
no other row beats on both latency and accuracy) is a step line with its points outlined: the best accuracy
reachable within a latency budget. Labels are short (name + MB) and placed greedily so ~15 points stay readable.
"""

from pathlib import Path

from edgekd.report.plot_runtimes import (ROLE_MARKERS, ROLE_NAMES, RUNTIME_NAMES, pareto_front, pyplot,
                                         runtime_colours, save, short_name)

# Used by the causal-LM plot (lm_markdown): teacher rows red, edgekd's models blue, the peer path green.
ROLE_COLOURS = {"teacher": "tab:red", "peer": "tab:green"}


def _offsets(r: float) -> list[tuple[float, float]]:
    """Label offsets in points from a marker of radius ``r`` points, tried in order: beside it, above/below it,
    then further out (with a leader line)."""
    g = r + 3
    return [(g, 1), (g, -1), (-g, 1), (-g, -1), (g / 2, r + 2), (g / 2, -r - 2), (-g / 2, r + 2), (-g / 2, -r - 2),
            (g + 8, r + 16), (g + 8, -r - 16), (-g - 8, r + 16), (-g - 8, -r - 16), (g + 12, r + 32), (g + 12, -r - 32)]


def point_label(row: dict) -> str:
    """A point's annotation: its short name and file size."""
    return f"{short_name(row)} · {row['file_bytes'] / 1e6:.1f} MB"


def _place_labels(ax, groups: list[tuple[tuple[float, float], str, float]]) -> None:
    """Annotate each (xy, text, marker radius in points) at the first offset whose box stays inside the axes,
    clear of earlier labels, the legend and every marker (the last try stays when every one is taken)."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    px = ax.figure.dpi / 72  # pixels per point
    markers = []
    for xy, _, r in groups:  # a marker's box, shrunk a little: a label may graze a round marker's corner
        (x, y), h = ax.transData.transform(xy), 0.75 * r * px
        markers.append(Bbox.from_extents(x - h, y - h, x + h, y + h))
    inside = ax.get_window_extent(renderer)
    placed = [ax.get_legend().get_window_extent(renderer)]
    for xy, text, r in groups:
        tries = _offsets(r)
        for dx, dy in tries:
            note = ax.annotate(text, xy, xytext=(dx, dy), textcoords="offset points", fontsize=6.5, linespacing=1.1,
                               ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top",
                               arrowprops=dict(arrowstyle="-", color="grey", lw=0.5) if abs(dy) > r + 8 else None)
            # The text's own box (Annotation.get_window_extent would include the leader line), once placed.
            note.update_positions(renderer)
            box = Text.get_window_extent(note, renderer)
            clear = not any(box.overlaps(b) for b in placed + markers)
            if clear and inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1:
                break
            if (dx, dy) != tries[-1]:
                note.remove()
        placed.append(box)


def _groups(rows: list[dict], setting: str, ax, area) -> list[tuple[tuple[float, float], str, float]]:
    """Points closer than a few pixels (e.g. the same int8 model as .onnx and .ort) share one stacked label.
    ``area(row)``: the marker area in points², so a group knows its largest marker's radius."""
    groups: list[list] = []
    for r in rows:
        xy = (r["latency_ms"][setting]["p50"], 100 * r["accuracy"])
        pixel, radius = ax.transData.transform(xy), area(r) ** 0.5 / 2
        near = next((g for g in groups if abs(g[3][0] - pixel[0]) < 6 and abs(g[3][1] - pixel[1]) < 6), None)
        if near is None:
            groups.append([xy, [point_label(r)], radius, pixel])
        else:
            near[1].append(point_label(r))
            near[2] = max(near[2], radius)
    return [(xy, "\n".join(labels), radius) for xy, labels, radius, _ in groups]


def plot(report: dict, path: Path) -> None:
    """Accuracy vs p50 latency (log x) at the report's latency setting; nothing written when no row is scored."""
    plt = pyplot()
    import matplotlib.ticker
    from matplotlib.lines import Line2D

    setting = report["bench"]["latency_setting"]
    rows = sorted((r for r in report["rows"] if setting in r.get("latency_ms", {}) and "accuracy" in r),
                  key=lambda r: r["latency_ms"][setting]["p50"])
    if not rows:  # nothing was scored (inputs without labels): no accuracy axis to plot
        return
    colours = runtime_colours(rows)
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    biggest = max(r["file_bytes"] for r in rows)

    def area(r: dict) -> float:  # marker area in points², ∝ file size
        return 30 + 900 * r["file_bytes"] / biggest

    front = pareto_front(rows, setting)
    for r in rows:
        ax.scatter(r["latency_ms"][setting]["p50"], 100 * r["accuracy"], s=area(r),
                   marker=ROLE_MARKERS.get(r["role"], "o"), color=colours[r["runtime"]], alpha=0.5,
                   edgecolors="none", zorder=2)
    fx, fy = [r["latency_ms"][setting]["p50"] for r in front], [100 * r["accuracy"] for r in front]
    # where="post": the front's accuracy holds until the next, slower front point (the best within a budget).
    ax.step(fx, fy, where="post", color="black", linewidth=1, linestyle="--", zorder=3)
    for r in front:  # outline the front's points in their own marker shape
        ax.scatter(r["latency_ms"][setting]["p50"], 100 * r["accuracy"], s=area(r),
                   marker=ROLE_MARKERS.get(r["role"], "o"), facecolors="none", edgecolors="black", linewidths=1.4,
                   zorder=4)
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo / 1.15, hi * 2.2)  # room for the slowest point's label
    ax.margins(y=0.15)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(f"p50 latency, ms ({setting}, log scale)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title(f"{report['run']['name']}: accuracy vs latency (colour: runtime, shape: role, area ∝ file size)",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], marker="o", linestyle="", color=c, alpha=0.7, label=RUNTIME_NAMES.get(rt, rt))
               for rt, c in colours.items()]
    handles += [Line2D([], [], marker=ROLE_MARKERS.get(role, "o"), linestyle="", color="grey", label=ROLE_NAMES[role])
                for role in dict.fromkeys(r["role"] for r in rows) if role in ROLE_NAMES]
    handles.append(Line2D([], [], color="black", linestyle="--", marker="o", markerfacecolor="none",
                          label="Pareto front"))
    ax.legend(handles=handles, fontsize=7, loc="lower right", framealpha=0.85)
    fig.tight_layout()  # final layout before label placement: it reads pixel positions
    _place_labels(ax, _groups(rows, setting, ax, area))
    save(fig, path)
