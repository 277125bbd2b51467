"""The README's language-model results block, rendered from committed results (never typed in).

    python benchmarks/readme_lm_results.py

rewrites the part of README.md between the LM results markers from the newest causal-LM pipeline result in
benchmarks/results/ (run_default.py --pipeline pipelines/smollm2-bbc.yaml writes it), the newest
lm-distill-seeds result and the newest lm-frontier result; run_default.py calls it after measuring a causal-LM
pipeline, and a test checks that README.md holds exactly what this renders.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from readme_results import replace_block  # noqa: E402  (the classifier block's marker handling)

RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- lm-results:begin (written by benchmarks/readme_lm_results.py) -->", "<!-- lm-results:end -->"


PIPELINE = "smollm2-bbc"  # the default causal-LM pipeline (pipelines/smollm2-bbc.yaml), measured on this CPU


def is_lm_result(result: dict, pipeline: str = PIPELINE) -> bool:
    """A result of ``pipeline`` (not its GPU twin or a user's) with a causal-LM headline."""
    return (result.get("report", {}).get("task") == "causal-lm" and bool(result.get("headline"))
            and result.get("pipeline") == pipeline)


def newest(test, folder: Path = RESULTS) -> tuple[Path, dict] | None:
    """The newest result file (by its UTC-stamped name) whose JSON passes ``test``."""
    for path in sorted(folder.glob("*.json"), reverse=True):
        data = json.loads(path.read_text())
        if test(data):
            return path, data
    return None


def _x(pair: dict | None) -> str:
    """'**2.19×** (2.17–2.24: a 75% interval over 3 paired rounds)': the median of per-round ratios, its interval."""
    if not pair:
        return "–"
    return (f"**{pair['median']:.2f}×** ({pair['low']:.2f}–{pair['high']:.2f}: a {pair['coverage']:.0%} interval "
            f"over {pair['n']} paired rounds)")


def _label(row: dict) -> str:
    """'student, onnxruntime-genai int4': what the row is, from its metadata."""
    return f"{row['role']}, {row['runtime']} {row['precision']}"


def _link(path: Path) -> str:
    rel = path.resolve().relative_to(ROOT).with_suffix(".md").as_posix()
    return f"[{Path(rel).name}]({rel})"


def _pipeline_lines(path: Path, summary: dict) -> list[str]:
    report, h = summary["report"], summary["headline"]
    setting, m, load = h["setting"], summary["machine"], summary["load"]
    rows = {r["name"]: r for r in report["rows"]}
    genai = h.get("genai_student")
    names = [h["teacher_onnxruntime"], h["student"], *([genai["name"]] if genai else []), *filter(None, [h.get("peer")])]
    shown = [(name, _label(rows[name])) for name in names]
    gpus = m.get("gpus") or []
    lines = [f"Measured {summary['measured'][:10]} by `python benchmarks/run_default.py --pipeline "
             f"pipelines/{summary['pipeline']}.yaml` on {m['cpu']} ({m['logical_cores']} logical cores, "
             f"{', '.join(gpus) if gpus else 'no GPU'}); other processes "
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
    student = _label(rows[h["student"]])
    lines.append(f"- Decode speed-up over the teacher on ONNX Runtime fp32: {student} {_x(h['decode_speedup_vs_onnxruntime'])}"
                 + (f"; {_label(rows[genai['name']])} {_x(genai['decode_speedup_vs_onnxruntime'])}" if genai else "")
                 + ".")
    if h.get("peer"):
        peer = rows[h["peer"]]
        same = genai and (rows[genai["name"]]["runtime"], rows[genai["name"]]["precision"]) == (peer["runtime"],
                                                                                              peer["precision"])
        lines.append(f"- Against the peer (the teacher through ONNX Runtime GenAI's model builder, {peer['precision']}): "
                     f"{student} {_x(h['decode_speedup_vs_peer'])}" + (
                         f"; {_label(rows[genai['name']])} {_x(genai['decode_speedup_vs_peer'])}, "
                         f"{genai['size_ratio_vs_peer']:.2f}× smaller" + (
                             " (the same runtime and precision: the speed gap is the pruned architecture alone)"
                             if same else "") if genai else "") + ".")
    gate = h.get("quality_gate") or {}
    limit = f"; the bundle's limit is {gate['limit']}×" + (", flagged in the report" if gate["over"] else "") if gate else ""
    quality = (f"- Quality: test perplexity {h['perplexity']:.1f} for the bundled {student} against "
               f"{h['teacher_perplexity']:.1f} for the teacher (**{h['perplexity_ratio']:.2f}×**{limit})")
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
    best = min(points, key=lambda p: p["validation_perplexity"])  # chosen on validation; test only reported
    fastest = max(points, key=lambda p: p["speedup_vs_peer"]["median"])
    meeting = [p["point"] for p in points if p["meets_goal"]]
    return (f"- Frontier ({_link(path)}): {len(points)} students by depth, FFN width and training tokens on GenAI "
            f"int4 (perplexity ratios: the int4 build's test perplexity over the teacher's fp32 one; the peer's is "
            f"{result['peer']['int4_test_perplexity'] / result['teacher']['test_perplexity']:.2f}×). Best by validation "
            "perplexity: "
            f"{best['layers']} layers, FFN {best['ffn_after']}, {best['steps']} steps at "
            f"{best['int4_perplexity_ratio']:.2f}× ({best['perplexity_ratio']:.2f}× before int4) and "
            f"{best['speedup_vs_peer']['median']:.2f}× the peer's tokens/s; fastest: {fastest['layers']} layers, FFN "
            f"{fastest['ffn_after']}, {fastest['steps']} steps at {fastest['speedup_vs_peer']['median']:.2f}× the peer's "
            f"tokens/s and {fastest['int4_perplexity_ratio']:.2f}× the teacher's perplexity. Meeting both goals "
            "(≤ 1.5× perplexity, ≥ 1.5× the peer): "
            f"{', '.join(meeting) if meeting else 'none at this CPU token budget'}.")


def render(folder: Path = RESULTS) -> str:
    found = newest(is_lm_result, folder)  # the default pipeline's, on this CPU
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
    replace_block(readme, BEGIN, END, render())


if __name__ == "__main__":
    update_readme()
