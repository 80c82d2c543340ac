"""torch_npu's fused operators, simulated on CPU tensors from Ascend's documentation.

A simulation, not torch_npu: no NPU, no CANN, no device memory. It exists so that the Ascend builds of
examples/kernels run somewhere, and what they compute is checked against the universal builds.
Each operator follows its API reference page (cited in its docstring) and torch_npu 2.13.0's own
docstrings and meta registrations (`torch_npu/_op_plugin_docs.py`,
`torch_npu/op_plugin/meta/_meta_registrations.py` in the torch-npu wheel) for output shapes and dtypes.
Where the documentation states a restriction (dtypes, ranks, layouts), the simulation refuses what
it refuses, with a RuntimeError as torch_npu raises, so a build that misuses an operator fails here
too. What the documentation leaves open is said where it is chosen (internal precision: float32,
rounded once to the output dtype).

This file imports nothing but torch and has no side effects: the tests of the operators load it
directly, without the package's registration of the `npu` backend.
"""

from __future__ import annotations

from collections import Counter

import torch

CALLS: Counter = Counter()  # operator name -> calls, so a test can tell the simulated operator ran

_FLOATS = (torch.float16, torch.bfloat16, torch.float32)
_NO_LIMIT = 2147483647
_LAYOUTS = ("BSH", "SBH", "BSND", "BNSD", "TND")
_COMPRESSED_MASK = (2048, 2048)  # the optimised causal mask sparse_mode 2, 3 and 4 take


def _fail(op: str, message: str) -> RuntimeError:
    return RuntimeError(f"{op} (simulated torch_npu): {message}")


