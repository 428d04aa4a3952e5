// The torch side of planning the CUDA LSTM ops (choose.cpp): the path and
// persistent geometry of each direction of a call, from the pure planner
// (plan.h) plus what needs the device and the environment: the occupancy
// check, a cache, and the path forced by CHARRNN_FAST_PATH. The rule itself is
// at the top of lstm_cuda.cpp, which launches what this chooses.
// Legend: T steps, B batch, H hidden units.
#pragma once

#include <ATen/ATen.h>

#include "checks.h"
#include "plan.h"

namespace charrnn_fast::cuda {

// The kernels' tag for dtype s; an error naming the dtypes they take otherwise.
DType dtype_tag(at::ScalarType s);

// The (forward, backward) paths forced by the environment, read at every call;
// an error when the setting is malformed.
ForcedPaths forced_paths();

// The plan for one direction (bwd: the backward) of a call of sizes d on CUDA
// device dev: the forced path, else persistent when a geometry fits, is
// co-resident and is modelled cheaper than the stepwise path (plan.h,
// compare_with_stepwise). A forced persistent path that cannot run is an error.
Plan choose(bool bwd, const ForcedPaths& f, DType dt, const Dims& d, int dev);

}  // namespace charrnn_fast::cuda
