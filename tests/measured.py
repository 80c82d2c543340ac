"""Models and kernel layers for tests/test_measure.py, importable by a fresh interpreter too.

HeavyScale's own forward does an expensive step (a chain of tanh) whose result it
does not need; its kernel skips it, so the kernel is many times faster. LightScale's
own forward is one multiply; its kernel does the same multiply after the same chain,
so it is many times slower. Both kernels return what the class's own forward does.
"""

import torch
from torch import nn

from kernelhook import use_kernel_forward_from_hub

WASTE = 40  # tanh calls of the step one side skips: enough that the slower side is about 10x slower or worse
SIZE = 64

FAST_REPO, SLOW_REPO = "acme/fast-scale", "acme/slow-scale"
MAPPING = {"HeavyScale": {"cpu": f"{FAST_REPO}@v1:HeavyScale"}, "LightScale": {"cpu": f"{SLOW_REPO}@v1:LightScale"}}

FAST_LAYER = """
from torch import nn


class HeavyScale(nn.Module):
    def forward(self, hidden_states):
        return hidden_states * self.weight
"""

SLOW_LAYER = f"""
import torch
from torch import nn


class LightScale(nn.Module):
    def forward(self, hidden_states):
        waste = hidden_states
        for _ in range({WASTE}):
            waste = torch.tanh(waste)
        return hidden_states * self.weight + 0 * waste[..., :1]
"""


def layer_files(layers_py: str) -> dict:
    return {"build/torch-universal/__init__.py": "from . import layers\n", "build/torch-universal/layers.py": layers_py}


@use_kernel_forward_from_hub("HeavyScale")
class HeavyScale(nn.Module):
    def __init__(self, size=SIZE):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(size) + 0.5)

    def forward(self, hidden_states):
        waste = hidden_states
        for _ in range(WASTE):
            waste = torch.tanh(waste)
        return hidden_states * self.weight + 0 * waste[..., :1]


@use_kernel_forward_from_hub("LightScale")
class LightScale(nn.Module):
    def __init__(self, size=SIZE):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(size) + 0.5)

    def forward(self, hidden_states):
        return hidden_states * self.weight


def model(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(SIZE, SIZE), HeavyScale(), LightScale(), HeavyScale(), LightScale()).to(dtype)


def sample(dtype=torch.float32, rows=32):
    torch.manual_seed(1)
    return torch.randn(rows, SIZE, dtype=dtype)
