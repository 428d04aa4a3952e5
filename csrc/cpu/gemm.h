// The GEMMs of the CPU loop: out[rows,N] = other[rows,N] + a[rows,K] W[N,K]^T,
// with W packed once and reused (at every step, for the recurrent GEMMs).
//
// Why oneDNN: nn.LSTM on CPU runs oneDNN's RNN primitive, and on some CPUs
// (AMD EPYC) oneDNN's fp32 GEMM is about twice as fast as the MKL sgemm
// behind at::addmm (docs/performance.md, "oneDNN for the GEMMs inside the
// CPU loop").
// So for fp32 we pack W once with mkldnn::_reorder_linear_weight and call
// mkldnn::_linear_pointwise.binary(..., "add") per step, the pair PyTorch's
// own inductor uses for CPU linear+add. Those are internal ops: when they are
// missing or their signature changed, we fall back to at::addmm.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <string_view>

namespace charrnn_fast::cpu {

class PackedGemm {
 public:
  using Reorder = at::Tensor(const at::Tensor&, std::optional<int64_t>);
  using LinearAdd = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                               const std::optional<at::Tensor>&, std::string_view);

  // w: [N, K]; rows: the number of rows of every `a` (a layout hint for oneDNN).
  PackedGemm(const at::Tensor& w, int64_t rows) : w_(w) {
    if (w.scalar_type() != at::kFloat || rows == 0) return;
    const auto& ops = handles();
    if (!ops.has_value()) return;
    packed_ = ops->reorder.call(w, rows);
    linear_add_ = ops->linear_add;
  }

  // a: [rows, K], other: [rows, N] -> [rows, N], a new tensor.
  at::Tensor operator()(const at::Tensor& a, const at::Tensor& other) const {
    if (linear_add_.has_value()) return linear_add_->call(a, other, packed_, std::nullopt, "add");
    return at::addmm(other, a, w_.t());
  }

 private:
  struct Handles {
    c10::TypedOperatorHandle<Reorder> reorder;
    c10::TypedOperatorHandle<LinearAdd> linear_add;
  };

  static const std::optional<Handles>& handles() {
    static const std::optional<Handles> h = []() -> std::optional<Handles> {
      try {
        auto& d = c10::Dispatcher::singleton();
        auto reorder = d.findOp({"mkldnn::_reorder_linear_weight", ""});
        auto linear = d.findOp({"mkldnn::_linear_pointwise", "binary"});
        if (!reorder || !linear || !reorder->hasKernelForDispatchKey(c10::DispatchKey::CPU)) {
          return std::nullopt;
        }
        return Handles{reorder->typed<Reorder>(), linear->typed<LinearAdd>()};
      } catch (const c10::Error&) {  // signature changed in this torch: use addmm
        return std::nullopt;
      }
    }();
    return h;
  }

  at::Tensor w_;
  at::Tensor packed_;
  std::optional<c10::TypedOperatorHandle<LinearAdd>> linear_add_;
};

}  // namespace charrnn_fast::cpu
