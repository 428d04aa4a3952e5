// Planner of the wavefront forward and backward (wavefront.h): splits the SMs
// between the layers of a stack, one per-layer geometry for all of them, or
// says why the stack must run layer by layer.
//
// Search: as plan_persistent (plan.cpp), every U (dividing H; a multiple of 4
// forward, 16 backward) and every number of batch slices, but the L layers run
// at once, so the grid is L * (H / U) * n_bs <= SMs, and a block's layout is
// the one with K = 2H forward, 8H backward (make_wave_layout,
// make_wave_bwd_layout: the slice holds W_ih and W_hh). Each candidate is
// costed by the single-layer model (fit_geometry) on that K, the slowest
// layer-step of a phase, with the aggregate L2 bandwidth divided
// between the L layers that stream at once. These are estimates: nothing of
// the wavefront has run on a GPU.
#include <cstdio>

#include "wavefront.h"

namespace charrnn_fast::cuda {

namespace {

Plan plan_wave(bool bwd, DType dt, int L, int T, int B, int H, const DeviceLimits& lim) {
  Plan best;
  char buf[320];
  if (L < 2) {
    best.why = "one layer: the single-layer kernels serve it";
    return best;
  }
  if (T < 1 || B < 1) {
    best.why = "empty problem (T or B is 0)";
    return best;
  }
  if (H % 16 != 0) {
    std::snprintf(buf, sizeof buf, "H = %d is not a multiple of 16 (whole mma tiles)", H);
    best.why = buf;
    return best;
  }
  DeviceLimits shared = lim;  // the L layers share the L2 bandwidth
  shared.l2_bytes_per_clk = lim.l2_bytes_per_clk / L;
  static const int kUnits[] = {4, 8, 16, 32, 64, 128};
  int fitting = 0, smallest_grid = 0, min_u = 0;  // min_u: the smallest U whose grids fit
  for (const int U : kUnits) {
    if (H % U != 0 || (bwd && U % 16 != 0)) continue;  // backward: U output columns
    const int n_us = H / U;
    if (smallest_grid == 0 || L * n_us < smallest_grid) smallest_grid = L * n_us;
    if (min_u == 0 && L * n_us <= lim.sms) min_u = U;
    int prev_bs = -1;
    for (int n_bs = 1; n_bs <= (B + 15) / 16; ++n_bs) {
      const int BS = ((B + n_bs - 1) / n_bs + 15) / 16 * 16;
      const int nb = (B + BS - 1) / BS;
      if (BS == prev_bs) continue;
      prev_bs = BS;
      if (L * n_us * nb > lim.sms) break;
      // Costed and laid out as one block of H' = 2H (K = 2H forward, 8H
      // backward); KC must divide the K of the single-layer steps too (layer
      // 0 forward, the top layer and s = T backward).
      Geom g{T, B, 2 * H, U, BS, n_us, nb, 16, 16, 1};
      double cost = 0, l2 = 0;
      if (!fit_geometry(bwd, dt, shared, bwd ? 4 * H : H, g, cost, l2)) continue;
      g.H = H;
      ++fitting;
      if (!best.persistent || cost < best.cost) {
        best.persistent = true;
        best.g = g;
        best.cost = cost;
        best.l2_cost = l2;
        best.smem = (bwd ? make_wave_bwd_layout(dt, g) : make_wave_layout(dt, g)).total;
      }
    }
  }
  if (best.persistent) {
    std::snprintf(buf, sizeof buf,
                  "wavefront of %d layers in %d phases (not %d): cheapest of %d per-layer (U, BS) "
                  "geometries whose %d grids fit %d SMs and %zu B of shared memory: %.0f "
                  "modelled clk/phase",
                  L, bwd ? T + L : T + L - 1, bwd ? L * (T + 1) : L * T, fitting, L, lim.sms,
                  lim.smem_optin, best.cost);
  } else if (min_u == 0) {
    std::snprintf(buf, sizeof buf,
                  "layer by layer: %d layers of H = %d need at least %d blocks together, more "
                  "than the %d SMs",
                  L, H, smallest_grid, lim.sms);
  } else {
    std::snprintf(buf, sizeof buf,
                  "layer by layer: with %d layers sharing %d SMs, a block's [W_ih | W_hh]%s "
                  "slice is at least %d x %d elements, which with its staging buffers does "
                  "not fit the %zu B of shared memory per block",
                  L, lim.sms, bwd ? "^T" : "", bwd ? min_u : 4 * min_u, bwd ? 8 * H : 2 * H,
                  lim.smem_optin);
  }
  best.why = buf;
  return best;
}

}  // namespace

Plan plan_wavefront(DType dt, int L, int T, int B, int H, const DeviceLimits& lim) {
  return plan_wave(false, dt, L, T, B, H, lim);
}

Plan plan_wavefront_bwd(DType dt, int L, int T, int B, int H, const DeviceLimits& lim) {
  return plan_wave(true, dt, L, T, B, H, lim);
}

}  // namespace charrnn_fast::cuda
