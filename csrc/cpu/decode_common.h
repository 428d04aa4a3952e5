// What the compiled decode loops (generate.cpp: LSTM, generate_rnn.cpp: GRU
// and vanilla RNN) share: argument checks, and the cache that keeps the last
// packed model while the same, unchanged weights come back.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "fused.h"
#include "sampler.h"

namespace charrnn_fast::cpu {

// A float32 CPU tensor of exactly `shape`, or an error naming op and argument.
inline void check_f32(const char* op, const at::Tensor& t, const char* name,
                      at::IntArrayRef shape) {
  TORCH_CHECK(t.sizes() == shape, "charrnn_fast: ", op, ": ", name, " must have shape ", shape,
              ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat, "charrnn_fast: ", op, ": ", name,
              " must be float32 on the CPU (other dtypes take the Python loop), got ",
              t.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), "charrnn_fast: ", op, ": ", name, " must be on the CPU, got ",
              t.device());
}

// A model with at least one hidden unit and one token (nn.LSTM & co. refuse
// hidden_size 0; the kernels and the sampler assume both).
inline void check_sizes(const char* op, int64_t H, int64_t V) {
  TORCH_CHECK(H >= 1 && V >= 1, "charrnn_fast: ", op,
              ": the model's hidden size and vocabulary must be >= 1, got H = ", H, ", V = ", V);
}

// tokens: int64 [B], every value in [0, V).
inline void check_tokens(const char* op, const at::Tensor& tokens, int64_t B, int64_t V) {
  TORCH_CHECK(tokens.scalar_type() == at::kLong && tokens.dim() == 1 && tokens.size(0) == B,
              "charrnn_fast: ", op, ": tokens must be int64 [B] with B = ", B, ", got ",
              tokens.scalar_type(), " ", tokens.sizes());
  const at::Tensor tok = tokens.contiguous();
  const int64_t* p = tok.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(p[b] >= 0 && p[b] < V, "charrnn_fast: ", op, ": tokens[", b, "] = ", p[b],
                " is outside the vocabulary [0, ", V, ")");
  }
}

// What both decode loops take alike, checked; the sizes read off it.
struct DecodeShape {
  const FusedKernels* k;
  int64_t L, B, H, V, E;  // E: layer 0's input size (V for one-hot)
  bool bias;
};

