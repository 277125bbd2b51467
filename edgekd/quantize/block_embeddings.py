"""Embedding tables as quantized blocks (quantize option ``embedding_bits: 4``).

In a small encoder the word embeddings [vocab, hidden] are the largest tensor (25.2k x 320 in the default student,
about 70% of its int8 bytes). Tables are only looked up, never multiplied, so ONNX Runtime's contrib op
GatherBlockQuantized can read them as blocks of 4- or 8-bit values along hidden, one scale per block:
- the word table as 4-bit blocks of 16 with fp16 scales (4 + 1 bits a weight, the size of blocks of 32 with fp32
  scales, with finer steps); stored as uint8 with two values per byte (low nibble first) and the op's implicit zero
  point 8;
- every other table of at least ``MIN_TABLE_ROWS`` rows (the position embeddings) as 8-bit blocks of 32 with an
  explicit zero point 128, instead of quantize_dynamic's one int8 scale for the whole table; the token-type table
  (2 rows) stays as int8 leaves it.
Why these two: in a validation-only spike on the default student, they were the largest sources of predictions
flipped against fp32. On the committed runs the int8 student's validation agreement with PyTorch rose (the mobile
stage's metrics), its test agreement did not (the bench rows): see benchmarks/results/2026-11-26T142751 and T145227.
The graph keeps its opset and IR version (the op is in the com.microsoft domain), so the ORT mobile format holds it.
"""

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgekd.errors import ConfigError
from edgekd.quantize.core import Quantizer, QuantizeResult

WORD_BLOCK = 16  # 4-bit word table: weights per block along hidden (a divisor of every width multiple_of: 32 prunes to)
TABLE_BLOCK = 32  # 8-bit blocks of the other tables
MIN_TABLE_ROWS = 64  # smaller tables (token types) are left to int8: too few bytes to matter
MS_DOMAIN = "com.microsoft"


def embedding_gathers(graph_path: Path) -> tuple[str | None, list[str]]:
    """(the Gather reading the largest float table: the word embeddings [vocab, hidden]; the Gathers of the other
    float tables with at least MIN_TABLE_ROWS rows, e.g. the position embeddings [positions, hidden])."""
    import onnx

    graph = onnx.load(str(graph_path), load_external_data=False).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    tables = sorted(((int(np.prod(shapes[n.input[0]])), n.name, shapes[n.input[0]]) for n in graph.node
                     if n.op_type == "Gather" and n.input[0] in shapes and len(shapes[n.input[0]]) == 2), reverse=True)
    if not tables:
        return None, []
    return tables[0][1], [name for _, name, shape in tables[1:] if shape[0] >= MIN_TABLE_ROWS]


CLIP_RATIOS = np.linspace(0.6, 1.0, 21)  # scale = ratio * max|w| / 7, the ratio with the least squared error wins


