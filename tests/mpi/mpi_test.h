// vitcuda MPI tests — what tests/mpi/test_*.cpp share: the job's communicator, made by main()
// (tests/mpi/mpi_main.cpp) before any test runs. The binary runs under mpirun (ctest mpi_tests:
// two ranks); every rank runs every test in the same order, so a test's collectives match across
// ranks. A test must reach the same collectives on every rank: check values with EXPECT_*
// (ASSERT_* returns early on one rank and leaves the others waiting) after the last collective.
#pragma once
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "vitcuda/comm.h"

namespace vitcuda::test {

// The "mpi" communicator of this job (bound to whatever backend the test last bound it to).
Communicator& test_comm();

// Runs fn and expects a vitcuda::Error whose message contains every string of `parts`. Returns
// the message ("" when nothing was thrown, which is a failure).
template <typename Fn>
std::string expect_comm_error(Fn&& fn, std::initializer_list<const char*> parts) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
    return msg;
  }
  ADD_FAILURE() << "no vitcuda::Error was thrown";
  return "";
}

}  // namespace vitcuda::test
