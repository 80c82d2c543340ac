"""The torch_npu simulation's operators (tests/npu_standin/torch_npu/_simulation.py) against plain-torch
references, so that what the simulated Ascend builds compute is itself checked.

The operator file is loaded on its own, under a private name: importing the simulated package would
rename torch's privateuse1 backend for this whole process (tests/test_npu_simulated.py does that in
fresh interpreters)."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

SIMULATION = Path(__file__).resolve().parent / "npu_standin" / "torch_npu" / "_simulation.py"


def _load_operators():
    spec = importlib.util.spec_from_file_location("_npu_simulated_operators", SIMULATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ops = _load_operators()
NO_LIMIT = 2147483647


def test_loading_the_operators_leaves_torch_alone():
    assert torch._C._get_privateuse1_backend_name() == "privateuseone"
    assert "torch_npu" not in sys.modules


def randn(*shape, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator).to(dtype)


# -- npu_rms_norm ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape, gamma_shape", [((4, 64), (64,)), ((2, 3, 64), (64,)), ((2, 3, 4, 16), (4, 16))])
def test_rms_norm_matches_torch_rms_norm(dtype, shape, gamma_shape):
    x, gamma = randn(*shape, dtype=dtype), (randn(*gamma_shape, seed=1) + 1).to(dtype)
    y, rstd = ops.npu_rms_norm(x, gamma, epsilon=1e-5)
    expected = F.rms_norm(x.float(), gamma_shape, gamma.float(), eps=1e-5)
    torch.testing.assert_close(y, expected.to(dtype))  # one rounding to dtype, as a fused kernel does
    assert y.dtype == dtype and y.shape == x.shape
    reduced = tuple(range(x.dim() - len(gamma_shape), x.dim()))
    assert rstd.dtype == torch.float32  # the documented float32 intermediate, shaped as torch_npu's meta says
    assert rstd.shape == tuple(1 if i in reduced else n for i, n in enumerate(shape))
    torch.testing.assert_close(rstd, 1 / (x.float().pow(2).mean(reduced, keepdim=True) + 1e-5).sqrt())


def test_rms_norm_in_float32_is_bitwise_the_universal_builds_formula():
    x, weight = randn(3, 5, 64), randn(64, seed=1)
    universal = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * weight
    assert torch.equal(ops.npu_rms_norm(x, weight)[0], universal)


@pytest.mark.parametrize("x, gamma, complaint", [
    (torch.ones(4, 8, dtype=torch.int32), torch.ones(8, dtype=torch.int32), "dtype torch.int32"),  # not a float
    (torch.ones(4, 8), torch.ones(8, dtype=torch.float16), "differs from self's"),  # gamma's dtype must be self's
    (torch.ones(8), torch.ones(8), "1 dimensions; supported: 2 to 8"),  # self is 2-D at least
    (torch.ones(4, 8), torch.ones(4), "not self's trailing shape"),  # gamma covers the last dimensions
    (torch.ones(4, 8), torch.ones(()), "not self's trailing shape"),  # a scalar gamma covers nothing
])
def test_rms_norm_refuses_what_the_documentation_does_not_allow(x, gamma, complaint):
    with pytest.raises(RuntimeError, match=complaint):
        ops.npu_rms_norm(x, gamma)


# -- npu_rotary_mul -------------------------------------------------------------------------------

def rotate_half(x):
    return torch.cat((-x[..., x.shape[-1] // 2:], x[..., : x.shape[-1] // 2]), dim=-1)


def angles(batch, seq, dim, *, interleaved=False):
    """cos and sin as a rotary embedding makes them, [batch, 1, seq, dim] (B1SD)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
    freqs = torch.arange(seq).float().unsqueeze(1) * inv_freq
    emb = freqs.repeat_interleave(2, dim=-1) if interleaved else torch.cat((freqs, freqs), dim=-1)
    return emb.cos().expand(batch, 1, seq, dim), emb.sin().expand(batch, 1, seq, dim)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("r_batch, r_heads", [(1, 1), (2, 1), (2, 3)])  # 11SD, B1SD, BNSD for a BNSD input
def test_rotary_mul_half_is_transformers_rotation(dtype, r_batch, r_heads):
    x = randn(2, 3, 5, 16, dtype=dtype)
    cos, sin = angles(2, 5, 16)
    cos, sin = cos[:r_batch].expand(r_batch, r_heads, 5, 16).to(dtype), sin[:r_batch].expand(r_batch, r_heads, 5, 16).to(dtype)
    out = ops.npu_rotary_mul(x, cos, sin)
    expected = x.float() * cos.float() + rotate_half(x.float()) * sin.float()
    torch.testing.assert_close(out, expected.to(dtype))
    assert out.dtype == dtype and out.shape == x.shape


