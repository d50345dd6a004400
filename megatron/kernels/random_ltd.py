"""Random-LTD token ops: sample kept tokens, gather them out of and scatter them back into the activations.

Each op has a pure-PyTorch reference (``reference_*``: the spec, the CPU path and the GPU test oracle) and a CUDA
path (``csrc/random_ltd``) with the same signature, both behind one PyTorch custom op (``torch.ops.megatron_de``:
``random_ltd_gather``, ``random_ltd_compose``, ``random_ltd_sort``, ``random_ltd_select``) with a schema, a fake
implementation and an autograd formula, so ``torch.compile`` traces the public functions without a graph break. The
op picks, when it runs, the CUDA kernel for CUDA tensors if ``backend() == "cuda"``, else the reference. Layout is
Megatron's sequence-first ``[s, b, h]`` (DeepSpeed's ops take a ``batch_first`` flag and also allow ``[b, s, h]``; we
support only sequence-first) with per-sample token indices ``[b, r]`` (int64, distinct, in ``[0, s)``; sorted when
they come from :func:`sample_tokens`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from megatron.kernels._build import cuda_extension_or_none

Backend = Literal["cuda", "reference"]
_KEY_BOUND = 2**31  # keys are uniform 31-bit integers: non-negative int32, unsigned-comparable in the kernel


def backend() -> Backend:
    """``"cuda"`` when the compiled op serves CUDA tensors, else ``"reference"``.

    Never compiles on a machine without CUDA. With CUDA the first call builds (or loads from the cache) the extension;
    ``MEGATRON_DE_KERNELS=reference`` forces the reference, ``=cuda`` makes a failed build an error.
    """
    return "cuda" if cuda_extension_or_none("random_ltd") is not None else "reference"


def _ext_for(t: torch.Tensor | torch.device):
    device = t if isinstance(t, torch.device) else t.device
    return cuda_extension_or_none("random_ltd") if device.type == "cuda" else None


# --------------------------------------------------------------------------------------------------------------
# Input validation shared by both backends (shapes only; index values are checked on CPU, where it costs no sync)
# --------------------------------------------------------------------------------------------------------------
def _check_hidden(hidden: torch.Tensor, name: str = "hidden") -> tuple[int, int, int]:
    if hidden.dim() != 3:
        raise ValueError(f"random_ltd: {name} must be sequence-first [s, b, h], got shape {tuple(hidden.shape)}")
    s, b, h = hidden.shape
    return s, b, h


def _check_indices(indices: torch.Tensor, batch: int, seq_len: int, device: torch.device) -> torch.Tensor:
    if indices.dim() != 2 or indices.shape[0] != batch:
        raise ValueError(f"random_ltd: indices must be [b, r] with b = {batch}, got shape {tuple(indices.shape)}")
    if indices.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"random_ltd: indices must be int32 or int64, got {indices.dtype}")
    if indices.device != device:
        raise ValueError(f"random_ltd: indices are on {indices.device} but the activations on {device}")
    if indices.shape[1] > seq_len:
        raise ValueError(f"random_ltd: {indices.shape[1]} kept tokens per sample exceed the sequence length {seq_len}")
    if indices.device.type == "cpu" and not torch.compiler.is_compiling():
        _check_index_values(indices, seq_len)
    return indices.to(torch.int64).contiguous()


def _check_index_values(indices: torch.Tensor, seq_len: int) -> None:
    """Range and distinctness per row (CPU only: on a GPU the check would synchronise every call)."""
    if indices.numel() == 0:
        return
    lo, hi = int(indices.min()), int(indices.max())
    if lo < 0 or hi >= seq_len:
        raise ValueError(f"random_ltd: token indices must lie in [0, {seq_len}), got values in [{lo}, {hi}]")
    ordered = indices.sort(dim=-1).values
    if bool((ordered[..., 1:] == ordered[..., :-1]).any()):
        raise ValueError("random_ltd: token indices must be distinct within each sample (row)")


def _check_sample_args(num_layers: int, batch: int, seq_len: int, kept: int) -> None:
    for name, value in (("num_layers", num_layers), ("batch", batch), ("seq_len", seq_len), ("kept", kept)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"random_ltd.sample_tokens: {name} must be a non-negative int, got {value!r}")
    if not 0 <= kept <= seq_len < _KEY_BOUND:
        raise ValueError(f"random_ltd.sample_tokens: need 0 <= kept ({kept}) <= seq_len ({seq_len}) < 2^31")


def _resolve_device(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    if device is None:
        return generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"random_ltd.sample_tokens: generator is on {generator.device} but device is {device}")
    return device


def _draw_keys(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform 31-bit keys; the r smallest per row (ties to the lower position) form the kept subset."""
    return torch.randint(0, _KEY_BOUND, shape, dtype=torch.int32, generator=generator, device=device)


