// Mock of <cuda_runtime.h> for the CPU emulation of the persistent kernels
// (see ../emulate.h). Types and error codes come from the real
// cuda_runtime_api.h; the device built-ins and the launch are emulated.
#pragma once

#include <cuda_runtime_api.h>

#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstddef>
#include <functional>

#define __launch_bounds__(...)

inline int min(int a, int b) { return a < b ? a : b; }
// Vector loads (uint4) need their natural alignment on the GPU.
template <class T>
inline T __ldg(const T* p) {
  assert(reinterpret_cast<uintptr_t>(p) % alignof(T) == 0 && "__ldg pointer misaligned");
  return *p;
}

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern dim3 gridDim;
extern dim3 blockDim;
void __syncthreads();
void __threadfence();

namespace charrnn_emu {
// Runs body on blocks x threads OS threads, all blocks at once (co-resident),
// each block with `smem` bytes of dynamic shared memory filled with NaN bytes.
void run_grid(unsigned blocks, unsigned threads, size_t smem, const std::function<void()>& body);
}  // namespace charrnn_emu

namespace charrnn_emu {
// The kernel's cudaFuncAttributeMaxDynamicSharedMemorySize (0: never set).
int& smem_limit(const void* kernel);
// While positive, cudaFuncSetAttribute fails (and counts it down): a
// transient error for the tests of the shared-memory opt-in's retry.
int& set_attribute_failures();
}  // namespace charrnn_emu

template <class T>
cudaError_t cudaFuncSetAttribute(T* k, cudaFuncAttribute attr, int value) {
  if (charrnn_emu::set_attribute_failures() > 0) {
    --charrnn_emu::set_attribute_failures();
    return cudaErrorInvalidValue;
  }
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    charrnn_emu::smem_limit(reinterpret_cast<const void*>(k)) = value;
  }
  return cudaSuccess;
}

template <class T>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, T*, int, size_t) {
  *n = 1;
  return cudaSuccess;
}

template <class... Exp, class... Act>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* cfg, void (*k)(Exp...), Act&&... args) {
  bool cooperative = false;
  for (unsigned i = 0; i < cfg->numAttrs; ++i) {
    cooperative |= cfg->attrs[i].id == cudaLaunchAttributeCooperative && cfg->attrs[i].val.cooperative;
  }
  if (!cooperative) return cudaErrorInvalidValue;  // the persistent kernels need co-residency
  // Above 48 KB of dynamic shared memory a kernel must have opted in.
  if (cfg->dynamicSmemBytes > 48 * 1024 &&
      int(cfg->dynamicSmemBytes) > charrnn_emu::smem_limit(reinterpret_cast<const void*>(k))) {
    return cudaErrorInvalidValue;
  }
  charrnn_emu::run_grid(cfg->gridDim.x, cfg->blockDim.x, cfg->dynamicSmemBytes,
                        [&] { k(args...); });
  return cudaSuccess;
}
