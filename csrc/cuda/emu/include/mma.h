// Mock of <mma.h> (nvcuda::wmma) for the CPU emulation: a fragment holds the
// whole tile, row-major, in every thread; loads and stores check wmma's
// pointer alignment (32 B) and leading-dimension (16 B) rules, and tf32 mmas
// check that their operands were converted with __float_to_tf32. A store is
// done by lane 0 of the warp alone: on the GPU each lane writes its own part of
// the tile, so 32 threads writing the whole tile would be a race (ThreadSanitizer
// reports it) that the hardware does not have.
#pragma once

#include "cuda_runtime.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cassert>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
}  // namespace precision

template <class T>
struct storage {
  using type = T;
};
template <>
struct storage<precision::tf32> {
  using type = float;
};

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int R = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int C = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = R * C;
  typename storage<T>::type x[R * C];
};

inline void check_access(const void* p, unsigned ldm, size_t esize) {
  assert(reinterpret_cast<uintptr_t>(p) % 32 == 0 && "wmma pointer not 256-bit aligned");
  assert((ldm * esize) % 16 == 0 && "wmma ldm not a multiple of 16 bytes");
  (void)p, (void)ldm, (void)esize;
}

inline float as_float(float v) { return v; }
inline float as_float(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float as_float(__half v) { return __half2float(v); }

inline float __float_to_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;  // nearest, ties away
  std::memcpy(&x, &u, 4);
  return x;
}

template <class Use, int M, int N, int K, class T, class Layout, class E>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const E* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, Layout>;
  check_access(p, ldm, sizeof(E));
  for (int r = 0; r < F::R; ++r)
    for (int c = 0; c < F::C; ++c)
      f.x[r * F::C + c] = std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r];
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                       layout_t layout) {
  check_access(p, ldm, 4);
  assert(layout == mem_row_major);
  (void)layout;
  if (threadIdx.x % 32 != 0) return;
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) p[r * ldm + c] = f.x[r * N + c];
}

template <class Use, int M, int N, int K, class T, class Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float v) {
  for (auto& e : f.x) e = v;
}

template <int M, int N, int K, class T, class LA, class LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
  if constexpr (std::is_same_v<T, precision::tf32>) {
    for (float v : a.x) assert(__float_to_tf32(v) == v && "tf32 operand not converted");
    for (float v : b.x) assert(__float_to_tf32(v) == v && "tf32 operand not converted");
  }
  float out[M * N];
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      float s = c.x[m * N + n];
      for (int k = 0; k < K; ++k) s += as_float(a.x[m * K + k]) * as_float(b.x[k * N + n]);
      out[m * N + n] = s;
    }
  std::memcpy(d.x, out, sizeof out);
}

}  // namespace nvcuda::wmma
