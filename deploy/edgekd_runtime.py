"""Run an edgekd bundle with onnxruntime, tokenizers and numpy only (no torch, no transformers).

A bundle is a folder written by the pipeline's bundle stage:
  model.onnx      the classifier (usually int8)
  tokenizer.json  the Hugging Face fast-tokenizer file it was trained with
  labels.json     label names, in class-index order
  bundle.json     manifest: max_length, precision, the model's sha256, edgekd version

Copy this one file next to your application:

  from edgekd_runtime import Bundle
  clf = Bundle("path/to/bundle")
  clf.predict(["a warm, witty film"])  # -> ["fresh"]

or from a shell:  python edgekd_runtime.py path/to/bundle "a warm, witty film" "a tired mess"
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


class Bundle:
    def __init__(self, folder: str | Path, threads: int = 0):
        folder = Path(folder)
        manifest_path = folder / "bundle.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{folder} is not an edgekd bundle (no bundle.json)")
        self.manifest = json.loads(manifest_path.read_text())
        self.labels: list[str] = json.loads((folder / self.manifest["labels"]).read_text())
        self.tokenizer = Tokenizer.from_file(str(folder / self.manifest["tokenizer"]))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.manifest["max_length"])
        self.pad_id = self.tokenizer.token_to_id("[PAD]")
        if self.pad_id is None:
            self.pad_id = self.tokenizer.token_to_id("<pad>") or 0
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(folder / self.manifest["model"]), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Class scores [len(texts), len(labels)], float32."""
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
    bundle = Bundle(argv[0])
    for text, label in zip(argv[1:], bundle.predict(argv[1:])):
        print(f"{label}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
