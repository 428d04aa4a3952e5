// Pointwise kernels of the stepwise LSTM path (sizes whose W_hh slice does not
// fit on chip, and the fallback): per step the binding runs one cuBLAS GEMM
// with fp32 output, then one of these fused kernels.
//
// Forward step: pre[B, 4H] (fp32, h_{t-1} W_hh^T) + gx_t -> activations, cell
// update in fp32, writes y_t (also the next GEMM's A operand), c_t, gates_t.
// Backward step: dh = dy_t + dh_rec (fp32, dgates_{t+1} W_hh), the four
// pre-activation gradients, dc <- dc f in place; writes dgx_t and hands dgates
// to the next GEMM at fp32 grade (bf16 as hi | lo halves of a [B, 8H] operand
// that the binding multiplies with [W_hh; W_hh], fp32 otherwise).
// Parallelisation: one thread per (b, u) hidden unit, grid-stride over B * H.
// Legend: B batch, H hidden units, G = 4H.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "persistent_common.cuh"

namespace charrnn_fast::cuda {
namespace {

using namespace detail;

constexpr int kBlock = 256;

int blocks_for(long long n) {
  const long long b = (n + kBlock - 1) / kBlock;
  return static_cast<int>(b < 65535 * 8 ? b : 65535 * 8);  // grid-stride beyond
}

template <typename T>
__global__ void fwd_pointwise(int B, int H, const float* __restrict__ pre,
                              const T* __restrict__ gx, const float* __restrict__ c_prev,
                              float* __restrict__ c_next, T* __restrict__ y, T* __restrict__ gates) {
  const long long n = (long long)B * H, G = 4LL * H;
  for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
       k += (long long)gridDim.x * blockDim.x) {
    const long long b = k / H, u = k - b * H, r = b * G + u;
    float act[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) act[q] = pre[r + q * H] + to_f(gx[r + q * H]);
    act[0] = sigmoidf(act[0]);
    act[1] = sigmoidf(act[1]);
    act[2] = tanhf(act[2]);
    act[3] = sigmoidf(act[3]);
    const float c = act[1] * c_prev[k] + act[0] * act[2];
    c_next[k] = c;
    y[k] = from_f<T>(act[3] * tanhf(c));
    if (gates != nullptr) {
#pragma unroll
      for (int q = 0; q < 4; ++q) gates[r + q * H] = from_f<T>(act[q]);
    }
  }
}

template <typename T>
__global__ void bwd_pointwise(int B, int H, const float* __restrict__ dh_rec,
                              const T* __restrict__ dy, const T* __restrict__ gates,
                              const float* __restrict__ c_next, const float* __restrict__ c_prev,
                              float* __restrict__ dc, T* __restrict__ dgx, void* dg_gemm,
                              DgOut mode, T* __restrict__ dc0) {
  const long long n = (long long)B * H, G = 4LL * H;
  for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
       k += (long long)gridDim.x * blockDim.x) {
    const long long b = k / H, u = k - b * H, r = b * G + u;
    const float i = to_f(gates[r]), f = to_f(gates[r + H]);
    const float gg = to_f(gates[r + 2 * H]), o = to_f(gates[r + 3 * H]);
    const float tc = tanhf(c_next[k]);
    const float dh = to_f(dy[k]) + dh_rec[k];
    const float dct = dc[k] + dh * o * (1.f - tc * tc);
    float dg[4];
    dg[0] = dct * gg * i * (1.f - i);
    dg[1] = dct * c_prev[k] * f * (1.f - f);
    dg[2] = dct * i * (1.f - gg * gg);
    dg[3] = dh * tc * o * (1.f - o);
    dc[k] = dct * f;
    if (dc0 != nullptr) dc0[k] = from_f<T>(dct * f);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      dgx[r + q * H] = from_f<T>(dg[q]);
      if (mode == DgOut::kBf16HiLo) {
        auto* x = static_cast<__nv_bfloat16*>(dg_gemm);
        const __nv_bfloat16 hi = from_f<__nv_bfloat16>(dg[q]);
        x[b * 2 * G + q * H + u] = hi;
        x[b * 2 * G + G + q * H + u] = from_f<__nv_bfloat16>(dg[q] - to_f(hi));
      } else if (mode == DgOut::kFloat) {
        static_cast<float*>(dg_gemm)[r + q * H] = dg[q];
      }
    }
  }
}

template <typename T>
cudaError_t fwd_launch(int B, int H, const float* pre, const void* gx_t, const float* c_prev,
                       float* c_next, void* y_t, void* gates_t, cudaStream_t s) {
  fwd_pointwise<T><<<blocks_for((long long)B * H), kBlock, 0, s>>>(
      B, H, pre, static_cast<const T*>(gx_t), c_prev, c_next, static_cast<T*>(y_t),
      static_cast<T*>(gates_t));
  return cudaGetLastError();
}

template <typename T>
cudaError_t bwd_launch(int B, int H, const float* dh_rec, const void* dy_t, const void* gates_t,
                       const float* c_next, const float* c_prev, float* dc, void* dgx_t,
                       void* dg_gemm, DgOut mode, void* dc0, cudaStream_t s) {
  bwd_pointwise<T><<<blocks_for((long long)B * H), kBlock, 0, s>>>(
      B, H, dh_rec, static_cast<const T*>(dy_t), static_cast<const T*>(gates_t), c_next, c_prev,
      dc, static_cast<T*>(dgx_t), dg_gemm, mode, static_cast<T*>(dc0));
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_fwd_pointwise(DType dt, int B, int H, const float* pre, const void* gx_t,
                                 const float* c_prev, float* c_next, void* y_t, void* gates_t,
                                 cudaStream_t s) {
  switch (dt) {
    case DType::kFloat32:
      return fwd_launch<float>(B, H, pre, gx_t, c_prev, c_next, y_t, gates_t, s);
    case DType::kBFloat16:
      return fwd_launch<__nv_bfloat16>(B, H, pre, gx_t, c_prev, c_next, y_t, gates_t, s);
    case DType::kFloat16:
      return fwd_launch<__half>(B, H, pre, gx_t, c_prev, c_next, y_t, gates_t, s);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_bwd_pointwise(DType dt, int B, int H, const float* dh_rec, const void* dy_t,
                                 const void* gates_t, const float* c_next, const float* c_prev,
                                 float* dc, void* dgx_t, void* dg_gemm, DgOut mode, void* dc0,
                                 cudaStream_t s) {
  switch (dt) {
    case DType::kFloat32:
      return bwd_launch<float>(B, H, dh_rec, dy_t, gates_t, c_next, c_prev, dc, dgx_t, dg_gemm,
                               mode, dc0, s);
    case DType::kBFloat16:
      return bwd_launch<__nv_bfloat16>(B, H, dh_rec, dy_t, gates_t, c_next, c_prev, dc, dgx_t,
                                       dg_gemm, mode, dc0, s);
    case DType::kFloat16:
      return bwd_launch<__half>(B, H, dh_rec, dy_t, gates_t, c_next, c_prev, dc, dgx_t, dg_gemm,
                                mode, dc0, s);
  }
  return cudaErrorInvalidValue;
}

}  // namespace charrnn_fast::cuda
