// The fused pointwise parts of the CPU LSTM step, written so the compiler
// vectorises them.
//
// Why not std::exp / std::tanh: they are opaque library calls that stop the
// auto-vectoriser, and they cost ~10-20 ns each, which made the pointwise pass
// (5 transcendentals per hidden unit) slower than the GEMM. exp_fast below is
// branch-free (Cody-Waite range reduction + degree-6 polynomial, ~2 ulp) and
// vectorises; the row kernels are compiled for AVX2+FMA and for the x86-64
// baseline, picked at load time (target_clones), so no ISA flag is needed.
// NaN propagates (comparisons with NaN are false, so clamping keeps it).
// Legend: H hidden units; one call handles units [j0, j1) of one batch row.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace charrnn_fast::cpu {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CHARRNN_FAST_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CHARRNN_FAST_CLONES
#endif

#define CHARRNN_FAST_INLINE __attribute__((always_inline)) inline

CHARRNN_FAST_INLINE float exp_fast(float x) {
  x = x > 88.0f ? 88.0f : x;
  x = x < -87.0f ? -87.0f : x;
  // Round x / ln2 to an integer n with the 1.5 * 2^23 trick (vectorises, unlike lround).
  const float shifter = 12582912.0f;
  const float t = x * 1.44269504088896341f + shifter;
  const float n = t - shifter;
  const int32_t ni = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(shifter);
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;  // |r| <= ln2/2
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * std::bit_cast<float>((ni + 127) << 23);
}

CHARRNN_FAST_INLINE double exp_fast(double x) { return std::exp(x); }

// Below -88, exp_fast(-x) is clamped, so the quotient would be 6e-39 instead
// of 0: saturate to exactly 0, as ATen does, so that gradients through a
// saturated gate are exactly 0 (0 * inf is NaN in nn.LSTM and here alike).
template <typename T>
CHARRNN_FAST_INLINE T sigmoid(T x) {
  return x < T(-88) ? T(0) : T(1) / (T(1) + exp_fast(-x));
}

// tanh through sigmoid: absolute error ~1e-7 in fp32, fine for gate values
// and cell outputs whose scale is 1.
template <typename T>
CHARRNN_FAST_INLINE T tanh_fast(T x) {
  return T(2) * sigmoid(T(2) * x) - T(1);
}

// Forward, one row: pre[4H] holds gx + h W^T for this row (gates i,f,g,o).
// Writes c_next[j], h[j] and, when act != nullptr, the activated gates.
template <typename T>
CHARRNN_FAST_CLONES void fwd_row(const T* __restrict pre, const T* __restrict c_prev,
                                 T* __restrict c_next, T* __restrict h, T* __restrict act,
                                 int64_t H, int64_t j0, int64_t j1) {
  // Two copies of the loop on purpose: with the test on act inside one loop,
  // GCC 12 reports "control flow in loop" and vectorises neither.
  if (act == nullptr) {
    for (int64_t j = j0; j < j1; ++j) {
      const T i = sigmoid(pre[j]), f = sigmoid(pre[j + H]);
      const T g = tanh_fast(pre[j + 2 * H]), o = sigmoid(pre[j + 3 * H]);
      const T c = f * c_prev[j] + i * g;
      c_next[j] = c;
      h[j] = o * tanh_fast(c);
    }
    return;
  }
  for (int64_t j = j0; j < j1; ++j) {
    const T i = sigmoid(pre[j]), f = sigmoid(pre[j + H]);
    const T g = tanh_fast(pre[j + 2 * H]), o = sigmoid(pre[j + 3 * H]);
    const T c = f * c_prev[j] + i * g;
    c_next[j] = c;
    h[j] = o * tanh_fast(c);
    act[j] = i;
    act[j + H] = f;
    act[j + 2 * H] = g;
    act[j + 3 * H] = o;
  }
}

// Backward, one row: from the activated gates act[4H], the cell states and
// the incoming dy, dh (from step t+1) and dc, writes the pre-activation
// gradients dg[4H] and replaces dc with dc_{t-1}.
template <typename T>
CHARRNN_FAST_CLONES void bwd_row(const T* __restrict act, const T* __restrict c_prev,
                                 const T* __restrict c_cur, const T* __restrict dy,
                                 const T* __restrict dh, T* __restrict dc, T* __restrict dg,
                                 int64_t H, int64_t j0, int64_t j1) {
  for (int64_t j = j0; j < j1; ++j) {
    const T i = act[j], f = act[j + H], g = act[j + 2 * H], o = act[j + 3 * H];
    const T tc = tanh_fast(c_cur[j]);
    const T dh_t = dy[j] + dh[j];
    const T dc_t = dc[j] + dh_t * o * (T(1) - tc * tc);
    dg[j] = dc_t * g * i * (T(1) - i);
    dg[j + H] = dc_t * c_prev[j] * f * (T(1) - f);
    dg[j + 2 * H] = dc_t * i * (T(1) - g * g);
    dg[j + 3 * H] = dh_t * tc * o * (T(1) - o);
    dc[j] = dc_t * f;
  }
}

}  // namespace charrnn_fast::cpu
