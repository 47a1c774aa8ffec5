// vitcuda tools — the check every path flag of vit_train and vit_infer shares: an empty path
// (typically an unset shell variable, `--output "$OUT"`) is refused, naming the flag, instead
// of meaning "no output" or "the current folder".
#pragma once
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <string>

#include "vitcuda/tensor.h"

namespace vitcuda::cli {

// CLI11 prefixes the message with the flag: "--output: is an empty path (an unset shell variable?)".
inline const CLI::Validator kNonEmptyPath(
    [](std::string& s) -> std::string {
      return s.empty() ? std::string("is an empty path (an unset shell variable?)") : std::string();
    },
    "PATH");

// A weights path as vit_infer's --checkpoint and vit_train's --distill-from take it: a file, or a
// vit_train output folder (its best.safetensors, else last.safetensors). `what` names the flag in
// the errors: the path does not exist, or is a folder holding neither file.
inline std::string resolve_weights(const std::string& path, const std::string& what) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0)
    throw Error(what + " '" + path + "' " +
                (errno == ENOENT ? std::string("does not exist") : std::string(": ") + std::strerror(errno)));
  if (!S_ISDIR(st.st_mode)) return path;  // a FIFO or a device is refused, without blocking, by the library's reader
  for (const char* name : {"best.safetensors", "last.safetensors"}) {
    const std::string p = path + "/" + name;
    if (stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return p;
  }
  throw Error(what + " '" + path + "' is a folder holding neither best.safetensors nor last.safetensors");
}

}  // namespace vitcuda::cli
