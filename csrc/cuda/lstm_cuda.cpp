// CUDA implementation of the op contract: validation, allocation, and the
// launches on the current stream of the path that choose.cpp plans (the rule
// below). Kernels live in the lean *.cu files next to this one (kernels.h is
// the boundary).
//
// Path selection rule (docs/DESIGN.md, "Which kernel runs on a GPU"):
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
//   * auto (default): persistent when eligible and modelled cheaper per step
//     than stepwise (plan.cpp models both: a persistent geometry can fit and
//     still be slower, e.g. when the slice leaves only small K-chunks), else
//     stepwise; inputs not aligned for its vector loads (views at a storage
//     offset) and a cooperative launch that the device refuses at run time
//     also fall back.
//   CHARRNN_FAST_PATH=cuda:<path> or cuda:<fwd>/<bwd> (path = auto | persistent |
//   stepwise; e.g. "cuda:persistent/stepwise,triton:small", the grammar of
//   charrnn_fast/backends/plans.py) forces the path, read at every call; forcing
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
#include <tuple>

#include "checks.h"
#include "choose.h"
#include "kernels.h"

namespace charrnn_fast {
namespace {

using cuda::choose;
using cuda::DType;
using cuda::dtype_tag;
using cuda::forced_paths;
using cuda::Path;

// True when launched. In auto mode a cooperative launch that the device
// refuses falls back to the stepwise path: silently when the grid is too large
// for the SMs available now (MPS or green-context limits), with a one-time
// warning for the other launch refusals (cooperative launch unsupported or not
// permitted, resources). Anything else, and any error that is sticky (an
// earlier kernel's fault: the context is lost), is raised.
bool launched(cudaError_t err, Path forced, bool bwd) {
  if (err == cudaSuccess) return true;
  const bool refusal = err == cudaErrorCooperativeLaunchTooLarge ||
                       err == cudaErrorNotSupported || err == cudaErrorNotPermitted ||
                       err == cudaErrorLaunchOutOfResources;
  if (refusal && forced == Path::kAuto) {
    (void)cudaGetLastError();                       // clears a launch error; a sticky one stays
    if (cudaPeekAtLastError() == cudaSuccess) {
      if (err != cudaErrorCooperativeLaunchTooLarge) {
        TORCH_WARN_ONCE("charrnn_fast (cuda): the device refused the cooperative launch of the ",
                        "persistent ", bwd ? "backward" : "forward", " kernel (",
                        cudaGetErrorString(err), "); running the stepwise path instead");
      }
      return false;
    }
  }
  C10_CUDA_CHECK(err);
  return false;
}

// False when an input is not aligned for the persistent kernel (a view at a
// storage offset): auto mode then runs the stepwise path; forcing persistent
// raises, since the kernel would fault with a sticky "misaligned address".
template <class Args>
bool aligned_for_persistent(const Args& a, Path forced, bool bwd) {
  const char* bad = cuda::misaligned(a);
  TORCH_CHECK(bad == nullptr || forced != Path::kPersistent,
              "charrnn_fast (cuda): CHARRNN_FAST_PATH forces the persistent ",
              bwd ? "backward" : "forward", " kernel, but ", bad,
              " is not aligned for its vector loads (16 bytes for w_hh, 8 for the others); ",
              "pass a tensor that starts at an aligned address, e.g. .clone()");
  return bad == nullptr;
}

unsigned* counter_ptr(at::Tensor& c) { return reinterpret_cast<unsigned*>(c.mutable_data_ptr<int>()); }

// ------------------------------------------------------------------ forward
bool fwd_persistent(const cuda::Plan& p, Path forced, DType dt, const Dims& d, const at::Tensor& gx,
                    const at::Tensor& w_hh, const at::Tensor& h0, at::Tensor& y,
                    at::Tensor& c_all, at::Tensor& gates, bool training, cudaStream_t stream) {
  const int64_t Bp = (d.B + 15) / 16 * 16;
  at::Tensor hbuf = at::zeros({2, Bp, d.H}, gx.options());  // [2, Bp, H]; padding rows stay 0
  hbuf.select(0, 1).narrow(0, 0, d.B).copy_(h0);
  at::Tensor counter =
      at::zeros({p.g.n_bs * cuda::kCounterStride}, gx.options().dtype(at::kInt));  // per slice
  const cuda::FwdArgs a{gx.const_data_ptr(),   w_hh.const_data_ptr(),
                        y.mutable_data_ptr(),  c_all.mutable_data_ptr<float>(),
                        training ? gates.mutable_data_ptr() : nullptr,
                        hbuf.mutable_data_ptr(), counter_ptr(counter)};
  if (!aligned_for_persistent(a, forced, false)) return false;
  return launched(cuda::launch_fwd_persistent(dt, p.g, a, stream), forced, false);
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
  at::Tensor counter =
      at::zeros({p.g.n_bs * cuda::kCounterStride}, dy.options().dtype(at::kInt));  // per slice
  const cuda::BwdArgs a{dy.const_data_ptr(),  dhT.const_data_ptr(),       dcT.const_data_ptr(),
                        w_hh.const_data_ptr(), c_all.const_data_ptr<float>(),
                        gates.const_data_ptr(), dgx.mutable_data_ptr(),   dh0.mutable_data_ptr(),
                        dc0.mutable_data_ptr(), xbuf.mutable_data_ptr(), counter_ptr(counter)};
  if (!aligned_for_persistent(a, forced, true)) return false;
  return launched(cuda::launch_bwd_persistent(dt, p.g, a, stream), forced, true);
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

}  // namespace

TORCH_LIBRARY_IMPL(charrnn_fast, CUDA, m) {
  m.impl("lstm_fwd", &lstm_fwd_cuda);
  m.impl("lstm_bwd", &lstm_bwd_cuda);
}

}  // namespace charrnn_fast
