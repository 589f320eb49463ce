"""Self-attention for ONNX export without an N×N matrix: a Loop over query chunks of MHA.

The exporter's own lowering of ``scaled_dot_product_attention`` is MatMul → Softmax → MatMul,
which makes ONNX Runtime allocate batch × N × M scores (GBs at 128² positions). Instead:

1. ``sdpa_translation`` (a custom translation for the torch exporter) emits a placeholder op
   ``fagan.export::Attention(q, k, v)``;
2. ``replace_placeholders`` rewrites each placeholder into a Loop over query chunks whose body is
   ``com.microsoft::MultiHeadAttention`` (1 head). ORT's CPU kernel for it (≥ 1.19) is flash
   attention: online softmax over L2-sized key blocks, O(N·d) memory. Where ORT falls back to its
   plain kernel (older ORT, L2 size unknown to it, ``ORT_DISABLE_FLASH_ATTENTION``), the chunking
   still caps the scores at ``CHUNK_ELEMENTS`` floats per call.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional

import numpy as np

PLACEHOLDER_DOMAIN = "fagan.export"
MS_DOMAIN = "com.microsoft"
CHUNK_ELEMENTS = 1 << 25
"""Most attention scores (float32) one chunk may hold in ORT's non-flash fallback: 128 MiB."""


def sdpa_translation(
    query: Any,
    key: Any,
    value: Any,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
) -> Any:
    """Translate aten SDPA on (B, 1, N, C) tensors to the placeholder op (one head only)."""
    from onnxscript import opset18 as op  # lazy: optional dependency (onnxscript), only to export
    from onnxscript.values import Opset  # lazy: optional dependency (onnxscript), only to export

    if attn_mask is not None or dropout_p or is_causal or enable_gqa or query.shape[1] != 1:
        raise NotImplementedError("ONNX export supports single-head, unmasked, non-causal attention only")
    if scale is None:  # SDPA's default, fixed now: trimming q and k later must not change it
        scale = 1.0 / math.sqrt(int(query.shape[-1]))
    _register_placeholder()
    attention = Opset(PLACEHOLDER_DOMAIN, 1).Attention
    axes = op.Constant(value_ints=[1])
    out = attention(op.Squeeze(query, axes), op.Squeeze(key, axes), op.Squeeze(value, axes), scale=float(scale))
    return op.Unsqueeze(out, axes)


def replace_placeholders(model: Any, key_channels: Optional[int] = None) -> Any:
    """Rewrite every placeholder node of ``model`` (an onnx.ModelProto) in place; return it.

    ``key_channels``: query and key carry real values in their first ``key_channels`` channels
    only, the rest being zero padding (``SelfAttention`` pads f, g from C/8 to C for torch's
    kernels); the padding is then dropped, which leaves every dot product unchanged.
    """
    nodes = []
    for index, node in enumerate(model.graph.node):
        if node.domain == PLACEHOLDER_DOMAIN:
            nodes.extend(chunked_attention(node, f"fagan_attention_{index}/", key_channels))
        else:
            nodes.append(node)
    if any(n.domain == PLACEHOLDER_DOMAIN for f in model.functions for n in f.node):
        raise NotImplementedError("attention inside an ONNX function cannot be rewritten")
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    opsets = [o for o in model.opset_import if o.domain not in (PLACEHOLDER_DOMAIN, MS_DOMAIN)]
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    model.opset_import.add(domain=MS_DOMAIN, version=1)
    return model


DIMENSIONS = (("q", "zero", "batch"), ("q", "one", "queries"), ("k", "one", "keys"), ("v", "two", "v_channels"))
"""(shape of, index constant, name) of the sizes the chunked attention reads from q, k and v."""

CHUNK_ARITHMETIC = (
    # chunk = clamp(budget // (batch·keys), 1, queries)
    ("Mul", "batch", "keys", "scores_per_query"), ("Div", "budget", "scores_per_query", "chunk_raw"),
    ("Max", "chunk_raw", "one", "chunk_min1"), ("Min", "chunk_min1", "queries", "chunk"),
    # iterations = ceil(queries / chunk); pad_end = iterations·chunk − queries
    ("Add", "queries", "chunk", "ceil_a"), ("Sub", "ceil_a", "one", "ceil_b"), ("Div", "ceil_b", "chunk", "iterations"),
    ("Mul", "iterations", "chunk", "padded_queries"), ("Sub", "padded_queries", "queries", "pad_end"),
)
"""(op, left, right, output) of the integer arithmetic that sizes the query chunks."""


