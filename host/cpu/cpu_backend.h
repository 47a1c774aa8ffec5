// vitcuda — the "cpu" backend (fp32 for training, fp64 tensors for gradient checks): the
// reference every kernel is compared with and the no-GPU fallback. Built by make_backend("cpu").
#pragma once
#include <memory>

#include "vitcuda/backend.h"

namespace vitcuda {

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace vitcuda
