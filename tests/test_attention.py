"""Hub attention kernels as transformers attention implementations (register_attention).

A tiny Qwen3ForCausalLM, built from a config and saved with save_pretrained (no download), is
loaded with attn_implementation=<the registered name>; its logits and greedy generations must
equal sdpa's, with the kernel's own call counters proving the kernel ran.
"""

import os

import pytest
import torch

import kernelhook
from kernelhook.errors import AttentionKernelError, InvalidKernelName, UnsupportedAttentionError
from kernelhook.integrations.transformers_attention import FlashAttentionAdapter
from kernelhook.transformers import register_attention

from . import npu_simulation
from .conftest import run_python
from .repos import ATTENTION_EXAMPLE, COUNTED_ATTENTION

transformers = pytest.importorskip("transformers")

LAYERS = 2
NEW_TOKENS = 4
PAD = 0


def qwen3_config(**overrides):
    settings = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                    pad_token_id=PAD)
    settings.update(overrides)
    return transformers.Qwen3Config(**settings)


def save(model_class, config, path):
    torch.manual_seed(0)
    model_class(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    """A tiny Qwen3 saved to disk, as a user's checkpoint would be."""
    return save(transformers.Qwen3ForCausalLM, qwen3_config(), tmp_path_factory.mktemp("qwen3"))


def load(path, attn_implementation):
    model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn_implementation)
    return model.eval()


