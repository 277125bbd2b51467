"""data_parallel: fsdp — the config field (left out of dumps at its default, so cache keys stay), the units
FSDP shards, and the one-line refusals before anything is sharded. (Two gloo ranks training sharded:
tests/integration/test_ddp.py.)"""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from edgekd.config import validate_pipeline
from edgekd.distill.config import DistillConfig
from edgekd.distributed import sharded_copy, sharding_units
from edgekd.errors import ConfigError
from edgekd.teacher.config import TeacherConfig
from tests.conftest import make_tiny_model_dir
from tests.lm_fixtures import make_tiny_causal_lm_dir


def test_the_default_stays_out_of_dumps_and_fsdp_is_kept():
    assert "data_parallel" not in TeacherConfig().model_dump() and "data_parallel" not in DistillConfig().model_dump()
    assert TeacherConfig(data_parallel="fsdp").model_dump()["data_parallel"] == "fsdp"
    # the omission adds to a subclass's own (DistillConfig leaves out `lm` too)
    assert "lm" not in DistillConfig(data_parallel="fsdp").model_dump()


def test_an_unknown_strategy_names_the_field():
    with pytest.raises(ConfigError) as info:
        validate_pipeline({"stages": [{"kind": "teacher", "data_parallel": "zero3"}]})
    assert "teacher.data_parallel" in str(info.value) and "'ddp' or 'fsdp'" in str(info.value)
    assert "\n" not in str(info.value)


def test_units_are_the_transformer_blocks(tmp_path):
    lm = AutoModelForCausalLM.from_pretrained(make_tiny_causal_lm_dir(tmp_path / "lm"))
    assert [type(u).__name__ for u in sharding_units(lm)] == ["LlamaDecoderLayer"] * lm.config.num_hidden_layers
    bert = AutoModelForSequenceClassification.from_pretrained(make_tiny_model_dir(tmp_path / "bert", "bert"))
    # transformers 4 BERT names no _no_split_modules (its encoder's layer list is the stack); 5 names its
    # embeddings too. Either way every layer is a unit of its own.
    names = [type(u).__name__ for u in sharding_units(bert)]
    assert names.count("BertLayer") == bert.config.num_hidden_layers and set(names) <= {"BertLayer", "BertEmbeddings"}


def test_refusals_come_before_any_sharding(tmp_path):
    lm = AutoModelForCausalLM.from_pretrained(make_tiny_causal_lm_dir(tmp_path / "lm"))
    with pytest.raises(ConfigError, match=r"^data_parallel: fsdp shards the trained model only; .* need "
                                          r"data_parallel: ddp$"):
        sharded_copy(lm, [torch.nn.Linear(4, 4)], torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"^data_parallel: fsdp needs the model's transformer blocks \(Sequential "):
        sharded_copy(torch.nn.Sequential(torch.nn.Linear(4, 4)), [], torch.device("cpu"))
