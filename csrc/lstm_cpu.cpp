// CPU implementation of the LSTM recurrence (forward and backward).
//
// Algorithm: the whole time loop runs here. Per step, one GEMM
// h_{t-1} W_hh^T into a [B,4H] buffer, then one fused pointwise pass that adds
// gx, applies the nonlinearities and updates the cell, parallelised over the
// B*H hidden units with at::parallel_for. Backward mirrors it in reverse: one
// fused pointwise pass producing the pre-activation gradients, then one GEMM
// dgates W_hh for dh_{t-1}; dW_hh is a single GEMM after the loop.
// Numerics: all arithmetic, the hidden state fed to the GEMM and the cell state
// are in the accumulation type (fp32, or fp64 for fp64 inputs); the hidden
// state is rounded to the input dtype once per step, exactly as it is stored
// in y, so that backward sees the same h_{t-1} that forward used.
// Legend: T time steps, B batch, H hidden units.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>

#include "checks.h"

namespace charrnn_fast {
namespace {

// About this many elements per thread before splitting is worth it.
constexpr int64_t kGrain = 2048;

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

template <typename scalar_t>
void forward_loop(const at::Tensor& gx, const at::Tensor& w_hh, const at::Tensor& h0,
                  bool training, const Dims& d, at::Tensor& y, at::Tensor& c_all,
                  at::Tensor& gates) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto acc = c_all.scalar_type();
  const int64_t B = d.B, H = d.H, G = 4 * d.H;
  const at::Tensor w_t = w_hh.to(acc).t();  // [H, 4H]
  at::Tensor h = h0.to(acc, /*non_blocking=*/false, /*copy=*/true);  // [B, H]
  at::Tensor pre = at::empty({B, G}, c_all.options());                // [B, 4H]

  const scalar_t* gx_p = gx.const_data_ptr<scalar_t>();
  scalar_t* y_p = y.mutable_data_ptr<scalar_t>();
  acc_t* c_p = c_all.mutable_data_ptr<acc_t>();
  scalar_t* gates_p = training ? gates.mutable_data_ptr<scalar_t>() : nullptr;
  acc_t* h_p = h.mutable_data_ptr<acc_t>();
  const acc_t* pre_p = pre.const_data_ptr<acc_t>();

  for (int64_t t = 0; t < d.T; ++t) {
    at::mm_out(pre, h, w_t);
    const scalar_t* gx_t = gx_p + t * B * G;
    const acc_t* c_prev = c_p + t * B * H;
    acc_t* c_next = c_p + (t + 1) * B * H;
    scalar_t* y_t = y_p + t * B * H;
    scalar_t* gates_t = training ? gates_p + t * B * G : nullptr;
    at::parallel_for(0, B * H, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const int64_t b = k / H, j = k - b * H, r = b * G + j;
        const acc_t i = sigmoid<acc_t>(acc_t(gx_t[r]) + pre_p[r]);
        const acc_t f = sigmoid<acc_t>(acc_t(gx_t[r + H]) + pre_p[r + H]);
        const acc_t g = std::tanh(acc_t(gx_t[r + 2 * H]) + pre_p[r + 2 * H]);
        const acc_t o = sigmoid<acc_t>(acc_t(gx_t[r + 3 * H]) + pre_p[r + 3 * H]);
        const acc_t c = f * c_prev[k] + i * g;
        const scalar_t h_out = scalar_t(o * std::tanh(c));
        c_next[k] = c;
        y_t[k] = h_out;
        h_p[k] = acc_t(h_out);
        if (gates_t != nullptr) {
          gates_t[r] = scalar_t(i);
          gates_t[r + H] = scalar_t(f);
          gates_t[r + 2 * H] = scalar_t(g);
          gates_t[r + 3 * H] = scalar_t(o);
        }
      }
    });
  }
}

