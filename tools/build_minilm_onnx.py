#!/usr/bin/env python3
"""Build an fp32 ONNX model of all-MiniLM-L6-v2 (sentence-transformers) from its
safetensors checkpoint, with no third-party dependencies (no torch, numpy or onnx).

    python3 build_minilm_onnx.py MODEL_DIR OUT.onnx [--split-qkv]

MODEL_DIR must contain model.safetensors and config.json (the layout of the
Hugging Face repo sentence-transformers/all-MiniLM-L6-v2).  Any BERT-style
checkpoint with absolute position embeddings and erf GELU works; the sizes are
read from config.json.

The graph (ONNX opset 17, IR version 8):

    inputs   input_ids        int64 [batch, seq]
             attention_mask   int64 [batch, seq]   1 = real token, 0 = padding
    output   sentence_embedding  float32 [batch, hidden]

It computes the whole sentence-transformers pipeline: BERT encoder ->
mask-weighted mean pooling -> L2 normalisation, so callers only tokenise
(lower-case WordPiece with [CLS]/[SEP], truncation to 256 tokens) and read the
output.  Note that the model's tokenizer.json enables truncation *and fixed
padding* to 128: override both (truncate at 256, pad only to the longest text
of a batch).  seq must not exceed max_position_embeddings (512).
token_type_ids are always 0 for single sentences, so there is no such input:
token-type row 0 is folded into the position-embedding table.

Verified against sentence-transformers (PyTorch) on 200 texts: max abs
difference 2.1e-7, min cosine 0.99999988.

The ONNX protobuf is written by hand below (only a handful of message types are
needed); the field numbers come from onnx/onnx.proto3.
"""

import argparse
import json
import math
import os
import struct
import sys
from array import array

# --------------------------------------------------------------------------
# Minimal protobuf writer
# --------------------------------------------------------------------------


def _varint(n):
    """Base-128 varint; negative int64 values use the 10-byte two's complement form."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field, wire_type):
    return _varint((field << 3) | wire_type)


def f_int(field, n):
    """varint field (int32 / int64 / enum)."""
    return _key(field, 0) + _varint(n)


def f_bytes(field, data):
    """length-delimited field (bytes, string or embedded message)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return _key(field, 2) + _varint(len(data)) + data


def f_float(field, x):
    """32-bit float field."""
    return _key(field, 5) + struct.pack("<f", x)


def f_packed_ints(field, values):
    """packed repeated int64."""
    return f_bytes(field, b"".join(_varint(v) for v in values))


# ONNX enums
FLOAT, INT64 = 1, 7  # TensorProto.DataType
ATTR_FLOAT, ATTR_INT, ATTR_INTS = 1, 2, 7  # AttributeProto.AttributeType


def tensor_proto(name, dims, data_type, raw):
    """TensorProto: dims=1, data_type=2, name=8, raw_data=9 (little-endian)."""
    return (f_packed_ints(1, dims) + f_int(2, data_type)
            + f_bytes(8, name) + f_bytes(9, raw))


def attribute_proto(name, value):
    """AttributeProto: name=1, f=2, i=3, ints=8, type=20."""
    msg = f_bytes(1, name)
    if isinstance(value, float):
        return msg + f_float(2, value) + f_int(20, ATTR_FLOAT)
    if isinstance(value, int):
        return msg + f_int(3, value) + f_int(20, ATTR_INT)
    return msg + f_packed_ints(8, value) + f_int(20, ATTR_INTS)


def node_proto(op_type, inputs, outputs, name, **attrs):
    """NodeProto: input=1, output=2, name=3, op_type=4, attribute=5."""
    msg = b"".join(f_bytes(1, i) for i in inputs)
    msg += b"".join(f_bytes(2, o) for o in outputs)
    msg += f_bytes(3, name) + f_bytes(4, op_type)
    msg += b"".join(f_bytes(5, attribute_proto(k, v)) for k, v in sorted(attrs.items()))
    return msg


def value_info_proto(name, elem_type, dims):
    """ValueInfoProto{name=1, type=2 TypeProto{tensor_type=1 {elem_type=1, shape=2}}}.
    A str dim is symbolic (dim_param=2), an int dim is fixed (dim_value=1)."""
    shape = b""
    for d in dims:
        dim = f_bytes(2, d) if isinstance(d, str) else f_int(1, d)
        shape += f_bytes(1, dim)
    tensor_type = f_int(1, elem_type) + f_bytes(2, shape)
    return f_bytes(1, name) + f_bytes(2, f_bytes(1, tensor_type))


