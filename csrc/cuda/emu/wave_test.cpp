// Logic check of the wavefront forward (wavefront_fwd.cu) on the CPU emulator:
// every layer's y, c_all and gates against a float64 loop of the stacked LSTM
// on the same rounded inputs (layer l >= 1 takes the rounded h of layer l - 1,
// as the kernel does), for planner-chosen and hand-picked geometries; and the
// planner's rules (who may take the wavefront, who falls back and why).
// Registered in emulate_test.cpp's main; built and run by run.sh.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../wavefront.h"

using namespace charrnn_fast::cuda;

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

const DeviceLimits kH100{132, 232448, 50u << 20};

template <class T>
bool wave_case(DType dt, int L, int T_, int B, int H, const Geom* forced, const Geom* bforced,
               const char* label) {
  const int G = 4 * H, Bp = (B + 15) / 16 * 16;
  const double tol = dt == DType::kFloat32 ? 2e-5 : dt == DType::kFloat16 ? 4e-3 : 3e-2;
  Plan p = plan_wavefront(dt, L, T_, B, H, kH100);
  if (forced) {
    p.g = *forced, p.g.T = T_, p.persistent = true;
    p.smem = make_wave_layout(dt, p.g).total, p.cost = p.l2_cost = 0;  // not modelled
  }
  if (!p.persistent) {
    std::printf("%s: no wavefront: %s\n", label, p.why.c_str());
    return false;
  }
  if (L * p.g.n_us * p.g.n_bs > kH100.sms || make_wave_layout(dt, p.g).total > kH100.smem_optin) {
    std::printf("%s: geometry does not fit\n", label);
    return false;
  }
  std::mt19937 rng(99 + L * 11 + T_ * 7 + B * 131 + H);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  auto fill = [&](std::vector<T>& v, float scale) {
    for (T& x : v) x = from_f<T>(scale * u(rng));
  };
  const float ws = 2.f / std::sqrt(float(H));
  std::vector<T> gx(size_t(T_) * B * G), w_hh(size_t(L) * G * H), h0(size_t(L) * B * H);
  std::vector<T> w_ih(size_t(L - 1) * G * H), bias(size_t(L - 1) * G), c0(size_t(L) * B * H);
  fill(gx, 1.5f), fill(w_hh, ws), fill(w_ih, ws), fill(bias, 0.5f), fill(h0, 1.f), fill(c0, 1.f);

  // ---- kernel
  std::vector<T> y(size_t(L) * T_ * B * H), gates(size_t(L) * T_ * B * G);
  std::vector<T> xbuf(size_t(L) * 2 * Bp * 2 * H, from_f<T>(0.f));
  std::vector<float> c_all(size_t(L) * (T_ + 1) * B * H);
  for (int l = 0; l < L; ++l)
    for (int b = 0; b < B; ++b)
      for (int j = 0; j < H; ++j) {
        xbuf[(size_t(l) * 2 * Bp + b) * 2 * H + H + j] = h0[(size_t(l) * B + b) * H + j];
        c_all[size_t(l) * (T_ + 1) * B * H + size_t(b) * H + j] = to_f(c0[(size_t(l) * B + b) * H + j]);
      }
  std::vector<unsigned> counter(size_t(p.g.n_bs) * kCounterStride, 0u);
  const WaveFwdArgs a{L, gx.data(), w_ih.data(), bias.data(), w_hh.data(), y.data(),
                      c_all.data(), gates.data(), xbuf.data(), counter.data()};
  if (const char* bad = misaligned(a)) {
    std::printf("%s: refuses %s as misaligned\n", label, bad);
    return false;
  }
  if (launch_wave_fwd(dt, p.g, a, nullptr) != cudaSuccess) {
    std::printf("%s: launch refused\n", label);
    return false;
  }

  // ---- float64 reference, layer by layer
  double worst = 0;
  std::string what;
  auto add = [&](const char* name, int l, double got, double want) {
    const double e = std::fabs(got - want) / tol;
    if (!(e <= worst)) worst = e, what = std::string(name) + "[" + std::to_string(l) + "]";
  };
  std::vector<double> below(size_t(T_) * B * H);  // rounded h of the layer below, all steps
  for (int l = 0; l < L; ++l) {
    std::vector<double> h(size_t(B) * H), c(size_t(B) * H), out(size_t(T_) * B * H);
    for (size_t i = 0; i < h.size(); ++i) {
      h[i] = to_f(h0[size_t(l) * B * H + i]), c[i] = to_f(c0[size_t(l) * B * H + i]);
    }
    const T* wh = w_hh.data() + size_t(l) * G * H;
    const T* wi = l > 0 ? w_ih.data() + size_t(l - 1) * G * H : nullptr;
    const size_t yl = size_t(l) * T_ * B, cl = size_t(l) * (T_ + 1) * B;
    for (int t = 0; t < T_; ++t) {
      std::vector<double> hn(h.size());
      for (int b = 0; b < B; ++b)
        for (int j = 0; j < H; ++j) {
          double act[4];
          for (int q = 0; q < 4; ++q) {
            const size_t wr = size_t(q * H + j) * H;
            double s = l == 0 ? to_f(gx[(size_t(t) * B + b) * G + q * H + j])
                              : to_f(bias[size_t(l - 1) * G + q * H + j]);
            for (int k = 0; k < H; ++k) s += h[size_t(b) * H + k] * to_f(wh[wr + k]);
            if (l > 0) {
              for (int k = 0; k < H; ++k)
                s += below[(size_t(t) * B + b) * H + k] * to_f(wi[wr + k]);
            }
            act[q] = s;
          }
          act[0] = sig(act[0]), act[1] = sig(act[1]), act[2] = std::tanh(act[2]);
          act[3] = sig(act[3]);
          const size_t k = size_t(b) * H + j, row = size_t(t) * B + b;
          c[k] = act[1] * c[k] + act[0] * act[2];
          hn[k] = to_f(from_f<T>(float(act[3] * std::tanh(c[k]))));
          out[row * H + j] = hn[k];
          add("y", l, to_f(y[(yl + row) * H + j]), hn[k]);
          add("c_all", l, c_all[(cl + row + B) * H + j], c[k]);
          for (int q = 0; q < 4; ++q) {
            add("gates", l, to_f(gates[(yl + row) * G + q * H + j]), act[q]);
          }
        }
      h = hn;
    }
    below = out;
  }
  const double worst_fwd = worst;
  const std::string what_fwd = what;
  worst = 0, what.clear();

  // ---- backward (kernel), on the forward kernel's gates and c_all
  Plan pb = plan_wavefront_bwd(dt, L, T_, B, H, kH100);
  if (bforced) {
    pb.g = *bforced, pb.g.T = T_, pb.persistent = true;
    pb.smem = make_wave_bwd_layout(dt, pb.g).total, pb.cost = pb.l2_cost = 0;  // not modelled
  }
  if (!pb.persistent) {
    std::printf("%s: no backward wavefront: %s\n", label, pb.why.c_str());
    return false;
  }
  if (L * pb.g.n_us * pb.g.n_bs > kH100.sms ||
      make_wave_bwd_layout(dt, pb.g).total > kH100.smem_optin) {
    std::printf("%s: backward geometry does not fit\n", label);
    return false;
  }
  std::vector<T> dy(size_t(T_) * B * H), dhT(size_t(L) * B * H), dcT(size_t(L) * B * H);
  fill(dy, 1.f), fill(dhT, 1.f), fill(dcT, 1.f);
  std::vector<T> dgx(size_t(L) * T_ * B * G), dh0(size_t(L) * B * H), dc0(size_t(L) * B * H);
  const bool hilo = dt == DType::kBFloat16;
  std::vector<unsigned char> dxbuf(size_t(L) * 2 * (hilo ? 2 : 1) * Bp * 8 * H * (hilo ? 2 : 4), 0);
  counter.assign(size_t(pb.g.n_bs) * kCounterStride, 0u);
  const WaveBwdArgs ba{L, dy.data(), dhT.data(), dcT.data(), w_ih.data(), w_hh.data(),
                       c_all.data(), gates.data(), dgx.data(), dh0.data(), dc0.data(),
                       dxbuf.data(), counter.data()};
  if (const char* bad = misaligned(ba)) {
    std::printf("%s: backward refuses %s as misaligned\n", label, bad);
    return false;
  }
  if (launch_wave_bwd(dt, pb.g, ba, nullptr) != cudaSuccess) {
    std::printf("%s: backward launch refused\n", label);
    return false;
  }

  // ---- backward (float64 reference), top layer first; a lower layer's dy is
  // the dx of the layer above, dgates^(l+1) W_ih^(l+1).
  std::vector<double> from_above(size_t(T_) * B * H, 0.0);
  for (int l = L - 1; l >= 0; --l) {
    std::vector<double> dh(size_t(B) * H), dc(size_t(B) * H), dgl(size_t(T_) * B * G);
    for (size_t i = 0; i < dh.size(); ++i) {
      dh[i] = to_f(dhT[size_t(l) * B * H + i]), dc[i] = to_f(dcT[size_t(l) * B * H + i]);
    }
    const size_t gl = size_t(l) * T_ * B, cl = size_t(l) * (T_ + 1) * B;
    const T* wh = w_hh.data() + size_t(l) * G * H;
    for (int t = T_ - 1; t >= 0; --t) {
      for (int b = 0; b < B; ++b)
        for (int j = 0; j < H; ++j) {
          const size_t k = size_t(b) * H + j, row = size_t(t) * B + b;
          const T* gr = gates.data() + (gl + row) * G;
          const double i = to_f(gr[j]), f = to_f(gr[H + j]), g = to_f(gr[2 * H + j]);
          const double o = to_f(gr[3 * H + j]);
          const double tc = std::tanh(double(c_all[(cl + row + B) * H + j]));
          const double above = l == L - 1 ? to_f(dy[row * H + j]) : from_above[row * H + j];
          const double dht = above + dh[k];
          const double dct = dc[k] + dht * o * (1 - tc * tc);
          const double d4[4] = {dct * g * i * (1 - i),
                                dct * c_all[(cl + row) * H + j] * f * (1 - f),
                                dct * i * (1 - g * g), dht * tc * o * (1 - o)};
          for (int q = 0; q < 4; ++q) {
            dgl[row * G + q * H + j] = d4[q];
            add("dgx", l, to_f(dgx[(gl + row) * G + q * H + j]), d4[q]);
          }
          dc[k] = dct * f;
        }
      for (int b = 0; b < B; ++b)
        for (int j = 0; j < H; ++j) {
          double acc = 0;
          for (int r = 0; r < G; ++r)
            acc += dgl[(size_t(t) * B + b) * G + r] * to_f(wh[size_t(r) * H + j]);
          dh[size_t(b) * H + j] = acc;
        }
    }
    for (size_t k = 0; k < dh.size(); ++k) {
      add("dh0", l, to_f(dh0[size_t(l) * B * H + k]), dh[k]);
      add("dc0", l, to_f(dc0[size_t(l) * B * H + k]), dc[k]);
    }
    if (l > 0) {
      const T* wi = w_ih.data() + size_t(l - 1) * G * H;
      for (size_t row = 0; row < size_t(T_) * B; ++row)
        for (int j = 0; j < H; ++j) {
          double acc = 0;
          for (int r = 0; r < G; ++r) acc += dgl[row * G + r] * to_f(wi[size_t(r) * H + j]);
          from_above[row * H + j] = acc;
        }
    }
  }
  const bool ok = worst_fwd <= 1 && worst <= 1;
  std::printf("%-40s fwd[per layer %s] bwd[per layer %s] worst err/tol fwd %.3f (%s) bwd %.3f "
              "(%s) %s\n",
              label, geometry(p).c_str(), geometry(pb).c_str(), worst_fwd, what_fwd.c_str(),
              worst, what.c_str(), ok ? "ok" : "FAIL");
  return ok;
}

