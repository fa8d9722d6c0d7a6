"""A small encoder with real attention, written as exporters write it, for the memory and
batch-invariance tests:

    python tests/attention_model.py OUTDIR [--layers 2 --hidden 256 --heads 4 --positions 8192]
                                           [--cross-encoder] [--int8]

Word + learned position embeddings, LayerNorm, then per layer: Q/K/V projections split into
heads, MatMul -> Div -> Add(mask) -> Softmax -> MatMul (so plain attention holds
batch x heads x seq^2 scores), output projection, residual + LayerNorm, a GELU (Erf) feed-forward.
The embedding model outputs `last_hidden_state` [batch, seq, hidden] (mean-pooled outside the
graph); `--cross-encoder` outputs [batch, 1] logits from the first token. `--int8` also writes
`onnx/model_int8.onnx` with onnxruntime's `quantize_dynamic` (DynamicQuantizeLinear +
MatMulInteger), as model hubs make it. The tokenizer is the test fixtures' XLM-R style one
(`tokenizer.json` of `jina-embed-tiny`). Weights are seeded: every run writes the same bytes.
"""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(vocab, layers, hidden, heads, positions, ffn, cross_encoder, seed=7):
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def weight(name, *shape, scale=0.02):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def linear(x, name, n_in, n_out):
        w = weight(f"{name}.weight", n_in, n_out)
        b = weight(f"{name}.bias", n_out)
        return node("Add", [node("MatMul", [x, w], f"{name}.matmul"), b], f"{name}.out")

    def layer_norm(x, name):
        g = const(f"{name}.gamma", np.ones(hidden))
        b = const(f"{name}.beta", np.zeros(hidden))
        return node("LayerNormalization", [x, g, b], f"{name}.out", axis=-1, epsilon=1e-12)

    d = hidden // heads
    const("heads_shape", [0, 0, heads, d], np.int64)
    const("hidden_shape", [0, 0, hidden], np.int64)
    const("one_i", 1, np.int64)
    const("zero_i", 0, np.int64)
    const("one_f", 1.0)
    const("neg_big", -10000.0)
    const("sqrt_d", float(np.sqrt(d)))
    const("sqrt2", float(np.sqrt(2.0)))
    const("half", 0.5)
    const("mask_axes", [1, 2], np.int64)

    word = weight("embeddings.word", vocab, hidden, scale=0.5)
    pos = weight("embeddings.position", positions, hidden, scale=0.5)
    x = node("Gather", [word, "input_ids"], "embed.words")
    shape = node("Shape", ["input_ids"], "embed.shape")
    seq = node("Gather", [shape, "one_i"], "embed.seq")
    ids = node("Range", ["zero_i", seq, "one_i"], "embed.positions")
    x = node("Add", [x, node("Gather", [pos, ids], "embed.pos")], "embed.sum")
    x = layer_norm(x, "embed.norm")

    mask = node("Cast", ["attention_mask"], "mask.float", to=TensorProto.FLOAT)
    mask = node("Mul", [node("Sub", ["one_f", mask], "mask.inv"), "neg_big"], "mask.big")
    mask = node("Unsqueeze", [mask, "mask_axes"], "mask.4d")

    for i in range(layers):
        p = f"layer{i}"

        def split(t, name, perm):
            r = node("Reshape", [t, "heads_shape"], f"{name}.heads")
            return node("Transpose", [r], f"{name}.t", perm=perm)

        q = split(linear(x, f"{p}.q", hidden, hidden), f"{p}.q", [0, 2, 1, 3])
        k = split(linear(x, f"{p}.k", hidden, hidden), f"{p}.k", [0, 2, 3, 1])
        v = split(linear(x, f"{p}.v", hidden, hidden), f"{p}.v", [0, 2, 1, 3])
        scores = node("MatMul", [q, k], f"{p}.scores")
        scores = node("Div", [scores, "sqrt_d"], f"{p}.scaled")
        scores = node("Add", [scores, mask], f"{p}.masked")
        probs = node("Softmax", [scores], f"{p}.probs", axis=-1)
        ctx = node("MatMul", [probs, v], f"{p}.context")
        ctx = node("Transpose", [ctx], f"{p}.context.t", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, "hidden_shape"], f"{p}.context.merged")
        out = linear(ctx, f"{p}.o", hidden, hidden)
        x = layer_norm(node("Add", [out, x], f"{p}.residual1"), f"{p}.norm1")
        h = linear(x, f"{p}.up", hidden, ffn)
        erf = node("Erf", [node("Div", [h, "sqrt2"], f"{p}.gelu.div")], f"{p}.gelu.erf")
        gelu = node("Mul", [node("Mul", [h, "half"], f"{p}.gelu.half"),
                            node("Add", [erf, "one_f"], f"{p}.gelu.add")], f"{p}.gelu")
        out = linear(gelu, f"{p}.down", ffn, hidden)
        x = layer_norm(node("Add", [out, x], f"{p}.residual2"), f"{p}.norm2")

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask")]
    if cross_encoder:
        const("first", [0], np.int64)
        cls = node("Gather", [x, "first"], "cls.gather", axis=1)  # [batch, 1, hidden]
        cls = node("Reshape", [cls, const("cls_shape", [0, hidden], np.int64)], "cls")
        logits = linear(cls, "classifier", hidden, 1)
        nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
        output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])
    else:
        nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
        output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                               ["batch", "sequence", hidden])
    graph = helper.make_graph(nodes, "attention-encoder", inputs, [output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="embedfn-tests")
    model.ir_version = 8  # ONNX Runtime 1.31 loads IR <= 13; the onnx package writes 14
    onnx.checker.check_model(model)
    return model


def write(out, tokenizer_json, layers=2, hidden=256, heads=4, positions=8192, ffn=None,
          cross_encoder=False, int8=False):
    """Writes a model directory at `out` and returns its path."""
    out = Path(out)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    shutil.copy(tokenizer_json, out / "tokenizer.json")
    vocab = len(json.loads(Path(tokenizer_json).read_text())["model"]["vocab"])
    ffn = ffn or 4 * hidden
    model = build(vocab, layers, hidden, heads, positions, ffn, cross_encoder)
    onnx.save(model, out / "onnx" / "model.onnx")
    config = {
        "architectures": ["BertForSequenceClassification" if cross_encoder else "BertModel"],
        "model_type": "bert", "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": heads, "intermediate_size": ffn, "vocab_size": vocab,
        "max_position_embeddings": positions, "pad_token_id": 1,
    }
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": positions}))
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        quantize_dynamic(str(out / "onnx" / "model.onnx"), str(out / "onnx" / "model_int8.onnx"),
                         weight_type=QuantType.QInt8)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--tokenizer", required=True, help="a tokenizer.json (the fixtures' jina-embed-tiny one)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--positions", type=int, default=8192)
    ap.add_argument("--cross-encoder", action="store_true")
    ap.add_argument("--int8", action="store_true")
    a = ap.parse_args()
    print(write(a.out, a.tokenizer, a.layers, a.hidden, a.heads, a.positions, None, a.cross_encoder, a.int8))


if __name__ == "__main__":
    main()