def test_rotary_mul_in_float32_is_bitwise_the_universal_builds_formula():
    x = randn(2, 3, 5, 16)
    cos, sin = angles(2, 5, 16)
    assert torch.equal(ops.npu_rotary_mul(x, cos, sin), x * cos + rotate_half(x) * sin)


def test_rotary_mul_interleave_rotates_adjacent_pairs_as_complex_numbers():
    x = randn(2, 3, 5, 16)
    cos, sin = angles(1, 5, 16, interleaved=True)
    out = ops.npu_rotary_mul(x, cos, sin, rotary_mode="interleave")
    turned = torch.view_as_complex(x.reshape(2, 3, 5, 8, 2).contiguous()) * torch.polar(
        torch.ones(5, 8), torch.atan2(sin[0, 0, :, ::2], cos[0, 0, :, ::2]))
    torch.testing.assert_close(out, torch.view_as_real(turned).reshape(2, 3, 5, 16))


def test_rotary_mul_with_a_rotate_matrix_applies_that_matrix():
    x = randn(1, 2, 4, 8)
    cos, sin = angles(1, 4, 8)
    half = torch.zeros(8, 8)  # the matrix that maps x to rotate_half(x)
    half[4:, :4] = -torch.eye(4)
    half[:4, 4:] = torch.eye(4)
    torch.testing.assert_close(ops.npu_rotary_mul(x, cos, sin, rotate=half), ops.npu_rotary_mul(x, cos, sin))


@pytest.mark.parametrize("x, r, mode, complaint", [
    (torch.ones(3, 5, 16), torch.ones(1, 5, 16), "half", "must be 4-D"),  # input, r1 and r2 are 4-D
    (torch.ones(2, 3, 5, 15), torch.ones(1, 1, 5, 15), "half", "must be even"),  # D is a multiple of 2
    (torch.ones(2, 3, 5, 16), torch.ones(1, 1, 4, 16), "half", "does not broadcast"),  # r1 fits input's S
    (torch.ones(2, 3, 5, 16), torch.ones(2, 3, 5, 16), "quarter", "rotary_mode 'quarter'"),  # two modes only
    (torch.ones(2, 3, 5, 16, dtype=torch.float64), torch.ones(1, 1, 5, 16), "half", "dtype torch.float64"),
])
def test_rotary_mul_refuses_what_the_documentation_does_not_allow(x, r, mode, complaint):
    with pytest.raises(RuntimeError, match=complaint):
        ops.npu_rotary_mul(x, r, r, rotary_mode=mode)


# -- npu_fusion_attention -------------------------------------------------------------------------

def bnsd(batch=2, heads=4, kv_heads=2, sq=5, skv=5, dim=8, dv=8, dtype=torch.float32):
    return (randn(batch, heads, sq, dim, dtype=dtype, seed=1), randn(batch, kv_heads, skv, dim, dtype=dtype, seed=2),
            randn(batch, kv_heads, skv, dv, dtype=dtype, seed=3))


def reference(q, k, v, keep=None, scale=1.0, bias=None):
    """torch's own attention, [B, N, S, D], keep: True where a position takes part (GQA by enable_gqa)."""
    mask = keep if bias is None else (bias if keep is None else bias.masked_fill(~keep, float("-inf")))
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, scale=scale,
                                          enable_gqa=True).to(q.dtype)


def to_layout(t, layout):
    if layout == "BSND":
        return t.transpose(1, 2).contiguous()
    if layout == "BSH":
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1)
    if layout == "SBH":
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1).transpose(0, 1).contiguous()
    return t


@pytest.mark.parametrize("layout", ["BNSD", "BSND", "BSH", "SBH"])
@pytest.mark.parametrize("kv_heads, dv", [(4, 8), (2, 8), (1, 4)])  # MHA; GQA; one key head, smaller value heads
def test_fusion_attention_layouts_match_sdpa(layout, kv_heads, dv):
    q, k, v = bnsd(kv_heads=kv_heads, dv=dv)
    scale = 1 / math.sqrt(8)
    out, *rest = ops.npu_fusion_attention(to_layout(q, layout), to_layout(k, layout), to_layout(v, layout), 4,
                                          layout, scale=scale)
    torch.testing.assert_close(out, to_layout(reference(q, k, v, scale=scale), layout))
    softmax_max, softmax_sum, softmax_out, seed, offset, numels = rest
    assert softmax_max.shape == softmax_sum.shape == (2, 4, 5, 8) and softmax_max.dtype == torch.float32
    assert softmax_out.numel() == 0 and (seed, offset, numels) == (0, 0, 0)


