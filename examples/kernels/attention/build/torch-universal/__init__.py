"""Scaled dot-product attention in plain PyTorch, in flash-attn's two calling conventions: runs on any device.

flash-attn's rules, as its `flash_attn_func` and `flash_attn_varlen_func` docstrings state them:
  * k and v may have fewer heads than q (grouped-query attention): query head h reads key head
    h // (q_heads // kv_heads);
  * with causal=True the mask is aligned to the bottom-right corner of the attention matrix, so
    query i of seqlen_q sees the keys up to i + seqlen_k - seqlen_q (a decoding step's one query
    sees every key), and a query that sees no key gets zeros;
  * softmax_scale defaults to 1 / sqrt(head_dim); dropout_p is the probability of dropping a weight.
"""

import torch
import torch.nn.functional as F

__all__ = ["flash_attn_func", "flash_attn_varlen_func"]


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False):
    """Attention over a batch of equal-length sequences: q [batch, seqlen_q, heads, head_dim], k and v
    [batch, seqlen_k, kv_heads, head_dim]; returns [batch, seqlen_q, heads, head_dim]."""
    keep = _bottom_right_causal(q.shape[1], k.shape[1], q.device) if causal else None
    out = _attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), keep, dropout_p, softmax_scale)
    return out.transpose(1, 2)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False):
    """Attention over sequences packed one after another: q [total_q, heads, head_dim], k and v
    [total_k, kv_heads, head_dim]; cu_seqlens_* are the cumulative lengths (batch + 1 entries, from 0).
    Returns [total_q, heads, head_dim]. max_seqlen_* are accepted for the convention; this build
    needs no bound."""
    seq_q = _sequence_of_each_token(cu_seqlens_q, q.shape[0])
    seq_k = _sequence_of_each_token(cu_seqlens_k, k.shape[0])
    keep = seq_q[:, None] == seq_k[None, :]  # each sequence attends to itself only
    if causal:
        pos_q = torch.arange(q.shape[0], device=q.device) - cu_seqlens_q[seq_q]
        pos_k = torch.arange(k.shape[0], device=k.device) - cu_seqlens_k[seq_k]
        len_q = (cu_seqlens_q[1:] - cu_seqlens_q[:-1])[seq_q]
        len_k = (cu_seqlens_k[1:] - cu_seqlens_k[:-1])[seq_q]
        keep &= pos_k[None, :] <= (pos_q + len_k - len_q)[:, None]
    out = _attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], keep, dropout_p,
                     softmax_scale)
    return out[0].transpose(0, 1)


def _bottom_right_causal(seqlen_q, seqlen_k, device):
    rows = torch.arange(seqlen_q, device=device)[:, None] + (seqlen_k - seqlen_q)
    return torch.arange(seqlen_k, device=device)[None, :] <= rows


def _sequence_of_each_token(cu_seqlens, total):
    """The index of the sequence each packed token belongs to (empty sequences hold none)."""
    return torch.bucketize(torch.arange(total, device=cu_seqlens.device), cu_seqlens[1:].to(torch.long), right=True)


def _attention(q, k, v, keep, dropout_p, softmax_scale):
    """q [B, H, Sq, D], k and v [B, Hk, Sk, D], keep [Sq, Sk] booleans (True: attend) or None."""
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout_p, scale=softmax_scale)
    if keep is not None:
        out = out.masked_fill(~keep.any(dim=-1)[:, None], 0.0)  # a query that sees no key: zeros, not NaN
    return out


flash_attn_func.has_backward = True
flash_attn_func.can_torch_compile = True  # plain torch ops only
flash_attn_varlen_func.has_backward = True
flash_attn_varlen_func.can_torch_compile = True
