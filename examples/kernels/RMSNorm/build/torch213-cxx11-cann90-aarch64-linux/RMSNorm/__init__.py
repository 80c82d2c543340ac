"""RMSNorm on Ascend NPU through torch_npu's fused operator (CANN 9.0, torch 2.13: the pairing torch-npu 2.13 is built for)."""

from . import layers
from .layers import RMSNorm

__all__ = ["RMSNorm", "layers", "rms_norm"]


def rms_norm(x, weight, epsilon: float = 1e-6):
    return layers.rms_norm(x, weight, epsilon)
