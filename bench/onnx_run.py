"""What every Python contender does around `session.run`: session options, padding, the feeds
the graph declares, pooling. Imports only numpy and onnxruntime, so the floor's RSS is the
session's and the runs'."""

import numpy as np
import onnxruntime as ort


def floor_options(threads):
    """Session options of the floor and the batched server: `threads` intra-op threads, no
    spinning, sequential execution (as embedfn configures its sessions)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def pad(seqs, pad_id):
    """Right-pads token id lists to the longest: (input_ids, attention_mask), int64 [batch, seq]."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def feeds(session, ids, mask, task_id=None):
    """The inputs the graph declares, as tests/reference.py feeds them: `input_ids`,
    `attention_mask`, `token_type_ids` (zeros), `position_ids` (counted over the mask),
    `task_id` (0-d or [1]) and an empty `past_key_values.*` cache."""
    out = {}
    for inp in session.get_inputs():
        if inp.name == "input_ids":
            out[inp.name] = ids
        elif inp.name == "attention_mask":
            out[inp.name] = mask
        elif inp.name == "token_type_ids":
            out[inp.name] = np.zeros_like(ids)
        elif inp.name == "position_ids":
            out[inp.name] = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int64)
        elif inp.name == "task_id":
            out[inp.name] = np.array(task_id, dtype=np.int64).reshape([1] * len(inp.shape))
        elif inp.name.startswith("past_key_values."):
            dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
            out[inp.name] = np.zeros((len(ids), inp.shape[1], 0, inp.shape[3]), dtype=dtype)
        else:
            raise ValueError(f"the graph takes an input this benchmark does not feed: {inp.name}")
    return out


def pool(output, mask, mode="mean"):
    """Mean over real tokens of a token-level output [batch, seq, hidden], or each row's last
    real token (`lasttoken`); a pooled [batch, hidden] output as is; then L2 normalisation;
    float32 [batch, hidden]."""
    output = output.astype(np.float32)
    if output.ndim == 3 and mode == "lasttoken":
        last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
        output = output[np.arange(len(output)), last]
    elif output.ndim == 3:
        weights = mask[..., None].astype(np.float32)
        output = (output * weights).sum(axis=1) / weights.sum(axis=1)
    return output / np.linalg.norm(output, axis=1, keepdims=True)



def sigmoid(logits):
    """Relevance scores from a cross-encoder's [batch, 1] logits."""
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)[:, 0]))