// The kernels for this CPU; the model's sizes from its weights (nn.LSTM's /
// nn.GRU's / nn.RNN's flat list, 2 or 4 tensors per layer: L from their number,
// H from layer 0's w_hh [gates * H, H], V from the input side: embed [V, E], or
// layer 0's w_ih [N, V] for one-hot input); then h0 [L, B, H], head_w [V, H],
// head_b [V] (fp32), steps >= 0, the sampler's arguments and tokens [B] in
// [0, V) against them. The weights come from one module and agree with each
// other; the state is what a caller builds, so an error names `op` and the
// argument that disagrees with the weights (checked_sources checks the other
// layers' weights).
inline DecodeShape check_decode_args(const char* op, const at::Tensor& tokens,
                                     const at::Tensor& h0, const std::optional<at::Tensor>& embed,
                                     at::TensorList weights, const at::Tensor& head_w,
                                     const std::optional<at::Tensor>& head_b, int64_t steps,
                                     double temperature, int64_t top_k, double top_p,
                                     bool argmax, int64_t gates) {
  DecodeShape d{fused_kernels(), 0, 0, 0, 0, 0, false};
  TORCH_CHECK(d.k != nullptr, "charrnn_fast: ", op,
              " needs a CPU with AVX2+FMA or AVX-512 (the Python loop serves other CPUs)");
  const int64_t n = static_cast<int64_t>(weights.size());
  TORCH_CHECK(n >= 2 && weights[0].dim() == 2 && weights[1].dim() == 2, "charrnn_fast: ", op,
              ": weights must be the flat list w_ih [N, I], w_hh [N, H][, b_ih, b_hh] per "
              "layer, got ", n, " tensor(s)");
  d.bias = n >= 3 && weights[2].dim() == 1;
  const int64_t per = d.bias ? 4 : 2;
  TORCH_CHECK(n % per == 0, "charrnn_fast: ", op, ": weights must hold ", per,
              " tensors per layer (w_ih, w_hh", d.bias ? ", b_ih, b_hh" : "", "), got ", n);
  TORCH_CHECK(weights[1].size(0) == gates * weights[1].size(1), "charrnn_fast: ", op,
              ": w_hh must be [G * H, H] with G = ", gates, " gates for this cell, got ",
              weights[1].sizes());
  d.L = n / per, d.H = weights[1].size(1);
  if (embed.has_value()) {
    TORCH_CHECK(embed->dim() == 2, "charrnn_fast: ", op, ": embed must be [V, E], got ",
                embed->sizes());
    d.V = embed->size(0), d.E = embed->size(1);
    TORCH_CHECK(d.E >= 1, "charrnn_fast: ", op, ": embed must have at least one column, got ",
                embed->sizes());
  } else {
    d.V = d.E = weights[0].size(1);  // one-hot input: layer 0 takes V inputs
  }
  check_sizes(op, d.H, d.V);
  TORCH_CHECK(h0.dim() == 3, "charrnn_fast: ", op, ": h0 must be [L, B, H] with L = ", d.L,
              ", H = ", d.H, " (from the weights), got ", h0.sizes());
  d.B = h0.size(1);
  check_f32(op, h0, "h0", {d.L, d.B, d.H});
  check_f32(op, head_w, "head_w", {d.V, d.H});
  if (head_b.has_value()) check_f32(op, *head_b, "head_b", {d.V});
  if (embed.has_value()) check_f32(op, *embed, "embed", {d.V, d.E});
  TORCH_CHECK(steps >= 0, "charrnn_fast: ", op, ": steps must be >= 0, got ", steps);
  check_sampler_args(temperature, top_k, top_p, argmax);
  check_tokens(op, tokens, d.B, d.V);
  return d;
}

// Checks every layer's weights (w_ih [N, E or H], w_hh [N, H], with biases
// b_ih, b_hh [N]; N = gates x H) and returns what identifies the model for
// LastPacked: the weights, head_w and head_b. Checked before the lookup, so a
// cache hit (the same tensors) implies the same shapes.
inline std::vector<at::Tensor> checked_sources(const char* op, at::TensorList weights, int64_t L,
                                               int64_t N, int64_t H, int64_t E, bool bias,
                                               const at::Tensor& head_w,
                                               const std::optional<at::Tensor>& head_b) {
  const int64_t per = bias ? 4 : 2;
  for (int64_t l = 0; l < L; ++l) {
    check_f32(op, weights[l * per], "w_ih", {N, l == 0 ? E : H});
    check_f32(op, weights[l * per + 1], "w_hh", {N, H});
    if (bias) {
      check_f32(op, weights[l * per + 2], "b_ih", {N});
      check_f32(op, weights[l * per + 3], "b_hh", {N});
    }
  }
  std::vector<at::Tensor> sources(weights.begin(), weights.end());
  sources.push_back(head_w);
  if (head_b.has_value()) sources.push_back(*head_b);
  return sources;
}

// What identifies a weight tensor between calls: its storage (held weakly, so
// a dropped model is not kept alive), data pointer and shape; its version
// counter changes with every in-place update (an optimizer step,
// load_state_dict). Writes that bypass it (through `.data`, numpy, another
// process's shared memory) are not seen: pass new tensors after those.
struct WeightId {
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  const void* ptr;
  int64_t version;
  at::ScalarType dtype;
  std::vector<int64_t> sizes, strides;

