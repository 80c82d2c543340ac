"""kernelhook for transformers users, in one import: ``from kernelhook.transformers import register_attention``.

Each name lives in ``kernelhook/integrations/``; importing this module imports neither transformers
nor any kernel.
"""

from .integrations.transformers_attention import register_attention as register_attention
