// CPU implementation of the LSTM recurrence (forward and backward).
//
// Algorithm: the whole time loop runs here. Per step, one GEMM
// gx_t + h_{t-1} W_hh^T into a [B,4H] buffer (addmm: the add rides along),
// then one fused, vectorised pointwise pass (cpu_pointwise.h) that applies the
// nonlinearities and updates the cell, parallelised over the B*H hidden units
// with at::parallel_for. Backward mirrors it in reverse: one
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

#include <algorithm>
#include <tuple>
#include <type_traits>

#include "checks.h"
#include "cpu_pointwise.h"

namespace charrnn_fast {
namespace {

// About this many hidden units per thread before splitting is worth it.
constexpr int64_t kGrain = 1024;

// Runs f(b, j0, j1) over the B*H hidden units in parallel, in segments that
// stay inside one batch row so the row kernels see contiguous units.
template <typename F>
void for_each_row_segment(int64_t B, int64_t H, const F& f) {
  at::parallel_for(0, B * H, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end;) {
      const int64_t b = k / H, j0 = k - b * H, j1 = std::min(H, j0 + (end - k));
      f(b, j0, j1);
      k += j1 - j0;
    }
  });
}

// In the accumulation type: a view when the dtype already is it, else a copy.
inline at::Tensor as_acc(const at::Tensor& t, at::ScalarType acc) { return t.to(acc); }

template <typename scalar_t>
void forward_loop(const at::Tensor& gx, const at::Tensor& w_hh, const at::Tensor& h0,
                  bool training, const Dims& d, at::Tensor& y, at::Tensor& c_all,
                  at::Tensor& gates) {
  using acc_t = at::opmath_type<scalar_t>;
  // fp32 / fp64: the kernels write straight into y and gates. bf16 / fp16:
  // they write fp32 scratch rows, rounded into y and gates after each step.
  constexpr bool direct = std::is_same_v<scalar_t, acc_t>;
  const auto acc = c_all.scalar_type();
  const int64_t B = d.B, H = d.H, G = 4 * d.H;
  const at::Tensor w_t = as_acc(w_hh, acc).t();  // [H, 4H]
  at::Tensor pre = at::empty({B, G}, c_all.options());  // [B, 4H]: gx_t + h W^T
  at::Tensor h_in = as_acc(h0, acc);                    // [B, H], h_{t-1}
  at::Tensor h_out = direct ? at::Tensor() : at::empty({B, H}, c_all.options());
  at::Tensor act = (direct || !training) ? at::Tensor() : at::empty({B, G}, c_all.options());

  for (int64_t t = 0; t < d.T; ++t) {
    at::addmm_out(pre, as_acc(gx[t], acc), h_in, w_t);
    at::Tensor h_t = direct ? y[t] : h_out;
    at::Tensor act_t = !training ? at::Tensor() : (direct ? gates[t] : act);
    const acc_t* pre_p = pre.const_data_ptr<acc_t>();
    const acc_t* c_prev = c_all[t].const_data_ptr<acc_t>();
    acc_t* c_next = c_all[t + 1].mutable_data_ptr<acc_t>();
    acc_t* h_p = h_t.mutable_data_ptr<acc_t>();
    acc_t* act_p = training ? act_t.mutable_data_ptr<acc_t>() : nullptr;
    for_each_row_segment(B, H, [&](int64_t b, int64_t j0, int64_t j1) {
      cpu::fwd_row<acc_t>(pre_p + b * G, c_prev + b * H, c_next + b * H, h_p + b * H,
                          act_p == nullptr ? nullptr : act_p + b * G, H, j0, j1);
    });
    if constexpr (direct) {
      h_in = y[t];
    } else {
      y[t].copy_(h_out);
      if (training) gates[t].copy_(act);
      h_in = y[t].to(acc);  // the rounded h, as backward will see it
    }
  }
}

template <typename scalar_t>
void backward_loop(const at::Tensor& dy, const at::Tensor& w_hh, const at::Tensor& c_all,
                   const at::Tensor& gates, const Dims& d, at::Tensor& dgx_acc,
                   at::Tensor& dh, at::Tensor& dc) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto acc = c_all.scalar_type();
  const int64_t B = d.B, H = d.H, G = 4 * d.H;
  const at::Tensor w = as_acc(w_hh, acc);  // [4H, H]
  acc_t* dh_p = dh.mutable_data_ptr<acc_t>();
  acc_t* dc_p = dc.mutable_data_ptr<acc_t>();

  for (int64_t t = d.T - 1; t >= 0; --t) {
    const at::Tensor act = as_acc(gates[t], acc);  // [B, 4H]
    const at::Tensor dy_t = as_acc(dy[t], acc);    // [B, H]
    const acc_t* act_p = act.const_data_ptr<acc_t>();
    const acc_t* dy_p = dy_t.const_data_ptr<acc_t>();
    const acc_t* c_prev = c_all[t].const_data_ptr<acc_t>();
    const acc_t* c_cur = c_all[t + 1].const_data_ptr<acc_t>();
    acc_t* dg_p = dgx_acc[t].mutable_data_ptr<acc_t>();
    for_each_row_segment(B, H, [&](int64_t b, int64_t j0, int64_t j1) {
      cpu::bwd_row<acc_t>(act_p + b * G, c_prev + b * H, c_cur + b * H, dy_p + b * H,
                          dh_p + b * H, dc_p + b * H, dg_p + b * G, H, j0, j1);
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
