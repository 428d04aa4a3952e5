// Argument validation shared by every backend of the op contract.
//
// Each check names the argument and what was expected, so a bad call from
// Python reads as a sentence instead of a crash deep inside a kernel.
// Dimension legend: T time steps, B batch, H hidden units, G = 4H gates.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace charrnn_fast {

struct Dims {
  int64_t T, B, H;
};

inline void check_arg(const at::Tensor& t, const char* name, at::IntArrayRef shape,
                      at::ScalarType dtype, const at::Device& device) {
  TORCH_CHECK(t.sizes() == shape, "charrnn_fast: ", name, " must have shape ", shape,
              ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, "charrnn_fast: ", name, " must have dtype ", dtype,
              " (the dtype of gx), got ", t.scalar_type());
  TORCH_CHECK(t.device() == device, "charrnn_fast: ", name, " must be on ", device,
              " (the device of gx), got ", t.device());
  TORCH_CHECK(t.is_contiguous(), "charrnn_fast: ", name, " must be contiguous");
}

// The cell-state history is kept in the accumulation type: fp32 for
// fp32/bf16/fp16 inputs, fp64 for fp64 inputs (so the fp64 chain of trust
// stays exact).
inline at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// gx[T,B,4H], w_hh[4H,H], h0[B,H], c0[B,H]
inline Dims check_fwd(const at::Tensor& gx, const at::Tensor& w_hh, const at::Tensor& h0,
                      const at::Tensor& c0) {
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == 4 * w_hh.size(1),
              "charrnn_fast: w_hh must have shape [4H, H], got ", w_hh.sizes());
  const int64_t H = w_hh.size(1);
  TORCH_CHECK(gx.dim() == 3 && gx.size(2) == 4 * H,
              "charrnn_fast: gx must have shape [T, B, 4H] with 4H = ", 4 * H, ", got ",
              gx.sizes());
  const auto dt = gx.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16 || dt == at::kHalf,
              "charrnn_fast: gx must be float32, float64, bfloat16 or float16, got ", dt);
  const int64_t T = gx.size(0), B = gx.size(1);
  TORCH_CHECK(gx.is_contiguous(), "charrnn_fast: gx must be contiguous");
  check_arg(w_hh, "w_hh", {4 * H, H}, dt, gx.device());
  check_arg(h0, "h0", {B, H}, dt, gx.device());
  check_arg(c0, "c0", {B, H}, dt, gx.device());
  return {T, B, H};
}

// dy[T,B,H], dhT[B,H], dcT[B,H], w_hh[4H,H], y[T,B,H], c_all[T+1,B,H] (acc),
// gates[T,B,4H], h0[B,H]
inline Dims check_bwd(const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& dcT,
                      const at::Tensor& w_hh, const at::Tensor& y, const at::Tensor& c_all,
                      const at::Tensor& gates, const at::Tensor& h0) {
  TORCH_CHECK(y.dim() == 3, "charrnn_fast: y must have shape [T, B, H], got ", y.sizes());
  const int64_t T = y.size(0), B = y.size(1), H = y.size(2);
  const auto dt = y.scalar_type();
  const auto dev = y.device();
  TORCH_CHECK(y.is_contiguous(), "charrnn_fast: y must be contiguous");
  check_arg(dy, "dy", {T, B, H}, dt, dev);
  check_arg(dhT, "dhT", {B, H}, dt, dev);
  check_arg(dcT, "dcT", {B, H}, dt, dev);
  check_arg(w_hh, "w_hh", {4 * H, H}, dt, dev);
  check_arg(c_all, "c_all", {T + 1, B, H}, acc_type(dt), dev);
  TORCH_CHECK(gates.numel() > 0 || T * B == 0,
              "charrnn_fast: gates is empty: lstm_fwd was called with training=False, "
              "so there is nothing to differentiate");
  if (T * B > 0) check_arg(gates, "gates", {T, B, 4 * H}, dt, dev);
  check_arg(h0, "h0", {B, H}, dt, dev);
  return {T, B, H};
}

}  // namespace charrnn_fast