# --------------------------------------------------------------------------------------------------------------
# Reference implementations
# --------------------------------------------------------------------------------------------------------------
def reference_sample_tokens(
    num_layers: int, batch: int, seq_len: int, kept: int, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Reference for :func:`sample_tokens`: kthvalue of (key, position) then the kept positions in order."""
    _check_sample_args(num_layers, batch, seq_len, kept)
    device = _resolve_device(generator, device)
    return reference_select_sorted(_draw_keys((num_layers, batch, seq_len), generator, device), kept)


def reference_select_sorted(keys: torch.Tensor, kept: int) -> torch.Tensor:
    """Positions of the ``kept`` smallest keys per row (ties to the lower position), ascending: ``[..., kept]``."""
    *lead, seq_len = keys.shape
    if kept == 0 or keys.numel() == 0:
        return torch.empty((*lead, kept), dtype=torch.int64, device=keys.device)
    # Unique composite key (key, position): the r smallest are well defined, and nonzero() lists them in position
    # order, exactly r per row.
    composite = keys.to(torch.int64) * seq_len + torch.arange(seq_len, device=keys.device)
    kth = composite.kthvalue(kept, dim=-1, keepdim=True).values
    return (composite <= kth).nonzero()[:, -1].clone().view(*lead, kept)  # own storage (nonzero is transposed)


def reference_sort_tokens(indices: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Reference for :func:`sort_tokens`."""
    return indices.to(torch.int64).sort(dim=-1).values


def reference_gather_tokens(hidden: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Reference for :func:`gather_tokens` (torch.gather; its autograd is the scatter into zeros)."""
    r, (b, h) = indices.shape[1], hidden.shape[1:]
    return torch.gather(hidden, 0, indices.t().unsqueeze(-1).expand(r, b, h))


def reference_scatter_tokens(hidden: torch.Tensor, part: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Reference for :func:`scatter_tokens` (out-of-place torch.scatter; autograd zeroes the overwritten rows)."""
    r, (b, h) = indices.shape[1], hidden.shape[1:]
    return hidden.scatter(0, indices.t().unsqueeze(-1).expand(r, b, h), part)


def reference_compose_tokens(
    hidden: torch.Tensor | None, part: torch.Tensor | None, indices: torch.Tensor, seq_len: int
) -> torch.Tensor:
    """``[s, b, h]`` with the rows at ``indices`` taken from ``part`` (zeros if None) and the others from ``hidden``
    (zeros if None): the scatter and both gradients of gather and scatter, computed as torch's autograd computes
    those gradients (``scatter_add_`` into zeros, ``scatter`` of 0), so the values match bit for bit."""
    src = hidden if hidden is not None else part
    assert src is not None, "compose_tokens needs hidden or part"
    r, b, h = indices.shape[1], indices.shape[0], src.shape[-1]
    index = indices.t().unsqueeze(-1).expand(r, b, h)
    if part is None:
        return hidden.scatter(0, index, 0.0)
    if hidden is None:
        return part.new_zeros(seq_len, b, h).scatter_add_(0, index, part)
    return hidden.scatter(0, index, part)


# --------------------------------------------------------------------------------------------------------------
# Custom ops: the CUDA kernel or the reference behind one schema each (one fused pass per direction on CUDA)
# --------------------------------------------------------------------------------------------------------------
@torch.library.custom_op("megatron_de::random_ltd_gather", mutates_args=())
def _gather_op(hidden: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``[s, b, h]``, int64 ``[b, r]`` -> ``[r, b, h]`` (see :func:`gather_tokens`)."""
    ext = _ext_for(hidden)
    if ext is None:
        return reference_gather_tokens(hidden, indices)
    return ext.gather_tokens(hidden.contiguous(), indices.contiguous())


@_gather_op.register_fake
def _(hidden: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return hidden.new_empty((indices.shape[1], *hidden.shape[1:]))


@torch.library.custom_op("megatron_de::random_ltd_compose", mutates_args=())
def _compose_op(
    hidden: torch.Tensor | None, part: torch.Tensor | None, indices: torch.Tensor, seq_len: int
) -> torch.Tensor:
    """``[s, b, h]``: rows at ``indices`` from ``part`` (zeros if None), the others from ``hidden`` (zeros if None)."""
    # Contiguous inputs give a contiguous output on both paths, as the fake implementation promises.
    hidden = None if hidden is None else hidden.contiguous()
    part = None if part is None else part.contiguous()
    ext = _ext_for(indices)
    if ext is None:
        return reference_compose_tokens(hidden, part, indices, seq_len)
    h = (hidden if hidden is not None else part).shape[-1]
    return ext.compose_tokens(hidden, part, ext.inverse_index(indices.contiguous(), seq_len), h)


@_compose_op.register_fake
def _(hidden: torch.Tensor | None, part: torch.Tensor | None, indices: torch.Tensor, seq_len: int) -> torch.Tensor:
    src = hidden if hidden is not None else part
    return src.new_empty((seq_len, indices.shape[0], src.shape[-1]))


# Autograd through the same ops (so double backward and compiled backward graphs work too): the gradient of a
# gather is a compose into zeros; a compose passes the gradient of its dropped rows to hidden and of its kept
# rows, gathered, to part.
def _gather_setup(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    hidden, indices = inputs
    ctx.save_for_backward(indices)
    ctx.seq_len = hidden.shape[0]


def _compose_setup(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    _, _, indices, seq_len = inputs
    ctx.save_for_backward(indices)
    ctx.seq_len = seq_len


def _gather_backward(ctx: Any, grad: torch.Tensor):
    (indices,) = ctx.saved_tensors
    return _compose_op(None, grad, indices, ctx.seq_len), None


def _compose_backward(ctx: Any, grad: torch.Tensor):
    (indices,) = ctx.saved_tensors
    grad_hidden = _compose_op(grad, None, indices, ctx.seq_len) if ctx.needs_input_grad[0] else None
    grad_part = _gather_op(grad, indices) if ctx.needs_input_grad[1] else None
    return grad_hidden, grad_part, None, None


_gather_op.register_autograd(_gather_backward, setup_context=_gather_setup)
_compose_op.register_autograd(_compose_backward, setup_context=_compose_setup)


@torch.library.custom_op("megatron_de::random_ltd_select", mutates_args=())
def _select_op(keys: torch.Tensor, kept: int) -> torch.Tensor:
    """int32 keys ``[..., s]`` -> int64 ``[..., kept]``: the positions of the ``kept`` smallest, ascending."""
    ext = _ext_for(keys)
    if ext is None:
        return reference_select_sorted(keys, kept)
    with torch.cuda.device(keys.device):
        return ext.select_sorted(keys.contiguous(), kept)


@_select_op.register_fake
def _(keys: torch.Tensor, kept: int) -> torch.Tensor:
    return keys.new_empty((*keys.shape[:-1], kept), dtype=torch.int64)


@torch.library.custom_op("megatron_de::random_ltd_sort", mutates_args=())
def _sort_op(indices: torch.Tensor, seq_len: int) -> torch.Tensor:
    """int64 ``[..., r]`` distinct values in ``[0, seq_len)`` -> the same rows ascending."""
    indices = indices.contiguous()
    ext = _ext_for(indices)
    if ext is None:
        return reference_sort_tokens(indices, seq_len)
    with torch.cuda.device(indices.device):
        return ext.sort_distinct(indices, seq_len)


@_sort_op.register_fake
def _(indices: torch.Tensor, seq_len: int) -> torch.Tensor:
    return indices.new_empty(indices.shape, dtype=torch.int64)


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------
def sample_tokens(
    num_layers: int, batch: int, seq_len: int, kept: int, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Draw the kept tokens of every random-LTD layer and sample.

    Each (layer, sample) row gets ``kept`` distinct positions, a uniformly random subset of ``range(seq_len)``
    (independent across rows), sorted ascending so the kept tokens keep their causal order. The draw is one
    ``torch.randint`` of 31-bit keys from ``generator`` (the positions of the ``kept`` smallest keys, ties to the
    lower position; a tie at the cut has probability below ``seq_len**2 / 2**32`` per row), so it is reproducible
    from the generator state and identical on every tensor-parallel rank that passes the same state (use the RNG
    tracker's generator). The CUDA path selects and orders the positions in one kernel without a sort, for any
    ``seq_len``; it returns exactly what the reference returns for the same keys. Under ``torch.compile`` the
    selection is the custom op ``random_ltd_select``; Dynamo cannot pass a ``torch.Generator`` to the key draw, so
    compiled callers draw from the default generator (``generator=None``) or call this outside the graph.

    Args:
        num_layers: number of random-LTD layers L.
        batch: micro-batch size b.
        seq_len: sequence length s.
        kept: kept tokens per sample r, ``0 <= r <= s``.
        generator: source of randomness (its device must match ``device``); ``None`` uses the default generator.
        device: output device; defaults to the generator's device, else CPU.

    Returns:
        int64 ``[L, b, r]``, each row strictly increasing with values in ``[0, s)``.
    """
    _check_sample_args(num_layers, batch, seq_len, kept)
    device = _resolve_device(generator, device)
    return _select_op(_draw_keys((num_layers, batch, seq_len), generator, device), kept)


def sort_tokens(indices: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Sort each row of distinct token positions ascending (DeepSpeed's ``token_sort_``, without its 2048 limit).

    Args:
        indices: int32/int64 ``[..., r]``, values distinct per row and in ``[0, seq_len)`` (checked on CPU; on GPU
            a violation leaves the tail of the row at -1).
        seq_len: upper bound of the values.

    Returns:
        int64 tensor of the same shape, each row ascending.
    """
    if indices.dim() < 1 or indices.shape[-1] > seq_len:
        raise ValueError(
            f"random_ltd.sort_tokens: need [..., r] with r <= seq_len ({seq_len}), got {tuple(indices.shape)}"
        )
    if indices.device.type == "cpu" and not torch.compiler.is_compiling():
        _check_index_values(indices.reshape(-1, indices.shape[-1]), seq_len)
    return _sort_op(indices.to(torch.int64), seq_len)


def gather_tokens(hidden: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Take the kept tokens out of the activations: ``out[i, j] = hidden[indices[j, i], j]``.

    Differentiable; the gradient of ``hidden`` is the output gradient scattered into zeros (exact autograd of the
    gather; the layer wrapper's scatter supplies the pass-through gradient of dropped tokens).

    Args:
        hidden: ``[s, b, h]`` (fp32, fp16 or bf16; any dtype works: the CUDA path copies bytes, 16 at a time when
            ``h * element_size`` and the addresses allow).
        indices: ``[b, r]`` distinct positions per sample.

    Returns:
        ``[r, b, h]``, contiguous, same dtype and device.
    """
    s, b, _ = _check_hidden(hidden)
    return _gather_op(hidden, _check_indices(indices, b, s, hidden.device))


def scatter_tokens(hidden: torch.Tensor, part: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Put the processed kept tokens back: a copy of ``hidden`` with ``out[indices[j, i], j] = part[i, j]``.

    Dropped tokens pass through unchanged, in value and in gradient; kept rows of ``hidden`` get zero gradient and
    ``part`` gets the gathered output gradient (exact autograd of the out-of-place scatter). ``hidden`` is not
    modified.

    Args:
        hidden: ``[s, b, h]`` activations entering the layer.
        part: ``[r, b, h]`` layer output for the kept tokens, same dtype as ``hidden``.
        indices: ``[b, r]`` distinct positions per sample (the ones :func:`gather_tokens` used).

    Returns:
        ``[s, b, h]``, contiguous.
    """
    s, b, h = _check_hidden(hidden)
    indices = _check_indices(indices, b, s, hidden.device)
    r = indices.shape[1]
    if tuple(part.shape) != (r, b, h) or part.dtype != hidden.dtype or part.device != hidden.device:
        raise ValueError(
            f"random_ltd.scatter_tokens: part must be [r, b, h] = {(r, b, h)} {hidden.dtype} on {hidden.device}, "
            f"got {tuple(part.shape)} {part.dtype} on {part.device}"
        )
    return _compose_op(hidden, part, indices, s)


def slice_attention_mask(mask: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The attention mask among the kept tokens: rows and columns gathered, ``out[j, 0, a, c] = mask[j, 0, i_a, i_c]``.

    Exact for any mask (encoder padding masks, causal masks, document-reset masks), so it also serves decoders whose
    mask is not plain causal. One advanced-indexing gather on both backends (no custom kernel: it is ``b * r * r``
    bytes, small next to the activations).

    Args:
        mask: ``[b or 1, 1, s, s]`` (bool in Megatron's convention, True = masked out; any dtype works).
        indices: ``[b, r]`` kept positions per sample.

    Returns:
        ``[b, 1, r, r]`` with the mask's dtype.
    """
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != mask.shape[3]:
        raise ValueError(f"random_ltd.slice_attention_mask: mask must be [b or 1, 1, s, s], got {tuple(mask.shape)}")
    b, s = indices.shape[0], mask.shape[-1]
    if mask.shape[0] not in (1, b):
        raise ValueError(f"random_ltd.slice_attention_mask: mask batch {mask.shape[0]} is neither 1 nor b = {b}")
    indices = _check_indices(indices, b, s, mask.device)
    sample = torch.arange(b, device=mask.device)[:, None, None] if mask.shape[0] == b else 0
    return mask[sample, 0, indices[:, :, None], indices[:, None, :]].unsqueeze(1)


def causal_attention_mask(kept: int, device=None) -> torch.Tensor:
    """The ``[1, 1, r, r]`` causal mask among kept tokens (True = masked out, Megatron's convention).

    Because :func:`sample_tokens` returns positions in ascending order, kept token a may attend to kept token c
    exactly when c <= a: the plain lower-triangular pattern. So for a plain causal decoder this equals
    ``slice_attention_mask(causal_mask, indices)``, and attention kernels can simply use ``is_causal=True`` on the
    ``r`` kept tokens. Not valid for document-reset masks: slice those with :func:`slice_attention_mask`.
    """
    if not isinstance(kept, int) or kept < 0:
        raise ValueError(f"random_ltd.causal_attention_mask: kept must be a non-negative int, got {kept!r}")
    return torch.ones(kept, kept, dtype=torch.bool, device=device).triu(1)[None, None]
