"""The teacher stage used without fine-tuning never serves a head whose labels mean something else."""

import json

import pytest
from transformers import AutoModelForSequenceClassification

from edgekd.errors import ConfigError
from edgekd.stage_context import StageContext
from edgekd.teacher import stage as teacher_stage
from edgekd.teacher.config import TeacherConfig
from tests.conftest import build_tokenizer, make_texts, tiny_config


def _splits_dir(folder):
    folder.mkdir()
    labels = ["fresh", "rotten"]
    (folder / "labels.json").write_text(json.dumps(labels))
    rows = [{"text": t, "label": labels.index(y)} for t, y in make_texts(30)]
    for name in ("train", "validation", "test"):
        (folder / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


@pytest.mark.parametrize("saved, allowed", [(["fresh", "rotten"], True), (["rotten", "fresh"], False)])
def test_finetune_false_checks_the_loaded_head_even_without_preflight(tmp_path, saved, allowed):
    folder = tmp_path / "model"
    model = AutoModelForSequenceClassification.from_config(tiny_config("bert"))
    model.config.id2label, model.config.label2id = dict(enumerate(saved)), {n: i for i, n in enumerate(saved)}
    model.save_pretrained(folder)
    build_tokenizer(folder)
    ctx = StageContext(settings={"model_source": str(folder), "max_length": 32, "seed": 0}, out=tmp_path / "out",
                       data_dir=_splits_dir(tmp_path / "data"), artifacts={})
    if allowed:
        teacher_stage.run(TeacherConfig(finetune=False), ctx)
        assert ctx.outputs["teacher"].role == "teacher"
    else:
        with pytest.raises(ConfigError, match="another order"):
            teacher_stage.run(TeacherConfig(finetune=False), ctx)
