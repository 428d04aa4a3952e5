// Wavefront forward of an L-layer LSTM stack: one cooperative launch runs every
// layer and every step (wavefront.h). Nothing of it has run on a GPU; the CPU
// emulator (csrc/cuda/emu/) checks its logic.
//
// Algorithm. Block b is block (us, bs) of layer l = b / (n_us * n_bs), as in the
// single-layer kernel (persistent_fwd.cu): it owns units [u0, u0 + U) and rows
// [b0, b0 + BS) of its layer. Layer l runs step t in phase k = l + t. Per step:
//   1. wait until every block of the batch slice (all layers) active in the
//      phases before k has arrived;
//   2. per M-chunk: A = row [h_t^(l-1) | h_{t-1}^(l)] of the exchange buffer
//      xbuf[l][t & 1] (layer 0: its second half only, K = H), one block GEMM
//      against the resident [W_ih | W_hh] slice (layer 0: W_hh), add gx (layer
//      0) or the bias (layers >= 1), the cell update in fp32 as the
//      single-layer kernel; h_t goes to y[l], to xbuf[l][(t + 1) & 1] (second
//      half: this layer's next step) and to xbuf[l + 1][t & 1] (first half: the
//      layer above, same step);
//   3. arrive, unless k is the last phase.
// Barrier: one monotonically increasing counter per batch slice shared by all
// layers; only active blocks arrive, so the target of phase k is n_us times
// the layers active in phases 0..k-1 (wave_active). The first arrivals the
// counter counts are exactly those of the earlier phases (no block arrives in
// phase k before the counter reaches phase k's target).
// Why two buffers per layer suffice: xbuf[l][t & 1] is written in phase
// l + t - 1 (by layer l at step t - 1 and layer l - 1 at step t), read in phase
// l + t, and written next in phase l + t + 1, after the barrier that follows
// the read; phase l + t itself writes only xbuf[l][(t + 1) & 1].
// Legend: as wavefront.h; N = 4U output columns per block, H2 = 2H.
#include "persistent_common.cuh"
#include "persistent_launch.cuh"
#include "wavefront.h"

