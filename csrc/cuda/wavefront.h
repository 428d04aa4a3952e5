// The multi-layer forward as one persistent launch, a wavefront (docs/DESIGN.md,
// "Planners", "The wavefront"): layer l runs step t in barrier phase l + t, so an
// L-layer, T-step call takes L + T - 1 phases instead of L * T.
//
// Every layer has the per-layer geometry g (Geom: U units, BS rows per block,
// n_us x n_bs blocks); block b belongs to layer b / (n_us * n_bs) and within it
// is block b % (n_us * n_bs) of the single-layer kernel. Layer 0 adds the
// precomputed gx (x W_ih^T + b, a GEMM outside); layers l >= 1 compute their
// input projection on chip: their resident slice is [W_ih | W_hh] (4U x 2H) and
// their A operand is the row [h_t^(l-1) | h_{t-1}^(l)] of the exchange buffer,
// one block GEMM with K = 2H, plus the bias.
// Not supported: dropout between layers (the caller runs layer by layer then),
// H % 16 != 0, and a stack whose L grids do not fit the SMs together: the
// planner (plan_wavefront) says why and the caller runs layer by layer.
// Nothing of this has run on a GPU: it is checked on the CPU emulator only.
// Legend: L layers, T steps, B batch, H hidden units (every layer), G = 4H,
// Bp = B rounded up to 16.
#pragma once

#include "kernels.h"
#include "plan.h"

namespace charrnn_fast::cuda {

struct WaveFwdArgs {
  int L;              // layers, >= 1 (the grid is L * n_us * n_bs blocks)
  const void* gx;     // [T, B, 4H] layer 0's input projection, input dtype
  const void* w_ih;   // [L-1, 4H, H] input weights of layers 1.. (unused when L == 1)
  const void* bias;   // [L-1, 4H] b_ih + b_hh of layers 1.., input dtype
  const void* w_hh;   // [L, 4H, H]
  void* y;            // [L, T, B, H] (out): every layer's h_t, input dtype
  float* c_all;       // [L, T+1, B, H] fp32; c_all[l][0] = c0 of layer l on entry
  void* gates;        // [L, T, B, 4H] (out) activated gates, or nullptr when not training
  void* xbuf;         // [L, 2, Bp, 2H] zeroed; xbuf[l][0][:B][H:] = h0 of layer l on entry
  unsigned* counter;  // [n_bs * kCounterStride] zeroed; one per batch slice, all layers
};

// Shared memory of one block: the forward layout with K = 2H (a block of layer
// 0 uses the first H columns of its W slice only). make_layout depends on H
// only through K in the forward.
CHARRNN_HD inline Layout make_wave_layout(DType dt, const Geom& g) {
  Geom k = g;
  k.H = 2 * g.H;
  return make_layout(false, dt, k);
}

// Layers active in barrier phase k (0 <= k < L + T - 1): l with 0 <= k - l < T.
CHARRNN_HD inline int wave_active(int k, int L, int T) {
  const int hi = k < L - 1 ? k : L - 1;
  const int lo = k - T + 1 > 0 ? k - T + 1 : 0;
  return hi - lo + 1;
}

// As kernels.h misaligned(): the first argument the kernel's vector loads
// cannot take (gx, bias 8 bytes; weights, xbuf 16), or nullptr.
inline const char* misaligned(const WaveFwdArgs& a) {
  if (!aligned_to(a.gx, 8)) return "gx";
  if (a.L > 1 && !aligned_to(a.bias, 8)) return "bias";
  if (a.L > 1 && !aligned_to(a.w_ih, 16)) return "w_ih";
  if (!aligned_to(a.w_hh, 16)) return "w_hh";
  if (!aligned_to(a.xbuf, 16)) return "the h exchange buffer";
  return nullptr;
}

// The per-layer geometry of the wavefront for an L-layer stack (persistent =
// true), or persistent = false and why the caller must run layer by layer.
// T is copied into the geometry; cost is the modelled cycles per phase.
Plan plan_wavefront(DType dt, int L, int T, int B, int H, const DeviceLimits& lim);

cudaError_t wave_fwd_occupancy(DType dt, size_t smem, int* blocks_per_sm);
// One cooperative launch of a.L * g.n_us * g.n_bs blocks: all layers, all steps.
cudaError_t launch_wave_fwd(DType dt, const Geom& g, const WaveFwdArgs& a, cudaStream_t s);

}  // namespace charrnn_fast::cuda
