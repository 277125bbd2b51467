"""Bench runners for on-device formats: ExecuTorch (.pte, runtime "executorch") and LiteRT (.tflite, "litert").

Imported by the worker only for those runtimes, so ONNX and PyTorch rows never load either library. Both run one
text at a time (the files are exported for batch 1): a batch of rows is a loop, so their throughput rows are batch-1
throughput. Workload as for every row: unpadded ids; LiteRT pads each text to its length bucket inside the call, and
that padding is part of its latency. Threads: ExecuTorch's XNNPACK thread pool is process-wide and a loaded method
keeps a pointer to it, so changing the count reloads the program (as the ONNX Runtime runner rebuilds its session);
LiteRT takes ``num_threads`` when its interpreter is built.
"""

from pathlib import Path

import numpy as np


class PteRunner:
    takes = "ids"

    def __init__(self, target: dict):
        from edgekd.mobile import executorch

        self.executorch, self.path, self.pad_id, self.model = executorch, target["path"], target["pad_id"], None

    def set_threads(self, threads: int) -> None:
        self.model = None  # the old method's delegate points into the pool that is about to be replaced
        self.executorch.set_threads(threads)
        self.model = self.executorch.PteModel(self.path, self.pad_id)

    def __call__(self, rows: list[np.ndarray]) -> np.ndarray:
        return np.stack([self.model(row) for row in rows])

    def sync(self) -> None:
        pass


class TfliteRunner:
    takes = "ids"

    def __init__(self, target: dict):
        from edgekd.mobile import litert

        self.litert, self.path, self.pad_id, self.model = litert, target["path"], target["pad_id"], None

    def set_threads(self, threads: int) -> None:
        self.model = None
        self.model = self.litert.TfliteModel(self.path, self.pad_id, threads)

    def __call__(self, rows: list[np.ndarray]) -> np.ndarray:
        return np.stack([self.model(row) for row in rows])

    def sync(self) -> None:
        pass


MOBILE_RUNNERS = {"executorch": PteRunner, "litert": TfliteRunner}
SUFFIX_RUNTIMES = {".pte": "executorch", ".tflite": "litert"}


def max_input_length(path: Path) -> int | None:
    """The longest input a .pte / .tflite file takes (None for other files, or a .pte without the constant)."""
    path = Path(path)
    if path.suffix == ".pte":
        from edgekd.mobile import executorch

        return executorch.PteModel(path, 0).max_length
    if path.suffix == ".tflite":
        from edgekd.mobile import litert

        return litert.TfliteModel(path, 0).buckets[-1]
    return None
