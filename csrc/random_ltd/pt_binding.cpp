// PyTorch binding of the random-LTD kernels: tensor checks, allocation on the current stream, pybind11 module.
//
// Called only through megatron/kernels/random_ltd.py, which validates user input with clear ValueErrors first; the
// TORCH_CHECKs here guard internal invariants (device, dtype, contiguity, 32-bit row counts).
#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <limits>
#include <optional>

#include "random_ltd.h"

namespace {

constexpr int64_t kMaxRows = std::numeric_limits<int32_t>::max();

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "random_ltd ", what, " launch failed: ", cudaGetErrorString(err));
}

void check_cuda_contiguous(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "random_ltd: ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.is_contiguous(), "random_ltd: ", name, " must be contiguous");
}

void check_indices(const torch::Tensor& idx, int64_t b) {
  check_cuda_contiguous(idx, "indices");
  TORCH_CHECK(idx.scalar_type() == torch::kInt64, "random_ltd: indices must be int64");
  TORCH_CHECK(idx.dim() == 2 && idx.size(0) == b, "random_ltd: indices must be [b, r] with b = ", b);
}

// Widest access (16, 8, 4, 2 or 1 bytes) that divides the row size and the alignment of every base address.
int vector_bytes(int64_t row_bytes, std::initializer_list<const void*> ptrs) {
  for (int v = 16; v > 1; v /= 2) {
    bool ok = row_bytes % v == 0;
    for (const void* p : ptrs) ok = ok && (p == nullptr || reinterpret_cast<uintptr_t>(p) % v == 0);
    if (ok) return v;
  }
  return 1;
}

int64_t row_bytes_of(const torch::Tensor& t) { return t.size(2) * static_cast<int64_t>(t.element_size()); }

torch::Tensor gather_tokens(const torch::Tensor& hidden, const torch::Tensor& idx) {
  check_cuda_contiguous(hidden, "hidden");
  TORCH_CHECK(hidden.dim() == 3, "random_ltd: hidden must be [s, b, h]");
  const int64_t s = hidden.size(0), b = hidden.size(1), h = hidden.size(2);
  check_indices(idx, b);
  const int64_t r = idx.size(1);
  TORCH_CHECK(r * b <= kMaxRows && s * b <= kMaxRows, "random_ltd: more than 2^31 token rows");
  const c10::cuda::CUDAGuard guard(hidden.device());
  auto out = torch::empty({r, b, h}, hidden.options());
  if (out.numel() == 0) return out;
  const int64_t row_bytes = row_bytes_of(hidden);
  const int vec = vector_bytes(row_bytes, {hidden.data_ptr(), out.data_ptr()});
  check_launch(random_ltd::launch_gather_rows(out.data_ptr(), hidden.data_ptr(), idx.data_ptr<int64_t>(), s, b, r,
                                              row_bytes, vec, c10::cuda::getCurrentCUDAStream()),
               "gather");
  return out;
}

torch::Tensor inverse_index(const torch::Tensor& idx, int64_t s) {
  TORCH_CHECK(idx.dim() == 2, "random_ltd: indices must be [b, r]");
  const int64_t b = idx.size(0), r = idx.size(1);
  check_indices(idx, b);
  TORCH_CHECK(s * b <= kMaxRows && r <= s, "random_ltd: bad sizes for the inverse index");
  const c10::cuda::CUDAGuard guard(idx.device());
  auto inv = torch::empty({s, b}, idx.options().dtype(torch::kInt32));
  if (inv.numel() == 0) return inv;
  check_launch(random_ltd::launch_inverse_index(inv.data_ptr<int32_t>(), idx.data_ptr<int64_t>(), s, b, r,
                                                c10::cuda::getCurrentCUDAStream()),
               "inverse_index");
  return inv;
}

