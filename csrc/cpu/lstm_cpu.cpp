// CPU implementation of the LSTM recurrence (forward and backward).
//
// Algorithm: the whole time loop runs here. fp32 on x86-64 with AVX2 or
// AVX-512 takes the fused path (fused.h): W_hh is packed once per call into
// gate panels, and one register-blocked kernel per step computes the gate
// pre-activations of a tile of rows and units and applies the LSTM update on
// them in registers; backward runs the pointwise pass, then a register-blocked
// dgates W_hh. Other dtypes and CPUs take the general path below. Threads split the batch rows (rows
// never interact) and each runs all T steps on its block: per step one GEMM
// gx_t + h_{t-1} W_hh^T (cpu_gemm.h: oneDNN with W packed once, or addmm),
// then one fused, vectorised pointwise pass (cpu_pointwise.h) that applies the
// nonlinearities and updates the cell. Backward mirrors it in reverse: one
// fused pointwise pass producing the pre-activation gradients, then one GEMM
// dgates W_hh for dh_{t-1}; dW_hh is a single (threaded) GEMM after the loop.
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

#include <omp.h>

#include <algorithm>
#include <tuple>
#include <type_traits>

#include "checks.h"
#include "fused.h"
#include "gemm.h"
#include "pointwise.h"

namespace charrnn_fast {
namespace {

// Batch rows are independent through the whole recurrence, so each thread
// takes a block of rows and runs the entire time loop on it: no
// synchronisation between steps, and every per-step GEMM runs single-threaded
// on its block (a [50,128]x[128,512] GEMM does not get faster with a second
// MKL thread, two row blocks do). Below this many rows per block the GEMMs
// become matrix-vector products and one block with a threaded GEMM is better.
constexpr int64_t kMinRowsPerThread = 4;

template <typename F>
void for_each_row_block(int64_t B, const F& f) {
  at::parallel_for(0, B, kMinRowsPerThread, [&](int64_t b0, int64_t b1) {
    // Worker threads start with grad mode on: without this guard the ATen
    // calls below would try to record autograd history for w_hh (a
    // Parameter) and refuse the out= GEMMs.
    at::AutoDispatchBelowADInplaceOrView guard;
    f(b0, b1);
  });
}

// In the accumulation type: the tensor itself when the dtype already is it.
inline at::Tensor as_acc(const at::Tensor& t, at::ScalarType acc) { return t.to(acc); }

// Rows [b0, b1) of the forward recurrence, all T steps. w: [4H, H] in acc type.
template <typename scalar_t>
void forward_rows(const at::Tensor& gx, const at::Tensor& w, const at::Tensor& h0,
                  bool training, const Dims& d, at::Tensor& y, at::Tensor& c_all,
                  at::Tensor& gates, int64_t b0, int64_t b1) {
  using acc_t = at::opmath_type<scalar_t>;
  // fp32 / fp64: the kernels write straight into y and gates. bf16 / fp16:
  // they write fp32 scratch rows, rounded into y and gates after each step.
  constexpr bool direct = std::is_same_v<scalar_t, acc_t>;
  const auto acc = c_all.scalar_type();
  const int64_t nb = b1 - b0, H = d.H, G = 4 * d.H;
  const auto opts = c_all.options();
  const cpu::PackedGemm gemm(w, nb);
  at::Tensor h_in = as_acc(h0.narrow(0, b0, nb), acc);  // [nb, H]
  at::Tensor h_out = direct ? at::Tensor() : at::empty({nb, H}, opts);
  at::Tensor act = (direct || !training) ? at::Tensor() : at::empty({nb, G}, opts);
  acc_t* c_base = c_all.mutable_data_ptr<acc_t>();

  for (int64_t t = 0; t < d.T; ++t) {
    // [nb, 4H]: gx_t + h_{t-1} W^T
    const at::Tensor pre = gemm(h_in, as_acc(gx[t].narrow(0, b0, nb), acc)).contiguous();
    const acc_t* pre_p = pre.const_data_ptr<acc_t>();
    at::Tensor y_t = y[t].narrow(0, b0, nb);
    acc_t* h_p = direct ? reinterpret_cast<acc_t*>(y_t.data_ptr()) : h_out.data_ptr<acc_t>();
    acc_t* act_p = nullptr;
    if (training) {
      act_p = direct ? reinterpret_cast<acc_t*>(gates[t][b0].data_ptr()) : act.data_ptr<acc_t>();
    }
    const acc_t* c_prev = c_base + (t * d.B + b0) * H;
    acc_t* c_next = c_base + ((t + 1) * d.B + b0) * H;
    for (int64_t b = 0; b < nb; ++b) {
      cpu::fwd_row<acc_t>(pre_p + b * G, c_prev + b * H, c_next + b * H, h_p + b * H,
                          act_p == nullptr ? nullptr : act_p + b * G, H, 0, H);
    }
    if constexpr (direct) {
      h_in = y_t;
    } else {
      y_t.copy_(h_out);
      if (training) gates[t].narrow(0, b0, nb).copy_(act);
      h_in = y_t.to(acc);  // the rounded h, as backward will see it
    }
  }
}

// Rows [b0, b1) of the backward recurrence, all T steps in reverse. dh and dc
// enter as the gradients at step T-1 and leave as dh0, dc0. w_t: [H, 4H], acc.
template <typename scalar_t>
void backward_rows(const at::Tensor& dy, const at::Tensor& w_t, const at::Tensor& c_all,
                   const at::Tensor& gates, const Dims& d, at::Tensor& dgx_acc,
                   at::Tensor& dh, at::Tensor& dc, int64_t b0, int64_t b1) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto acc = c_all.scalar_type();
  const int64_t nb = b1 - b0, H = d.H, G = 4 * d.H;
  const cpu::PackedGemm gemm(w_t, nb);
  const at::Tensor zeros = at::zeros({nb, H}, c_all.options());
  at::Tensor dh_rows = dh.narrow(0, b0, nb).clone();  // [nb, H], gradient wrt h_t
  acc_t* dc_p = dc.data_ptr<acc_t>() + b0 * H;
  const acc_t* c_base = c_all.const_data_ptr<acc_t>();

