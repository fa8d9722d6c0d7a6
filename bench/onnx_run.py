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
    `attention_mask`, `token_type_ids` (zeros) and `task_id` (0-d or [1])."""
    out = {}
    for inp in session.get_inputs():
        if inp.name == "input_ids":
            out[inp.name] = ids
        elif inp.name == "attention_mask":
            out[inp.name] = mask
        elif inp.name == "token_type_ids":
            out[inp.name] = np.zeros_like(ids)
        elif inp.name == "task_id":
            out[inp.name] = np.array(task_id, dtype=np.int64).reshape([1] * len(inp.shape))
        else:
            raise ValueError(f"the graph takes an input this benchmark does not feed: {inp.name}")
    return out


def mean_pool(output, mask):
    """Mean over real tokens of a token-level output [batch, seq, hidden] (a pooled
    [batch, hidden] output as is), then L2 normalisation; float32 [batch, hidden]."""
    output = output.astype(np.float32)
    if output.ndim == 3:
        weights = mask[..., None].astype(np.float32)
        output = (output * weights).sum(axis=1) / weights.sum(axis=1)
    return output / np.linalg.norm(output, axis=1, keepdims=True)


def sigmoid(logits):
    """Relevance scores from a cross-encoder's [batch, 1] logits."""
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)[:, 0]))
