// vitcuda MPI tests — what tests/mpi/test_*.cpp share: the job's communicator, made by main()
// (tests/mpi/mpi_main.cpp) before any test runs. The binary runs under mpirun (ctest mpi_tests:
// two ranks); every rank runs every test in the same order, so a test's collectives match across
// ranks. A test must reach the same collectives on every rank: check values with EXPECT_*
// (ASSERT_* returns early on one rank and leaves the others waiting) after the last collective.
#pragma once
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "tests/error_of.h"  // expect_error
#include "vitcuda/comm.h"

namespace vitcuda::test {

// The "mpi" communicator of this job (bound to whatever backend the test last bound it to).
Communicator& test_comm();

}  // namespace vitcuda::test