// Who takes the wavefront and who runs layer by layer, with the reason; an
// accepted plan's L grids fit the SMs and its layout the shared memory. And
// the wavefront's alignment rule.
bool wave_plan_rules() {
  bool ok = true;
  auto expect = [&](DType dt, int L, int T, int B, int H, bool want, const char* why_has) {
    const Plan p = plan_wavefront(dt, L, T, B, H, kH100);
    bool good = p.persistent == want && p.why.find(why_has) != std::string::npos;
    if (p.persistent) {
      good &= L * p.g.n_us * p.g.n_bs <= kH100.sms && p.g.H == H && p.g.T == T;
      good &= make_wave_layout(dt, p.g).total <= kH100.smem_optin && p.g.H % p.g.KC == 0;
    }
    if (!good) {
      std::printf("wave plan L=%d B=%d H=%d: %s [%s]: %s\n", L, B, H,
                  p.persistent ? "wavefront" : "layer by layer", geometry(p).c_str(),
                  p.why.c_str());
    }
    ok &= good;
  };
  constexpr auto bf16 = DType::kBFloat16, fp32 = DType::kFloat32;
  // The review's target shapes (3x512 B64 T100, 2x128 B50 T50). In fp32 the
  // 3x512 stack does not fit: 3 x 32 blocks of U = 16 need a 64 x 1024 fp32
  // slice each (264 KB).
  expect(bf16, 3, 100, 64, 512, true, "102 phases (not 300)");
  expect(fp32, 3, 100, 64, 512, false, "does not fit");
  expect(bf16, 2, 50, 50, 128, true, "51 phases (not 100)");
  expect(fp32, 2, 50, 50, 128, true, "51 phases (not 100)");
  // The backward's: T + L phases (s = 0..T per layer).
  auto expect_bwd = [&](DType dt, int L, int T, int B, int H, bool want, const char* why_has) {
    const Plan p = plan_wavefront_bwd(dt, L, T, B, H, kH100);
    bool good = p.persistent == want && p.why.find(why_has) != std::string::npos;
    if (p.persistent) {
      good &= L * p.g.n_us * p.g.n_bs <= kH100.sms && p.g.H == H && p.g.U % 16 == 0;
      good &= make_wave_bwd_layout(dt, p.g).total <= kH100.smem_optin && 4 * H % p.g.KC == 0;
    }
    if (!good) std::printf("wave bwd plan L=%d B=%d H=%d: %s\n", L, B, H, p.why.c_str());
    ok &= good;
  };
  expect_bwd(bf16, 3, 100, 64, 512, true, "103 phases (not 303)");
  expect_bwd(fp32, 2, 50, 50, 128, true, "52 phases (not 102)");
  expect_bwd(fp32, 3, 100, 64, 512, false, "does not fit");
  expect_bwd(bf16, 2, 100, 3, 40, false, "not a multiple of 16");
  expect(bf16, 1, 100, 64, 512, false, "one layer");
  expect(bf16, 2, 100, 3, 40, false, "not a multiple of 16");
  expect(fp32, 4, 100, 64, 1024, false, "does not fit");          // >= 128 units per layer-slice
  expect(bf16, 40, 100, 8, 512, false, "more than the 132 SMs");  // 40 layers x 4 blocks
  // The alignment rule names the first input the kernel's vector loads cannot
  // take; a one-layer call needs neither w_ih nor the bias.
  alignas(64) static unsigned char mem[256];
  unsigned char* const m = mem;
  const WaveFwdArgs al{2, m, m, m, m, m, reinterpret_cast<float*>(m), m, m, nullptr};
  WaveFwdArgs bad = al;
  const char* got[5];
  got[0] = misaligned(al);
  bad.bias = m + 2, got[1] = misaligned(bad);
  bad = al, bad.w_ih = m + 8, got[2] = misaligned(bad);
  bad = al, bad.gx = m + 4, got[3] = misaligned(bad);
  bad = al, bad.L = 1, bad.w_ih = nullptr, bad.bias = m + 2, got[4] = misaligned(bad);
  const char* want[5] = {nullptr, "bias", "w_ih", "gx", nullptr};
  for (int i = 0; i < 5; ++i) {
    const bool same = (got[i] == nullptr) == (want[i] == nullptr) &&
                      (got[i] == nullptr || std::strcmp(got[i], want[i]) == 0);
    if (!same) std::printf("wave alignment rule %d: got %s, want %s\n", i,
                           got[i] ? got[i] : "accepted", want[i] ? want[i] : "accepted");
    ok &= same;
  }
  std::printf("%-40s %s\n", "wave planner rules", ok ? "ok" : "FAIL");
  return ok;
}

