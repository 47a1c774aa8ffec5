// vitcuda tests — the message of the vitcuda::Error a call throws, "(no error)" when it throws none.
#pragma once
#include <string>

#include "vitcuda/tensor.h"  // vitcuda::Error

namespace vitcuda::test {

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace vitcuda::test
