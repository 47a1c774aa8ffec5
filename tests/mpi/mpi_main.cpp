// vitcuda MPI tests — main() of vitcuda_mpi_tests: the job's communicator first (it initialises
// MPI), then the tests on every rank; rank 0 prints gtest's report, the other ranks only their
// failures, and every rank exits non-zero when a test failed on any rank (mpirun reports one
// failing rank's status, ctest sees it either way).
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>

#include "tests/mpi/mpi_test.h"
#include "vitcuda/comm.h"

namespace {

std::unique_ptr<vitcuda::Communicator> g_comm;

// On ranks other than 0: each failed assertion, with the rank and test named (gtest's own printer
// is removed there, or every rank would print the whole report).
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  // The test's name is kept at its start: OnTestPartResult runs under gtest's lock, which
  // UnitTest::current_test_info() would take again (a deadlock).
  void OnTestStart(const ::testing::TestInfo& t) override { test_ = std::string(t.test_suite_name()) + "." + t.name(); }
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] FAILED %s at %s:%d\n%s\n", rank_, test_.c_str(),
                 r.file_name() ? r.file_name() : "?", r.line_number(), r.message());
    std::fflush(stderr);
  }

 private:
  int rank_;
  std::string test_;
};

}  // namespace

vitcuda::Communicator& vitcuda::test::test_comm() { return *g_comm; }

int main(int argc, char** argv) {
  g_comm = vitcuda::make_communicator("mpi");
  ::testing::InitGoogleTest(&argc, argv);
  if (g_comm->rank() != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(g_comm->rank()));
  }
  int64_t failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  g_comm->all_reduce_host(&failed, 1, vitcuda::ReduceOp::Max);
  if (g_comm->rank() == 0 && failed) std::fprintf(stderr, "vitcuda_mpi_tests: a test failed on some rank\n");
  g_comm.reset();  // the last MPI communicator: MPI_Finalize
  return failed ? 1 : 0;
}
