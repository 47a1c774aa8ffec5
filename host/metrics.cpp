// vitcuda — the confusion matrix and per-class accuracy (include/vitcuda/metrics.h).
#include "vitcuda/metrics.h"

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "vitcuda/tensor.h"

namespace vitcuda {
namespace {

std::string class_name(const std::vector<std::string>& names, int i) {
  return i < int(names.size()) ? names[i] : std::to_string(i);
}

// CSV field: quoted when it holds a comma, a quote or a line break.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

void ConfusionMatrix::add(int truth, int predicted) {
  if (truth < 0 || truth >= num_classes || predicted < 0 || predicted >= num_classes)
    throw Error("confusion matrix: class pair (" + std::to_string(truth) + ", " + std::to_string(predicted) +
                ") is outside [0, " + std::to_string(num_classes) + ")");
  ++counts[size_t(truth) * num_classes + predicted];
}

int64_t ConfusionMatrix::total() const {
  int64_t n = 0;
  for (int64_t c : counts) n += c;
  return n;
}

int64_t ConfusionMatrix::support(int truth) const {
  int64_t n = 0;
  for (int p = 0; p < num_classes; ++p) n += at(truth, p);
  return n;
}

double ConfusionMatrix::accuracy() const {
  int64_t hit = 0;
  for (int t = 0; t < num_classes; ++t) hit += at(t, t);
  const int64_t n = total();
  return n > 0 ? double(hit) / n : 0.0;
}

double ConfusionMatrix::class_accuracy(int truth) const {
  const int64_t n = support(truth);
  return n > 0 ? double(at(truth, truth)) / n : std::numeric_limits<double>::quiet_NaN();
}

std::string ConfusionMatrix::to_csv(const std::vector<std::string>& names) const {
  std::ostringstream s;
  s << "true\\pred";
  for (int p = 0; p < num_classes; ++p) s << ',' << csv_field(class_name(names, p));
  s << '\n';
  for (int t = 0; t < num_classes; ++t) {
    s << csv_field(class_name(names, t));
    for (int p = 0; p < num_classes; ++p) s << ',' << at(t, p);
    s << '\n';
  }
  return s.str();
}

std::string ConfusionMatrix::per_class_csv(const std::vector<std::string>& names) const {
  std::ostringstream s;
  s << "class,name,support,correct,accuracy\n";
  for (int t = 0; t < num_classes; ++t) {
    s << t << ',' << csv_field(class_name(names, t)) << ',' << support(t) << ',' << at(t, t) << ',';
    const double a = class_accuracy(t);
    if (!std::isnan(a)) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.6f", a);
      s << buf;
    }
    s << '\n';
  }
  return s.str();
}

ConfusionMatrix confusion_matrix(const std::vector<int32_t>& labels, const std::vector<int32_t>& predictions,
                                 int num_classes) {
  if (labels.size() != predictions.size())
    throw Error("confusion matrix: " + std::to_string(labels.size()) + " labels but " +
                std::to_string(predictions.size()) + " predictions");
  if (num_classes <= 0) throw Error("confusion matrix: num_classes must be positive");
  ConfusionMatrix cm(num_classes);
  for (size_t i = 0; i < labels.size(); ++i) cm.add(labels[i], predictions[i]);
  return cm;
}

}  // namespace vitcuda
