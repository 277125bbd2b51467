"""The README's language-model results block, rendered from committed results (never typed in).

    python benchmarks/readme_lm_results.py

rewrites the part of README.md between the LM results markers from the newest causal-LM pipeline result in
benchmarks/results/ (run_default.py --pipeline pipelines/smollm2-bbc.yaml writes it), the newest
lm-distill-seeds result and the newest lm-frontier result; run_default.py calls it after measuring a causal-LM
pipeline, and a test checks that README.md holds exactly what this renders.
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- lm-results:begin (written by benchmarks/readme_lm_results.py) -->", "<!-- lm-results:end -->"


def is_lm_result(result: dict) -> bool:
    return result.get("report", {}).get("task") == "causal-lm" and bool(result.get("headline"))


def newest(test, folder: Path = RESULTS) -> tuple[Path, dict] | None:
    """The newest result file (by its UTC-stamped name) whose JSON passes ``test``."""
    for path in sorted(folder.glob("*.json"), reverse=True):
        data = json.loads(path.read_text())
        if test(data):
            return path, data
    return None


def _x(pair: dict | None) -> str:
    return f"**{pair['median']:.2f}×** ({pair['low']:.2f}–{pair['high']:.2f})" if pair else "–"


def _link(path: Path) -> str:
    rel = path.resolve().relative_to(ROOT).with_suffix(".md").as_posix()
    return f"[{Path(rel).name}]({rel})"


def _pipeline_lines(path: Path, summary: dict) -> list[str]:
    report, h = summary["report"], summary["headline"]
    setting, m, load = h["setting"], summary["machine"], summary["load"]
    rows = {r["name"]: r for r in report["rows"]}
    shown = [(h["teacher_onnxruntime"], "teacher, ONNX Runtime fp32"), (h["student"], "student, edgekd ONNX int4")]
    genai = h.get("genai_student")
    if genai:
        shown.append((genai["name"], "student, GenAI int4 bundle"))
    if h.get("peer"):
        shown.append((h["peer"], "peer: teacher, GenAI int4"))
    lines = [f"Measured {summary['measured'][:10]} by `python benchmarks/run_default.py --pipeline "
             f"pipelines/smollm2-bbc.yaml` on {m['cpu']} ({m['logical_cores']} logical cores, no GPU); other processes "
             f"used {load['other_processes_cores_mean']:.2f} cores on average meanwhile. Full table: {_link(path)}. "
             f"Decode: {report['bench']['lm']['prompts']} test prompts of {report['bench']['lm']['prompt_tokens']} "
             f"tokens, {report['bench']['lm']['new_tokens']} greedy new tokens, `{setting}`; perplexity on "
             f"{report['bench']['lm']['eval_windows']} test windows.", "",
             "| | " + " | ".join(label for _, label in shown) + " |", "|---|" + "---|" * len(shown)]
    def cells(fmt) -> str:
        return " | ".join(fmt(rows[name]) for name, _ in shown)

    lines += ["| decode tokens/s | " + cells(lambda r: f"{r['decode_tokens_per_s'][setting]['median']:.0f}") + " |",
              "| prefill p50 | " + cells(lambda r: f"{r['prefill_ms'][setting]['p50']:.0f} ms") + " |",
              "| file | " + cells(lambda r: f"{r['file_bytes'] / 1e6:.1f} MB") + " |",
              "| test perplexity | " + cells(lambda r: f"{r['perplexity']:.1f}") + " |", ""]
    lines.append(f"- Decode speed-up over the teacher on ONNX Runtime fp32 (paired over rounds): edgekd int4 student "
                 f"{_x(h['decode_speedup_vs_onnxruntime'])}" + (f", GenAI int4 student {_x(genai['decode_speedup_vs_onnxruntime'])}"
                                                               if genai else "") + ".")
    if h.get("peer"):
        lines.append(f"- Against the peer (the teacher through ONNX Runtime GenAI's model builder, int4): edgekd int4 "
                     f"student {_x(h['decode_speedup_vs_peer'])}" + (
                         f"; the student through the same builder {_x(genai['decode_speedup_vs_peer'])}, "
                         f"{genai['size_ratio_vs_peer']:.2f}× smaller (same runtime and precision: pruning and "
                         "distillation alone)" if genai else "") + ".")
    flagged = ", flagged in the report" if (h.get("quality_gate") or {}).get("over") else ""
    quality = (f"- Quality: test perplexity {h['perplexity']:.1f} for the shipped int4 student against "
               f"{h['teacher_perplexity']:.1f} for the teacher (**{h['perplexity_ratio']:.2f}×**; goal ≤ 1.5×{flagged})")
    if genai and genai.get("perplexity"):
        quality += f"; {genai['perplexity']:.1f} for the GenAI build"
    if h.get("ablation"):
        quality += (f". Distillation vs cross-entropy alone at the same tokens (PyTorch fp32, one seed): test perplexity "
                    f"{h['ablation']['distilled_perplexity']:.1f} vs {h['ablation']['non_distilled_perplexity']:.1f}")
    lines.append(quality + ".")
    secs = summary["stage_seconds"]
    lines.append(f"- The stages' recorded times add up to {sum(secs.values()) / 60:.1f} min (distill "
                 f"{secs.get('distill', 0) / 60:.1f} min, bench {secs.get('bench', 0) / 60:.1f} min; a stage reused "
                 "from an earlier run keeps the time it took then).")
    return lines


def _seeds_line(path: Path, result: dict) -> str:
    c, arms = result["comparison"], result["arms"]
    d, h = arms["distilled"]["summary"], arms["hard-labels"]["summary"]
    steps = result["budget"]["max_steps"]
    beats = [m for m, v in c.items() if v["distilled_beats_beyond_spread"]]
    return (f"- Seeds ({_link(path)}): {len(result['seeds'])} seeds of {steps} steps, the distilled student against "
            f"cross-entropy alone: test perplexity {d['test_perplexity']['mean']:.1f} ± {d['test_perplexity']['std']:.1f} "
            f"vs {h['test_perplexity']['mean']:.1f} ± {h['test_perplexity']['std']:.1f}; better beyond the seed "
            f"spread on {', '.join(beats) if beats else 'no metric'}.")


def _frontier_line(path: Path, result: dict) -> str:
    points = result["points"]
    best = min(points, key=lambda p: p["perplexity_ratio"])
    fastest = max(points, key=lambda p: p["speedup_vs_peer"]["median"])
    meeting = [p["point"] for p in points if p["meets_goal"]]
    return (f"- Frontier ({_link(path)}): {len(points)} students by depth, FFN width and training tokens on GenAI "
            f"int4. Lowest test perplexity: {best['layers']} layers, FFN {best['ffn_after']}, {best['steps']} steps at "
            f"{best['perplexity_ratio']:.2f}× the teacher's and {best['speedup_vs_peer']['median']:.2f}× the peer's "
            f"tokens/s; fastest: {fastest['layers']} layers, FFN {fastest['ffn_after']} at "
            f"{fastest['speedup_vs_peer']['median']:.2f}× the peer and {fastest['perplexity_ratio']:.2f}× the "
            f"teacher's perplexity. Meeting both goals (≤ 1.5× perplexity, ≥ 1.5× the peer): "
            f"{', '.join(meeting) if meeting else 'none at this CPU token budget'}.")


def render(folder: Path = RESULTS) -> str:
    found = newest(is_lm_result, folder)
    if found is None:
        return "No causal-LM result is committed yet."
    lines = _pipeline_lines(*found)
    seeds = newest(lambda r: r.get("schema") == "edgekd.lm-distill-seeds/v1", folder)
    if seeds:
        lines.append(_seeds_line(*seeds))
    frontier = newest(lambda r: r.get("schema") == "edgekd.lm-frontier/v1", folder)
    if frontier:
        lines.append(_frontier_line(*frontier))
    return "\n".join(lines)


def update_readme(readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: no LM results markers ({BEGIN} ... {END})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{render()}\n{END}{tail}")


if __name__ == "__main__":
    update_readme()
