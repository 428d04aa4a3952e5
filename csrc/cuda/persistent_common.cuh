// Device building blocks of the persistent LSTM kernels: asynchronous copies,
// the inter-block barrier, dtype conversions and the block-level tensor-core GEMM.
//
// The block GEMM computes P[KS][rows][N] (fp32 partial sums) = A[rows][K] x
// Ws^T, where A streams from global memory (the exchange buffer other blocks
// wrote in the previous step) through NS shared-memory stages of KC columns
// (NS - 1 chunks in flight while one is multiplied), and Ws[N][K] is the
// block's resident weight slice. Each warp owns
// up to kMaxItems output tiles (16 x 16) given as (k-split, m-tile, n-tile):
// when the block has fewer tiles than warps, KS warps share one tile, each
// taking every KS-th k-tile, and the pointwise phase sums the KS partials.
// Engines (the wmma shapes and how fp32 precision is kept):
//   Half<T>     : bf16 / fp16 operands, 1 mma per k-tile.
//   Bf16HiLo    : A = hi + lo (two bf16 arrays), W bf16: 2 mmas, fp32-grade A.
//   Tf32<split> : fp32 operands split as x = big + small (both tf32); 3 mmas
//                 (a_s*b_b + a_b*b_s + a_b*b_b), or 2 when W is exact in tf32.
// Legend: rows = batch rows of the chunk, N = output columns, K = reduction.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <type_traits>

#include "kernels.h"

#if defined(CHARRNN_EMULATE)
// CPU emulation of the copy and barrier primitives below (threads as OS
// threads, copies deferred to cp_async_wait): csrc/cuda/emu/, a logic check
// of the kernels without a GPU.
#include "emu/emulate.h"
#endif

// The persistent kernels need sm_80 (cp.async, bf16 and tf32 wmma). Device
// code for older GPUs (sm_75 in TORCH_CUDA_ARCH_LIST) keeps only the stepwise
// kernels; the binding never plans the persistent path there.
#if defined(CHARRNN_EMULATE) || !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define CHARRNN_PERSISTENT_ARCH 1
#else
#define CHARRNN_PERSISTENT_ARCH 0
#endif

namespace charrnn_fast::cuda::detail {

namespace wmma = nvcuda::wmma;

#if !defined(CHARRNN_EMULATE)
// ------------------------------------------------------------------ copies
__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(128) unsigned char smem[];
  return smem;
}

__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// 16-byte copy that bypasses L1 (.cg): the source was written by other SMs in
// this launch, and L1 is not coherent across SMs.
__device__ __forceinline__ void cp_async16_cg(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src)
               : "memory");
}

// 8-byte copy for read-only inputs of the launch (gx, gates, dy, c_all).
__device__ __forceinline__ void cp_async8(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(smem_addr(dst)), "l"(src)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
#endif  // !CHARRNN_EMULATE

// cp_async_wait<n> for a run-time n in [0, kMaxStages - 2] (block_gemm: NS - 2).
__device__ __forceinline__ void cp_async_wait_dyn(int n) {
  switch (n) {
    case 0: cp_async_wait<0>(); break;
    case 1: cp_async_wait<1>(); break;
    default: cp_async_wait<2>(); break;
  }
}

#if !defined(CHARRNN_EMULATE)

// ----------------------------------------------------------------- barrier
// A monotonically increasing counter, zeroed on the stream before the launch:
// after its phase-k arrival a block waits until the counter reaches
// (k + 1) * parties. No reset inside the launch, so no second barrier is
// needed to protect a reset. The kernels keep one counter per batch slice
// (kCounterStride apart, so that slices do not share an L2 sector): only the
// blocks that share batch rows exchange data, so only they need to meet.
// Ordering: bar.sync orders the block's writes before thread 0's arrival, a
// release reduction publishes them at gpu scope; the waiter polls relaxed and
// fences once (fence.acq_rel after a relaxed read is an acquire pattern of the
// PTX memory model), then bar.sync extends the acquire to the whole block. No
// __threadfence (fence.sc) on either side: the release and the acquire fence
// already order the exchange, and an ld.acquire per poll would invalidate L1
// on every iteration.
__device__ __forceinline__ void grid_arrive(unsigned* counter) {
  __syncthreads();
  if (threadIdx.x == 0) {
    asm volatile("red.release.gpu.global.add.u32 [%0], %1;\n" ::"l"(counter), "r"(1u)
                 : "memory");
  }
}

__device__ __forceinline__ void grid_wait(const unsigned* counter, unsigned target) {
  if (threadIdx.x == 0) {
    unsigned v;
    do {
      asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(counter) : "memory");
    } while (v < target);
    asm volatile("fence.acq_rel.gpu;\n" ::: "memory");
  }
  __syncthreads();
}
#endif  // !CHARRNN_EMULATE