def int4_blocks(table: np.ndarray, block: int = WORD_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric 4-bit blocks of ``table`` [rows, hidden]: (packed uint8 [rows, hidden/2], scales fp32 [rows, hidden/block]).

    value = (nibble - 8) * scale, nibble in 0..15. Each block's scale is searched: clipping its few largest weights
    (ratio < 1) buys finer steps for the rest, which lowers the block's squared error. An all-zero block (the
    padding token's row) stays exactly zero.
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


def int8_blocks(table: np.ndarray, block: int = TABLE_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric 8-bit blocks of ``table`` [rows, hidden]: (uint8 [rows, hidden], scales fp32 [rows, hidden/block]);
    value = (q - 128) * scale with scale = max|w| / 127 (an all-zero block keeps scale 0)."""
    rows, hidden = table.shape
    blocks = table.astype(np.float32).reshape(rows, hidden // block, block)
    scales = np.abs(blocks).max(-1) / 127.0  # [rows, hidden/block]
    safe = np.where(scales == 0, 1.0, scales)[..., None]
    q = (np.clip(np.round(blocks / safe), -127, 127) + 128).astype(np.uint8).reshape(rows, hidden)
    return q, scales.astype(np.float32)


def quantize_gather_blocks(path: Path, node: str, bits: int, block_size: int, fp16_scales: bool = False) -> None:
    """Rewrite the Gather ``node`` of the ONNX file ``path`` in place as GatherBlockQuantized over ``bits``-bit blocks
    (4: packed nibbles, zero point 8 implied; 8: zero point 128 given). With ``fp16_scales`` the op reads fp16 scales
    and returns fp16, so a Cast back to float follows it."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    gather = next(n for n in graph.node if n.name == node)
    inits = {t.name: t for t in graph.initializer}
    name = gather.input[0]
    table = numpy_helper.to_array(inits[name])  # [rows, hidden] fp32
    if table.ndim != 2 or table.shape[1] % block_size:
        raise ConfigError(f"quantize.embedding_bits: 4 needs embedding widths that are multiples of {block_size}; "
                          f"{name} is {list(table.shape)} (prune with multiple_of: 32)")
    data, scales = int4_blocks(table, block_size) if bits == 4 else int8_blocks(table, block_size)
    tag = f"{name}_q{bits}"
    new_inits = [numpy_helper.from_array(data, tag),
                 numpy_helper.from_array(scales.astype(np.float16 if fp16_scales else np.float32), f"{tag}_scales")]
    inputs = [tag, gather.input[1], f"{tag}_scales"]
    if bits == 8:  # uint8 data: the op's default zero point would be 0, the blocks are symmetric around 128
        new_inits.append(numpy_helper.from_array(np.full(scales.shape, 128, np.uint8), f"{tag}_zero_points"))
        inputs.append(f"{tag}_zero_points")
    output = gather.output[0]
    new = [helper.make_node("GatherBlockQuantized", inputs, [f"{output}_fp16" if fp16_scales else output],
                            name=f"{node}_q{bits}", domain=MS_DOMAIN, gather_axis=0, quantize_axis=1,
                            block_size=block_size, bits=bits)]
    if fp16_scales:
        new.append(helper.make_node("Cast", [f"{output}_fp16"], [output], name=f"{node}_q{bits}_cast",
                                    to=onnx.TensorProto.FLOAT))
    graph.initializer.remove(inits[name])
    graph.initializer.extend(new_inits)
    position = list(graph.node).index(gather)
    graph.node.remove(gather)
    for offset, n in enumerate(new):
        graph.node.insert(position + offset, n)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save(model, str(path))


def has_int4_table(path: Path) -> bool:
    """Whether the ONNX file at ``path`` reads a table as 4-bit blocks (GatherBlockQuantized with bits 4)."""
    import onnx

    return any(n.op_type == "GatherBlockQuantized" and any(a.name == "bits" and a.i == 4 for a in n.attribute)
               for n in onnx.load(str(path), load_external_data=False).graph.node)


def with_block_embeddings(graph: Path, quantize: Quantizer) -> Quantizer:
    """``quantize`` with the embedding Gathers of ``graph`` left out of int8 and written as blocks after it: the word
    table in 4-bit blocks of 16 (fp16 scales), the position table in 8-bit blocks of 32.

    Excluding a table's Gather (e.g. by the accuracy guard) keeps that table fp32, as for any other node.
    """
    word, others = embedding_gathers(graph)
    if word is None:
        raise ConfigError(f"quantize.embedding_bits: 4: {graph} has no Gather of a float table (word embeddings)")
    plan = {word: (4, WORD_BLOCK, True), **{name: (8, TABLE_BLOCK, False) for name in others}}

    def quantize_with_block_tables(dst: Path, exclude: Sequence[str] = ()) -> QuantizeResult:
        start = time.perf_counter()
        result = quantize(dst, list(dict.fromkeys([*exclude, *plan])))
        for name, (bits, block, fp16) in plan.items():
            if name not in exclude:
                quantize_gather_blocks(dst, name, bits, block, fp16)
        return QuantizeResult(result.path, result.mode, time.perf_counter() - start)

    return quantize_with_block_tables