  for (int64_t t = d.T - 1; t >= 0; --t) {
    const at::Tensor act = as_acc(gates[t].narrow(0, b0, nb), acc);  // [nb, 4H]
    const at::Tensor dy_t = as_acc(dy[t].narrow(0, b0, nb), acc);    // [nb, H]
    at::Tensor dg = dgx_acc[t].narrow(0, b0, nb);                    // [nb, 4H]
    const acc_t* act_p = act.const_data_ptr<acc_t>();
    const acc_t* dy_p = dy_t.const_data_ptr<acc_t>();
    acc_t* dh_p = dh_rows.data_ptr<acc_t>();
    const acc_t* c_prev = c_base + (t * d.B + b0) * H;
    const acc_t* c_cur = c_base + ((t + 1) * d.B + b0) * H;
    acc_t* dg_p = dg.data_ptr<acc_t>();
    for (int64_t b = 0; b < nb; ++b) {
      cpu::bwd_row<acc_t>(act_p + b * G, c_prev + b * H, c_cur + b * H, dy_p + b * H,
                          dh_p + b * H, dc_p + b * H, dg_p + b * G, H, 0, H);
    }
    dh_rows = gemm(dg, zeros).contiguous();  // dh_{t-1} = dgates_t W_hh
  }
  dh.narrow(0, b0, nb).copy_(dh_rows);
}

// The fused fp32 forward (fused.h): rows [b0, b1) and unit blocks [jb0, jb1)
// (-1: all), all T steps. wp: W_hh in gate panels. sync: the threads of an
// OpenMP team share these rows and split the units, so they meet after every
// step (the next step's GEMM reads all of h_t).
void forward_fused(const cpu::FusedKernels& k, const at::Tensor& wp, const at::Tensor& gx,
                   const at::Tensor& h0, bool training, const Dims& d, at::Tensor& y,
                   at::Tensor& c_all, at::Tensor& gates, int64_t b0, int64_t b1, int64_t jb0,
                   int64_t jb1, bool sync) {
  const int64_t B = d.B, H = d.H, G = 4 * d.H;
  const float* gx_p = gx.const_data_ptr<float>();
  float* y_p = y.data_ptr<float>();
  float* c_p = c_all.data_ptr<float>();
  float* g_p = training ? gates.data_ptr<float>() : nullptr;
  for (int64_t t = 0; t < d.T; ++t) {
    const int64_t row = t * B + b0;  // first row of this block at step t
    const float* h_prev = t == 0 ? h0.const_data_ptr<float>() + b0 * H : y_p + (row - B) * H;
    k.lstm_step({b1 - b0, H, H, h_prev, H, wp.const_data_ptr<float>(), gx_p + row * G, G,
                 c_p + row * H, c_p + (row + B) * H, H, y_p + row * H, H,
                 g_p == nullptr ? nullptr : g_p + row * G, G, jb0, jb1});
    if (sync) {
#pragma omp barrier
    }
  }
}

// The fused fp32 backward: rows [b0, b1), units [j0, j1), all T steps in
// reverse. dh [B, H] enters as dhT and leaves as dh0 (dc likewise). wp: W_hh
// in column panels of its transpose ([H, 4H]). sync: as for forward_fused;
// one meeting per step, between the pointwise pass (which writes this step's
// dgates for our units) and dh_{t-1} = dgates W_hh (which reads all of them).
void backward_fused(const cpu::FusedKernels& k, const at::Tensor& wp, const at::Tensor& dy,
                    const at::Tensor& c_all, const at::Tensor& gates, const Dims& d,
                    at::Tensor& dgx, at::Tensor& dh, at::Tensor& dc, int64_t b0, int64_t b1,
                    int64_t j0, int64_t j1, bool sync) {
  const int64_t B = d.B, H = d.H, G = 4 * d.H, nb = b1 - b0, vw = k.vw;
  float* dh_p = dh.data_ptr<float>() + b0 * H;
  float* dc_p = dc.data_ptr<float>() + b0 * H;
  const float* act_p = gates.const_data_ptr<float>();
  const float* dy_p = dy.const_data_ptr<float>();
  const float* c_p = c_all.const_data_ptr<float>();
  float* dg_p = dgx.data_ptr<float>();
  for (int64_t t = d.T - 1; t >= 0; --t) {
    const int64_t row = t * B + b0;
    for (int64_t b = 0; b < nb; ++b) {
      cpu::bwd_row<float>(act_p + (row + b) * G, c_p + (row + b) * H, c_p + (row + B + b) * H,
                          dy_p + (row + b) * H, dh_p + b * H, dc_p + b * H,
                          dg_p + (row + b) * G, H, j0, j1);
    }
    if (sync) {
#pragma omp barrier
    }
    // dh_{t-1}[:, j0:j1] = dgates_t W_hh[:, j0:j1]
    k.gemm({nb, H, G, dg_p + row * G, G, wp.const_data_ptr<float>(), nullptr, dh_p, H, j0 / vw,
            (j1 + vw - 1) / vw});
  }
}

// Few rows for many threads: the threads share all rows and split the units
// (blocks of VW), meeting once per step; otherwise each thread owns rows.
int split_units(const cpu::FusedKernels& k, const Dims& d) {
  const int nt = at::get_num_threads();
  const int64_t blocks = (d.H + k.vw - 1) / k.vw;
  return nt > 1 && d.B < 6 * nt && blocks >= 2 * nt ? nt : 0;
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
  const cpu::FusedKernels* k = cpu::fused_kernels();
  if (k != nullptr && gx.scalar_type() == at::kFloat && d.T * d.B > 0) {
    const at::Tensor wp = cpu::pack_gates(*k, w_hh, at::Tensor());
    if (const int nt = split_units(*k, d)) {
      const int64_t blocks = (d.H + k->vw - 1) / k->vw;
#pragma omp parallel num_threads(nt)
      {
        const int64_t i = omp_get_thread_num(), n = omp_get_num_threads();
        forward_fused(*k, wp, gx, h0, training, d, y, c_all, gates, 0, d.B, blocks * i / n,
                      blocks * (i + 1) / n, n > 1);
      }
    } else {
      for_each_row_block(d.B, [&](int64_t b0, int64_t b1) {
        forward_fused(*k, wp, gx, h0, training, d, y, c_all, gates, b0, b1, 0, -1, false);
      });
    }
    return {y, c_all, gates};
  }
  const at::Tensor w = w_hh.to(acc).contiguous();  // [4H, H]
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gx.scalar_type(), "lstm_fwd_cpu", [&] {
    for_each_row_block(d.B, [&](int64_t b0, int64_t b1) {
      forward_rows<scalar_t>(gx, w, h0, training, d, y, c_all, gates, b0, b1);
    });
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
  const cpu::FusedKernels* k = cpu::fused_kernels();
  if (k != nullptr && dt == at::kFloat && d.T * d.B > 0) {
    const at::Tensor wp = cpu::pack_columns(*k, w_hh, d.H, 4 * d.H, 1, d.H);
    if (const int nt = split_units(*k, d)) {
      const int64_t blocks = (d.H + k->vw - 1) / k->vw;
#pragma omp parallel num_threads(nt)
      {
        const int64_t i = omp_get_thread_num(), n = omp_get_num_threads();
        const int64_t j0 = blocks * i / n * k->vw, j1 = std::min(blocks * (i + 1) / n * k->vw, d.H);
        backward_fused(*k, wp, dy, c_all, gates, d, dgx_acc, dh, dc, 0, d.B, j0, j1, n > 1);
      }
    } else {
      for_each_row_block(d.B, [&](int64_t b0, int64_t b1) {
        backward_fused(*k, wp, dy, c_all, gates, d, dgx_acc, dh, dc, b0, b1, 0, d.H, false);
      });
    }
  } else if (d.T * d.B > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dt, "lstm_bwd_cpu", [&] {
      const at::Tensor w_t = w_hh.to(acc).t().contiguous();  // [H, 4H]
      for_each_row_block(d.B, [&](int64_t b0, int64_t b1) {
        backward_rows<scalar_t>(dy, w_t, c_all, gates, d, dgx_acc, dh, dc, b0, b1);
      });
    });
  }
  // dW_hh = sum_t dgates_t^T h_{t-1}, h_{-1} = h0: steps 1.. in one GEMM that
  // reads y in place, then step 0's term (no [T, B, H] copy of h0 and y for one
  // GEMM). fp32: cpu::mm_tn, which picks gemm_tn or MKL's
  // sgemm by ISA (fused.cpp).
  at::Tensor dw;  // [4H, H]
  if (d.T > 0) {
    const at::Tensor dg2 = dgx_acc.view({d.T * d.B, 4 * d.H});
    const at::Tensor dg_rest = dg2.narrow(0, d.B, (d.T - 1) * d.B);  // steps 1..T-1
    const at::Tensor h_rest = y.narrow(0, 0, d.T - 1).reshape({(d.T - 1) * d.B, d.H}).to(acc);
    dw = k != nullptr && acc == at::kFloat ? cpu::mm_tn(*k, dg_rest, h_rest)
                                           : at::mm(dg_rest.t(), h_rest);
    dw.addmm_(dg2.narrow(0, 0, d.B).t(), h0.to(acc));
  } else {
    dw = at::zeros({4 * d.H, d.H}, c_all.options());
  }
  return {dgx_acc.to(dt), dw.to(dt), dh.to(dt), dc.to(dt)};
}

}  // namespace

TORCH_LIBRARY_IMPL(charrnn_fast, CPU, m) {
  m.impl("lstm_fwd", &lstm_fwd_cpu);
  m.impl("lstm_bwd", &lstm_bwd_cpu);
}

}  // namespace charrnn_fast
