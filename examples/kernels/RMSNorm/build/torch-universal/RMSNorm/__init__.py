"""RMSNorm for any machine: plain PyTorch (the torch-universal build)."""

from . import layers
from .layers import RMSNorm

__all__ = ["RMSNorm", "layers", "rms_norm"]


def rms_norm(x, weight, epsilon: float = 1e-6):
    return layers.rms_norm(x, weight, epsilon)
