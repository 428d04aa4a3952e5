// Persistent LSTM backward: one cooperative launch runs the reverse time loop.
//
// Algorithm. Block (us, bs) owns hidden units [u0, u0 + U) and batch rows
// [b0, b0 + BS). Its slice of W_hh^T (the U columns of its units over all 4H
// gate rows, stored [U][4H]) is copied into shared memory once. Step s = 0..T
// handles t = T - 1 - s:
//   1. (s > 0) wait at the barrier for dgates_{t+1} of every block of the
//      batch slice, and compute dh_rec = dgates_{t+1} W_hh[:, units] on tensor
//      cores (block_gemm);
//      at s = 0, dh_rec = dhT;
//   2. (s < T) pointwise in fp32: dh = dy[t] + dh_rec, dc = dc + dh o (1 - tanh^2 c),
//      the four pre-activation gradients, dc <- dc f (dc kept in shared memory);
//      write dgx[t] and the exchange buffer, then arrive at the barrier and
//      prefetch the next step's gates, dy and c;
//   3. (s = T) dh0 = dh_rec; dc0 was written at t = 0.
// dW_hh is one GEMM over all steps, done by the binding after this kernel.
// Numerics: dgates is fp32; it is handed to the next step's mma without losing
// that precision: bf16 as hi + lo (two bf16 mmas, W exact in bf16), fp16 as
// 2xTF32 (W fp16 is exact in tf32; fp16 itself would underflow small
// gradients), fp32 as 3xTF32.
// Legend: T steps, B batch, H hidden units, G = 4H (the K of the GEMM), U units
// per block (the N of the GEMM, a multiple of 16).
#include "persistent_common.cuh"
#include "persistent_launch.cuh"

namespace charrnn_fast::cuda {
namespace {

using namespace detail;

template <typename T, class E>
__global__ void __launch_bounds__(kThreads, 1) lstm_bwd_persistent(BwdArgs a, Geom g) {
#if CHARRNN_PERSISTENT_ARCH
  unsigned char* smem = dynamic_smem();
  using AElem = typename E::AElem;
  using WElem = typename E::WElem;
  constexpr bool kHiLo = std::is_same_v<E, Bf16HiLo>;
  const Layout L = make_layout(true, dtype_of<T>(), g);
  const int T_ = g.T, B = g.B, H = g.H, U = g.U, G = 4 * H;
  const long long Bp = (B + 15) / 16 * 16;
  WElem* Ws = reinterpret_cast<WElem*>(smem + L.w);  // [U][w_ld]
  AElem* As = reinterpret_cast<AElem*>(smem + L.a);  // [2][n_a][MC][a_ld]
  float* P = reinterpret_cast<float*>(smem + L.p);   // [KS][MC][p_ld]
  unsigned char* aux = smem + L.aux;
  T* gs = reinterpret_cast<T*>(aux);                                      // [MC][4U]
  T* dys = reinterpret_cast<T*>(aux + g.MC * 4 * U * sizeof(T));          // [MC][U]
  float* cns = reinterpret_cast<float*>(aux + g.MC * 5 * U * sizeof(T));  // [MC][U] c_t
  float* cps = cns + g.MC * U;                                            // [MC][U] c_{t-1}
  float* dcst = reinterpret_cast<float*>(smem + L.state);                 // [BS][U]

  const int u0 = (blockIdx.x % g.n_us) * U;
  const int b0 = (blockIdx.x / g.n_us) * g.BS;
  unsigned* counter = a.counter + (blockIdx.x / g.n_us) * kCounterStride;  // this slice's
  const int rows_blk = min(g.BS, B - b0);
  const T* dy = static_cast<const T*>(a.dy);
  const T* dhT = static_cast<const T*>(a.dhT);
  const T* dcT = static_cast<const T*>(a.dcT);
  const T* w = static_cast<const T*>(a.w_hh);
  const T* gates = static_cast<const T*>(a.gates);
  T* dgx = static_cast<T*>(a.dgx);
  T* dh0 = static_cast<T*>(a.dh0);
  T* dc0 = static_cast<T*>(a.dc0);
  AElem* xbuf = static_cast<AElem*>(a.xbuf);
  const long long x_parity = (kHiLo ? 2 : 1) * Bp * G;  // elements per step parity
  const long long x_split = kHiLo ? Bp * G : 0;         // hi -> lo

  // Resident W^T slice: Ws[n][k] = W_hh[k][u0 + n]. Each thread reads 16 bytes
  // (vec consecutive n of one row k; the neighbouring 16 bytes, read on the
  // next pass, come from L1) and scatters them down column k. A warp takes 32
  // consecutive k, so each of its vec stores covers 32 consecutive elements of
  // one Ws row: no bank conflicts (the old element-wise loop had 4-way ones).
  {
    constexpr int vec = 16 / sizeof(T);
    for (int i = threadIdx.x; i < G * (U / vec); i += kThreads) {
      const int k = i % G, v = i / G;
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(w + (long long)k * H + u0 + v * vec));
      const T* x = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int q = 0; q < vec; ++q) Ws[(v * vec + q) * L.w_ld + k] = from_f<WElem>(to_f(x[q]));
    }
  }
  for (int e = threadIdx.x; e < rows_blk * U; e += kThreads) {
    const int r = e / U, j = e - r * U;
    dcst[e] = to_f(dcT[(long long)(b0 + r) * H + u0 + j]);
  }

