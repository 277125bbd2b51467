"""Weight-only quantization of a causal-LM ONNX graph (with KV cache): int8 dynamic or int4 block-wise.

int8: ONNX Runtime ``quantize_dynamic``, QInt8 weights, PER-TENSOR (per-channel gave SmolLM2 a perplexity of 1.7e7).
int4: ``MatMulNBitsQuantizer`` (bits=4): MatMul -> MatMulNBits, the embedding Gather -> GatherBlockQuantized.

Tied embeddings: optimum de-duplicates a tied lm_head into ``MatMul(h, Transpose(embed))``. Neither quantizer touches
a MatMul whose weight is computed, so the lm_head stayed fp32 and the file kept the whole fp32 table. We first give the
lm_head its own constant [hidden, vocab] weight (untie). For int4 (symmetric, hidden divisible by the block) the
embedding then reads the lm_head's 4-bit blocks: MatMulNBits stores B as uint8 [vocab, k_blocks, block/2] with scales
[vocab, k_blocks], exactly GatherBlockQuantized's uint8 layout [vocab, hidden/2] (bits=4, zero point 8), so one 4-bit
copy serves both (as onnxruntime-genai's builder does). int8 keeps two int8 copies (the layouts are transposed).
"""

import logging
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np

from edgekd.errors import AssetError, ConfigError

log = logging.getLogger(__name__)

QUANTIZED_OPS = {"MatMulNBits", "GatherBlockQuantized", "MatMulInteger", "DynamicQuantizeMatMul",
                 "DynamicQuantizeLinear", "DequantizeLinear", "QLinearMatMul"}
LM_HEAD = "lm_head.weight_untied"


def _lm_head_node(graph):
    """The MatMul that produces ``logits`` (GPT-2 style graphs may put an Add or Identity after it)."""
    producers = {out: node for node in graph.node for out in node.output}
    node, hops = producers.get("logits"), 0
    while node is not None and node.op_type != "MatMul" and hops < 3:
        node, hops = producers.get(node.input[0]), hops + 1
    return node if node is not None and node.op_type == "MatMul" else None


def untie_lm_head(model) -> tuple[str | None, str | None]:
    """Give a tied lm_head (MatMul on Transpose(initializer)) its own constant weight, in place.

    Returns (lm_head weight name or None, the embedding initializer it was tied to or None).
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    head = _lm_head_node(graph)
    if head is None:
        return None, None
    if head.input[1] in inits:
        return head.input[1], None  # already a constant weight [hidden, vocab]: untied model
    producers = {out: node for node in graph.node for out in node.output}
    transpose = producers.get(head.input[1])
    if transpose is None or transpose.op_type != "Transpose" or transpose.input[0] not in inits:
        return None, None
    embed = numpy_helper.to_array(inits[transpose.input[0]])  # [vocab, hidden]
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(embed.T), LM_HEAD))  # [hidden, vocab]
    head.input[1] = LM_HEAD
    if not any(transpose.output[0] in n.input for n in graph.node):
        graph.node.remove(transpose)
    return LM_HEAD, transpose.input[0]


def gemm_to_matmul(model) -> int:
    """Rewrite Gemm(A [rows, in], constant B, C) as MatMul + Add, in place; returns how many were rewritten.

    GPT-2's Conv1D layers export as Gemm, which MatMulNBits does not quantize (only MatMul).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):  # stored [out, in]: MatMul wants [in, out]
            array = numpy_helper.to_array(inits[weight]).T
            weight = f"{weight}_transposed"
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), weight))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}_MatMul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], list(node.output), name=f"{node.name}_Add"))
        count += 1
    graph.ClearField("node")
    graph.node.extend(nodes)
    return count


