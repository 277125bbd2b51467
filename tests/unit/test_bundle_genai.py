"""The bundle stage's ONNX Runtime GenAI build (bundle lm.genai): its config, gate, bench row and headline block,
without building anything (tests/integration/test_causal_lm_pipeline.py builds and gates a real one)."""

import importlib.util
import logging

import pytest

from edgekd.artifacts import Artifact
from edgekd.bench.config import BenchConfig
from edgekd.bench.lm_stage import plan_lm_targets
from edgekd.bundle.config import BundleConfig, BundleLMConfig
from edgekd.bundle.lm_stage import perplexity_gate, run_causal_lm
from edgekd.config import validate_pipeline
from edgekd.errors import ConfigError, EdgekdError, ParityError
from edgekd.report.lm import lm_headline
from edgekd.report.lm_markdown import lm_headline_lines

LM_STAGES = [{"kind": "teacher"}, {"kind": "export", "models": ["teacher"]}]


def test_provides_and_cache_key_libraries_follow_genai():
    plain, genai = BundleConfig(lm={}), BundleConfig(lm={"genai": "fp32"})
    assert plain.provides() == ["bundle"] and genai.provides() == ["bundle", "bundle.genai-fp32"]
    assert "onnxruntime-genai" not in plain.key_extras()[1]
    assert genai.key_extras()[1] == ("onnxruntime", "tokenizers", "transformers", "onnxruntime-genai")
    assert BundleConfig().provides() == ["bundle"] and BundleConfig().key_extras() == ((), ())


def test_dumps_without_genai_are_unchanged():
    # Classification: no `lm` key at all; an LM bundle without genai: the keys it had before genai existed.
    assert BundleConfig().model_dump() == {"kind": "bundle", "model": "student.int8-dynamic.onnx"}
    bundle = {"kind": "bundle", "model": "teacher.onnx"}
    config = validate_pipeline({"task": "causal-lm", "stages": LM_STAGES + [bundle]})
    assert config.stages[-1].model_dump()["lm"] == {"max_perplexity_ratio": 1.5, "allow_over_ratio": False,
                                                    "max_new_tokens": 128}
    assert BundleConfig(lm={"genai": "int4"}).model_dump()["lm"]["genai"] == "int4"


def test_unknown_precision_names_the_field():
    with pytest.raises(ConfigError) as info:
        validate_pipeline({"task": "causal-lm", "stages": LM_STAGES + [
            {"kind": "bundle", "model": "teacher.onnx", "lm": {"genai": "int8"}}]})
    message = str(info.value)
    assert "stages.2.bundle.lm.genai" in message and "'int4' or 'fp32'" in message and "\n" not in message


def test_summary_mentions_the_genai_bundle():
    gate = {"perplexity": 12.0, "ratio": 1.2, "limit": 1.5, "over": False}
    metrics = {"source": "student.int4.onnx", "bundle_bytes": 2e6, "quality_gate": gate}
    assert "GenAI" not in BundleConfig.summary(metrics)
    line = BundleConfig.summary({**metrics, "genai": {"precision": "int4", "file_bytes": 45e6,
                                                      "quality_gate": {**gate, "perplexity": 12.5, "ratio": 1.25}}})
    assert line.startswith("student.int4.onnx, 2.0 MB; validation perplexity 12 = 1.20x")
    assert line.endswith("ONNX Runtime GenAI int4 build 45.0 MB, validation perplexity 12.5 = 1.25x the teacher's")


def test_the_gate_refuses_or_warns(caplog):
    lm = BundleLMConfig(max_perplexity_ratio=1.5)
    gate = perplexity_gate("x.onnx", 14.0, 10.0, lm, 7)
    assert gate == {"perplexity": 14.0, "teacher_perplexity": 10.0, "ratio": 1.4, "limit": 1.5, "over": False,
                    "overridden": False, "windows": 7}
    with pytest.raises(ParityError, match=r"^bundle: bundle.genai-int4 has validation perplexity 16, 1.60x the "
                                          r"teacher's 10 \(limit lm.max_perplexity_ratio 1.5\)"):
        perplexity_gate("bundle.genai-int4", 16.0, 10.0, lm, 7)
    with caplog.at_level(logging.WARNING):
        gate = perplexity_gate("bundle.genai-int4", 16.0, 10.0, lm.model_copy(update={"allow_over_ratio": True}), 7)
    assert gate["over"] and gate["overridden"] and "bundle.genai-int4 is 1.60x" in caplog.text


