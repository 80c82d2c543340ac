"""A simulation of torch_npu's ``npu_fusion_attention`` on CPU, so that the Ascend builds run in tests.

Only a simulation: it computes what torch_npu's API reference ("torch_npu.npu_fusion_attention")
says the operator computes, softmax(scale * Q K^T, with atten_mask's True positions masked out) V,
for the layouts and sparse modes the example kernels use, and refuses everything else. It proves
that a build passes its tensors in the documented layout and gets the documented answer; it says
nothing of the operator's speed or rounding on a device. A query that sees no key gets zeros.
"""

import sys
import types

import torch

_LEFT_UP_CAUSAL, _RIGHT_DOWN_CAUSAL = 2, 3


def npu_fusion_attention(query, key, value, head_num, input_layout, pse=None, padding_mask=None, atten_mask=None,
                         scale=1.0, keep_prob=1.0, pre_tockens=2147483647, next_tockens=2147483647, inner_precise=0,
                         prefix=None, actual_seq_qlen=None, actual_seq_kvlen=None, sparse_mode=0,
                         gen_mask_parallel=True, sync=False):
    """Returns the documented 7-tuple; only its first element, the output in the input layout, is computed."""
    CALLS.append((input_layout, sparse_mode))
    if pse is not None or padding_mask is not None or keep_prob != 1.0 or prefix is not None:
        raise NotImplementedError("the simulation computes neither pse, padding_mask, dropout nor prefix")
    if sparse_mode in (_LEFT_UP_CAUSAL, _RIGHT_DOWN_CAUSAL):
        if atten_mask is None or atten_mask.dtype != torch.bool or tuple(atten_mask.shape) != (2048, 2048):
            raise ValueError("sparse_mode 2 and 3 take the compressed 2048 x 2048 boolean atten_mask")
    elif sparse_mode != 0 or atten_mask is not None:
        raise NotImplementedError("the simulation computes sparse_mode 0 without a mask, 2 and 3")
    if input_layout == "BSND":
        pieces = [(query[b], key[b], value[b]) for b in range(query.shape[0])]
        out = [_one_sequence(q, k, v, head_num, scale, sparse_mode) for q, k, v in pieces]
        result = torch.stack(out)
    elif input_layout == "TND":
        if actual_seq_qlen is None or actual_seq_kvlen is None or len(actual_seq_qlen) != len(actual_seq_kvlen):
            raise ValueError("TND needs actual_seq_qlen and actual_seq_kvlen, one entry per sequence")
        q_ends, k_ends = [0, *actual_seq_qlen], [0, *actual_seq_kvlen]
        if q_ends[-1] != query.shape[0] or k_ends[-1] != key.shape[0]:
            raise ValueError("actual_seq_qlen / actual_seq_kvlen are cumulative: the last entry is the token count")
        out = [_one_sequence(query[q_ends[i]:q_ends[i + 1]], key[k_ends[i]:k_ends[i + 1]],
                             value[k_ends[i]:k_ends[i + 1]], head_num, scale, sparse_mode)
               for i in range(len(actual_seq_qlen))]
        result = torch.cat(out)
    else:
        raise NotImplementedError(f"the simulation computes BSND and TND, not {input_layout}")
    placeholder = torch.empty(0)
    return result, placeholder, placeholder, placeholder, 0, 0, 0


def _one_sequence(q, k, v, head_num, scale, sparse_mode):
    """q [Sq, N1, D], k and v [Sk, N2, D] -> [Sq, N1, D]."""
    if q.shape[1] != head_num or head_num % k.shape[1]:
        raise ValueError(f"head_num {head_num} must be the query's head count and a multiple of the key's")
    groups = head_num // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = torch.einsum("qnd,knd->nqk", q.float(), k.float()) * scale
    sq, sk = q.shape[0], k.shape[0]
    offset = sk - sq if sparse_mode == _RIGHT_DOWN_CAUSAL else 0
    masked = torch.zeros(sq, sk, dtype=torch.bool)
    if sparse_mode in (_LEFT_UP_CAUSAL, _RIGHT_DOWN_CAUSAL):
        masked = torch.arange(sk)[None, :] > torch.arange(sq)[:, None] + offset
    weights = scores.masked_fill(masked, float("-inf")).softmax(dim=-1).nan_to_num(0.0)
    return torch.einsum("nqk,knd->qnd", weights, v.float()).to(q.dtype)


CALLS = []  # (input_layout, sparse_mode) per call


def install(monkeypatch) -> types.ModuleType:
    """Put the simulation in sys.modules as torch_npu for one test; returns it."""
    module = types.ModuleType("torch_npu", __doc__)
    module.npu_fusion_attention = npu_fusion_attention
    module.CALLS = CALLS
    CALLS.clear()
    monkeypatch.setitem(sys.modules, "torch_npu", module)
    return module
