// Planner of the CUDA LSTM kernels (see plan.h, the rule at the top of
// lstm_cuda.cpp, and docs/DESIGN.md, "Planners").
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
// (~700 clk) shared by the NS - 1 chunks in flight, its operand stream (~64
// B/clk from L2) and its mmas (~1024 MAC/clk for 16-bit operands, 512 for tf32,
// per mma pass), plus a __syncthreads; the per-slice barrier costs ~2500 clk
// plus a little per block. Deeper pipelines (NS = 3, 4) cost shared memory and
// only pay where the latency dominates, i.e. for small K-chunks.
// Batch slices duplicate W in more blocks but cut each block's operand stream,
// so wide grids with few rows per block win whenever W fits.
// Aggregate L2 bandwidth: the blocks run in parallel, but together they stream
// every step's operands (each of the H/U column blocks reads all of its batch
// rows' h or dgates, plus its gate tiles) through one L2, at most
// DeviceLimits::l2_bytes_per_clk. A step costs at least total bytes / that
// rate, which penalises small U (more column blocks re-reading the same rows):
// bf16 backward at H = 512, B = 64, U = 16 streams about 17 MB per step.
//
// The stepwise path is modelled too (stepwise_cost), per step: a cuBLAS GEMM
// and a fused pointwise kernel, each at least a launch; the GEMM no faster than
// the tensor cores (or FP32 FMA units) of the SMs its tiles occupy, nor than
// W_hh streams from L2 (when it fits in half of l2_bytes) or from HBM (when it
// does not). compare_with_stepwise keeps the persistent plan only when its
// modelled step is cheaper.
#include "plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

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

// Bytes all blocks together move through L2 in one step (reads and writes).
double l2_bytes_per_step(bool bwd, DType dt, const Geom& g) {
  const Layout L = make_layout(bwd, dt, g);
  const double K = bwd ? 4.0 * g.H : g.H;
  const double U = g.U, e = L.e_in;
  // Per batch row of one block: the A operand (h_{t-1} or dgates, all K columns),
  // then the block's own tiles: forward gx and gates (4U), y and the h exchange
  // (2U) in the input dtype, c (U, fp32); backward gates, dgx (4U) and dy (U)
  // in the input dtype, c_t and c_{t-1} (2U, fp32), the dgates exchange (4U).
  const double a = K * L.e_a * L.n_a;
  const double own = bwd ? 9.0 * U * e + 8.0 * U + 4.0 * U * L.e_a * L.n_a
                         : 10.0 * U * e + 4.0 * U;
  return double(g.n_us) * g.n_bs * g.BS * (a + own);
}

// Modelled cycles per step. Per M-chunk: the first A stage is exposed (L2
// latency), then every K-chunk costs the longest of its share of the L2
// latency (NS - 1 chunks in flight), its operand stream and its mmas (the
// pipeline overlaps the three), plus a __syncthreads; then the pointwise phase. A step is no faster than the
// aggregate L2 traffic allows; plus the barrier.
double model_cost(bool bwd, DType dt, const Geom& g, const DeviceLimits& lim, double* l2) {
  const Layout L = make_layout(bwd, dt, g);
  const double K = bwd ? 4.0 * g.H : g.H;
  const double N = bwd ? g.U : 4.0 * g.U;
  const double rate = L.e_a == 4 ? 512.0 : 1024.0;
  const double latency = 700.0;
  double block = 0;
  for (int m0 = 0; m0 < g.BS; m0 += g.MC) {
    const double rows = std::min(g.MC, g.BS - m0);
    const double load = rows * g.KC * L.e_a * L.n_a / 64.0;
    const double mma = rows * N * g.KC * mma_passes(bwd, dt) / rate;
    const double exposed = latency / (g.NS - 1);  // chunks in flight share the latency
    block += latency + (K / g.KC) * (std::max({exposed, load, mma}) + 80.0);
    block += 100.0 + rows * g.U / kThreads * 60.0;
  }
  *l2 = l2_bytes_per_step(bwd, dt, g) / lim.l2_bytes_per_clk;
  // + the barrier of n_us blocks; + a thousandth of the block chain, so that
  // among L2-bound geometries (equal bound) the shorter chain still wins.
  return std::max(block, *l2) + 1e-3 * block + 2500.0 + 4.0 * g.n_us;
}

}  // namespace

