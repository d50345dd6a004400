"""Benchmark of the random-LTD CUDA kernels against plain PyTorch indexing and the memory roofline.

Gather/scatter are pure data movement, so the figure of merit is achieved bandwidth = (bytes read + bytes written)
/ time, compared with the HBM datasheet peak and with a measured device-to-device copy (the practical roof). Each
variant is captured in a CUDA graph of many calls that cycle over enough input sets to defeat the L2 cache; the
median replay time (CUDA events) over the calls gives the per-call kernel time without Python launch overhead.
Also times the fused sample (select) kernel and the distinct-sort kernel. Needs a CUDA GPU.

    PYTHONPATH=. python bench/bench_random_ltd_kernels.py [--peak-tbs 3.35] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics

import torch

from megatron.kernels import _build, random_ltd

L2_DEFEAT_BYTES = 512 * 2**20  # cycle through at least this much data per graph replay (H100 L2 is 50 MB)


def time_graph(fn, n_sets: int, calls: int, replays: int = 25) -> float:
    """Median seconds per call of ``fn(i)`` for i cycling over ``n_sets`` input sets, measured on graph replays."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(n_sets):  # warm up allocator and extension outside the capture
            fn(i)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for c in range(calls):
            fn(c % n_sets)
    for _ in range(3):
        graph.replay()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / calls)
    return statistics.median(times)


def copy_roof() -> float:
    """Bytes read + written per second of a large device-to-device copy (the best of a graph and an eager loop)."""
    n = 2**28  # 1 GiB of float32 per buffer
    src = [torch.randn(n, device="cuda") for _ in range(2)]
    dst = [torch.empty_like(s) for s in src]
    t_graph = time_graph(lambda i: dst[i].copy_(src[i]), 2, 4, replays=10)
    times = []
    for k in range(12):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst[k % 2].copy_(src[k % 2])
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * 4 * n / min(t_graph, statistics.median(times[2:]))


def gather_scatter_rows(ext, s: int, b: int, h: int, r: int, dtype: torch.dtype) -> list[dict]:
    e = torch.empty((), dtype=dtype).element_size()
    set_bytes = (s + r) * b * h * e
    n_sets = max(2, math.ceil(L2_DEFEAT_BYTES / set_bytes))
    gen = torch.Generator(device="cuda").manual_seed(0)
    hidden = [torch.randn(s, b, h, generator=gen, device="cuda").to(dtype) for _ in range(n_sets)]
    part = [torch.randn(r, b, h, generator=gen, device="cuda").to(dtype) for _ in range(n_sets)]
    idx = [random_ltd.sample_tokens(1, b, s, r, gen, "cuda")[0] for _ in range(n_sets)]
    flat = [(ix.t() * b + torch.arange(b, device="cuda")).reshape(-1) for ix in idx]  # row ids of [s*b, h]
    calls = max(n_sets, 16)

    def torch_scatter(i):
        out = hidden[i].clone()
        out.view(s * b, h).index_copy_(0, flat[i], part[i].view(r * b, h))
        return out

    variants = {
        "gather": (
            2 * r * b * h * e,
            lambda i: ext.gather_tokens(hidden[i], idx[i]),
            lambda i: hidden[i].view(s * b, h).index_select(0, flat[i]),
            "index_select",
        ),
        "scatter": (
            2 * s * b * h * e,
            lambda i: ext.compose_tokens(hidden[i], part[i], ext.inverse_index(idx[i], s), h),
            torch_scatter,
            "clone+index_copy_",
        ),
        "gather_bwd": (  # scatter of the gradient into zeros: reads r rows, writes s rows
            (r + s) * b * h * e,
            lambda i: ext.compose_tokens(None, part[i], ext.inverse_index(idx[i], s), h),
            lambda i: torch.zeros_like(hidden[i]).view(s * b, h).index_copy_(0, flat[i], part[i].view(r * b, h)),
            "zeros+index_copy_",
        ),
    }
    rows = []
    for name, (nbytes, ours, peer, peer_name) in variants.items():
        for i in range(n_sets):  # correctness spot check before timing
            assert torch.equal(ours(i).view(-1), peer(i).view(-1)), f"{name} mismatch for {(s, b, h, r)}"
        t_ours = time_graph(ours, n_sets, calls)
        t_peer = time_graph(peer, n_sets, calls)
        rows.append(dict(op=name, s=s, b=b, h=h, r=r, dtype=str(dtype).removeprefix("torch."), bytes=nbytes,
                         us=t_ours * 1e6, tbs=nbytes / t_ours / 1e12, peer=peer_name, peer_us=t_peer * 1e6))
    del hidden, part
    torch.cuda.empty_cache()
    return rows


