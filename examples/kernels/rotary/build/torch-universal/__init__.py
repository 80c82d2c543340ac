"""Rotary position embedding in plain PyTorch: runs on any device."""

import torch

__all__ = ["apply_rotary_pos_emb", "rotate_half"]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """The last dimension's halves swapped, the first negated: (-x2, x1)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1):
    """q and k rotated by the angles whose cos and sin are given, as transformers computes it."""
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


apply_rotary_pos_emb.has_backward = True
apply_rotary_pos_emb.can_torch_compile = True  # plain torch ops only
