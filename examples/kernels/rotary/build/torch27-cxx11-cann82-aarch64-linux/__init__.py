"""Rotary position embedding on Ascend NPUs through torch_npu's fused RotaryMul operator."""

import torch
import torch_npu

__all__ = ["apply_rotary_pos_emb"]


def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1):
    """q and k rotated by the angles whose cos and sin are given, as transformers computes it.

    npu_rotary_mul(x, r1, r2) is r1 * x + r2 * rotate_half(x) in its default "half" mode, on 4-D
    inputs; cos and sin unsqueezed at dim 1 broadcast over the heads (the B1SD form it supports for
    BNSD inputs).
    """
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return torch_npu.npu_rotary_mul(q, cos, sin), torch_npu.npu_rotary_mul(k, cos, sin)


apply_rotary_pos_emb.has_backward = True  # torch_npu registers RotaryMulGrad for it
apply_rotary_pos_emb.can_torch_compile = False  # not verified on a device yet
