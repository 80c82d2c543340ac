"""The kernel repos the loader tests import, published to a LocalHub with real history.

Test kernels are plain Python (no torch import) so that loading them is fast;
each says which variant and version it is, so a test can tell what it got.
"""

import json

ROTARY_EXAMPLE = "kernels-ext-npu/rotary"  # examples/kernels/rotary: a function kernel, flat layout with metadata.json
ATTENTION_EXAMPLE = "kernels-ext-npu/attention"  # examples/kernels/attention: flash-attn's two conventions
COUNTED_ATTENTION = "acme/attention-counted"  # the example's universal build, counting its calls
SEED = "kernels-ext-npu/RMSNorm"  # model repo, package-folder layout: build/<variant>/RMSNorm/__init__.py
RELU = "kernels-community/relu"  # kernel repo, the newer layout: build/<variant>/__init__.py + metadata.json
SEED_VARIANTS = (
    "torch-universal",
    "torch27-cxx11-cann82-aarch64-linux",
    "torch27-cxx11-cu126-x86_64-linux",
    "torch28-cxx11-rocm64-x86_64-linux",
)


def seed_layout(variant: str, version: str, package: str = "RMSNorm") -> dict:
    base = f"build/{variant}/{package}"
    return {
        f"{base}/__init__.py": (
            "from . import layers\n"
            "from .layers import RMSNorm\n"
            f"VARIANT = {variant!r}\n"
            f"VERSION = {version!r}\n"
        ),
        f"{base}/layers.py": (
            "class RMSNorm:\n"
            "    def forward(self, x):\n"
            f"        return ('rmsnorm', {version!r}, x)\n"
        ),
    }


def new_layout(variant: str, version: str, extra: dict | None = None) -> dict:
    base = f"build/{variant}"
    files = {
        f"{base}/__init__.py": (
            "from . import _ops, layers\n"
            f"VARIANT = {variant!r}\n"
            f"VERSION = {version!r}\n"
            "def relu(xs):\n"
            "    return [max(0, x) for x in xs]\n"
        ),
        f"{base}/_ops.py": f"OPS_NAMESPACE = 'relu_{version.replace('.', '_')}'\n",
        f"{base}/layers.py": "class ReLU:\n    def forward(self, x):\n        return max(0, x)\n",
        f"{base}/lazy.py": "LOADED_LAZILY = True\n",  # not imported by __init__: reached through the hook
        f"{base}/metadata.json": json.dumps({"id": "relu", "python-depends": []}),
    }
    files.update(extra or {})
    return files


def publish_world(hub) -> dict:
    """Publish every repo the read-only tests use; returns the commit shas by label."""
    shas = {}
    hub.create_repo(SEED)
    v1 = {}
    for variant in SEED_VARIANTS:
        v1.update(seed_layout(variant, "1.0"))
    shas["seed_v1"] = hub.commit(SEED, v1, branch="v1", message="RMSNorm 1.0")
    hub.set_branch(SEED, "main", shas["seed_v1"])
    hub.create_tag(SEED, "v1.0.0", shas["seed_v1"])
    hub.create_tag(SEED, "stable", shas["seed_v1"])
    v2 = {}
    for variant in SEED_VARIANTS:
        v2.update(seed_layout(variant, "2.0"))
    hub.set_branch(SEED, "v2", shas["seed_v1"])
    shas["seed_v2"] = hub.commit(SEED, v2, branch="v2", message="RMSNorm 2.0")
    hub.set_branch(SEED, "main", shas["seed_v2"])

    hub.create_repo(RELU, repo_type="kernel")
    blob = {"build/torch-universal/weights.bin": bytes(range(256)) * 64}  # an LFS file
    shas["relu_v1"] = hub.commit(RELU, new_layout("torch-universal", "1.0", blob), repo_type="kernel", branch="v1")

    # Both spellings exist: the literal name wins.
    for repo_id, label in (("acme/liger_kernels", "literal"), ("acme/liger-kernels", "hyphenated")):
        hub.create_repo(repo_id)
        shas[label] = hub.commit(repo_id, seed_layout("torch-universal", label, package="liger"))
    hub.create_repo("acme/my.kernel")  # a dot: reachable through get_kernel only
    shas["dotted"] = hub.commit("acme/my.kernel", new_layout("torch-universal", "dotted"))
    hub.create_repo("acme/no-build")
    shas["no_build"] = hub.commit("acme/no-build", {"README.md": "# not a kernel\n"})
    hub.create_repo("acme/cuda-only")
    shas["cuda_only"] = hub.commit("acme/cuda-only", seed_layout("torch27-cxx11-cu126-x86_64-linux", "1.0", "cuda_only"))
    hub.create_repo("acme/broken")
    shas["broken"] = hub.commit("acme/broken", {
        "build/torch-universal/__init__.py": "from . import helper\nraise RuntimeError('kernel init failed')\n",
        "build/torch-universal/helper.py": "X = 1\n",
    })
    hub.create_repo("acme/tagless")  # no vN branch and no main: unpinned has nothing to pick
    shas["tagless"] = hub.commit("acme/tagless", seed_layout("torch-universal", "x", "tagless"), branch="dev")
    return shas


# -- layer repos for kernelize: plain torch, so they run on CPU --------------------------------

RMS_LAYER = '''
import torch
from torch import nn


class RMSNorm(nn.Module):
    has_backward = {has_backward}
    can_torch_compile = {can_compile}

    def forward(self, hidden_states):
        variance = hidden_states.float().pow(2).mean(-1, keepdim=True)
        normed = hidden_states.float() * torch.rsqrt(variance + self.variance_epsilon)
        return {scale} * self.weight * normed.to(hidden_states.dtype)
'''

