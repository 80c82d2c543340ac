"""Written as a user of the public `kernels` package writes it: layer and function repositories in mappings,
local and locked repositories, use_kernel_mapping, every mode. Only the import line below names kernelhook
(it read `from kernels import (`); everything else is the kernels package's API as its docs show it.

The Hub is kernelhook's loopback Hub (the kenv fixture); acme/rms-x2 computes 2 * RMSNorm, acme/rms-x3
3 * RMSNorm, so outputs tell which kernel ran."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from kernelhook import (
    FuncRepository,
    LayerRepository,
    LocalLayerRepository,
    LockedLayerRepository,
    Mode,
    get_kernel,
    get_local_kernel,
    has_kernel,
    kernelize,
    use_kernel_forward_from_hub,
    use_kernel_mapping,
    use_kernelized_func,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "kernels"


@use_kernel_forward_from_hub("RMSNorm")
class RMSNorm(nn.Module):
    def __init__(self, hidden_size=8, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * hidden_states * torch.rsqrt(variance + self.variance_epsilon)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


@use_kernel_forward_from_hub("rotary_pos_emb")
def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


@use_kernelized_func(apply_rotary_pos_emb)
class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = RMSNorm()

    def forward(self, q, k, cos, sin):
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        return self.norm(q + k)


def inputs():
    torch.manual_seed(0)
    return torch.randn(2, 2, 3, 8), torch.randn(2, 2, 3, 8), torch.randn(2, 3, 8), torch.randn(2, 3, 8)


def run(model):
    with torch.no_grad():
        return model(*inputs())


@pytest.fixture(autouse=True)
def rotary_back_to_its_own_forward():
    yield
    kernelize(apply_rotary_pos_emb, device="xpu", mode=Mode.INFERENCE)  # the marked function is shared


def test_layer_and_function_repositories_in_one_mapping(kenv):
    model = Attention()
    reference = run(model)
    mapping = {
        "RMSNorm": {"cpu": LayerRepository(repo_id="acme/rms-x2", layer_name="RMSNorm", version=1)},
        "rotary_pos_emb": {"cpu": FuncRepository(repo_id="kernels-ext-npu/rotary", func_name="apply_rotary_pos_emb",
                                                 version=1)},
    }
    with use_kernel_mapping(mapping):
        model = kernelize(model, mode=Mode.INFERENCE, device="cpu")
    torch.testing.assert_close(run(model), 2 * reference)


@pytest.mark.parametrize(
    "mode, scale",
    [
        (Mode.INFERENCE, 2),
        (Mode.TRAINING, 3),
        (Mode.INFERENCE | Mode.TORCH_COMPILE, 1),
        (Mode.TRAINING | Mode.TORCH_COMPILE, 1),
    ],
)
def test_every_mode_picks_its_entry(kenv, mode, scale):
    mapping = {
        "RMSNorm": {
            "cpu": {
                Mode.INFERENCE: LayerRepository(repo_id="acme/rms-x2", layer_name="RMSNorm", version=1),
                Mode.TRAINING: LayerRepository(repo_id="acme/rms-x3", layer_name="RMSNorm", version=1),
                Mode.FALLBACK: LayerRepository(repo_id="acme/rms", layer_name="RMSNorm", version=1),
            }
        }
    }
    model = RMSNorm()
    torch.manual_seed(0)
    x = torch.randn(2, 8)
    reference = model(x)
    with use_kernel_mapping(mapping):
        model = kernelize(model, mode=mode, device="cpu")
    torch.testing.assert_close(model(x), scale * reference)


def test_a_local_repository_during_development(kenv):
    model = RMSNorm()
    torch.manual_seed(0)
    x = torch.randn(2, 8)
    reference = model(x)
    mapping = {"RMSNorm": {"cpu": LocalLayerRepository(repo_path=EXAMPLES / "RMSNorm", layer_name="RMSNorm")}}
    with use_kernel_mapping(mapping):
        model = kernelize(model, mode=Mode.INFERENCE, device="cpu")
    torch.testing.assert_close(model(x), reference)
    assert type(model).forward.__module__.endswith(".layers")  # the folder's layer, not the class's own forward
    kernel = get_local_kernel(EXAMPLES / "RMSNorm")
    torch.testing.assert_close(kernel.rms_norm(x, model.weight, epsilon=1e-6), reference)


def test_a_locked_repository(kenv, tmp_path):
    lockfile = tmp_path / "kernels.lock"
    lockfile.write_text(json.dumps([
        {"dependency": {"repo-id": "acme/rms-x2", "version": 1}, "lock": {"commit": kenv.shas["acme/rms-x2"]}}
    ]))
    model = RMSNorm()
    torch.manual_seed(0)
    x = torch.randn(2, 8)
    reference = model(x)
    mapping = {"RMSNorm": {"cpu": LockedLayerRepository(repo_id="acme/rms-x2", lockfile=lockfile, layer_name="RMSNorm")}}
    with use_kernel_mapping(mapping):
        model = kernelize(model, mode=Mode.INFERENCE, device="cpu")
    torch.testing.assert_close(model(x), 2 * reference)


def test_loading_kernels_directly(kenv):
    assert has_kernel("acme/rms", version=1)
    kernel = get_kernel("acme/rms", version=1)
    assert hasattr(kernel.layers, "RMSNorm")
