// The GEMMs of the CPU backend's input projection and weight gradients on the
// register-blocked fp32 kernels of fused.h (other dtypes and CPUs: ATen).
//
// Why not oneDNN's linear: it wants its weights reordered on every call (they
// change every training step), which cost 100-260 us per call at char-rnn
// sizes, ~6% of a training step; our column panels are a plain copy of W (or
// of its transpose, for the input gradient) and the kernels match oneDNN's
// GEMM speed on these shapes, while MKL's sgemm behind at::mm runs at about
// half the FMA peak on AMD EPYC (docs/performance.md, "oneDNN for the GEMMs
// inside the CPU loop, our kernels for the projection").
// Legend: M rows, K inner dimension, N output columns.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "fused.h"

namespace charrnn_fast {
namespace {

// a[K, M]^T b[K, N] -> [M, N]: the weight gradient of a linear layer.
at::Tensor mm_tn_cpu(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(0) == b.size(0),
              "charrnn_fast: mm_tn wants a [K, M] and b [K, N], got ", a.sizes(), " and ",
              b.sizes());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "charrnn_fast: mm_tn: a is ", a.scalar_type(),
              " but b is ", b.scalar_type());
  const cpu::FusedKernels* k = cpu::fused_kernels();
  if (k == nullptr || a.scalar_type() != at::kFloat || a.stride(1) != 1 || b.stride(1) != 1) {
    return at::mm(a.t(), b);
  }
  return cpu::mm_tn(*k, a, b);
}

// a[M, K] w[N, K]^T (+ bias[N]) -> [M, N], as F.linear. w may be any strided
// view (the transpose of a weight, for the input gradient): packing reads it
// through its strides, so no transposed copy is made.
at::Tensor mm_nt_cpu(const at::Tensor& a, const at::Tensor& w,
                     const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(a.dim() == 2 && w.dim() == 2 && a.size(1) == w.size(1),
              "charrnn_fast: mm_nt wants a [M, K] and w [N, K], got ", a.sizes(), " and ",
              w.sizes());
  TORCH_CHECK(a.scalar_type() == w.scalar_type(), "charrnn_fast: mm_nt: a is ", a.scalar_type(),
              " but w is ", w.scalar_type());
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == w.size(0) &&
                    bias->scalar_type() == a.scalar_type(),
                "charrnn_fast: mm_nt: bias must be [", w.size(0), "] of ", a.scalar_type(),
                ", got ", bias->scalar_type(), " ", bias->sizes());
  }
  const cpu::FusedKernels* k = cpu::fused_kernels();
  if (k == nullptr || a.scalar_type() != at::kFloat) {
    return has_bias ? at::addmm(*bias, a, w.t()) : at::mm(a, w.t());
  }
  const int64_t M = a.size(0), K = a.size(1), N = w.size(0);
  at::Tensor out = at::empty({M, N}, a.options());
  if (M == 0 || N == 0) return out;
  const at::Tensor ac = a.contiguous();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  const at::Tensor wp = cpu::pack_columns(*k, w, N, K, w.stride(0), w.stride(1));
  // Rows in blocks whose slice of a (~32 KB) stays in L1/L2 while the column
  // panels pass over it; threads take whole blocks.
  const int64_t rows = std::clamp<int64_t>((int64_t{8} << 10) / std::max<int64_t>(K, 1), 6, 96);
  const int64_t blocks = (M + rows - 1) / rows;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t r0 = blk * rows, nr = std::min(rows, M - r0);
      k->gemm({nr, N, K, ac.const_data_ptr<float>() + r0 * K, K, wp.const_data_ptr<float>(),
               has_bias ? b.const_data_ptr<float>() : nullptr, out.data_ptr<float>() + r0 * N,
               N});
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(charrnn_fast, CPU, m) {
  m.impl("mm_tn", &mm_tn_cpu);
  m.impl("mm_nt", &mm_nt_cpu);
}

}  // namespace charrnn_fast
