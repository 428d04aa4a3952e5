// Geometry planner of the persistent LSTM kernels (see plan.h and the rule at
// the top of lstm_cuda.cpp).
//
// Search: every units-per-block U (a divisor of H; multiple of 4 forward, of
// 16 backward, since a block's N = 4U resp. U output columns are whole 16-wide
// mma tiles) and every number of batch slices n_bs, with grid = (H / U) * n_bs
// at most one block per SM; for each, every M-chunk MC and K-chunk KC whose
// shared-memory layout fits sharedMemPerBlockOptin. The geometry with the
// lowest modelled step time wins.
//
// Cost model (cycles per step on one SM; rough H100 figures, to be calibrated
// with bench/run.py): every K-chunk costs the longest of the L2 latency
// (~700 clk), its operand stream (~64 B/clk from L2) and its mmas (~1024
// MAC/clk for 16-bit operands, 512 for tf32, per mma pass), plus two
// __syncthreads; the per-slice barrier costs ~2500 clk plus a little per block.
// Batch slices duplicate W in more blocks but cut each block's operand stream,
// so wide grids with few rows per block win whenever W fits.
#include "plan.h"

#include <algorithm>
#include <cstdio>

namespace charrnn_fast::cuda {
namespace {

int round16(int x) { return (x + 15) / 16 * 16; }

// Multiply-add passes per k-tile (engines in persistent_common.cuh).
int mma_passes(bool bwd, DType dt) {
  if (dt == DType::kFloat32) return 3;      // 3xTF32
  return bwd ? 2 : 1;                       // hi/lo bf16 or 2xTF32 (fp16) backward
}

// K-split so that a block with fewer output tiles than warps still uses them all.
int k_split(bool bwd, DType dt, const Geom& g) {
  const int tiles = (g.MC / 16) * ((bwd ? g.U : 4 * g.U) / 16);
  if (tiles >= kWarps) return 1;
  return std::min(kWarps / tiles, g.KC / make_layout(bwd, dt, g).k_tile);
}

// Modelled cycles per step. Per M-chunk: the first A stage is exposed (L2
// latency), then every K-chunk costs the longest of L2 latency, its operand
// stream and its mmas (double buffering overlaps the three), plus two
// __syncthreads; then the pointwise phase. Plus the barrier.
double model_cost(bool bwd, DType dt, const Geom& g) {
  const Layout L = make_layout(bwd, dt, g);
  const double K = bwd ? 4.0 * g.H : g.H;
  const double N = bwd ? g.U : 4.0 * g.U;
  const double rate = L.e_a == 4 ? 512.0 : 1024.0;
  const double latency = 700.0;
  double cost = 2500.0 + 4.0 * g.n_us;  // the barrier: n_us blocks per batch slice
  for (int m0 = 0; m0 < g.BS; m0 += g.MC) {
    const double rows = std::min(g.MC, g.BS - m0);
    const double load = rows * g.KC * L.e_a * L.n_a / 64.0;
    const double mma = rows * N * g.KC * mma_passes(bwd, dt) / rate;
    cost += latency + (K / g.KC) * (std::max({latency, load, mma}) + 80.0);
    cost += 100.0 + rows * g.U / kThreads * 60.0;
  }
  return cost;
}

// The cheapest (MC, KC) that fits in shared memory; false when none does.
bool fit(bool bwd, DType dt, size_t optin, Geom& g, double& cost) {
  const int K = bwd ? 4 * g.H : g.H;
  const int NT = (bwd ? g.U : 4 * g.U) / 16;
  const int max_mt = kWarps * kMaxItems / NT;  // output tiles a block can hold
  static const int kcs[] = {2048, 1024, 512, 256, 128, 64, 32, 16};
  bool found = false;
  Geom best = g;
  for (int MC = std::min(g.BS, 16 * max_mt); MC >= 16; MC -= 16) {
    for (int KC : kcs) {
      if (K % KC != 0) continue;
      Geom c = g;
      c.MC = MC;
      c.KC = KC;
      c.KS = k_split(bwd, dt, c);
      if (make_layout(bwd, dt, c).total > optin) continue;
      const double m = model_cost(bwd, dt, c);
      if (!found || m < cost) found = true, cost = m, best = c;
    }
  }
  g = best;
  return found;
}

}  // namespace

Plan plan_persistent(bool bwd, DType dt, int T, int B, int H, const DeviceLimits& lim) {
  Plan best;
  char buf[256];
  if (T < 1 || B < 1) {
    best.why = "empty problem (T or B is 0)";
    return best;
  }
  if (H % 16 != 0) {
    std::snprintf(buf, sizeof buf, "H = %d is not a multiple of 16 (whole mma tiles)", H);
    best.why = buf;
    return best;
  }
  static const int fwd_us[] = {4, 8, 16, 32, 64, 128};
  static const int bwd_us[] = {16, 32, 64, 128};
  const int* us = bwd ? bwd_us : fwd_us;
  const int n_cand = bwd ? 4 : 6;
  bool grid_ok = false;
  for (int c = 0; c < n_cand; ++c) {
    const int U = us[c];
    if (H % U != 0 || H / U > lim.sms) continue;
    grid_ok = true;
    int prev_bs = -1;
    for (int n_bs = 1; n_bs <= (B + 15) / 16; ++n_bs) {
      const int BS = round16((B + n_bs - 1) / n_bs);
      const int nb = (B + BS - 1) / BS;
      if (BS == prev_bs) continue;
      prev_bs = BS;
      const int grid = (H / U) * nb;
      if (grid > lim.sms) break;
      Geom g{T, B, H, U, BS, H / U, nb, 16, 16, 1};
      double cost = 0;
      if (!fit(bwd, dt, lim.smem_optin, g, cost)) continue;
      if (!best.persistent || cost < best.cost) {
        best.persistent = true;
        best.g = g;
        best.cost = cost;
        best.smem = make_layout(bwd, dt, g).total;
      }
    }
  }
  if (!best.persistent) {
    if (!grid_ok) {
      std::snprintf(buf, sizeof buf,
                    "H = %d needs more blocks than the %d SMs at any units-per-block", H,
                    lim.sms);
    } else {
      int U = 0;  // the smallest slice that keeps the grid within the SMs
      for (int c = 0; c < n_cand && U == 0; ++c) {
        if (H % us[c] == 0 && H / us[c] <= lim.sms) U = us[c];
      }
      const Layout L = make_layout(bwd, dt, Geom{T, B, H, U, 16, H / U, 1, 16, 16, 1});
      const long long rows = bwd ? U : 4LL * U, K = bwd ? 4LL * H : H;
      std::snprintf(buf, sizeof buf,
                    "the W_hh%s slice of U=%d units (%lld x %lld x %d B = %lld B) plus its "
                    "staging buffers does not fit in the %zu B of shared memory per block",
                    bwd ? "^T" : "", U, rows, K, L.e_w, rows * K * L.e_w, lim.smem_optin);
    }
    best.why = buf;
  }
  return best;
}

std::string describe(const Plan& p) {
  if (!p.persistent) return p.why;
  char buf[256];
  const Geom& g = p.g;
  std::snprintf(buf, sizeof buf,
                "U=%d BS=%d grid=%d (%d x %d) MC=%d KC=%d KS=%d smem=%zu cost=%.0f", g.U, g.BS,
                g.n_us * g.n_bs, g.n_us, g.n_bs, g.MC, g.KC, g.KS, p.smem, p.cost);
  return buf;
}

}  // namespace charrnn_fast::cuda
