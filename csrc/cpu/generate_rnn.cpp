// rnn_lm_generate on the CPU: the decode loop of a GRU or vanilla-RNN language
// model (token -> embedding or one-hot -> layers -> linear head -> sampler ->
// next token) for `steps` tokens in one call, fp32. The LSTM's loop is
// generate.cpp; this one serves the other two cells of char-rnn's
// comparison, so that sampling from them is not one Python step per token.
//
// Per layer and step, two register-blocked GEMMs of fused.h (input and hidden
// projections, each with its bias: a GRU's candidate gate needs W_hn h + b_hn
// on its own) and one pointwise pass. Each thread owns a block of rows for all
// steps: rows never interact, so there is no synchronisation. The sampler is
// sampler.h's, shared with the LSTM loop and mirrored by the Python fallback
// (charrnn_fast/generate.py).
// Legend: L layers, B rows (streams), H hidden units, V vocabulary, E
// embedding size, G gates per unit (3 for "gru", 1 for "rnn_tanh"/"rnn_relu").
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <omp.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "decode_common.h"
#include "fused.h"
#include "pointwise.h"
#include "sampler.h"

namespace charrnn_fast {
namespace {

constexpr const char* kOp = "rnn_lm_generate";

enum class Cell { kGru, kTanh, kRelu };

// Per layer: W_ih and W_hh in column panels, their biases (zeros without
// bias), and for one-hot input W_ih0^T + b_ih0 as a [V, G*H] table.
struct Packed {
  std::vector<at::Tensor> w_ih, w_hh, b_ih, b_hh;
  at::Tensor onehot_rows, head;
};

Packed pack_model(const cpu::FusedKernels& k, at::TensorList weights, const at::Tensor& head_w,
                  int64_t L, int64_t N, int64_t H, int64_t E, int64_t V, bool bias,
                  bool has_embed) {
  const int64_t per = bias ? 4 : 2;
  Packed m;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t in = l == 0 ? E : H;
    const at::Tensor w_ih = weights[l * per].contiguous();
    m.b_ih.push_back(bias ? weights[l * per + 2].contiguous() : at::zeros({N}, w_ih.options()));
    m.b_hh.push_back(bias ? weights[l * per + 3].contiguous() : at::zeros({N}, w_ih.options()));
    if (l == 0 && !has_embed) {
      m.onehot_rows = (w_ih.t() + m.b_ih[0]).contiguous();  // [V, N]
      m.w_ih.emplace_back();
    } else {
      m.w_ih.push_back(cpu::pack_columns(k, w_ih, N, in, in, 1));
    }
    m.w_hh.push_back(cpu::pack_columns(k, weights[l * per + 1].contiguous(), N, H, H, 1));
  }
  m.head = cpu::pack_columns(k, head_w.contiguous(), V, H, H, 1);
  return m;
}

// The new hidden state of one row, units [j0, j1), from its projections gx,
// gh [G*H] (biases included) and its state h [H], in place. PyTorch's gate
// order r, z, n.
void cell_update(Cell cell, const float* gx, const float* gh, float* h, int64_t H, int64_t j0,
                 int64_t j1) {
  if (cell == Cell::kGru) {
    for (int64_t j = j0; j < j1; ++j) {
      const float r = cpu::sigmoid(gx[j] + gh[j]);
      const float z = cpu::sigmoid(gx[H + j] + gh[H + j]);
      const float n = cpu::tanh_fast(gx[2 * H + j] + r * gh[2 * H + j]);
      h[j] = (1.0f - z) * n + z * h[j];
    }
  } else if (cell == Cell::kTanh) {
    for (int64_t j = j0; j < j1; ++j) h[j] = cpu::tanh_fast(gx[j] + gh[j]);
  } else {
    for (int64_t j = j0; j < j1; ++j) h[j] = std::max(gx[j] + gh[j], 0.0f);
  }
}

std::tuple<at::Tensor, at::Tensor> rnn_lm_generate_cpu(
    c10::string_view mode, const at::Tensor& tokens, const at::Tensor& h0,
    const std::optional<at::Tensor>& embed, at::TensorList weights, const at::Tensor& head_w,
    const std::optional<at::Tensor>& head_b, int64_t steps, double temperature, int64_t top_k,
    double top_p, bool argmax, int64_t seed, int64_t offset) {
  const std::string m(mode);
  TORCH_CHECK(m == "gru" || m == "rnn_tanh" || m == "rnn_relu",
              "charrnn_fast: rnn_lm_generate: mode must be 'gru', 'rnn_tanh' or 'rnn_relu', got '",
              m, "'");
  const Cell cell = m == "gru" ? Cell::kGru : (m == "rnn_tanh" ? Cell::kTanh : Cell::kRelu);
  const cpu::DecodeShape d = cpu::check_decode_args(kOp, tokens, h0, embed, weights, head_w,
                                                     head_b, steps, temperature, top_k, top_p,
                                                     argmax, cell == Cell::kGru ? 3 : 1);
  const cpu::FusedKernels* k = d.k;
  const int64_t L = d.L, B = d.B, H = d.H, V = d.V, E = d.E;
  const bool bias = d.bias;
  const int64_t N = (cell == Cell::kGru ? 3 : 1) * H;  // projection width, G*H
  static cpu::LastPacked<Packed> cache;
  const auto sources = cpu::checked_sources(kOp, weights, L, N, H, E, bias, head_w, head_b);
  const int64_t tag = (L * 2 + (embed.has_value() ? 1 : 0)) * 3 + static_cast<int64_t>(cell);
  const std::shared_ptr<const Packed> model = cache.get(sources, tag, [&] {
    return pack_model(*k, weights, head_w, L, N, H, E, V, bias, embed.has_value());
  });
  const Packed& pm = *model;
  const at::Tensor head_bias = head_b.has_value() ? head_b->contiguous() : at::Tensor();
  const float* hb_p = head_bias.defined() ? head_bias.const_data_ptr<float>() : nullptr;
  const at::Tensor tok = tokens.contiguous();
  const int64_t* tok_p = tok.const_data_ptr<int64_t>();
  // Rows of the embedding are read by pointer: a view (transposed, expanded) in order first.
  const at::Tensor emb = embed.has_value() ? embed->contiguous() : at::Tensor();
  const float* emb_p = emb.defined() ? emb.const_data_ptr<float>() : nullptr;

  at::Tensor h = h0.clone();  // [L, B, H], updated in place
  at::Tensor ids = at::empty({B, steps}, tokens.options());
  float* h_p = h.data_ptr<float>();
  int64_t* ids_p = ids.data_ptr<int64_t>();
  const Sampler sampler{temperature, top_k, top_p, argmax, static_cast<uint64_t>(seed)};

  // The decode loop on rows [b0, b1), all steps. team: the nt threads of an
  // OpenMP team share these rows and split the hidden units (each gate's
  // columns of both projections, and the head's columns); they meet after the
  // projections (before anyone overwrites the state they read), after each
  // layer's update, after the head and after sampling (one thread samples).
  const int64_t vw = k->vw, G = N / H;
  const int64_t blocks = (H + vw - 1) / vw, head_blocks = (V + vw - 1) / vw;
  std::vector<int64_t> shared_cur(tok_p, tok_p + B);
  std::vector<float> shared(3 * B * std::max(N, V));  // team: gx, gh, logits
  auto run = [&](int64_t b0, int64_t b1, int64_t tid, int64_t nt) {
    const bool team = nt > 1;
    const int64_t nb = b1 - b0;
    const int64_t ub0 = blocks * tid / nt, ub1 = blocks * (tid + 1) / nt;  // unit blocks
    const int64_t j0 = std::min(ub0 * vw, H), j1 = std::min(ub1 * vw, H);
    const int64_t hb0 = head_blocks * tid / nt, hb1 = team ? head_blocks * (tid + 1) / nt : -1;
    std::vector<float> x(emb_p != nullptr ? nb * E : 0), own(team ? 0 : 3 * nb * std::max(N, V));
    float* gx = team ? shared.data() : own.data();
    float* gh = gx + nb * std::max(N, V);
    float* logits = gh + nb * std::max(N, V);
    std::vector<int64_t> own_cur(tok_p + b0, tok_p + b1);
    int64_t* cur = team ? shared_cur.data() : own_cur.data();
    SamplerScratch scratch(V);
    // out[:, this thread's columns] = a W^T + bias: in a team, gate g's columns
    // of units [j0, j1) (H is a multiple of vw there, so gates start on blocks).
    auto project = [&](const float* a, int64_t K, const float* wp, const float* bias, float* out) {
      if (!team) return k->gemm({nb, N, K, a, K, wp, bias, out, N});
      for (int64_t g = 0; g < G; ++g) {
        k->gemm({nb, N, K, a, K, wp, bias, out, N, g * blocks + ub0, g * blocks + ub1});
      }
    };
    for (int64_t s = 0; s < steps; ++s) {
      for (int64_t l = 0; l < L; ++l) {
        float* hl = h_p + (l * B + b0) * H;  // these rows of layer l, [nb, H]
        if (l == 0 && emb_p == nullptr) {
          for (int64_t r = 0; r < nb; ++r) {
            const float* src = pm.onehot_rows.const_data_ptr<float>() + cur[r] * N;
            for (int64_t g = 0; g < G; ++g) {  // this thread's columns only
              std::copy(src + g * H + (team ? j0 : 0), src + g * H + (team ? j1 : H),
                        gx + r * N + g * H + (team ? j0 : 0));
            }
          }
        } else if (l == 0) {
          for (int64_t r = 0; r < nb; ++r) {
            std::copy(emb_p + cur[r] * E, emb_p + (cur[r] + 1) * E, x.data() + r * E);
          }
          project(x.data(), E, pm.w_ih[0].const_data_ptr<float>(),
                  pm.b_ih[0].const_data_ptr<float>(), gx);
        } else {
          project(h_p + ((l - 1) * B + b0) * H, H, pm.w_ih[l].const_data_ptr<float>(),
                  pm.b_ih[l].const_data_ptr<float>(), gx);
        }
        project(hl, H, pm.w_hh[l].const_data_ptr<float>(), pm.b_hh[l].const_data_ptr<float>(), gh);
        if (team) {
#pragma omp barrier
        }
        for (int64_t r = 0; r < nb; ++r) {
          cell_update(cell, gx + r * N, gh + r * N, hl + r * H, H, team ? j0 : 0, team ? j1 : H);
        }
        if (team) {
#pragma omp barrier
        }
      }
      k->gemm({nb, V, H, h_p + ((L - 1) * B + b0) * H, H, pm.head.const_data_ptr<float>(), hb_p,
               logits, V, hb0, hb1});
      cpu::sample_rows(sampler, logits, V, b0, nb, offset + s, s, steps, team, tid, cur, ids_p,
                       scratch);
    }
  };
  int64_t weight_bytes = pm.head.numel() * 4;
  for (const auto& w : pm.w_ih) weight_bytes += w.defined() ? w.numel() * 4 : 0;
  for (const auto& w : pm.w_hh) weight_bytes += w.numel() * 4;
  cpu::run_rows(B, blocks, weight_bytes, H % vw == 0, run);  // teams need gates on whole blocks
  return {ids, h};
}

}  // namespace

TORCH_LIBRARY_IMPL(charrnn_fast, CPU, m) { m.impl("rnn_lm_generate", &rnn_lm_generate_cpu); }

}  // namespace charrnn_fast
