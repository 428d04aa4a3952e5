// A stack of LSTM layers as one persistent launch per direction, a wavefront
// (docs/DESIGN.md, "Planners", "The wavefront"): forward, layer l runs step t
// in barrier phase l + t, so an L-layer, T-step call takes L + T - 1 phases
// instead of L * T; the backward (WaveBwdArgs below) mirrors it.
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
// planners (plan_wavefront, plan_wavefront_bwd) say why and the caller runs
// layer by layer. No op calls these kernels yet.
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

// The backward (reverse wavefront): layer l runs reverse step s (t = T-1-s,
// s = 0..T, s = T giving dh0) in phase (L-1-l) + s, L + T phases in all. A
// block of layer l < L-1 holds [W_ih^(l+1) | W_hh^(l)]^T restricted to its U
// units (U x 8H) and multiplies the row [dgates_t^(l+1) | dgates_{t+1}^(l)]:
// the gradient from the layer above (its dx) and the recurrent one, in one
// block GEMM with K = 8H. dW's and layer 0's dx are GEMMs outside, from dgx.
struct WaveBwdArgs {
  int L;
  const void* dy;      // [T, B, H] gradient of the top layer's y
  const void* dhT;     // [L, B, H]
  const void* dcT;     // [L, B, H]
  const void* w_ih;    // [L-1, 4H, H] input weights of layers 1..
  const void* w_hh;    // [L, 4H, H]
  const float* c_all;  // [L, T+1, B, H] fp32 (the forward's)
  const void* gates;   // [L, T, B, 4H] activated gates (the forward's)
  void* dgx;           // [L, T, B, 4H] (out) every layer's pre-activation gradient
  void* dh0;           // [L, B, H] (out)
  void* dc0;           // [L, B, H] (out)
  void* xbuf;          // zeroed: bf16 [L, 2, 2 (hi, lo), Bp, 8H]; else fp32 [L, 2, Bp, 8H]
  unsigned* counter;   // [n_bs * kCounterStride] zeroed
};

// Shared memory of one block: the forward layout with K = 2H (a block of layer
// 0 uses the first H columns of its W slice only). make_layout depends on H
// only through K in the forward.
CHARRNN_HD inline Layout make_wave_layout(DType dt, const Geom& g) {
  Geom k = g;
  k.H = 2 * g.H;
  return make_layout(false, dt, k);
}

// The backward's: the backward layout with K = 8H (make_layout's backward K
// is 4 * g.H).
CHARRNN_HD inline Layout make_wave_bwd_layout(DType dt, const Geom& g) {
  Geom k = g;
  k.H = 2 * g.H;
  return make_layout(true, dt, k);
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

inline const char* misaligned(const WaveBwdArgs& a) {
  if (!aligned_to(a.dy, 8)) return "dy";
  if (!aligned_to(a.gates, 8)) return "gates";
  if (!aligned_to(a.c_all, 8)) return "c_all";
  if (a.L > 1 && !aligned_to(a.w_ih, 16)) return "w_ih";
  if (!aligned_to(a.w_hh, 16)) return "w_hh";
  if (!aligned_to(a.xbuf, 16)) return "the dgates exchange buffer";
  return nullptr;
}

// The per-layer geometry of the wavefront for an L-layer stack (persistent =
// true), or persistent = false and why the caller must run layer by layer.
// T is copied into the geometry; cost is the modelled cycles per phase.
Plan plan_wavefront(DType dt, int L, int T, int B, int H, const DeviceLimits& lim);

// The same for the backward (U a multiple of 16, the K = 8H layout).
Plan plan_wavefront_bwd(DType dt, int L, int T, int B, int H, const DeviceLimits& lim);

cudaError_t wave_fwd_occupancy(DType dt, size_t smem, int* blocks_per_sm);
cudaError_t wave_bwd_occupancy(DType dt, size_t smem, int* blocks_per_sm);
cudaError_t launch_wave_bwd(DType dt, const Geom& g, const WaveBwdArgs& a, cudaStream_t s);
// One cooperative launch of a.L * g.n_us * g.n_bs blocks: all layers, all steps.
cudaError_t launch_wave_fwd(DType dt, const Geom& g, const WaveFwdArgs& a, cudaStream_t s);

}  // namespace charrnn_fast::cuda