def batch(padded: bool):
    """Two rows of 7 tokens; padded: the second row is left-padded by 3, as generation pads."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 128, (2, 7), generator=generator)
    mask = torch.ones(2, 7, dtype=torch.long)
    if padded:
        ids[1, :3], mask[1, :3] = PAD, 0
    return ids, mask


def run(model, ids, mask, **generate_options):
    """The logits of the real tokens, and a greedy generation of NEW_TOKENS."""
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[mask.bool()]
        generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                                   pad_token_id=PAD, **generate_options)
    return logits, generated


def assert_same_as_sdpa(path, name, padded, **generate_options):
    ids, mask = batch(padded)
    logits, generated = run(load(path, name), ids, mask, **generate_options)
    want_logits, want_generated = run(load(path, "sdpa"), ids, mask, **generate_options)
    torch.testing.assert_close(logits, want_logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(generated, want_generated)


# -- both conventions, unpadded and left-padded -------------------------------------------------------


CONVENTIONS = [
    # (kernel as typed, padded batch, the functions that must have run, and none other)
    (COUNTED_ATTENTION, False, {"dense"}),  # both offered: unpadded batches take the dense function
    (COUNTED_ATTENTION, True, {"varlen"}),  # padded ones are packed for the varlen function
    (f"{COUNTED_ATTENTION}:flash_attn_varlen_func", False, {"varlen"}),  # varlen only: one sequence per row
    (f"{COUNTED_ATTENTION}:flash_attn_varlen_func", True, {"varlen"}),
    (f"{COUNTED_ATTENTION}:flash_attn_func", False, {"dense"}),  # dense only
    (f"{COUNTED_ATTENTION}@v1", True, {"varlen"}),  # a pinned revision
]


@pytest.mark.parametrize("kernel, padded, ran", CONVENTIONS, ids=[f"{c[0]}-{'padded' if c[1] else 'unpadded'}"
                                                                   for c in CONVENTIONS])
def test_flash_conventions_give_sdpa_logits_and_generations(kenv, qwen3, kernel, padded, ran):
    name = register_attention(kernel)
    calls = kernelhook.get_kernel(COUNTED_ATTENTION).CALLS
    assert_same_as_sdpa(qwen3, name, padded)
    assert {function for function, _ in calls} == ran
    assert len(calls) == LAYERS * (1 + NEW_TOKENS)  # the forward, the prefill and NEW_TOKENS - 1 decoding steps


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("kernel", ["acme/attention-forward", "acme/attention-forward:attention_forward"])
def test_transformers_convention_is_registered_as_it_is_with_the_sdpa_mask(kenv, qwen3, kernel, padded):
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    name = register_attention(kernel)
    module = kernelhook.get_kernel("acme/attention-forward")
    assert AttentionInterface()[name] is module.flash_attn_forward
    assert AttentionMaskInterface()[name] is sdpa_mask
    assert_same_as_sdpa(qwen3, name, padded)
    assert len(module.CALLS) == LAYERS * (1 + NEW_TOKENS)


@pytest.mark.parametrize("padded", [False, True])
def test_the_published_example_matches_sdpa(kenv, qwen3, padded):
    name = register_attention(ATTENTION_EXAMPLE)
    module = kernelhook.get_kernel(ATTENTION_EXAMPLE)
    adapter = transformers.AttentionInterface()[name]
    assert isinstance(adapter, FlashAttentionAdapter)
    assert (adapter.dense, adapter.varlen) == (module.flash_attn_func, module.flash_attn_varlen_func)
    assert kernelhook.origin(module).variant == "torch-universal"
    assert_same_as_sdpa(qwen3, name, padded)


@pytest.mark.parametrize("padded", [False, True])
def test_a_static_cache_keeps_its_empty_slots_out(kenv, qwen3, padded):
    # A static cache hands attention every slot, filled or not; without padding, generate drops the
    # mask, so the kernel must be told where the filled slots end.
    name = register_attention(COUNTED_ATTENTION)
    assert_same_as_sdpa(qwen3, name, padded, cache_implementation="static")


def test_set_attn_implementation_switches_a_loaded_model(kenv, qwen3):
    name = register_attention(COUNTED_ATTENTION)
    calls = kernelhook.get_kernel(COUNTED_ATTENTION).CALLS
    model = load(qwen3, "sdpa")
    ids, mask = batch(padded=True)
    want = run(model, ids, mask)
    assert calls == []
    model.set_attn_implementation(name)
    assert model.config._attn_implementation == name
    got = run(model, ids, mask)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(got[1], want[1]) and len(calls) == LAYERS * (1 + NEW_TOKENS)


# -- the Ascend builds, on a simulation of npu_fusion_attention ----------------------------------------


@pytest.mark.parametrize("padded, layout", [(False, "BSND"), (True, "TND")])
def test_the_ascend_build_matches_sdpa_on_a_simulated_npu(kenv, qwen3, system, monkeypatch, padded, layout):
    system("torch213-cxx11-cann90-x86_64-linux")
    simulated = npu_simulation.install(monkeypatch)
    name = register_attention(ATTENTION_EXAMPLE)
    assert kernelhook.origin(kernelhook.get_kernel(ATTENTION_EXAMPLE)).variant == "torch213-cxx11-cann90-x86_64-linux"
    assert_same_as_sdpa(qwen3, name, padded)
    assert set(simulated.CALLS) == {(layout, 3)}  # bottom-right causal, the compressed mask
    assert len(simulated.CALLS) == LAYERS * (1 + NEW_TOKENS)


# -- names transformers must read as a plain registered function ----------------------------------------


def test_names_hold_neither_a_slash_nor_flash_so_transformers_keeps_them(kenv, qwen3):
    from transformers.integrations.hub_kernels import is_kernel
    from transformers.utils.generic import is_flash_attention_requested

    # What transformers does with the repo's own name: a Hub kernel for the kernels package, and flash paths.
    assert is_kernel("acme/flash-attn") and is_flash_attention_requested(requested_attention_implementation="x-flash")
    name = register_attention("acme/flash-attn")
    assert name == "kernelhook:acme.fa-attn"
    assert not is_kernel(name) and not is_flash_attention_requested(requested_attention_implementation=name)
    model = load(qwen3, name)
    assert model.config._attn_implementation == name  # neither rewritten to a kernel nor to a flash backend
    ids, mask = batch(padded=True)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert len(kernelhook.get_kernel("acme/flash-attn").CALLS) == LAYERS


@pytest.mark.parametrize(
    "name, words",
    [
        ("acme/attention", ["'/'", "Hub kernel"]),  # transformers would send it to the kernels package
        ("my_flash_attention", ["'flash'"]),  # transformers would take its flash-attention paths
        ("MyFlash", ["'flash'"]),
        ("fast-sdpa", ["'sdpa'"]),  # transformers would run sdpa's dispatch checks
        ("paged|mine", ["'|'"]),
        ("eager", ["already names"]),  # transformers' own
        ("", ["empty"]),
    ],
)
def test_a_name_transformers_would_misread_is_refused_before_any_download(kenv, name, words):
    with pytest.raises(AttentionKernelError) as info:
        register_attention(COUNTED_ATTENTION, name=name)
    for word in words + [COUNTED_ATTENTION, "kernelhook:acme.attention-counted"]:
        assert word in str(info.value)
    assert kenv.requests == []


def test_a_chosen_name_is_registered_and_can_be_registered_again(kenv, qwen3):
    assert register_attention(COUNTED_ATTENTION, name="my-attention") == "my-attention"
    assert register_attention(COUNTED_ATTENTION, name="my-attention") == "my-attention"
    assert load(qwen3, "my-attention").config._attn_implementation == "my-attention"


# -- what the kernel cannot compute is refused, naming the argument and the model --------------------------


def test_a_sliding_window_model_is_refused(kenv, tmp_path):
    path = save(transformers.Qwen3ForCausalLM,
                qwen3_config(use_sliding_window=True, sliding_window=4, max_window_layers=1), tmp_path)
    ids, mask = batch(padded=False)
    with torch.no_grad():
        load(path, "sdpa")(input_ids=ids, attention_mask=mask)  # the model itself runs
        with pytest.raises(UnsupportedAttentionError) as info:
            load(path, register_attention(COUNTED_ATTENTION))(input_ids=ids, attention_mask=mask)
    for word in ("Qwen3ForCausalLM (Qwen3Attention, layer 1)", "sliding_window=4", COUNTED_ATTENTION,
                 "attn_implementation='sdpa'"):
        assert word in str(info.value)


def test_softcapping_is_refused_and_an_unused_sliding_mask_is_not(kenv, tmp_path):
    # Gemma2 builds a sliding-window mask whatever its layers are; with none sliding, it goes unused.
    config = transformers.Gemma2Config(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, layer_types=["full_attention"] * 2, attn_logit_softcapping=50.0,
        pad_token_id=PAD)
    path = save(transformers.Gemma2ForCausalLM, config, tmp_path)
    ids, mask = batch(padded=False)
    with pytest.raises(UnsupportedAttentionError) as info, torch.no_grad():
        load(path, register_attention(COUNTED_ATTENTION))(input_ids=ids, attention_mask=mask)
    for word in ("Gemma2ForCausalLM", "Gemma2Attention, layer 0", "softcap=50.0", "attn_implementation='eager'"):
        assert word in str(info.value)


def test_packed_sequences_without_a_mask_are_refused(kenv, qwen3):
    model = load(qwen3, register_attention(COUNTED_ATTENTION))
    ids = torch.randint(1, 128, (1, 8))
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]])  # two sequences packed in one row
    with pytest.raises(UnsupportedAttentionError) as info, torch.no_grad():
        model(input_ids=ids, position_ids=positions, use_cache=False)
    assert "packed sequences" in str(info.value)


class _Attention(torch.nn.Module):
    is_causal = True
    layer_idx = 3


@pytest.mark.parametrize(
    "arguments, mask, words",
    [
        ({"s_aux": torch.zeros(4)}, None, ["s_aux=<tensor of shape (4,)>", "attention sinks"]),
        ({"position_bias": torch.zeros(1, 4, 5, 5)}, None, ["position_bias", "position bias"]),
        ({"cu_seq_lens_q": torch.tensor([0, 5])}, None, ["cu_seq_lens_q", "packed"]),
        ({"sliding_window": 2}, None, ["sliding_window=2"]),
        ({}, torch.ones(1, 1, 5, 5, dtype=torch.bool), ["4-D mask", "2-D attention_mask"]),
    ],
)
def test_the_adapter_refuses_what_flash_functions_cannot_take(kenv, arguments, mask, words):
    name = register_attention(COUNTED_ATTENTION)
    adapter = transformers.AttentionInterface()[name]
    q = k = v = torch.zeros(1, 4, 5, 16)
    with pytest.raises(UnsupportedAttentionError) as info:
        adapter(_Attention(), q, k, v, mask, dropout=0.0, scaling=None, **arguments)
    for word in words + ["_Attention, layer 3", COUNTED_ATTENTION]:
        assert word in str(info.value)
    assert kernelhook.get_kernel(COUNTED_ATTENTION).CALLS == []


def test_softcap_zero_means_off_and_runs(kenv):
    adapter = transformers.AttentionInterface()[register_attention(COUNTED_ATTENTION)]
    q = k = v = torch.randn(1, 4, 5, 16)
    out, weights = adapter(_Attention(), q, k, v, None, softcap=0.0)
    assert out.shape == (1, 5, 4, 16) and weights is None


def test_a_dense_only_kernel_refuses_a_padded_batch(kenv, qwen3):
    model = load(qwen3, register_attention(f"{COUNTED_ATTENTION}:flash_attn_func"))
    ids, mask = batch(padded=True)
    with pytest.raises(UnsupportedAttentionError) as info, torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    for word in ("Qwen3ForCausalLM", "padded", "flash_attn_varlen_func"):
        assert word in str(info.value)


# -- bad kernels and bad names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kernel, error, words",
    [
        (f"{COUNTED_ATTENTION}:nope", AttentionKernelError, ["no function 'nope'", "flash_attn_func"]),
        ("acme/rotary", AttentionKernelError, ["none of flash_attn_forward", "apply_rotary_pos_emb",
                                               "'acme/rotary:<function>'"]),
        (f"{COUNTED_ATTENTION}:not-a-name", AttentionKernelError, ["'not-a-name'", "not a Python function name"]),
        (f"{COUNTED_ATTENTION}@", AttentionKernelError, ["followed by a revision"]),
        ("attention", InvalidKernelName, ["'org/repo'"]),  # the loader's own check of the repo id
        (42, AttentionKernelError, ["org/repo[@revision][:function]"]),
    ],
)
def test_kernels_without_an_attention_function_are_refused(kenv, kernel, error, words):
    with pytest.raises(error) as info:
        register_attention(kernel)
    for word in words:
        assert word in str(info.value)


# -- the warm path, offline, in a fresh interpreter ---------------------------------------------------------


def test_a_warm_offline_run_in_a_fresh_interpreter_makes_no_request(kenv, qwen3):
    register_attention(ATTENTION_EXAMPLE)  # fills the cache
    kenv.clear_requests()
    env = {"HF_ENDPOINT": kenv.url, "KERNELHOOK_CACHE": os.environ["KERNELHOOK_CACHE"], "HF_HUB_OFFLINE": "1"}
    result = run_python(
        f"""
        import torch, transformers
        from kernelhook.transformers import register_attention
        name = register_attention({ATTENTION_EXAMPLE!r})
        model = transformers.AutoModelForCausalLM.from_pretrained({str(qwen3)!r}, attn_implementation=name)
        with torch.no_grad():
            logits = model(torch.tensor([[5, 6, 7]])).logits
        print(name, model.config._attn_implementation == name, bool(torch.isfinite(logits).all()))
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["kernelhook:kernels-ext-npu.attention", "True", "True"]
    assert kenv.requests == []


def test_importing_kernelhook_or_kernels_hub_never_imports_transformers(kenv):
    result = run_python(
        "import sys, kernelhook, kernels_hub; print('transformers' in sys.modules)",
        {"HF_ENDPOINT": kenv.url, "KERNELHOOK_CACHE": os.environ["KERNELHOOK_CACHE"]},
    )
    assert result.stdout.split() == ["False"], result.stderr
