"""A simulation of torch_npu, for tests only: never installed, put on sys.path by the tests that use it.

It is not torch_npu. There is no NPU and no CANN behind it: its operators (``npu_rms_norm``,
``npu_rotary_mul``, ``npu_fusion_attention``, in ``_simulation.py``) compute on CPU tensors what
Ascend's API reference says the fused operators compute, so that the Ascend builds in
examples/kernels, which call them, run on a machine without an NPU and can be compared with the
universal builds.

Importing it does to torch what importing torch_npu 2.13.0 does and kernelhook reads
(torch_npu's ``_init/registry/backend.py`` and ``utils/collect_env.py``):

* torch's privateuse1 backend is renamed ``npu`` and ``torch.npu`` is registered. Both are
  process-wide and happen once per process: import this only in a fresh interpreter.
* ``torch.version.cann`` is set from the ``ascend_*_install.info`` file under ``ASCEND_HOME_PATH``
  (``"not known"`` without one), and ``torch_npu.npu.utils.get_cann_version()`` answers for the
  runtime (see ``npu/utils.py``).

What it does not do: no device exists (``torch.npu.is_available()`` is False, there is no
``Tensor.npu()``), tensors stay on the CPU, and nothing runs at a device's speed or precision.
"""

import torch

from . import npu
from ._simulation import CALLS, npu_fusion_attention, npu_rms_norm, npu_rotary_mul
from .utils import collect_env

__version__ = "2.13.0"  # the torch-npu release the simulated behaviour is read from
SIMULATION = True  # real torch_npu has no such attribute: tests check they got the simulation

__all__ = ["CALLS", "SIMULATION", "npu", "npu_fusion_attention", "npu_rms_norm", "npu_rotary_mul"]

torch.utils.rename_privateuse1_backend("npu")
torch._register_device_module("npu", npu)
torch.version.cann = collect_env.get_cann_version()