Geom wgeom(int B, int H, int U, int BS, int MC, int KC, int KS, int NS = 2) {
  return Geom{0, B, H, U, BS, H / U, (B + BS - 1) / BS, MC, KC, KS, NS};
}

}  // namespace

void wave_cases(const std::function<void(const char*, const std::function<bool(const char*)>&)>& run) {
  constexpr auto bf16 = DType::kBFloat16, fp16 = DType::kFloat16, fp32 = DType::kFloat32;
  run("wave planner rules", [](const char*) { return wave_plan_rules(); });
  // Planner-chosen geometries: L = 2, 3; T = 1, 5; B = 1, 3; H = 48 (not a power of two).
  run("wave bf16 L2 T5 B3 H32", [=](const char* l) {
    return wave_case<__nv_bfloat16>(bf16, 2, 5, 3, 32, nullptr, nullptr, l);
  });
  run("wave fp32 L3 T5 B1 H48", [=](const char* l) {
    return wave_case<float>(fp32, 3, 5, 1, 48, nullptr, nullptr, l);
  });
  run("wave fp16 L3 T1 B3 H16", [=](const char* l) {
    return wave_case<__half>(fp16, 3, 1, 3, 16, nullptr, nullptr, l);
  });
  run("wave fp32 L2 T1 B1 H32", [=](const char* l) {
    return wave_case<float>(fp32, 2, 1, 1, 32, nullptr, nullptr, l);
  });
  // Hand-picked: batch slices (a counter per slice, shared by all layers),
  // several M- and K-chunks, K-split warps, deeper pipelines, T < L. At most
  // 24 blocks (6144 threads): ThreadSanitizer cannot start many more threads.
  run("wave fp16 L3 T4 B37 H48 chunked slices", [=](const char* l) {
    const Geom g = wgeom(37, 48, 16, 32, 16, 16, 2), b = wgeom(37, 48, 16, 32, 16, 64, 2);
    return wave_case<__half>(fp16, 3, 4, 37, 48, &g, &b, l);
  });
  run("wave fp32 L2 T3 B20 H32 stages3 slices", [=](const char* l) {
    const Geom g = wgeom(20, 32, 16, 16, 16, 16, 1, 3), b = wgeom(20, 32, 16, 16, 16, 32, 1, 3);
    return wave_case<float>(fp32, 2, 3, 20, 32, &g, &b, l);
  });
  run("wave bf16 L3 T2 B33 H64 chunked", [=](const char* l) {
    const Geom g = wgeom(33, 64, 16, 48, 16, 32, 1, 4), b = wgeom(33, 64, 32, 48, 32, 64, 1, 4);
    return wave_case<__nv_bfloat16>(bf16, 3, 2, 33, 64, &g, &b, l);
  });
}
