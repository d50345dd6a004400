"""GPU tests: the compiled random-LTD kernels equal the PyTorch reference bit for bit (gather/scatter forward and
backward for fp32/fp16/bf16, odd hidden sizes, misaligned addresses, sequences above 2048) and the sampling and
sort kernels are exact for any sequence length. Skipped without CUDA (tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch

from megatron.kernels import _build, random_ltd

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
BITS = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
# (s, b, h, r): tiny, odd hidden sizes (scalar and 2/4/8-byte paths), DeepSpeed's 2048 limit and beyond.
SHAPES = [
    (1, 1, 1, 1), (5, 3, 7, 2), (17, 2, 13, 17), (64, 4, 24, 0), (2048, 4, 1024, 1024), (2049, 3, 1000, 1500),
    (4096, 2, 1023, 2048), (8192, 2, 130, 8191), (8192, 1, 2048, 4096),
]


@pytest.fixture(scope="module")
def ext():
    """Build (or load) the extension once; a failed build fails every test instead of silently using the reference."""
    return _build.load_cuda_extension("random_ltd")


@pytest.fixture(autouse=True)
def _force_cuda(monkeypatch, ext):
    monkeypatch.setenv(_build.KERNELS_ENV, "cuda")
    assert random_ltd.backend() == "cuda", "compiled backend expected on a CUDA machine"


def _poison(shape, dtype):
    """Fill soon-to-be-reused allocator memory with NaN/0xff so an unwritten output element cannot pass as equal."""
    junk = torch.full(shape, float("nan"), dtype=dtype, device="cuda") if dtype.is_floating_point else torch.full(
        shape, -7, dtype=dtype, device="cuda")
    del junk


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.view(BITS[a.dtype]), b.view(BITS[b.dtype]))


def _hidden(s, b, h, dtype, offset, gen):
    """Random [s, b, h] activations; offset > 0 shifts the base address off 16-byte alignment."""
    flat = torch.randn(s * b * h + offset, generator=gen, device="cuda").to(dtype)
    return flat[offset:].view(s, b, h)


def _indices(b, s, r, gen, sorted_: bool):
    if sorted_:
        return random_ltd.sample_tokens(1, b, s, r, gen, "cuda")[0]
    keys = torch.rand(b, s, generator=gen, device="cuda")
    return keys.argsort(dim=-1)[:, :r].contiguous()


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_scatter_bit_exact_against_reference(dtype):
    """Forward and backward of gather_tokens and scatter_tokens equal the reference exactly over many shapes, sorted
    and unsorted indices, aligned and misaligned bases; every output element is written (poisoned memory)."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    for case, (s, b, h, r) in enumerate(SHAPES):
        offset = case % 3  # 0: aligned, 1-2: element offsets that force narrower vector paths
        hidden = _hidden(s, b, h, dtype, offset, gen).requires_grad_()
        part = torch.randn(r, b, h, generator=gen, device="cuda").to(dtype).requires_grad_()
        idx = _indices(b, s, r, gen, sorted_=case % 2 == 0)
        g_part = torch.randn(r, b, h, generator=gen, device="cuda").to(dtype)
        g_full = torch.randn(s, b, h, generator=gen, device="cuda").to(dtype)

        _poison((r, b, h), dtype)
        out = random_ltd.gather_tokens(hidden, idx)
        ref = random_ltd.reference_gather_tokens(hidden, idx)
        assert _bitwise_equal(out, ref), f"gather forward differs for {(s, b, h, r)} {dtype}"
        (grad,) = torch.autograd.grad(out, hidden, g_part)
        (grad_ref,) = torch.autograd.grad(ref, hidden, g_part)
        assert torch.equal(grad, grad_ref), f"gather backward differs for {(s, b, h, r)} {dtype}"

        _poison((s, b, h), dtype)
        out = random_ltd.scatter_tokens(hidden, part, idx)
        ref = random_ltd.reference_scatter_tokens(hidden, part, idx)
        assert _bitwise_equal(out, ref), f"scatter forward differs for {(s, b, h, r)} {dtype}"
        grads = torch.autograd.grad(out, (hidden, part), g_full)
        grads_ref = torch.autograd.grad(ref, (hidden, part), g_full)
        assert torch.equal(grads[0], grads_ref[0]), f"scatter backward (hidden) differs for {(s, b, h, r)} {dtype}"
        assert torch.equal(grads[1], grads_ref[1]), f"scatter backward (part) differs for {(s, b, h, r)} {dtype}"