def test_missing_onnxruntime_genai_is_named_before_any_work(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime_genai" else real(name, *a))
    # ctx=None: the check comes before the stage reads anything
    with pytest.raises(EdgekdError, match=r"^bundle lm.genai needs onnxruntime-genai .*remove lm.genai") as info:
        run_causal_lm(BundleConfig(model="x.onnx", lm={"genai": "int4"}), None)
    assert "\n" not in str(info.value)


def _genai_folder(path, size):
    path.mkdir()
    (path / "model.onnx").write_bytes(b"x" * 10)
    (path / "model.onnx.data").write_bytes(b"x" * size)
    (path / "tokenizer.json").write_text("{}")  # not a model file: not counted
    return path


def test_a_student_genai_artifact_is_a_timed_row(tmp_path):
    art = {"peer.genai-int4": Artifact("peer.genai-int4", "genai", _genai_folder(tmp_path / "p", 900), role="peer",
                                       source="teacher", precision="int4", runtime="onnxruntime-genai"),
           "bundle.genai-int4": Artifact("bundle.genai-int4", "genai", _genai_folder(tmp_path / "b", 300),
                                         role="student", source="student", precision="int4",
                                         runtime="onnxruntime-genai")}
    peer, student = plan_lm_targets(art, BenchConfig(cuda="off"))
    assert (peer.name, peer.role, peer.model, peer.file_bytes) == (
        "peer.genai-int4 onnxruntime-genai", "peer", "teacher", 910)
    assert (student.name, student.role, student.runtime, student.format, student.precision, student.model,
            student.file_bytes, student.timed) == ("bundle.genai-int4 onnxruntime-genai", "student",
                                                   "onnxruntime-genai", "genai", "int4", "student", 310, True)


def _row(name, role, fmt, size, ppl, vs=None):
    pairs = {ref: {"s": {"decode_tokens_per_s": {"median": d, "low": d - 0.1, "high": d + 0.1, "coverage": 0.9,
                                                 "n": 3},
                         "prefill": {"median": p, "low": p, "high": p, "coverage": 0.9, "n": 3}}}
             for ref, (d, p) in (vs or {}).items()}
    precision = "fp32" if role == "teacher" else "int4"
    return {"name": name, "role": role, "format": fmt, "runtime": "onnxruntime", "precision": precision,
            "device": "cpu", "rounds": 3, "file_bytes": size, "peak_rss_mb": 100.0, "perplexity": ppl,
            "speedup_vs": pairs, "agreement_with_teacher": 0.9}


def _genai_line(headline: dict, rows: list[dict]) -> str:
    lines = lm_headline_lines({"headline": headline, "rows": rows})
    return next(x for x in lines if x.startswith("- The same student built by ONNX Runtime GenAI's model builder"))


def test_headline_genai_student_block_and_line():
    teacher, peer = "teacher onnxruntime cpu", "peer.genai-int4 onnxruntime-genai"
    rows = [_row(teacher, "teacher", "onnx", 1200, 10.0, {teacher: (1.0, 1.0)}),
            _row("student.int4 onnxruntime cpu", "student", "onnx", 400, 12.0, {teacher: (3.0, 2.0), peer: (1.1, 0.9)}),
            _row(peer, "peer", "genai", 300, 10.5, {teacher: (2.5, 2.0), peer: (1.0, 1.0)}),
            _row("bundle.genai-int4 onnxruntime-genai", "student", "genai", 150, 12.5,
                 {teacher: (6.0, 2.5), peer: (2.4, 1.2)})]
    history = [{"kind": "bundle", "metrics": {"source": "student.int4.onnx"}}]
    h = lm_headline(rows, history, [teacher, peer], "s")
    g = h["genai_student"]
    assert h["student"] == "student.int4 onnxruntime cpu" and h["size_ratio"] == 3.0  # the ONNX bundle's row, as before
    assert g["name"] == "bundle.genai-int4 onnxruntime-genai" and g["decode_speedup_vs_peer"]["median"] == 2.4
    assert g["decode_speedup_vs_onnxruntime"]["median"] == 6.0 and g["prefill_speedup_vs_peer"]["median"] == 1.2
    assert (g["size_ratio"], g["size_ratio_vs_peer"], g["perplexity"], g["perplexity_ratio"]) == (8.0, 2.0, 12.5, 1.25)
    line = _genai_line(h, rows)
    assert "the peer's runtime and precision" in line and "2.40× [2.30–2.50] the peer" in line
    assert "8.00× smaller than the teacher's fp32 file, 2.00× smaller than the peer's" in line
    # Without a peer row: no *_vs_peer keys, and the line does not mention the peer.
    no_peer = [r for r in rows if r["role"] != "peer"]
    h = lm_headline(no_peer, history, [teacher], "s")
    assert "decode_speedup_vs_peer" not in h["genai_student"] and "peer" not in h
    line = _genai_line(h, no_peer)
    assert "peer" not in line and "ONNX Runtime GenAI, int4" in line
    # Without a GenAI row: no block.
    assert "genai_student" not in lm_headline(rows[:3], history, [teacher, peer], "s")
