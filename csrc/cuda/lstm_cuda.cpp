// CUDA implementation of the op contract: validation, allocation, the choice of
// path, and the launches on the current stream. Kernels live in the lean *.cu
// files next to this one (kernels.h is the boundary).
//
// Path selection rule (copy into README):
//   Each direction (forward, backward) runs one of two paths.
//   * persistent: one cooperative launch for all T steps; every block keeps its
//     slice of W_hh in shared memory for the whole sequence and the blocks that
//     share batch rows meet at a barrier once per step. Eligible when H % 16 == 0 and a geometry
//     fits the device (csrc/cuda/plan.cpp):
//       forward : a block owns U hidden units (U in {4, 8, ..., 128}, U | H) and
//                 BS batch rows; its slice is 4U x H elements of the input dtype;
//       backward: U in {16, ..., 128}; its slice is U x 4H elements, bf16 for
//                 bf16 and fp32 for fp16/fp32 (the backward mma runs at fp32 grade);
//       grid = (H / U) * ceil(B / BS) <= multiProcessorCount, co-resident per
//       cudaOccupancyMaxActiveBlocksPerMultiprocessor, and slice + staging
//       buffers <= sharedMemPerBlockOptin. Among fitting geometries a cost model
//       picks one. On an H100 (132 SMs, 227 KB): forward up to H = 1024 in every
//       dtype; backward up to H = 1024 in bf16 and up to H = 512 in fp16/fp32.
//   * stepwise: per step one cuBLAS GEMM with fp32 output plus one fused
//     pointwise kernel. Any size.
//   * auto (default): persistent when eligible, else stepwise; a cooperative
//     launch that the device refuses at run time also falls back to stepwise.
//   CHARRNN_FAST_PATH=cuda:<path> or cuda:<fwd>/<bwd> (path = auto | persistent |
//   stepwise; e.g. "cuda:persistent/stepwise,triton:small", the grammar of
//   charrnn_fast/backends/plans.py; the former CHARRNN_FAST_CUDA_PATH = <path> |
//   <fwd>,<bwd> still works) forces the path, read at every call; forcing
//   persistent on a call it cannot run raises an error that gives the reason.
//   torch.ops.charrnn_fast.cuda_plan(gx, w_hh) returns the auto choice and the
//   geometry for a call, as a string; cuda_plan_for(B, H, dtype, limits, device)
//   the (path, geometry, why) of each direction (backends.report()).
// dW_hh is one GEMM over all steps after the backward loop (fp32 accumulation,
// fp32 output for 16-bit dtypes, then rounded once).
// Legend: T steps, B batch, H hidden units, G = 4H, Bp = B rounded up to 16.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
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

#include "checks.h"
#include "kernels.h"
#include "plan.h"

