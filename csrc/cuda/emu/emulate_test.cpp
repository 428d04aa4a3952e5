// Logic check of the persistent CUDA kernels on the CPU, without a GPU: runs
// launch_fwd_persistent / launch_bwd_persistent under the emulation
// (emulate.h) for planner-chosen and hand-picked geometries (several M- and
// K-chunks, K-split warps, batch slices, T = 1) and compares every output with
// a float64 loop of the op contract on the same rounded inputs. It checks
// indexing, shared-memory layout, pipeline waits and the grid barrier; not
// speed, and not the hardware's memory model. Build and run: emu/run.sh.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>  // the emulation's (emu/include): charrnn_emu::set_attribute_failures

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../kernels.h"
#include "../plan.h"

using namespace charrnn_fast::cuda;

// The wavefront forward's cases (wave_test.cpp), registered through `run`.
void wave_cases(const std::function<void(const char*, const std::function<bool(const char*)>&)>& run);

namespace {

float to_f(float x) { return x; }
float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
float to_f(__half x) { return __half2float(x); }
template <class T>
T from_f(float x) {
  if constexpr (std::is_same_v<T, float>) return x;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(x);
  else return __float2half_rn(x);
}

double sig(double x) { return 1 / (1 + std::exp(-x)); }

struct Err {
  double worst = 0;
  std::string what;
  void add(const char* name, double got, double want, double tol) {
    const double e = std::fabs(got - want) / tol;
    if (!(e <= worst)) worst = e, what = name;  // NaN becomes the worst
  }
};

// n elements starting `shift` bytes past a 32-byte boundary: a tensor at a
// storage offset (x[1:] of a larger buffer), aligned to `shift` and no more.
template <class E>
struct Buf {
  std::vector<unsigned char> raw;
  E* p;
  size_t n;
  Buf(size_t n_, size_t shift) : raw(n_ * sizeof(E) + 64, 0), n(n_) {
    const uintptr_t base = (reinterpret_cast<uintptr_t>(raw.data()) + 31) & ~uintptr_t(31);
    p = reinterpret_cast<E*>(base + shift);
  }
  E* data() { return p; }
  size_t size() const { return n; }
  E& operator[](size_t i) { return p[i]; }
  E* begin() { return p; }
  E* end() { return p + n; }
};

// views: the persistent kernels' inputs at the least alignment they accept
// (8 bytes; 16 for w_hh) instead of the allocator's.
template <class T>
bool run_case(DType dt, int T_, int B, int H, const Geom* fwd_g, const Geom* bwd_g,
              const char* label, bool views = false) {
  const size_t s8 = views ? 8 : 0, s16 = views ? 16 : 0;
  const int G = 4 * H, Bp = (B + 15) / 16 * 16;
  const double tol = dt == DType::kFloat32 ? 2e-5 : dt == DType::kFloat16 ? 4e-3 : 3e-2;
  std::mt19937 rng(1234 + T_ * 7 + B * 131 + H);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  auto fill = [&](auto& v, float scale) {
    for (T& x : v) x = from_f<T>(scale * u(rng));
  };
  Buf<T> gx(size_t(T_) * B * G, s8), w(size_t(G) * H, s16), dy(size_t(T_) * B * H, s8);
  std::vector<T> h0(size_t(B) * H), c0(size_t(B) * H), dhT(size_t(B) * H), dcT(size_t(B) * H);
  fill(gx, 1.5f), fill(w, 2.f / std::sqrt(float(H))), fill(h0, 1.f), fill(c0, 1.f);
  fill(dy, 1.f), fill(dhT, 1.f), fill(dcT, 1.f);

  const DeviceLimits lim{132, 232448};
  Plan pf = plan_persistent(false, dt, T_, B, H, lim), pb = plan_persistent(true, dt, T_, B, H, lim);
  if (fwd_g) pf.g = *fwd_g, pf.persistent = true;
  if (bwd_g) pb.g = *bwd_g, pb.persistent = true;
  if (!pf.persistent || !pb.persistent) {
    std::printf("%s: not persistent: %s / %s\n", label, pf.why.c_str(), pb.why.c_str());
    return false;
  }
  pf.g.T = pb.g.T = T_;
  for (const Plan* p : {&pf, &pb}) {
    const bool bwd = p == &pb;
    if (make_layout(bwd, dt, p->g).total > lim.smem_optin) {
      std::printf("%s: geometry does not fit\n", label);
      return false;
    }
  }

  // ---- forward (kernel)
  std::vector<T> y(size_t(T_) * B * H), hbuf(size_t(2) * Bp * H);
  Buf<T> gates(size_t(T_) * B * G, s8);
  Buf<float> c_all(size_t(T_ + 1) * B * H, s8);
  std::memset(hbuf.data(), 0, hbuf.size() * sizeof(T));
  std::memcpy(hbuf.data() + size_t(Bp) * H, h0.data(), h0.size() * sizeof(T));
  for (size_t i = 0; i < c0.size(); ++i) c_all[i] = to_f(c0[i]);
  std::vector<unsigned> counter(size_t(pf.g.n_bs) * kCounterStride, 0u);
  const FwdArgs fa{gx.data(), w.data(), y.data(), c_all.data(), gates.data(), hbuf.data(),
                   counter.data()};
  if (const char* bad = misaligned(fa)) {
    std::printf("%s: forward refuses %s as misaligned\n", label, bad);
    return false;
  }
  if (launch_fwd_persistent(dt, pf.g, fa, nullptr) != cudaSuccess) return false;

  // ---- forward (float64 reference, h rounded to the dtype like the contract)
  Err ef;
  std::vector<double> h(size_t(B) * H), c(size_t(B) * H);
  for (size_t i = 0; i < h.size(); ++i) h[i] = to_f(h0[i]), c[i] = to_f(c0[i]);
  for (int t = 0; t < T_; ++t) {
    std::vector<double> hn(h.size());
    for (int b = 0; b < B; ++b)
      for (int j = 0; j < H; ++j) {
        double a[4];
        for (int q = 0; q < 4; ++q) {
          double s = to_f(gx[(size_t(t) * B + b) * G + q * H + j]);
          for (int k = 0; k < H; ++k) s += h[size_t(b) * H + k] * to_f(w[size_t(q * H + j) * H + k]);
          a[q] = s;
        }
        a[0] = sig(a[0]), a[1] = sig(a[1]), a[2] = std::tanh(a[2]), a[3] = sig(a[3]);
        const size_t k = size_t(b) * H + j, row = size_t(t) * B + b;
        c[k] = a[1] * c[k] + a[0] * a[2];
        hn[k] = to_f(from_f<T>(float(a[3] * std::tanh(c[k]))));
        ef.add("y", to_f(y[row * H + j]), hn[k], tol);
        ef.add("c_all", c_all[(row + B) * H + j], c[k], tol);
        for (int q = 0; q < 4; ++q) ef.add("gates", to_f(gates[row * G + q * H + j]), a[q], tol);
      }
    h = hn;
  }

  // ---- backward (kernel), on the kernel's own forward outputs
  std::vector<T> dgx(size_t(T_) * B * G), dh0(size_t(B) * H), dc0(size_t(B) * H);
  const size_t xelems = (dt == DType::kBFloat16 ? 4 : 2) * size_t(Bp) * G;
  std::vector<unsigned char> xbuf(xelems * (dt == DType::kBFloat16 ? 2 : 4), 0);
  counter.assign(size_t(pb.g.n_bs) * kCounterStride, 0u);
  const BwdArgs ba{dy.data(), dhT.data(), dcT.data(), w.data(), c_all.data(), gates.data(),
                   dgx.data(), dh0.data(), dc0.data(), xbuf.data(), counter.data()};
  if (const char* bad = misaligned(ba)) {
    std::printf("%s: backward refuses %s as misaligned\n", label, bad);
    return false;
  }
  if (launch_bwd_persistent(dt, pb.g, ba, nullptr) != cudaSuccess) return false;

  // ---- backward (float64 reference)
  Err eb;
  std::vector<double> dh(size_t(B) * H), dc(size_t(B) * H), dg(size_t(B) * G);
  for (size_t i = 0; i < dh.size(); ++i) dh[i] = to_f(dhT[i]), dc[i] = to_f(dcT[i]);
  for (int t = T_ - 1; t >= 0; --t) {
    for (int b = 0; b < B; ++b)
      for (int j = 0; j < H; ++j) {
        const size_t k = size_t(b) * H + j, row = size_t(t) * B + b;
        const double i = to_f(gates[row * G + j]), f = to_f(gates[row * G + H + j]);
        const double g = to_f(gates[row * G + 2 * H + j]), o = to_f(gates[row * G + 3 * H + j]);
        const double tc = std::tanh(double(c_all[(row + B) * H + j]));
        const double dht = to_f(dy[row * H + j]) + dh[k];
        const double dct = dc[k] + dht * o * (1 - tc * tc);
        const double d4[4] = {dct * g * i * (1 - i), dct * c_all[row * H + j] * f * (1 - f),
                              dct * i * (1 - g * g), dht * tc * o * (1 - o)};
        for (int q = 0; q < 4; ++q) {
          dg[size_t(b) * G + q * H + j] = d4[q];
          eb.add("dgx", to_f(dgx[row * G + q * H + j]), d4[q], tol);
        }
        dc[k] = dct * f;
      }
    for (int b = 0; b < B; ++b)
      for (int j = 0; j < H; ++j) {
        double s = 0;
        for (int r = 0; r < G; ++r) s += dg[size_t(b) * G + r] * to_f(w[size_t(r) * H + j]);
        dh[size_t(b) * H + j] = s;
      }
  }
  for (size_t k = 0; k < dh.size(); ++k) {
    eb.add("dh0", to_f(dh0[k]), dh[k], tol);
    eb.add("dc0", to_f(dc0[k]), dc[k], tol);
  }
  const bool ok = ef.worst <= 1 && eb.worst <= 1;
  std::printf("%-40s fwd[%s] bwd[%s] worst err/tol fwd %.3f (%s) bwd %.3f (%s) %s\n", label,
              describe(pf).c_str(), describe(pb).c_str(), ef.worst, ef.what.c_str(), eb.worst,
              eb.what.c_str(), ok ? "ok" : "FAIL");
  return ok;
}

// The alignment rule (kernels.h misaligned()) on views one element past an
// aligned start, for 2- and 4-byte elements: each input is refused by name;
// the offsets run_case(views) uses are accepted.
bool alignment_rules() {
  alignas(64) static unsigned char mem[1024];
  unsigned char* const a = mem;  // 64-byte aligned
  bool ok = true;
  auto expect = [&](const char* got, const char* want, const char* what) {
    const bool same = (got == nullptr) == (want == nullptr) &&
                      (got == nullptr || std::strcmp(got, want) == 0);
    if (!same) std::printf("alignment rule, %s: got %s, want %s\n", what, got ? got : "accepted",
                           want ? want : "accepted");
    ok &= same;
  };
  for (const int e : {2, 4}) {
    const FwdArgs f{a, a, a, reinterpret_cast<float*>(a), a, a, nullptr};
    expect(misaligned(f), nullptr, "fwd aligned");
    FwdArgs g = f;
    g.gx = a + e;
    expect(misaligned(g), "gx", "fwd gx[1:]");
    g = f, g.w_hh = a + e;
    expect(misaligned(g), "w_hh", "fwd w_hh[1:]");
    g = f, g.gx = a + 8, g.w_hh = a + 16;
    expect(misaligned(g), nullptr, "fwd gx +8 B, w_hh +16 B");
    const BwdArgs b{a, a, a, a, reinterpret_cast<float*>(a), a, a, a, a, a, nullptr};
    expect(misaligned(b), nullptr, "bwd aligned");
    BwdArgs c = b;
    c.dy = a + e;
    expect(misaligned(c), "dy", "bwd dy[1:]");
    c = b, c.gates = a + e;
    expect(misaligned(c), "gates", "bwd gates[1:]");
    c = b, c.c_all = reinterpret_cast<float*>(a + 4);
    expect(misaligned(c), "c_all", "bwd c_all[1:]");
    c = b, c.w_hh = a + e;
    expect(misaligned(c), "w_hh", "bwd w_hh[1:]");
    c = b, c.dy = a + 8, c.gates = a + 8, c.c_all = reinterpret_cast<float*>(a + 8), c.w_hh = a + 16;
    expect(misaligned(c), nullptr, "bwd +8 B, w_hh +16 B");
  }
  std::printf("%-40s %s\n", "alignment rules", ok ? "ok" : "FAIL");
  return ok;
}

// Geometry with the grid derived from U and BS.
Geom geom(int B, int H, int U, int BS, int MC, int KC, int KS, int NS = 2) {
  return Geom{0, B, H, U, BS, H / U, (B + BS - 1) / BS, MC, KC, KS, NS};
}

}  // namespace

