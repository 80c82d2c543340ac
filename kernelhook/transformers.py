"""kernelhook for transformers: ``use_kernels=True`` through kernelhook, without the ``kernels`` package.

    import kernelhook.transformers
    kernelhook.transformers.enable()
    model = AutoModelForCausalLM.from_pretrained(name, use_kernels=True)   # kernelized by kernelhook
    model.train()                                                           # kernelized again, for TRAINING
    kernelhook.transformers.disable()                                       # transformers' own method again

The functions are kernelhook/integrations/transformers.py's (see there for what
enable() replaces and why). Importing this module does not import transformers;
enable() does.
"""

from .integrations.transformers import disable, enable, is_enabled, set_use_kernels
from .integrations.transformers_table import transformers_kernel_table

__all__ = ["disable", "enable", "is_enabled", "set_use_kernels", "transformers_kernel_table"]
