"""RMSNorm on CUDA and ROCm GPUs, written in Triton (the torch-cuda build)."""

from . import layers
from .layers import RMSNorm
from ._triton import rms_norm

__all__ = ["RMSNorm", "layers", "rms_norm"]