def select_and_sort_rows(ext, L: int, b: int, s: int, r: int) -> list[dict]:
    gen = torch.Generator(device="cuda").manual_seed(1)
    keys = [torch.randint(0, 2**31, (L, b, s), dtype=torch.int32, generator=gen, device="cuda") for _ in range(4)]
    unsorted = [k.argsort(dim=-1)[..., :r].contiguous() for k in keys]

    def topk_sort(i):  # the plain-PyTorch way: k smallest keys, then order their positions
        return torch.topk(keys[i], r, dim=-1, largest=False, sorted=False).indices.sort(dim=-1).values

    rows = []
    for name, ours, peer, peer_name in (
        ("select(sample)", lambda i: ext.select_sorted(keys[i], r), topk_sort, "topk+sort"),
        ("sort_distinct", lambda i: ext.sort_distinct(unsorted[i], s), lambda i: unsorted[i].sort(dim=-1).values,
         "torch.sort"),
        ("randint keys", lambda i: torch.randint(0, 2**31, (L, b, s), dtype=torch.int32, device="cuda"), None, "-"),
    ):
        t = time_graph(ours, 4, 16)
        t_peer = time_graph(peer, 4, 16) if peer else float("nan")
        rows.append(dict(op=name, s=s, b=b, h=L, r=r, dtype="int", bytes=0, us=t * 1e6, tbs=float("nan"),
                         peer=peer_name, peer_us=t_peer * 1e6))
    return rows


def print_table(rows: list[dict], peak: float, roof: float) -> None:
    head = (f"{'op':<15}{'s':>6}{'b':>4}{'h/L':>6}{'r':>6}{'dtype':>9}{'us':>9}{'TB/s':>7}{'%peak':>7}{'%copy':>7}"
            f"  {'torch peer':<18}{'peer us':>9}{'speedup':>8}")
    print(head)
    print("-" * len(head))
    for row in rows:
        bw = row["tbs"]
        pct = f"{100 * bw * 1e12 / peak:6.1f}%" if not math.isnan(bw) else "     -"
        pct_roof = f"{100 * bw * 1e12 / roof:6.1f}%" if not math.isnan(bw) else "     -"
        bw_s = f"{bw:7.2f}" if not math.isnan(bw) else "      -"
        speed = row["peer_us"] / row["us"] if not math.isnan(row["peer_us"]) else float("nan")
        print(f"{row['op']:<15}{row['s']:>6}{row['b']:>4}{row['h']:>6}{row['r']:>6}{row['dtype']:>9}"
              f"{row['us']:>9.1f}{bw_s}{pct}{pct_roof}  {row['peer']:<18}{row['peer_us']:>9.1f}{speed:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peak-tbs", type=float, default=3.35, help="HBM datasheet peak in TB/s (H100 SXM: 3.35)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_random_ltd_kernels: needs a CUDA GPU")
    ext = _build.load_cuda_extension("random_ltd")
    props = torch.cuda.get_device_properties(0)
    roof = copy_roof()
    peak = args.peak_tbs * 1e12
    print(f"device: {props.name}, {props.multi_processor_count} SMs, torch {torch.__version__}, "
          f"date {datetime.date.today().isoformat()}")
    print(f"D2D copy roof: {roof / 1e12:.2f} TB/s (read+write) = {100 * roof / peak:.1f}% "
          f"of the {args.peak_tbs} TB/s peak")
    rows = []
    for h in (1024, 2048, 4096, 1023):
        rows += gather_scatter_rows(ext, 2048, 8, h, 1024, torch.bfloat16)
    rows += gather_scatter_rows(ext, 8192, 4, 2048, 4096, torch.bfloat16)
    rows += gather_scatter_rows(ext, 2048, 8, 2048, 1024, torch.float32)
    for s in (2048, 8192):
        rows += select_and_sort_rows(ext, 22, 8, s, s // 2)
    print_table(rows, peak, roof)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(dict(device=props.name, roof_tbs=roof / 1e12, peak_tbs=args.peak_tbs, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
