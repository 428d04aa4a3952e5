// Wavefront backward of an L-layer LSTM stack (wavefront.h): one cooperative
// launch runs every layer's reverse time loop. Nothing of it has run on a GPU;
// the CPU emulator (csrc/cuda/emu/) checks its logic.
//
// Algorithm. Block b is block (us, bs) of layer l = b / (n_us * n_bs), as in
// the single-layer backward (persistent_bwd.cu): units [u0, u0 + U), rows
// [b0, b0 + BS). Layer l runs reverse step s (t = T - 1 - s) in phase
// (L - 1 - l) + s, s = 0..T. Per step:
//   1. wait until every block of the batch slice active in the earlier phases
//      has arrived (targets as the forward's, wave_active with T + 1 steps);
//   2. per M-chunk, one block GEMM against the resident W^T slice:
//      layers below the top, s < T: the row [dgates_t^(l+1) | dgates_{t+1}^(l)]
//        of xbuf[l][s & 1] times [W_ih^(l+1) | W_hh^(l)][:, units] (K = 8H):
//        the layer above's dx at step t plus the recurrent gradient;
//      the top layer, and s = T: the second half only (K = 4H, W_hh);
//      then dh = that (+ dy[t] on the top layer, + dhT at s = 0) and the
//      pointwise step of the single-layer backward; dgates_t goes to dgx[l],
//      to xbuf[l][(s + 1) & 1] (second half: this layer's next step) and to
//      xbuf[l - 1][s & 1] (first half: the layer below, same t);
//      at s = T the sum is dh0 and nothing is written to xbuf;
//   3. arrive, unless this is the last phase.
// xbuf[l][s & 1] is written in phase (L-1-l) + s - 1, read in the next one and
// written again in the one after (the forward's argument, mirrored); at s = 0
// its second half is still zero (the buffer is zeroed, first written at s = 1).
// Numerics: as persistent_bwd.cu (bf16 hi/lo, fp16 2xTF32, fp32 3xTF32).
// Legend: as wavefront.h; G = 4H, G2 = 8H.
#include "persistent_common.cuh"
#include "persistent_launch.cuh"
#include "wavefront.h"

