"""report.md: the headline, the model table, latency by input length, per-class quality, conditions."""

from edgekd.report.plot_runtimes import runtimes_lines


def _mb(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:.1f}"


def _runtime_cell(row: dict) -> str:
    """``litert cpu, XNNPACK``: the runtime, the device and what runs its kernels where the row names it."""
    cell = f"{row['runtime']} {row['device']}"
    return f"{cell}, {row['delegate']}" if row.get("delegate") else cell


def _params(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:.2f}M"


def percent(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _lat(row: dict, key: str, stat: str = "p50") -> str:
    value = row["latency_ms"].get(key, {}).get(stat)
    return "–" if value is None else f"{value:.2f}"


def _ratio(s: dict | None) -> str:
    """'4.12× [3.98–4.25]' from a paired speed-up summary."""
    if not s:
        return "–"
    return f"{s['median']:.2f}× [{s['low']:.2f}–{s['high']:.2f}]"


def _speedup_cell(row: dict, reference: str | None, setting: str) -> str:
    if reference is None:
        return "–"
    return _ratio(row.get("speedup_vs", {}).get(reference, {}).get(setting))


def faster(ratio: float) -> str:
    """'4.12× faster', or '1.25× slower' for a ratio below 1 (a speed-up of 0.8)."""
    return f"{ratio:.2f}× faster" if ratio >= 1 else f"{1 / ratio:.2f}× slower"


def paired_accuracy(pair: dict | None, a: str, b: str) -> str:
    """' [95% paired bootstrap -2.72 to -0.21 points; 60 texts right only for the student vs 88 only for the
    teacher, McNemar p=0.026]' from a row's accuracy_vs entry; '' for results measured before it existed."""
    if not pair:
        return ""
    (low, high), d = pair["interval_pt"], pair["discordant"]
    return (f" [{pair['confidence']:.0%} paired bootstrap {low:+.2f} to {high:+.2f} points; "
            f"{d['a_right_b_wrong']} texts right only for {a} vs {d['a_wrong_b_right']} only for {b}, "
            f"McNemar p={pair['mcnemar_p']:.2g}]")


def _accuracy_vs(report: dict, row_name: str, reference: str | None) -> dict | None:
    """The paired accuracy comparison the bench stored on ``row_name``'s row against ``reference``."""
    row = next((r for r in report.get("rows", []) if r["name"] == row_name), {})
    return row.get("accuracy_vs", {}).get(reference)


def headline_lines(report: dict) -> list[str]:
    h = report.get("headline")
    if not h:
        return []
    s, cov = h["speedup_vs_onnxruntime"], h["speedup_vs_onnxruntime"]["coverage"]
    lines = [f"**{h['student']}** against the teacher on the same inputs ({h['setting']}):", "",
             f"- **{faster(s['median'])} than the teacher on ONNX Runtime fp32** (same runtime; median of "
             f"{s['n']} paired rounds, {cov:.0%} interval {s['low']:.2f}–{s['high']:.2f}× the teacher's speed)"]
    if "speedup_vs_pytorch" in h:
        p = h["speedup_vs_pytorch"]
        lines.append(f"- {faster(p['median'])} than the teacher in PyTorch eager (interval {p['low']:.2f}–"
                     f"{p['high']:.2f}×)")
    lines += _peer_headline_lines(h, _accuracy_vs(report, h["student"], h.get("peer")))
    if "latency_budget" in h:
        b = h["latency_budget"]
        measured = (f"; measured p50 {b['measured_p50_ms']:.3f} ms, {faster(b['measured_speedup'])} (`{b['setting']}`)"
                    if "measured_p50_ms" in b else "")
        goal = ", ".join(f"{k} {v}" for k, v in (b.get("target") or {}).items() if k in ("latency_ms", "speedup") and v)
        lines.append(f"- latency target ({goal}): the prune stage predicted {b['predicted_latency_ms']:.3f} ms "
                     f"({b['predicted_speedup']:.2f}× the teacher; untrained int8 candidates, "
                     f"{b['sequence_length']} tokens, {b['threads']} thread(s), {b.get('clock') or 'wall'} clock){measured}")
    if "accuracy_delta_pt" in h:
        pair = _accuracy_vs(report, h["student"], h["teacher_onnxruntime"])
        lines.append(f"- accuracy {percent(h['accuracy'])} vs {percent(h['teacher_accuracy'])} "
                     f"(**{h['accuracy_delta_pt']:+.2f} points**, batch 1 as deployed"
                     f"{paired_accuracy(pair, 'the student', 'the teacher')}), macro-F1 "
                     f"{h['macro_f1_delta']:+.4f}, worst-class recall {percent(h['min_recall'])} vs "
                     f"{percent(h['teacher_min_recall'])}")
    lines += [f"- file **{h['size_ratio']:.2f}× smaller** than the teacher's fp32 ONNX file; peak RSS "
              f"{h['peak_rss_ratio']:.2f}× lower than the teacher's ONNX Runtime process", ""]
    return lines


def _peer_headline_lines(h: dict, pair: dict | None = None) -> list[str]:
    """The student against the route a user would take without edgekd; nothing when the run has no peer.
    ``pair``: the student's paired accuracy comparison with the peer, where the bench measured one."""
    if "speedup_vs_peer" not in h:
        return []
    s = h["speedup_vs_peer"]
    line = (f"- **{faster(s['median'])} than the peer path** (optimum export + ORTOptimizer + ORTQuantizer dynamic "
            f"int8 of the teacher, `{h['peer']}`; interval {s['low']:.2f}–{s['high']:.2f}×)")
    if "accuracy_delta_vs_peer_pt" in h:
        line += (f"; accuracy {percent(h['accuracy'])} vs the peer's {percent(h['peer_accuracy'])} "
                 f"(**{h['accuracy_delta_vs_peer_pt']:+.2f} points**"
                 f"{paired_accuracy(pair, 'the student', 'the peer')})")
    return [line + f"; file {h['size_ratio_vs_peer']:.2f}× smaller than the peer's"]


def _reference(refs: list[str], rows: list[dict], **match) -> str | None:
    """The reference row (by name) whose row fields match, e.g. role="peer"."""
    by_name = {r["name"]: r for r in rows}
    return next((n for n in refs if n in by_name and all(by_name[n].get(k) == v for k, v in match.items())), None)


def render_markdown(report: dict) -> str:
    # Accuracy-only rows (ablation models, never timed) are not in the timing tables: the ablation section has them.
    rows, bench = [r for r in report["rows"] if r.get("timed", True)], report["bench"]
    setting = bench["latency_setting"]
    tags = list(bench["threads"])
    refs = bench.get("references") or []
    peer_ref = _reference(refs, rows, role="peer")
    # The peer's name says onnxruntime too: it is told apart from the teacher by its role.
    ort_ref = next((r for r in refs if "onnxruntime" in r and r != peer_ref), refs[0] if refs else None)
    pt_ref = next((r for r in refs if "pytorch" in r), None)
    m, load = report["machine"], bench["load"]
    lines = [f"# edgekd report: {report['run']['name']}", "",
             f"Generated {report['generated']} on {m['cpu']} ({m['logical_cores']} logical / {m['physical_cores']} "
             f"physical cores, flags: {', '.join(m['cpu_flags']) or 'none'}). Inputs: {bench['inputs']['describe']}; "
             f"{bench['inputs']['sample']} of them timed batch 1 in each of {bench['config']['rounds']} rounds.", ""]
    if load.get("disturbed"):
        lines += [f"> **Disturbed:** other processes used {load['other_processes_cores_mean']:.2f} cores on average "
                  f"during the benchmark (limit {load['limit_cores']:.2f}); treat the timings with care.", ""]
    lines += headline_lines(report)
    head = (["model", "runtime", "precision", "params", "size MB", "accuracy (b1)", f"accuracy (b{_batch(rows)})",
             "macro-F1", "worst recall"] + [f"p50 ms {t}" for t in tags] + [f"p90 ms {tags[0]}", f"CV {tags[0]}"]
            + ["peak RSS MB", f"vs {ort_ref or '–'}", f"vs {pt_ref or '–'}"]
            + ([f"vs {peer_ref} (peer path)"] if peer_ref else []))
    lines += ["## Models", "", f"Speed-ups: median of paired per-round ratios on `{setting}` [interval].", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = ([r["name"], _runtime_cell(r), str(r["precision"]), _params(r.get("parameters")),
                  _mb(r.get("file_bytes")), percent(r.get("accuracy")), percent(r.get("batched", {}).get("accuracy")),
                  "–" if "macro_f1" not in r else f"{r['macro_f1']:.4f}",
                  "–" if "min_recall" not in r else f"{percent(r['min_recall'])} ({r['min_recall_class']})"]
                 + [_lat(r, f"real_b1_{t}") for t in tags]
                 + [_lat(r, f"real_b1_{tags[0]}", "p90"), f"{r['cv'].get(f'real_b1_{tags[0]}', 0):.1%}"]
                 + ["–" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f}",
                    _speedup_cell(r, ort_ref, setting), _speedup_cell(r, pt_ref, setting)]
                 + ([_speedup_cell(r, peer_ref, setting)] if peer_ref else []))
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("run", {}).get("pipeline"):
        lines += ["", "![accuracy vs latency](report.png)", "",
                  "Accuracy vs p50 latency: colour is the runtime, shape the role, area the file size; the dashed step "
                  "line joins the Pareto front (outlined: no other model is at least as fast and as accurate and "
                  "better on one)."]
        lines += runtimes_lines(report)
    lines += _length_table(rows, setting) + _class_table(rows, report) + _other_settings(rows, tags)
    lines += ablation_lines(report)
    if report.get("stages"):
        lines += ["", "## Pipeline", "", "| stage | seconds | notes |", "|---|---|---|"]
        for s in report["stages"]:
            lines.append(f"| {s['kind']} | {s['seconds'] if s['seconds'] is not None else '–'} | {s['summary']} |")
    cfg = bench["config"]
    lines += ["", "## Conditions", "",
              f"- Threads, the same for every runtime: {', '.join(f'{t} = {n}' for t, n in bench['threads'].items())} "
              "intra-op threads (on a machine with as many cores as threads, the all-cores setting shares them with the "
              "benchmark's own bookkeeping and the system: its spread across rounds, the CV, is typically wider). Each model runs in its own process, loaded once; models take turns within each "
              "round (the order rotates), on the same inputs in the same order, after "
              f"{cfg['warmup']} warm-up calls. Tokenisation is excluded from model latency; the bundle row includes it.",
              f"- CPU used by other processes during the benchmark: {load['other_processes_cores_mean']:.2f} cores on "
              f"average of {load['cores']} (flagged above {load['limit_cores']:.2f}); time the host gave this virtual "
              f"machine's CPUs to others (steal): {load.get('steal_cores_mean', 0):.2f} cores; load average (1 min) mean "
              f"{load['load1_mean']}, max {load['load1_max']}.",
              "- Versions: " + ", ".join(f"{k} {val}" for k, val in report["versions"].items()), ""]
    return "\n".join(lines)


def ablation_lines(report: dict) -> list[str]:
    """The ablation table: teacher, distilled student and students trained without (some of) distillation."""
    a = report.get("ablation")
    if not a:
        return []
    labels = list(dict.fromkeys(label for r in a["rows"] for label in r["recall"]))
    budget = a.get("budget") or {}
    head = ["model", "what", "validation accuracy", "test accuracy", "Δ vs distilled", "macro-F1", "Δ macro-F1"]
    lines = ["", "## Ablation: does distillation help?", "",
             f"Test split, PyTorch fp32 on CPU, batch 1. Every student starts from the same pruned weights and trains "
             f"with the distill stage's budget ({budget.get('epochs', '–')} epoch(s) at most, batch "
             f"{budget.get('batch_size', '–')}, learning rate {budget.get('learning_rate', '–')}, early stopping on "
             "validation), one seed: `benchmarks/distill_seeds.py` measures the spread across seeds. Deltas are "
             f"against {a['reference'] or 'the distilled student'}; nothing here was selected on the test split.", "",
             *_ablation_caveats(report), "",
             "| " + " | ".join(head + [f"recall {c}" for c in labels]) + " |",
             "|" + "---|" * (len(head) + len(labels))]
    for r in a["rows"]:
        delta = "–" if "accuracy_delta_pt" not in r else f"{r['accuracy_delta_pt']:+.2f} pt"
        f1_delta = "–" if "macro_f1_delta" not in r else f"{r['macro_f1_delta']:+.4f}"
        cells = ([r["name"], r["what"], percent(r.get("validation_accuracy")), percent(r.get("accuracy")), delta,
                  "–" if r.get("macro_f1") is None else f"{r['macro_f1']:.4f}", f1_delta]
                 + [percent(r["recall"].get(c)) for c in labels])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ablation_caveats(report: dict) -> list[str]:
    """What differs between the arms besides the loss: extra text (so more steps) and a trimmed vocabulary."""
    metrics = {st["kind"]: st.get("metrics", {}) for st in report.get("stages", [])}
    notes = []
    distill, ablation = metrics.get("distill", {}), metrics.get("ablation", {})
    extra = (distill.get("extra_data") or {}).get("total")
    if extra:
        steps = {name: v.get("steps") for name, v in (ablation.get("variants") or {}).items()}
        notes.append(f"- Same epochs, not the same steps: the distilled student also learns from {extra:,} "
                     f"teacher-labelled extra texts ({distill.get('steps')} steps; "
                     + ", ".join(f"{name} {n}" for name, n in steps.items()) + ").")
    vocab = metrics.get("vocab")
    if vocab:
        share = (vocab.get("identical_share") or {}).get("test")
        notes.append(f"- The distilled student here is the vocabulary-trimmed one (identical tokenisation on its "
                     f"selection text; {percent(share)} of test texts), the ablation students keep the full vocabulary; "
                     "`benchmarks/distill_seeds.py` compares both arms untrimmed.")
    return notes


def _batch(rows: list[dict]) -> str:
    return str(next((r["batched"]["batch_size"] for r in rows if "batched" in r), "–"))


def _length_table(rows: list[dict], setting: str) -> list[str]:
    buckets = list(dict.fromkeys(b for r in rows for b in r.get("by_length", {}).get(setting, {})))
    if not buckets:
        return []
    counts = next(r["by_length"][setting] for r in rows if setting in r.get("by_length", {}))
    lines = ["", f"## Latency by input length ({setting}, p50 / p90 ms)", "",
             "| model | " + " | ".join(f"{b} tokens ({counts.get(b, {}).get('inputs', 0)} inputs)" for b in buckets)
             + " |", "|" + "---|" * (len(buckets) + 1)]
    for r in rows:
        cells = [f"{s['p50']:.2f} / {s['p90']:.2f}" if (s := r.get("by_length", {}).get(setting, {}).get(b)) else "–"
                 for b in buckets]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return lines


def _class_table(rows: list[dict], report: dict) -> list[str]:
    labels = (report.get("data") or {}).get("label_names") or report.get("label_names")
    scored = [r for r in rows if "per_class" in r]
    if not labels or not scored:
        return []
    lines = ["", "## Quality per class (batch 1; recall / F1)", "",
             "| model | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
    for r in scored:
        cells = [f"{100 * r['per_class'][c]['recall']:.1f}% / {r['per_class'][c]['f1']:.3f}" for c in labels]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return lines + ["", "Confusion matrices (rows: true class, columns: predicted) are in report.json."]


def _other_settings(rows: list[dict], tags: list[str]) -> list[str]:
    lines = ["", "## Other settings", "", "| model | load s | first inference ms | "
             + " | ".join(f"p50 ms fixed-length {t}" for t in tags) + " | throughput ex/s | tokenizer p50 ms |",
             "|" + "---|" * (len(tags) + 5)]
    for r in rows:
        fixed = [next((f"{v['p50']:.2f}" for k, v in r["latency_ms"].items()
                       if k.startswith("fixed") and k.endswith(f"_{t}")), "–") for t in tags]
        thr = ", ".join(f"{k}: {v:.0f}" for k, v in r["throughput_eps"].items())
        if thr and r.get("throughput_batching"):  # a batch-1 file: its batches ran one text at a time
            thr += f" ({r['throughput_batching']})"
        tok = f"{r['tokenize_ms']['p50']:.3f}" if "tokenize_ms" in r else "–"
        lines.append(f"| {r['name']} | {r['load_s']:.2f} | {r['first_inference_ms']:.1f} | " + " | ".join(fixed)
                     + f" | {thr} | {tok} |")
    return lines
