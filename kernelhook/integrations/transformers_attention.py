"""transformers attention backed by a Hub kernel that kernelhook loads.

``register_attention("org/repo[@rev][:function]")`` loads the kernel as ``get_kernel`` does (lockfile
pins, offline loads and hash checks all apply), registers an attention function for it with
transformers' ``AttentionInterface`` and a mask function with ``AttentionMaskInterface``, and returns
the name to pass as ``attn_implementation=`` or to ``set_attn_implementation``.

Two conventions are understood, and each gets the mask that carries what it needs:

* transformers' own, ``fn(module, query[B,H,S,D], key, value, attention_mask, *, dropout, scaling,
  **kw) -> (out[B,S,H,D], weights)``: a kernel's ``flash_attn_forward``, or a ``:function`` whose
  parameters are not flash-attn's. It is registered as it is, with transformers' sdpa mask (boolean
  [B,1,Sq,Sk], or None for plain causal attention): such functions are written against the
  AttentionInterface contract, and transformers gives the Hub kernels of this form the same mask.
* flash-attn's, ``flash_attn_func(q, k, v, dropout_p, softmax_scale, causal)`` on [B,S,H,D] and
  ``flash_attn_varlen_func`` on sequences packed as [total,H,D] and delimited by ``cu_seqlens``,
  called through ``FlashAttentionAdapter``. These take no mask, only causality and sequence
  boundaries, so their mask function hands over the padding alone ([B,Sk] booleans, None without
  padding), as transformers' flash paths do; the adapter packs a padded batch for the varlen
  function by index arithmetic (no loop over rows) and runs an unpadded one through the dense
  function. What these functions cannot express (a sliding window, chunked or packed-sequence
  masks, softcap, attention sinks, position biases) raises UnsupportedAttentionError: a refusal,
  never a silently different output.

Importing this module imports torch; transformers is imported when a kernel is registered.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from types import ModuleType
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..errors import AttentionKernelError, UnsupportedAttentionError
from ..loading.api import get_kernel
from ..loading.names import parse_repo_id

logger = logging.getLogger("kernelhook")

TRANSFORMERS_FUNCTION = "flash_attn_forward"
DENSE_FUNCTION = "flash_attn_func"
VARLEN_FUNCTION = "flash_attn_varlen_func"

# Words transformers reads inside an attn_implementation: "flash" takes its flash-attention
# paths, "sdpa" and "flex_attention" run those backends' dispatch checks. Default names spell
# them otherwise; a name given by the caller must not hold them.
_RESERVED_WORDS = {"flash": "fa", "sdpa": "sdp-a", "flex_attention": "flex-attn"}
# "/" makes a Hub kernel name, which transformers hands to the kernels package; "|" a prefix of its own.
_FORBIDDEN_CHARACTERS = ("/", "|")

# Keyword arguments of AttentionInterface calls that flash-attn's two functions cannot take.
_REFUSED_ARGUMENTS = {
    "sliding_window": "a sliding window",
    "softcap": "logit softcapping",
    "s_aux": "attention sinks",
    "position_bias": "a position bias",
    "cu_seq_lens_q": "a padding-free packed batch",
    "cu_seq_lens_k": "a padding-free packed batch",
}

_REGISTERED: dict[str, str] = {}  # name -> the kernel as typed, for the names this module registered


class AttentionSpec(NamedTuple):
    """A kernel named for attention: ``org/repo[@revision][:function]``, split."""

    repo_id: str
    revision: str | None
    function: str | None
    typed: str


def register_attention(kernel: str, name: str | None = None) -> str:
    """Load a Hub kernel through kernelhook and register it as a transformers attention implementation.

    Args:
        kernel: ``"org/repo"``, optionally ``@revision`` (branch, tag, ``vN`` or commit) and
            ``:function``. Without ``:function`` the kernel's ``flash_attn_forward`` is used, else its
            ``flash_attn_varlen_func`` and ``flash_attn_func`` behind an adapter.
        name: the name to register; default ``kernelhook:<org>.<repo>[@rev][:function]`` with
            "flash", "sdpa" and "flex_attention" respelled, so that transformers reads it as a
            plain registered function, not as a Hub kernel or one of its own backends.

    Returns:
        The registered name, for ``from_pretrained(..., attn_implementation=name)`` or
        ``model.set_attn_implementation(name)``.

    Raises:
        AttentionKernelError: ``kernel`` or ``name`` is malformed, ``name`` would be misread by
            transformers or already names another function, or the kernel has no function of a
            known convention.
        KernelImportError: the kernel could not be loaded (every error ``get_kernel`` raises).
        ImportError: transformers is not installed.
    """
    spec = parse_attention_spec(kernel)
    chosen = name if name is not None else default_name(spec)
    from transformers import AttentionInterface, AttentionMaskInterface

    check_name(chosen, spec, taken=AttentionInterface().valid_keys())
    module = get_kernel(spec.repo_id, revision=spec.revision)
    attention, mask = attention_functions(module, spec)
    AttentionInterface.register(chosen, attention)
    AttentionMaskInterface.register(chosen, mask)
    _REGISTERED[chosen] = spec.typed
    logger.info("attention %r: %s (%s)", chosen, spec.typed, getattr(attention, "__name__", type(attention).__name__))
    return chosen


def parse_attention_spec(kernel: str) -> AttentionSpec:
    """Split ``org/repo[@revision][:function]``.

    Returns:
        The parts, the revision and function None when absent.

    Raises:
        AttentionKernelError: not a string, or the function part is not a Python name.
        InvalidKernelName, InvalidRevision: the repo id or revision is malformed.
    """
    if not isinstance(kernel, str):
        raise AttentionKernelError(
            f"{kernel!r}: name the kernel as 'org/repo[@revision][:function]', e.g. 'kernels-ext-npu/attention'.")
    rest, colon, function = kernel.partition(":")
    if colon and not function.isidentifier():
        raise AttentionKernelError(
            f"{kernel!r}: {function!r} after ':' is not a Python function name; "
            f"e.g. 'kernels-ext-npu/attention:{VARLEN_FUNCTION}'.")
    repo_id, at, revision = rest.partition("@")
    if at and not revision:
        raise AttentionKernelError(f"{kernel!r}: '@' must be followed by a revision, e.g. '{repo_id}@v1'.")
    parse_repo_id(repo_id, revision or None)  # the loader's own checks, with its messages
    return AttentionSpec(repo_id, revision or None, function or None, kernel)


def default_name(spec: AttentionSpec) -> str:
    """The name ``register_attention`` registers when none is given.

    Returns:
        ``kernelhook:<org>.<repo>[@rev][:function]``, holding no '/', '|', "flash", "sdpa" or "flex_attention".
    """
    org, repo = spec.repo_id.split("/")
    text = f"kernelhook:{org}.{repo}"
    if spec.revision:
        text += "@" + spec.revision.replace("/", "_")  # refs/pr/N
    if spec.function:
        text += ":" + spec.function
    for word, respelled in _RESERVED_WORDS.items():
        text = re.sub(word, respelled, text, flags=re.IGNORECASE)
    return text


def check_name(name: str, spec: AttentionSpec, taken: list[str]) -> None:
    """Refuse a name transformers would read as something other than this registration.

    Raises:
        AttentionKernelError: the name is empty, holds '/', '|', "flash", "sdpa" or "flex_attention",
            is "eager", or is already registered for a function this module did not register.
    """
    why = None
    if not isinstance(name, str) or not name.strip():
        why = "it is empty"
    elif found := [c for c in _FORBIDDEN_CHARACTERS if c in name]:
        why = f"{found[0]!r} in a name makes transformers load it as a Hub kernel through the kernels package"
    elif found := [w for w in _RESERVED_WORDS if w in name.lower()]:
        why = f"transformers reads {found[0]!r} in a name as a request for its own {found[0]} backend"
    elif name == "eager" or (name in taken and name not in _REGISTERED):
        why = "it already names another attention function"
    if why:
        raise AttentionKernelError(
            f"register_attention({spec.typed!r}, name={name!r}): {why}. "
            f"Leave name out (default {default_name(spec)!r}) or choose another.")


def attention_functions(kernel: ModuleType, spec: AttentionSpec) -> tuple[Callable, Callable]:
    """The attention function and the mask function to register for a loaded kernel.

    Returns:
        (attention function, mask function), as ``AttentionInterface`` and ``AttentionMaskInterface`` take them.

    Raises:
        AttentionKernelError: the function named is missing, or the kernel offers none of a known convention.
    """
    if spec.function is not None:
        function = getattr(kernel, spec.function, None)
        if not callable(function):
            raise AttentionKernelError(
                f"{spec.typed!r}: the kernel has no function {spec.function!r}; it offers {_offered(kernel)}.")
        convention = convention_of(function)
        if convention == "transformers":
            return function, _sdpa_mask()
        dense, varlen = (function, None) if convention == "dense" else (None, function)
        return FlashAttentionAdapter(spec.typed, dense, varlen), PaddingMask(spec.typed)
    forward = getattr(kernel, TRANSFORMERS_FUNCTION, None)
    if callable(forward):
        return forward, _sdpa_mask()
    dense, varlen = getattr(kernel, DENSE_FUNCTION, None), getattr(kernel, VARLEN_FUNCTION, None)
    if callable(dense) or callable(varlen):
        adapter = FlashAttentionAdapter(spec.typed, dense if callable(dense) else None,
                                        varlen if callable(varlen) else None)
        return adapter, PaddingMask(spec.typed)
    raise AttentionKernelError(
        f"{spec.typed!r}: the kernel has none of {TRANSFORMERS_FUNCTION}, {VARLEN_FUNCTION}, {DENSE_FUNCTION}; "
        f"it offers {_offered(kernel)}. Name its attention function as '{spec.typed}:<function>'.")


def convention_of(function: Callable) -> str:
    """Which calling convention a function's parameters follow.

    Returns:
        "varlen" (flash-attn's ``cu_seqlens_q``), "dense" (flash-attn's ``causal``, no ``attention_mask``),
        else "transformers"; a function whose signature cannot be read counts as transformers'.
    """
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return "transformers"
    if "cu_seqlens_q" in parameters:
        return "varlen"
    if "causal" in parameters and "attention_mask" not in parameters:
        return "dense"
    return "transformers"


class FlashAttentionAdapter:
    """An AttentionInterface function calling flash-attn's ``flash_attn_func`` / ``flash_attn_varlen_func``.

    Unpadded batches go to the dense function (else to the varlen one, one sequence per row);
    padded batches are packed for the varlen function. Causal masks are flash-attn's, aligned to
    the bottom-right corner, which is transformers' causal mask whenever the queries are the newest
    positions of the keys, as they are with every cache this adapter is given.
    """

    def __init__(self, kernel: str, dense: Callable | None, varlen: Callable | None):
        self.kernel = kernel
        self.dense = dense
        self.varlen = varlen
        self.__name__ = f"{kernel}:{VARLEN_FUNCTION if dense is None else DENSE_FUNCTION}"

    def __call__(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
        """query [B,H,Sq,D], key and value [B,Hk,Sk,D], attention_mask the padding [B,Sk] or None.

        Returns:
            (output [B,Sq,H,D], None): flash-attn computes no attention weights.

        Raises:
            UnsupportedAttentionError: the call asks for what flash-attn's functions cannot take.
        """
        self._refuse_what_cannot_be_honoured(module, attention_mask, kwargs)
        q, k, v = (t.transpose(1, 2) for t in (query, key, value))
        causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        options = {"dropout_p": dropout, "softmax_scale": scaling, "causal": bool(causal)}
        if attention_mask is None and self.dense is not None:
            return _first(self.dense(q, k, v, **options)), None
        if self.varlen is None:
            raise UnsupportedAttentionError(
                f"{_model_of(module)}: the batch is padded, and attention kernel {self.kernel!r} offers only "
                f"{DENSE_FUNCTION}, which takes no padding. Register a kernel with {VARLEN_FUNCTION} "
                f"(e.g. without ':{DENSE_FUNCTION}'), or pass batches without padding.")
        return _run_varlen(self.varlen, q, k, v, attention_mask, options), None

    def _refuse_what_cannot_be_honoured(self, module: torch.nn.Module, attention_mask, kwargs: dict) -> None:
        if isinstance(attention_mask, RefusedMask):
            raise UnsupportedAttentionError(f"{_model_of(module)}: {attention_mask.reason}")
        for argument, meaning in _REFUSED_ARGUMENTS.items():
            value = kwargs.get(argument)
            if value is None or (argument == "softcap" and value == 0):  # softcap 0 is flash-attn's "off"
                continue
            raise UnsupportedAttentionError(
                f"{_model_of(module)} calls attention with {argument}={_show(value)} ({meaning}), and attention "
                f"kernel {self.kernel!r} ({self._functions()}) cannot honour it. Run this model with "
                f"attn_implementation='eager' (or 'sdpa' where the model supports it), or register a kernel "
                f"that takes {argument}.")
        if attention_mask is not None and attention_mask.dim() != 2:
            raise UnsupportedAttentionError(
                f"{_model_of(module)} gives attention a {attention_mask.dim()}-D mask, and attention kernel "
                f"{self.kernel!r} ({self._functions()}) takes only padding. Pass the model a 2-D attention_mask "
                f"(1 for tokens, 0 for padding), or run it with attn_implementation='sdpa'.")

    def _functions(self) -> str:
        return " and ".join(n for n, f in ((DENSE_FUNCTION, self.dense), (VARLEN_FUNCTION, self.varlen)) if f)


class RefusedMask(NamedTuple):
    """What PaddingMask returns for a pattern padding cannot express; the adapter raises on receiving it."""

    reason: str


class PaddingMask:
    """The AttentionMaskInterface function for flash-attn-convention kernels: the padding alone.

    Returns transformers' flash mask ([B,Sk] booleans, or None when nothing is padded) for causal
    and bidirectional attention, and a RefusedMask for every other pattern, which padding cannot express.
    """

    def __init__(self, kernel: str):
        self.kernel = kernel

    def __call__(self, batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset=0,
                 mask_function: Callable | None = None, attention_mask: torch.Tensor | None = None,
                 **kwargs) -> torch.Tensor | None:
        """Returns the [B, Sk'] padding mask (Sk' <= kv_length), None, or a RefusedMask for a pattern
        beyond causal or bidirectional attention with padding; raises nothing."""
        from transformers import masking_utils

        if mask_function not in (None, masking_utils.causal_mask_function, masking_utils.bidirectional_mask_function):
            # Refused where a layer uses it, not here: some models build a sliding-window mask even
            # when no layer of theirs slides.
            return RefusedMask(_pattern_refusal(self.kernel, kwargs.get("config")))
        if attention_mask is None:
            # Keys past the newest query are a static cache's empty slots: only a mask keeps them out.
            seen = int(q_offset) + q_length - int(kv_offset)
            if seen >= kv_length:
                return None
            return torch.ones(batch_size, seen, dtype=torch.bool, device=kwargs.get("device", "cpu"))
        return masking_utils.flash_attention_mask(batch_size, q_length, kv_length, q_offset, kv_offset,
                                                  attention_mask=attention_mask)


def _run_varlen(varlen: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                padding: torch.Tensor | None, options: dict) -> torch.Tensor:
    """q [B,Sq,H,D], k and v [B,Sk,Hk,D], padding [B,Sk'] (True: a token) -> [B,Sq,H,Dv], padded rows zero."""
    batch, seqlen_q = q.shape[:2]
    if padding is None:
        padding = torch.ones(batch, k.shape[1], dtype=torch.bool, device=q.device)
    keys = padding.to(device=q.device, dtype=torch.bool)[:, -k.shape[1]:]
    k, v = k[:, :keys.shape[1]], v[:, :keys.shape[1]]  # a static cache's unused slots lie past the mask
    queries = keys[:, -seqlen_q:]  # the queries are the newest positions
    q_index, cu_seqlens_q, max_seqlen_q = _packing(queries)
    k_index, cu_seqlens_k, max_seqlen_k = _packing(keys)
    out = _first(varlen(_rows(q)[q_index], _rows(k)[k_index], _rows(v)[k_index], cu_seqlens_q, cu_seqlens_k,
                        max_seqlen_q, max_seqlen_k, **options))
    padded = out.new_zeros(batch * seqlen_q, *out.shape[1:])
    padded[q_index] = out
    return padded.view(batch, seqlen_q, *out.shape[1:])


def _packing(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """For a [B,S] token mask: flat indices of the tokens, cumulative lengths (B+1, int32, from 0), max length."""
    lengths = mask.sum(dim=-1, dtype=torch.int32)
    index = mask.flatten().nonzero().flatten()
    return index, F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0)), int(lengths.max())


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, *x.shape[2:])


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _sdpa_mask() -> Callable:
    from transformers import masking_utils

    return masking_utils.sdpa_mask