BAD_LAYERS = '''
from torch import nn


class WithInit(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, hidden_states):
        return hidden_states


class WithState(nn.Module):
    cache = {}

    def forward(self, hidden_states):
        return hidden_states


class TwoInputs(nn.Module):
    def forward(self, hidden_states, other):
        return hidden_states


class NotAModule:
    def forward(self, hidden_states):
        return hidden_states


class BadFlag(nn.Module):
    has_backward = "yes"

    def forward(self, hidden_states):
        return hidden_states


class Renamed(nn.Module):
    def forward(self, x):
        return x
'''


ROTARY = '''
import torch

CALLS = []  # one entry per call: tests tell the kernel ran from this


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    CALLS.append(q.shape)
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return {scale} * (q * cos + rotate_half(q) * sin), {scale} * (k * cos + rotate_half(k) * sin)


def rotary_without_unsqueeze(q, k, cos, sin):
    return q, k


apply_rotary_pos_emb.has_backward = True
'''


# Appended to examples/kernels/attention's universal build: the same functions, counting their calls.
ATTENTION_COUNTER = '''

CALLS = []  # (function, query shape) per call: tests tell which function ran from this
_dense, _varlen = flash_attn_func, flash_attn_varlen_func


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False):
    CALLS.append(("dense", tuple(q.shape)))
    return _dense(q, k, v, dropout_p=dropout_p, softmax_scale=softmax_scale, causal=causal)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False):
    CALLS.append(("varlen", tuple(q.shape)))
    return _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=dropout_p,
                   softmax_scale=softmax_scale, causal=causal)
'''

# transformers' own convention, on torch's sdpa with transformers' sdpa mask, counting its calls.
ATTENTION_FORWARD = '''
import torch

CALLS = []


def flash_attn_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    CALLS.append(tuple(query.shape))
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    causal = attention_mask is None and query.shape[2] > 1
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling, is_causal=causal)
    return out.transpose(1, 2).contiguous(), None


attention_forward = flash_attn_forward  # the same function under a name of no convention
'''


def layer_repo(layers_py: str, variant: str = "torch-universal") -> dict:
    return {f"build/{variant}/__init__.py": "from . import layers\n", f"build/{variant}/layers.py": layers_py}


def rms_layer(scale: float = 1.0, has_backward: bool = True, can_compile: bool = True) -> str:
    return RMS_LAYER.format(scale=scale, has_backward=has_backward, can_compile=can_compile)


def publish_layers(hub, examples_dir) -> dict:
    """The example RMSNorm repo as kernels-ext-npu/RMSNorm (the default npu mapping's target), and test layers.

    `scale` tells repos apart in outputs: acme/rms-x2 computes 2 * RMSNorm.
    """
    shas = {}
    hub.create_repo(SEED)
    shas["seed"] = hub.commit_dir(SEED, examples_dir / "kernels" / "RMSNorm", branch="v1")
    hub.set_branch(SEED, "main", shas["seed"])
    hub.create_repo(ROTARY_EXAMPLE)
    shas["rotary"] = hub.commit_dir(ROTARY_EXAMPLE, examples_dir / "kernels" / "rotary", branch="v1")
    hub.create_repo(ATTENTION_EXAMPLE)
    shas["attention"] = hub.commit_dir(ATTENTION_EXAMPLE, examples_dir / "kernels" / "attention", branch="v1")
    universal = (examples_dir / "kernels" / "attention" / "build" / "torch-universal" / "__init__.py").read_text()
    for repo_id in (COUNTED_ATTENTION, "acme/flash-attn"):  # "flash" in a repo name, never in an attention name
        hub.create_repo(repo_id)
        shas[repo_id] = hub.commit(repo_id, {"build/torch-universal/__init__.py": universal + ATTENTION_COUNTER},
                                   branch="v1")
    hub.create_repo("acme/attention-forward")
    shas["acme/attention-forward"] = hub.commit(
        "acme/attention-forward", {"build/torch-universal/__init__.py": ATTENTION_FORWARD}, branch="v1")
    repos = {
        "acme/rms": rms_layer(),
        "acme/rms-x2": rms_layer(scale=2.0),
        "acme/rms-x3": rms_layer(scale=3.0),
        "acme/rms-no-backward": rms_layer(has_backward=False),
        "acme/rms-no-compile": rms_layer(can_compile=False),
        "acme/bad-layers": BAD_LAYERS,
    }
    for repo_id, code in repos.items():
        hub.create_repo(repo_id)
        shas[repo_id] = hub.commit(repo_id, layer_repo(code), branch="v1")
    for repo_id, scale in (("acme/rotary", 1), ("acme/rotary-x2", 2)):
        hub.create_repo(repo_id)
        shas[repo_id] = hub.commit(repo_id, {"build/torch-universal/__init__.py": ROTARY.format(scale=scale)},
                                   branch="v1")
    hub.create_repo("acme/rms-cuda-only")
    hub.commit("acme/rms-cuda-only", layer_repo(rms_layer(), "torch27-cxx11-cu126-x86_64-linux"), branch="v1")
    hub.create_repo("acme/rms-broken")
    hub.commit("acme/rms-broken", {"build/torch-universal/__init__.py": "raise ImportError('needs torch_npu')\n"},
               branch="v1")
    return shas
