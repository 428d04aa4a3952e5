// ISA dispatch and weight packing of the fused fp32 kernels (fused.h).
#include "fused.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

namespace charrnn_fast::cpu {

#if defined(__x86_64__) && defined(__GNUC__)
namespace avx512 {
extern const FusedKernels kKernels;
}
namespace avx2 {
extern const FusedKernels kKernels;
}

const FusedKernels* fused_kernels() {
  static const FusedKernels* chosen = []() -> const FusedKernels* {
    __builtin_cpu_init();
    // CHARRNN_FAST_CPU_ISA=avx2 or =none takes a narrower path than the CPU
    // allows, read once at load: how the tests run the AVX2 kernels and the
    // general path on an AVX-512 machine.
    // (charrnn_fast/_ops.py refuses other values before loading us.)
    const char* env = std::getenv("CHARRNN_FAST_CPU_ISA");
    const std::string want = env == nullptr ? "auto" : env;
    if (want == "none") return nullptr;
    if (want != "avx2" && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw")) {
      return &avx512::kKernels;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &avx2::kKernels;
    return nullptr;
  }();
  return chosen;
}
#else
const FusedKernels* fused_kernels() { return nullptr; }
#endif

// Blocks per thread when packing: at least ~4 MB of weights each. Smaller
// weights are packed by the calling thread alone: waking another thread costs
// more than the copy, and on a busy machine it can cost a scheduler time slice.
static int64_t pack_grain(int64_t floats_per_block) {
  return std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, floats_per_block));
}

// dst[kk * ld_dst + l] = row_l[kk] for l < rows, kk < K (rows <= VW rows of
// a source read along kk; lanes l >= rows are zero): a [rows, K] -> [K, VW]
// transpose in blocks of 16 k, so both sides stay within a few cache lines.
// Element by element along the gather (one cache line per element) the
// transpose would run at a few GB/s, milliseconds per call for a 3x512
// model's 20 MiB of weights when decoding.
template <typename Row>
static void transpose_rows(const Row& row_l, int64_t rows, int64_t VW, int64_t K, float* dst,
                           int64_t ld_dst) {
  for (int64_t k0 = 0; k0 < K; k0 += 16) {
    const int64_t k1 = std::min(K, k0 + 16);
    for (int64_t l = 0; l < VW; ++l) {
      if (l >= rows) {
        for (int64_t kk = k0; kk < k1; ++kk) dst[kk * ld_dst + l] = 0.0f;
        continue;
      }
      const float* src = row_l(l);
      for (int64_t kk = k0; kk < k1; ++kk) dst[kk * ld_dst + l] = src[kk];
    }
  }
}

at::Tensor pack_gates(const FusedKernels& k, const at::Tensor& w_a, const at::Tensor& w_b) {
  const int64_t VW = k.vw, H = w_a.size(0) / 4, Ka = w_a.size(1);
  const int64_t Kb = w_b.defined() ? w_b.size(1) : 0, K = Ka + Kb;
  const int64_t nblocks = (H + VW - 1) / VW;
  // at::empty, and every lane written below: a parallel zero-fill would wake threads.
  at::Tensor out = at::empty({nblocks * K * 4 * VW}, w_a.options());
  const float* pa = w_a.const_data_ptr<float>();
  const float* pb = Kb > 0 ? w_b.const_data_ptr<float>() : nullptr;
  float* po = out.data_ptr<float>();
  at::parallel_for(0, nblocks, pack_grain(K * 4 * VW), [&](int64_t b0, int64_t b1) {
    for (int64_t jb = b0; jb < b1; ++jb) {
      const int64_t rows = std::min(VW, H - jb * VW);
      for (int64_t q = 0; q < 4; ++q) {
        // Gate q of units jb*VW + l: rows q*H + jb*VW + l of [w_a | w_b].
        const int64_t row0 = q * H + jb * VW;
        float* dst = po + jb * K * 4 * VW + q * VW;
        transpose_rows([&](int64_t l) { return pa + (row0 + l) * Ka; }, rows, VW, Ka, dst,
                       4 * VW);
        if (Kb > 0) {
          transpose_rows([&](int64_t l) { return pb + (row0 + l) * Kb; }, rows, VW, Kb,
                         dst + Ka * 4 * VW, 4 * VW);
        }
      }
    }
  });
  return out;
}

at::Tensor pack_columns(const FusedKernels& k, const at::Tensor& src, int64_t N, int64_t K,
                        int64_t stride_n, int64_t stride_k) {
  const int64_t VW = k.vw, nblocks = (N + VW - 1) / VW;
  at::Tensor out = at::empty({nblocks * K * VW}, src.options());  // every lane written
  const float* ps = src.const_data_ptr<float>();
  float* po = out.data_ptr<float>();
  at::parallel_for(0, nblocks, pack_grain(K * VW), [&](int64_t b0, int64_t b1) {
    for (int64_t jb = b0; jb < b1; ++jb) {
      const int64_t rows = std::min(VW, N - jb * VW);
      float* dst = po + jb * K * VW;
      if (stride_k == 1) {  // rows of the matrix are contiguous: transpose them in blocks
        transpose_rows([&](int64_t l) { return ps + (jb * VW + l) * stride_n; }, rows, VW, K,
                       dst, VW);
        continue;
      }
      if (stride_n == 1 && rows == VW) {  // a full block of contiguous columns
        // A plain copy of VW floats per k, which the compiler vectorises; the
        // loop below, with its test per element, took 1.4 ms more of W_hh^T's
        // 4 MB at H = 512 (a quarter of lstm_bwd at T = 1).
        for (int64_t kk = 0; kk < K; ++kk) {
          const float* s = ps + jb * VW + kk * stride_k;
          for (int64_t l = 0; l < VW; ++l) dst[kk * VW + l] = s[l];
        }
        continue;
      }
      for (int64_t kk = 0; kk < K; ++kk) {  // general strides: element by element
        for (int64_t l = 0; l < VW; ++l) {
          dst[kk * VW + l] = l < rows ? ps[(jb * VW + l) * stride_n + kk * stride_k] : 0.0f;
        }
      }
    }
  });
  return out;
}

at::Tensor mm_tn(const FusedKernels& k, const at::Tensor& a, const at::Tensor& b) {
  // With 8-wide vectors (AVX2) MKL's sgemm behind at::mm is the faster kernel
  // at every measured dW shape; with AVX-512 gemm_tn is, since MKL runs its
  // AVX2 code on AMD CPUs (docs/performance.md, "AVX2 weight gradients go to
  // MKL's sgemm").
  if (k.vw == 8 && at::globalContext().hasMKL()) return at::mm(a.t(), b);
  const int64_t K = a.size(0), M = a.size(1), N = b.size(1);
  if (K == 0) return at::zeros({M, N}, a.options());  // gemm_tn would write nothing
  at::Tensor out = at::empty({M, N}, a.options());
  const GemmTnArgs g{N,   K, a.const_data_ptr<float>(), a.stride(0), b.const_data_ptr<float>(),
                     b.stride(0), out.data_ptr<float>(), N};
  const int64_t tiles = (M + k.tn_rows - 1) / k.tn_rows;
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    const int64_t m0 = t0 * k.tn_rows, m1 = t1 * k.tn_rows < M ? t1 * k.tn_rows : M;
    std::vector<float> scratch(k.tn_chunk * k.tn_cols);
    k.gemm_tn(g, m0, m1, scratch.data());
  });
  return out;
}

}  // namespace charrnn_fast::cpu