namespace charrnn_fast::cuda {
namespace {

using namespace detail;

template <typename T, class E>
__global__ void __launch_bounds__(kThreads, 1) lstm_wave_fwd(WaveFwdArgs a, Geom g) {
#if CHARRNN_PERSISTENT_ARCH
  unsigned char* smem = dynamic_smem();
  using AElem = typename E::AElem;
  using WElem = typename E::WElem;
  static_assert(sizeof(AElem) == sizeof(T) && sizeof(WElem) == sizeof(T),
                "forward operands are the input dtype");
  const Layout L = make_wave_layout(dtype_of<T>(), g);
  WElem* Ws = reinterpret_cast<WElem*>(smem + L.w);       // [N][w_ld], K = 2H columns
  AElem* As = reinterpret_cast<AElem*>(smem + L.a);       // [NS][MC][a_ld]
  float* P = reinterpret_cast<float*>(smem + L.p);        // [KS][MC][p_ld]
  T* gxs = reinterpret_cast<T*>(smem + L.aux);            // [MC][N]
  float* cst = reinterpret_cast<float*>(smem + L.state);  // [BS][U]

  const int T_ = g.T, B = g.B, H = g.H, U = g.U, N = 4 * U, G = 4 * H, H2 = 2 * H;
  const int n_layers = a.L, phases = T_ + n_layers - 1;
  const long long Bp = (B + 15) / 16 * 16;
  const int per_layer = g.n_us * g.n_bs;
  const int layer = blockIdx.x / per_layer, r_blk = blockIdx.x % per_layer;
  const int slice = r_blk / g.n_us;
  const int u0 = (r_blk % g.n_us) * U, b0 = slice * g.BS;
  unsigned* counter = a.counter + slice * kCounterStride;
  const int rows_blk = min(g.BS, B - b0);
  const int K = layer == 0 ? H : H2;
  const int k_off = layer == 0 ? H : 0;  // column of the first A element in an xbuf row
  const T* w_hh = static_cast<const T*>(a.w_hh) + (long long)layer * G * H;
  const T* w_ih = layer > 0 ? static_cast<const T*>(a.w_ih) + (long long)(layer - 1) * G * H
                            : nullptr;
  const T* bias = layer > 0 ? static_cast<const T*>(a.bias) + (long long)(layer - 1) * G
                            : nullptr;
  const T* gx = static_cast<const T*>(a.gx);
  T* y = static_cast<T*>(a.y) + (long long)layer * T_ * B * H;
  float* c_all = a.c_all + (long long)layer * (T_ + 1) * B * H;
  T* gates = a.gates ? static_cast<T*>(a.gates) + (long long)layer * T_ * B * G : nullptr;
  T* xbuf = static_cast<T*>(a.xbuf);
  auto xrow = [&](int l, int buf) { return xbuf + ((long long)l * 2 + buf) * Bp * H2; };

  // Resident slice: smem row n = gate * U + j <- row gate * H + u0 + j of
  // W_ih (columns [0, H), layers >= 1) and W_hh (the next H columns; layer 0:
  // columns [0, H)).
  {
    constexpr int vec = 16 / sizeof(T);
    const int per_row = K / vec;
    for (int i = threadIdx.x; i < N * per_row; i += kThreads) {
      const int n = i / per_row, c = (i - n * per_row) * vec;
      const long long src_row = (long long)((n / U) * H + u0 + n % U) * H;
      const T* src = layer > 0 && c < H ? w_ih + src_row + c : w_hh + src_row + (c - (K - H));
      *reinterpret_cast<uint4*>(Ws + n * L.w_ld + c) = __ldg(reinterpret_cast<const uint4*>(src));
    }
  }
  for (int e = threadIdx.x; e < rows_blk * U; e += kThreads) {
    const int r = e / U, j = e - r * U;
    cst[e] = c_all[(long long)(b0 + r) * H + u0 + j];
  }

  // The additive term of rows [m0, m0 + rows): gx[t] (layer 0) or the bias
  // (every row the same), four segments of U elements per row.
  auto stage_add = [&](int t, int m0, int rows) {
    const unsigned char* src;
    long long src_row;
    if (layer == 0) {
      src = reinterpret_cast<const unsigned char*>(gx + ((long long)t * B + b0 + m0) * G + u0);
      src_row = G * sizeof(T);
    } else {
      src = reinterpret_cast<const unsigned char*>(bias + u0);
      src_row = 0;
    }
    stage_rows(reinterpret_cast<unsigned char*>(gxs), N * sizeof(T), src, src_row,
               (long long)H * sizeof(T), rows, 4, U * sizeof(T));
    cp_async_commit();
  };

  // Arrivals the counter holds when phase `layer` may start.
  unsigned target = 0;
  for (int k = 0; k < layer; ++k) target += unsigned(wave_active(k, n_layers, T_) * g.n_us);

  stage_add(0, 0, min(g.MC, rows_blk));
  for (int t = 0; t < T_; ++t) {
    const int k = layer + t;
    if (k > 0) grid_wait(counter, target);
    const T* a_src = xrow(layer, t & 1) + k_off;
    T* h_same = xrow(layer, (t + 1) & 1) + H;                       // this layer, step t + 1
    T* h_up = layer + 1 < n_layers ? xrow(layer + 1, t & 1) : nullptr;  // layer above, step t
    for (int m0 = 0; m0 < rows_blk; m0 += g.MC) {
      const int rows = min(g.MC, rows_blk - m0);
      if (m0 > 0) stage_add(t, m0, rows);
      block_gemm<E>(P, L.p_ld, g.MC, reinterpret_cast<const AElem*>(a_src) + (b0 + m0) * H2, H2,
                    0, (rows + 15) / 16, N / 16, g.KS, K, g.KC, g.NS, As, L.a_ld, Ws, L.w_ld, 1);
      cp_async_wait<0>();  // the additive term of this chunk
      __syncthreads();
      for (int e = threadIdx.x; e < rows * U; e += kThreads) {
        const int r = e / U, j = e - r * U;
        float act[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int n = q * U + j;
          act[q] = to_f(gxs[r * N + n]) + sum_partials(P, L.p_ld, g.MC, g.KS, r, n);
        }
        act[0] = sigmoidf(act[0]);
        act[1] = sigmoidf(act[1]);
        act[2] = tanhf(act[2]);
        act[3] = sigmoidf(act[3]);
        float& c_ref = cst[(m0 + r) * U + j];
        const float c = act[1] * c_ref + act[0] * act[2];
        c_ref = c;
        const T h = from_f<T>(act[3] * tanhf(c));
        const int b = b0 + m0 + r, u = u0 + j;
        const long long row = (long long)t * B + b;
        y[row * H + u] = h;
        h_same[(long long)b * H2 + u] = h;
        if (h_up != nullptr) h_up[(long long)b * H2 + u] = h;
        c_all[(row + B) * H + u] = c;
        if (gates != nullptr) {
#pragma unroll
          for (int q = 0; q < 4; ++q) gates[row * G + q * H + u] = from_f<T>(act[q]);
        }
      }
      __syncthreads();  // P and gxs are reused by the next chunk
    }
    if (k + 1 < phases) {
      grid_arrive(counter);
      target += unsigned(wave_active(k, n_layers, T_) * g.n_us);
    }
    if (t + 1 < T_) stage_add(t + 1, 0, min(g.MC, rows_blk));  // before the next wait
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
  return occupancy_of(lstm_wave_fwd<T, E>, opt_in<T, E>(), smem, blocks);
}

template <typename T, class E>
cudaError_t launch(const Geom& g, const WaveFwdArgs& a, cudaStream_t s) {
  const size_t smem = make_wave_layout(dtype_of<T>(), g).total;
  return launch_cooperative(lstm_wave_fwd<T, E>, opt_in<T, E>(), g, smem, a, s,
                            unsigned(a.L * g.n_us * g.n_bs));
}

}  // namespace

cudaError_t wave_fwd_occupancy(DType dt, size_t smem, int* blocks) {
  switch (dt) {
    case DType::kFloat32: return occupancy<float, Tf32<true>>(smem, blocks);
    case DType::kBFloat16: return occupancy<__nv_bfloat16, Half<__nv_bfloat16>>(smem, blocks);
    case DType::kFloat16: return occupancy<__half, Half<__half>>(smem, blocks);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_wave_fwd(DType dt, const Geom& g, const WaveFwdArgs& a, cudaStream_t s) {
  if (a.L < 1) return cudaErrorInvalidValue;
  switch (dt) {
    case DType::kFloat32: return launch<float, Tf32<true>>(g, a, s);
    case DType::kBFloat16: return launch<__nv_bfloat16, Half<__nv_bfloat16>>(g, a, s);
    case DType::kFloat16: return launch<__half, Half<__half>>(g, a, s);
  }
  return cudaErrorInvalidValue;
}

}  // namespace charrnn_fast::cuda