// nrows x nseg segments of seg_bytes (a multiple of 8, 8-byte aligned) from
// src + r * src_row + s * src_seg to dst + r * dst_row + s * seg_bytes.
__device__ __forceinline__ void stage_rows(unsigned char* dst, int dst_row,
                                           const unsigned char* src, long long src_row,
                                           long long src_seg, int nrows, int nseg,
                                           int seg_bytes) {
  const int per_seg = seg_bytes / 8, per_row = nseg * per_seg;
  for (int i = threadIdx.x; i < nrows * per_row; i += kThreads) {
    const int r = i / per_row, rem = i - r * per_row;
    const int s = rem / per_seg, p = rem - s * per_seg;
    cp_async8(dst + r * dst_row + s * seg_bytes + p * 8, src + r * src_row + s * src_seg + p * 8);
  }
}

// ------------------------------------------------- wmma loads from shared memory
// wmma::load_matrix_sync takes a generic pointer. NVVM proves it shared for
// fp16 and emits wmma.load...shared (LDSM in SASS), but not for bf16 and tf32,
// where it becomes 8 generic LD.E per tile. These overloads say .shared in the
// PTX for the fragments the engines load; other fragments use wmma's own load.
template <class Frag, class E>
__device__ __forceinline__ void load_smem(Frag& f, const E* p, unsigned ldm) {
  wmma::load_matrix_sync(f, p, ldm);
}

#if !defined(CHARRNN_EMULATE) && CHARRNN_PERSISTENT_ARCH
#define CHARRNN_WMMA_LD_SHARED(FRAG, ELEM, PTX)                                             \
  __device__ __forceinline__ void load_smem(FRAG& f, const ELEM* p, unsigned ldm) {        \
    static_assert(sizeof(f.x) == 16, "four 32-bit registers per fragment");                \
    unsigned* r = reinterpret_cast<unsigned*>(f.x);                                        \
    asm volatile(PTX " {%0, %1, %2, %3}, [%4], %5;\n"                                      \
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])                          \
                 : "r"(smem_addr(p)), "r"(ldm)                                             \
                 : "memory");                                                              \
  }
using FragABf16 = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragBBf16 = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major>;
using FragATf32 = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
using FragBTf32 = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major>;
CHARRNN_WMMA_LD_SHARED(FragABf16, __nv_bfloat16, "wmma.load.a.sync.aligned.row.m16n16k16.shared.bf16")
CHARRNN_WMMA_LD_SHARED(FragBBf16, __nv_bfloat16, "wmma.load.b.sync.aligned.col.m16n16k16.shared.bf16")
CHARRNN_WMMA_LD_SHARED(FragATf32, float, "wmma.load.a.sync.aligned.row.m16n16k8.shared.tf32")
CHARRNN_WMMA_LD_SHARED(FragBTf32, float, "wmma.load.b.sync.aligned.col.m16n16k8.shared.tf32")
#undef CHARRNN_WMMA_LD_SHARED
#endif

// ------------------------------------------------------------- conversions
template <typename T>
__host__ __device__ constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::kFloat32;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return DType::kBFloat16;
  else return DType::kFloat16;
}

template <typename T>
__device__ __forceinline__ float to_f(T x);
template <>
__device__ __forceinline__ float to_f<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <>
__device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }

// Round to nearest even, as torch's .to(dtype) does.
template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }

