// Operator schemas of the LSTM recurrence and the Python module `charrnn_fast._C`.
//
// The op covers the recurrence only; the input projection gx = x W_ih^T + b is
// one large GEMM left to PyTorch (see docs/DESIGN.md, "The op contract").
// Legend: T time steps, B batch, H hidden units; tensors are time-major and
// contiguous. Gate order i, f, g, o, as in torch.nn.LSTM.
//
//   lstm_fwd(gx[T,B,4H], w_hh[4H,H], h0[B,H], c0[B,H], training)
//       -> y[T,B,H], c_all[T+1,B,H] (fp32, fp64 for fp64 inputs),
//          gates[T,B,4H] (activated i,f,g,o; shape [0] when not training)
//   lstm_bwd(dy[T,B,H], dhT[B,H], dcT[B,H], w_hh, y, c_all, gates, h0[B,H])
//       -> dgx[T,B,4H], dw_hh[4H,H], dh0[B,H], dc0[B,H]
//   lstm_proj_fwd(gx[T,B,4H], w_hh[4H,P], w_hr[P,H], h0[B,P], c0[B,H], training)
//       -> y[T,B,P], c_all[T+1,B,H], gates[T,B,4H], r[T,B,H] (o * tanh(c) before the
//          projection); c_all, gates and r in the accumulation dtype, gates and r [0]
//          when not training (CPU only: nn.LSTM's proj_size > 0)
//   lstm_proj_bwd(dy[T,B,P], dhT[B,P], dcT[B,H], w_hh, w_hr, y, c_all, gates, r, h0[B,P])
//       -> dgx[T,B,4H], dw_hh[4H,P], dw_hr[P,H], dh0[B,P], dc0[B,H]
//   mm_tn(a[K,M], b[K,N]) -> a^T b [M,N]   (CPU only)
//   mm_nt(a[M,K], w[N,K], bias[N] or None) -> a w^T + bias [M,N]   (CPU only)
//   lstm_lm_generate(tokens[B] int64, h0[L,B,H], c0[L,B,H], embed[V,E] or None (one-hot),
//       weights (nn.LSTM's flat list: w_ih[4H,I], w_hh[4H,H][, b_ih[4H], b_hh[4H]] per layer),
//       head_w[V,H], head_b[V] or None, steps, temperature, top_k, top_p, argmax, seed, offset)
//       -> ids[B,steps] int64, h[L,B,H], c[L,B,H]     (CPU, fp32; sampler in cpu/sampler.h)
//     Feeds `tokens`, samples the next token, feeds it, ... `steps` times; the random
//     stream of row b at output position offset+s depends on (seed, b, offset+s) only.
//   rnn_lm_generate(mode "gru" | "rnn_tanh" | "rnn_relu", tokens, h0[L,B,H], embed,
//       weights (nn.GRU's / nn.RNN's flat list: w_ih[G*H,I], w_hh[G*H,H][, b_ih, b_hh]
//       per layer, G = 3 for gru, 1 otherwise), head_w, head_b, steps, sampler args)
//       -> ids[B,steps] int64, h[L,B,H]      (CPU, fp32; the same sampler and streams)
#include <Python.h>
#include <torch/library.h>

#include "cpu/fused.h"

#ifndef CHARRNN_FAST_WITH_CUDA
#define CHARRNN_FAST_WITH_CUDA 0
#endif

TORCH_LIBRARY(charrnn_fast, m) {
  m.def(
      "lstm_fwd(Tensor gx, Tensor w_hh, Tensor h0, Tensor c0, bool training)"
      " -> (Tensor, Tensor, Tensor)");
  m.def(
      "lstm_bwd(Tensor dy, Tensor dhT, Tensor dcT, Tensor w_hh, Tensor y, Tensor c_all,"
      " Tensor gates, Tensor h0) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "lstm_proj_fwd(Tensor gx, Tensor w_hh, Tensor w_hr, Tensor h0, Tensor c0, bool training)"
      " -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "lstm_proj_bwd(Tensor dy, Tensor dhT, Tensor dcT, Tensor w_hh, Tensor w_hr, Tensor y,"
      " Tensor c_all, Tensor gates, Tensor r, Tensor h0)"
      " -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // a[K, M]^T b[K, N] -> [M, N]: weight gradients (dW = dY^T X) without a transposed copy.
  m.def("mm_tn(Tensor a, Tensor b) -> Tensor");
  // a[M, K] w[N, K]^T + bias -> [M, N]: F.linear; w any strided view (no transposed copy).
  m.def("mm_nt(Tensor a, Tensor w, Tensor? bias) -> Tensor");
  // The decode loop of an LSTM language model, `steps` tokens per call (CPU, fp32).
  m.def(
      "lstm_lm_generate(Tensor tokens, Tensor h0, Tensor c0, Tensor? embed, Tensor[] weights,"
      " Tensor head_w, Tensor? head_b, int steps, float temperature, int top_k, float top_p,"
      " bool argmax, int seed, int offset) -> (Tensor, Tensor, Tensor)");
  // The same for GRU and vanilla-RNN language models (no cell state).
  m.def(
      "rnn_lm_generate(str mode, Tensor tokens, Tensor h0, Tensor? embed, Tensor[] weights,"
      " Tensor head_w, Tensor? head_b, int steps, float temperature, int top_k, float top_p,"
      " bool argmax, int seed, int offset) -> (Tensor, Tensor)");
}

// A plain C module: importing it runs the static registrations above. The
// flag tells Python whether CUDA kernels were compiled in.
static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&module_def);
  if (m != nullptr) {
    PyModule_AddIntConstant(m, "with_cuda", CHARRNN_FAST_WITH_CUDA);
    // Floats per vector of the fused fp32 CPU kernels (16 AVX-512, 8 AVX2), 0 = none.
    const auto* k = charrnn_fast::cpu::fused_kernels();
    PyModule_AddIntConstant(m, "cpu_vector_width", k == nullptr ? 0 : k->vw);
  }
  return m;
}
