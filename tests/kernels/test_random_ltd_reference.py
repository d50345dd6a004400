"""CPU tests of the random-LTD token ops (the PyTorch reference path): gather/scatter values and gradients against a
naive per-sample loop, the statistics and reproducibility of token sampling, mask slicing, input validation, and the
backend switch (no compilation without CUDA), and the custom-op registration that lets torch.compile trace them."""

from __future__ import annotations

import pytest
import torch

from megatron.kernels import _build, random_ltd

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _indices(b: int, s: int, r: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(s, generator=g)[:r] for _ in range(b)])  # distinct, deliberately unsorted


def _naive_gather(hidden: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    b, r = idx.shape
    out = torch.empty(r, b, hidden.shape[2], dtype=hidden.dtype)
    for j in range(b):
        for i in range(r):
            out[i, j] = hidden[idx[j, i], j]
    return out


def _naive_scatter(hidden: torch.Tensor, part: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    out = hidden.clone()
    for j in range(idx.shape[0]):
        for i in range(idx.shape[1]):
            out[idx[j, i], j] = part[i, j]
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_matches_naive_loop_values_and_gradient(dtype):
    """gather_tokens picks hidden[idx[j, i], j] into row (i, j); its gradient is the output gradient at the kept rows
    and exactly zero elsewhere."""
    s, b, h, r = 13, 3, 7, 5
    hidden = torch.randn(s, b, h).to(dtype).requires_grad_()
    idx = _indices(b, s, r)
    out = random_ltd.gather_tokens(hidden, idx)
    assert out.shape == (r, b, h) and out.dtype == dtype
    assert torch.equal(out, _naive_gather(hidden.detach(), idx))
    w = torch.randn(r, b, h).to(dtype)
    out.backward(w)
    expected = torch.zeros(s, b, h, dtype=dtype)
    for j in range(b):
        for i in range(r):
            expected[idx[j, i], j] = w[i, j]
    assert torch.equal(hidden.grad, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_matches_naive_loop_values_and_gradients(dtype):
    """scatter_tokens overwrites the kept rows with part and passes dropped rows through unchanged; hidden's gradient
    is the output gradient with kept rows zeroed, part's is the output gradient gathered at the kept rows."""
    s, b, h, r = 11, 2, 5, 4
    hidden = torch.randn(s, b, h).to(dtype).requires_grad_()
    part = torch.randn(r, b, h).to(dtype).requires_grad_()
    idx = _indices(b, s, r, seed=1)
    before = hidden.detach().clone()
    out = random_ltd.scatter_tokens(hidden, part, idx)
    assert torch.equal(out, _naive_scatter(hidden.detach(), part.detach(), idx))
    assert torch.equal(hidden.detach(), before), "scatter_tokens must not modify its input"
    g = torch.randn(s, b, h).to(dtype)
    out.backward(g)
    expected_hidden = g.clone()
    for j in range(b):
        expected_hidden[idx[j], j] = 0
    assert torch.equal(hidden.grad, expected_hidden)
    assert torch.equal(part.grad, _naive_gather(g, idx))


def test_gather_layer_scatter_passes_dropped_token_gradients_through():
    """In the wrapper pattern scatter(x, f(gather(x))), dropped tokens are the identity in value and gradient and kept
    tokens see f's gradient only: x.grad equals the same computation done position by position."""
    s, b, h, r = 9, 2, 4, 3
    x = torch.randn(s, b, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(h, h, dtype=torch.float64)
    idx = _indices(b, s, r, seed=2)
    out = random_ltd.scatter_tokens(x, torch.tanh(random_ltd.gather_tokens(x, idx) @ weight), idx)
    g = torch.randn(s, b, h, dtype=torch.float64)
    out.backward(g)
    x2 = x.detach().clone().requires_grad_()
    rows = []
    for p in range(s):
        rows.append(torch.stack([torch.tanh(x2[p, j] @ weight) if p in idx[j] else x2[p, j] for j in range(b)]))
    torch.stack(rows).backward(g)
    assert torch.allclose(out, torch.stack(rows).detach(), rtol=0, atol=1e-12)
    assert torch.allclose(x.grad, x2.grad, rtol=0, atol=1e-12)
    kept = torch.zeros(s, b, dtype=torch.bool)
    for j in range(b):
        kept[idx[j], j] = True
    assert torch.equal(x.grad[~kept], g[~kept]), "dropped tokens must receive the output gradient unchanged"


def _op_cases():
    s, b, h, r = 9, 2, 4, 3
    hidden = torch.randn(s, b, h, requires_grad=True)
    part = torch.randn(r, b, h, requires_grad=True)
    strided = torch.randn(b, s, h).transpose(0, 1).requires_grad_()  # [s, b, h] view with batch-major storage
    idx = torch.tensor([[0, 4, 7], [1, 2, 8]])
    keys = torch.randint(0, 2**31, (2, 3, s), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    ops = torch.ops.megatron_de
    return {
        "gather": (ops.random_ltd_gather, (hidden, idx)),
        "gather_strided": (ops.random_ltd_gather, (strided, idx)),
        "compose": (ops.random_ltd_compose, (hidden, part, idx, s)),
        "compose_strided": (ops.random_ltd_compose, (strided, part, idx, s)),
        "compose_into_zeros": (ops.random_ltd_compose, (None, part, idx, s)),
        "compose_drop_kept": (ops.random_ltd_compose, (hidden, None, idx, s)),
        "select": (ops.random_ltd_select, (keys, 4)),
        "sort": (ops.random_ltd_sort, (idx.flip(-1), s)),
    }


@pytest.mark.parametrize("case", list(_op_cases()))
def test_custom_ops_pass_opcheck(case):
    """torch.library.opcheck: each op's schema, fake implementation (shapes, dtypes and strides of the real output,
    also for strided inputs), autograd registration and AOT dispatch agree with the real op."""
    op, args = _op_cases()[case]
    torch.library.opcheck(op, args)


def test_token_ops_compile_without_graph_break():
    """torch.compile(fullgraph=True) traces sampling, sorting, gather, a layer and scatter (a graph break would raise)
    and gives the eager values and gradients: the ops are custom ops with fake implementations and autograd, and the
    index checks that read values are skipped while tracing."""
    s, b, h, r = 12, 3, 8, 5
    weight = torch.randn(h, h)

    def routed(x, unsorted):
        idx = random_ltd.sample_tokens(1, b, s, r)[0] if unsorted is None else random_ltd.sort_tokens(unsorted, s)
        return random_ltd.scatter_tokens(x, torch.tanh(random_ltd.gather_tokens(x, idx) @ weight), idx)

    torch._dynamo.reset()
    compiled = torch.compile(routed, backend="aot_eager", fullgraph=True)
    for unsorted in (None, _indices(b, s, r)):
        outs = []
        for fn in (routed, compiled):
            x = torch.randn(s, b, h, generator=torch.Generator().manual_seed(1), requires_grad=True)
            torch.manual_seed(5)
            out = fn(x, unsorted)
            out.backward(torch.ones_like(out))
            outs.append((out.detach(), x.grad))
        assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("s,r", [(1, 1), (17, 0), (17, 1), (17, 9), (17, 17), (300, 128)])
def test_sample_tokens_distinct_sorted_in_range(s, r):
    """Each (layer, sample) row holds r distinct positions < s in strictly increasing order; r = s keeps them all."""
    L, b = 3, 4
    idx = random_ltd.sample_tokens(L, b, s, r, torch.Generator().manual_seed(3))
    assert idx.shape == (L, b, r) and idx.dtype == torch.int64
    if r:
        assert bool((idx[..., 1:] > idx[..., :-1]).all()) and int(idx.min()) >= 0 and int(idx.max()) < s
    if r == s:
        assert torch.equal(idx, torch.arange(s).expand(L, b, s))


def test_sample_tokens_reproducible_and_rows_independent():
    """The same generator state gives the same indices (identical across TP ranks that share the tracker state); a
    different seed, and the next draw from the same generator, give different ones; rows differ from each other."""
    a = random_ltd.sample_tokens(4, 3, 256, 64, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    b = random_ltd.sample_tokens(4, 3, 256, 64, g)
    c = random_ltd.sample_tokens(4, 3, 256, 64, g)
    d = random_ltd.sample_tokens(4, 3, 256, 64, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)
    rows = a.reshape(-1, 64)
    assert len({tuple(row.tolist()) for row in rows}) == rows.shape[0]


def test_sample_tokens_uniform_chi_square():
    """Every position is kept with probability r/s and every pair of positions with r(r-1)/(s(s-1)): chi-square
    statistics over 6000 rows stay below the 0.1% critical values (fixed seed, so the test is deterministic)."""
    s, r, rows = 48, 12, 6000
    idx = random_ltd.sample_tokens(1, rows, s, r, torch.Generator().manual_seed(1234))[0]
    counts = torch.bincount(idx.reshape(-1), minlength=s).double()
    expected = rows * r / s
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 84.0, f"position frequencies not uniform: chi2={chi2:.1f} with 47 dof (0.1% critical 82.7)"
    kept = torch.zeros(rows, s)
    kept.scatter_(1, idx, 1.0)
    pairs = kept[:, :16].t() @ kept[:, :16]  # co-inclusion counts of the first 16 positions
    iu = torch.triu_indices(16, 16, 1)
    observed = pairs[iu[0], iu[1]]
    expected_pair = rows * r * (r - 1) / (s * (s - 1))
    chi2_pairs = float(((observed - expected_pair) ** 2 / expected_pair).sum())
    assert chi2_pairs < 180.0, f"pair co-inclusion not uniform: chi2={chi2_pairs:.1f}, 120 cells (0.1% critical 173.6)"


def test_reference_select_breaks_ties_by_position():
    """With tied keys the kept set is the r smallest (key, position) pairs: the rule the CUDA kernel must reproduce."""
    keys = torch.tensor([[5, 1, 3, 1, 1, 0, 3]], dtype=torch.int32)
    assert random_ltd.reference_select_sorted(keys, 3).tolist() == [[1, 3, 5]]
    assert random_ltd.reference_select_sorted(keys, 5).tolist() == [[1, 2, 3, 4, 5]]


def test_sort_tokens_sorts_and_rejects_duplicates():
    """sort_tokens returns each row ascending; repeated or out-of-range values are a ValueError on CPU."""
    idx = _indices(5, 1000, 700, seed=4)
    assert torch.equal(random_ltd.sort_tokens(idx, 1000), idx.sort(dim=-1).values)
    with pytest.raises(ValueError, match="distinct"):
        random_ltd.sort_tokens(torch.tensor([[3, 1, 3]]), 10)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        random_ltd.sort_tokens(torch.tensor([[3, 1, 10]]), 10)


@pytest.mark.parametrize("mask_batch", [1, 3])
def test_slice_attention_mask_matches_naive(mask_batch):
    """slice_attention_mask gathers rows and columns of each sample's mask (a shared [1,1,s,s] mask serves all)."""
    s, b, r = 10, 3, 4
    mask = torch.rand(mask_batch, 1, s, s) < 0.5
    idx = _indices(b, s, r, seed=5)
    out = random_ltd.slice_attention_mask(mask, idx)
    assert out.shape == (b, 1, r, r) and out.dtype == torch.bool
    for j in range(b):
        m = mask[j if mask_batch == b else 0, 0]
        for a in range(r):
            for c in range(r):
                assert bool(out[j, 0, a, c]) == bool(m[idx[j, a], idx[j, c]])


def test_causal_mask_of_sorted_kept_tokens_is_plain_causal():
    """For sorted kept positions, slicing a causal mask gives the plain r x r causal mask (so is_causal=True works)."""
    s, r = 32, 9
    full = torch.ones(s, s, dtype=torch.bool).triu(1)[None, None]  # True = masked out
    idx = random_ltd.sample_tokens(1, 4, s, r, torch.Generator().manual_seed(6))[0]
    sliced = random_ltd.slice_attention_mask(full, idx)
    assert torch.equal(sliced, random_ltd.causal_attention_mask(r).expand(4, 1, r, r))


def test_bad_inputs_raise_value_error():
    """Shape, dtype, range and device mistakes name the argument and the values instead of failing deep in torch."""
    hidden = torch.randn(8, 2, 4)
    with pytest.raises(ValueError, match=r"\[s, b, h\]"):
        random_ltd.gather_tokens(torch.randn(8, 4), torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="b = 2"):
        random_ltd.gather_tokens(hidden, torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="int32 or int64"):
        random_ltd.gather_tokens(hidden, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="exceed the sequence length"):
        random_ltd.gather_tokens(hidden, torch.zeros(2, 9, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        random_ltd.gather_tokens(hidden, torch.tensor([[0, 8], [1, 2]]))
    with pytest.raises(ValueError, match="part must be"):
        random_ltd.scatter_tokens(hidden, torch.randn(2, 2, 4, dtype=torch.float16), torch.tensor([[0, 1], [1, 2]]))
    with pytest.raises(ValueError, match="kept"):
        random_ltd.sample_tokens(2, 2, 8, 9)
    with pytest.raises(ValueError, match="num_layers"):
        random_ltd.sample_tokens(-1, 2, 8, 4)
    with pytest.raises(ValueError, match="mask must be"):
        random_ltd.slice_attention_mask(torch.ones(2, 8, 8, dtype=torch.bool), torch.tensor([[0, 1], [1, 2]]))


def test_cpu_backend_is_reference_and_never_compiles(monkeypatch):
    """Without CUDA the reference serves every op and no build is attempted; MEGATRON_DE_KERNELS=cuda makes the
    missing GPU an error and an unknown mode a ValueError."""
    def no_build(name):
        raise AssertionError(f"tried to build {name} on a CPU-only path")

    monkeypatch.setattr(_build, "load_cuda_extension", no_build)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(_build.KERNELS_ENV, raising=False)
    assert random_ltd.backend() == "reference"
    random_ltd.gather_tokens(torch.randn(4, 1, 2), torch.tensor([[1, 3]]))
    monkeypatch.setenv(_build.KERNELS_ENV, "reference")
    assert random_ltd.backend() == "reference"
    monkeypatch.setenv(_build.KERNELS_ENV, "fast")
    with pytest.raises(ValueError, match="MEGATRON_DE_KERNELS"):
        random_ltd.backend()
    monkeypatch.undo()
    if not torch.cuda.is_available():
        monkeypatch.setenv(_build.KERNELS_ENV, "cuda")
        with pytest.raises(RuntimeError, match="is_available"):
            random_ltd.backend()
