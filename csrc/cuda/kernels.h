// Interface between the torch-side binding (lstm_cuda.cpp, choose.cpp: compiled by the host
// compiler) and the lean CUDA translation units (*.cu, compiled by nvcc).
//
// Only plain types cross this boundary: raw device pointers, sizes, a dtype tag
// and the persistent kernels' geometry. The shared-memory layout is computed
// here by one function that both sides call, so the planner's budget and the
// kernel's carve-up can never disagree.
// Legend: T steps, B batch, H hidden units, G = 4H gate rows, Bp = B rounded up
// to 16 (rows of the exchange buffers), U hidden units owned by one block.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define CHARRNN_HD __host__ __device__
#else
#define CHARRNN_HD
#endif

namespace charrnn_fast::cuda {

enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

constexpr int kThreads = 256;  // threads per block of every persistent kernel
constexpr int kWarps = kThreads / 32;
constexpr int kMaxItems = 4;  // accumulator tiles one warp may own (registers)
// Stages of the staged A operand (cp.async pipeline depth): 2 (double
// buffering) to kMaxStages; deeper pipelines hide the L2 latency of small K-chunks.
constexpr int kMaxStages = 4;
// Barrier counters are kCounterStride unsigned words (128 bytes) apart, one per
// batch slice, so that slices polling their own counter never share an L2 sector.
constexpr int kCounterStride = 32;

// Geometry of one persistent launch. Block b owns hidden units
// [u0, u0 + U), u0 = (b % n_us) * U, and batch rows [b0, b0 + BS),
// b0 = (b / n_us) * BS; grid = n_us * n_bs.
struct Geom {
  int T, B, H;
  int U;     // hidden units per block (fwd: multiple of 4; bwd: multiple of 16)
  int BS;    // batch rows per block, multiple of 16
  int n_us;  // H / U
  int n_bs;  // ceil(B / BS)
  int MC;    // batch rows per M-chunk (multiple of 16, <= BS): smem holds one chunk
  int KC;    // K columns per staged A chunk (divides K, multiple of 16)
  int KS;    // warps splitting one output tile along K
  int NS = 2;  // stages of the staged A chunk, 2..kMaxStages (KC-column chunks in flight)
};

// Byte offsets of the shared-memory regions and leading dimensions (elements).
struct Layout {
  uint32_t w, a, p, aux, state, total;
  int w_ld, a_ld, p_ld;
  int e_in;   // bytes of the input dtype
  int e_w;    // bytes of a resident weight element
  int e_a;    // bytes of a staged A element
  int n_a;    // A arrays per stage (2 for the bf16 hi/lo split)
  int k_tile; // K of one mma (16 for 16-bit types, 8 for tf32)
};

CHARRNN_HD inline uint32_t align128(uint32_t x) { return (x + 127u) & ~127u; }

// Forward: W slice [4U][H + pad] in the input dtype, A = h chunk [MC][KC + pad]
// (NS stages), P = partial pre-activations [KS][MC][4U + 4] fp32,
// aux = gx chunk [MC][4U], state = cell [BS][U] fp32.
// Backward: W^T slice [U][4H + pad] (bf16 for bf16, fp32 for fp16/fp32: fp16
// values are exact in tf32), A = dgates chunk [n_a][MC][KC + pad] (bf16 hi/lo, or
// fp32), P [KS][MC][U + 4], aux = gates [MC][4U], dy [MC][U], c_t, c_{t-1}
// [MC][U] fp32, state = dc [BS][U] fp32.
CHARRNN_HD inline Layout make_layout(bool bwd, DType dt, const Geom& g) {
  Layout L{};
  L.e_in = dt == DType::kFloat32 ? 4 : 2;
  if (!bwd) {
    L.e_w = L.e_in, L.e_a = L.e_in, L.n_a = 1;
  } else if (dt == DType::kBFloat16) {
    L.e_w = 2, L.e_a = 2, L.n_a = 2;
  } else {
    L.e_w = 4, L.e_a = 4, L.n_a = 1;
  }
  L.k_tile = L.e_a == 4 ? 8 : 16;
  const int K = bwd ? 4 * g.H : g.H;
  const int N = bwd ? g.U : 4 * g.U;
  // 16 bytes of padding per row: consecutive rows start 16 B apart modulo 128,
  // so the 8 rows a wmma load touches hit distinct bank groups.
  L.w_ld = K + 16 / L.e_w;
  L.a_ld = g.KC + 16 / L.e_a;
  L.p_ld = N + 4;
  uint32_t off = 0;
  L.w = off;
  off += align128(uint32_t(N) * L.w_ld * L.e_w);
  L.a = off;
  off += align128(uint32_t(g.NS) * L.n_a * g.MC * L.a_ld * L.e_a);
  L.p = off;
  off += align128(uint32_t(g.KS) * g.MC * L.p_ld * 4);
  L.aux = off;
  off += align128(bwd ? uint32_t(g.MC) * g.U * (5 * L.e_in + 8)
                      : uint32_t(g.MC) * 4 * g.U * L.e_in);
  L.state = off;
  off += align128(uint32_t(g.BS) * g.U * 4);
  L.total = off;
  return L;
}

// ---------------------------------------------------------------- persistent
struct FwdArgs {
  const void* gx;    // [T, B, 4H] input dtype
  const void* w_hh;  // [4H, H] input dtype
  void* y;           // [T, B, H] input dtype (out)
  float* c_all;      // [T+1, B, H] fp32; c_all[0] = c0 on entry
  void* gates;       // [T, B, 4H] input dtype (out), or nullptr when not training
  void* hbuf;        // [2, Bp, H] input dtype, zeroed; hbuf[1][:B] = h0 on entry
  unsigned* counter; // [n_bs * kCounterStride] zeroed; slice s polls counter[s * kCounterStride]
};

struct BwdArgs {
  const void* dy;     // [T, B, H]
  const void* dhT;    // [B, H]
  const void* dcT;    // [B, H]
  const void* w_hh;   // [4H, H]
  const float* c_all; // [T+1, B, H] fp32
  const void* gates;  // [T, B, 4H] activated gates
  void* dgx;          // [T, B, 4H] (out)
  void* dh0;          // [B, H] (out)
  void* dc0;          // [B, H] (out)
  void* xbuf;         // zeroed exchange: bf16 [2, 2(hi,lo), Bp, 4H]; else fp32 [2, Bp, 4H]
  unsigned* counter;  // [n_bs * kCounterStride] zeroed; slice s polls counter[s * kCounterStride]
};

// The persistent kernels read gx, dy, gates and c_all with 8-byte cp.async and
// W_hh with 16-byte loads (the offsets they add keep that alignment, given
// H % 16 == 0); the exchange buffers, allocated by the binding, need 16 bytes.
// A contiguous view at a storage offset (x[1:] of a flat buffer) can miss it,
// and a misaligned access is a sticky error that ends the CUDA context, so the
// binding checks first. Returns the name of the first misaligned pointer, or
// nullptr when the persistent kernel may take these arguments.
inline bool aligned_to(const void* p, unsigned bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}
inline const char* misaligned(const FwdArgs& a) {
  if (!aligned_to(a.gx, 8)) return "gx";
  if (!aligned_to(a.w_hh, 16)) return "w_hh";
  if (!aligned_to(a.hbuf, 16)) return "the h exchange buffer";
  return nullptr;
}
inline const char* misaligned(const BwdArgs& a) {
  if (!aligned_to(a.dy, 8)) return "dy";
  if (!aligned_to(a.gates, 8)) return "gates";
  if (!aligned_to(a.c_all, 8)) return "c_all";
  if (!aligned_to(a.w_hh, 16)) return "w_hh";
  if (!aligned_to(a.xbuf, 16)) return "the dgates exchange buffer";
  return nullptr;
}

// Blocks of the kernel that fit on one SM with `smem` bytes of dynamic shared
// memory (cudaOccupancyMaxActiveBlocksPerMultiprocessor). The kernel's dynamic
// shared-memory limit is raised to the device's opt-in maximum once per kernel
// and device (here or at the first launch), never per call, so host threads
// do not race on the attribute. Returns a CUDA error code.
cudaError_t fwd_persistent_occupancy(DType dt, size_t smem, int* blocks_per_sm);
cudaError_t bwd_persistent_occupancy(DType dt, size_t smem, int* blocks_per_sm);

// One cooperative launch of n_us * n_bs blocks that runs all T steps.
cudaError_t launch_fwd_persistent(DType dt, const Geom& g, const FwdArgs& a, cudaStream_t s);
cudaError_t launch_bwd_persistent(DType dt, const Geom& g, const BwdArgs& a, cudaStream_t s);

// ------------------------------------------------------------------ stepwise
// One step of the forward after the GEMM pre = h_{t-1} W_hh^T (fp32 [B, 4H]).
cudaError_t launch_fwd_pointwise(DType dt, int B, int H, const float* pre, const void* gx_t,
                                 const float* c_prev, float* c_next, void* y_t, void* gates_t,
                                 cudaStream_t s);

// How the backward pointwise kernel hands dgates to the next GEMM.
enum class DgOut : int {
  kNone = 0,     // the GEMM reads dgx_t itself (fp32)
  kBf16HiLo = 1, // bf16 [B, 8H]: hi = bf16(dg) in [:, :4H], lo = bf16(dg - hi) in [:, 4H:]
  kFloat = 2,    // fp32 [B, 4H]
};

// One step of the backward: dh = dy_t + dh_rec; writes dgx_t, updates dc in place,
// writes dg_gemm (see DgOut) and, when dc0 is not null, dc0 = dc * f in the input dtype.
cudaError_t launch_bwd_pointwise(DType dt, int B, int H, const float* dh_rec, const void* dy_t,
                                 const void* gates_t, const float* c_next, const float* c_prev,
                                 float* dc, void* dgx_t, void* dg_gemm, DgOut mode, void* dc0,
                                 cudaStream_t s);

}  // namespace charrnn_fast::cuda