namespace charrnn_fast::cuda {
namespace {

using namespace detail;

template <typename T, class E>
__global__ void __launch_bounds__(kThreads, 1) lstm_wave_bwd(WaveBwdArgs a, Geom g) {
#if CHARRNN_PERSISTENT_ARCH
  unsigned char* smem = dynamic_smem();
  using AElem = typename E::AElem;
  using WElem = typename E::WElem;
  constexpr bool kHiLo = std::is_same_v<E, Bf16HiLo>;
  const Layout L = make_wave_bwd_layout(dtype_of<T>(), g);
  const int T_ = g.T, B = g.B, H = g.H, U = g.U, G = 4 * H, G2 = 8 * H;
  const long long Bp = (B + 15) / 16 * 16;
  WElem* Ws = reinterpret_cast<WElem*>(smem + L.w);  // [U][w_ld], K = 8H columns
  AElem* As = reinterpret_cast<AElem*>(smem + L.a);
  float* P = reinterpret_cast<float*>(smem + L.p);
  unsigned char* aux = smem + L.aux;
  T* gs = reinterpret_cast<T*>(aux);                                      // [MC][4U]
  T* dys = reinterpret_cast<T*>(aux + g.MC * 4 * U * sizeof(T));          // [MC][U]
  float* cns = reinterpret_cast<float*>(aux + g.MC * 5 * U * sizeof(T));  // [MC][U] c_t
  float* cps = cns + g.MC * U;                                            // [MC][U] c_{t-1}
  float* dcst = reinterpret_cast<float*>(smem + L.state);                 // [BS][U]

  const int n_layers = a.L, phases = n_layers + T_;
  const int per_layer = g.n_us * g.n_bs;
  const int layer = blockIdx.x / per_layer, r_blk = blockIdx.x % per_layer;
  const int slice = r_blk / g.n_us;
  const int u0 = (r_blk % g.n_us) * U, b0 = slice * g.BS;
  unsigned* counter = a.counter + slice * kCounterStride;
  const int rows_blk = min(g.BS, B - b0);
  const bool top = layer == n_layers - 1;
  const long long lBH = (long long)layer * B * H;
  const T* dy = static_cast<const T*>(a.dy);
  const T* dhT = static_cast<const T*>(a.dhT) + lBH;
  const T* dcT = static_cast<const T*>(a.dcT) + lBH;
  const T* w_hh = static_cast<const T*>(a.w_hh) + (long long)layer * G * H;
  const T* w_above = top ? nullptr : static_cast<const T*>(a.w_ih) + (long long)layer * G * H;
  const float* c_all = a.c_all + (long long)layer * (T_ + 1) * B * H;
  const T* gates = static_cast<const T*>(a.gates) + (long long)layer * T_ * B * G;
  T* dgx = static_cast<T*>(a.dgx) + (long long)layer * T_ * B * G;
  T* dh0 = static_cast<T*>(a.dh0) + lBH;
  T* dc0 = static_cast<T*>(a.dc0) + lBH;
  AElem* xbuf = static_cast<AElem*>(a.xbuf);
  const long long x_parity = (kHiLo ? 2 : 1) * Bp * G2;
  const long long x_split = kHiLo ? Bp * G2 : 0;  // hi -> lo
  auto xrow = [&](int l, int p) { return xbuf + ((long long)l * 2 + p) * x_parity; };

  // Resident slice: Ws[n][k] = W_ih^(l+1)[k][u0 + n] for k < 4H (not on the
  // top layer, which never reads those columns), W_hh^(l)[k - 4H][u0 + n] above.
  {
    constexpr int vec = 16 / sizeof(T);
    for (int i = threadIdx.x; i < G2 * (U / vec); i += kThreads) {
      const int k = i % G2, v = i / G2;
      if (top && k < G) continue;
      const T* src = k < G ? w_above + (long long)k * H : w_hh + (long long)(k - G) * H;
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(src + u0 + v * vec));
      const T* x = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int q = 0; q < vec; ++q) Ws[(v * vec + q) * L.w_ld + k] = from_f<WElem>(to_f(x[q]));
    }
  }
  for (int e = threadIdx.x; e < rows_blk * U; e += kThreads) {
    const int r = e / U, j = e - r * U;
    dcst[e] = to_f(dcT[(long long)(b0 + r) * H + u0 + j]);
  }

  // gates[t], dy[t] (top layer), c_all[t + 1], c_all[t] for rows [m0, m0 + rows).
  auto stage_aux = [&](int t, int m0, int rows) {
    const long long row0 = (long long)t * B + b0 + m0;
    const int e = sizeof(T);
    stage_rows(reinterpret_cast<unsigned char*>(gs), 4 * U * e,
               reinterpret_cast<const unsigned char*>(gates + row0 * G + u0), (long long)G * e,
               (long long)H * e, rows, 4, U * e);
    if (top) {
      stage_rows(reinterpret_cast<unsigned char*>(dys), U * e,
                 reinterpret_cast<const unsigned char*>(dy + row0 * H + u0), (long long)H * e, 0,
                 rows, 1, U * e);
    }
    stage_rows(reinterpret_cast<unsigned char*>(cns), U * 4,
               reinterpret_cast<const unsigned char*>(c_all + (row0 + B) * H + u0),
               (long long)H * 4, 0, rows, 1, U * 4);
    stage_rows(reinterpret_cast<unsigned char*>(cps), U * 4,
               reinterpret_cast<const unsigned char*>(c_all + row0 * H + u0), (long long)H * 4, 0,
               rows, 1, U * 4);
    cp_async_commit();
  };

  const int first = n_layers - 1 - layer;  // the phase of s = 0
  unsigned target = 0;
  for (int k = 0; k < first; ++k) target += unsigned(wave_active(k, n_layers, T_ + 1) * g.n_us);

