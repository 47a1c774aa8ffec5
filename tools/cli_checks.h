// vitcuda tools — the checks vit_train and vit_infer share: number flags parsed in full, finite
// and within a documented range (the README's "Input limits"), flag relations, parsing with
// exit status 1 on a flag error (0 after --help), and the datasets' channel rule.
#pragma once
#include <CLI/CLI.hpp>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "vitcuda/config.h"
#include "vitcuda/data.h"
#include "vitcuda/tensor.h"

namespace vitcuda::cli {

inline std::string fmt_number(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

// "positive and at most 1000", "non-negative and below 1", "in [0.001, 1000]".
inline std::string range_phrase(double lo, double hi, bool lo_open, bool hi_open) {
  if (lo == 0)
    return std::string(lo_open ? "positive" : "non-negative") + " and " + (hi_open ? "below " : "at most ") +
           fmt_number(hi);
  return std::string("in ") + (lo_open ? "(" : "[") + fmt_number(lo) + ", " + fmt_number(hi) + (hi_open ? ")" : "]");
}

// A float flag (or each value of a vector flag): the whole text is a number, finite, and its
// float value within the range. NaN fails every comparison, so the test is !(lo <= v <= hi):
// CLI::Range(lo, hi) lets NaN through.
inline CLI::Validator real(double lo, double hi, bool lo_open = false, bool hi_open = false) {
  const std::string phrase = range_phrase(lo, hi, lo_open, hi_open);
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = s.empty() || std::isspace(static_cast<unsigned char>(s[0])) ? 0 : std::strtod(s.c_str(), &end);
        if (!end || end == s.c_str() || *end != '\0') return "'" + s + "' is not a number";
        if (!std::isfinite(v))
          return "must be a finite number" + std::string(phrase[0] == 'i' ? " " : ", ") + phrase + ", got " + s;
        const double f = double(float(v));  // the flags are floats: 1e39 would be inf, 1e-50 zero
        const bool ok = (lo_open ? lo < f : lo <= f) && (hi_open ? f < hi : f <= hi);
        if (!ok) return "must be " + phrase + ", got " + s;
        return std::string();
      },
      phrase);
}

// An integer flag: optional sign and decimal digits only (no 1e3, 0x10, 2.5 or true), within
// [lo, hi].
inline CLI::Validator integer(long long lo, unsigned long long hi) {
  const std::string phrase = std::to_string(lo) + " to " + std::to_string(hi);
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        size_t i = 0;
        const bool neg = !s.empty() && s[0] == '-';
        if (!s.empty() && (s[0] == '-' || s[0] == '+')) i = 1;
        if (i == s.size()) return "'" + s + "' is not an integer";
        unsigned long long mag = 0;
        bool overflow = false;
        for (; i < s.size(); ++i) {
          if (!std::isdigit(static_cast<unsigned char>(s[i]))) return "'" + s + "' is not an integer";
          const unsigned d = unsigned(s[i] - '0');
          if (mag > (~0ull - d) / 10) overflow = true;
          if (!overflow) mag = mag * 10 + d;
        }
        // lo <= v <= hi for v = (neg ? -mag : mag), without a signed overflow.
        const unsigned long long lo_mag = lo < 0 ? 0ull - static_cast<unsigned long long>(lo) : 0;
        const bool ok = !overflow && (neg ? (mag == 0 ? lo <= 0 : lo < 0 && mag <= lo_mag)
                                          : mag <= hi && (lo <= 0 || mag >= static_cast<unsigned long long>(lo)));
        if (!ok) return "must be an integer from " + phrase + ", got " + s;
        return std::string();
      },
      phrase);
}

// A relation between two flags (given or default): refused, not clamped.
inline void require_at_most(const std::string& flag_a, double a, const std::string& flag_b, double b) {
  if (!(a <= b))
    throw CLI::ValidationError(flag_a, "must not be above " + flag_b + " " + fmt_number(b) + ", got " + fmt_number(a));
}

// Parses the flags. Returns -1 to go on, else the exit status: 0 after --help, 1 after a flag
// error (CLI11's own codes 105, 106, 109, ... are not what the README promises), which gets one
// "<tool>: error: ... (see --help)" line on stderr.
inline int parse_flags(CLI::App& app, const std::string& tool, int argc, char** argv) {
  app.failure_message([tool](const CLI::App*, const CLI::Error& e) {
    std::string what = e.what();
    for (char& c : what)
      if (c == '\n') c = ' ';  // one line
    return tool + ": error: " + what + " (see --help)\n";
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 1;
  }
  return -1;
}

// The channel rule of both tools: a fixed-format dataset (IDX, CIFAR binary, csv) must have the
// model's channel count; image folders and image files are decoded to the model's channels
// (load_dataset does that with spec.channels, as PIL's convert would).
inline void check_dataset_channels(const Dataset& d, const ViTConfig& cfg) {
  if (d.channels != cfg.in_chans)
    throw Error("dataset '" + d.name + "' has " + std::to_string(d.channels) + "-channel images but model " + cfg.name +
                " expects " + std::to_string(cfg.in_chans) + "-channel images");
}

}  // namespace vitcuda::cli