def share_embedding_with_lm_head(model, embed_name: str, block_size: int) -> bool:
    """Replace the fp32 Gather of ``embed_name`` by GatherBlockQuantized over the lm_head's MatMulNBits blocks."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    head = next((n for n in graph.node if n.op_type == "MatMulNBits" and n.input[1].startswith(LM_HEAD)), None)
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[0] == embed_name]
    if head is None or len(head.input) > 3 or not gathers:  # a 4th input = zero points (asymmetric): no sharing
        return False
    vocab, k_blocks, blob = inits[head.input[1]].dims
    if vocab != inits[embed_name].dims[0] or k_blocks * blob * 2 != inits[embed_name].dims[1]:
        return False  # hidden not a multiple of block_size: MatMulNBits padded K
    shape = numpy_helper.from_array(np.array([vocab, k_blocks * blob], np.int64), f"{LM_HEAD}_as_gather_shape")
    graph.initializer.append(shape)
    flat = f"{head.input[1]}_as_gather"  # [vocab, hidden/2] uint8, two 4-bit values per byte
    nodes = list(graph.node)
    at = nodes.index(gathers[0])
    new = [helper.make_node("Reshape", [head.input[1], shape.name], [flat], name="embed_shared_with_lm_head/Reshape")]
    for g in gathers:
        new.append(helper.make_node("GatherBlockQuantized", [flat, g.input[1], head.input[2]], list(g.output),
                                    name=f"{g.name}_shared_Q4", domain="com.microsoft", gather_axis=0,
                                    quantize_axis=1, block_size=block_size, bits=4))
    kept = [n for n in nodes if n not in gathers]
    graph.ClearField("node")
    graph.node.extend(kept[:at] + new + kept[at:])
    if not any(embed_name in n.input for n in graph.node):
        graph.initializer.remove(inits[embed_name])
    return True


def _file_bytes(path: Path) -> int:
    """The graph plus its external-data file, where optimum / ORT wrote one (models over 2 GB)."""
    files = [path, path.with_name(path.name + "_data"), path.with_name(path.name + ".data")]
    return sum(f.stat().st_size for f in files if f.is_file())


def _summary(src: Path, out: Path, head: str | None, embed: str | None, seconds: float, **extra) -> dict:
    import onnx

    graph = onnx.load(str(out), load_external_data=False).graph
    float_inits = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    ops = Counter(n.op_type for n in graph.node)
    return {"path": str(out), "src_bytes": _file_bytes(src), "out_bytes": _file_bytes(out), "seconds": round(seconds, 3),
            "quantized_ops": {k: v for k, v in sorted(ops.items()) if k in QUANTIZED_OPS},
            "float_matmuls_with_weight": sum(1 for n in graph.node if n.op_type in ("MatMul", "Gemm")
                                             and n.input[1] in float_inits),
            "float_gathers_with_table": sum(1 for n in graph.node
                                            if n.op_type == "Gather" and n.input[0] in float_inits),
            "lm_head_quantized": head is not None and head not in float_inits
                                 and not any(head in n.input for n in graph.node if n.op_type == "MatMul"),
            "tied_embedding": embed is not None, **extra}


def quantize_causal_lm(onnx_path: Path, out: Path, mode: Literal["int8", "int4"], block_size: int = 32,
                       accuracy_level: int = 4, symmetric: bool = True) -> dict:
    """Quantize ``onnx_path`` into ``out``; returns sizes, quantized op counts and whether the lm_head was quantized.

    ``block_size`` / ``accuracy_level`` / ``symmetric`` apply to int4 (accuracy_level 4 = int8 activations in
    MatMulNBits, ~2x decode speed on CPU at equal perplexity).
    """
    import onnx

    onnx_path, out = Path(onnx_path), Path(out)
    if mode not in ("int8", "int4"):
        raise ConfigError(f"quantize mode {mode!r} is not allowed; use 'int8' or 'int4'")
    if block_size < 16 or block_size & (block_size - 1):
        raise ConfigError(f"block_size {block_size} is not allowed; use a power of two >= 16")
    if not onnx_path.is_file():
        raise AssetError(f"{onnx_path}: no such ONNX file")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = onnx.load(str(onnx_path))
    head, embed = untie_lm_head(model)
    if head is None:
        log.warning("%s: no lm_head MatMul found before 'logits'; the lm_head may stay fp32", onnx_path)
    if mode == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory(prefix="edgekd-lmq-", dir=out.parent) as tmp:
            untied = Path(tmp) / "untied.onnx"
            onnx.save(model, str(untied))  # quantize_dynamic reads shapes from a file reliably
            quantize_dynamic(untied, out, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather"],
                             per_channel=False, reduce_range=False,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return _summary(onnx_path, out, head, embed, time.perf_counter() - start)
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    rewritten = gemm_to_matmul(model)
    # A tied table is served from the lm_head's blocks afterwards, so its Gather is not quantized a second time.
    exclude = [n.name for n in model.graph.node if n.op_type == "Gather" and embed and n.input[0] == embed]
    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=symmetric,
                                     accuracy_level=accuracy_level, nodes_to_exclude=exclude,
                                     op_types_to_quantize=("MatMul", "Gather"),
                                     quant_axes=(("MatMul", 0), ("Gather", 1)))
    quantizer.process()
    shared = bool(embed) and share_embedding_with_lm_head(quantizer.model.model, embed, block_size)
    if embed and not shared:  # asymmetric or padded blocks: quantize the table on its own (a second 4-bit copy)
        log.info("%s: tied embedding not shareable with the lm_head's blocks; quantizing it separately", onnx_path.name)
        again = MatMulNBitsQuantizer(quantizer.model.model, bits=4, block_size=block_size, is_symmetric=symmetric,
                                     op_types_to_quantize=("Gather",), quant_axes=(("Gather", 1),))
        again.process()
        quantizer = again
    quantizer.model.save_model_to_file(str(out), use_external_data_format=os.path.getsize(onnx_path) > 1.8e9)
    return _summary(onnx_path, out, head, embed, time.perf_counter() - start, embedding_shared_with_lm_head=shared,
                    gemm_rewritten=rewritten)
