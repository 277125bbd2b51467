from pathlib import Path

import pytest

from edgekd.config import load_pipeline, validate_pipeline
from edgekd.errors import ConfigError

PIPELINES = sorted((Path(__file__).parents[2] / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", PIPELINES, ids=[p.name for p in PIPELINES])
def test_every_shipped_pipeline_validates(path):
    config = load_pipeline(path)
    assert config.stages


def test_shipped_pipelines_exist():
    assert any(p.name == "minilm-rotten-tomatoes.yaml" for p in PIPELINES)


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_pipeline(data)
    return str(info.value)


def test_unknown_stage_key_names_field_and_allowed_keys():
    msg = _error({"stages": [{"kind": "teacher", "epochz": 1}]})
    assert "stages.0.teacher.epochz: unknown key" in msg
    assert "epochs" in msg and "learning_rate" in msg


def test_unknown_top_level_key():
    msg = _error({"modle": {}, "stages": [{"kind": "teacher"}]})
    assert "modle: unknown key" in msg and "model" in msg


def test_out_of_range_ratio_names_field_and_value():
    msg = _error({"stages": [{"kind": "teacher"}, {"kind": "prune", "head_ratio": 1.5}]})
    assert "stages.1.prune.head_ratio" in msg and "1.5" in msg


def test_wrong_literal_lists_allowed_values():
    msg = _error({"stages": [{"kind": "teacher", "device": "tpu"}]})
    assert "'auto', 'cpu' or 'cuda'" in msg


def test_unknown_stage_kind_lists_kinds():
    msg = _error({"stages": [{"kind": "teachr"}]})
    assert "unknown stage kind 'teachr'" in msg and "distill" in msg


def test_stage_order_that_cannot_work():
    msg = _error({"stages": [{"kind": "teacher"}, {"kind": "quantize"}]})
    assert "quantize" in msg and "student.onnx" in msg


def test_duplicate_stage_kind_rejected():
    assert "more than once" in _error({"stages": [{"kind": "teacher"}, {"kind": "teacher"}]})


def test_overrides_by_kind_and_index(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("stages:\n  - kind: teacher\n  - kind: prune\n")
    config = load_pipeline(path, ["stages.teacher.epochs=1", "stages.1.head_ratio=0.25", "seed=7"])
    assert config.stages[0].epochs == 1 and config.stages[1].head_ratio == 0.25 and config.seed == 7


def test_bad_override_is_revalidated(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("stages:\n  - kind: teacher\n")
    with pytest.raises(ConfigError, match="epochs"):
        load_pipeline(path, ["stages.teacher.epochs=-1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_pipeline(path, ["stages.teacher.epochs"])
    with pytest.raises(ConfigError, match="no stage 'distill'"):
        load_pipeline(path, ["stages.distill.alpha=0.1"])


def test_missing_pipeline_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline(tmp_path / "nope.yaml")


def test_an_override_error_blames_the_override_not_the_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("stages:\n  - kind: teacher\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, ["stages.teacher.epochs=-1"])
    assert str(info.value).startswith("override stages.teacher.epochs=-1:") and "epochs" in str(info.value)
    path.write_text("stages:\n  - kind: teacher\n    epochz: 1\n")
    with pytest.raises(ConfigError, match=f"^{path}: .*epochz"):
        load_pipeline(path, ["seed=1"])


def test_a_bench_without_any_model_before_it_is_refused():
    msg = _error({"stages": [{"kind": "bench"}]})
    assert "bench" in msg and "no model to measure" in msg


def test_report_latency_setting_must_be_one_the_bench_measures():
    stages = [{"kind": "teacher"}, {"kind": "bench", "threads": [1]}, {"kind": "report", "latency_setting": "real_b1_t4"}]
    msg = _error({"stages": stages})
    assert "real_b1_t4" in msg and "real_b1_t1" in msg
    stages[2]["latency_setting"] = "fixed128_b1_t1"
    assert validate_pipeline({"stages": stages}).stages[2].latency_setting == "fixed128_b1_t1"


def test_bench_thread_counts_must_be_usable():
    assert "threads" in _error({"stages": [{"kind": "teacher"}, {"kind": "bench", "threads": [1, 1]}]})
    assert "threads" in _error({"stages": [{"kind": "teacher"}, {"kind": "bench", "threads": [-2]}]})


def test_readme_compression_options_are_real_config():
    """The README's options block must stay valid: every key it shows exists with an allowed value."""
    import yaml

    from edgekd.stages import STAGES

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Compression options", 1)[1]
    block = section.split("```yaml", 1)[1].split("```", 1)[0]
    stages = yaml.safe_load(block)
    assert [s["kind"] for s in stages] == ["prune", "distill", "vocab", "quantize", "mobile", "peer", "ablation"]
    for stage in stages:
        STAGES[stage["kind"]].config.model_validate(stage)  # raises on an unknown key or a bad value