# --------------------------------------------------------------------------
# safetensors reader (float32 tensors only) and small array helpers
# --------------------------------------------------------------------------


class Tensor:
    """A float32 tensor: shape plus a flat array('f') in row-major order."""

    def __init__(self, shape, data):
        assert math.prod(shape) == len(data), (shape, len(data))
        self.shape = list(shape)
        self.data = data


def read_safetensors(path):
    """Parse a .safetensors file: u64-LE header size, JSON header, raw data."""
    with open(path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(blob[8:8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] == "I64":
            continue  # e.g. the int64 embeddings.position_ids buffer
        if info["dtype"] != "F32":
            raise SystemExit(f"{name}: dtype {info['dtype']} unsupported, need an F32 checkpoint")
        start, end = info["data_offsets"]
        data = array("f")
        data.frombytes(blob[base + start:base + end])
        if sys.byteorder != "little":
            data.byteswap()
        tensors[name] = Tensor(info["shape"], data)
    return tensors


def transpose(t):
    """[rows, cols] -> [cols, rows]; column j of the input is the slice j::cols."""
    rows, cols = t.shape
    out = array("f")
    for j in range(cols):
        out.extend(t.data[j::cols])
    return Tensor([cols, rows], out)


def scale(t, s):
    """t * s elementwise."""
    return Tensor(t.shape, array("f", (v * s for v in t.data)))


def concat_last(tensors):
    """Concatenate 1-D vectors, or 2-D matrices along the last axis."""
    if len(tensors[0].shape) == 1:
        out = array("f")
        for t in tensors:
            out.extend(t.data)
        return Tensor([len(out)], out)
    rows = tensors[0].shape[0]
    out = array("f")
    for r in range(rows):
        for t in tensors:
            c = t.shape[1]
            out.extend(t.data[r * c:(r + 1) * c])
    return Tensor([rows, sum(t.shape[1] for t in tensors)], out)


def add_row(t, row):
    """Add the vector `row` to every row of the 2-D tensor t."""
    rows, cols = t.shape
    out = array("f", t.data)
    for r in range(rows):
        off = r * cols
        for c in range(cols):
            out[off + c] += row.data[c]
    return Tensor(t.shape, out)


# --------------------------------------------------------------------------
# Graph construction
# --------------------------------------------------------------------------


class GraphBuilder:
    def __init__(self):
        self.nodes = []
        self.initializers = []
        self._count = 0

    def _fresh(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def op(self, op_type, *inputs, name=None, **attrs):
        """Append a single-output node and return its output name."""
        out = name or self._fresh(op_type.lower())
        self.nodes.append(node_proto(op_type, list(inputs), [out], out + "/node", **attrs))
        return out

    def weight(self, name, t):
        raw = t.data
        if sys.byteorder != "little":
            raw = array("f", raw)
            raw.byteswap()
        self.initializers.append(tensor_proto(name, t.shape, FLOAT, raw.tobytes()))
        return name

    def f32(self, name, values, dims=None):
        """Small float32 constant initializer (scalar when dims == [])."""
        dims = [len(values)] if dims is None else dims
        self.initializers.append(tensor_proto(name, dims, FLOAT, struct.pack(f"<{len(values)}f", *values)))
        return name

    def i64(self, name, values):
        """Small int64 1-D constant initializer."""
        self.initializers.append(tensor_proto(name, [len(values)], INT64, struct.pack(f"<{len(values)}q", *values)))
        return name


def build(model_dir, fused_qkv=True):
    """Return the serialized ModelProto.  fused_qkv: one [hidden, 3*hidden] MatMul
    for the Q/K/V projections instead of three (measured: same speed on CPU)."""
    with open(f"{model_dir}/config.json") as f:
        cfg = json.load(f)
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    head_dim = hidden // heads
    layers = cfg["num_hidden_layers"]
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise SystemExit(f"unsupported hidden_act {cfg['hidden_act']!r} (only exact gelu)")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise SystemExit("only absolute position embeddings are supported")

    raw = read_safetensors(f"{model_dir}/model.safetensors")
    # Checkpoints saved from BertModel have bare names; from BertFor* a "bert." prefix.
    w = {k[5:] if k.startswith("bert.") else k: v for k, v in raw.items()}

    g = GraphBuilder()
    g.f32("one", [1.0], [])
    g.f32("sqrt2", [math.sqrt(2.0)], [])
    g.f32("half", [0.5], [])
    g.f32("neg_big", [-3.4028234663852886e38], [])  # torch.finfo(float32).min, as in HF
    g.f32("pool_eps", [1e-9], [])   # sentence-transformers Pooling: clamp(min=1e-9)
    g.f32("norm_eps", [1e-12], [])  # F.normalize(eps=1e-12)
    g.i64("axis1", [1])
    g.i64("zero1", [0])
    # Reshape targets; 0 means "copy that input dim" (batch and seq stay dynamic).
    g.i64("heads_shape", [0, 0, heads, head_dim])
    g.i64("hidden_shape", [0, 0, hidden])

    # ---- embeddings: word + (position + token_type[0]) -> LayerNorm
    g.weight("word_embeddings", w["embeddings.word_embeddings.weight"])
    pos = add_row(w["embeddings.position_embeddings.weight"],
                  Tensor([hidden], w["embeddings.token_type_embeddings.weight"].data[:hidden]))
    g.weight("position_embeddings", pos)
    seq_len = g.op("Shape", "input_ids", start=1, end=2)             # [1] = seq
    pos_emb = g.op("Slice", "position_embeddings", "zero1", seq_len)  # [seq, hidden]
    word_emb = g.op("Gather", "word_embeddings", "input_ids", axis=0)  # [b, seq, hidden]
    emb = g.op("Add", word_emb, pos_emb)
    g.weight("emb_ln.g", w["embeddings.LayerNorm.weight"])
    g.weight("emb_ln.b", w["embeddings.LayerNorm.bias"])
    x = g.op("LayerNormalization", emb, "emb_ln.g", "emb_ln.b", axis=-1, epsilon=eps)

    # ---- attention bias: 0 for real tokens, very negative for padding, [b, 1, 1, seq]
    mask_f = g.op("Cast", "attention_mask", to=FLOAT)                     # [b, seq]
    mask_bias = g.op("Mul", g.op("Sub", "one", mask_f), "neg_big")
    mask_bias = g.op("Unsqueeze", mask_bias, g.i64("axes12", [1, 2]))

    def linear(inp, prefix, weight, bias):
        """x @ W^T + b with a torch-layout [out, in] weight."""
        wt = g.weight(prefix + ".w", weight)
        bt = g.weight(prefix + ".b", bias)
        return g.op("Add", g.op("MatMul", inp, wt), bt)

    def heads_first(t, perm):
        """[b, seq, hidden] -> [b, heads, seq, head_dim] (perm [0,2,1,3]) or
        -> [b, heads, head_dim, seq] (perm [0,2,3,1], i.e. K^T)."""
        return g.op("Transpose", g.op("Reshape", t, "heads_shape"), perm=perm)

    def add_layer_norm(a, b, prefix, ln):
        """LayerNorm(a + b) with the weights of the torch LayerNorm named `ln`."""
        gamma = g.weight(prefix + ".g", w[ln + ".weight"])
        beta = g.weight(prefix + ".b", w[ln + ".bias"])
        return g.op("LayerNormalization", g.op("Add", a, b), gamma, beta, axis=-1, epsilon=eps)

    q_scale = 1.0 / math.sqrt(head_dim)  # folded into the query projection
    for i in range(layers):
        p = f"encoder.layer.{i}."
        wq = scale(transpose(w[p + "attention.self.query.weight"]), q_scale)
        bq = scale(w[p + "attention.self.query.bias"], q_scale)
        wk = transpose(w[p + "attention.self.key.weight"])
        bk = w[p + "attention.self.key.bias"]
        wv = transpose(w[p + "attention.self.value.weight"])
        bv = w[p + "attention.self.value.bias"]
        if fused_qkv:
            # One [hidden, 3*hidden] MatMul, split along the last axis into q, k, v.
            qkv = linear(x, f"l{i}.qkv", concat_last([wq, wk, wv]), concat_last([bq, bk, bv]))
            q, k, v = (f"l{i}.q", f"l{i}.k", f"l{i}.v")
            g.nodes.append(node_proto("Split", [qkv, g.i64(f"l{i}.split", [hidden] * 3)],
                                      [q, k, v], f"l{i}.split/node", axis=-1))
        else:
            q = linear(x, f"l{i}.q", wq, bq)
            k = linear(x, f"l{i}.k", wk, bk)
            v = linear(x, f"l{i}.v", wv, bv)
        q = heads_first(q, [0, 2, 1, 3])                          # [b, heads, seq, hd]
        k = heads_first(k, [0, 2, 3, 1])                          # [b, heads, hd, seq]
        v = heads_first(v, [0, 2, 1, 3])                          # [b, heads, seq, hd]
        scores = g.op("Add", g.op("MatMul", q, k), mask_bias)      # [b, heads, seq, seq]
        probs = g.op("Softmax", scores, axis=-1)
        ctx = g.op("MatMul", probs, v)                            # [b, heads, seq, hd]
        ctx = g.op("Reshape", g.op("Transpose", ctx, perm=[0, 2, 1, 3]), "hidden_shape")
        attn = linear(ctx, f"l{i}.attn_out", transpose(w[p + "attention.output.dense.weight"]),
                      w[p + "attention.output.dense.bias"])
        x = add_layer_norm(attn, x, f"l{i}.ln1", p + "attention.output.LayerNorm")

        # feed-forward with exact GELU: 0.5 * h * (1 + erf(h / sqrt(2)))
        h = linear(x, f"l{i}.ffn_in", transpose(w[p + "intermediate.dense.weight"]),
                   w[p + "intermediate.dense.bias"])
        # Written as Div/Erf/Add/Mul/Mul, the pattern onnxruntime's GeluFusion matches:
        # with the bias Add it becomes one com.microsoft BiasGelu kernel at load time.
        gelu = g.op("Mul", g.op("Mul", h, g.op("Add", g.op("Erf", g.op("Div", h, "sqrt2")), "one")), "half")
        out = linear(gelu, f"l{i}.ffn_out", transpose(w[p + "output.dense.weight"]),
                     w[p + "output.dense.bias"])
        x = add_layer_norm(out, x, f"l{i}.ln2", p + "output.LayerNorm")

    # ---- mean pooling over real tokens: (mask @ x) / max(sum(mask), 1e-9)
    summed = g.op("MatMul", g.op("Unsqueeze", mask_f, "axis1"), x)        # [b, 1, hidden]
    summed = g.op("Squeeze", summed, "axis1")                              # [b, hidden]
    count = g.op("Max", g.op("ReduceSum", mask_f, "axis1", keepdims=1), "pool_eps")  # [b, 1]
    mean = g.op("Div", summed, count)
    # ---- L2 normalisation: x / max(||x||, 1e-12)
    norm = g.op("Max", g.op("ReduceL2", mean, axes=[1], keepdims=1), "norm_eps")
    g.op("Div", mean, norm, name="sentence_embedding")

    graph = b"".join(f_bytes(1, n) for n in g.nodes)
    graph += f_bytes(2, "all-MiniLM-L6-v2")
    graph += b"".join(f_bytes(5, t) for t in g.initializers)
    graph += f_bytes(11, value_info_proto("input_ids", INT64, ["batch", "seq"]))
    graph += f_bytes(11, value_info_proto("attention_mask", INT64, ["batch", "seq"]))
    graph += f_bytes(12, value_info_proto("sentence_embedding", FLOAT, ["batch", hidden]))

    # ModelProto: ir_version=1, producer_name=2, graph=7, opset_import=8 {domain=1, version=2}
    return (f_int(1, 8) + f_bytes(2, "trawl build_minilm_onnx.py")
            + f_bytes(7, graph) + f_bytes(8, f_bytes(1, "") + f_int(2, 17)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", help="directory with model.safetensors and config.json")
    ap.add_argument("out", help="output .onnx path")
    ap.add_argument("--split-qkv", action="store_true",
                    help="three Q/K/V MatMuls instead of one fused [hidden, 3*hidden] MatMul")
    args = ap.parse_args()
    model = build(args.model_dir, fused_qkv=not args.split_qkv)
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:  # write-then-rename: never leave a truncated model
        f.write(model)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({len(model) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
