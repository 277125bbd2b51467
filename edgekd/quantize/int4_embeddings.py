"""The word-embedding table as 4-bit blocks (quantize option ``embedding_bits: 4``).

In a small encoder the word embeddings [vocab, hidden] are the largest tensor (25.2k x 320 in the default student,
about 70% of its int8 bytes; 4-bit blocks with one fp32 scale per 32 weights take 5 bits a weight instead of 8). They are only looked up, never multiplied, so ONNX Runtime's contrib op
GatherBlockQuantized can read them as 4-bit values: each row split in blocks of 32 along hidden, one fp32 scale
per block. The table is stored as uint8 with two values per byte (low nibble first) and the op's implicit zero
point 8, which keeps the graph at its opset and IR version and lets the ORT mobile format hold it too.
"""

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgekd.errors import ConfigError
from edgekd.quantize.core import Quantizer, QuantizeResult

EMBEDDING_BLOCK = 32  # weights per block along hidden; a divisor of every width multiple_of: 32 prunes to
MS_DOMAIN = "com.microsoft"


def word_embedding_gather(graph_path: Path) -> str | None:
    """Name of the Gather that reads the largest float table: the word embeddings [vocab, hidden]."""
    import onnx

    graph = onnx.load(str(graph_path), load_external_data=False).graph
    sizes = {t.name: int(np.prod(t.dims)) for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    tables = [(sizes[n.input[0]], n.name) for n in graph.node if n.op_type == "Gather" and n.input[0] in sizes]
    return max(tables)[1] if tables else None


CLIP_RATIOS = np.linspace(0.6, 1.0, 21)  # scale = ratio * max|w| / 7, the ratio with the least squared error wins


def int4_blocks(table: np.ndarray, block: int = EMBEDDING_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric 4-bit blocks of ``table`` [rows, hidden]: (packed uint8 [rows, hidden/2], scales fp32 [rows, hidden/block]).

    value = (nibble - 8) * scale, nibble in 0..15. Each block's scale is searched: clipping its few largest weights
    (ratio < 1) buys finer steps for the rest, which lowers the block's squared error (on the default student's
    table the relative RMS error falls from 9.7% at max|w| / 7 to 8.6%). An all-zero block (the padding token's row)
    stays exactly zero.
    """
    rows, hidden = table.shape
    blocks = table.astype(np.float32).reshape(rows, hidden // block, block)
    amax = np.abs(blocks).max(-1, keepdims=True)  # [rows, hidden/block, 1]
    best_err = np.full(amax.shape, np.inf, dtype=np.float32)
    scales = np.zeros_like(amax)
    for ratio in CLIP_RATIOS:
        scale = np.where(amax == 0, 1.0, amax * ratio / 7.0)
        err = ((np.clip(np.round(blocks / scale), -8, 7) * scale - blocks) ** 2).sum(-1, keepdims=True)
        better = err < best_err
        scales, best_err = np.where(better, scale, scales), np.where(better, err, best_err)
    scales = np.where(amax == 0, 0.0, scales)
    safe = np.where(scales == 0, 1.0, scales)
    nibbles = (np.clip(np.round(blocks / safe), -8, 7) + 8).astype(np.uint8).reshape(rows, hidden)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4), scales[..., 0].astype(np.float32)


def quantize_gather_int4(path: Path, node: str, block_size: int = EMBEDDING_BLOCK) -> None:
    """Rewrite the Gather ``node`` of the ONNX file ``path`` in place as GatherBlockQuantized over 4-bit blocks."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    gather = next(n for n in graph.node if n.name == node)
    inits = {t.name: t for t in graph.initializer}
    table = numpy_helper.to_array(inits[gather.input[0]])  # [vocab, hidden] fp32
    if table.ndim != 2 or table.shape[1] % block_size:
        raise ConfigError(f"quantize.embedding_bits: 4 needs the embedding width to be a multiple of {block_size}; "
                          f"{gather.input[0]} is {list(table.shape)} (prune with multiple_of: {block_size})")
    packed, scales = int4_blocks(table, block_size)
    graph.initializer.remove(inits[gather.input[0]])
    graph.initializer.extend([numpy_helper.from_array(packed, f"{gather.input[0]}_q4"),
                              numpy_helper.from_array(scales, f"{gather.input[0]}_q4_scales")])
    new = helper.make_node("GatherBlockQuantized", [f"{gather.input[0]}_q4", gather.input[1],
                                                    f"{gather.input[0]}_q4_scales"],
                           list(gather.output), name=f"{node}_q4", domain=MS_DOMAIN, gather_axis=0, quantize_axis=1,
                           block_size=block_size, bits=4)
    position = list(graph.node).index(gather)
    graph.node.remove(gather)
    graph.node.insert(position, new)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save(model, str(path))


def has_int4_table(path: Path) -> bool:
    """Whether the ONNX file at ``path`` reads a table through GatherBlockQuantized (4-bit blocks)."""
    import onnx

    return any(n.op_type == "GatherBlockQuantized" for n in onnx.load(str(path), load_external_data=False).graph.node)


def with_int4_embeddings(graph: Path, quantize: Quantizer) -> Quantizer:
    """``quantize`` with the word-embedding Gather of ``graph`` left out of int8 and stored as 4-bit blocks after.

    Excluding that node (e.g. by the accuracy guard) keeps it fp32, as for any other node.
    """
    node = word_embedding_gather(graph)
    if node is None:
        raise ConfigError(f"quantize.embedding_bits: 4: {graph} has no Gather of a float table (word embeddings)")

    def quantize_with_int4_table(dst: Path, exclude: Sequence[str] = ()) -> QuantizeResult:
        start = time.perf_counter()
        result = quantize(dst, list(exclude) if node in exclude else [*exclude, node])
        if node not in exclude:
            quantize_gather_int4(dst, node)
        return QuantizeResult(result.path, result.mode, time.perf_counter() - start)

    return quantize_with_int4_table