def _offered(kernel: ModuleType) -> str:
    names = sorted(n for n, f in vars(kernel).items() if callable(f) and not n.startswith("_")
                   and not isinstance(f, (type, ModuleType)))
    return ", ".join(names) if names else "no public function"


def _show(value) -> str:
    return f"<tensor of shape {tuple(value.shape)}>" if isinstance(value, torch.Tensor) else repr(value)


def _model_name(config) -> str:
    architectures = getattr(config, "architectures", None) or []
    return architectures[0] if architectures else getattr(config, "model_type", None) or "the model"


def _model_of(module: torch.nn.Module) -> str:
    layer = getattr(module, "layer_idx", None)
    where = type(module).__name__ + (f", layer {layer}" if layer is not None else "")
    return f"{_model_name(getattr(module, 'config', None))} ({where})"


def _pattern_refusal(kernel: str, config) -> str:
    sliding = getattr(config, "sliding_window", None)
    chunk = getattr(config, "attention_chunk_size", None)
    if sliding is not None:
        what = f"a sliding window (config.sliding_window={sliding})"
    elif chunk is not None:
        what = f"chunked attention (config.attention_chunk_size={chunk})"
    else:
        what = "packed sequences (position_ids that restart, without an attention_mask) or a custom mask"
    return (f"its attention mask has {what}, and attention kernel {kernel!r} takes causal attention with "
            f"padding only, so it would compute something else. Run {_model_name(config)} with "
            f"attn_implementation='sdpa' or 'eager', or register a kernel that takes the pattern.")
