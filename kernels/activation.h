// vitcuda — the activations and their derivatives (exact erf GELU, the tanh approximation of
// GELU, tanh), one definition of each formula for every build: the kernels (device code, and the
// emulated cuBLASLt epilogues on the host: kernels/gemm.cu) and the CPU reference
// (host/cpu/ref_ops.cpp, in float and in double). Templated on the float type T; constants are
// written in double and rounded to T once.
//
// The float math calls erff / expf / tanhf by those names (not std::erf(float), which reaches
// them through a builtin GCC does not vectorise): on the device they are CUDA's; in
// host/cpu/ref_ops.cpp, declared with GCC's simd attribute, they let the `omp simd` activation
// loops call glibc's libmvec vector versions of these same formulas.
#pragma once
#include <cmath>

#include "kernels/host_device.h"
#include "vitcuda/backend.h"  // Act

namespace vitcuda {
// Math by float type for host and device (the float overloads name erff / expf / tanhf, see
// above; host/cpu/ref_ops.cpp's softmax uses exp_ too), and the activations' constants.
namespace hdmath {
VITCUDA_HD float erf_(float x) { return erff(x); }
VITCUDA_HD double erf_(double x) { return erf(x); }
VITCUDA_HD float exp_(float x) { return expf(x); }
VITCUDA_HD double exp_(double x) { return exp(x); }
VITCUDA_HD float tanh_(float x) { return tanhf(x); }
VITCUDA_HD double tanh_(double x) { return tanh(x); }

constexpr double kSqrt2OverPi = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kInvSqrt2 = 0.7071067811865476;     // 1/sqrt(2)
constexpr double kInvSqrt2Pi = 0.3989422804014327;   // 1/sqrt(2*pi)
constexpr double kGeluTanhC = 0.044715;              // GELU-tanh: tanh(sqrt(2/pi) (x + C x^3))
}  // namespace hdmath

// GELU(x) = x Φ(x), exact: 0.5 x (1 + erf(x / sqrt 2)).
template <typename T>
VITCUDA_HD T gelu_erf(T x) {
  using namespace hdmath;
  return T(0.5) * x * (T(1) + erf_(x * T(kInvSqrt2)));
}

// GELU'(x) = Φ(x) + x φ(x).
template <typename T>
VITCUDA_HD T gelu_erf_grad(T x) {
  using namespace hdmath;
  return T(0.5) * (T(1) + erf_(x * T(kInvSqrt2))) + x * T(kInvSqrt2Pi) * exp_(T(-0.5) * x * x);
}

// GELU, tanh approximation (cuBLASLt's GELU epilogues; timm's approximate='tanh').
template <typename T>
VITCUDA_HD T gelu_tanh(T x) {
  using namespace hdmath;
  return T(0.5) * x * (T(1) + tanh_(T(kSqrt2OverPi) * (x + T(kGeluTanhC) * x * x * x)));
}

template <typename T>
VITCUDA_HD T gelu_tanh_grad(T x) {
  using namespace hdmath;
  const T t = tanh_(T(kSqrt2OverPi) * (x + T(kGeluTanhC) * x * x * x));
  return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * T(kSqrt2OverPi) * (T(1) + T(3 * kGeluTanhC) * x * x);
}

template <typename T>
VITCUDA_HD T tanh_act(T x) {
  return hdmath::tanh_(x);
}

template <typename T>
VITCUDA_HD T tanh_grad(T x) {
  const T t = hdmath::tanh_(x);
  return T(1) - t * t;
}

// act(x) and act'(x) for an activation known at compile time (Act::None: x and 1).
template <Act A, typename T>
VITCUDA_HD T act_value(T x) {
  if constexpr (A == Act::GeluErf) {
    return gelu_erf(x);
  } else if constexpr (A == Act::GeluTanh) {
    return gelu_tanh(x);
  } else if constexpr (A == Act::Tanh) {
    return tanh_act(x);
  } else {
    return x;
  }
}

template <Act A, typename T>
VITCUDA_HD T act_derivative_value(T x) {
  if constexpr (A == Act::GeluErf) {
    return gelu_erf_grad(x);
  } else if constexpr (A == Act::GeluTanh) {
    return gelu_tanh_grad(x);
  } else if constexpr (A == Act::Tanh) {
    return tanh_grad(x);
  } else {
    return T(1);
  }
}

}  // namespace vitcuda
