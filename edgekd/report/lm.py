"""The report of a causal-LM run: report.json, report.md and a perplexity-vs-tokens/s plot, from the LM
benchmark (edgekd.bench.lm_core) and the stage manifests.

report.json, schema "edgekd.report-lm/v1": schema, task, generated, run, data, stages (as the classifier
report), machine, versions, bench{config, lm, threads, settings, setting, inputs, load, references,
agreement_reference}, headline{student, teacher_onnxruntime, peer, setting, decode_speedup_vs_onnxruntime{median,
low, high, coverage, n}, prefill_speedup_vs_onnxruntime{...}, decode_speedup_vs_peer{...}, prefill_speedup_vs_peer,
size_ratio, size_ratio_vs_peer, perplexity, teacher_perplexity, perplexity_ratio, agreement_with_teacher,
peer_perplexity, quality_gate{limit, over}, ablation{distilled, non_distilled, ...}, genai_student{name,
decode_speedup_vs_onnxruntime, prefill_speedup_vs_onnxruntime, decode_speedup_vs_peer, prefill_speedup_vs_peer,
size_ratio, size_ratio_vs_peer, perplexity, perplexity_ratio}}, rows (the bench's rows).

headline.student is the ONNX bundle's source row (our own int4 path); headline.genai_student, when the bundle
also built the student with ONNX Runtime GenAI (lm.genai), is that row: the same runtime and precision as the
peer, so its speed gap to the peer is the pruned architecture alone. Both come from one helper (_versus); the
*_vs_peer keys are present only when the run has a timed peer row.
"""

from datetime import datetime, timezone

from edgekd.stages import STAGES

SCHEMA = "edgekd.report-lm/v1"


def _row(rows: list[dict], name: str | None) -> dict | None:
    return next((r for r in rows if r["name"] == name), None) if name else None


def _shipped_student(rows: list[dict], history: list[dict]) -> dict | None:
    """The bundled model's ONNX row (what a user ships), else the smallest timed student row."""
    bundle = next((h for h in history if h["kind"] == "bundle"), None)
    source = (bundle or {}).get("metrics", {}).get("source")
    if source:
        row = _row(rows, f"{source.removesuffix('.onnx')} onnxruntime cpu")
        if row:
            return row
    students = [r for r in rows if r["role"] == "student" and r.get("rounds") and r["format"] == "onnx"]
    return min(students, key=lambda r: r["file_bytes"]) if students else None


def _pair(row: dict, reference: dict | None, setting: str, what: str) -> dict | None:
    if reference is None:
        return None
    pair = row.get("speedup_vs", {}).get(reference["name"], {}).get(setting, {}).get(what)
    return {k: pair[k] for k in ("median", "low", "high", "coverage", "n")} if pair else None


def _versus(row: dict, teacher: dict, peer: dict | None, setting: str) -> dict:
    """``row`` against the teacher on ONNX Runtime fp32 and the peer: paired speed-ups, file size ratios
    (reference / row: above 1 means smaller), test perplexity and its ratio to the teacher's."""
    out = {"decode_speedup_vs_onnxruntime": _pair(row, teacher, setting, "decode_tokens_per_s"),
           "prefill_speedup_vs_onnxruntime": _pair(row, teacher, setting, "prefill"),
           "size_ratio": round(teacher["file_bytes"] / row["file_bytes"], 2), "perplexity": row.get("perplexity")}
    if out["perplexity"] and teacher.get("perplexity"):
        out["perplexity_ratio"] = round(out["perplexity"] / teacher["perplexity"], 3)
    if peer is not None:
        out.update(decode_speedup_vs_peer=_pair(row, peer, setting, "decode_tokens_per_s"),
                   prefill_speedup_vs_peer=_pair(row, peer, setting, "prefill"),
                   size_ratio_vs_peer=round(peer["file_bytes"] / row["file_bytes"], 2))
    return out


def lm_headline(rows: list[dict], history: list[dict], references: list[str], setting: str) -> dict | None:
    student = _shipped_student(rows, history)
    teacher = next((r for r in rows if r["role"] == "teacher" and r["runtime"] == "onnxruntime"
                    and r["precision"] == "fp32" and r["device"] == "cpu" and r.get("rounds")), None)
    if student is None or teacher is None:
        return None
    peer = next((r for r in rows if r["role"] == "peer" and r.get("rounds")), None)
    out = {"student": student["name"], "teacher_onnxruntime": teacher["name"], "setting": setting,
           **_versus(student, teacher, peer, setting),
           "peak_rss_ratio": round(teacher["peak_rss_mb"] / student["peak_rss_mb"], 2),
           "teacher_perplexity": teacher.get("perplexity"),
           "agreement_with_teacher": student.get("agreement_with_teacher")}
    if "perplexity_ratio" in out:
        gate = next((h for h in history if h["kind"] == "bundle"), {}).get("metrics", {}).get("quality_gate")
        if gate:  # the bundle's limit, now on the test windows
            out["quality_gate"] = {"limit": gate["limit"], "over": out["perplexity_ratio"] > gate["limit"],
                                   "validation_ratio": gate["ratio"], "overridden": gate["overridden"]}
    if peer is not None:
        out.update(peer=peer["name"], peer_perplexity=peer.get("perplexity"))
    genai = next((r for r in rows if r["format"] == "genai" and r["role"] == "student" and r.get("rounds")), None)
    if genai is not None:  # the same student built by ONNX Runtime GenAI (bundle lm.genai)
        out["genai_student"] = {"name": genai["name"], **_versus(genai, teacher, peer, setting)}
    distilled = next((r for r in rows if r["role"] == "student" and r["format"] == "pytorch"), None)
    plain = next((r for r in rows if r["role"] == "ablation"), None)
    if distilled and plain and distilled.get("perplexity") and plain.get("perplexity"):
        ablation = next((h for h in history if h["kind"] == "ablation"), {}).get("metrics", {})
        out["ablation"] = {"distilled": distilled["name"], "non_distilled": plain["name"],
                           "distilled_perplexity": distilled["perplexity"], "non_distilled_perplexity": plain["perplexity"],
                           "steps": ablation.get("steps"), "split": "test"}
    return out


def build_lm_report(bench: dict, history: list[dict], pipeline: dict, setting: str | None) -> dict:
    setting = setting if setting in bench["settings"] else bench["settings"][0]  # the first: 1 thread by default
    data = next((h for h in history if h["kind"] == "data"), {})
    keys = ("config", "lm", "threads", "settings", "inputs", "load", "references", "agreement_reference")
    return {
        "schema": SCHEMA, "task": "causal-lm",
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {"name": pipeline.get("name"), "seed": pipeline.get("seed"), "pipeline": pipeline},
        "data": {"source": data.get("config", {}).get("source"), **data.get("metrics", {})},
        "stages": [{"kind": h["kind"], "folder": h.get("folder"), "seconds": h.get("seconds"),
                    "metrics": h.get("metrics", {}), "summary": STAGES[h["kind"]].config.summary(h.get("metrics", {}))}
                   for h in history if h["kind"] not in ("data", "report")],
        "machine": bench["machine"], "versions": bench["versions"],
        "bench": {**{k: bench.get(k) for k in keys}, "setting": setting},
        "headline": lm_headline(bench["rows"], history, bench["references"], setting),
        "rows": bench["rows"],
    }
