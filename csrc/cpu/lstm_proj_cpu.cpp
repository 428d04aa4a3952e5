// CPU implementation of the LSTM recurrence with a projection (nn.LSTM's
// proj_size > 0): h_t = W_hr (o_t * tanh(c_t)), so the recurrent GEMM reads P
// columns instead of H.
//
// Algorithm: as the general path of lstm_cpu.cpp. Threads split the batch rows
// (rows never interact) and each runs the whole time loop on its block: per
// step the gate GEMM gx_t + h_{t-1} W_hh^T, the pointwise update
// (pointwise.h: fwd_row writes r_t = o * tanh(c) where the plain LSTM writes
// h), then the projection h_t = r_t W_hr^T. Backward mirrors it: dr_t = dh_t
// W_hr, the pointwise backward, dh_{t-1} = dgates_t W_hh; dW_hh and dW_hr are
// one GEMM each over all steps after the loop (the op contract's rule).
// Numerics: arithmetic, the cell state and r in the accumulation type; h is
// rounded to the input dtype once per step, as stored in y.
// Legend: T steps, B batch, H hidden units, P projection size, G = 4H.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

#include "pointwise.h"

namespace charrnn_fast {
namespace {

constexpr int64_t kMinRowsPerThread = 4;  // as lstm_cpu.cpp: below it one block, threaded GEMMs

at::ScalarType acc_of(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_same(const at::Tensor& t, const char* name, at::IntArrayRef shape,
                const at::Tensor& ref) {
  TORCH_CHECK(t.sizes() == shape, "charrnn_fast: ", name, " must have shape ", shape, ", got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "charrnn_fast: ", name,
              " must have dtype ", ref.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), "charrnn_fast: ", name, " must be on ", ref.device());
  TORCH_CHECK(t.is_contiguous(), "charrnn_fast: ", name, " must be contiguous");
}

struct ProjDims {
  int64_t T, B, H, P;
};

ProjDims check_proj(const at::Tensor& gx, const at::Tensor& w_hh, const at::Tensor& w_hr) {
  TORCH_CHECK(w_hr.dim() == 2, "charrnn_fast: w_hr must have shape [P, H], got ", w_hr.sizes());
  const int64_t P = w_hr.size(0), H = w_hr.size(1);
  TORCH_CHECK(gx.dim() == 3 && gx.size(2) == 4 * H,
              "charrnn_fast: gx must have shape [T, B, 4H] with 4H = ", 4 * H, ", got ",
              gx.sizes());
  TORCH_CHECK(at::isFloatingType(gx.scalar_type()),
              "charrnn_fast: gx must be float32, float64, bfloat16 or float16, got ",
              gx.scalar_type());
  check_same(gx, "gx", gx.sizes(), gx);
  check_same(w_hh, "w_hh", {4 * H, P}, gx);
  check_same(w_hr, "w_hr", {P, H}, gx);
  return {gx.size(0), gx.size(1), H, P};
}

template <typename F>
void for_each_row_block(int64_t B, const F& f) {
  at::parallel_for(0, B, kMinRowsPerThread, [&](int64_t b0, int64_t b1) {
    at::AutoDispatchBelowADInplaceOrView guard;  // worker threads start in grad mode
    f(b0, b1);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_proj_fwd_cpu(
    const at::Tensor& gx, const at::Tensor& w_hh, const at::Tensor& w_hr, const at::Tensor& h0,
    const at::Tensor& c0, bool training) {
  const ProjDims d = check_proj(gx, w_hh, w_hr);
  check_same(h0, "h0", {d.B, d.P}, gx);
  check_same(c0, "c0", {d.B, d.H}, gx);
  const auto acc = acc_of(gx.scalar_type());
  const auto opts = gx.options().dtype(acc);
  at::Tensor y = at::empty({d.T, d.B, d.P}, gx.options());
  at::Tensor c_all = at::empty({d.T + 1, d.B, d.H}, opts);
  at::Tensor gates = training ? at::empty({d.T, d.B, 4 * d.H}, opts) : at::empty({0}, opts);
  at::Tensor r_all = training ? at::empty({d.T, d.B, d.H}, opts) : at::empty({0}, opts);
  c_all[0].copy_(c0);
  const at::Tensor w_t = w_hh.to(acc).t();  // [P, 4H]
  const at::Tensor r_t = w_hr.to(acc).t();  // [H, P]
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gx.scalar_type(), "lstm_proj_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    for_each_row_block(d.B, [&](int64_t b0, int64_t b1) {
      const int64_t nb = b1 - b0, H = d.H, G = 4 * d.H;
      at::Tensor h = h0.narrow(0, b0, nb).to(acc);  // [nb, P]
      at::Tensor r = at::empty({nb, H}, opts);
      at::Tensor act = at::empty({nb, G}, opts);
      acc_t* c_base = c_all.data_ptr<acc_t>();
      for (int64_t t = 0; t < d.T; ++t) {
        const at::Tensor pre = at::addmm(gx[t].narrow(0, b0, nb).to(acc), h, w_t);  // [nb, 4H]
        const acc_t* pre_p = pre.const_data_ptr<acc_t>();
        acc_t* r_p = r.data_ptr<acc_t>();
        acc_t* act_p = training ? act.data_ptr<acc_t>() : nullptr;
        const acc_t* c_prev = c_base + (t * d.B + b0) * H;
        acc_t* c_next = c_base + ((t + 1) * d.B + b0) * H;
        for (int64_t b = 0; b < nb; ++b) {
          cpu::fwd_row<acc_t>(pre_p + b * G, c_prev + b * H, c_next + b * H, r_p + b * H,
                              act_p == nullptr ? nullptr : act_p + b * G, H, 0, H);
        }
        at::Tensor y_t = y[t].narrow(0, b0, nb);
        y_t.copy_(at::mm(r, r_t));
        h = y_t.to(acc);  // the rounded h, as backward will see it
        if (training) {
          gates[t].narrow(0, b0, nb).copy_(act);
          r_all[t].narrow(0, b0, nb).copy_(r);
        }
      }
    });
  });
  return {y, c_all, gates, r_all};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_proj_bwd_cpu(
    const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& dcT, const at::Tensor& w_hh,
    const at::Tensor& w_hr, const at::Tensor& y, const at::Tensor& c_all,
    const at::Tensor& gates, const at::Tensor& r_all, const at::Tensor& h0) {
  const int64_t T = y.size(0), B = y.size(1), P = w_hr.size(0), H = w_hr.size(1), G = 4 * H;
  const auto acc = acc_of(y.scalar_type());
  check_same(y, "y", {T, B, P}, y);
  check_same(dy, "dy", {T, B, P}, y);
  check_same(dhT, "dhT", {B, P}, y);
  check_same(dcT, "dcT", {B, H}, y);
  check_same(h0, "h0", {B, P}, y);
  check_same(w_hh, "w_hh", {G, P}, y);
  check_same(w_hr, "w_hr", {P, H}, y);
  TORCH_CHECK(T * B == 0 || gates.numel() > 0,
              "charrnn_fast: gates is empty: lstm_proj_fwd was called with training=False, "
              "so there is nothing to differentiate");
  const auto opts = c_all.options();
  TORCH_CHECK(c_all.scalar_type() == acc && c_all.sizes() == at::IntArrayRef({T + 1, B, H}),
              "charrnn_fast: c_all must be [T+1, B, H] in ", acc);
  at::Tensor dgx = at::empty({T, B, G}, opts);
  at::Tensor dh_all = at::empty({T, B, P}, opts);  // dL/dh_t, for dW_hr
  at::Tensor dh = dhT.to(acc, false, /*copy=*/true);
  at::Tensor dc = dcT.to(acc, false, /*copy=*/true);
  const at::Tensor w = w_hh.to(acc);  // [4H, P]
  const at::Tensor wr = w_hr.to(acc);  // [P, H]
  if (T * B > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, y.scalar_type(), "lstm_proj_bwd", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      for_each_row_block(B, [&](int64_t b0, int64_t b1) {
        const int64_t nb = b1 - b0;
        const at::Tensor zeros = at::zeros({nb, H}, opts);
        at::Tensor dh_rows = dh.narrow(0, b0, nb).clone();  // [nb, P]
        acc_t* dc_p = dc.data_ptr<acc_t>() + b0 * H;
        const acc_t* c_base = c_all.const_data_ptr<acc_t>();
        for (int64_t t = T - 1; t >= 0; --t) {
          at::Tensor dh_t = dh_all[t].narrow(0, b0, nb);
          at::add_out(dh_t, dh_rows, dy[t].narrow(0, b0, nb).to(acc));
          const at::Tensor dr = at::mm(dh_t, wr).contiguous();  // [nb, H]
          const at::Tensor act = gates[t].narrow(0, b0, nb);    // [nb, 4H]
          at::Tensor dg = dgx[t].narrow(0, b0, nb);
          const acc_t* act_p = act.const_data_ptr<acc_t>();
          const acc_t* dr_p = dr.const_data_ptr<acc_t>();
          const acc_t* c_prev = c_base + (t * B + b0) * H;
          const acc_t* c_cur = c_base + ((t + 1) * B + b0) * H;
          acc_t* dg_p = dg.data_ptr<acc_t>();
          for (int64_t b = 0; b < nb; ++b) {
            cpu::bwd_row<acc_t>(act_p + b * G, c_prev + b * H, c_cur + b * H, dr_p + b * H,
                                zeros.const_data_ptr<acc_t>() + b * H, dc_p + b * H,
                                dg_p + b * G, H, 0, H);
          }
          dh_rows = at::mm(dg, w);  // dh_{t-1} = dgates_t W_hh, [nb, P]
        }
        dh.narrow(0, b0, nb).copy_(dh_rows);
      });
    });
  }
  // One GEMM each over all steps: dW_hh = sum_t dgates_t^T h_{t-1} (h_{-1} = h0),
  // dW_hr = sum_t dh_t^T r_t.
  at::Tensor dw_hh = at::zeros({G, P}, opts);
  at::Tensor dw_hr = at::zeros({P, H}, opts);
  if (T * B > 0) {
    const at::Tensor h_prev = at::cat({h0.unsqueeze(0), y.narrow(0, 0, T - 1)}).to(acc);
    dw_hh = at::mm(dgx.view({T * B, G}).t(), h_prev.view({T * B, P}));
    dw_hr = at::mm(dh_all.view({T * B, P}).t(), r_all.view({T * B, H}));
  }
  const auto dt = y.scalar_type();
  return {dgx.to(dt), dw_hh.to(dt), dw_hr.to(dt), dh.to(dt), dc.to(dt)};
}

}  // namespace

TORCH_LIBRARY_IMPL(charrnn_fast, CPU, m) {
  m.impl("lstm_proj_fwd", &lstm_proj_fwd_cpu);
  m.impl("lstm_proj_bwd", &lstm_proj_bwd_cpu);
}

}  // namespace charrnn_fast
