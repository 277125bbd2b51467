"""report.md and report.png of a causal-LM run (see edgekd.report.lm for report.json)."""

from pathlib import Path

from edgekd.report.markdown import faster
from edgekd.report.plot import ROLE_COLOURS


def _x(pair: dict | None) -> str:
    if not pair:
        return "–"
    return f"{pair['median']:.2f}× [{pair['low']:.2f}–{pair['high']:.2f}]"


def _fewer(ratio: float, less: str, more: str) -> str:
    """'2.00× smaller' for a ratio of 2, '1.25× larger' for 0.8: the words follow the numbers."""
    return f"{ratio:.2f}× {less}" if ratio >= 1 else f"{1 / ratio:.2f}× {more}"


def _num(value, fmt: str = ".2f") -> str:
    return "–" if value is None else format(value, fmt)


def _genai_line(g: dict, h: dict, rows: list[dict]) -> str:
    """The student built by ONNX Runtime GenAI (bundle lm.genai) against the teacher on ONNX Runtime and the peer."""
    precision = {r["name"]: r["precision"] for r in rows}
    same = h.get("peer") and precision.get(h["peer"]) == precision.get(g["name"])
    why = ("the peer's runtime and precision, so the speed gap is the pruned architecture alone" if same
           else f"ONNX Runtime GenAI, {precision.get(g['name'])}")
    peer = "peer" in h
    return (f"- The same student built by ONNX Runtime GenAI's model builder (`{g['name']}`, {why}): decode "
            f"{_x(g['decode_speedup_vs_onnxruntime'])} the teacher on ONNX Runtime fp32"
            + (f", {_x(g['decode_speedup_vs_peer'])} the peer" if peer else "")
            + f"; prefill {_x(g['prefill_speedup_vs_onnxruntime'])} the teacher"
            + (f", {_x(g['prefill_speedup_vs_peer'])} the peer" if peer else "")
            + f"; {_fewer(g['size_ratio'], 'smaller', 'larger')} than the teacher's fp32 file"
            + (f", {_fewer(g['size_ratio_vs_peer'], 'smaller', 'larger')} than the peer's" if peer else "")
            + f"; test perplexity {_num(g['perplexity'])} ({_num(g.get('perplexity_ratio'))}× the teacher's).")


def lm_headline_lines(report: dict) -> list[str]:
    h = report.get("headline")
    if not h:
        return []
    decode = h["decode_speedup_vs_onnxruntime"]
    lines = ["## Headline", "",
             f"- **{h['student']}** decodes "
             + (f"**{faster(decode['median'])}** than the teacher on ONNX Runtime fp32 (`{h['teacher_onnxruntime']}`; "
                f"paired over rounds, interval {decode['low']:.2f}–{decode['high']:.2f}×, `{h['setting']}`)"
                if decode else "(no paired decode timing against the teacher)")
             + f"; prefill {_x(h['prefill_speedup_vs_onnxruntime'])}; file **{_fewer(h['size_ratio'], 'smaller', 'larger')}**; "
             f"peak RSS {_fewer(h['peak_rss_ratio'], 'lower', 'higher')}.",
             f"- Test perplexity {_num(h['perplexity'])} against the teacher's {_num(h['teacher_perplexity'])} "
             f"(**{_num(h.get('perplexity_ratio'))}×**); teacher-forced top-1 agreement with the teacher "
             f"{_num(h['agreement_with_teacher'], '.1%')}."]
    gate = h.get("quality_gate")
    if gate and gate["over"]:
        lines.append(f"- **Flagged:** the student's test perplexity is {h['perplexity_ratio']:.2f}× the teacher's, over "
                     f"the bundle's limit of {gate['limit']}×" + (" (bundled because the limit was overridden)."
                                                                   if gate["overridden"] else "."))
    if h.get("peer"):
        lines.append(f"- Against the peer path (`{h['peer']}`: ONNX Runtime GenAI's model builder on the teacher): "
                     f"decode {_x(h['decode_speedup_vs_peer'])}, prefill {_x(h['prefill_speedup_vs_peer'])}, "
                     f"{_fewer(h['size_ratio_vs_peer'], 'smaller', 'larger')}, perplexity {_num(h['perplexity'])} vs "
                     f"{_num(h['peer_perplexity'])}.")
    g = h.get("genai_student")
    if g:
        lines.append(_genai_line(g, h, report["rows"]))
    a = h.get("ablation")
    if a:
        lines.append(f"- Distillation vs none (same architecture, same steps and tokens): test perplexity "
                     f"{a['distilled_perplexity']:.2f} distilled (`{a['distilled']}`) vs {a['non_distilled_perplexity']:.2f} "
                     f"with cross-entropy alone (`{a['non_distilled']}`). One seed: see benchmarks/ for the spread.")
    return lines + [""]


