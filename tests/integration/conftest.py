import pytest
import yaml

from tests.conftest import make_tiny_model_dir

# A complete pipeline on a tiny random BERT and 400 synthetic reviews: every stage, real runtimes.
TINY_STAGES = [
    {"kind": "teacher", "epochs": 4, "batch_size": 16, "learning_rate": 0.002, "patience": 4, "warmup_ratio": 0.1},
    {"kind": "prune", "head_ratio": 0.5, "ffn_ratio": 0.5, "layer_ratio": 0.5, "calibration_batches": 2},
    {"kind": "distill", "epochs": 2, "batch_size": 16, "learning_rate": 0.002, "beta": 1.0, "gamma": 1.0},
    {"kind": "export", "models": ["teacher", "student"]},
    {"kind": "quantize", "models": ["student"], "modes": ["dynamic", "static"], "calibration_examples": 64},
    {"kind": "bundle", "model": "student.int8-dynamic.onnx"},
    {"kind": "bench", "rounds": 3, "sample": 20, "warmup": 2, "fixed_runs": 3, "throughput_batches": 2,
     "throughput_batch": 8},
    {"kind": "report"},
]


def write_pipeline(path, model_dir, data_path, out_dir, stages=TINY_STAGES, **extra):
    config = {"name": "tiny", "seed": 0, "output_dir": str(out_dir),
              "model": {"source": str(model_dir), "max_length": 32},
              "data": {"source": str(data_path), "validation_fraction": 0.15, "test_fraction": 0.2},
              "stages": stages, **extra}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"), "bert")
