"""ONNX Runtime helpers shared by export, quantize and bench (numpy + onnxruntime only, no torch)."""

import numpy as np


def make_session(path, threads: int = 0, provider: str = "CPUExecutionProvider"):
    """A session with ``threads`` intra-op threads (0: all cores) and full graph optimisation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=[provider])


def pad_numpy(ids: list[list[int]], pad_id: int, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask as int64 [batch, length]; length defaults to the longest row."""
    length = length or max(len(x) for x in ids)
    input_ids = np.full((len(ids), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), length), dtype=np.int64)
    for row, x in enumerate(ids):
        x = x[:length]
        input_ids[row, : len(x)] = x
        mask[row, : len(x)] = 1
    return input_ids, mask


def feed(session, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
    """The graph's inputs; token_type_ids (BERT-style graphs) are all zeros for single texts."""
    names = {i.name for i in session.get_inputs()}
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "token_type_ids" in names:
        inputs["token_type_ids"] = np.zeros_like(input_ids)
    return {k: v for k, v in inputs.items() if k in names}


def length_sorted_batches(lengths, batch_size: int) -> list[np.ndarray]:
    """Row indices per batch, shortest texts first: little padding, and the same batches for every
    model (dynamic int8 scales its activations per batch, so batching is part of the result)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def ort_logits(session, ids: list[list[int]], pad_id: int, batch_size: int = 64) -> np.ndarray:
    """Logits [N, classes] for token id lists, in the order of ``ids``."""
    out = None
    for idx in length_sorted_batches([len(x) for x in ids], batch_size):
        input_ids, mask = pad_numpy([ids[i] for i in idx], pad_id)
        logits = session.run(None, feed(session, input_ids, mask))[0]
        if out is None:
            out = np.empty((len(ids), logits.shape[-1]), dtype=np.float32)
        out[idx] = logits
    return out
