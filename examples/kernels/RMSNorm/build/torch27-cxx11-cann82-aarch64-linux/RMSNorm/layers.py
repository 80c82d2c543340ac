import torch
import torch_npu
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, epsilon: float) -> torch.Tensor:
    # npu_rms_norm returns (y, rstd); rstd is kept for the backward pass.
    return torch_npu.npu_rms_norm(x, weight, epsilon=epsilon)[0]


class RMSNorm(nn.Module):
    """Forward for modules that hold `weight` and `variance_epsilon` (transformers' *RMSNorm)."""

    has_backward = True  # torch_npu registers the backward of npu_rms_norm (it keeps rstd for it)
    can_torch_compile = True  # torch_npu ships a meta registration for npu_rms_norm, so dynamo can trace it

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch_npu.npu_rms_norm(hidden_states, self.weight, epsilon=self.variance_epsilon)[0]
