"""Run an edgekd bundle with onnxruntime, tokenizers and numpy only (no torch, no transformers).

A bundle is a folder written by the pipeline's bundle stage:
  model.onnx      the classifier (usually int8)
  tokenizer.json  the Hugging Face fast-tokenizer file it was trained with
  labels.json     label names, in class-index order
  bundle.json     manifest: max_length, precision, the model's sha256 (checked on load), edgekd version
  model.ort, required_operators.config
                  (optional, named under "ort" in bundle.json) the same model for ONNX Runtime Mobile and the
                  operator list of a reduced build; this file keeps loading model.onnx

Copy this one file next to your application:

  from edgekd_runtime import Bundle
  clf = Bundle("path/to/bundle")
  clf.predict(["a warm, witty film"])  # -> ["fresh"]

or from a shell:  python edgekd_runtime.py path/to/bundle "a warm, witty film" "a tired mess"
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


_DEFAULT_FILES = {"model": "model.onnx", "tokenizer": "tokenizer.json", "labels": "labels.json"}


class BundleError(Exception):
    """A bundle whose files do not match its manifest (a changed or corrupted model.onnx...)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Bundle:
    def __init__(self, folder: str | Path, threads: int = 0):
        folder = Path(folder)
        manifest_path = folder / "bundle.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{folder} is not an edgekd bundle (no bundle.json)")
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from None
        if not isinstance(self.manifest, dict) or not isinstance(self.manifest.get("max_length"), int):
            raise BundleError(f"{manifest_path}: not an edgekd bundle manifest (needs an object with max_length)")
        paths = {key: folder / self.manifest.get(key, name) for key, name in _DEFAULT_FILES.items()}
        for key, path in paths.items():
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; bundle.json names it as the bundle's {key} file")
        self._check_model_hash(paths["model"], manifest_path)
        try:
            self.labels: list[str] = json.loads(paths["labels"].read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{paths['labels']}: not valid JSON ({exc})") from None
        if not isinstance(self.labels, list) or not self.labels:
            raise BundleError(f"{paths['labels']}: expected a non-empty list of label names")
        try:
            self.tokenizer = Tokenizer.from_file(str(paths["tokenizer"]))
        except Exception as exc:  # the tokenizers library raises a bare Exception for a malformed file
            raise BundleError(f"{paths['tokenizer']}: not a readable tokenizer.json ({exc})") from None
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.manifest["max_length"])
        # bundle.json records the pad id the model was trained with; older bundles only have the tokenizer's names.
        self.pad_id = self.manifest.get("pad_id")
        if self.pad_id is None:
            self.pad_id = self.tokenizer.token_to_id("[PAD]")
        if self.pad_id is None:
            self.pad_id = self.tokenizer.token_to_id("<pad>") or 0
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(paths["model"]), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        classes = self.session.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(self.labels):
            raise BundleError(f"{paths['labels']}: {len(self.labels)} labels, but the model has {classes} outputs")

    def _check_model_hash(self, model_path: Path, manifest_path: Path) -> None:
        """Refuse a model.onnx that is not the one the bundle was made with (edited, truncated, swapped)."""
        expected = self.manifest.get("model_sha256")
        if expected is None:  # bundles written before the hash was recorded
            return
        actual = _sha256(model_path)
        if actual != expected:
            raise BundleError(f"{model_path}: sha256 {actual} differs from model_sha256 {expected} in {manifest_path}; "
                              f"the model file was changed or corrupted")

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Class scores [len(texts), len(labels)], float32."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        out = []
        for start in range(0, len(texts), batch_size):
            rows = [e.ids for e in self.tokenizer.encode_batch(texts[start : start + batch_size])]
            longest = max(len(r) for r in rows)
            ids = np.full((len(rows), longest), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), longest), dtype=np.int64)
            for i, r in enumerate(rows):
                ids[i, : len(r)], mask[i, : len(r)] = r, 1
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            out.append(self.session.run(None, {k: v for k, v in feed.items() if k in self.input_names})[0])
        return np.concatenate(out).astype(np.float32)

    def predict(self, texts: list[str]) -> list[str]:
        return [self.labels[i] for i in self.logits(texts).argmax(-1)]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print("usage: python edgekd_runtime.py BUNDLE_DIR TEXT [TEXT ...]")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        bundle = Bundle(argv[0])
    except (BundleError, FileNotFoundError) as exc:
        print(f"edgekd_runtime: error: {exc}", file=sys.stderr)
        return 2
    for text, label in zip(argv[1:], bundle.predict(argv[1:])):
        print(f"{label}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
