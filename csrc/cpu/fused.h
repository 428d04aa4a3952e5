// Register-blocked fp32 kernels for the CPU recurrence and the sampler
// (fused_impl.h, compiled for AVX-512 and for AVX2+FMA), and the packing of
// weights into their layouts. `fused_kernels()` is null where neither ISA is
// available (or the compiler is not GCC/Clang on x86-64): callers then use
// the general path (gemm.h + pointwise.h).
// Legend: H hidden units, K the inner dimension, VW floats per vector.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace charrnn_fast::cpu {

// One LSTM step for `rows` rows, all H units:
//   pre[r] = add[r] + a[r, 0:K] . W^T      (W [4H, K] in gate panels `wp`)
//   c_next[r] = f * c_prev[r] + i * g,  h[r] = o * tanh(c_next[r])
//   act[r] = (i, f, g, o) when act != nullptr.
// Rows are addressed with their own strides (ld*, in floats); ldadd may be 0
// (one bias row for all rows).
struct LstmStepArgs {
  int64_t rows, H, K;
  const float* a;
  int64_t lda;
  const float* wp;
  const float* add;
  int64_t ldadd;
  const float* c_prev;
  float* c_next;
  int64_t ldc;
  float* h;
  int64_t ldh;
  float* act;
  int64_t ldact;
  // Unit blocks (of VW units) [jb0, jb1) only, -1 = all: threads that share
  // rows split the units instead.
  int64_t jb0 = 0, jb1 = -1;
};

// out[r, 0:N] = a[r, 0:K] . W^T (+ bias[0:N]); W [N, K] in column panels `wp`.
struct GemmArgs {
  int64_t rows, N, K;
  const float* a;
  int64_t lda;
  const float* wp;
  const float* bias;  // [N] or nullptr
  float* out;
  int64_t ldo;
  int64_t jb0 = 0, jb1 = -1;  // column blocks (of VW columns) [jb0, jb1) only, -1 = all
};

// out[m, 0:N] (+)= sum_k a[k, m] b[k, 0:N] for m in [m0, m1): A^T B with A
// [K, M] and B [K, N] read in place (no packing), as for weight gradients
// dW = dgates^T x.
struct GemmTnArgs {
  int64_t N, K;
  const float* a;
  int64_t lda;
  const float* b;
  int64_t ldb;
  float* out;
  int64_t ldo;
};

struct FusedKernels {
  int vw;       // floats per vector: the panel width
  int tn_rows;  // gemm_tn's row tile: split its rows in multiples of this
  void (*lstm_step)(const LstmStepArgs&);
  void (*gemm)(const GemmArgs&);
  // scratch: tn_chunk * tn_cols floats (a panel of B)
  void (*gemm_tn)(const GemmTnArgs&, int64_t m0, int64_t m1, float* scratch);
  int64_t tn_chunk, tn_cols;
};

// a[K, M]^T b[K, N] -> [M, N] (fp32, contiguous rows) with gemm_tn, threaded
// over output rows (AVX2 with MKL: at::mm, the faster there).
at::Tensor mm_tn(const FusedKernels& k, const at::Tensor& a, const at::Tensor& b);

// The kernels for this CPU (AVX-512, else AVX2+FMA), or nullptr.
const FusedKernels* fused_kernels();

// Gate panels of W = [w_a | w_b] (columns concatenated): w_a [4H, Ka], w_b
// [4H, Kb] (Kb may be 0, w_b undefined), fp32 contiguous. -> packed, 1-D fp32.
at::Tensor pack_gates(const FusedKernels& k, const at::Tensor& w_a, const at::Tensor& w_b);

// Column panels of the [N, K] matrix whose (n, k) element is
// src[n * stride_n + k * stride_k] (src fp32). -> packed, 1-D fp32.
at::Tensor pack_columns(const FusedKernels& k, const at::Tensor& src, int64_t N, int64_t K,
                        int64_t stride_n, int64_t stride_k);

}  // namespace charrnn_fast::cpu
