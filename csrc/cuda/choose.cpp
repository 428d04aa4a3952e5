// Planning of the CUDA LSTM ops on the torch side (choose.h): the occupancy
// check and cache around the pure planner (plan.h), the path forced by the
// environment, and the ops that report the plans (cuda_plan, cuda_plan_for:
// backends.report()). The rule is at the top of lstm_cuda.cpp.
// Legend: T steps, B batch, H hidden units.
#include "choose.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <climits>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "kernels.h"

namespace charrnn_fast::cuda {

DType dtype_tag(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return DType::kFloat32;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kFloat16;
    default:
      TORCH_CHECK(false, "charrnn_fast (cuda): the CUDA kernels take float32, bfloat16 or ",
                  "float16 tensors, got ", s, " (backend='reference' runs float64 on the GPU)");
  }
}

// (forward, backward) paths forced by CHARRNN_FAST_PATH, read at every call;
// the grammar is plans.py's and plan.h's. The former CHARRNN_FAST_CUDA_PATH,
// set, is an error here as in plans.py, not a setting silently ignored.
cuda::ForcedPaths forced_paths() {
  cuda::ForcedPaths f =
      cuda::parse_forced_paths(std::getenv("CHARRNN_FAST_PATH"), std::getenv("CHARRNN_FAST_CUDA_PATH"));
  TORCH_CHECK(f.error.empty(), "charrnn_fast (cuda): ", f.error);
  return f;
}

namespace {

// The figures of plans.device_limits() (charrnn_fast/backends/plans.py), read
// from the same cudaDeviceProp fields.
cuda::DeviceLimits device_limits(int dev) {
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(dev);
  return cuda::DeviceLimits{prop->multiProcessorCount, prop->sharedMemPerBlockOptin,
                            size_t(prop->l2CacheSize)};
}

// The persistent plan for one direction on device `dev` with limits `lim`,
// occupancy-checked and cached per (device, limits, direction, dtype, B, H);
// T only enters the barrier-counter bound. dev < 0: a device planned without
// it (backends.report with given limits): no occupancy check, no cache. A
// failed occupancy query (which includes the kernel's shared-memory opt-in) is
// not cached: the next call asks again.
cuda::Plan persistent_plan(bool bwd, DType dt, const Dims& d, int dev,
                           const cuda::DeviceLimits& lim) {
  static std::mutex mu;
  static std::map<std::tuple<int, int, size_t, bool, int, int64_t, int64_t>, cuda::Plan> cache;
  const auto key =
      std::make_tuple(dev, lim.sms, lim.smem_optin, bwd, static_cast<int>(dt), d.B, d.H);
  cuda::Plan p;
  bool hit = false;
  {
    const std::lock_guard<std::mutex> lock(mu);
    const auto it = cache.find(key);
    if (it != cache.end()) p = it->second, hit = true;
  }
  if (!hit) {
    bool cacheable = dev >= 0;
    // dev < 0 plans for given limits without a device: no capability to check.
    const cudaDeviceProp* prop = dev >= 0 ? at::cuda::getDeviceProperties(dev) : nullptr;
    if (prop != nullptr && prop->major < 8) {
      p.why = "compute capability " + std::to_string(prop->major) + "." +
              std::to_string(prop->minor) + ": the persistent kernels need 8.0+ (cp.async)";
    } else if (d.B * 4 * d.H > INT_MAX) {
      p.why = "B * 4H exceeds 32-bit indexing";
    } else {
      p = cuda::plan_persistent(bwd, dt, 1, int(d.B), int(d.H), lim);
      if (p.persistent && dev >= 0) {
        int per_sm = 0;
        const cudaError_t err = bwd ? cuda::bwd_persistent_occupancy(dt, p.smem, &per_sm)
                                    : cuda::fwd_persistent_occupancy(dt, p.smem, &per_sm);
        const int grid = p.g.n_us * p.g.n_bs;
        if (err != cudaSuccess) {
          (void)cudaGetLastError();
          p.persistent = false;
          p.why = std::string("occupancy query failed: ") + cudaGetErrorString(err);
          cacheable = false;
        } else if (per_sm * lim.sms < grid) {
          p.persistent = false;
          p.why = "only " + std::to_string(per_sm * lim.sms) + " blocks can be co-resident, " +
                  "the geometry needs " + std::to_string(grid);
        }
      }
    }
    if (cacheable) {
      const std::lock_guard<std::mutex> lock(mu);
      cache.emplace(key, p);
    }
  }
  p.g.T = static_cast<int>(std::min<int64_t>(d.T, INT_MAX));
  if (p.persistent && (d.T + 1) * p.g.n_us >= (int64_t(1) << 31)) {
    p.persistent = false;
    p.why = "T * (H / U) overflows the 32-bit barrier counter";
  }
  return p;
}

// The automatic choice for one direction: the persistent plan when a geometry
// fits, is co-resident and is modelled cheaper than the stepwise path.
cuda::Plan auto_plan(bool bwd, DType dt, const Dims& d, int dev, const cuda::DeviceLimits& lim) {
  cuda::Plan p = persistent_plan(bwd, dt, d, dev, lim);
  if (!p.persistent) {
    p.why = "no persistent geometry: " + p.why;
    return p;
  }
  cuda::compare_with_stepwise(p, bwd, dt, int(d.B), int(d.H), lim);
  return p;
}

// The plan for one direction: the forced path, else the automatic choice. A
// forced persistent path that cannot run is an error.
cuda::Plan plan_direction(bool bwd, const cuda::ForcedPaths& f, DType dt, const Dims& d, int dev,
                          const cuda::DeviceLimits& lim) {
  const Path forced = bwd ? f.bwd : f.fwd;
  if (forced == Path::kStepwise) {
    cuda::Plan p;
    p.why = "forced by " + f.source;
    return p;
  }
  if (forced == Path::kAuto) return auto_plan(bwd, dt, d, dev, lim);
  cuda::Plan p = persistent_plan(bwd, dt, d, dev, lim);
  TORCH_CHECK(p.persistent, "charrnn_fast (cuda): ", f.source, " forces the persistent ",
              bwd ? "backward" : "forward", " kernel, but it cannot run this call (T=", d.T,
              ", B=", d.B, ", H=", d.H, "): ", p.why);
  p.why = "forced by " + f.source + "; " + p.why;
  return p;
}

}  // namespace

