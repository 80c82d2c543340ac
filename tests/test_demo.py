"""The README's main job runs end to end: the demo in examples/."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")


def test_the_demo_loads_through_the_hook_and_kernelizes_a_qwen3():
    demo = Path(__file__).resolve().parent.parent / "examples" / "demo.py"
    result = subprocess.run([sys.executable, str(demo)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(0 HTTP requests, warm)" in result.stdout
    assert "use_kernels=True" in result.stdout and "11 modules bound" in result.stdout  # 9 norms, 2 rotary functions
    assert "model.layers.1.self_attn.rotary_pos_emb    kernels-ext-npu/rotary@" in result.stdout
    assert "attention (every layer)" in result.stdout and "logits max abs difference 0.0e+00" in result.stdout
    assert "apply_rotary_pos_emb matches transformers' (max abs error 0.0e+00)" in result.stdout
