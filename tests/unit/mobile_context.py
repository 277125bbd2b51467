"""A stage context for the mobile targets that convert the PyTorch student (ExecuTorch, LiteRT)."""

import json

from edgekd.artifacts import Artifact
from edgekd.mobile import stage as mobile_stage
from edgekd.stage_context import StageContext
from tests.conftest import build_tokenizer, make_texts


def pytorch_student_context(hf, pad: int, tmp_path, max_length: int) -> StageContext:
    """A run with the PyTorch student only; every split's labels are its own predictions."""
    tok = build_tokenizer(tmp_path / "tok")
    texts = [t for t, _ in make_texts(48, seed=11)]
    labels = mobile_stage._pytorch_logits(hf, tok(texts, truncation=True, max_length=max_length)["input_ids"],
                                          pad).argmax(-1).tolist()
    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.json").write_text(json.dumps(["fresh", "rotten"]))
    for name in ("train", "validation", "test"):
        (data / f"{name}.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                                                    for t, y in zip(texts, labels)))
    arts = {"student": Artifact("student", "hf-model", hf, role="student", tokenizer=hf, pad_id=pad,
                                task="text-classification")}
    return StageContext(settings={"max_length": max_length}, out=tmp_path / "out", data_dir=data, artifacts=arts)
