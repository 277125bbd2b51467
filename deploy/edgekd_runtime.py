"""Run an edgekd bundle with tokenizers and numpy plus one runtime: onnxruntime, or LiteRT, or ExecuTorch.

A bundle is a folder written by the pipeline's bundle stage:
  model.onnx      the classifier (usually int8), run with onnxruntime
  tokenizer.json  the Hugging Face fast-tokenizer file it was trained with
  labels.json     label names, in class-index order
  bundle.json     manifest: max_length, precision, the model's sha256 (checked on load), edgekd version
and, when the run's mobile stage made them (each named under its runtime's key in bundle.json, with its sha256):
  model.ort, required_operators.config   "ort": the model for ONNX Runtime Mobile, and the operator list of a
                                         reduced-size mobile build
  model.tflite                           "litert": LiteRT, one signature per length bucket (len32, len64, ...),
                                         inputs ids and mask int32 [1, bucket]
  model.pte                              "executorch": ExecuTorch with the XNNPACK delegate, any length up to
                                         max_length; its Python runtime needs torch (on a phone: its C++ runtime)

Copy this one file next to your application:

  from edgekd_runtime import Bundle
  clf = Bundle("path/to/bundle")                      # model.onnx with onnxruntime
  clf = Bundle("path/to/bundle", runtime="litert")    # model.tflite with ai-edge-litert (no torch, no onnxruntime)
  clf.predict(["a warm, witty film"])  # -> ["fresh"]

or from a shell:  python edgekd_runtime.py [--runtime litert] path/to/bundle "a warm, witty film" "a tired mess"
Only the chosen runtime's library is imported.
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

_DEFAULT_FILES = {"model": "model.onnx", "tokenizer": "tokenizer.json", "labels": "labels.json"}
RUNTIMES = ("onnx", "ort", "litert", "executorch")
_INSTALL = {"onnx": "onnxruntime", "ort": "onnxruntime", "litert": "ai-edge-litert", "executorch": "executorch"}


class BundleError(Exception):
    """A bundle whose files do not match its manifest (a changed or corrupted model file...)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _padded(rows: list[list[int]], length: int, pad_id: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """ids and mask [len(rows), length]: each row padded with pad_id, mask 0 past its text."""
    ids = np.full((len(rows), length), pad_id, dtype=dtype)
    mask = np.zeros((len(rows), length), dtype=dtype)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    return ids, mask


class _OnnxModel:
    """model.onnx or model.ort with onnxruntime: a batch at a time, padded to its longest text, int64 inputs."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        classes = self.session.get_outputs()[0].shape[-1]
        self.classes = classes if isinstance(classes, int) else None

    def logits(self, rows: list[list[int]], pad_id: int) -> np.ndarray:
        ids, mask = _padded(rows, max(len(r) for r in rows), pad_id, np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return self.session.run(None, {k: v for k, v in feed.items() if k in self.input_names})[0]


class _LiteRTModel:
    """model.tflite with LiteRT's interpreter (XNNPACK by default): one text at a time, padded to the smallest
    length bucket that holds it."""

    def __init__(self, path: Path, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads or None)
        signatures = self.interpreter.get_signature_list()  # {"len32": {"inputs": [args_0, args_1], ...}, ...}
        lengths = {int(k[3:]): k for k in signatures if k.startswith("len") and k[3:].isdigit()}
        if not lengths:
            raise BundleError(f"{path}: no length-bucket signatures (len<N>); found {sorted(signatures)}")
        self.buckets = sorted(lengths)
        self.runners = {n: self.interpreter.get_signature_runner(k) for n, k in lengths.items()}
        self.inputs = sorted(signatures[lengths[self.buckets[0]]]["inputs"])  # args_0 = ids, args_1 = mask
        self.classes = None

    def logits(self, rows: list[list[int]], pad_id: int) -> np.ndarray:
        out = []
        for r in rows:  # the tokenizer truncates at max_length, the last bucket
            bucket = next(b for b in self.buckets if b >= len(r))
            ids, mask = _padded([r], bucket, pad_id, np.int32)
            result = self.runners[bucket](**{self.inputs[0]: ids, self.inputs[1]: mask})
            out.append(next(iter(result.values()))[0])
        return np.stack(out)


class _PteModel:
    """model.pte with ExecuTorch's runtime (XNNPACK delegate): one text at a time at its own length (at least 2)."""

    def __init__(self, path: Path, threads: int):
        import torch  # ExecuTorch's Python runtime takes and returns torch tensors
        from executorch.runtime import Runtime

        if threads:
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

            _unsafe_reset_threadpool(threads)
        self.torch = torch
        self.program = Runtime.get().load_program(str(path))  # kept alive with its method
        self.method = self.program.load_method("forward")
        self.classes = None

    def logits(self, rows: list[list[int]], pad_id: int) -> np.ndarray:
        out = []
        for r in rows:
            ids, mask = _padded([r], max(len(r), 2), pad_id, np.int64)
            out.append(self.method.execute([self.torch.from_numpy(ids), self.torch.from_numpy(mask)])[0][0].numpy())
        return np.stack(out)


_MODELS = {"onnx": _OnnxModel, "ort": _OnnxModel, "litert": _LiteRTModel, "executorch": _PteModel}


class Bundle:
    def __init__(self, folder: str | Path, threads: int = 0, runtime: str = "onnx"):
        """Load the bundle's model for ``runtime`` (onnx, ort, litert or executorch) on ``threads`` (0: the
        runtime's default)."""
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r}: must be one of {', '.join(RUNTIMES)}")
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
        self.runtime = runtime
        model_entry = self.manifest if runtime == "onnx" else self.manifest.get(runtime)
        if not isinstance(model_entry, dict) or "model" not in model_entry:
            carried = [r for r in RUNTIMES[1:] if isinstance(self.manifest.get(r), dict)]
            raise BundleError(f"{manifest_path}: no {runtime!r} entry, this bundle has a model for "
                              f"{', '.join(['onnx', *carried])}; add the target to the pipeline's mobile stage")
        paths = {key: folder / self.manifest.get(key, name) for key, name in _DEFAULT_FILES.items()}
        paths["model"] = folder / model_entry.get("model", "model.onnx")
        for key, path in paths.items():
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; bundle.json names it as the bundle's {key} file")
        self._check_model_hash(paths["model"], model_entry.get("model_sha256"), manifest_path)
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
        try:
            self.model = _MODELS[runtime](paths["model"], threads)
        except ImportError as exc:
            raise BundleError(f"runtime {runtime}: {exc.name or exc} is not installed; pip install "
                              f"{_INSTALL[runtime]}") from None
        if self.model.classes is not None and self.model.classes != len(self.labels):
            raise BundleError(f"{paths['labels']}: {len(self.labels)} labels, but the model has {self.model.classes} "
                              "outputs")

    @staticmethod
    def _check_model_hash(model_path: Path, expected: str | None, manifest_path: Path) -> None:
        """Refuse a model file that is not the one the bundle was made with (edited, truncated, swapped)."""
        if expected is None:  # bundles written before the hash was recorded
            return
        actual = _sha256(model_path)
        if actual != expected:
            raise BundleError(f"{model_path}: sha256 {actual} differs from the model_sha256 {expected} in "
                              f"{manifest_path}; the model file was changed or corrupted")

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Class scores [len(texts), len(labels)], float32."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        out = []
        for start in range(0, len(texts), batch_size):
            rows = [e.ids for e in self.tokenizer.encode_batch(texts[start : start + batch_size])]
            out.append(self.model.logits(rows, self.pad_id))
        return np.concatenate(out).astype(np.float32)

    def predict(self, texts: list[str]) -> list[str]:
        return [self.labels[i] for i in self.logits(texts).argmax(-1)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgekd_runtime.py", description="Classify texts with an edgekd bundle: "
                                     "prints one 'label<TAB>text' line per text.",
                                     epilog="A text that starts with '-' goes after --: edgekd_runtime.py BUNDLE -- "
                                     "'-not- bad'")
    parser.add_argument("bundle", help="the bundle folder (holds bundle.json)")
    parser.add_argument("texts", nargs="+", metavar="TEXT")
    parser.add_argument("--runtime", choices=RUNTIMES, default="onnx", help="which of the bundle's models to run: "
                        "onnx (model.onnx, default), ort (model.ort), litert (model.tflite), executorch (model.pte)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: the runtime's default)")
    args = parser.parse_args(argv)
    try:
        bundle = Bundle(args.bundle, threads=args.threads, runtime=args.runtime)
    except (BundleError, FileNotFoundError) as exc:
        print(f"edgekd_runtime: error: {exc}", file=sys.stderr)
        return 2
    for text, label in zip(args.texts, bundle.predict(args.texts)):
        print(f"{label}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