// Usage: emulate_test [WORD...]: only the cases whose label contains one of
// the words (all cases without any).
int main(int argc, char** argv) {
  int fails = 0, ran = 0;
  auto run = [&](const char* label, auto&& body) {
    bool any = argc < 2;
    for (int i = 1; i < argc; ++i) any |= std::strstr(label, argv[i]) != nullptr;
    if (!any) return;
    ++ran;
    fails += !body(label);
  };
  constexpr auto bf16 = DType::kBFloat16, fp16 = DType::kFloat16, fp32 = DType::kFloat32;
  // First, before any case has opted a kernel in: a failed shared-memory
  // opt-in fails that launch only; the next launch tries again and runs.
  run("opt-in retried after a failure", [&](auto l) {
    charrnn_emu::set_attribute_failures() = 1;
    const bool first = run_case<__half>(fp16, 1, 3, 16, nullptr, nullptr, l);
    const bool again = run_case<__half>(fp16, 1, 3, 16, nullptr, nullptr, l);
    if (first || !again) std::printf("%s: first launch %s, second %s\n", l,
                                     first ? "ran" : "failed", again ? "ran" : "failed");
    return !first && again && charrnn_emu::set_attribute_failures() == 0;
  });
  // Planner-chosen geometries ("slices": more than one batch slice).
  run("bf16 T3 B5 H64", [&](auto l) {
    return run_case<__nv_bfloat16>(bf16, 3, 5, 64, nullptr, nullptr, l);
  });
  run("fp32 T3 B20 H32 slices", [&](auto l) {
    return run_case<float>(fp32, 3, 20, 32, nullptr, nullptr, l);
  });
  run("fp16 T1 B3 H16", [&](auto l) {
    return run_case<__half>(fp16, 1, 3, 16, nullptr, nullptr, l);
  });
  run("bf16 T2 B1 H128", [&](auto l) {
    return run_case<__nv_bfloat16>(bf16, 2, 1, 128, nullptr, nullptr, l);
  });
  run("fp32 T1 B16 H64", [&](auto l) {
    return run_case<float>(fp32, 1, 16, 64, nullptr, nullptr, l);
  });
  // Hand-picked: several M-chunks, K-chunks, K-split, batch slices.
  run("fp16 T2 B37 H48 chunked slices", [&](auto l) {
    const Geom f = geom(37, 48, 4, 32, 16, 16, 2), b = geom(37, 48, 16, 32, 16, 32, 2);
    return run_case<__half>(fp16, 2, 37, 48, &f, &b, l);
  });
  run("fp32 T3 B33 H32 chunked", [&](auto l) {
    const Geom f = geom(33, 32, 8, 48, 16, 16, 1), b = geom(33, 32, 16, 48, 32, 64, 1);
    return run_case<float>(fp32, 3, 33, 32, &f, &b, l);
  });
  run("bf16 T4 B20 H64 slices", [&](auto l) {
    const Geom f = geom(20, 64, 16, 16, 16, 32, 1), b = geom(20, 64, 32, 16, 16, 64, 4);
    return run_case<__nv_bfloat16>(bf16, 4, 20, 64, &f, &b, l);
  });
  run("bf16 T3 B24 H48 odd-k slices", [&](auto l) {  // 3 k-steps per chunk: one accumulator idle
    const Geom f = geom(24, 48, 8, 16, 16, 48, 1), b = geom(24, 48, 16, 16, 16, 48, 1);
    return run_case<__nv_bfloat16>(bf16, 3, 24, 48, &f, &b, l);
  });
  // Deeper A pipelines (NS = 3, 4 stages): more K-chunks than stages, fewer
  // (the prologue's empty groups), several M-chunks, batch slices.
  run("bf16 T3 B37 H64 stages3 slices", [&](auto l) {
    const Geom f = geom(37, 64, 8, 32, 16, 16, 1, 3), b = geom(37, 64, 16, 32, 16, 32, 1, 3);
    return run_case<__nv_bfloat16>(bf16, 3, 37, 64, &f, &b, l);
  });
  run("fp32 T2 B20 H32 stages4 chunked", [&](auto l) {
    const Geom f = geom(20, 32, 8, 32, 16, 16, 1, 4), b = geom(20, 32, 16, 32, 16, 16, 2, 4);
    return run_case<float>(fp32, 2, 20, 32, &f, &b, l);
  });
  run("fp16 T2 B9 H16 stages4 short", [&](auto l) {  // K / KC = 1 (fwd), 2 (bwd): < NS - 1
    const Geom f = geom(9, 16, 4, 16, 16, 16, 1, 4), b = geom(9, 16, 16, 16, 16, 32, 1, 4);
    return run_case<__half>(fp16, 2, 9, 16, &f, &b, l);
  });
  // Inputs at storage offsets (8 bytes; 16 for w_hh): the emulated cp.async
  // and __ldg assert the alignment the GPU needs.
  run("alignment rules", [&](auto) { return alignment_rules(); });
  run("fp32 T2 B20 H32 views slices", [&](auto l) {
    return run_case<float>(fp32, 2, 20, 32, nullptr, nullptr, l, true);
  });
  run("bf16 T2 B5 H64 views", [&](auto l) {
    return run_case<__nv_bfloat16>(bf16, 2, 5, 64, nullptr, nullptr, l, true);
  });
  run("fp16 T2 B3 H48 views", [&](auto l) {
    return run_case<__half>(fp16, 2, 3, 48, nullptr, nullptr, l, true);
  });
  wave_cases([&](const char* label, const std::function<bool(const char*)>& body) {
    run(label, body);
  });
  if (ran == 0) {
    std::printf("no case matches the words given\n");
    return 2;
  }
  std::printf("%s (%d cases)\n", fails ? "SOME CASES FAILED" : "all cases ok", ran);
  return fails ? 1 : 0;
}
