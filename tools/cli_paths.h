// vitcuda tools — the check every path flag of vit_train and vit_infer shares: an empty path
// (typically an unset shell variable, `--output "$OUT"`) is refused, naming the flag, instead
// of meaning "no output" or "the current folder".
#pragma once
#include <CLI/CLI.hpp>
#include <string>

namespace vitcuda::cli {

// CLI11 prefixes the message with the flag: "--output: is an empty path (an unset shell variable?)".
inline const CLI::Validator kNonEmptyPath(
    [](std::string& s) -> std::string {
      return s.empty() ? std::string("is an empty path (an unset shell variable?)") : std::string();
    },
    "PATH");

}  // namespace vitcuda::cli