// Accurate expf/tanhf (no fast-math): the tolerance is set by rounding to the
// dtype, and the cost of these is hidden behind the barrier.
__device__ __forceinline__ float sigmoidf(float x) { return 1.f / (1.f + expf(-x)); }

// ----------------------------------------------------------------- engines
template <typename T>
struct Half {
  using AElem = T;
  using WElem = T;
  static constexpr int KT = 16;
  using Acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
  __device__ static void mma(Acc& acc, const AElem* a, int lda, int /*a_split*/,
                             const WElem* w, int ldw) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
    load_smem(fa, a, lda);
    load_smem(fb, w, ldw);
    wmma::mma_sync(acc, fa, fb, acc);
  }
};

struct Bf16HiLo {
  using AElem = __nv_bfloat16;
  using WElem = __nv_bfloat16;
  static constexpr int KT = 16;
  using Acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
  // a: hi tile; a + a_split: the lo tile of the same rows and columns.
  __device__ static void mma(Acc& acc, const AElem* a, int lda, int a_split, const WElem* w,
                             int ldw) {
#if CHARRNN_PERSISTENT_ARCH  // bf16 fragments exist from sm_80
    wmma::fragment<wmma::matrix_a, 16, 16, 16, AElem, wmma::row_major> hi, lo;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, WElem, wmma::col_major> fb;
    load_smem(lo, a + a_split, lda);
    load_smem(hi, a, lda);
    load_smem(fb, w, ldw);
    wmma::mma_sync(acc, lo, fb, acc);  // small term first
    wmma::mma_sync(acc, hi, fb, acc);
#endif
  }
};

template <bool kSplitW>
struct Tf32 {
  using AElem = float;
  using WElem = float;
  static constexpr int KT = 8;
  using Acc = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;
  template <class Frag>
  __device__ static void split(Frag& big, Frag& small) {
#pragma unroll
    for (int i = 0; i < big.num_elements; ++i) {
      const float x = big.x[i];
      const float b = wmma::__float_to_tf32(x);
      big.x[i] = b;
      small.x[i] = wmma::__float_to_tf32(x - b);
    }
  }
  __device__ static void mma(Acc& acc, const AElem* a, int lda, int /*a_split*/,
                             const WElem* w, int ldw) {
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> ab, as;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> bb, bs;
    load_smem(ab, a, lda);
    load_smem(bb, w, ldw);
    split(ab, as);
    if constexpr (kSplitW) {
      split(bb, bs);
      wmma::mma_sync(acc, ab, bs, acc);
    } else {
      // W holds fp16 values: exact in tf32 (10 mantissa bits, fp32 exponent).
#pragma unroll
      for (int i = 0; i < bb.num_elements; ++i) bb.x[i] = wmma::__float_to_tf32(bb.x[i]);
    }
    wmma::mma_sync(acc, as, bb, acc);
    wmma::mma_sync(acc, ab, bb, acc);
  }
};

