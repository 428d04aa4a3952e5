// Planner of the CUDA LSTM kernels (docs/DESIGN.md, "Planners"): which path
// runs a call, with which persistent geometry, and why. Pure functions of the
// problem size and the device limits, so they can be reasoned about (and
// tested, csrc/cuda/emu and tests/lstm/test_planners.py) without a GPU. The
// binding (choose.cpp) adds the occupancy check, the cache, and the path
// forced by the environment, parsed here (parse_forced_paths) with the same
// grammar as charrnn_fast/backends/plans.py.
// Legend: B batch, H hidden units, U units per block, BS batch rows per block.
#pragma once

#include <cstddef>
#include <string>

#include "kernels.h"

namespace charrnn_fast::cuda {

// Aggregate L2 bandwidth, bytes per SM clock: about 5.5 TB/s at 1.98 GHz, a
// rough H100 SXM / H200 estimate (not a device property) to be calibrated with
// bench/run.py. All blocks together cannot stream their per-step operands
// faster than this, however many blocks share the work.
constexpr double kL2BytesPerClk = 2800.0;
// The stepwise path's model (stepwise_cost), equally rough estimates: HBM
// bandwidth (about 3.0 TB/s on an H100 at 1.98 GHz), the cost of one
// small dependent kernel on the stream (launch, ramp and tail: about 2.5 us),
// the tensor-core and FP32-FMA multiply-add rates of one SM, and the fraction
// of them a small-batch cuBLAS GEMM reaches.
constexpr double kHbmBytesPerClk = 1500.0;
constexpr double kLaunchClk = 5000.0;
constexpr double kTensorMacPerClk = 1024.0;
constexpr double kFmaMacPerClk = 128.0;
constexpr double kGemmEfficiency = 0.5;

struct DeviceLimits {
  int sms;                                   // cudaDeviceProp::multiProcessorCount
  size_t smem_optin;                         // cudaDeviceProp::sharedMemPerBlockOptin
  size_t l2_bytes = 0;                       // cudaDeviceProp::l2CacheSize (0: unknown)
  double l2_bytes_per_clk = kL2BytesPerClk;  // aggregate L2 bandwidth (estimate)
};

struct Plan {
  bool persistent = false;
  Geom g{};
  size_t smem = 0;
  double cost = 0;       // modelled cycles per step (lower is better)
  double l2_cost = 0;    // of which the aggregate-L2-bandwidth bound
  double stepwise_cost = 0;  // modelled cycles per step of the stepwise path (0: not compared)
  std::string why;       // why this path (persistent: how the geometry won)
};

// The cheapest persistent geometry for one direction (bwd = backward kernel),
// or persistent = false and the reason. T is copied into the geometry.
Plan plan_persistent(bool bwd, DType dt, int T, int B, int H, const DeviceLimits& lim);

// The cheapest (MC, KC, NS, KS) for g's (U, BS, n_us, n_bs) whose shared-memory
// layout (make_layout(bwd, dt, g)) fits lim.smem_optin, KC dividing both the
// K of the layout and kc_divides; false when none fits. cost, l2: the model's
// cycles per step and its L2-bandwidth bound (lim.l2_bytes_per_clk).
bool fit_geometry(bool bwd, DType dt, const DeviceLimits& lim, int kc_divides, Geom& g,
                  double& cost, double& l2);

// Modelled cycles per step of the stepwise path (a cuBLAS GEMM and a fused
// pointwise kernel per step) for one direction.
double stepwise_cost(bool bwd, DType dt, int B, int H, const DeviceLimits& lim);

// The automatic choice between the paths: records the stepwise model in p and,
// when it is cheaper than persistent plan p, turns p into a stepwise plan whose
// reason gives both figures (returns true then).
bool compare_with_stepwise(Plan& p, bool bwd, DType dt, int B, int H, const DeviceLimits& lim);

// "U=8 BS=64 grid=128 (128 x 1) MC=64 KC=128 KS=1 NS=2 smem=201216 cost=.. l2=.."
// for logs and tests; the reason when not persistent.
std::string describe(const Plan& p);
// The geometry part of describe() alone ("" when not persistent).
std::string geometry(const Plan& p);

// ------------------------------------------------------------ forcing a path
enum class Path { kAuto, kPersistent, kStepwise };

struct ForcedPaths {
  Path fwd = Path::kAuto, bwd = Path::kAuto;
  std::string source;  // "CHARRNN_FAST_PATH=cuda:persistent" (empty when nothing is forced)
  std::string error;   // non-empty: the setting is malformed, and how
};

// The cuda paths forced by CHARRNN_FAST_PATH (`backend:path[/bwd_path]` entries,
// comma-separated; entries of other backends are skipped). removed_env is the
// former CHARRNN_FAST_CUDA_PATH: set, it is an error naming CHARRNN_FAST_PATH.
// Either argument may be null (unset).
ForcedPaths parse_forced_paths(const char* path_env, const char* removed_env);

const char* path_name(Path p);

}  // namespace charrnn_fast::cuda
