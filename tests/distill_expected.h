// vitcuda — the distillation loss (Backend::distill_loss) of small explicit examples, from the
// textbook formulas in double: softmax as exp(z)/Σexp(z) without the max shift and log q as the
// log of that quotient, so the tests compare the ops' log-sum-exp form with an independent
// computation (the logits of the examples are small enough for the plain form to be accurate).
#pragma once
#include <cmath>
#include <vector>

#include "vitcuda/backend.h"

namespace vitcuda::test {

struct DistillExpected {
  std::vector<double> loss;  // L[b]
  std::vector<double> grad;  // ∂L[b]/∂s[b, j]
};

inline DistillExpected distill_expected(const std::vector<double>& s, const std::vector<double>& t, int B, int C,
                                        Distill kind, double tau) {
  DistillExpected e{std::vector<double>(B), std::vector<double>(size_t(B) * C)};
  for (int b = 0; b < B; ++b) {
    const double* sb = s.data() + size_t(b) * C;
    const double* tb = t.data() + size_t(b) * C;
    double* g = e.grad.data() + size_t(b) * C;
    if (kind == Distill::Hard) {
      int y = 0;  // the first index of the teacher's maximum
      for (int j = 1; j < C; ++j)
        if (tb[j] > tb[y]) y = j;
      double z = 0;
      for (int j = 0; j < C; ++j) z += std::exp(sb[j]);
      e.loss[b] = -std::log(std::exp(sb[y]) / z);  // CE = −log softmax(s)_y
      for (int j = 0; j < C; ++j) g[j] = std::exp(sb[j]) / z - (j == y ? 1.0 : 0.0);
    } else {
      double zs = 0, zt = 0;
      for (int j = 0; j < C; ++j) {
        zs += std::exp(sb[j] / tau);
        zt += std::exp(tb[j] / tau);
      }
      double kl = 0;
      for (int j = 0; j < C; ++j) {
        const double p = std::exp(sb[j] / tau) / zs, q = std::exp(tb[j] / tau) / zt;
        kl += q * std::log(q / p);
        g[j] = tau * (p - q);  // τ²·∂KL/∂s = τ²·(p − q)/τ
      }
      e.loss[b] = tau * tau * kl;
    }
  }
  return e;
}

}  // namespace vitcuda::test
