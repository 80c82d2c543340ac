"""torch_npu.npu.utils.get_cann_version, simulated.

torch_npu asks the CANN runtime library (``torch_npu._C._get_cann_version(module)``), which reports
strings such as ``"8.2.RC1"`` or ``"9.1.0"``. The simulation has no runtime: it answers with
TORCH_NPU_SIMULATION_CANN_VERSION when set (so a test can make the runtime and the install-info
file disagree), else with the install-info file's version, else it fails as a missing runtime would.
"""

import os

from ..utils import collect_env

MODULES = ("CANN", "RUNTIME", "COMPILER", "HCCL", "TOOLKIT", "OPP", "OPP_KERNEL", "DRIVER")


def get_cann_version(module: str = "CANN") -> str:
    """The version of a CANN component, as the runtime would report it (simulated: one version for all).

    Returns:
        The version string.

    Raises:
        RuntimeError: module is not one torch_npu names, or no version is known to the simulation.
    """
    if module not in MODULES:
        raise RuntimeError(f"get_cann_version: module {module!r} is not one of {', '.join(MODULES)}")
    version = os.environ.get("TORCH_NPU_SIMULATION_CANN_VERSION") or collect_env.get_cann_version()
    if version == "not known":
        raise RuntimeError("get_cann_version (simulated torch_npu): no CANN runtime; set "
                           "TORCH_NPU_SIMULATION_CANN_VERSION or ASCEND_HOME_PATH")
    return version
