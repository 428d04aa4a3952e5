// Persistent LSTM forward: one cooperative launch runs all T steps.
//
// Algorithm. Block (us, bs) owns hidden units [u0, u0 + U) and batch rows
// [b0, b0 + BS). Its slice of W_hh (the 4U rows i, f, g, o of its units, all H
// columns) is copied into shared memory once and stays there. Per step t:
//   1. wait at the barrier until every block of its batch slice (the n_us
//      blocks that share its rows) has written h_{t-1};
//   2. per M-chunk of MC rows: stream h_{t-1} (exchange buffer, through L2) into
//      shared memory and compute the chunk's 4U pre-activations on tensor cores
//      (block_gemm); add gx (prefetched into shared memory before the barrier),
//      apply the nonlinearities and the cell update in fp32 (cell state kept in
//      shared memory for the whole sequence), write y, c_all, gates and h_t;
//   3. arrive at the barrier, prefetch the next step's gx, go to 1.
// h_t is written to a double buffer hbuf[t & 1] (padded to Bp rows, padding
// zero) so that a fast block writing h_t cannot overwrite h_{t-1} that a slow
// block is still reading: one barrier per step suffices. Batch slices touch
// disjoint rows and never wait for each other.
// Numerics: h fed to the next step is y[t] rounded to the input dtype (exact in
// the mma operands); fp32 uses 3xTF32, so every dtype accumulates at fp32 grade.
// Legend: T steps, B batch, H hidden units, G = 4H, U units per block,
// N = 4U output columns per block (column gate * U + j is unit u0 + j of gate).
#include "persistent_common.cuh"
#include "persistent_launch.cuh"

namespace charrnn_fast::cuda {
namespace {

using namespace detail;

template <typename T, class E>
__global__ void __launch_bounds__(kThreads, 1) lstm_fwd_persistent(FwdArgs a, Geom g) {
#if CHARRNN_PERSISTENT_ARCH
  unsigned char* smem = dynamic_smem();
  using AElem = typename E::AElem;
  using WElem = typename E::WElem;
  static_assert(sizeof(AElem) == sizeof(T) && sizeof(WElem) == sizeof(T),
                "forward operands are the input dtype");
  const Layout L = make_layout(false, dtype_of<T>(), g);
  WElem* Ws = reinterpret_cast<WElem*>(smem + L.w);      // [N][w_ld]
  AElem* As = reinterpret_cast<AElem*>(smem + L.a);      // [NS][MC][a_ld]
  float* P = reinterpret_cast<float*>(smem + L.p);       // [KS][MC][p_ld]
  T* gxs = reinterpret_cast<T*>(smem + L.aux);           // [MC][N]
  float* cst = reinterpret_cast<float*>(smem + L.state); // [BS][U]

  const int T_ = g.T, B = g.B, H = g.H, U = g.U, N = 4 * U, G = 4 * H;
  const long long Bp = (B + 15) / 16 * 16;
  const int u0 = (blockIdx.x % g.n_us) * U;
  const int b0 = (blockIdx.x / g.n_us) * g.BS;
  unsigned* counter = a.counter + (blockIdx.x / g.n_us) * kCounterStride;  // this slice's
  const int rows_blk = min(g.BS, B - b0);
  const T* gx = static_cast<const T*>(a.gx);
  const T* w = static_cast<const T*>(a.w_hh);
  T* y = static_cast<T*>(a.y);
  T* gates = static_cast<T*>(a.gates);
  T* hbuf = static_cast<T*>(a.hbuf);

  // Resident W slice: smem row n = gate * U + j <- W_hh row gate * H + u0 + j.
  {
    constexpr int vec = 16 / sizeof(T);
    const int per_row = H / vec;
    for (int i = threadIdx.x; i < N * per_row; i += kThreads) {
      const int n = i / per_row, p = i - n * per_row;
      const int src_row = (n / U) * H + u0 + n % U;
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(w + (long long)src_row * H) + p);
      *reinterpret_cast<uint4*>(Ws + n * L.w_ld + p * vec) = v;
    }
  }
  for (int e = threadIdx.x; e < rows_blk * U; e += kThreads) {
    const int r = e / U, j = e - r * U;
    cst[e] = a.c_all[(long long)(b0 + r) * H + u0 + j];
  }

  // gx[t] for rows [m0, m0 + rows) of this block: four segments of U elements per row.
  auto stage_gx = [&](int t, int m0, int rows) {
    const long long row0 = (long long)t * B + b0 + m0;
    stage_rows(reinterpret_cast<unsigned char*>(gxs), N * sizeof(T),
               reinterpret_cast<const unsigned char*>(gx + row0 * G + u0), G * sizeof(T),
               (long long)H * sizeof(T), rows, 4, U * sizeof(T));
    cp_async_commit();
  };

  stage_gx(0, 0, min(g.MC, rows_blk));
  for (int t = 0; t < T_; ++t) {
    if (t > 0) grid_wait(counter, unsigned(t) * g.n_us);
    const T* h_prev = hbuf + ((t + 1) & 1) * Bp * H;
    T* h_next = hbuf + (t & 1) * Bp * H;
    for (int m0 = 0; m0 < rows_blk; m0 += g.MC) {
      const int rows = min(g.MC, rows_blk - m0);
      if (m0 > 0) stage_gx(t, m0, rows);
      block_gemm<E>(P, L.p_ld, g.MC, reinterpret_cast<const AElem*>(h_prev) + (b0 + m0) * H, H,
                    0, (rows + 15) / 16, N / 16, g.KS, H, g.KC, g.NS, As, L.a_ld, Ws, L.w_ld,
                    1);
      cp_async_wait<0>();  // gx of this chunk (block_gemm waited already; be explicit)
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
        h_next[(long long)b * H + u] = h;
        a.c_all[(row + B) * H + u] = c;
        if (gates != nullptr) {
#pragma unroll
          for (int q = 0; q < 4; ++q) gates[row * G + q * H + u] = from_f<T>(act[q]);
        }
      }
      __syncthreads();  // P and gxs are reused by the next chunk
    }
    if (t + 1 < T_) {
      grid_arrive(counter);
      stage_gx(t + 1, 0, min(g.MC, rows_blk));  // independent of other blocks: before the wait
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
  return occupancy_of(lstm_fwd_persistent<T, E>, opt_in<T, E>(), smem, blocks);
}

template <typename T, class E>
cudaError_t launch(const Geom& g, const FwdArgs& a, cudaStream_t s) {
  const size_t smem = make_layout(false, dtype_of<T>(), g).total;
  return launch_cooperative(lstm_fwd_persistent<T, E>, opt_in<T, E>(), g, smem, a, s);
}

}  // namespace

cudaError_t fwd_persistent_occupancy(DType dt, size_t smem, int* blocks) {
  switch (dt) {
    case DType::kFloat32: return occupancy<float, Tf32<true>>(smem, blocks);
    case DType::kBFloat16: return occupancy<__nv_bfloat16, Half<__nv_bfloat16>>(smem, blocks);
    case DType::kFloat16: return occupancy<__half, Half<__half>>(smem, blocks);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_fwd_persistent(DType dt, const Geom& g, const FwdArgs& a, cudaStream_t s) {
  switch (dt) {
    case DType::kFloat32: return launch<float, Tf32<true>>(g, a, s);
    case DType::kBFloat16: return launch<__nv_bfloat16, Half<__nv_bfloat16>>(g, a, s);
    case DType::kFloat16: return launch<__half, Half<__half>>(g, a, s);
  }
  return cudaErrorInvalidValue;
}

}  // namespace charrnn_fast::cuda
