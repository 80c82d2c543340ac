import torch
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, epsilon: float) -> torch.Tensor:
    # What transformers' Qwen3RMSNorm computes, step for step: variance and normalisation in float32, the
    # result cast back to the input dtype, then multiplied by the weight (the output dtype follows promotion).
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return (x.float() * torch.rsqrt(variance + epsilon)).to(x.dtype) * weight


class RMSNorm(nn.Module):
    """Forward for modules that hold `weight` and `variance_epsilon` (transformers' *RMSNorm)."""

    has_backward = True  # plain torch operations: autograd differentiates them
    can_torch_compile = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return rms_norm(hidden_states, self.weight, self.variance_epsilon)
