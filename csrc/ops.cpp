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
#include <Python.h>
#include <torch/library.h>

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
}

// A plain C module: importing it runs the static registrations above. The
// flag tells Python whether CUDA kernels were compiled in.
static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&module_def);
  if (m != nullptr) PyModule_AddIntConstant(m, "with_cuda", CHARRNN_FAST_WITH_CUDA);
  return m;
}
