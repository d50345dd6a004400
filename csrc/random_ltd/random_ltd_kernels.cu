// CUDA kernels for random layerwise token dropping (random-LTD): token gather/scatter and sorted token selection.
//
// One translation unit, no torch headers (see random_ltd.h): the binding owns tensor checks and allocation. The
// reference semantics live in megatron/kernels/random_ltd.py; the GPU tests compare these kernels with it bit for bit.
// Unlike DeepSpeed's token_sort_ (a 2048-slot scan that silently breaks for longer sequences), the selection and the
// sort below loop over the row, so any sequence length works.
#include <cassert>
#include <cstdint>

#include <cuda_runtime.h>

#include "random_ltd.h"

namespace random_ltd {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// Row copies (gather, scatter and their backwards). One warp per row of `vpr` vectors; each lane keeps kUnroll
// independent 16-byte loads in flight before storing, which is what a memory-bound copy needs to reach HBM speed.
// ---------------------------------------------------------------------------------------------------------------
constexpr int kCopyWarps = 8;
constexpr int kCopyUnroll = 4;
constexpr uint32_t kMaxCopyBlocks = 1u << 20;

template <typename Vec, typename RowSource>
__global__ void __launch_bounds__(kCopyWarps * 32)
    copy_rows_kernel(Vec* __restrict__ dst, uint32_t n_rows, uint32_t vpr, RowSource source) {
  const uint32_t lane = threadIdx.x & 31u;
  const uint32_t stride = gridDim.x * kCopyWarps;
  for (uint32_t row = blockIdx.x * kCopyWarps + (threadIdx.x >> 5); row < n_rows; row += stride) {
    // The source is uniform across the warp, so the null (zeros) branch never diverges.
    const Vec* __restrict__ src = source(row);
    Vec* __restrict__ out = dst + static_cast<size_t>(row) * vpr;
    for (uint32_t base = 0; base < vpr; base += 32u * kCopyUnroll) {
      Vec v[kCopyUnroll];
#pragma unroll
      for (int k = 0; k < kCopyUnroll; ++k) {
        const uint32_t c = base + k * 32u + lane;
        v[k] = Vec{};
        if (src != nullptr && c < vpr) v[k] = __ldg(src + c);
      }
#pragma unroll
      for (int k = 0; k < kCopyUnroll; ++k) {
        const uint32_t c = base + k * 32u + lane;
        if (c < vpr) out[c] = v[k];
      }
    }
  }
}

// Output row i * b + j of the gathered [r, b, h] tensor reads input row idx[j, i] * b + j of hidden [s, b, h].
template <typename Vec>
struct GatherSource {
  const Vec* hidden;
  const int64_t* idx;
  uint32_t b, r, s, vpr;
  __device__ const Vec* operator()(uint32_t row) const {
    const uint32_t i = row / b;
    const uint32_t j = row - i * b;
    const int64_t p = idx[static_cast<size_t>(j) * r + i];
    assert(p >= 0 && p < s && "random-LTD gather: token index out of range");
    return hidden + (static_cast<size_t>(p) * b + j) * vpr;
  }
};

// Output row p * b + j of the full [s, b, h] tensor: the kept token's new value, or the original row.
template <typename Vec>
struct ComposeSource {
  const Vec* hidden;  // may be null: dropped rows read as zeros
  const Vec* part;    // may be null: kept rows read as zeros
  const int32_t* inv;
  uint32_t b, vpr;
  __device__ const Vec* operator()(uint32_t row) const {
    const int32_t i = inv[row];
    if (i < 0) return hidden == nullptr ? nullptr : hidden + static_cast<size_t>(row) * vpr;
    if (part == nullptr) return nullptr;
    const uint32_t j = row % b;
    return part + (static_cast<size_t>(i) * b + j) * vpr;
  }
};

template <typename Vec, typename RowSource>
cudaError_t launch_copy(void* dst, uint32_t n_rows, uint32_t vpr, RowSource source, cudaStream_t stream) {
  if (n_rows == 0 || vpr == 0) return cudaSuccess;
  uint32_t blocks = (n_rows + kCopyWarps - 1) / kCopyWarps;
  if (blocks > kMaxCopyBlocks) blocks = kMaxCopyBlocks;
  copy_rows_kernel<Vec><<<blocks, kCopyWarps * 32, 0, stream>>>(static_cast<Vec*>(dst), n_rows, vpr, source);
  return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// Block-wide exclusive prefix sum of one uint32 per thread (warp shuffles, then one warp over the warp totals).
// `smem` holds kThreads / 32 + 1 words. Ends with a barrier, so the caller may reuse `smem` right away.
// ---------------------------------------------------------------------------------------------------------------
template <int kThreads>
__device__ uint32_t block_exclusive_scan(uint32_t value, uint32_t* total, uint32_t* smem) {
  constexpr int kWarps = kThreads / 32;
  static_assert(kThreads % 32 == 0 && kWarps <= 32, "block scan expects whole warps, at most 32");
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  uint32_t incl = value;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const uint32_t n = __shfl_up_sync(0xffffffffu, incl, d);
    if (lane >= d) incl += n;
  }
  if (lane == 31) smem[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const uint32_t w = lane < kWarps ? smem[lane] : 0u;
    uint32_t w_incl = w;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const uint32_t n = __shfl_up_sync(0xffffffffu, w_incl, d);
      if (lane >= d) w_incl += n;
    }
    if (lane < kWarps) smem[lane] = w_incl - w;
    if (lane == kWarps - 1) smem[kWarps] = w_incl;
  }
  __syncthreads();
  const uint32_t excl = smem[warp] + incl - value;
  *total = smem[kWarps];
  __syncthreads();
  return excl;
}