template <typename scalar_t>
void backward_loop(const at::Tensor& dy, const at::Tensor& w_hh, const at::Tensor& c_all,
                   const at::Tensor& gates, const Dims& d, at::Tensor& dgx_acc,
                   at::Tensor& dh, at::Tensor& dc) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = d.B, H = d.H, G = 4 * d.H;
  const at::Tensor w = w_hh.to(c_all.scalar_type());  // [4H, H]
  const scalar_t* dy_p = dy.const_data_ptr<scalar_t>();
  const scalar_t* gates_p = gates.const_data_ptr<scalar_t>();
  const acc_t* c_p = c_all.const_data_ptr<acc_t>();
  acc_t* dg_p = dgx_acc.mutable_data_ptr<acc_t>();
  acc_t* dh_p = dh.mutable_data_ptr<acc_t>();
  acc_t* dc_p = dc.mutable_data_ptr<acc_t>();

  for (int64_t t = d.T - 1; t >= 0; --t) {
    const scalar_t* dy_t = dy_p + t * B * H;
    const scalar_t* gates_t = gates_p + t * B * G;
    const acc_t* c_prev = c_p + t * B * H;
    const acc_t* c_cur = c_p + (t + 1) * B * H;
    acc_t* dg_t = dg_p + t * B * G;
    at::parallel_for(0, B * H, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const int64_t b = k / H, j = k - b * H, r = b * G + j;
        const acc_t i = gates_t[r], f = gates_t[r + H];
        const acc_t g = gates_t[r + 2 * H], o = gates_t[r + 3 * H];
        const acc_t tc = std::tanh(c_cur[k]);
        const acc_t dh_t = acc_t(dy_t[k]) + dh_p[k];
        const acc_t dc_t = dc_p[k] + dh_t * o * (acc_t(1) - tc * tc);
        dg_t[r] = dc_t * g * i * (acc_t(1) - i);
        dg_t[r + H] = dc_t * c_prev[k] * f * (acc_t(1) - f);
        dg_t[r + 2 * H] = dc_t * i * (acc_t(1) - g * g);
        dg_t[r + 3 * H] = dh_t * tc * o * (acc_t(1) - o);
        dc_p[k] = dc_t * f;
      }
    });
    at::mm_out(dh, dgx_acc[t], w);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_fwd_cpu(const at::Tensor& gx,
                                                            const at::Tensor& w_hh,
                                                            const at::Tensor& h0,
                                                            const at::Tensor& c0,
                                                            bool training) {
  const Dims d = check_fwd(gx, w_hh, h0, c0);
  const auto acc = acc_type(gx.scalar_type());
  at::Tensor y = at::empty({d.T, d.B, d.H}, gx.options());
  at::Tensor c_all = at::empty({d.T + 1, d.B, d.H}, gx.options().dtype(acc));
  at::Tensor gates = training ? at::empty({d.T, d.B, 4 * d.H}, gx.options())
                              : at::empty({0}, gx.options());
  c_all[0].copy_(c0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gx.scalar_type(), "lstm_fwd_cpu",
                                  [&] {
                                    forward_loop<scalar_t>(gx, w_hh, h0, training, d, y,
                                                           c_all, gates);
                                  });
  return {y, c_all, gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_bwd_cpu(
    const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& dcT, const at::Tensor& w_hh,
    const at::Tensor& y, const at::Tensor& c_all, const at::Tensor& gates,
    const at::Tensor& h0) {
  const Dims d = check_bwd(dy, dhT, dcT, w_hh, y, c_all, gates, h0);
  const auto dt = y.scalar_type();
  const auto acc = c_all.scalar_type();
  at::Tensor dgx_acc = at::empty({d.T, d.B, 4 * d.H}, c_all.options());
  at::Tensor dh = dhT.to(acc, false, /*copy=*/true);
  at::Tensor dc = dcT.to(acc, false, /*copy=*/true);
  if (d.T * d.B > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dt, "lstm_bwd_cpu", [&] {
      backward_loop<scalar_t>(dy, w_hh, c_all, gates, d, dgx_acc, dh, dc);
    });
  }
  // dW_hh = sum_t dgates_t^T h_{t-1}: one GEMM over all steps, h_{-1} = h0.
  at::Tensor dw = at::zeros({4 * d.H, d.H}, c_all.options());
  if (d.T > 0) {
    const at::Tensor h_prev =
        at::cat({h0.unsqueeze(0), y.narrow(0, 0, d.T - 1)}).to(acc);  // [T, B, H]
    at::mm_out(dw, dgx_acc.view({d.T * d.B, 4 * d.H}).t(), h_prev.view({d.T * d.B, d.H}));
  }
  return {dgx_acc.to(dt), dw.to(dt), dh.to(dt), dc.to(dt)};
}

}  // namespace

TORCH_LIBRARY_IMPL(charrnn_fast, CPU, m) {
  m.impl("lstm_fwd", &lstm_fwd_cpu);
  m.impl("lstm_bwd", &lstm_bwd_cpu);
}

}  // namespace charrnn_fast
