import torch
from torch import nn

from ._triton import rms_norm


class RMSNorm(nn.Module):
    """Forward for modules that hold `weight` and `variance_epsilon` (transformers' *RMSNorm)."""

    # Set to what is verified: the Triton kernel has no backward (training keeps the module's own
    # forward), and it has not been checked under torch.compile on a GPU yet.
    has_backward = False
    can_torch_compile = False

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return rms_norm(hidden_states, self.weight, self.variance_epsilon)