// ---------------------------------------------------------------------------------------------------------------
// Sorted selection: per row, the positions of the r smallest keys in position order. Radix select (4 passes of 8
// bits) finds the r-th smallest key T and how many keys equal to T to take; one compaction pass then keeps
// key < T, and the first `take_equal` keys == T (ties go to lower positions, like a stable sort), writing each kept
// position at (#less before it) + (#taken equal before it). Output is sorted without a sort.
// ---------------------------------------------------------------------------------------------------------------
constexpr int kSelectThreads = 512;
constexpr int kSelectItems = 4;  // positions per thread per compaction chunk; chunk = 2048 < 2^16 (packed counts)

__device__ void radix_select(const uint32_t* keys, uint32_t s, uint32_t r, uint32_t* threshold,
                             uint32_t* take_equal) {
  __shared__ uint32_t hist[256];
  __shared__ uint32_t chosen_digit, chosen_rank;
  uint32_t prefix = 0, mask = 0, rank = r;  // want the rank-th smallest (1-based) among keys matching prefix
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (uint32_t i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    for (uint32_t p = threadIdx.x; p < s; p += blockDim.x) {
      const uint32_t k = keys[p];
      if ((k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      const uint32_t lane = threadIdx.x;
      uint32_t c[8], local = 0;
#pragma unroll
      for (int q = 0; q < 8; ++q) local += (c[q] = hist[lane * 8 + q]);
      uint32_t incl = local;
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) {
        const uint32_t n = __shfl_up_sync(0xffffffffu, incl, d);
        if (lane >= d) incl += n;
      }
      uint32_t acc = incl - local;
      if (acc < rank && rank <= incl) {  // exactly one lane holds the bin that contains the rank-th key
#pragma unroll
        for (int q = 0; q < 8; ++q) {
          if (acc < rank && rank <= acc + c[q]) {
            chosen_digit = lane * 8 + q;
            chosen_rank = rank - acc;
          }
          acc += c[q];
        }
      }
    }
    __syncthreads();
    prefix |= chosen_digit << shift;
    mask |= 255u << shift;
    rank = chosen_rank;
    // The next write of chosen_* comes after two more barriers, so every thread has read them by then.
  }
  *threshold = prefix;
  *take_equal = rank;
}

__global__ void __launch_bounds__(kSelectThreads)
    select_sorted_kernel(const uint32_t* __restrict__ keys_all, int64_t* __restrict__ out_all, uint32_t s,
                         uint32_t r) {
  __shared__ uint32_t scan_smem[kSelectThreads / 32 + 1];
  const uint32_t* keys = keys_all + static_cast<size_t>(blockIdx.x) * s;
  int64_t* out = out_all + static_cast<size_t>(blockIdx.x) * r;
  uint32_t threshold, take_equal;
  radix_select(keys, s, r, &threshold, &take_equal);

  uint32_t less_run = 0, equal_run = 0;  // counts over earlier chunks (identical in every thread)
  for (uint32_t base = 0; base < s; base += kSelectThreads * kSelectItems) {
    const uint32_t p0 = base + threadIdx.x * kSelectItems;
    bool less[kSelectItems], equal[kSelectItems];
    uint32_t n_less = 0, n_equal = 0;
#pragma unroll
    for (int q = 0; q < kSelectItems; ++q) {
      const uint32_t p = p0 + q;
      const uint32_t k = p < s ? keys[p] : 0xffffffffu;
      less[q] = p < s && k < threshold;
      equal[q] = p < s && k == threshold;
      n_less += less[q];
      n_equal += equal[q];
    }
    uint32_t chunk_total;
    const uint32_t excl = block_exclusive_scan<kSelectThreads>(n_less | (n_equal << 16), &chunk_total, scan_smem);
    uint32_t less_before = less_run + (excl & 0xffffu);
    uint32_t equal_before = equal_run + (excl >> 16);
#pragma unroll
    for (int q = 0; q < kSelectItems; ++q) {
      if (less[q] || (equal[q] && equal_before < take_equal)) {
        out[less_before + min(equal_before, take_equal)] = p0 + q;
      }
      less_before += less[q];
      equal_before += equal[q];
    }
    less_run += chunk_total & 0xffffu;
    equal_run += chunk_total >> 16;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Counting sort of distinct positions: set one bit per value, prefix-sum the per-thread bit counts, then each thread
// emits the set bits of its contiguous word range in order.
// ---------------------------------------------------------------------------------------------------------------
constexpr int kSortThreads = 512;
constexpr int64_t kSortSharedBytes = 48 * 1024;

__global__ void __launch_bounds__(kSortThreads)
    sort_distinct_kernel(const int64_t* __restrict__ in_all, int64_t* __restrict__ out_all, uint32_t s, uint32_t r,
                         uint32_t* __restrict__ workspace) {
  extern __shared__ uint32_t shared_bits[];
  __shared__ uint32_t scan_smem[kSortThreads / 32 + 1];
  const uint32_t words = (s + 31) / 32;
  uint32_t* bits = workspace == nullptr ? shared_bits : workspace + static_cast<size_t>(blockIdx.x) * words;
  const int64_t* in = in_all + static_cast<size_t>(blockIdx.x) * r;
  int64_t* out = out_all + static_cast<size_t>(blockIdx.x) * r;

  for (uint32_t w = threadIdx.x; w < words; w += kSortThreads) bits[w] = 0;
  __syncthreads();
  for (uint32_t i = threadIdx.x; i < r; i += kSortThreads) {
    const int64_t v = in[i];
    if (v >= 0 && v < s) atomicOr(&bits[v >> 5], 1u << (v & 31));
  }
  __syncthreads();  // all of `in` is read before anything is written, so in == out is safe

  const uint32_t per_thread = (words + kSortThreads - 1) / kSortThreads;
  const uint32_t w0 = min(threadIdx.x * per_thread, words);
  const uint32_t w1 = min(w0 + per_thread, words);
  uint32_t count = 0;
  for (uint32_t w = w0; w < w1; ++w) count += __popc(bits[w]);
  uint32_t total;
  uint32_t pos = block_exclusive_scan<kSortThreads>(count, &total, scan_smem);
  for (uint32_t w = w0; w < w1; ++w) {
    uint32_t m = bits[w];
    while (m != 0) {
      const uint32_t bit = __ffs(m) - 1;
      m &= m - 1;
      if (pos < r) out[pos] = static_cast<int64_t>(w) * 32 + bit;
      ++pos;
    }
  }
  for (uint32_t i = total + threadIdx.x; i < r; i += kSortThreads) out[i] = -1;  // duplicates or out-of-range input
}

__global__ void inverse_index_kernel(int32_t* __restrict__ inv, const int64_t* __restrict__ idx, uint32_t s,
                                     uint32_t b, uint32_t r) {
  const uint32_t t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= b * r) return;
  const uint32_t j = t / r;
  const uint32_t i = t - j * r;
  const int64_t p = idx[t];
  assert(p >= 0 && p < s && "random-LTD scatter: token index out of range");
  if (p >= 0 && p < s) inv[static_cast<size_t>(p) * b + j] = static_cast<int32_t>(i);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Launchers
// ---------------------------------------------------------------------------------------------------------------
#define RANDOM_LTD_DISPATCH_VEC(vec_bytes, ...)                   \
  switch (vec_bytes) {                                            \
    case 16: { using Vec = uint4; __VA_ARGS__ }                   \
    case 8: { using Vec = uint2; __VA_ARGS__ }                    \
    case 4: { using Vec = uint32_t; __VA_ARGS__ }                 \
    case 2: { using Vec = unsigned short; __VA_ARGS__ }           \
    case 1: { using Vec = unsigned char; __VA_ARGS__ }            \
    default: return cudaErrorInvalidValue;                        \
  }

cudaError_t launch_gather_rows(void* out, const void* hidden, const int64_t* idx, int64_t s, int64_t b, int64_t r,
                               int64_t row_bytes, int vec_bytes, cudaStream_t stream) {
  const uint32_t vpr = static_cast<uint32_t>(row_bytes / vec_bytes);
  const uint32_t n_rows = static_cast<uint32_t>(r * b);
  RANDOM_LTD_DISPATCH_VEC(vec_bytes, {
    GatherSource<Vec> src{static_cast<const Vec*>(hidden), idx, static_cast<uint32_t>(b), static_cast<uint32_t>(r),
                          static_cast<uint32_t>(s), vpr};
    return launch_copy<Vec>(out, n_rows, vpr, src, stream);
  })
}

cudaError_t launch_inverse_index(int32_t* inv, const int64_t* idx, int64_t s, int64_t b, int64_t r,
                                 cudaStream_t stream) {
  // All-ones bytes are -1 in int32: "not kept" for every position until the kernel marks the kept ones.
  cudaError_t err = cudaMemsetAsync(inv, 0xff, static_cast<size_t>(s * b) * sizeof(int32_t), stream);
  if (err != cudaSuccess || b * r == 0) return err;
  constexpr int kThreads = 256;
  const int64_t blocks = (b * r + kThreads - 1) / kThreads;
  inverse_index_kernel<<<static_cast<uint32_t>(blocks), kThreads, 0, stream>>>(
      inv, idx, static_cast<uint32_t>(s), static_cast<uint32_t>(b), static_cast<uint32_t>(r));
  return cudaGetLastError();
}

cudaError_t launch_compose_rows(void* out, const void* hidden, const void* part, const int32_t* inv, int64_t s,
                                int64_t b, int64_t row_bytes, int vec_bytes, cudaStream_t stream) {
  const uint32_t vpr = static_cast<uint32_t>(row_bytes / vec_bytes);
  const uint32_t n_rows = static_cast<uint32_t>(s * b);
  RANDOM_LTD_DISPATCH_VEC(vec_bytes, {
    ComposeSource<Vec> src{static_cast<const Vec*>(hidden), static_cast<const Vec*>(part), inv,
                           static_cast<uint32_t>(b), vpr};
    return launch_copy<Vec>(out, n_rows, vpr, src, stream);
  })
}

cudaError_t launch_select_sorted(int64_t* out, const int32_t* keys, int64_t rows, int64_t s, int64_t r,
                                 cudaStream_t stream) {
  if (rows == 0 || r == 0) return cudaSuccess;
  select_sorted_kernel<<<static_cast<uint32_t>(rows), kSelectThreads, 0, stream>>>(
      reinterpret_cast<const uint32_t*>(keys), out, static_cast<uint32_t>(s), static_cast<uint32_t>(r));
  return cudaGetLastError();
}

int64_t sort_shared_bitmap_limit() { return kSortSharedBytes / 4 * 32; }

cudaError_t launch_sort_distinct(int64_t* out, const int64_t* in, int64_t rows, int64_t s, int64_t r,
                                 uint32_t* workspace, cudaStream_t stream) {
  if (rows == 0 || r == 0) return cudaSuccess;
  const int64_t words = (s + 31) / 32;
  const size_t shared = workspace == nullptr ? static_cast<size_t>(words) * 4 : 0;
  if (shared > static_cast<size_t>(kSortSharedBytes)) return cudaErrorInvalidValue;
  sort_distinct_kernel<<<static_cast<uint32_t>(rows), kSortThreads, shared, stream>>>(
      in, out, static_cast<uint32_t>(s), static_cast<uint32_t>(r), workspace);
  return cudaGetLastError();
}

}  // namespace random_ltd
