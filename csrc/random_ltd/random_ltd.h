// Launchers for the random-LTD CUDA kernels (random_ltd_kernels.cu), called by the PyTorch binding (pt_binding.cpp).
//
// The kernels see raw device pointers and sizes only, so the .cu file compiles without the torch headers (fast,
// and compile-checkable on a machine without the CUDA torch wheel). Layout is Megatron's sequence-first one:
// activations [s, b, h] (row = position * b + sample, h contiguous), token indices [b, r] per sample.
// Every launcher returns the CUDA error of its launch (cudaSuccess when nothing went wrong).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace random_ltd {

// out[i, j, :] = hidden[idx[j, i], j, :] for i < r, j < b.  `row_bytes` = h * element size; `vec_bytes` (16, 8, 4, 2
// or 1) divides row_bytes and both base addresses. Pure byte copy: bit-exact for every dtype.
cudaError_t launch_gather_rows(void* out, const void* hidden, const int64_t* idx, int64_t s, int64_t b, int64_t r,
                               int64_t row_bytes, int vec_bytes, cudaStream_t stream);

// inv[p * b + j] = i where idx[j, i] == p, and -1 for positions that are not kept. `inv` holds s * b int32.
cudaError_t launch_inverse_index(int32_t* inv, const int64_t* idx, int64_t s, int64_t b, int64_t r,
                                 cudaStream_t stream);

// out[p, j, :] = part[inv[p, j], j, :] where inv >= 0, else hidden[p, j, :]. A null `hidden` or `part` reads as
// zeros: (hidden, part) is the forward scatter, (null, g) the gather's backward, (g, null) the scatter's backward
// with respect to hidden. Each output row is written exactly once (no clone followed by an in-place scatter).
cudaError_t launch_compose_rows(void* out, const void* hidden, const void* part, const int32_t* inv, int64_t s,
                                int64_t b, int64_t row_bytes, int vec_bytes, cudaStream_t stream);

// For each of `rows` rows of `s` random 31-bit keys: out[row, :] = the positions of the r smallest keys (ties broken
// by lower position), in ascending position order. One block per row; no limit on s.
cudaError_t launch_select_sorted(int64_t* out, const int32_t* keys, int64_t rows, int64_t s, int64_t r,
                                 cudaStream_t stream);

// Sort each of `rows` rows of r distinct values in [0, s) ascending (bitmap counting sort, any s). Values that are out
// of range or repeated leave the tail of the row filled with -1. `workspace` (rows * ceil(s / 32) uint32) is used
// instead of shared memory when the bitmap exceeds sort_shared_bitmap_limit(); pass nullptr otherwise.
cudaError_t launch_sort_distinct(int64_t* out, const int64_t* in, int64_t rows, int64_t s, int64_t r,
                                 uint32_t* workspace, cudaStream_t stream);

// Largest s whose per-row bitmap the sort keeps in (default, 48 KiB) shared memory.
int64_t sort_shared_bitmap_limit();

}  // namespace random_ltd
