// Register-blocked fp32 kernels of the CPU recurrence, written once over a
// vector of VW floats (GCC vector extensions) and compiled per ISA by
// fused_avx512.cpp (VW = 16) and fused_avx2.cpp (VW = 8), each under its own
// `#pragma GCC target`. Included only from those files, after every other
// header, so that nothing outside this file is compiled for their ISA; all of
// it has internal linkage (no ODR clash between the two builds).
//
// Packed layouts (built by fused.cpp, see fused.h):
// - gate panels: for unit block jb (VW hidden units) and k, 4 vectors in a
//   row: W_i, W_f, W_g, W_o for those units at column k. One tile then holds
//   all four gates of its units, so the pointwise LSTM update runs on the
//   accumulators, and the pre-activations never go to memory.
// - column panels: for column block jb and k, one vector: W[jb*VW + lane, k].
// Units and columns past the end are zero in the panels; partial blocks are
// loaded and stored lane by lane.
//
// Requires before inclusion: FUSED_VW (8 or 16) and FUSED_NS (namespace).
#include <cstdint>

namespace charrnn_fast::cpu::FUSED_NS {
namespace {

constexpr int VW = FUSED_VW;
typedef float vf __attribute__((vector_size(VW * 4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));

#define FUSED_INLINE __attribute__((always_inline)) inline

// A broadcast. s - 0 is s for every s (-0.0f included), so the compiler drops
// the subtraction; vf{} + s would have to keep an addition (-0 + 0 = +0).
template <int N>
struct Int {
  static constexpr int value = N;
};

FUSED_INLINE vf splat(float s) { return s - vf{}; }

FUSED_INLINE vf load(const float* p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

FUSED_INLINE void store(float* p, vf v) { __builtin_memcpy(p, &v, sizeof(v)); }

// The first n lanes (n <= VW) from / to memory; the others read as zero.
FUSED_INLINE vf load_n(const float* p, int64_t n) {
  if (n == VW) return load(p);
  vf v = vf{};
  for (int64_t l = 0; l < n; ++l) v[l] = p[l];
  return v;
}

FUSED_INLINE void store_n(float* p, vf v, int64_t n) {
  if (n == VW) return store(p, v);
  for (int64_t l = 0; l < n; ++l) p[l] = v[l];
}

// exp, sigmoid and tanh as in pointwise.h (same constants, same rounding
// steps), on whole vectors, but for the reciprocal (vrecip).
FUSED_INLINE vf vexp(vf x) {
  x = x > splat(88.0f) ? splat(88.0f) : x;
  x = x < splat(-87.0f) ? splat(-87.0f) : x;
  const vf shifter = splat(12582912.0f);
  const vf t = x * 1.44269504088896341f + shifter;
  const vf n = t - shifter;
  const vi ni = (vi)t - (vi)shifter;
  const vf r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  vf p = splat(1.0f / 720.0f);
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * (vf)((ni + 127) << 23);
}

// 1 / d for d >= 1 (the denominators below): the hardware estimate (14 bits
// with AVX-512, 12 with AVX2) refined by one Newton step to ~23 bits. Three
// pipelined instructions where a division issues only every few cycles: with
// five divisions per unit, division would be most of the cost of the step's
// pointwise update.
FUSED_INLINE vf vrecip(vf d) {
#if FUSED_VW == 16
  const vf r = __builtin_ia32_rcp14ps512_mask(d, vf{}, (unsigned short)0xFFFF);
#else
  const vf r = __builtin_ia32_rcpps256(d);
#endif
  return r + r * (1.0f - d * r);
}

// Exactly 0 below -88, where vexp is clamped (as sigmoid in pointwise.h).
FUSED_INLINE vf vsigmoid(vf x) {
  return x < splat(-88.0f) ? splat(0.0f) : vrecip(1.0f + vexp(-x));
}
FUSED_INLINE vf vtanh(vf x) { return 2.0f * vsigmoid(2.0f * x) - 1.0f; }

// The LSTM update of row r, units jb*VW.., from its four gate pre-activations
// less gx (pre: i, f, g, o).
FUSED_INLINE void step_update(const LstmStepArgs& s, int64_t r, int64_t jb, const vf* pre) {
  const int64_t j = jb * VW, n = s.H - j < VW ? s.H - j : VW;
  const float* add = s.add + r * s.ldadd + j;
  const vf i = vsigmoid(pre[0] + load_n(add, n));
  const vf f = vsigmoid(pre[1] + load_n(add + s.H, n));
  const vf g = vtanh(pre[2] + load_n(add + 2 * s.H, n));
  const vf o = vsigmoid(pre[3] + load_n(add + 3 * s.H, n));
  const vf c = f * load_n(s.c_prev + r * s.ldc + j, n) + i * g;
  store_n(s.c_next + r * s.ldc + j, c, n);
  store_n(s.h + r * s.ldh + j, o * vtanh(c), n);
  if (s.act != nullptr) {
    float* act = s.act + r * s.ldact + j;
    store_n(act, i, n);
    store_n(act + s.H, f, n);
    store_n(act + 2 * s.H, g, n);
    store_n(act + 3 * s.H, o, n);
  }
}

// MR rows x NB unit blocks of the forward step, blocks jb .. jb+NB-1: all four
// gates at once (4 * MR * NB accumulators and 4 * NB weight vectors in registers).
template <int MR, int NB>
FUSED_INLINE void step_tile(const LstmStepArgs& s, int64_t r0, int64_t jb) {
  vf acc[MR][NB][4];
  for (int m = 0; m < MR; ++m)
    for (int b = 0; b < NB; ++b)
      for (int q = 0; q < 4; ++q) acc[m][b][q] = vf{};
  const float* a = s.a + r0 * s.lda;
  for (int64_t k = 0; k < s.K; ++k) {
    vf w[NB][4];
    for (int b = 0; b < NB; ++b) {
      const float* p = s.wp + ((jb + b) * s.K + k) * 4 * VW;
      for (int q = 0; q < 4; ++q) w[b][q] = load(p + q * VW);
    }
    for (int m = 0; m < MR; ++m) {
      const vf x = splat(a[m * s.lda + k]);
      for (int b = 0; b < NB; ++b)
        for (int q = 0; q < 4; ++q) acc[m][b][q] += x * w[b][q];
    }
  }
  for (int b = 0; b < NB; ++b)
    for (int m = 0; m < MR; ++m) step_update(s, r0 + m, jb + b, acc[m][b]);
}

// One pass of MR rows x one unit block over half the gates: (i, f) for
// Half = 0, (g, o) for Half = 1; 2 * MR accumulators and 2 weight vectors.
// Leaves the pre-activations in pre[m * ld + 2 * Half + {0, 1}].
template <int MR, int Half>
FUSED_INLINE void step_tile_half(const LstmStepArgs& s, int64_t r0, int64_t jb, vf* pre,
                                 int64_t ld) {
  vf acc[MR][2];
  for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = vf{};
  const float* a = s.a + r0 * s.lda;
  const float* p = s.wp + jb * s.K * 4 * VW + Half * 2 * VW;
  for (int64_t k = 0; k < s.K; ++k, p += 4 * VW) {
    const vf w0 = load(p), w1 = load(p + VW);
    for (int m = 0; m < MR; ++m) {
      const vf x = splat(a[m * s.lda + k]);
      acc[m][0] += x * w0;
      acc[m][1] += x * w1;
    }
  }
  for (int m = 0; m < MR; ++m) {
    pre[m * ld + 2 * Half] = acc[m][0];
    pre[m * ld + 2 * Half + 1] = acc[m][1];
  }
}

// Unit blocks per forward tile of MR rows. Few rows leave too few independent
// accumulators per block to hide the FMA latency: then take several blocks.
constexpr int step_nb(int MR) {
  return VW == 16 ? (MR == 1 ? 4 : (MR == 2 ? 2 : 1)) : (MR == 1 ? 2 : 1);
}

// Rows [r0, r1) on unit blocks [jb0, jb1) with the widest tile that fits.
template <int MR>
FUSED_INLINE void step_rows(const LstmStepArgs& s, int64_t r0, int64_t jb0, int64_t jb1) {
  constexpr int NB = step_nb(MR);
  int64_t jb = jb0;
  for (; jb + NB <= jb1; jb += NB) step_tile<MR, NB>(s, r0, jb);
  for (; jb < jb1; ++jb) step_tile<MR, 1>(s, r0, jb);
}

constexpr int kStepRows = VW == 16 ? 6 : 3;  // rows per tile: 4*MR accumulators
constexpr int kHalfRows = 6;                  // rows per step_tile_half: 2*MR accumulators

// Calls f(std::integral_constant<int, mr>) for the tile height mr in 1..R that
// splits `left` rows into equal tiles: 25 rows are 5 tiles of 5, not 4 of 6
// and a single row (which streams the weights as often as a whole tile).
template <int R, typename F>
FUSED_INLINE int64_t balanced_tile(int64_t left, const F& f) {
  const int64_t tiles = (left + R - 1) / R, mr = (left + tiles - 1) / tiles;
  switch (mr) {
    case 6: if constexpr (R >= 6) f(Int<6>{}); break;
    case 5: if constexpr (R >= 5) f(Int<5>{}); break;
    case 4: if constexpr (R >= 4) f(Int<4>{}); break;
    case 3: if constexpr (R >= 3) f(Int<3>{}); break;
    case 2: if constexpr (R >= 2) f(Int<2>{}); break;
    default: f(Int<1>{}); break;
  }
  return mr;
}

// Column (unit) blocks [jb0, jb1) in passes of nb(first tile's height)
// blocks, every row tile inside each pass: a pass's panel of W then comes from
// memory once and from L1/L2 for every row tile. With rows outermost each row
// tile streamed all of W (256 KB at H = 128, 4 MB at H = 512).
// f(Int<mr>, r, jb, je): rows [r, r + mr) on blocks [jb, je).
template <int R, int (*Nb)(int), typename F>
FUSED_INLINE void blocks_then_rows(int64_t rows, int64_t jb0, int64_t jb1, const F& f) {
  int64_t chunk = 1;
  balanced_tile<R>(rows, [&](auto mr) { chunk = Nb(decltype(mr)::value); });
  for (int64_t jb = jb0; jb < jb1; jb += chunk) {
    const int64_t je = jb + chunk < jb1 ? jb + chunk : jb1;
    for (int64_t r = 0; r < rows;) {
      r += balanced_tile<R>(rows - r, [&](auto mr) { f(mr, r, jb, je); });
    }
  }
}

#if FUSED_VW == 8
// AVX2 runs the step in two phases per group of rows: the GEMM (two passes of
// step_tile_half per unit block, every row tile inside each block) leaves the
// group's pre-activations in `pre` (128 KB, in L2), then the update runs row
// by row. That way the reads of gx and the writes of c, h and the gates run
// along whole rows, which the hardware prefetchers follow; with the update
// inside each tile (step_tile) they are 32-byte pieces of 6 rows x 4 gates
// that miss the cache (same results, bit for bit; docs/performance.md, "The
// AVX2 forward step runs in two phases"). Groups below 12 rows (H > 680) would
// stream W once per few rows; they, one or two rows (too few accumulators per
// pass), and AVX-512 (where this form was not measured) run step_tile.
constexpr int64_t kPreVectors = 4096;
constexpr int64_t kMinGroup = 2 * kHalfRows;

// Rows in groups of at most `group`, unit blocks [jb0, jb1) (AVX2; see above).
void step_in_phases(const LstmStepArgs& s, int64_t jb1, int64_t group) {
  const int64_t groups = (s.rows + group - 1) / group;
  const int64_t size = (s.rows + groups - 1) / groups, ld = 4 * (jb1 - s.jb0);
  vf pre[kPreVectors];  // [row in group][block - jb0][gate]
  for (int64_t g0 = 0; g0 < s.rows; g0 += size) {
    const int64_t n = s.rows - g0 < size ? s.rows - g0 : size;
    for (int64_t jb = s.jb0; jb < jb1; ++jb) {
      vf* p = pre + 4 * (jb - s.jb0);
      for (int64_t r = 0; r < n;) {
        r += balanced_tile<kHalfRows>(n - r, [&](auto mr) {
          step_tile_half<decltype(mr)::value, 0>(s, g0 + r, jb, p + r * ld, ld);
        });
      }
      for (int64_t r = 0; r < n;) {
        r += balanced_tile<kHalfRows>(n - r, [&](auto mr) {
          step_tile_half<decltype(mr)::value, 1>(s, g0 + r, jb, p + r * ld, ld);
        });
      }
    }
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t jb = s.jb0; jb < jb1; ++jb) {
        step_update(s, g0 + r, jb, pre + r * ld + 4 * (jb - s.jb0));
      }
    }
  }
}
#endif

void lstm_step(const LstmStepArgs& s) {
  const int64_t jb1 = s.jb1 < 0 ? (s.H + VW - 1) / VW : s.jb1;
#if FUSED_VW == 8
  const int64_t group = jb1 > s.jb0 ? kPreVectors / (4 * (jb1 - s.jb0)) : 0;
  if (s.rows >= 3 && group >= kMinGroup) return step_in_phases(s, jb1, group);
#endif
  blocks_then_rows<kStepRows, step_nb>(s.rows, s.jb0, jb1, [&](auto mr, int64_t r, int64_t jb,
                                                               int64_t je) {
    step_rows<decltype(mr)::value>(s, r, jb, je);
  });
}

// MR rows x NB column blocks of out = a . W^T (column panels).
template <int MR, int NB>
FUSED_INLINE void gemm_tile(const GemmArgs& g, int64_t r0, int64_t jb) {
  vf acc[MR][NB];
  for (int m = 0; m < MR; ++m)
    for (int b = 0; b < NB; ++b) acc[m][b] = vf{};
  const float* a = g.a + r0 * g.lda;
  for (int64_t k = 0; k < g.K; ++k) {
    vf w[NB];
    for (int b = 0; b < NB; ++b) w[b] = load(g.wp + ((jb + b) * g.K + k) * VW);
    for (int m = 0; m < MR; ++m) {
      const vf x = splat(a[m * g.lda + k]);
      for (int b = 0; b < NB; ++b) acc[m][b] += x * w[b];
    }
  }
  for (int b = 0; b < NB; ++b) {
    const int64_t j = (jb + b) * VW, n = g.N - j < VW ? g.N - j : VW;
    for (int m = 0; m < MR; ++m) {
      float* out = g.out + (r0 + m) * g.ldo + j;
      vf v = acc[m][b];
      if (g.bias != nullptr) v += load_n(g.bias + j, n);
      store_n(out, v, n);
    }
  }
}

constexpr int gemm_nb(int MR) { return VW == 16 ? (MR >= 3 ? 4 : 8) : (MR >= 3 ? 2 : 4); }
constexpr int kGemmRows = 6;

template <int MR>
FUSED_INLINE void gemm_rows(const GemmArgs& g, int64_t r0, int64_t jb0, int64_t jb1) {
  constexpr int NB = gemm_nb(MR);
  int64_t jb = jb0;
  for (; jb + NB <= jb1; jb += NB) gemm_tile<MR, NB>(g, r0, jb);
  for (; jb < jb1; ++jb) gemm_tile<MR, 1>(g, r0, jb);
}

void gemm(const GemmArgs& g) {
  const int64_t jb1 = g.jb1 < 0 ? (g.N + VW - 1) / VW : g.jb1;
  blocks_then_rows<kGemmRows, gemm_nb>(g.rows, g.jb0, jb1, [&](auto mr, int64_t r, int64_t jb,
                                                               int64_t je) {
    gemm_rows<decltype(mr)::value>(g, r, jb, je);
  });
}

constexpr int kTnRows = 6;
constexpr int64_t kTnChunk = 128;                     // k per pass: the packed B panel stays in L1
constexpr int64_t kTnCols = (VW == 16 ? 4 : 2) * VW;  // columns per packed B panel
constexpr int64_t kTnMBlock = 64 * kTnRows;           // output rows per pass over B

// kTnRows output rows (`valid` of them real) x NB column blocks of out = A^T B
// over one k chunk. a: A at (k0, m0), read in place: the tile's kTnRows
// broadcasts at step k are consecutive floats of row k. Packing A instead
// cost a scalar copy per element for every column group, i.e. as much as a
// quarter of the FMAs when N is small (dW_hh: N = H). bp: B's panel [kc, NB * VW].
template <int NB, bool Full>
FUSED_INLINE void tn_tile(const GemmTnArgs& g, const float* a, const float* bp, int64_t m0,
                          int valid, int64_t jb, bool add, int64_t kc) {
  constexpr int MR = kTnRows;
  vf acc[MR][NB];
  for (int m = 0; m < MR; ++m)
    for (int b = 0; b < NB; ++b) acc[m][b] = vf{};
  // A partial tile repeats its last real row: no read past the end of A.
  int64_t off[MR];
  for (int m = 0; m < MR; ++m) off[m] = Full ? m : (m < valid ? m : valid - 1);
  for (int64_t k = 0; k < kc; ++k, bp += NB * VW, a += g.lda) {
    vf w[NB];
    for (int b = 0; b < NB; ++b) w[b] = load(bp + b * VW);
    for (int m = 0; m < MR; ++m) {
      const vf x = splat(a[Full ? m : off[m]]);
      for (int b = 0; b < NB; ++b) acc[m][b] += x * w[b];
    }
  }
  for (int m = 0; m < valid; ++m) {
    float* out = g.out + (m0 + m) * g.ldo + jb * VW;
    for (int b = 0; b < NB; ++b) {
      const int64_t j = (jb + b) * VW, n = g.N - j < VW ? g.N - j : VW;
      if (n <= 0) break;
      vf v = acc[m][b];
      if (add) v += load_n(out + b * VW, n);
      store_n(out + b * VW, v, n);
    }
  }
}

// Output rows [m0, m1). scratch: kTnChunk * kTnCols floats (B's panel).
void gemm_tn(const GemmTnArgs& g, int64_t m0, int64_t m1, float* scratch) {
  constexpr int NB = VW == 16 ? 4 : 2;
  float* bp = scratch;  // [kc, NB * VW]
  for (int64_t k0 = 0; k0 < g.K; k0 += kTnChunk) {
    const int64_t kc = g.K - k0 < kTnChunk ? g.K - k0 : kTnChunk;
    const bool add = k0 > 0;
    const float* a = g.a + k0 * g.lda;
    // Rows in blocks whose slice of A ([kc, kTnMBlock], 192 KB) stays in L2
    // while every column group of B passes over it.
    for (int64_t mb = m0; mb < m1; mb += kTnMBlock) {
      const int64_t me = m1 - mb < kTnMBlock ? m1 : mb + kTnMBlock;
      for (int64_t j0 = 0; j0 < g.N; j0 += NB * VW) {
        // This column group of B, contiguous and zero-padded: read by every tile from L1.
        for (int64_t k = 0; k < kc; ++k) {
          const float* brow = g.b + (k0 + k) * g.ldb;
          for (int64_t j = 0; j < NB * VW; ++j) {
            bp[k * NB * VW + j] = j0 + j < g.N ? brow[j0 + j] : 0.0f;
          }
        }
        int64_t m = mb;
        for (; m + kTnRows <= me; m += kTnRows) {
          tn_tile<NB, true>(g, a + m, bp, m, kTnRows, j0 / VW, add, kc);
        }
        if (m < me) tn_tile<NB, false>(g, a + m, bp, m, int(me - m), j0 / VW, add, kc);
      }
    }
  }
}

#undef FUSED_INLINE

}  // namespace

extern const FusedKernels kKernels{VW, kTnRows, &lstm_step, &gemm, &gemm_tn, kTnChunk, kTnCols};

}  // namespace charrnn_fast::cpu::FUSED_NS