  explicit WeightId(const at::Tensor& t)
      : storage(t.storage().getWeakStorageImpl()),
        ptr(t.const_data_ptr()),
        version(t._version()),
        dtype(t.scalar_type()),
        sizes(t.sizes().vec()),
        strides(t.strides().vec()) {}

  bool same(const at::Tensor& t) const {
    const auto alive = storage.lock();
    return alive.get() == t.storage().unsafeGetStorageImpl() && ptr == t.const_data_ptr() &&
           version == t._version() && dtype == t.scalar_type() && t.sizes().equals(sizes) &&
           t.strides().equals(strides);
  }
};

// The last model packed from `sources` (and a `tag` for everything else that
// shapes the packing), reused while the same, unchanged tensors come back:
// packing a 3x512 model's 20 MiB costs more than decoding 40 tokens, and
// `charrnn-fast sample` calls once per printed chunk. The caller's shared_ptr
// keeps the model alive while it decodes, whatever other threads put here.
// Inference tensors keep no version counter: those are packed on every call.
template <typename Model>
class LastPacked {
 public:
  template <typename Make>
  std::shared_ptr<const Model> get(const std::vector<at::Tensor>& sources, int64_t tag,
                                   const Make& make) {
    if (std::any_of(sources.begin(), sources.end(),
                    [](const at::Tensor& t) { return t.is_inference(); })) {
      return std::make_shared<const Model>(make());
    }
    std::lock_guard<std::mutex> lock(mu_);
    bool hit = last_ != nullptr && tag_ == tag && ids_.size() == sources.size();
    for (size_t i = 0; hit && i < sources.size(); ++i) hit = ids_[i].same(sources[i]);
    if (!hit) {
      last_ = std::make_shared<const Model>(make());
      tag_ = tag;
      ids_.clear();
      for (const auto& t : sources) ids_.emplace_back(t);
    }
    return last_;
  }

 private:
  std::mutex mu_;
  std::vector<WeightId> ids_;
  int64_t tag_ = 0;
  std::shared_ptr<const Model> last_;
};

// The next token of rows [b0, b1) from their logits [nb, V], into cur and
// ids [B, steps] at step s. In a team (the threads of an OpenMP team sharing
// these rows) one thread samples, after everyone's share of the logits and
// before anyone feeds the tokens.
inline void sample_rows(const Sampler& sampler, const float* logits, int64_t V, int64_t b0,
                        int64_t nb, int64_t pos, int64_t s, int64_t steps, bool team, int64_t tid,
                        int64_t* cur, int64_t* ids, SamplerScratch& scratch) {
  if (team) {
#pragma omp barrier
  }
  if (tid == 0) {
    for (int64_t r = 0; r < nb; ++r) {
      cur[r] = sampler.pick(logits + r * V, V, b0 + r, pos, scratch);
      ids[(b0 + r) * steps + s] = cur[r];
    }
  }
  if (team) {
#pragma omp barrier
  }
}

// Runs run(b0, b1, tid, nt) over all B rows. Weights beyond L2 (~1 MB) make
// each token a stream of them from L3 or memory: with few rows, one OpenMP
// team shares all rows and splits the units (`blocks` of them), so every core
// streams its share. Otherwise threads own blocks of rows and never wait.
// team_ok: whether the caller's split of units is possible at this shape.
template <typename Run>
void run_rows(int64_t B, int64_t blocks, int64_t weight_bytes, bool team_ok, const Run& run) {
  if (B == 0) return;  // no rows: nothing to decode (the kernels assume rows >= 1)
  const int nt = at::get_num_threads();
  if (team_ok && nt > 1 && B < 6 * nt && blocks >= 2 * nt && weight_bytes > (int64_t{1} << 20)) {
#pragma omp parallel num_threads(nt)
    run(0, B, omp_get_thread_num(), omp_get_num_threads());
  } else {
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) { run(b0, b1, 0, 1); });
  }
}

}  // namespace charrnn_fast::cpu
