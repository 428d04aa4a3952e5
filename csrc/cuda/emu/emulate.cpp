// Runtime of the CPU emulation (see emulate.h): threads, blocks, shared
// memory, __syncthreads and the deferred asynchronous copies.
#include "emulate.h"

#include <pthread.h>

#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "include/cuda_runtime.h"

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
dim3 gridDim;
dim3 blockDim;

namespace charrnn_emu {
namespace {

struct Copy {
  void* dst;
  const void* src;
  int bytes;
};

struct Block {
  unsigned char* smem = nullptr;
  size_t bytes = 0;
  std::unique_ptr<std::barrier<>> bar;
};

thread_local Block* tl_block = nullptr;
thread_local std::vector<Copy> tl_open;
thread_local std::deque<std::vector<Copy>> tl_groups;

struct Start {
  const std::function<void()>* body;
  Block* block;
  unsigned b, t;
};

void* thread_main(void* p) {
  const Start s = *static_cast<Start*>(p);
  tl_block = s.block;
  blockIdx = uint3{s.b, 0, 0};
  threadIdx = uint3{s.t, 0, 0};
  (*s.body)();
  if (!tl_open.empty() || !tl_groups.empty()) {
    std::fprintf(stderr, "emulate: thread %u of block %u ended with pending cp.async\n", s.t, s.b);
    std::abort();
  }
  return nullptr;
}

}  // namespace

unsigned char* block_smem() { return tl_block->smem; }

int& smem_limit(const void* kernel) {
  static std::mutex mu;
  static std::map<const void*, int> limits;
  const std::lock_guard<std::mutex> lock(mu);
  return limits[kernel];  // std::map: references stay valid
}

int& set_attribute_failures() {
  static int n = 0;  // set and read by the host thread only
  return n;
}

void defer_copy(void* dst, const void* src, int bytes) {
  auto* d = static_cast<unsigned char*>(dst);
  if (d < tl_block->smem || d + bytes > tl_block->smem + tl_block->bytes) {
    std::fprintf(stderr, "emulate: cp.async destination outside the block's shared memory\n");
    std::abort();
  }
  tl_open.push_back({dst, src, bytes});
}

void commit_group() {
  tl_groups.push_back(std::move(tl_open));
  tl_open.clear();
}

void wait_groups(int keep) {
  while (static_cast<int>(tl_groups.size()) > keep) {
    for (const Copy& c : tl_groups.front()) std::memcpy(c.dst, c.src, c.bytes);
    tl_groups.pop_front();
  }
}

void run_grid(unsigned blocks, unsigned threads, size_t smem, const std::function<void()>& body) {
  gridDim = dim3(blocks);
  blockDim = dim3(threads);
  std::vector<Block> bl(blocks);
  for (Block& b : bl) {
    b.bytes = smem;
    b.smem = static_cast<unsigned char*>(std::aligned_alloc(128, (smem + 127) / 128 * 128));
    std::memset(b.smem, 0xff, smem);  // NaN in every float type: uninitialised reads show
    b.bar = std::make_unique<std::barrier<>>(threads);
  }
  std::vector<Start> starts;
  starts.reserve(size_t(blocks) * threads);
  for (unsigned b = 0; b < blocks; ++b)
    for (unsigned t = 0; t < threads; ++t) starts.push_back({&body, &bl[b], b, t});
  std::vector<pthread_t> ids(starts.size());
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 1 << 20);
  for (size_t i = 0; i < starts.size(); ++i) {
    if (pthread_create(&ids[i], &attr, thread_main, &starts[i]) != 0) {
      std::fprintf(stderr, "emulate: pthread_create failed at thread %zu\n", i);
      std::abort();
    }
  }
  for (pthread_t id : ids) pthread_join(id, nullptr);
  pthread_attr_destroy(&attr);
  for (Block& b : bl) std::free(b.smem);
}

}  // namespace charrnn_emu

// One emulated device, with an H100's opt-in shared memory per block.
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int /*device*/) {
  *value = attr == cudaDevAttrMaxSharedMemoryPerBlockOptin ? 232448 : 0;
  return cudaSuccess;
}

void __syncthreads() { charrnn_emu::tl_block->bar->arrive_and_wait(); }
void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