cuda::Plan choose(bool bwd, const cuda::ForcedPaths& f, DType dt, const Dims& d, int dev) {
  return plan_direction(bwd, f, dt, d, dev, device_limits(dev));
}

namespace {

// "fwd=persistent(U=8 BS=16 ...); bwd=stepwise(<reason>)": the auto choice.
std::string cuda_plan(const at::Tensor& gx, const at::Tensor& w_hh) {
  TORCH_CHECK(gx.is_cuda(), "charrnn_fast (cuda): cuda_plan needs CUDA tensors, gx is on ",
              gx.device());
  TORCH_CHECK(gx.dim() == 3 && w_hh.dim() == 2 && gx.size(2) == w_hh.size(0),
              "charrnn_fast (cuda): cuda_plan expects gx [T, B, 4H] and w_hh [4H, H], got ",
              gx.sizes(), " and ", w_hh.sizes());
  const Dims d{gx.size(0), gx.size(1), w_hh.size(1)};
  const DType dt = dtype_tag(gx.scalar_type());
  const c10::cuda::CUDAGuard guard(gx.device());
  std::string out;
  const int dev = gx.get_device();
  for (const bool bwd : {false, true}) {
    const cuda::Plan p = auto_plan(bwd, dt, d, dev, device_limits(dev));
    out += bwd ? "; bwd=" : "fwd=";
    out += (p.persistent ? "persistent(" : "stepwise(") + cuda::describe(p) + ")";
  }
  return out;
}

// The plans a call of batch B, hidden size H in `dtype` gets, as six strings:
// forward path, geometry, why; backward path, geometry, why (the shape of
// plans.Plan in charrnn_fast/backends/plans.py). limits = [sms, smem_optin,
// l2_bytes] (plans.DeviceLimits); device >= 0 adds that device's occupancy
// check and cache (the launch's plan), device < 0 plans for the limits alone
// (no GPU needed). The forced path of the environment applies, as at launch.
std::vector<std::string> cuda_plan_for(int64_t B, int64_t H, at::ScalarType dtype,
                                       at::IntArrayRef limits, int64_t device) {
  TORCH_CHECK(B >= 1 && H >= 1, "charrnn_fast (cuda): cuda_plan_for needs B >= 1 and H >= 1, ",
              "got B=", B, ", H=", H);
  TORCH_CHECK(limits.size() == 3 && limits[0] > 0 && limits[1] > 0 && limits[2] >= 0,
              "charrnn_fast (cuda): cuda_plan_for limits must be [sms, smem_optin, l2_bytes] ",
              "with sms, smem_optin > 0, got ", limits);
  const DType dt = dtype_tag(dtype);
  const cuda::DeviceLimits lim{int(limits[0]), size_t(limits[1]), size_t(limits[2])};
  const cuda::ForcedPaths f = forced_paths();
  std::optional<c10::cuda::CUDAGuard> guard;
  if (device >= 0) guard.emplace(c10::Device(c10::DeviceType::CUDA, device));
  const Dims d{1, B, H};
  std::vector<std::string> out;
  for (const bool bwd : {false, true}) {
    const cuda::Plan p = plan_direction(bwd, f, dt, d, int(device), lim);
    if (p.persistent) {
      out.insert(out.end(), {"persistent", cuda::geometry(p), p.why});
    } else {
      out.insert(out.end(), {"stepwise", "per step: cuBLAS GEMM + fused pointwise", p.why});
    }
  }
  return out;
}

}  // namespace
}  // namespace charrnn_fast::cuda

namespace charrnn_fast {

TORCH_LIBRARY_FRAGMENT(charrnn_fast, m) {
  m.def("cuda_plan(Tensor gx, Tensor w_hh) -> str");
  m.def("cuda_plan_for(int B, int H, ScalarType dtype, int[] limits, int device) -> str[]",
        &cuda::cuda_plan_for);
}

// Any backend: on CPU tensors it says that it needs CUDA ones.
TORCH_LIBRARY_IMPL(charrnn_fast, CompositeExplicitAutograd, m) {
  m.impl("cuda_plan", &cuda::cuda_plan);
}

}  // namespace charrnn_fast