  stage_aux(T_ - 1, 0, min(g.MC, rows_blk));
  for (int s = 0; s <= T_; ++s) {
    const int t = T_ - 1 - s, k = first + s;
    if (k > 0) grid_wait(counter, target);
    const bool rec_only = top || s == T_;  // no dx from above: the second half alone
    const int K = rec_only ? G : G2, off = rec_only ? G : 0;
    const AElem* a_src = xrow(layer, s & 1) + off;
    AElem* d_same = xrow(layer, (s + 1) & 1) + G;              // this layer, step s + 1
    AElem* d_down = layer > 0 ? xrow(layer - 1, s & 1) : nullptr;  // the layer below, same t
    for (int m0 = 0; m0 < rows_blk; m0 += g.MC) {
      const int rows = min(g.MC, rows_blk - m0);
      if (m0 > 0 && s < T_) stage_aux(t, m0, rows);
      block_gemm<E>(P, L.p_ld, g.MC, a_src + (long long)(b0 + m0) * G2, G2, x_split,
                    (rows + 15) / 16, U / 16, g.KS, K, g.KC, g.NS, As, L.a_ld, Ws + off, L.w_ld,
                    L.n_a);
      cp_async_wait<0>();
      __syncthreads();
      for (int e = threadIdx.x; e < rows * U; e += kThreads) {
        const int r = e / U, j = e - r * U;
        const int b = b0 + m0 + r, u = u0 + j;
        float dh = sum_partials(P, L.p_ld, g.MC, g.KS, r, j);
        if (s == T_) {
          dh0[(long long)b * H + u] = from_f<T>(dh);
          continue;
        }
        if (top) dh += to_f(dys[r * U + j]);
        if (s == 0) dh += to_f(dhT[(long long)b * H + u]);
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
          const long long xi = (long long)b * G2 + q * H + u;
          dgx[row * G + q * H + u] = from_f<T>(dg[q]);
          if constexpr (kHiLo) {
            const __nv_bfloat16 hi = from_f<__nv_bfloat16>(dg[q]);
            const __nv_bfloat16 lo = from_f<__nv_bfloat16>(dg[q] - to_f(hi));
            d_same[xi] = hi;
            d_same[x_split + xi] = lo;
            if (d_down != nullptr) d_down[xi] = hi, d_down[x_split + xi] = lo;
          } else {
            d_same[xi] = dg[q];
            if (d_down != nullptr) d_down[xi] = dg[q];
          }
        }
        if (t == 0) dc0[(long long)b * H + u] = from_f<T>(dc * f);
      }
      __syncthreads();  // P and the staged inputs are reused by the next chunk
    }
    if (k + 1 < phases) {
      grid_arrive(counter);
      target += unsigned(wave_active(k, n_layers, T_ + 1) * g.n_us);
    }
    if (s + 1 < T_) stage_aux(t - 1, 0, min(g.MC, rows_blk));
  }
#else
  __trap();  // never launched below sm_80
#endif
}

template <typename T, class E>
SmemOptIn& opt_in() {
  static SmemOptIn once;
  return once;
}

template <typename T, class E>
cudaError_t occupancy(size_t smem, int* blocks) {
  return occupancy_of(lstm_wave_bwd<T, E>, opt_in<T, E>(), smem, blocks);
}

template <typename T, class E>
cudaError_t launch(const Geom& g, const WaveBwdArgs& a, cudaStream_t s) {
  const size_t smem = make_wave_bwd_layout(dtype_of<T>(), g).total;
  return launch_cooperative(lstm_wave_bwd<T, E>, opt_in<T, E>(), g, smem, a, s,
                            unsigned(a.L * g.n_us * g.n_bs));
}

}  // namespace

cudaError_t wave_bwd_occupancy(DType dt, size_t smem, int* blocks) {
  switch (dt) {
    case DType::kFloat32: return occupancy<float, Tf32<true>>(smem, blocks);
    case DType::kBFloat16: return occupancy<__nv_bfloat16, Bf16HiLo>(smem, blocks);
    case DType::kFloat16: return occupancy<__half, Tf32<false>>(smem, blocks);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_wave_bwd(DType dt, const Geom& g, const WaveBwdArgs& a, cudaStream_t s) {
  if (a.L < 1) return cudaErrorInvalidValue;
  switch (dt) {
    case DType::kFloat32: return launch<float, Tf32<true>>(g, a, s);
    case DType::kBFloat16: return launch<__nv_bfloat16, Bf16HiLo>(g, a, s);
    case DType::kFloat16: return launch<__half, Tf32<false>>(g, a, s);
  }
  return cudaErrorInvalidValue;
}

}  // namespace charrnn_fast::cuda
