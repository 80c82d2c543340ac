"""The torch_npu simulation's operators (tests/npu_standin/torch_npu/_simulation.py) as ``torch_npu`` for one
in-process test, without what importing the simulated package does to torch (renaming the privateuse1
backend is process-wide; tests/test_npu_simulated.py does that in fresh interpreters).

Only a simulation: see tests/npu_standin/torch_npu/__init__.py for what it proves and what it does not.
"""

import importlib.util
import sys
import types
from pathlib import Path

OPERATORS = Path(__file__).resolve().parent / "npu_standin" / "torch_npu" / "_simulation.py"


def load_operators() -> types.ModuleType:
    """The operator file on its own, under a private name (touches nothing of torch's)."""
    spec = importlib.util.spec_from_file_location("_npu_simulated_operators", OPERATORS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def install(monkeypatch) -> types.ModuleType:
    """Put the simulated operators in sys.modules as torch_npu for one test; returns that module, whose
    CALLS lists (input_layout, sparse_mode) of each npu_fusion_attention call."""
    operators = load_operators()
    module = types.ModuleType("torch_npu", __doc__)
    module.CALLS = []

    def npu_fusion_attention(query, key, value, head_num, input_layout, **options):
        module.CALLS.append((input_layout, options.get("sparse_mode", 0)))
        return operators.npu_fusion_attention(query, key, value, head_num, input_layout, **options)

    module.npu_fusion_attention = npu_fusion_attention
    module.npu_rms_norm, module.npu_rotary_mul = operators.npu_rms_norm, operators.npu_rotary_mul
    monkeypatch.setitem(sys.modules, "torch_npu", module)
    return module