@pytest.mark.parametrize(
    "L,b,s,r",
    [(1, 1, 1, 1), (2, 3, 7, 3), (22, 8, 2048, 1024), (3, 4, 2049, 2048), (2, 4, 4096, 1), (2, 2, 8192, 4096),
     (1, 2, 8192, 8192), (1, 1, 65536, 30000), (4, 2, 100, 0)],
)
def test_sample_tokens_matches_reference_exactly(L, b, s, r):
    """The fused select kernel returns exactly the reference's indices for the same generator state (any s), which
    are sorted, distinct and in range; the same seed reproduces them."""
    got = random_ltd.sample_tokens(L, b, s, r, torch.Generator(device="cuda").manual_seed(11), "cuda")
    ref = random_ltd.reference_sample_tokens(L, b, s, r, torch.Generator(device="cuda").manual_seed(11), "cuda")
    assert got.shape == (L, b, r) and got.dtype == torch.int64
    assert torch.equal(got, ref)
    if r:
        assert bool((got[..., 1:] > got[..., :-1]).all()) and int(got.min()) >= 0 and int(got.max()) < s
    again = random_ltd.sample_tokens(L, b, s, r, torch.Generator(device="cuda").manual_seed(11), "cuda")
    assert torch.equal(got, again)


@pytest.mark.parametrize("key_range", [1, 2, 5, 1000])
def test_select_kernel_breaks_ties_like_reference(ext, key_range):
    """With heavily tied keys (down to all equal) the kernel keeps the r smallest (key, position) pairs, as the
    reference does."""
    gen = torch.Generator(device="cuda").manual_seed(key_range)
    for s in (1, 33, 2048, 5000):
        keys = torch.randint(0, key_range, (6, s), dtype=torch.int32, generator=gen, device="cuda")
        for r in {1, s // 2, s - 1, s} - {0}:
            assert torch.equal(ext.select_sorted(keys, r), random_ltd.reference_select_sorted(keys, r)), (s, r)


@pytest.mark.parametrize("s", [1, 100, 2048, 2049, 8192, 65536, 500_000])
def test_sort_tokens_exact_for_any_length(s):
    """sort_tokens equals torch.sort on random distinct subsets, past DeepSpeed's 2048 limit and past the
    shared-memory bitmap (global workspace path at s = 500k)."""
    gen = torch.Generator(device="cuda").manual_seed(s)
    for r in sorted({1, max(1, s // 3), s}):
        idx = torch.rand(3, s, generator=gen, device="cuda").argsort(dim=-1)[:, :r].contiguous()
        _poison((3, r), torch.int64)
        assert torch.equal(random_ltd.sort_tokens(idx, s), torch.sort(idx, dim=-1).values), (s, r)


def test_sort_kernel_marks_invalid_input(ext):
    """Repeated or out-of-range values leave the tail of the row at -1 instead of producing a plausible order."""
    idx = torch.tensor([[4, 1, 4, 0], [9, 2, 3, 1]], device="cuda")
    assert ext.sort_distinct(idx, 8).tolist() == [[0, 1, 4, -1], [1, 2, 3, -1]]


def test_slice_attention_mask_on_gpu_equals_cpu():
    """Mask slicing gives the same result on GPU as on CPU for per-sample and shared masks."""
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand(4, 1, 300, 300, generator=gen) < 0.5
    idx = torch.stack([torch.randperm(300, generator=gen)[:77] for _ in range(4)])
    for m in (mask, mask[:1]):
        got = random_ltd.slice_attention_mask(m.cuda(), idx.cuda())
        assert torch.equal(got.cpu(), random_ltd.slice_attention_mask(m, idx))