namespace charrnn_fast {
namespace {

using cuda::DType;

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

using cuda::Path;

// (forward, backward) paths forced by CHARRNN_FAST_PATH (or the former
// CHARRNN_FAST_CUDA_PATH), read at every call; the grammar is plans.py's and
// plan.h's. The deprecation warning for the former variable comes from the
// Python layer (charrnn_fast/backends/plans.py), which reads it first.
cuda::ForcedPaths forced_paths() {
  cuda::ForcedPaths f =
      cuda::parse_forced_paths(std::getenv("CHARRNN_FAST_PATH"), std::getenv("CHARRNN_FAST_CUDA_PATH"));
  TORCH_CHECK(f.error.empty(), "charrnn_fast (cuda): ", f.error);
  return f;
}

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
// it (backends.report with given limits): no occupancy check, no cache.
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
    if (d.B * 4 * d.H > INT_MAX) {
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
        } else if (per_sm * lim.sms < grid) {
          p.persistent = false;
          p.why = "only " + std::to_string(per_sm * lim.sms) + " blocks can be co-resident, " +
                  "the geometry needs " + std::to_string(grid);
        }
      }
    }
    if (dev >= 0) {
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

// The plan for one direction: the forced path, else persistent when a
// geometry fits. A forced persistent path that cannot run is an error.
cuda::Plan plan_direction(bool bwd, const cuda::ForcedPaths& f, DType dt, const Dims& d, int dev,
                          const cuda::DeviceLimits& lim) {
  const Path forced = bwd ? f.bwd : f.fwd;
  if (forced == Path::kStepwise) {
    cuda::Plan p;
    p.why = "forced by " + f.source;
    return p;
  }
  cuda::Plan p = persistent_plan(bwd, dt, d, dev, lim);
  TORCH_CHECK(p.persistent || forced != Path::kPersistent, "charrnn_fast (cuda): ", f.source,
              " forces the persistent ", bwd ? "backward" : "forward",
              " kernel, but it cannot run this call (T=", d.T, ", B=", d.B, ", H=", d.H,
              "): ", p.why);
  if (forced == Path::kPersistent) p.why = "forced by " + f.source + "; " + p.why;
  return p;
}

cuda::Plan choose(bool bwd, const cuda::ForcedPaths& f, DType dt, const Dims& d, int dev) {
  return plan_direction(bwd, f, dt, d, dev, device_limits(dev));
}

// True when launched. A cooperative launch that the device refuses right now
// (other work holds SMs) falls back to the stepwise path in auto mode.
bool launched(cudaError_t err, Path forced) {
  if (err == cudaSuccess) return true;
  if (err == cudaErrorCooperativeLaunchTooLarge && forced == Path::kAuto) {
    (void)cudaGetLastError();
    return false;
  }
  C10_CUDA_CHECK(err);
  return false;
}

unsigned* counter_ptr(at::Tensor& c) { return reinterpret_cast<unsigned*>(c.mutable_data_ptr<int>()); }

// ------------------------------------------------------------------ forward
bool fwd_persistent(const cuda::Plan& p, Path forced, DType dt, const Dims& d, const at::Tensor& gx,
                    const at::Tensor& w_hh, const at::Tensor& h0, at::Tensor& y,
                    at::Tensor& c_all, at::Tensor& gates, bool training, cudaStream_t stream) {
  const int64_t Bp = (d.B + 15) / 16 * 16;
  at::Tensor hbuf = at::zeros({2, Bp, d.H}, gx.options());  // [2, Bp, H]; padding rows stay 0
  hbuf.select(0, 1).narrow(0, 0, d.B).copy_(h0);
  at::Tensor counter = at::zeros({p.g.n_bs}, gx.options().dtype(at::kInt));  // per slice
  const cuda::FwdArgs a{gx.const_data_ptr(),   w_hh.const_data_ptr(),
                        y.mutable_data_ptr(),  c_all.mutable_data_ptr<float>(),
                        training ? gates.mutable_data_ptr() : nullptr,
                        hbuf.mutable_data_ptr(), counter_ptr(counter)};
  return launched(cuda::launch_fwd_persistent(dt, p.g, a, stream), forced);
}

void fwd_stepwise(DType dt, const Dims& d, const at::Tensor& gx, const at::Tensor& w_hh,
                  const at::Tensor& h0, at::Tensor& y, at::Tensor& c_all, at::Tensor& gates,
                  bool training, cudaStream_t stream) {
  const int64_t B = d.B, H = d.H, G = 4 * d.H, es = gx.element_size();
  at::Tensor pre = at::empty({B, G}, gx.options().dtype(at::kFloat));  // [B, 4H]
  const at::Tensor wt = w_hh.t();                                       // [H, 4H]
  const auto* gx_p = static_cast<const char*>(gx.const_data_ptr());
  auto* y_p = static_cast<char*>(y.mutable_data_ptr());
  auto* gates_p = training ? static_cast<char*>(gates.mutable_data_ptr()) : nullptr;
  float* c_p = c_all.mutable_data_ptr<float>();
  for (int64_t t = 0; t < d.T; ++t) {
    const at::Tensor h_prev = t == 0 ? h0 : y.select(0, t - 1);  // [B, H]
    if (dt == DType::kFloat32) {
      at::mm_out(pre, h_prev, wt);
    } else {
      at::mm_out(pre, h_prev, wt, at::kFloat);  // fp32 output: no rounding before the gates
    }
    C10_CUDA_CHECK(cuda::launch_fwd_pointwise(
        dt, int(B), int(H), pre.const_data_ptr<float>(), gx_p + t * B * G * es, c_p + t * B * H,
        c_p + (t + 1) * B * H, y_p + t * B * H * es,
        gates_p != nullptr ? gates_p + t * B * G * es : nullptr, stream));
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_fwd_cuda(const at::Tensor& gx,
                                                             const at::Tensor& w_hh,
                                                             const at::Tensor& h0,
                                                             const at::Tensor& c0, bool training) {
  TORCH_CHECK(gx.is_cuda(), "charrnn_fast (cuda): gx must be a CUDA tensor, got ", gx.device());
  const Dims d = check_fwd(gx, w_hh, h0, c0);
  const DType dt = dtype_tag(gx.scalar_type());
  const c10::cuda::CUDAGuard guard(gx.device());
  at::Tensor y = at::empty({d.T, d.B, d.H}, gx.options());
  at::Tensor c_all = at::empty({d.T + 1, d.B, d.H}, gx.options().dtype(at::kFloat));
  at::Tensor gates =
      training ? at::empty({d.T, d.B, 4 * d.H}, gx.options()) : at::empty({0}, gx.options());
  c_all.select(0, 0).copy_(c0);
  if (d.T == 0 || d.B == 0 || d.H == 0) return {y, c_all, gates};
  TORCH_CHECK(d.B <= INT_MAX && d.H <= INT_MAX / 4, "charrnn_fast (cuda): B or H too large");
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const cuda::ForcedPaths f = forced_paths();
  const Path forced = f.fwd;
  const cuda::Plan p = choose(false, f, dt, d, gx.get_device());
  if (!p.persistent ||
      !fwd_persistent(p, forced, dt, d, gx, w_hh, h0, y, c_all, gates, training, stream)) {
    fwd_stepwise(dt, d, gx, w_hh, h0, y, c_all, gates, training, stream);
  }
  return {y, c_all, gates};
}

// ----------------------------------------------------------------- backward
bool bwd_persistent(const cuda::Plan& p, Path forced, DType dt, const Dims& d,
                    const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& dcT,
                    const at::Tensor& w_hh, const at::Tensor& c_all, const at::Tensor& gates,
                    at::Tensor& dgx, at::Tensor& dh0, at::Tensor& dc0, cudaStream_t stream) {
  const int64_t Bp = (d.B + 15) / 16 * 16, G = 4 * d.H;
  // Exchange of dgates between blocks: bf16 [2 parity, 2 (hi, lo), Bp, 4H], else
  // fp32 [2 parity, Bp, 4H]; padding rows stay 0.
  at::Tensor xbuf = dt == DType::kBFloat16 ? at::zeros({2, 2, Bp, G}, dy.options())
                                           : at::zeros({2, Bp, G}, dy.options().dtype(at::kFloat));
  at::Tensor counter = at::zeros({p.g.n_bs}, dy.options().dtype(at::kInt));  // per slice
  const cuda::BwdArgs a{dy.const_data_ptr(),  dhT.const_data_ptr(),       dcT.const_data_ptr(),
                        w_hh.const_data_ptr(), c_all.const_data_ptr<float>(),
                        gates.const_data_ptr(), dgx.mutable_data_ptr(),   dh0.mutable_data_ptr(),
                        dc0.mutable_data_ptr(), xbuf.mutable_data_ptr(), counter_ptr(counter)};
  return launched(cuda::launch_bwd_persistent(dt, p.g, a, stream), forced);
}

void bwd_stepwise(DType dt, const Dims& d, const at::Tensor& dy, const at::Tensor& dhT,
                  const at::Tensor& dcT, const at::Tensor& w_hh, const at::Tensor& c_all,
                  const at::Tensor& gates, at::Tensor& dgx, at::Tensor& dh0, at::Tensor& dc0,
                  cudaStream_t stream) {
  const int64_t B = d.B, H = d.H, G = 4 * d.H, es = dy.element_size();
  const auto f32 = dy.options().dtype(at::kFloat);
  at::Tensor dh = dhT.to(at::kFloat, false, /*copy=*/true);  // [B, H]: dh_rec, then dh0
  at::Tensor dc = dcT.to(at::kFloat, false, /*copy=*/true);  // [B, H]
  at::Tensor w_op, dg_buf;
  cuda::DgOut mode = cuda::DgOut::kNone;
  if (dt == DType::kBFloat16) {
    // dgates = hi + lo, both bf16: [hi | lo] [B, 8H] x [W; W] [8H, H] is one
    // bf16 GEMM at fp32-grade accuracy (W is exact in bf16).
    w_op = at::cat({w_hh, w_hh}, 0);
    dg_buf = at::empty({B, 2 * G}, dy.options());
    mode = cuda::DgOut::kBf16HiLo;
  } else if (dt == DType::kFloat16) {
    w_op = w_hh.to(at::kFloat);  // fp16 dgates would underflow small gradients
    dg_buf = at::empty({B, G}, f32);
    mode = cuda::DgOut::kFloat;
  } else {
    w_op = w_hh;
  }
  const auto* dy_p = static_cast<const char*>(dy.const_data_ptr());
  const auto* gates_p = static_cast<const char*>(gates.const_data_ptr());
  const float* c_p = c_all.const_data_ptr<float>();
  auto* dgx_p = static_cast<char*>(dgx.mutable_data_ptr());
  for (int64_t t = d.T - 1; t >= 0; --t) {
    C10_CUDA_CHECK(cuda::launch_bwd_pointwise(
        dt, int(B), int(H), dh.const_data_ptr<float>(), dy_p + t * B * H * es,
        gates_p + t * B * G * es, c_p + (t + 1) * B * H, c_p + t * B * H,
        dc.mutable_data_ptr<float>(), dgx_p + t * B * G * es,
        dg_buf.defined() ? dg_buf.mutable_data_ptr() : nullptr, mode,
        t == 0 ? dc0.mutable_data_ptr() : nullptr, stream));
    const at::Tensor dg = mode == cuda::DgOut::kNone ? dgx.select(0, t) : dg_buf;
    if (dt == DType::kBFloat16) {
      at::mm_out(dh, dg, w_op, at::kFloat);
    } else {
      at::mm_out(dh, dg, w_op);
    }
  }
  dh0.copy_(dh);
}

// dW_hh = sum_t dgates_t^T h_{t-1} (h_{-1} = h0) as one GEMM over all T*B rows.
at::Tensor dw_gemm(const at::Tensor& dgx, const at::Tensor& y, const at::Tensor& h0,
                   const Dims& d) {
  const at::Tensor h_prev =
      d.T > 1 ? at::cat({h0.unsqueeze(0), y.narrow(0, 0, d.T - 1)}, 0) : h0.unsqueeze(0);
  const at::Tensor a = dgx.view({d.T * d.B, 4 * d.H}).t();  // [4H, T*B]
  const at::Tensor b = h_prev.view({d.T * d.B, d.H});       // [T*B, H]
  if (dgx.scalar_type() == at::kFloat) return at::mm(a, b);
  // fp32 output: cuBLAS may otherwise reduce in reduced precision for 16-bit outputs.
  return at::mm(a, b, at::kFloat).to(dgx.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_bwd_cuda(
    const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& dcT, const at::Tensor& w_hh,
    const at::Tensor& y, const at::Tensor& c_all, const at::Tensor& gates,
    const at::Tensor& h0) {
  TORCH_CHECK(y.is_cuda(), "charrnn_fast (cuda): y must be a CUDA tensor, got ", y.device());
  const Dims d = check_bwd(dy, dhT, dcT, w_hh, y, c_all, gates, h0);
  const DType dt = dtype_tag(y.scalar_type());
  const c10::cuda::CUDAGuard guard(y.device());
  at::Tensor dgx = at::empty({d.T, d.B, 4 * d.H}, y.options());
  at::Tensor dh0 = at::empty({d.B, d.H}, y.options());
  at::Tensor dc0 = at::empty({d.B, d.H}, y.options());
  if (d.T == 0 || d.B == 0 || d.H == 0) {
    dh0.copy_(dhT);
    dc0.copy_(dcT);
    return {dgx, at::zeros_like(w_hh), dh0, dc0};
  }
  TORCH_CHECK(d.B <= INT_MAX && d.H <= INT_MAX / 4, "charrnn_fast (cuda): B or H too large");
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const cuda::ForcedPaths f = forced_paths();
  const Path forced = f.bwd;
  const cuda::Plan p = choose(true, f, dt, d, y.get_device());
  if (!p.persistent ||
      !bwd_persistent(p, forced, dt, d, dy, dhT, dcT, w_hh, c_all, gates, dgx, dh0, dc0,
                      stream)) {
    bwd_stepwise(dt, d, dy, dhT, dcT, w_hh, c_all, gates, dgx, dh0, dc0, stream);
  }
  return {dgx, dw_gemm(dgx, y, h0, d), dh0, dc0};
}

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
    const cuda::Plan p = persistent_plan(bwd, dt, d, dev, device_limits(dev));
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
      const std::string why = (bwd ? f.bwd : f.fwd) == Path::kStepwise
                                   ? p.why
                                   : "no persistent geometry: " + p.why;
      out.insert(out.end(), {"stepwise", "per step: cuBLAS GEMM + fused pointwise", why});
    }
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(charrnn_fast, m) {
  m.def("cuda_plan(Tensor gx, Tensor w_hh) -> str");
  m.def("cuda_plan_for(int B, int H, ScalarType dtype, int[] limits, int device) -> str[]",
        &cuda_plan_for);
}

TORCH_LIBRARY_IMPL(charrnn_fast, CUDA, m) {
  m.impl("lstm_fwd", &lstm_fwd_cuda);
  m.impl("lstm_bwd", &lstm_bwd_cuda);
}

// Any backend: on CPU tensors it says that it needs CUDA ones.
TORCH_LIBRARY_IMPL(charrnn_fast, CompositeExplicitAutograd, m) {
  m.impl("cuda_plan", &cuda_plan);
}

}  // namespace charrnn_fast