def render_lm_markdown(report: dict) -> str:
    bench, m, load = report["bench"], report["machine"], report["bench"]["load"]
    setting, lm = bench["setting"], bench["lm"]
    tags = list(bench["threads"])
    lines = [f"# edgekd report: {report['run']['name']} (causal LM)", "",
             f"Generated {report['generated']} on {m['cpu']} ({m['logical_cores']} logical / {m['physical_cores']} "
             f"physical cores). Every model generates greedily from the same {lm['prompts']} prompts of "
             f"{lm['prompt_tokens']} test tokens, {lm['new_tokens']} new tokens each (EOS ignored), in "
             f"{bench['config']['rounds']} interleaved rounds; quality is teacher-forced on {lm['eval_windows']} test "
             "windows.", ""]
    if load.get("disturbed"):
        lines += [f"> **Disturbed:** other processes used {load['other_processes_cores_mean']:.2f} cores on average "
                  "during the benchmark; treat the timings with care.", ""]
    lines += lm_headline_lines(report)
    refs = bench.get("references") or []
    head = (["model", "runtime", "precision", "size MB", "peak RSS MB"]
            + [f"decode tok/s {t}" for t in tags] + [f"prefill p50 ms {tags[0]}", f"TTFT p50 ms {tags[0]}"]
            + [f"vs {r}" for r in refs] + ["perplexity", "next-token acc", "agreement"])
    lines += ["## Models", "", f"Speed-ups: decode tokens/s, median of paired per-round ratios on `{setting}` "
              "[interval].", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["rows"]:
        timed = bool(r.get("rounds"))
        cells = [r["name"], f"{r['runtime']} {r['device']}", str(r["precision"]), f"{r['file_bytes'] / 1e6:.1f}",
                 f"{r['peak_rss_mb']:.0f}"]
        for t in tags:
            key = next((s for s in bench["settings"] if s.endswith(f"_{t}")), None)
            cells.append(f"{r['decode_tokens_per_s'][key]['median']:.1f}" if timed and key else "–")
        cells += [f"{r['prefill_ms'][setting]['p50']:.1f}" if timed else "–",
                  f"{r['ttft_ms'][setting]['p50']:.1f}" if timed else "–"]
        cells += [_x((r.get("speedup_vs", {}).get(ref, {}).get(setting) or {}).get("decode_tokens_per_s"))
                  if timed else "–" for ref in refs]
        cells += [_num(r.get("perplexity")), _num(r.get("next_token_accuracy"), ".1%"),
                  _num(r.get("agreement_with_teacher"), ".1%")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![perplexity vs decode speed](report.png)", "", "## Pipeline", "", "| stage | seconds | notes |",
              "|---|---|---|"]
    for s in report["stages"]:
        lines.append(f"| {s['kind']} | {s['seconds'] if s['seconds'] is not None else '–'} | {s['summary']} |")
    lines += ["", "## Conditions", "",
              f"- Threads, the same for every runtime: {', '.join(f'{t} = {n}' for t, n in bench['threads'].items())}; "
              "each model in its own process, loaded once; models take turns within each round (the order rotates).",
              f"- CPU used by other processes: {load['other_processes_cores_mean']:.2f} cores on average of "
              f"{load['cores']}.", "- Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    return "\n".join(lines)


def plot_lm(report: dict, path: Path) -> None:
    """Test perplexity vs decode tokens/s (1 thread), marker area proportional to file size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setting = report["bench"]["setting"]
    rows = [r for r in report["rows"] if r.get("rounds") and r.get("perplexity")
            and setting in r.get("decode_tokens_per_s", {})]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    biggest = max(r["file_bytes"] for r in rows)
    for i, r in enumerate(sorted(rows, key=lambda r: r["decode_tokens_per_s"][setting]["median"])):
        xy = (r["decode_tokens_per_s"][setting]["median"], r["perplexity"])
        ax.scatter(*xy, s=40 + 1200 * r["file_bytes"] / biggest, alpha=0.45, color=ROLE_COLOURS.get(r["role"], "tab:blue"),
                   edgecolors="black", linewidths=0.6)
        ax.annotate(f"{r['name']}\n{r['file_bytes'] / 1e6:.1f} MB", xy, fontsize=7,
                    xytext=(8, 8 if i % 2 == 0 else -18), textcoords="offset points")
    ax.set_xlabel(f"decode tokens/s ({setting}; higher is better)")
    ax.set_ylabel("test perplexity (lower is better)")
    ax.set_title(f"{report['run']['name']}: perplexity vs decode speed (marker area ∝ file size)")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.2, y=0.15)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
