"""kernelhook for transformers users, in one import: ``use_kernels=True`` and attention kernels through
kernelhook, without the ``kernels`` package.

    import kernelhook.transformers
    kernelhook.transformers.enable()
    model = AutoModelForCausalLM.from_pretrained(name, use_kernels=True)   # kernelized by kernelhook
    model.train()                                                           # kernelized again, for TRAINING
    name = kernelhook.transformers.register_attention("org/repo")          # for attn_implementation=name
    kernelhook.transformers.disable()                                       # transformers' own method again

Each name lives in ``kernelhook/integrations/`` (see there for what enable() replaces and why).
Importing this module imports neither transformers nor any kernel; enable() and register_attention do.
"""

from .integrations.transformers import disable, enable, is_enabled, set_use_kernels
from .integrations.transformers_attention import register_attention
from .integrations.transformers_table import transformers_kernel_table

__all__ = ["disable", "enable", "is_enabled", "register_attention", "set_use_kernels", "transformers_kernel_table"]