  // gates[t], dy[t], c_all[t + 1], c_all[t] for rows [m0, m0 + rows) of this block.
  auto stage_aux = [&](int t, int m0, int rows) {
    const long long row0 = (long long)t * B + b0 + m0;
    const int e = sizeof(T);
    stage_rows(reinterpret_cast<unsigned char*>(gs), 4 * U * e,
               reinterpret_cast<const unsigned char*>(gates + row0 * G + u0), (long long)G * e,
               (long long)H * e, rows, 4, U * e);
    stage_rows(reinterpret_cast<unsigned char*>(dys), U * e,
               reinterpret_cast<const unsigned char*>(dy + row0 * H + u0), (long long)H * e, 0,
               rows, 1, U * e);
    stage_rows(reinterpret_cast<unsigned char*>(cns), U * 4,
               reinterpret_cast<const unsigned char*>(a.c_all + (row0 + B) * H + u0),
               (long long)H * 4, 0, rows, 1, U * 4);
    stage_rows(reinterpret_cast<unsigned char*>(cps), U * 4,
               reinterpret_cast<const unsigned char*>(a.c_all + row0 * H + u0),
               (long long)H * 4, 0, rows, 1, U * 4);
    cp_async_commit();
  };

  stage_aux(T_ - 1, 0, min(g.MC, rows_blk));
  for (int s = 0; s <= T_; ++s) {
    const int t = T_ - 1 - s;
    if (s > 0) grid_wait(counter, unsigned(s) * g.n_us);
    const AElem* x_prev = xbuf + ((s + 1) & 1) * x_parity;  // dgates_{t+1}
    AElem* x_next = xbuf + (s & 1) * x_parity;              // dgates_t
    for (int m0 = 0; m0 < rows_blk; m0 += g.MC) {
      const int rows = min(g.MC, rows_blk - m0);
      if (m0 > 0 && s < T_) stage_aux(t, m0, rows);
      if (s > 0) {
        block_gemm<E>(P, L.p_ld, g.MC, x_prev + (long long)(b0 + m0) * G, G, x_split,
                      (rows + 15) / 16, U / 16, g.KS, G, g.KC, g.NS, As, L.a_ld, Ws, L.w_ld,
                      L.n_a);
      }
      cp_async_wait<0>();
      __syncthreads();
      for (int e = threadIdx.x; e < rows * U; e += kThreads) {
        const int r = e / U, j = e - r * U;
        const int b = b0 + m0 + r, u = u0 + j;
        const float dh_rec = s > 0 ? sum_partials(P, L.p_ld, g.MC, g.KS, r, j)
                                   : to_f(dhT[(long long)b * H + u]);
        if (s == T_) {
          dh0[(long long)b * H + u] = from_f<T>(dh_rec);
          continue;
        }
        const float dh = to_f(dys[r * U + j]) + dh_rec;
        const float i = to_f(gs[r * 4 * U + j]), f = to_f(gs[r * 4 * U + U + j]);
        const float gg = to_f(gs[r * 4 * U + 2 * U + j]), o = to_f(gs[r * 4 * U + 3 * U + j]);
        const float tc = tanhf(cns[r * U + j]);
        float& dc_ref = dcst[(m0 + r) * U + j];
        const float dc = dc_ref + dh * o * (1.f - tc * tc);
        float dg[4];
        dg[0] = dc * gg * i * (1.f - i);
        dg[1] = dc * cps[r * U + j] * f * (1.f - f);
        dg[2] = dc * i * (1.f - gg * gg);
        dg[3] = dh * tc * o * (1.f - o);
        dc_ref = dc * f;
        const long long row = (long long)t * B + b;
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const long long xi = (long long)b * G + q * H + u;
          dgx[row * G + q * H + u] = from_f<T>(dg[q]);
          if constexpr (kHiLo) {
            const __nv_bfloat16 hi = from_f<__nv_bfloat16>(dg[q]);
            x_next[xi] = hi;
            x_next[x_split + xi] = from_f<__nv_bfloat16>(dg[q] - to_f(hi));
          } else {
            x_next[xi] = dg[q];
          }
        }
        if (t == 0) dc0[(long long)b * H + u] = from_f<T>(dc * f);
      }
      __syncthreads();  // P and the staged inputs are reused by the next chunk
    }
    if (s < T_) {
      grid_arrive(counter);
      if (s + 1 < T_) stage_aux(t - 1, 0, min(g.MC, rows_blk));
    }
  }
#else
  __trap();  // never launched below sm_80 (choose.cpp plans stepwise there)
#endif
}

template <typename T, class E>
SmemOptIn& opt_in() {
  static SmemOptIn once;  // one per kernel instantiation
  return once;
}

template <typename T, class E>
cudaError_t occupancy(size_t smem, int* blocks) {
  return occupancy_of(lstm_bwd_persistent<T, E>, opt_in<T, E>(), smem, blocks);
}

template <typename T, class E>
cudaError_t launch(const Geom& g, const BwdArgs& a, cudaStream_t s) {
  const size_t smem = make_layout(true, dtype_of<T>(), g).total;
  return launch_cooperative(lstm_bwd_persistent<T, E>, opt_in<T, E>(), g, smem, a, s);
}

}  // namespace

cudaError_t bwd_persistent_occupancy(DType dt, size_t smem, int* blocks) {
  switch (dt) {
    case DType::kFloat32: return occupancy<float, Tf32<true>>(smem, blocks);
    case DType::kBFloat16: return occupancy<__nv_bfloat16, Bf16HiLo>(smem, blocks);
    case DType::kFloat16: return occupancy<__half, Tf32<false>>(smem, blocks);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_bwd_persistent(DType dt, const Geom& g, const BwdArgs& a, cudaStream_t s) {
  switch (dt) {
    case DType::kFloat32: return launch<float, Tf32<true>>(g, a, s);
    case DType::kBFloat16: return launch<__nv_bfloat16, Bf16HiLo>(g, a, s);
    case DType::kFloat16: return launch<__half, Tf32<false>>(g, a, s);
  }
  return cudaErrorInvalidValue;
}

}  // namespace charrnn_fast::cuda
