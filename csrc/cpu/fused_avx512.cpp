// The fused fp32 kernels (fused_impl.h) compiled for AVX-512 (512-bit vectors, 32 registers).
// Every other header comes first, so the target pragma applies to the kernels only.
#include "fused.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,bmi2")
#define FUSED_VW 16
#define FUSED_NS avx512
#include "fused_impl.h"
#endif
