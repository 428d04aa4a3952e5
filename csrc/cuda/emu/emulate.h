// CPU emulation of the device primitives of persistent_common.cuh, used when
// it is compiled with -DCHARRNN_EMULATE by g++ (see emulate_test.cpp, run.sh).
//
// Every CUDA thread is an OS thread and all blocks run at once, so the grid
// barrier is exercised for real (std::atomic_ref with release/acquire). An
// asynchronous copy is only queued; it happens when a cp_async_wait retires its
// group, the latest moment the hardware may perform it: a read of the stage
// before its wait sees the NaN bytes the shared memory was filled with.
#pragma once

#include <atomic>
#include <cassert>
#include <cstdint>
#include <thread>

#include "include/cuda_runtime.h"

namespace charrnn_emu {
unsigned char* block_smem();
void defer_copy(void* dst, const void* src, int bytes);
void commit_group();
void wait_groups(int keep);
}  // namespace charrnn_emu

namespace charrnn_fast::cuda::detail {

inline unsigned char* dynamic_smem() { return charrnn_emu::block_smem(); }

inline void cp_async16_cg(void* dst, const void* src) {
  assert(reinterpret_cast<uintptr_t>(dst) % 16 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0);
  charrnn_emu::defer_copy(dst, src, 16);
}

inline void cp_async8(void* dst, const void* src) {
  assert(reinterpret_cast<uintptr_t>(dst) % 8 == 0 && reinterpret_cast<uintptr_t>(src) % 8 == 0);
  charrnn_emu::defer_copy(dst, src, 8);
}

inline void cp_async_commit() { charrnn_emu::commit_group(); }

template <int N>
inline void cp_async_wait() {
  charrnn_emu::wait_groups(N);
}

// The barrier's ordering. CHARRNN_EMU_RELAXED_BARRIER weakens it to relaxed:
// the mutant that run.sh --tsan-mutant builds to show that ThreadSanitizer
// does report the data races a barrier without release/acquire would let in.
#if defined(CHARRNN_EMU_RELAXED_BARRIER)
constexpr std::memory_order kArriveOrder = std::memory_order_relaxed;
constexpr std::memory_order kWaitOrder = std::memory_order_relaxed;
#else
constexpr std::memory_order kArriveOrder = std::memory_order_release;
constexpr std::memory_order kWaitOrder = std::memory_order_acquire;
#endif

inline void grid_arrive(unsigned* counter) {
  __syncthreads();
  if (threadIdx.x == 0) std::atomic_ref<unsigned>(*counter).fetch_add(1, kArriveOrder);
}

// As on the GPU: poll relaxed, then acquire once. The GPU's fence.acq_rel is
// an acquire load here (ThreadSanitizer does not model fences); it reads a value
// at least `target` of the counter's release sequence (every arrival is a
// read-modify-write), so it synchronises with every arrival before it.
inline void grid_wait(const unsigned* counter, unsigned target) {
  if (threadIdx.x == 0) {
    std::atomic_ref<unsigned> c(*const_cast<unsigned*>(counter));
    while (c.load(std::memory_order_relaxed) < target) std::this_thread::yield();
    (void)c.load(kWaitOrder);
  }
  __syncthreads();
}

}  // namespace charrnn_fast::cuda::detail
