"""Logits of ONNX / LiteRT classifiers on pre-tokenised texts: the half of ``arm_check.py`` that runs twice.

    python benchmarks/arm_infer.py --job job.json --out-dir DIR

arm_check.py runs this same file once under qemu-aarch64 (the emulated Debian arm64 python with the aarch64 wheels of
onnxruntime / ai-edge-litert, so their Arm kernels run) and once with the host's python, then compares the two.
It must therefore import neither torch nor edgekd (neither is in the arm64 root): only numpy and the runtime of each
model. The padding of a bucketed .tflite is copied from edgekd/mobile/litert.py (TfliteModel) and graph.py (padded).

job.json: {"threads": 1, "models": [{"name": ..., "path": ..., "ids": inputs.npz, "pad_id": 0}, ...]}; each ids file
holds real_ids / real_offsets (the rows, ragged and concatenated, like the bench's inputs.npz). Writes DIR/<i>.npz
(logits [N, classes] float32, model i of the job) and DIR/info.json (platform.machine() as this python sees it and
the runtime versions). A model that cannot be run exits 2 with one line naming it.
"""

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

LITERT_PREFIX = "len"  # bucket signatures of edgekd's .tflite: len32, len64, len128 (edgekd/mobile/litert.py PREFIX)


def padded(ids: np.ndarray, length: int, pad_id: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """One text as ids and mask [1, length]: padded with ``pad_id`` and mask 0 past the text (graph.py padded)."""
    x = np.full((1, length), pad_id, dtype=dtype)
    m = np.zeros((1, length), dtype=dtype)
    x[0, : len(ids)] = ids
    m[0, : len(ids)] = 1
    return x, m


def onnx_logits(path: str, rows: list[np.ndarray], threads: int) -> np.ndarray:
    """Batch 1, unpadded (as the bench runs it); token_type_ids all zero when the graph has them."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inputs = {i.name: (np.int32 if "int32" in i.type else np.int64) for i in session.get_inputs()}
    out = []
    for row in rows:
        x = row[None, :]  # [1, T]
        feed = {"input_ids": x, "attention_mask": np.ones_like(x), "token_type_ids": np.zeros_like(x)}
        out.append(session.run(None, {k: feed[k].astype(t) for k, t in inputs.items()})[0][0])  # logits [C]
    return np.stack(out)


def tflite_logits(path: str, rows: list[np.ndarray], pad_id: int, threads: int) -> np.ndarray:
    """Each text in the smallest length bucket (signature lenN) that holds it, or in the one fixed-length signature
    of a file without buckets; padded with the pad id and mask 0. Inputs are int32 (args_0 = ids, args_1 = mask)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)  # XNNPACK applied by default
    signatures = interpreter.get_signature_list()  # {"len32": {"inputs": [...], "outputs": [...]}, ...}
    lengths = {int(k[len(LITERT_PREFIX):]): k for k in signatures
               if k.startswith(LITERT_PREFIX) and k[len(LITERT_PREFIX):].isdigit()}
    if not lengths:
        if len(signatures) != 1:
            raise ValueError(f"no length-bucket signatures (lenN) and {len(signatures)} others: {sorted(signatures)}")
        key = next(iter(signatures))
        shape = interpreter.get_signature_runner(key).get_input_details()[signatures[key]["inputs"][0]]["shape"]
        lengths = {int(shape[1]): key}  # one fixed length, e.g. [1, 128]
    buckets = sorted(lengths)
    runners = {n: interpreter.get_signature_runner(k) for n, k in lengths.items()}
    names = sorted(signatures[lengths[buckets[0]]]["inputs"])  # args_0, args_1
    out = []
    for row in rows:
        bucket = next((b for b in buckets if b >= len(row)), None)
        if bucket is None:
            raise ValueError(f"a text of {len(row)} tokens is longer than the largest bucket ({buckets[-1]})")
        x, m = padded(row, bucket, pad_id, np.int32)
        result = runners[bucket](**{names[0]: x, names[1]: m})
        out.append(next(iter(result.values()))[0].copy())  # logits [C]
    return np.stack(out)


def load_rows(path: str) -> list[np.ndarray]:
    with np.load(path) as data:
        return np.split(data["real_ids"].astype(np.int64), data["real_offsets"][1:-1])


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("onnxruntime", "ai-edge-litert"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", required=True, help="job.json written by arm_check.py")
    parser.add_argument("--out-dir", required=True, help="folder for <i>.npz logits and info.json")
    args = parser.parse_args()
    job = json.loads(Path(args.job).read_text())
    out_dir = Path(args.out_dir)
    threads = int(job.get("threads", 1))
    for i, model in enumerate(job["models"]):
        rows = load_rows(model["ids"])
        try:
            if model["path"].endswith((".onnx", ".ort")):
                logits = onnx_logits(model["path"], rows, threads)
            elif model["path"].endswith(".tflite"):
                logits = tflite_logits(model["path"], rows, int(model.get("pad_id") or 0), threads)
            else:
                raise ValueError("unknown format: use .onnx, .ort or .tflite")
        except Exception as exc:  # one line for the caller: which model, on which machine, why
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            print(f"{model['path']}: cannot run on {platform.machine()} ({type(exc).__name__}: {first})",
                  file=sys.stderr)
            return 2
        np.savez(out_dir / f"{i}.npz", logits=logits.astype(np.float32))
    (out_dir / "info.json").write_text(json.dumps({"machine": platform.machine(), "versions": versions()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
