// Host side of the persistent kernels' launches, shared by the forward and the
// backward: the shared-memory opt-in (once per kernel and device, retried
// after a failure), the
// occupancy query and the cooperative launch.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <mutex>

#include "kernels.h"

namespace charrnn_fast::cuda::detail {

// Raises one kernel's dynamic shared-memory limit to the device's opt-in
// maximum, once per device: every geometry the planner accepts then launches
// without touching the attribute again, so host threads launching the kernel
// concurrently never race on it (a mutex serialises the attempts). Only a
// success is remembered: after a failure (an earlier asynchronous error
// reported here, say) the next occupancy query or launch tries again, one
// driver call, instead of keeping the persistent path off for the process.
// One object per kernel.
class SmemOptIn {
 public:
  template <typename Kernel>
  cudaError_t apply(Kernel k) {
    int dev = 0;
    cudaError_t err = cudaGetDevice(&dev);
    if (err != cudaSuccess) return err;
    if (dev < 0 || dev >= kMaxDevices) return set(k, dev);  // not cached: still correct
    if (done_[dev].load(std::memory_order_acquire)) return cudaSuccess;
    const std::lock_guard<std::mutex> lock(mu_);
    if (done_[dev].load(std::memory_order_relaxed)) return cudaSuccess;
    err = set(k, dev);
    if (err == cudaSuccess) done_[dev].store(true, std::memory_order_release);
    return err;
  }

 private:
  static constexpr int kMaxDevices = 64;
  template <typename Kernel>
  static cudaError_t set(Kernel k, int dev) {
    int optin = 0;
    const cudaError_t err =
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (err != cudaSuccess) return err;
    return cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
  }
  std::mutex mu_;
  std::atomic<bool> done_[kMaxDevices] = {};
};

// Occupancy query and cooperative launch, shared by the forward and the
// backward kernel (opt_in: the kernel's SmemOptIn, applied first). The grid is
// g.n_us * g.n_bs blocks unless `blocks` says otherwise (the wavefront's layers).
template <typename Kernel>
cudaError_t occupancy_of(Kernel k, SmemOptIn& opt_in, size_t smem, int* blocks) {
  const cudaError_t err = opt_in.apply(k);
  if (err != cudaSuccess) return err;
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, k, kThreads, smem);
}

template <typename Kernel, typename Args>
cudaError_t launch_cooperative(Kernel k, SmemOptIn& opt_in, const Geom& g, size_t smem,
                               const Args& a, cudaStream_t s, unsigned blocks = 0) {
  const cudaError_t err = opt_in.apply(k);
  if (err != cudaSuccess) return err;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(blocks ? blocks : unsigned(g.n_us * g.n_bs));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative;  // all blocks co-resident, or an error
  attr[0].val.cooperative = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, k, a, g);
}

}  // namespace charrnn_fast::cuda::detail
