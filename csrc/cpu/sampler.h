// The token sampler of lstm_lm_generate: temperature, top-k, top-p (nucleus),
// argmax, and a counter-based random stream, so that the same seed gives the
// same tokens however the generation is split into calls.
//
// The rule (charrnn_fast/generate.py implements the same, for the Python
// fallback and the tests):
//   NaN logits count as -inf: never picked (a row of them picks 0).
//   argmax: the first index of the largest logit.
//   else:   w_v = exp((z_v - max z) / T), in double, so that any T > 0 is safe
//           (a tiny T leaves weight only on the maximum: argmax, ties shared);
//           top_k > 0 keeps the logits >= the k-th largest (ties kept);
//           0 < top_p < 1 keeps the most probable tokens, in order of
//           decreasing weight (ties by index), up to and including the first
//           whose cumulative share reaches top_p;
//           then the first index v (in index order, over kept tokens) whose
//           cumulative weight exceeds u * total, with u = uniform(seed, row, pos).
//   uniform(seed, row, pos) = (mix(mix(mix(seed) ^ row) ^ pos) >> 11) * 2^-53,
//   mix = splitmix64's finaliser, all in uint64 arithmetic.
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <vector>

namespace charrnn_fast {

inline uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// In [0, 1), 53 random bits.
inline double uniform01(uint64_t seed, uint64_t row, uint64_t pos) {
  return static_cast<double>(mix64(mix64(mix64(seed) ^ row) ^ pos) >> 11) * 0x1.0p-53;
}

inline void check_sampler_args(double temperature, int64_t top_k, double top_p, bool argmax) {
  TORCH_CHECK(argmax || (temperature > 0 && std::isfinite(temperature)),
              "charrnn_fast: temperature must be > 0 and finite (got ", temperature,
              "); use argmax for greedy decoding");
  TORCH_CHECK(top_k >= 0, "charrnn_fast: top_k must be >= 0 (0 = all), got ", top_k);
  TORCH_CHECK(top_p > 0 && top_p <= 1, "charrnn_fast: top_p must be in (0, 1] (1 = all), got ",
              top_p);
}

struct SamplerScratch {
  explicit SamplerScratch(int64_t V) : w(V), order(V) {}
  std::vector<double> w;
  std::vector<int64_t> order;
};

struct Sampler {
  double temperature;
  int64_t top_k;
  double top_p;
  bool argmax;
  uint64_t seed;

  // A logit as it ranks: NaN as -inf.
  static double rank(float x) { return std::isnan(x) ? -INFINITY : x; }

  // z: the V logits of one row; row, pos: the random stream's coordinates.
  int64_t pick(const float* z, int64_t V, int64_t row, int64_t pos, SamplerScratch& s) const {
    int64_t best = 0;
    for (int64_t v = 1; v < V; ++v) {
      if (rank(z[v]) > rank(z[best])) best = v;
    }
    if (argmax) return best;
    const double zmax = rank(z[best]);
    double kth = -INFINITY;
    if (top_k > 0 && top_k < V) {
      for (int64_t v = 0; v < V; ++v) s.w[v] = rank(z[v]);  // NaN would break the order
      std::nth_element(s.w.begin(), s.w.begin() + (top_k - 1), s.w.end(), std::greater<>());
      kth = s.w[top_k - 1];
    }
    double total = 0;
    for (int64_t v = 0; v < V; ++v) {
      const double w = z[v] >= kth ? std::exp((static_cast<double>(z[v]) - zmax) / temperature)
                                   : 0.0;
      s.w[v] = w;
      total += w;
    }
    // No weight (every logit NaN or -inf), or none defined (+inf logits: inf - inf): the best.
    if (!(total > 0) || !std::isfinite(total)) return best;
    if (top_p < 1) {
      std::iota(s.order.begin(), s.order.end(), 0);
      std::stable_sort(s.order.begin(), s.order.end(),
                       [&](int64_t a, int64_t b) { return s.w[a] > s.w[b]; });
      double cum = 0;
      int64_t i = 0;
      for (; i < V && cum < top_p * total; ++i) cum += s.w[s.order[i]];
      for (int64_t j = i; j < V; ++j) s.w[s.order[j]] = 0;
      total = cum;
    }
    const double target = uniform01(seed, row, pos) * total;
    double cum = 0;
    int64_t last = best;
    for (int64_t v = 0; v < V; ++v) {
      if (s.w[v] <= 0) continue;
      cum += s.w[v];
      last = v;
      if (cum > target) return v;
    }
    return last;  // rounding: target within the last ulp of the total
  }
};

}  // namespace charrnn_fast