def _check_float(op: str, name: str, tensor: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise _fail(op, f"{name} must be a Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in _FLOATS:
        raise _fail(op, f"{name} has dtype {tensor.dtype}; supported: float16, bfloat16, float32")


# -- npu_rms_norm ---------------------------------------------------------------------------------


def npu_rms_norm(self: torch.Tensor, gamma: torch.Tensor, epsilon: float = 1e-6):
    """``torch_npu.npu_rms_norm(Tensor self, Tensor gamma, float epsilon=1e-06) -> (Tensor, Tensor)``.

    Documentation: https://www.hiascend.com/document/detail/zh/Pytorch/700/apiref/apilist/ptaoplist_000860.html
    (Ascend Extension for PyTorch 7.0.0 API reference, "torch_npu.npu_rms_norm").

    ``RmsNorm(x) = x / Rms(x) * gamma`` with ``Rms(x) = sqrt(mean(x^2) + epsilon)``, the mean taken
    over the trailing dimensions gamma covers. self: float16, bfloat16 or float32, 2 to 8 dimensions;
    gamma: the same dtype as self, shaped like self's trailing dimensions (usually its last one).

    Returns:
        (y, rstd): y is RmsNorm(x) in self's shape and dtype; rstd is 1 / Rms(x), the intermediate
        kept for the backward pass, float32, self's shape with gamma's dimensions reduced to 1 (the
        shape torch_npu's meta registration gives it). Computed in float32, y rounded once.

    Raises:
        RuntimeError: a dtype, rank or shape the documentation does not allow.
    """
    op = "npu_rms_norm"
    _check_float(op, "self", self)
    _check_float(op, "gamma", gamma)
    if gamma.dtype != self.dtype:
        raise _fail(op, f"gamma's dtype {gamma.dtype} differs from self's {self.dtype}; they must be the same")
    if not 2 <= self.dim() <= 8:
        raise _fail(op, f"self has {self.dim()} dimensions; supported: 2 to 8")
    trailing = tuple(self.shape[self.dim() - gamma.dim():]) if gamma.dim() <= self.dim() else None
    if gamma.dim() == 0 or tuple(gamma.shape) != trailing:
        raise _fail(op, f"gamma's shape {tuple(gamma.shape)} is not self's trailing shape (self: {tuple(self.shape)})")
    CALLS[op] += 1
    reduced = tuple(range(self.dim() - gamma.dim(), self.dim()))
    x = self.float()
    rstd = torch.rsqrt(x.pow(2).mean(reduced, keepdim=True) + epsilon)
    return (x * rstd * gamma.float()).to(self.dtype), rstd


# -- npu_rotary_mul -------------------------------------------------------------------------------


def npu_rotary_mul(input: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor, rotary_mode: str = "half",
                   rotate: torch.Tensor | None = None) -> torch.Tensor:
    """``torch_npu.npu_rotary_mul(Tensor input, Tensor r1, Tensor r2, str rotary_mode='half', Tensor? rotate=None)``.

    Documentation: https://www.hiascend.com/document/detail/zh/Pytorch/700/apiref/apilist/ptaoplist_000141.html
    (Ascend Extension for PyTorch 7.0.0 API reference, "torch_npu.npu_rotary_mul"; ``rotate`` from
    torch_npu 2.13.0's docstring).

    ``output = r1 * input + r2 * x_new`` where, in "half" mode, ``x_new = cat(-x2, x1)`` for the two
    halves of the last dimension; in "interleave" mode, ``x_new`` pairs each even element with the
    following odd one as ``(-odd, even)``; with ``rotate``, ``x_new = input @ rotate``. input, r1 and
    r2 are 4-D (float16, bfloat16 or float32), the last dimension D even; r1 and r2 broadcast to
    input (11SD, B1SD or BNSD for a BNSD input, and the like for BSND and SBND).

    Returns:
        A tensor of input's shape and dtype, computed in float32 and rounded once.

    Raises:
        RuntimeError: a dtype, rank, shape or mode the documentation does not allow.
    """
    op = "npu_rotary_mul"
    for name, tensor in (("input", input), ("r1", r1), ("r2", r2)):
        _check_float(op, name, tensor)
        if tensor.dim() != 4:
            raise _fail(op, f"{name} has {tensor.dim()} dimensions; input, r1 and r2 must be 4-D")
    if input.shape[-1] % 2:
        raise _fail(op, f"the last dimension D={input.shape[-1]} must be even")
    for name, tensor in (("r1", r1), ("r2", r2)):
        try:
            fits = torch.broadcast_shapes(input.shape, tensor.shape) == input.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise _fail(op, f"{name}'s shape {tuple(tensor.shape)} does not broadcast to input's {tuple(input.shape)}")
    x = input.float()
    x_new = _rotated(op, x, rotary_mode, rotate)
    CALLS[op] += 1
    return (r1.float() * x + r2.float() * x_new).to(input.dtype)


def _rotated(op: str, x: torch.Tensor, rotary_mode: str, rotate: torch.Tensor | None) -> torch.Tensor:
    if rotary_mode not in ("half", "interleave"):
        raise _fail(op, f"rotary_mode {rotary_mode!r} is not supported; use 'half' or 'interleave'")
    if rotate is not None:
        _check_float(op, "rotate", rotate)
        if tuple(rotate.shape) != (x.shape[-1], x.shape[-1]):
            raise _fail(op, f"rotate must be a {x.shape[-1]}x{x.shape[-1]} matrix, got {tuple(rotate.shape)}")
        return x @ rotate.float()
    if rotary_mode == "half":
        x1, x2 = torch.chunk(x, 2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)
    even, odd = x[..., ::2], x[..., 1::2]
    return torch.stack((-odd, even), dim=-1).flatten(-2)


# -- npu_fusion_attention -------------------------------------------------------------------------


def npu_fusion_attention(query, key, value, head_num, input_layout, pse=None, padding_mask=None, atten_mask=None,
                         scale=1.0, keep_prob=1.0, pre_tockens=_NO_LIMIT, next_tockens=_NO_LIMIT, inner_precise=0,
                         prefix=None, actual_seq_qlen=None, actual_seq_kvlen=None, sparse_mode=0,
                         gen_mask_parallel=True, sync=False, softmax_layout="", sink=None):
    """``torch_npu.npu_fusion_attention(...) -> (Tensor, Tensor, Tensor, Tensor, int, int, int)``.

    Documentation: https://hiascend.com/document/detail/zh/Pytorch/600/apiref/apilist/ptaoplist_000850.html
    (Ascend Extension for PyTorch 6.0.0 API reference, "torch_npu.npu_fusion_attention"; the same
    text is torch_npu 2.13.0's docstring, which adds softmax_layout).

    ``attention_out = Dropout(Softmax(Mask(scale * (pse + query @ key^T), atten_mask)), keep_prob) @ value``.

    Layouts: "BSH", "SBH", "BSND", "BNSD", and "TND" (sequences packed along T, with
    actual_seq_qlen / actual_seq_kvlen their cumulative ends, e.g. [2, 4, 6] for three of length 2).
    head_num is query's head count N; key and value may have fewer heads (GQA: N a multiple of
    theirs); value's head size may be smaller than query's. atten_mask: bool or uint8, True (1)
    masks a position out, False (0) keeps it; shaped BNSS, B1SS, 11SS or SS. Without atten_mask
    nothing is masked and sparse_mode, pre_tockens and next_tockens have no effect, as documented.
    sparse_mode 0 (atten_mask as given, plus the band pre_tockens/next_tockens from the top-left
    corner), 1 (atten_mask as given), 2 (causal from the top-left corner), 3 (causal from the
    bottom-right corner), 4 (the band pre_tockens/next_tockens from the bottom-right corner); for 2,
    3 and 4 atten_mask is the documented 2048x2048 compressed mask and the simulation masks what the
    mode defines. "TND" takes no atten_mask, or sparse_mode 2 or 3.

    Not simulated (NotImplementedError): dropout (keep_prob < 1: the DSA mask generator is
    hardware's), sparse_mode 5 to 8 (prefix and split-sequence modes), sink; padding_mask is refused
    as documented ("not supported yet"). inner_precise only tunes the device's precision and is ignored.

    Returns:
        (attention_out, softmax_max, softmax_sum, softmax_out, seed, offset, numels): attention_out in
        query's layout and dtype (value's head size); softmax_max and softmax_sum, float32, the row
        maximum of the scaled, masked scores and the sum of exp(score - max), repeated over a last
        dimension of 8: [B, N, Sq, 8], or for "TND" [N, T, 8] ([T, N, 8] with softmax_layout="TND");
        softmax_out, reserved, an empty tensor; seed, offset and numels of the dropout mask, 0 here.
        A row whose every position is masked gives zeros, softmax_max -inf and softmax_sum 0.

    Raises:
        RuntimeError: a dtype, layout, shape or argument the documentation does not allow.
        NotImplementedError: an argument of a mode this simulation does not model.
    """
    op = "npu_fusion_attention"
    _check_attention_arguments(op, query, key, value, pse, padding_mask, keep_prob, sparse_mode, sink, input_layout)
    if input_layout == "TND":
        result = _attention_tnd(op, query, key, value, head_num, pse, atten_mask, scale, sparse_mode,
                                actual_seq_qlen, actual_seq_kvlen, softmax_layout)
    else:
        if softmax_layout not in ("", None):
            raise _fail(op, f"softmax_layout={softmax_layout!r} is only accepted with input_layout 'TND'")
        result = _attention_dense(op, query, key, value, head_num, input_layout, pse, atten_mask, scale,
                                  sparse_mode, pre_tockens, next_tockens)
    CALLS[op] += 1
    out, softmax_max, softmax_sum = result
    return out, softmax_max, softmax_sum, torch.empty(0, dtype=query.dtype), 0, 0, 0


def _check_attention_arguments(op, query, key, value, pse, padding_mask, keep_prob, sparse_mode, sink, layout):
    for name, tensor in (("query", query), ("key", key), ("value", value)) + ((("pse", pse),) if pse is not None else ()):
        _check_float(op, name, tensor)
        if tensor.dtype != query.dtype:
            raise _fail(op, f"{name}'s dtype {tensor.dtype} differs from query's {query.dtype}; they must be the same")
    if layout not in _LAYOUTS:
        raise _fail(op, f"input_layout {layout!r} is not supported; use one of {', '.join(_LAYOUTS)}")
    if padding_mask is not None:
        raise _fail(op, "padding_mask is not supported (the documentation reserves it)")
    if not 0 < keep_prob <= 1:
        raise _fail(op, f"keep_prob={keep_prob} is outside (0, 1]")
    if keep_prob != 1:
        raise NotImplementedError(f"{op} (simulated torch_npu): dropout (keep_prob < 1) is not simulated")
    if sparse_mode not in range(9):
        raise _fail(op, f"sparse_mode={sparse_mode} is not one of 0 to 8")
    if sparse_mode > 4:
        raise NotImplementedError(f"{op} (simulated torch_npu): sparse_mode {sparse_mode} is not simulated (0 to 4 are)")
    if sink is not None:
        raise NotImplementedError(f"{op} (simulated torch_npu): sink is not simulated")


def _to_bnsd(op, tensor, layout, head_num=None, head_dim=None):
    """A layout's tensor as [B, N, S, D]. For BSH and SBH the head count comes from head_num (query)
    or from query's head size (key, value)."""
    if tensor.dim() != (3 if layout in ("BSH", "SBH") else 4):
        raise _fail(op, f"a {layout} tensor has {3 if layout in ('BSH', 'SBH') else 4} dimensions, got {tensor.dim()}")
    if layout == "BNSD":
        return tensor
    if layout == "BSND":
        return tensor.transpose(1, 2)
    if layout == "SBH":
        tensor = tensor.transpose(0, 1)
    batch, seq, hidden = tensor.shape
    heads = head_num if head_num is not None else hidden // head_dim
    if heads <= 0 or hidden % heads:
        raise _fail(op, f"hidden size {hidden} is not a multiple of the head count {heads}")
    return tensor.reshape(batch, seq, heads, hidden // heads).transpose(1, 2)


def _from_bnsd(out, layout):
    if layout == "BNSD":
        return out
    if layout == "BSND":
        return out.transpose(1, 2).contiguous()
    batch, heads, seq, dim = out.shape
    merged = out.transpose(1, 2).reshape(batch, seq, heads * dim)
    return merged.transpose(0, 1).contiguous() if layout == "SBH" else merged


def _attention_dense(op, query, key, value, head_num, layout, pse, atten_mask, scale, sparse_mode, pre, nxt):
    q = _to_bnsd(op, query, layout, head_num=head_num)
    head_dim = q.shape[-1]
    k = _to_bnsd(op, key, layout, head_dim=head_dim)
    v_heads = k.shape[1]
    v = _to_bnsd(op, value, layout, head_num=v_heads) if layout in ("BSH", "SBH") else _to_bnsd(op, value, layout)
    if q.shape[1] != head_num:
        raise _fail(op, f"query has {q.shape[1]} heads but head_num={head_num}")
    sq, skv = q.shape[2], k.shape[2]
    masked = _mask(op, atten_mask, sparse_mode, sq, skv, pre, nxt)
    out, row_max, row_sum = _attend(op, q, k, v, pse, masked, scale)
    eight = (*row_max.shape, 8)
    return (_from_bnsd(out.to(query.dtype), layout), row_max.unsqueeze(-1).expand(eight).contiguous(),
            row_sum.unsqueeze(-1).expand(eight).contiguous())


def _attend(op, q, k, v, pse, masked, scale):
    """[B, N, Sq, D] attention in float32: (out [B, N, Sq, Dv], row max [B, N, Sq], row sum [B, N, Sq])."""
    heads, kv_heads = q.shape[1], k.shape[1]
    if kv_heads == 0 or heads % kv_heads or v.shape[1] != kv_heads:
        raise _fail(op, f"query's {heads} heads are not a multiple of key's and value's ({kv_heads}, {v.shape[1]})")
    if q.shape[-1] != k.shape[-1] or v.shape[-1] > k.shape[-1] or k.shape[2] != v.shape[2]:
        raise _fail(op, f"head sizes: query {q.shape[-1]} and key {k.shape[-1]} must match, value's "
                        f"{v.shape[-1]} may not exceed them; key and value need one sequence length")
    k = k.float().repeat_interleave(heads // kv_heads, dim=1)
    v = v.float().repeat_interleave(heads // kv_heads, dim=1)
    scores = q.float() @ k.transpose(-1, -2)
    if pse is not None:
        scores = scores + pse.float()
    scores = scores * scale
    if masked is not None:
        scores = scores.masked_fill(masked, float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True)
    weights = torch.exp(scores - torch.where(torch.isinf(row_max), 0.0, row_max))
    row_sum = weights.sum(dim=-1, keepdim=True)
    probs = torch.where(row_sum > 0, weights / row_sum.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    return probs @ v, row_max.squeeze(-1), row_sum.squeeze(-1)


def _mask(op, atten_mask, sparse_mode, sq, skv, pre, nxt):
    """True where a position is masked out, broadcastable to [B, N, Sq, Skv]; None: nothing is."""
    if atten_mask is None:
        return None  # documented: without atten_mask, sparse_mode and the tockens have no effect
    if atten_mask.dtype not in (torch.bool, torch.uint8):
        raise _fail(op, f"atten_mask has dtype {atten_mask.dtype}; supported: bool, uint8")
    row = torch.arange(sq).unsqueeze(1)
    col = torch.arange(skv).unsqueeze(0)
    if sparse_mode in (0, 1):
        if atten_mask.dim() not in (2, 4) or tuple(atten_mask.shape[-2:]) != (sq, skv):
            raise _fail(op, f"atten_mask's shape {tuple(atten_mask.shape)} is not SS, 11SS, B1SS or BNSS "
                            f"with S = ({sq}, {skv})")
        masked = atten_mask.bool()
        if sparse_mode == 0:
            masked = masked | (col - row > nxt) | (row - col > pre)
        return masked
    if tuple(atten_mask.shape) != _COMPRESSED_MASK:
        raise _fail(op, f"sparse_mode {sparse_mode} takes the 2048x2048 compressed causal atten_mask, "
                        f"got {tuple(atten_mask.shape)}")
    shift = skv - sq  # modes 3 and 4 count from the bottom-right corner
    if sparse_mode == 2:
        return col > row
    if sparse_mode == 3:
        return col > row + shift
    return (col - (row + shift) > nxt) | ((row + shift) - col > pre)


def _attention_tnd(op, query, key, value, head_num, pse, atten_mask, scale, sparse_mode, q_ends, kv_ends,
                   softmax_layout):
    if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
        raise _fail(op, "TND tensors have 3 dimensions [T, N, D]")
    if query.shape[1] != head_num:
        raise _fail(op, f"query has {query.shape[1]} heads but head_num={head_num}")
    if q_ends is None or kv_ends is None or len(q_ends) != len(kv_ends):
        raise _fail(op, "input_layout 'TND' needs actual_seq_qlen and actual_seq_kvlen of one length")
    if atten_mask is not None and sparse_mode not in (2, 3):
        raise NotImplementedError(f"{op} (simulated torch_npu): TND with an atten_mask is simulated for "
                                  f"sparse_mode 2 and 3 only")
    if pse is not None:
        raise NotImplementedError(f"{op} (simulated torch_npu): pse with TND is not simulated")
    if softmax_layout not in ("", None, "TND"):
        raise _fail(op, f"softmax_layout={softmax_layout!r}: supported are '' and 'TND'")
    total = query.shape[0]
    out = query.new_zeros((total, head_num, value.shape[-1]), dtype=torch.float32)
    row_max = torch.zeros(head_num, total)
    row_sum = torch.zeros(head_num, total)
    for (q0, q1), (k0, k1) in _segments(op, q_ends, kv_ends, total, key.shape[0]):
        if k1 == k0:  # nothing to attend to: every position of these rows is masked
            row_max[:, q0:q1] = float("-inf")
            continue
        q = query[q0:q1].transpose(0, 1).unsqueeze(0)
        k = key[k0:k1].transpose(0, 1).unsqueeze(0)
        v = value[k0:k1].transpose(0, 1).unsqueeze(0)
        masked = _mask(op, atten_mask, sparse_mode, q1 - q0, k1 - k0, _NO_LIMIT, _NO_LIMIT)
        seg_out, seg_max, seg_sum = _attend(op, q, k, v, None, masked, scale)
        out[q0:q1] = seg_out[0].transpose(0, 1)
        row_max[:, q0:q1], row_sum[:, q0:q1] = seg_max[0], seg_sum[0]
    if softmax_layout == "TND":
        row_max, row_sum = row_max.transpose(0, 1), row_sum.transpose(0, 1)
    return (out.to(query.dtype), row_max.unsqueeze(-1).expand(*row_max.shape, 8).contiguous(),
            row_sum.unsqueeze(-1).expand(*row_sum.shape, 8).contiguous())


def _segments(op, q_ends, kv_ends, q_total, kv_total):
    """(query range, key range) per sequence; trailing zero ends are sequences left out, as documented."""
    segments, q_start, kv_start = [], 0, 0
    for index, (q_end, kv_end) in enumerate(zip(q_ends, kv_ends)):
        if index and q_end == 0 and kv_end == 0:
            break
        if q_end < q_start or kv_end < kv_start or q_end > q_total or kv_end > kv_total:
            raise _fail(op, f"actual_seq_qlen {list(q_ends)} / actual_seq_kvlen {list(kv_ends)} are not "
                            f"cumulative ends within T=({q_total}, {kv_total})")
        if q_end > q_start:  # a sequence of length 0 computes nothing
            segments.append(((q_start, q_end), (kv_start, kv_end)))
        q_start, kv_start = q_end, kv_end
    return segments