// Ties go to the shallower pipeline (less shared memory for the same time).
bool fit_geometry(bool bwd, DType dt, const DeviceLimits& lim, int kc_divides, Geom& g,
                  double& cost, double& l2) {
  const int K = bwd ? 4 * g.H : g.H;
  const int NT = (bwd ? g.U : 4 * g.U) / 16;
  const int max_mt = kWarps * kMaxItems / NT;  // output tiles a block can hold
  static const int kcs[] = {2048, 1024, 512, 256, 128, 64, 32, 16};
  bool found = false;
  Geom best = g;
  for (int MC = std::min(g.BS, 16 * max_mt); MC >= 16; MC -= 16) {
    for (int KC : kcs) {
      if (K % KC != 0 || kc_divides % KC != 0) continue;
      for (int NS = 2; NS <= kMaxStages && NS - 1 <= K / KC; ++NS) {
        Geom c = g;
        c.MC = MC;
        c.KC = KC;
        c.NS = NS;
        c.KS = k_split(bwd, dt, c);
        if (make_layout(bwd, dt, c).total > lim.smem_optin) break;  // deeper needs more
        double m_l2 = 0;
        const double m = model_cost(bwd, dt, c, lim, &m_l2);
        if (!found || m < cost) found = true, cost = m, l2 = m_l2, best = c;
      }
    }
  }
  g = best;
  return found;
}

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
  int fitting = 0;  // geometries that fit, for the reason
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
      double cost = 0, l2 = 0;
      if (!fit_geometry(bwd, dt, lim, bwd ? 4 * H : H, g, cost, l2)) continue;
      ++fitting;
      if (!best.persistent || cost < best.cost) {
        best.persistent = true;
        best.g = g;
        best.cost = cost;
        best.l2_cost = l2;
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
  } else {
    std::snprintf(buf, sizeof buf,
                  "cheapest of %d (U, BS) geometries that fit %d SMs and %zu B of shared "
                  "memory: %.0f modelled clk/step%s",
                  fitting, lim.sms, lim.smem_optin, best.cost,
                  best.l2_cost + 2500.0 + 4.0 * best.g.n_us >= 0.999 * best.cost
                      ? ", L2-bandwidth bound"
                      : "");
    best.why = buf;
  }
  return best;
}

double stepwise_cost(bool bwd, DType dt, int B, int H, const DeviceLimits& lim) {
  // The GEMM of one step, [B, K] x [K, N]: forward K = H, N = 4H in the input
  // dtype; backward K = 4H, N = H, bf16 as hi/lo halves (K = 8H), fp16 in fp32
  // (lstm_cuda.cpp, bwd_stepwise). fp32 runs on the FP32 units (TF32 off).
  const bool simt = dt == DType::kFloat32 || (bwd && dt == DType::kFloat16);
  const double e_w = simt ? 4.0 : 2.0;
  const double K = bwd ? (dt == DType::kBFloat16 ? 8.0 : 4.0) * H : H;
  const double N = bwd ? H : 4.0 * H;
  const double macs = double(B) * N * K;
  // SMs the GEMM keeps busy: 64 x 128 output tiles, split along K in 1024-deep
  // slices when the tiles alone would leave SMs idle.
  const double tiles = std::ceil(B / 64.0) * std::ceil(N / 128.0) * std::max(1.0, K / 1024.0);
  const double busy = std::min<double>(lim.sms, tiles);
  const double mma = macs / ((simt ? kFmaMacPerClk : kTensorMacPerClk) * busy) / kGemmEfficiency;
  // W_hh (the GEMM's B operand) is read every step: from L2 when it and the
  // step's activations fit in half of it, else from HBM.
  const double w_bytes = N * K * e_w;
  const double act_bytes = double(B) * (K * e_w + N * 4.0);
  const bool in_l2 = lim.l2_bytes > 0 && w_bytes + act_bytes <= 0.5 * double(lim.l2_bytes);
  const double stream =
      w_bytes / (in_l2 ? lim.l2_bytes_per_clk : kHbmBytesPerClk) + act_bytes / lim.l2_bytes_per_clk;
  const double gemm = std::max(mma, stream) + kLaunchClk;
  // The pointwise kernel: gx or dy, gates, c_t, c_{t-1}, and what it writes,
  // about 4H values of 4 + 2 x (input size) bytes per row, through L2.
  const double e_in = dt == DType::kFloat32 ? 4.0 : 2.0;
  const double pointwise = double(B) * 4.0 * H * (4.0 + 2.0 * e_in) / lim.l2_bytes_per_clk + kLaunchClk;
  return gemm + pointwise;
}

