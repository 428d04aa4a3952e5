// The fused fp32 kernels (fused_impl.h) compiled for AVX2 + FMA (256-bit vectors, 16 registers).
// Every other header comes first, so the target pragma applies to the kernels only.
#include "fused.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma")
#define FUSED_VW 8
#define FUSED_NS avx2
#include "fused_impl.h"
#endif
