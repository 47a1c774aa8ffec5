// vitcuda MPI tests — vitcuda_mpi_abort_probe: Communicator::abort ends the whole job (ctest
// mpi_abort_ends_job). Rank 1 prints a line and aborts with code 3 while rank 0 waits in a barrier
// that rank 1 never reaches: the job ends only because abort() takes every rank down. Rank 0
// printing after the barrier means abort() did not.
#include <cstdio>

#include "vitcuda/comm.h"

int main() {
  auto comm = vitcuda::make_communicator("mpi");
  if (comm->world_size() < 2) {
    std::fprintf(stderr, "vitcuda_mpi_abort_probe: needs 2 or more ranks (mpirun -np 2), got %d\n", comm->world_size());
    return 2;
  }
  if (comm->rank() == 1) {
    std::printf("abort probe: rank 1 aborts with code 3\n");
    comm->abort(3);
  }
  comm->barrier();
  std::printf("abort probe: rank %d passed the barrier: abort() did not end the job\n", comm->rank());
  return 0;
}
