"""Attention on Ascend NPUs through torch_npu's fused FlashAttentionScore operator, in flash-attn's two conventions.

torch_npu's API reference, "torch_npu.npu_fusion_attention" (hiascend.com, Ascend Extension for PyTorch 6.0.0,
apiref/apilist/ptaoplist_000850), gives the operator as
    npu_fusion_attention(query, key, value, head_num, input_layout, pse=None, padding_mask=None, atten_mask=None,
                         scale=1., keep_prob=1., ..., actual_seq_qlen=None, actual_seq_kvlen=None, sparse_mode=0, ...)
    -> (Tensor, Tensor, Tensor, Tensor, int, int, int)
and this build relies on these points of it:
  * input_layout "BSND" is flash_attn_func's [batch, seqlen, heads, head_dim]; "TND" is flash_attn_varlen_func's
    packed [total_tokens, heads, head_dim] and needs actual_seq_qlen and actual_seq_kvlen;
  * head_num is the query's head count; key and value may have fewer heads when theirs divides it
    (grouped-query attention, as flash-attn allows);
  * atten_mask is boolean and True means "masked out" (not computed); sparse_mode 2 is the causal mask aligned
    top-left, 3 aligned bottom-right, and both take the compressed 2048 x 2048 mask, True above the diagonal;
  * scale defaults to 1.0, not 1 / sqrt(head_dim), so it is always passed; keep_prob is 1 - dropout_p;
  * the first element of the returned tuple is the attention output.
flash-attn aligns a causal mask to the bottom-right corner (query i of seqlen_q sees keys up to
i + seqlen_k - seqlen_q), hence sparse_mode 3. actual_seq_qlen / actual_seq_kvlen are the cumulative sequence
ends, cu_seqlens[1:], as transformers' own Ascend path (transformers/integrations/npu_flash_attention.py) passes them.
"""

import math

import torch
import torch_npu

__all__ = ["flash_attn_func", "flash_attn_varlen_func"]

_RIGHT_DOWN_CAUSAL = 3  # sparse_mode: causal, aligned to the bottom-right corner
_COMPRESSED_MASKS = {}  # device -> the 2048 x 2048 mask sparse_mode 3 takes, made once per device


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False):
    """q [batch, seqlen_q, heads, head_dim], k and v [batch, seqlen_k, kv_heads, head_dim] -> q's shape."""
    return torch_npu.npu_fusion_attention(q, k, v, q.shape[2], "BSND", **_options(q, dropout_p, softmax_scale, causal))[0]


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False):
    """q [total_q, heads, head_dim], k and v [total_k, kv_heads, head_dim], packed; cu_seqlens_* the cumulative
    lengths (batch + 1 entries, from 0) -> q's shape. max_seqlen_* are accepted for the convention."""
    return torch_npu.npu_fusion_attention(
        q, k, v, q.shape[1], "TND",
        actual_seq_qlen=tuple(cu_seqlens_q[1:].tolist()), actual_seq_kvlen=tuple(cu_seqlens_k[1:].tolist()),
        **_options(q, dropout_p, softmax_scale, causal),
    )[0]


def _options(q, dropout_p, softmax_scale, causal):
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    options = {"scale": scale, "keep_prob": 1.0 - dropout_p}
    if causal:
        options.update(atten_mask=_compressed_causal_mask(q.device), sparse_mode=_RIGHT_DOWN_CAUSAL)
    return options


def _compressed_causal_mask(device):
    mask = _COMPRESSED_MASKS.get(device)
    if mask is None:
        mask = torch.triu(torch.ones(2048, 2048, dtype=torch.bool, device=device), diagonal=1)
        _COMPRESSED_MASKS[device] = mask
    return mask


flash_attn_func.has_backward = True  # torch_npu registers the operator's gradient (npu_fusion_attention_grad)
flash_attn_func.can_torch_compile = False  # not verified on a device yet
flash_attn_varlen_func.has_backward = True
flash_attn_varlen_func.can_torch_compile = False