def chunked_attention(node: Any, prefix: str, key_channels: Optional[int] = None) -> List[Any]:
    """Nodes computing ``node``'s attention: q (B, N, dk), k (B, M, dk), v (B, M, dv) → (B, N, dv).

    chunk = clamp(CHUNK_ELEMENTS // (B·M), 1, N); q is zero-padded to a multiple of chunk, each
    chunk attends through MultiHeadAttention, the stacked chunks are reshaped and cropped to N.
    With ``key_channels``, q and k are first cut to that many channels.
    """
    from onnx import TensorProto, helper, numpy_helper  # lazy: optional dependency (onnx), only to export

    query, key, value = node.input
    (output,) = node.output

    def n(name: str) -> str:
        return prefix + name

    def const(name: str, values: List[int]) -> Any:
        return helper.make_node(
            "Constant", [], [n(name)], name=n(name), value=numpy_helper.from_array(np.asarray(values, np.int64), n(name))
        )

    def make(op_type: str, inputs: List[str], outputs: List[str], **attrs: Any) -> Any:
        return helper.make_node(op_type, inputs, [n(o) for o in outputs], name=n(outputs[0]), **attrs)

    trim = []
    if key_channels is not None:
        trim = [
            const("channels", [key_channels]),
            make("Slice", [query, n("zero"), n("channels"), n("two")], ["query_trimmed"]),
            make("Slice", [key, n("zero"), n("channels"), n("two")], ["key_trimmed"]),
        ]
        query, key = n("query_trimmed"), n("key_trimmed")
    mha_attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    body = helper.make_graph(
        [
            make("Unsqueeze", [n("iter"), n("zero")], ["iter1"]),
            make("Mul", [n("iter1"), n("chunk")], ["start"]),
            make("Add", [n("start"), n("chunk")], ["stop"]),
            make("Slice", [n("q_padded"), n("start"), n("stop"), n("one")], ["q_chunk"]),
            helper.make_node(
                "MultiHeadAttention",
                [n("q_chunk"), key, value],
                [n("out_chunk")],
                name=n("mha"),
                domain=MS_DOMAIN,
                num_heads=1,
                **mha_attrs,
            ),
            make("Identity", [n("cond_in")], ["cond_out"]),
        ],
        n("body"),
        [helper.make_tensor_value_info(n("iter"), TensorProto.INT64, []), helper.make_tensor_value_info(n("cond_in"), TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(n("cond_out"), TensorProto.BOOL, []), helper.make_tensor_value_info(n("out_chunk"), TensorProto.FLOAT, None)],
    )
    return [
        const("zero", [0]),
        const("one", [1]),
        const("two", [2]),
        *trim,
        const("budget", [CHUNK_ELEMENTS]),
        *[make("Shape", [tensor], [f"{tag}_shape"]) for tag, tensor in (("q", query), ("k", key), ("v", value))],
        *[make("Gather", [n(f"{tag}_shape"), n(axis)], [dim]) for tag, axis, dim in DIMENSIONS],
        *[make(op, [n(a), n(b)], [out]) for op, a, b, out in CHUNK_ARITHMETIC],
        make("Concat", [n("zero"), n("zero"), n("zero"), n("zero"), n("pad_end"), n("zero")], ["pads"], axis=0),
        make("Pad", [query, n("pads")], ["q_padded"]),
        make("Squeeze", [n("iterations")], ["trip_count"]),
        helper.make_node("Loop", [n("trip_count"), ""], [n("stacked")], name=n("loop"), body=body),
        make("Transpose", [n("stacked")], ["batch_major"], perm=[1, 0, 2, 3]),
        make("Concat", [n("batch"), n("padded_queries"), n("v_channels")], ["flat_shape"], axis=0),
        make("Reshape", [n("batch_major"), n("flat_shape")], ["flat"]),
        helper.make_node("Slice", [n("flat"), n("zero"), n("queries"), n("one")], [output], name=n("crop")),
    ]


def _register_placeholder() -> None:
    from onnx import defs  # lazy: optional dependency (onnx), only to export

    if defs.has("Attention", PLACEHOLDER_DOMAIN):
        return
    param = defs.OpSchema.FormalParameter
    defs.register_schema(
        defs.OpSchema(
            "Attention",
            PLACEHOLDER_DOMAIN,
            1,
            inputs=[param("query", "T"), param("key", "T"), param("value", "T")],
            outputs=[param("output", "T")],
            type_constraints=[("T", ["tensor(float)"], "float32 attention inputs")],
            attributes=[defs.OpSchema.Attribute("scale", defs.OpSchema.AttrType.FLOAT, "softmax scale", required=True)],
        )
    )
