// vitcuda tests — the message of the vitcuda::Error a call throws: error_of (no expectation), or
// expect_error (expects one naming each of some parts).
#pragma once
#include <gtest/gtest.h>

#include <initializer_list>
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

// Runs fn and expects a vitcuda::Error whose message contains every string of `parts` (the op,
// the argument, ...). Returns that message ("" when nothing was thrown).
template <typename Fn>
std::string expect_error(Fn&& fn, std::initializer_list<const char*> parts) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
    return msg;
  }
  std::string expected;
  for (const char* p : parts) expected += std::string(expected.empty() ? "" : ", ") + "'" + p + "'";
  ADD_FAILURE() << "no vitcuda::Error was thrown (expected one naming " << expected << ")";
  return "";
}

}  // namespace vitcuda::test