// Full [s, b, h] tensor from the original rows (`hidden`, or zeros) and the kept rows (`part` [r, b, h], or zeros).
torch::Tensor compose_tokens(const std::optional<torch::Tensor>& hidden, const std::optional<torch::Tensor>& part,
                             const torch::Tensor& inv, int64_t h) {
  TORCH_CHECK(hidden.has_value() || part.has_value(), "random_ltd: compose needs hidden or part");
  check_cuda_contiguous(inv, "inverse index");
  TORCH_CHECK(inv.scalar_type() == torch::kInt32 && inv.dim() == 2, "random_ltd: inverse index must be int32 [s, b]");
  const int64_t s = inv.size(0), b = inv.size(1);
  const torch::Tensor& like = hidden.has_value() ? *hidden : *part;
  if (hidden.has_value()) {
    check_cuda_contiguous(*hidden, "hidden");
    TORCH_CHECK(hidden->sizes() == torch::IntArrayRef({s, b, h}), "random_ltd: hidden must be [s, b, h]");
  }
  if (part.has_value()) {
    check_cuda_contiguous(*part, "part");
    TORCH_CHECK(part->dim() == 3 && part->size(1) == b && part->size(2) == h, "random_ltd: part must be [r, b, h]");
    TORCH_CHECK(!hidden.has_value() || hidden->scalar_type() == part->scalar_type(),
                "random_ltd: hidden and part dtypes differ");
  }
  const c10::cuda::CUDAGuard guard(like.device());
  auto out = torch::empty({s, b, h}, like.options());
  if (out.numel() == 0) return out;
  const void* hp = hidden.has_value() ? hidden->data_ptr() : nullptr;
  const void* pp = part.has_value() ? part->data_ptr() : nullptr;
  const int64_t row_bytes = h * static_cast<int64_t>(like.element_size());
  const int vec = vector_bytes(row_bytes, {hp, pp, out.data_ptr()});
  check_launch(random_ltd::launch_compose_rows(out.data_ptr(), hp, pp, inv.data_ptr<int32_t>(), s, b, row_bytes, vec,
                                               c10::cuda::getCurrentCUDAStream()),
               "compose");
  return out;
}

// keys: int32 [..., s] with values in [0, 2^31); returns int64 [..., r] sorted positions of the r smallest keys.
torch::Tensor select_sorted(const torch::Tensor& keys, int64_t r) {
  check_cuda_contiguous(keys, "keys");
  TORCH_CHECK(keys.scalar_type() == torch::kInt32 && keys.dim() >= 1, "random_ltd: keys must be int32 [..., s]");
  const int64_t s = keys.size(-1);
  TORCH_CHECK(r >= 0 && r <= s && s <= kMaxRows, "random_ltd: need 0 <= r <= s < 2^31");
  auto sizes = keys.sizes().vec();
  sizes.back() = r;
  const c10::cuda::CUDAGuard guard(keys.device());
  auto out = torch::empty(sizes, keys.options().dtype(torch::kInt64));
  const int64_t rows = s == 0 ? 0 : keys.numel() / s;
  TORCH_CHECK(rows <= kMaxRows, "random_ltd: more than 2^31 rows");
  check_launch(random_ltd::launch_select_sorted(out.data_ptr<int64_t>(), keys.data_ptr<int32_t>(), rows, s, r,
                                                c10::cuda::getCurrentCUDAStream()),
               "select_sorted");
  return out;
}

// idx: int64 [..., r] distinct values in [0, s) per row; returns them sorted ascending per row.
torch::Tensor sort_distinct(const torch::Tensor& idx, int64_t s) {
  check_cuda_contiguous(idx, "indices");
  TORCH_CHECK(idx.scalar_type() == torch::kInt64 && idx.dim() >= 1, "random_ltd: indices must be int64 [..., r]");
  const int64_t r = idx.size(-1);
  TORCH_CHECK(r <= s && s <= kMaxRows, "random_ltd: need r <= s < 2^31");
  const c10::cuda::CUDAGuard guard(idx.device());
  auto out = torch::empty_like(idx);
  const int64_t rows = r == 0 ? 0 : idx.numel() / r;
  TORCH_CHECK(rows <= kMaxRows, "random_ltd: more than 2^31 rows");
  torch::Tensor workspace;
  uint32_t* ws = nullptr;
  if (s > random_ltd::sort_shared_bitmap_limit() && rows > 0) {
    workspace = torch::empty({rows * ((s + 31) / 32)}, idx.options().dtype(torch::kInt32));
    ws = reinterpret_cast<uint32_t*>(workspace.data_ptr<int32_t>());
  }
  check_launch(random_ltd::launch_sort_distinct(out.data_ptr<int64_t>(), idx.data_ptr<int64_t>(), rows, s, r, ws,
                                                c10::cuda::getCurrentCUDAStream()),
               "sort_distinct");
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "random-LTD CUDA kernels (sequence-first [s, b, h] activations, int64 [b, r] token indices)";
  m.def("gather_tokens", &gather_tokens, "[s,b,h], [b,r] -> [r,b,h]");
  m.def("inverse_index", &inverse_index, "[b,r], s -> int32 [s,b] (kept slot or -1)");
  m.def("compose_tokens", &compose_tokens, "hidden [s,b,h] | None, part [r,b,h] | None, inv [s,b], h -> [s,b,h]");
  m.def("select_sorted", &select_sorted, "int32 keys [..., s], r -> int64 [..., r] sorted kept positions");
  m.def("sort_distinct", &sort_distinct, "int64 [..., r] distinct values < s -> sorted copy");
}
