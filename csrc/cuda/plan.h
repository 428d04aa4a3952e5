// Geometry planner of the persistent LSTM kernels: a pure function of the
// problem size and two device limits, so it can be reasoned about (and tested)
// without a GPU. The binding (lstm_cuda.cpp) adds the occupancy check.
// Legend: B batch, H hidden units, U units per block, BS batch rows per block.
#pragma once

#include <string>

#include "kernels.h"

namespace charrnn_fast::cuda {

struct DeviceLimits {
  int sms;            // cudaDeviceProp::multiProcessorCount
  size_t smem_optin;  // cudaDeviceProp::sharedMemPerBlockOptin
};

struct Plan {
  bool persistent = false;
  Geom g{};
  size_t smem = 0;
  double cost = 0;  // modelled cycles per step (lower is better)
  std::string why;  // when not persistent: the reason
};

// The cheapest persistent geometry for one direction (bwd = backward kernel),
// or persistent = false and the reason. T is copied into the geometry.
Plan plan_persistent(bool bwd, DType dt, int T, int B, int H, const DeviceLimits& lim);

// "U=8 BS=64 grid=128 (128 x 1) MC=64 KC=128 KS=1 smem=201216" for logs and tests.
std::string describe(const Plan& p);

}  // namespace charrnn_fast::cuda
