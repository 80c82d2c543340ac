"""The CANN version from the toolkit's install-info file, read as torch_npu 2.13.0's
``torch_npu/utils/collect_env.py`` reads it when torch_npu is imported (a simulation)."""

import os
import re

_INSTALL_INFO = re.compile(r"ascend_.*_install\.info")


def get_cann_version() -> str:
    """The ``version=`` value of the ``ascend_*_install.info`` file under ASCEND_HOME_PATH.

    torch_npu walks the whole folder, takes the first such file of each directory and the first
    line that mentions "version", and the last directory walked wins; it refuses a path that does
    not exist. Unlike torch_npu, which walks the working directory when ASCEND_HOME_PATH is unset,
    the simulation then answers at once.

    Returns:
        The version string (e.g. ``"9.0.0"`` or ``"8.2.RC1"``), or ``"not known"``.

    Raises:
        RuntimeError: ASCEND_HOME_PATH names a path that does not exist.
    """
    home = os.environ.get("ASCEND_HOME_PATH", "")
    if not home:
        return "not known"
    root = os.path.realpath(home)
    if not os.path.exists(root):
        raise RuntimeError(f"The path does not exist: {root}")
    version = "not known"
    for folder, _, files in os.walk(root):
        found = [name for name in files if _INSTALL_INFO.match(name)]
        if found:
            with open(os.path.join(folder, found[0]), encoding="utf-8") as info:
                for line in info:
                    if "version" in line:
                        version = line.strip().split("=")[-1]
                        break
    return version
