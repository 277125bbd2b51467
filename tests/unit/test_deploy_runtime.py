"""deploy/edgekd_runtime.py on a hand-made bundle: empty input, missing files, a changed model file."""

import ast
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekd.export.config import ExportConfig
from edgekd.export.core import export_onnx
from edgekd.models import load_classifier
from tests.conftest import build_tokenizer, make_texts

RUNTIME = Path(__file__).parents[2] / "deploy" / "edgekd_runtime.py"
LABELS = ["fresh", "rotten"]


def _load_runtime():
    spec = importlib.util.spec_from_file_location("edgekd_runtime_under_test", RUNTIME)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rt = _load_runtime()


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, tiny_bert_dir):
    """model.onnx (torch exporter), tokenizer.json, labels.json and bundle.json, as the bundle stage writes them."""
    folder = tmp_path_factory.mktemp("bundle")
    model = load_classifier(str(tiny_bert_dir), attn_implementation="eager")
    onnx_path = export_onnx(model, folder / "export", ExportConfig(exporter="torch")).path
    shutil.copyfile(onnx_path, folder / "model.onnx")
    shutil.rmtree(folder / "export")
    build_tokenizer(folder / "tok").save_pretrained(folder / "tok")
    shutil.copyfile(folder / "tok" / "tokenizer.json", folder / "tokenizer.json")
    shutil.rmtree(folder / "tok")
    (folder / "labels.json").write_text(json.dumps(LABELS))
    manifest = {"format": "edgekd-bundle", "version": 1, "model": "model.onnx", "tokenizer": "tokenizer.json",
                "labels": "labels.json", "max_length": 32, "precision": "fp32",
                "model_sha256": hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()}
    (folder / "bundle.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def bundle_copy(tmp_path, bundle_dir):
    return shutil.copytree(bundle_dir, tmp_path / "bundle")


def test_predicts_labels_of_the_bundle(bundle_dir):
    texts = [t for t, _ in make_texts(5)]
    bundle = rt.Bundle(bundle_dir)
    assert set(bundle.predict(texts)) <= set(LABELS)
    logits = bundle.logits(texts, batch_size=2)
    assert logits.shape == (5, 2) and logits.dtype == np.float32


def test_empty_input(bundle_dir):
    bundle = rt.Bundle(bundle_dir)
    assert bundle.predict([]) == []
    empty = bundle.logits([])
    assert empty.shape == (0, len(LABELS)) and empty.dtype == np.float32


@pytest.mark.parametrize("name, role", [("tokenizer.json", "tokenizer"), ("labels.json", "labels"),
                                        ("model.onnx", "model")])
def test_missing_file_is_named(bundle_copy, name, role):
    (bundle_copy / name).unlink()
    with pytest.raises(FileNotFoundError) as info:
        rt.Bundle(bundle_copy)
    message = str(info.value)
    assert str(bundle_copy / name) in message and "missing" in message and f"bundle's {role} file" in message


def test_changed_model_file_is_refused(bundle_copy):
    expected = json.loads((bundle_copy / "bundle.json").read_text())["model_sha256"]
    with open(bundle_copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    actual = hashlib.sha256((bundle_copy / "model.onnx").read_bytes()).hexdigest()
    with pytest.raises(rt.BundleError) as info:
        rt.Bundle(bundle_copy)
    message = str(info.value)
    assert "model.onnx" in message and "bundle.json" in message
    assert f"sha256 {actual}" in message and f"model_sha256 {expected}" in message


def test_bundle_without_a_recorded_hash_still_loads(bundle_copy):
    manifest = json.loads((bundle_copy / "bundle.json").read_text())
    del manifest["model_sha256"]
    (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
    assert rt.Bundle(bundle_copy).predict(["a warm film"])[0] in LABELS


def test_command_line_prints_one_line_error(bundle_copy, capsys):
    (bundle_copy / "tokenizer.json").unlink()
    assert rt.main([str(bundle_copy), "a warm film"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgekd_runtime: error:") and "tokenizer.json" in err[0]


def test_runtime_imports_no_torch_or_transformers():
    """At module level only tokenizers and numpy; each runtime's library is imported when that runtime is asked for."""
    tree = ast.parse(RUNTIME.read_text())
    top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert top <= {"argparse", "hashlib", "json", "sys", "pathlib", "numpy", "tokenizers"}, top


def test_an_onnx_bundle_runs_with_torch_and_transformers_unimportable(bundle_dir):
    code = ("import sys; sys.modules.update(torch=None, transformers=None, ai_edge_litert=None); "
            f"sys.path.insert(0, {str(RUNTIME.parent)!r}); from edgekd_runtime import Bundle; "
            f"print(Bundle({str(bundle_dir)!r}).predict(['a warm film'])[0])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() in LABELS


def test_a_runtime_the_bundle_lacks_names_what_it_carries(bundle_dir, capsys):
    with pytest.raises(rt.BundleError, match="no 'litert' entry, this bundle has a model for onnx;"):
        rt.Bundle(bundle_dir, runtime="litert")
    with pytest.raises(ValueError, match="runtime 'tflite': must be one of onnx, ort, litert, executorch"):
        rt.Bundle(bundle_dir, runtime="tflite")
    assert rt.main(["--runtime", "executorch", str(bundle_dir), "a warm film"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no 'executorch' entry" in err[0]


def test_damaged_labels_manifest_or_tokenizer_are_one_line_errors(tmp_path, bundle_dir):
    cases = {"labels.json": ("[broken", "labels.json: not valid JSON"),
             "tokenizer.json": ("{}", "not a readable tokenizer.json")}
    for name, (content, needle) in cases.items():
        copy = tmp_path / name
        shutil.copytree(bundle_dir, copy)
        (copy / name).write_text(content)
        with pytest.raises(rt.BundleError, match=needle):
            rt.Bundle(copy)
    short = tmp_path / "short"
    shutil.copytree(bundle_dir, short)
    (short / "labels.json").write_text('["only"]')
    with pytest.raises(rt.BundleError, match="1 labels, but the model has 2 outputs"):
        rt.Bundle(short)