// --------------------------------------------------------------- block GEMM
// P[ks][m][n] (fp32, leading dimension p_ld, KS slabs of MC rows) =
//   sum over this warp's k-tiles of A[m][k] Ws[n][k], for m < 16 * mtiles, n < 16 * ntiles.
// a_glob: row 0 of the chunk in global memory (leading dimension a_gld elements;
// the lo array of Bf16HiLo is a_gsplit elements further). Rows up to
// 16 * mtiles must exist there (the exchange buffers are padded to Bp rows).
// As: the NS stages of the A chunk in shared memory, each E::n_a x MC x a_ld.
// Ends with a __syncthreads: P is readable by every thread on return.
// Pipeline: every iteration commits exactly one cp.async group (empty past the
// last chunk), so that waiting until at most NS - 2 groups are pending always
// means "chunk kc has landed"; the __syncthreads after that wait also tells
// every thread that the stage read in the previous iteration is free, and the
// copy of chunk kc + NS - 1 goes there.
template <class E>
__device__ void block_gemm(float* P, int p_ld, int MC, const typename E::AElem* a_glob,
                           long long a_gld, long long a_gsplit, int mtiles, int ntiles, int KS,
                           int K, int KC, int NS, typename E::AElem* As, int a_ld,
                           const typename E::WElem* Ws, int w_ld, int n_a) {
  using AElem = typename E::AElem;
  const int warp = threadIdx.x / 32;
  const int nitems = mtiles * ntiles * KS;
  const int rows = 16 * mtiles;
  constexpr int vec = 16 / sizeof(AElem);  // elements per 16-byte copy
  const int pieces = KC / vec;
  const int stage = n_a * MC * a_ld;
  const int kt_per_chunk = KC / E::KT;

  auto load_chunk = [&](int kc, int buf) {
    AElem* dst = As + buf * stage;
    const AElem* src = a_glob + (long long)kc * KC;
    const int total = n_a * rows * pieces;
    for (int i = threadIdx.x; i < total; i += kThreads) {
      const int p = i % pieces, r = (i / pieces) % rows, s = i / (pieces * rows);
      cp_async16_cg(dst + (s * MC + r) * a_ld + p * vec, src + s * a_gsplit + r * a_gld + p * vec);
    }
    cp_async_commit();
  };

  // Two accumulators per item, for alternate k-steps: a warp with one item
  // would otherwise chain every mma of the step on the previous one's result
  // (up to 96 for 3xTF32 at H = 512); they are summed once at the end.
  typename E::Acc acc[kMaxItems][2];
  int item_m[kMaxItems], item_n[kMaxItems], item_k[kMaxItems];
#pragma unroll
  for (int i = 0; i < kMaxItems; ++i) {
    wmma::fill_fragment(acc[i][0], 0.f);
    wmma::fill_fragment(acc[i][1], 0.f);
    const int it = warp + i * kWarps;
    item_n[i] = it % ntiles;
    item_m[i] = (it / ntiles) % mtiles;
    item_k[i] = it / (ntiles * mtiles);
  }

  const int nkc = K / KC;
  for (int c = 0; c < NS - 1; ++c) {
    if (c < nkc) load_chunk(c, c);
    else cp_async_commit();
  }
  for (int kc = 0; kc < nkc; ++kc) {
    cp_async_wait_dyn(NS - 2);  // chunk kc has landed (this thread's copies)
    __syncthreads();            // everyone's copies; stage (kc - 1) % NS is free
    if (kc + NS - 1 < nkc) load_chunk(kc + NS - 1, (kc + NS - 1) % NS);
    else cp_async_commit();
    const AElem* a_buf = As + (kc % NS) * stage;
    // k-tile loop outside (two k-steps per trip, one per accumulator), items
    // inside: all these accumulator chains are independent, which gives the
    // tensor pipe several mmas in flight.
    for (int kk = 0; kk < kt_per_chunk; kk += 2 * KS) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int i = 0; i < kMaxItems; ++i) {
          const int kt = kk + h * KS + item_k[i];
          if (warp + i * kWarps < nitems && kt < kt_per_chunk) {
            E::mma(acc[i][h], a_buf + item_m[i] * 16 * a_ld + kt * E::KT, a_ld, MC * a_ld,
                   Ws + item_n[i] * 16 * w_ld + kc * KC + kt * E::KT, w_ld);
          }
        }
      }
    }
  }
  cp_async_wait<0>();  // only empty groups remain: none left pending for the caller
#pragma unroll
  for (int i = 0; i < kMaxItems; ++i) {
    if (warp + i * kWarps < nitems) {
#pragma unroll
      for (int e = 0; e < acc[i][0].num_elements; ++e) acc[i][0].x[e] += acc[i][1].x[e];
      wmma::store_matrix_sync(P + (item_k[i] * MC + item_m[i] * 16) * p_ld + item_n[i] * 16,
                              acc[i][0], p_ld, wmma::mem_row_major);
    }
  }
  __syncthreads();
}

// Sum of the KS partial slabs of P at row r, column n.
__device__ __forceinline__ float sum_partials(const float* P, int p_ld, int MC, int KS, int r,
                                              int n) {
  float s = 0.f;
  for (int k = 0; k < KS; ++k) s += P[(k * MC + r) * p_ld + n];
  return s;
}

}  // namespace charrnn_fast::cuda::detail