def test_fusion_attention_softmax_statistics_give_the_logsumexp():
    q, k, v = bnsd(kv_heads=4)
    _, softmax_max, softmax_sum, *_ = ops.npu_fusion_attention(q, k, v, 4, "BNSD", scale=0.3)
    scores = 0.3 * (q @ k.transpose(-1, -2))
    torch.testing.assert_close(softmax_max[..., 0], scores.amax(-1))
    assert torch.equal(softmax_max, softmax_max[..., :1].expand(-1, -1, -1, 8))  # one value, repeated 8 times
    torch.testing.assert_close(softmax_max[..., 0] + softmax_sum[..., 0].log(), torch.logsumexp(scores, -1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fusion_attention_keeps_the_input_dtype(dtype):
    q, k, v = bnsd(dtype=dtype)
    out = ops.npu_fusion_attention(q, k, v, 4, "BNSD", scale=0.5)[0]
    assert out.dtype == dtype
    torch.testing.assert_close(out, reference(q, k, v, scale=0.5))


def tril(sq, skv, diagonal=0):
    return torch.ones(sq, skv, dtype=torch.bool).tril(diagonal)


@pytest.mark.parametrize("sq, skv", [(5, 5), (3, 6), (6, 3)])
@pytest.mark.parametrize("sparse_mode, keep", [
    (0, lambda sq, skv: tril(sq, skv)),  # defaultMask: the mask as given (here, causal from the top left)
    (1, lambda sq, skv: tril(sq, skv, 1)),  # allMask: the mask as given
    (2, lambda sq, skv: tril(sq, skv)),  # leftUpCausal, generated from the geometry
    (3, lambda sq, skv: tril(sq, skv, skv - sq)),  # rightDownCausal: the last query row sees every key
])
def test_fusion_attention_masks_true_positions_out(sq, skv, sparse_mode, keep):
    q, k, v = bnsd(sq=sq, skv=skv)
    wanted = keep(sq, skv)
    given = ~wanted if sparse_mode < 2 else torch.ones(2048, 2048, dtype=torch.bool).triu(1)
    out, softmax_max, softmax_sum, *_ = ops.npu_fusion_attention(q, k, v, 4, "BNSD", atten_mask=given, scale=0.5,
                                                                 sparse_mode=sparse_mode)
    rows = wanted.any(-1)  # a row with nothing to attend to gives zeros
    torch.testing.assert_close(out[:, :, rows], reference(q, k, v, wanted, 0.5)[:, :, rows])
    assert torch.equal(out[:, :, ~rows], torch.zeros_like(out[:, :, ~rows]))
    assert bool((softmax_max[:, :, ~rows] == float("-inf")).all()) and bool((softmax_sum[:, :, ~rows] == 0).all())


@pytest.mark.parametrize("sparse_mode, pre, nxt, keep", [
    (0, 1, 0, lambda row, col: (col <= row) & (row - col <= 1)),  # band from the top-left corner
    (4, 1, 0, lambda row, col: (col <= row + 2) & (row + 2 - col <= 1)),  # band from the bottom-right corner
    (4, 2, 1, lambda row, col: (col <= row + 3) & (row + 2 - col <= 2)),
])
def test_fusion_attention_bands_follow_pre_and_next_tockens(sparse_mode, pre, nxt, keep):
    q, k, v = bnsd(sq=4, skv=6)
    row, col = torch.arange(4).unsqueeze(1), torch.arange(6).unsqueeze(0)
    given = torch.zeros(4, 6, dtype=torch.bool) if sparse_mode == 0 else torch.ones(2048, 2048, dtype=torch.bool).triu(1)
    out = ops.npu_fusion_attention(q, k, v, 4, "BNSD", atten_mask=given, pre_tockens=pre, next_tockens=nxt,
                                   sparse_mode=sparse_mode)[0]
    torch.testing.assert_close(out, reference(q, k, v, keep(row, col)))


def test_fusion_attention_without_a_mask_ignores_sparse_mode_and_tockens():
    q, k, v = bnsd()
    out = ops.npu_fusion_attention(q, k, v, 4, "BNSD", sparse_mode=3, pre_tockens=0, next_tockens=0)[0]
    torch.testing.assert_close(out, reference(q, k, v))


@pytest.mark.parametrize("mask_shape", [(2, 4, 5, 5), (2, 1, 5, 5), (1, 1, 5, 5), (5, 5)])  # BNSS, B1SS, 11SS, SS
def test_fusion_attention_mask_shapes(mask_shape):
    q, k, v = bnsd()
    masked = torch.rand(mask_shape, generator=torch.Generator().manual_seed(4)) > 0.6
    masked[..., 0] = False  # every row keeps one key
    out = ops.npu_fusion_attention(q, k, v, 4, "BNSD", atten_mask=masked.to(torch.uint8))[0]
    torch.testing.assert_close(out, reference(q, k, v, ~masked))


def test_fusion_attention_adds_pse_before_scaling():
    q, k, v = bnsd(kv_heads=4)
    pse = randn(1, 4, 5, 5, seed=5)  # 1NSS
    out = ops.npu_fusion_attention(q, k, v, 4, "BNSD", pse=pse, scale=0.25)[0]
    torch.testing.assert_close(out, reference(q, k, v, scale=0.25, bias=0.25 * pse))


@pytest.mark.parametrize("softmax_layout", ["", "TND"])
def test_fusion_attention_tnd_attends_within_each_packed_sequence(softmax_layout):
    lengths, kv_lengths = [2, 3, 4], [3, 3, 5]
    qs = [randn(1, 4, n, 8, seed=10 + i) for i, n in enumerate(lengths)]
    ks = [randn(1, 2, n, 8, seed=20 + i) for i, n in enumerate(kv_lengths)]
    vs = [randn(1, 2, n, 8, seed=30 + i) for i, n in enumerate(kv_lengths)]
    packed = [torch.cat([t[0].transpose(0, 1) for t in ts]) for ts in (qs, ks, vs)]  # [T, N, D]
    out, softmax_max, *_ = ops.npu_fusion_attention(
        *packed, 4, "TND", atten_mask=torch.ones(2048, 2048, dtype=torch.bool).triu(1), sparse_mode=3,
        actual_seq_qlen=[2, 5, 9], actual_seq_kvlen=[3, 6, 11], softmax_layout=softmax_layout)
    expected = torch.cat([reference(q, k, v, tril(q.shape[2], k.shape[2], k.shape[2] - q.shape[2]))[0].transpose(0, 1)
                          for q, k, v in zip(qs, ks, vs)])
    torch.testing.assert_close(out, expected)
    assert softmax_max.shape == ((4, 9, 8) if softmax_layout == "" else (9, 4, 8))  # NTD by default, as documented


def test_fusion_attention_tnd_leaves_trailing_zero_sequences_out():
    q, k, v = randn(6, 2, 8, seed=1), randn(6, 2, 8, seed=2), randn(6, 2, 8, seed=3)
    out = ops.npu_fusion_attention(q, k, v, 2, "TND", actual_seq_qlen=[2, 4, 0], actual_seq_kvlen=[2, 4, 0])[0]
    first = reference(q[:2].transpose(0, 1)[None], k[:2].transpose(0, 1)[None], v[:2].transpose(0, 1)[None])
    torch.testing.assert_close(out[:2], first[0].transpose(0, 1))
    assert torch.equal(out[4:], torch.zeros(2, 2, 8))  # tokens past the last sequence are not computed


@pytest.mark.parametrize("change, error, complaint", [
    ({"input_layout": "NSD"}, RuntimeError, "input_layout 'NSD'"),  # five layouts only
    ({"padding_mask": torch.zeros(1)}, RuntimeError, "padding_mask is not supported"),  # reserved by the docs
    ({"keep_prob": 0.0}, RuntimeError, r"outside \(0, 1\]"),  # keep_prob lies in (0, 1]
    ({"keep_prob": 0.9}, NotImplementedError, "dropout"),  # the device's dropout masks are not simulated
    ({"sparse_mode": 5, "atten_mask": torch.zeros(5, 5, dtype=torch.bool)}, NotImplementedError, "sparse_mode 5"),
    ({"sparse_mode": 3, "atten_mask": torch.zeros(5, 5, dtype=torch.bool)}, RuntimeError, "2048x2048"),
    ({"atten_mask": torch.zeros(5, 5)}, RuntimeError, "bool, uint8"),  # a float mask is not a mask here
    ({"atten_mask": torch.zeros(4, 4, dtype=torch.bool)}, RuntimeError, "not SS, 11SS"),  # S x S it must be
    ({"head_num": 3}, RuntimeError, "head_num=3"),  # query's heads are head_num
    ({"value": torch.zeros(2, 2, 5, 8, dtype=torch.float16)}, RuntimeError, "value's dtype"),  # one dtype for all
    ({"input_layout": "TND"}, RuntimeError, "TND tensors have 3 dimensions"),
])
def test_fusion_attention_refuses_what_it_does_not_allow_or_model(change, error, complaint):
    q, k, v = bnsd()
    arguments = {"query": q, "key": k, "value": v, "head_num": 4, "input_layout": "BNSD", **change}
    with pytest.raises(error, match=complaint):
        ops.npu_fusion_attention(**arguments)


def test_each_operator_counts_its_calls():
    before = dict(ops.CALLS)
    ops.npu_rms_norm(torch.ones(2, 4), torch.ones(4))
    ops.npu_rotary_mul(*(torch.ones(1, 1, 2, 4),) * 3)
    ops.npu_fusion_attention(*bnsd(), 4, "BNSD")
    assert {name: ops.CALLS[name] - before.get(name, 0) for name in ops.CALLS} == {
        "npu_rms_norm": 1, "npu_rotary_mul": 1, "npu_fusion_attention": 1}
