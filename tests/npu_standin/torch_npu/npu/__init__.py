"""torch.npu, simulated: registered as torch's ``npu`` device module by importing the simulation.

There is no device: is_available() is False and device_count() 0, so libraries that look for an
NPU (transformers, accelerate) keep tensors on the CPU, where the simulated operators run.
"""

from . import utils
from .utils import get_cann_version

__all__ = ["device_count", "get_cann_version", "is_available", "utils"]


def is_available() -> bool:
    """False: the simulation has no device."""
    return False


def device_count() -> int:
    """0: the simulation has no device."""
    return 0
