// lstm_lm_generate on the CPU: the whole decode loop of an LSTM language model
// (token -> embedding or one-hot -> LSTM layers -> linear head -> sampler ->
// next token) for `steps` tokens in one call, fp32.
//
// Why: a Python loop pays ~100 us of dispatch per token, while the 2x128
// char model's arithmetic is ~0.5 MFLOP per token (microseconds). Here the
// weights are packed into the layouts of fused.h (once per weight version:
// packed_model), every layer
// is one fused kernel call per step, and each thread owns a block of the
// batch rows for all steps (rows never interact), so there is no
// synchronisation at all. The schema and argument meanings are in ops.cpp;
// the sampler (sampler.h) is the one the Python fallback mirrors.
// Legend: L layers, B rows (streams), H hidden units, V vocabulary, E embedding size.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <omp.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "decode_common.h"
#include "fused.h"
#include "sampler.h"

namespace charrnn_fast {
namespace {

using cpu::check_f32;
constexpr const char* kOp = "lstm_lm_generate";

// The model in the layouts of fused.h: per layer W = [W_ih | W_hh] in gate
// panels (layer 0 one-hot: W_hh only, its input projection is a row of
// W_ih^T), the biases summed, the head in column panels.
struct Packed {
  std::vector<at::Tensor> packed, bias_sum;
  std::vector<int64_t> K;
  at::Tensor onehot_rows;  // [V, 4H]: W_ih0^T + bias, the one-hot layer-0 projection
  at::Tensor head;
};

Packed pack_model(const cpu::FusedKernels* k, at::TensorList weights, const at::Tensor& head_w,
                  int64_t L, int64_t H, int64_t E, int64_t V, int64_t per_layer, bool bias,
                  bool has_embed, const at::Tensor& h0) {
  const int64_t G = 4 * H;
  Packed m;
  std::vector<at::Tensor>& packed = m.packed;
  std::vector<at::Tensor>& bias_sum = m.bias_sum;
  std::vector<int64_t>& K = m.K;
  at::Tensor& onehot_rows = m.onehot_rows;
  packed.resize(L);
  bias_sum.resize(L);
  K.resize(L);
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor& w_ih = weights[l * per_layer];
    const at::Tensor& w_hh = weights[l * per_layer + 1];
    const int64_t in = l == 0 ? E : H;
    at::Tensor bsum = at::zeros({G}, h0.options());  // [4H]: small, filled inline
    if (bias) {
      bsum = weights[l * per_layer + 2] + weights[l * per_layer + 3];
    }
    if (l == 0 && !has_embed) {
      // W_ih^T + bias, [V, 4H], by this thread (a parallel ATen op would wake others).
      const at::Tensor w = w_ih.contiguous();
      onehot_rows = at::empty({E, G}, h0.options());
      const float* wp = w.const_data_ptr<float>();
      const float* bp = bsum.const_data_ptr<float>();
      float* op = onehot_rows.data_ptr<float>();
      for (int64_t v = 0; v < E; ++v) {
        for (int64_t g = 0; g < G; ++g) op[v * G + g] = wp[g * E + v] + bp[g];
      }
      packed[l] = cpu::pack_gates(*k, w_hh.contiguous(), at::Tensor());
      K[l] = H;
    } else {
      packed[l] = cpu::pack_gates(*k, w_ih.contiguous(), w_hh.contiguous());
      K[l] = in + H;
    }
    bias_sum[l] = bsum;
  }
  m.head = cpu::pack_columns(*k, head_w.contiguous(), V, H, H, 1);
  return m;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_lm_generate_cpu(
    const at::Tensor& tokens, const at::Tensor& h0, const at::Tensor& c0,
    const std::optional<at::Tensor>& embed, at::TensorList weights, const at::Tensor& head_w,
    const std::optional<at::Tensor>& head_b, int64_t steps, double temperature, int64_t top_k,
    double top_p, bool argmax, int64_t seed, int64_t offset) {
  const cpu::DecodeShape d = cpu::check_decode_args(kOp, tokens, h0, embed, weights, head_w,
                                                     head_b, steps, temperature, top_k, top_p,
                                                     argmax, 4);
  const cpu::FusedKernels* k = d.k;
  const int64_t L = d.L, B = d.B, H = d.H, V = d.V, E = d.E, G = 4 * H;
  const bool bias = d.bias;
  const int64_t per_layer = bias ? 4 : 2;
  check_f32(kOp, c0, "c0", {L, B, H});
  const at::Tensor tok = tokens.contiguous();
  const int64_t* tok_p = tok.const_data_ptr<int64_t>();

  static cpu::LastPacked<Packed> cache;
  const auto sources = cpu::checked_sources(kOp, weights, L, G, H, E, bias, head_w, head_b);
  const std::shared_ptr<const Packed> model =
      cache.get(sources, L * 2 + (embed.has_value() ? 1 : 0), [&] {
        return pack_model(k, weights, head_w, L, H, E, V, per_layer, bias, embed.has_value(), h0);
      });
  const Packed& m = *model;
  const std::vector<at::Tensor>& packed = m.packed;
  const std::vector<at::Tensor>& bias_sum = m.bias_sum;
  const std::vector<int64_t>& K = m.K;
  const at::Tensor& onehot_rows = m.onehot_rows;
  const at::Tensor& head = m.head;
  const at::Tensor head_bias = head_b.has_value() ? head_b->contiguous() : at::Tensor();

  at::Tensor h = h0.clone(), c = c0.clone();  // [L, B, H], updated in place
  at::Tensor ids = at::empty({B, steps}, tokens.options());
  float* h_p = h.data_ptr<float>();
  float* c_p = c.data_ptr<float>();
  int64_t* ids_p = ids.data_ptr<int64_t>();
  // Rows of the embedding are read by pointer: a view (transposed, expanded) in order first.
  const at::Tensor emb = embed.has_value() ? embed->contiguous() : at::Tensor();
  const float* emb_p = emb.defined() ? emb.const_data_ptr<float>() : nullptr;
  const Sampler sampler{temperature, top_k, top_p, argmax, static_cast<uint64_t>(seed)};
  const int64_t kmax = std::max(E, H) + H;

  // The decode loop on rows [b0, b1). team: the threads of an OpenMP team
  // share these rows and split the hidden units (and the head's columns); they
  // meet after copying a layer's inputs (before anyone overwrites that state),
  // after each layer, after the head and after sampling (one thread samples).
  const int64_t blocks = (H + k->vw - 1) / k->vw, head_blocks = (V + k->vw - 1) / k->vw;
  std::vector<int64_t> shared_cur(tok_p, tok_p + B);  // team mode: the current tokens
  std::vector<float> shared_logits(B * V);
  auto run = [&](int64_t b0, int64_t b1, int64_t tid, int64_t nt) {
    const bool team = nt > 1;
    const int64_t nb = b1 - b0;
    const int64_t jb0 = blocks * tid / nt, jb1 = blocks * (tid + 1) / nt;
    const int64_t hb0 = head_blocks * tid / nt, hb1 = head_blocks * (tid + 1) / nt;
    std::vector<float> x(nb * kmax), add(nb * G), own_logits(team ? 0 : nb * V);
    float* logits = team ? shared_logits.data() : own_logits.data();
    SamplerScratch scratch(V);
    std::vector<int64_t> own_cur(tok_p + b0, tok_p + b1);
    int64_t* cur = team ? shared_cur.data() : own_cur.data();
    for (int64_t s = 0; s < steps; ++s) {
      for (int64_t l = 0; l < L; ++l) {
        float* hl = h_p + (l * B + b0) * H;
        float* cl = c_p + (l * B + b0) * H;
        const float* addp = bias_sum[l].const_data_ptr<float>();
        int64_t ldadd = 0;  // one bias row for all rows
        const int64_t in = K[l] - H;
        for (int64_t r = 0; r < nb; ++r) {
          float* xr = x.data() + r * K[l];
          if (l == 0 && emb_p == nullptr) {
            const float* src = onehot_rows.const_data_ptr<float>() + cur[r] * G;
            std::copy(src, src + G, add.data() + r * G);
          } else if (l == 0) {
            std::copy(emb_p + cur[r] * E, emb_p + (cur[r] + 1) * E, xr);
          } else {
            const float* below = h_p + ((l - 1) * B + b0 + r) * H;
            std::copy(below, below + H, xr);
          }
          std::copy(hl + r * H, hl + (r + 1) * H, xr + in);
        }
        if (l == 0 && emb_p == nullptr) {
          addp = add.data();
          ldadd = G;
        }
        if (team) {
#pragma omp barrier
        }
        k->lstm_step({nb, H, K[l], x.data(), K[l], packed[l].const_data_ptr<float>(), addp,
                      ldadd, cl, cl, H, hl, H, nullptr, 0, jb0, team ? jb1 : -1});
        if (team) {
#pragma omp barrier
        }
      }
      const float* top = h_p + ((L - 1) * B + b0) * H;
      k->gemm({nb, V, H, top, H, head.const_data_ptr<float>(),
               head_bias.defined() ? head_bias.const_data_ptr<float>() : nullptr, logits, V,
               hb0, team ? hb1 : -1});
      cpu::sample_rows(sampler, logits, V, b0, nb, offset + s, s, steps, team, tid, cur, ids_p,
                       scratch);
    }
  };
  int64_t weight_bytes = head.numel() * 4;
  for (const auto& p : packed) weight_bytes += p.numel() * 4;
  cpu::run_rows(B, blocks, weight_bytes, true, run);
  return {ids, h, c};
}

}  // namespace

TORCH_LIBRARY_IMPL(charrnn_fast, CPU, m) { m.impl("lstm_lm_generate", &lstm_lm_generate_cpu); }

}  // namespace charrnn_fast