bool compare_with_stepwise(Plan& p, bool bwd, DType dt, int B, int H, const DeviceLimits& lim) {
  p.stepwise_cost = stepwise_cost(bwd, dt, B, H, lim);
  if (!p.persistent) return false;
  char buf[320];
  if (p.cost <= p.stepwise_cost) {
    std::snprintf(buf, sizeof buf, "; the stepwise path is modelled at %.0f", p.stepwise_cost);
    p.why += buf;
    return false;
  }
  std::snprintf(buf, sizeof buf,
                "stepwise modelled at %.0f clk/step, cheaper than the best persistent geometry "
                "(%s) at %.0f",
                p.stepwise_cost, geometry(p).c_str(), p.cost);
  p.persistent = false;
  p.why = buf;
  return true;
}

std::string geometry(const Plan& p) {
  if (!p.persistent) return "";
  char buf[256];
  const Geom& g = p.g;
  std::snprintf(buf, sizeof buf,
                "U=%d BS=%d grid=%d (%d x %d) MC=%d KC=%d KS=%d NS=%d smem=%zu cost=%.0f l2=%.0f",
                g.U, g.BS, g.n_us * g.n_bs, g.n_us, g.n_bs, g.MC, g.KC, g.KS, g.NS, p.smem, p.cost,
                p.l2_cost);
  return buf;
}

std::string describe(const Plan& p) { return p.persistent ? geometry(p) : p.why; }

const char* path_name(Path p) {
  switch (p) {
    case Path::kPersistent: return "persistent";
    case Path::kStepwise: return "stepwise";
    default: return "auto";
  }
}

namespace {

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) out.push_back(s.substr(start, i - start)), start = i + 1;
  }
  return out;
}

// `path` or `fwd<sep>bwd` into f, b; false when malformed (the messages of
// plans.py's _path_pair, word for word).
bool path_pair(const std::string& spec, char sep, const char* var, ForcedPaths& f) {
  const std::vector<std::string> parts = split(spec, sep);
  Path p[2] = {Path::kAuto, Path::kAuto};
  bool ok = parts.size() <= 2;
  for (size_t i = 0; ok && i < parts.size(); ++i) {
    if (parts[i] == "persistent") p[i] = Path::kPersistent;
    else if (parts[i] == "stepwise") p[i] = Path::kStepwise;
    else ok = parts[i] == "auto";
  }
  if (!ok) {
    f.error = std::string(var) + ": the cuda path must be one of auto, persistent, stepwise, or <fwd>" +
              sep + "<bwd> such as persistent" + sep + "stepwise; got '" + spec + "'";
    return false;
  }
  f.fwd = p[0];
  f.bwd = parts.size() == 2 ? p[1] : p[0];
  return true;
}

}  // namespace

ForcedPaths parse_forced_paths(const char* path_env, const char* removed_env) {
  ForcedPaths f;
  if (removed_env != nullptr) {  // plans.py's check_path_env, word for word
    const std::string value = removed_env, spec = trim(value);
    std::string new_spec = spec.empty() ? "auto" : spec;
    for (char& c : new_spec) c = c == ',' ? '/' : c;
    f.error = "CHARRNN_FAST_CUDA_PATH is no longer read; set CHARRNN_FAST_PATH=cuda:" + new_spec +
              " instead (found CHARRNN_FAST_CUDA_PATH='" + value + "')";
    return f;
  }
  const std::string text = path_env ? path_env : "";
  bool seen[2] = {false, false};  // cuda, triton
  std::string cuda_spec;
  for (const std::string& raw : split(text, ',')) {
    const std::string entry = trim(raw);
    if (entry.empty()) continue;
    const size_t colon = entry.find(':');
    const std::string backend = trim(entry.substr(0, colon));
    const int which = backend == "cuda" ? 0 : backend == "triton" ? 1 : -1;
    if (colon == std::string::npos || which < 0) {
      f.error = "CHARRNN_FAST_PATH must be a comma list of <backend>:<path> with backend one of "
                "cuda, triton (e.g. cuda:persistent/stepwise,triton:small); got '" + text + "'";
      return f;
    }
    if (seen[which]) {
      f.error = "CHARRNN_FAST_PATH names " + backend + " twice: '" + text + "'";
      return f;
    }
    seen[which] = true;
    if (which == 0) cuda_spec = trim(entry.substr(colon + 1));
  }
  if (seen[0] && path_pair(cuda_spec, '/', "CHARRNN_FAST_PATH", f)) {
    f.source = "CHARRNN_FAST_PATH=" + text;
  }
  return f;
}

}  // namespace charrnn_fast::cuda
