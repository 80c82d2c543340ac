"""RMSNorm on Ascend NPU through torch_npu's fused operator (CANN 8.2, torch 2.7)."""

from . import layers
from .layers import RMSNorm

__all__ = ["RMSNorm", "layers", "rms_norm"]


def rms_norm(x, weight, epsilon: float = 1e-6):
    return layers.rms_norm(x, weight, epsilon)
