// vitcuda — Communicator: the collectives of data-parallel training, on the engines this field
// runs on (never a home-made transport):
//   "single"  one process (the default; needs no MPI at run time): every collective is the
//             identity, so code written for N ranks runs unchanged on one.
//   "mpi"     Open MPI (launched by mpirun / srun): host buffers; a tensor in device memory
//             ("cuda", "cuda-emu") is staged through host memory, so the emulated CUDA backend
//             runs the same code in CI.
//   "nccl"    NCCL on device buffers, on its own CUDA stream ordered against the backend's
//             stream with events; bootstrapped over MPI (the unique id is broadcast by rank 0),
//             as llm.c does. One GPU per local rank.
// Built when the libraries are found (VITCUDA_HAVE_MPI, VITCUDA_HAVE_NCCL); without them only
// "single" exists and make_communicator says why the others are missing.
//
// Collectives work in place on a Tensor of the bound backend's memory (Communicator::bind), of
// dtype F32, F64, I32 or I64 (and BF16 on "nccl" and "single"; Mean only of floating-point
// dtypes: an Error names the tensor and dtype otherwise), and are ordered with the backend's work: a
// collective sees every op enqueued before it and every later op sees its result, without the
// host waiting where the engine allows it (NCCL). Every rank must call the same collectives in
// the same order with the same sizes (MPI's rule).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vitcuda/backend.h"
#include "vitcuda/tensor.h"

namespace vitcuda {

enum class ReduceOp : uint8_t { Sum, Mean, Max, Min };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string name() const = 0;  // "single", "mpi", "nccl"
  virtual int rank() const = 0;          // 0 .. world_size() - 1
  virtual int world_size() const = 0;
  // This process's rank among the ranks on its machine (which GPU it takes) and their number.
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;
  bool is_root() const { return rank() == 0; }

  // The backend whose memory and stream the tensor collectives use. Call once before any tensor
  // collective ("nccl" creates its NCCL communicator and stream here; the backend must be "cuda").
  virtual void bind(Backend& backend) { backend_ = &backend; }
  Backend* backend() const { return backend_; }
  // Whether the tensor collectives may be recorded into a CUDA Graph (Backend::begin_capture):
  // true for "single" (nothing to record) and "nccl"; false for "mpi" (host calls).
  virtual bool graph_capturable() const = 0;

  // ---- tensor collectives (bound backend's memory, in place) ----
  virtual void all_reduce(const Tensor& t, ReduceOp op) = 0;
  // t holds world_size() equal chunks (numel divisible by world_size(), else an Error); after
  // the call chunk rank() holds the reduction of every rank's chunk rank(); the other chunks
  // are left as they were or clobbered (do not read them).
  virtual void reduce_scatter(const Tensor& t, ReduceOp op) = 0;
  // t holds world_size() equal chunks; every rank contributes its chunk rank() and receives all.
  virtual void all_gather(const Tensor& t) = 0;
  virtual void broadcast(const Tensor& t, int root) = 0;
  virtual void barrier() = 0;
  // Non-blocking all-reduce (gradient buckets overlapped with the backward pass): starts the
  // reduction of t after the work enqueued so far and returns a handle; wait(handle) makes the
  // backend's later work see the result. Handles are waited for in any order, each once.
  // Default: the blocking all_reduce, and wait() does nothing.
  virtual int all_reduce_start(const Tensor& t, ReduceOp op);
  virtual void wait(int handle);

  // ---- host values (any communicator, whatever the bound backend) ----
  virtual void all_reduce_host(double* values, int64_t n, ReduceOp op) = 0;
  virtual void all_reduce_host(int64_t* values, int64_t n, ReduceOp op) = 0;
  // Root's string on every rank.
  virtual std::string broadcast_string(const std::string& s, int root) = 0;

  // Ends every rank of the job at once with exit status `code` (MPI_Abort); "single": exit().
  // For a rank that failed alone: its error is printed first, and no other rank hangs waiting
  // for it in a collective.
  [[noreturn]] virtual void abort(int code) = 0;

 protected:
  Backend* backend_ = nullptr;
};

// An error that every rank raises identically (a flag that differs between ranks, found by a
// collective check): one rank reports it and every rank exits, without MPI_Abort.
class CollectiveError : public Error {
 public:
  using Error::Error;
};

// kind: "single", "mpi", "nccl" or "auto" (= "mpi" when this process was started by an MPI
// launcher (mpirun, srun: OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK, SLURM_NTASKS) with more
// than one rank and MPI is built in, else "single"). "mpi" and "nccl" initialise MPI
// (MPI_Init_thread, MPI_THREAD_FUNNELED) and finalise it when the last communicator is gone (MPI
// cannot start again after that: a program keeps one communicator while it uses MPI).
// Throws Error naming the kind when it is unknown or not built in.
std::unique_ptr<Communicator> make_communicator(const std::string& kind = "auto");
// Which kinds this build has ("single", and "mpi", "nccl" when found at build time).
std::vector<std::string> communicator_kinds();
// The rank and world size an MPI launcher gave this process through its environment (before any
// communicator exists; 0 and 1 when none did).
int launcher_rank();
int launcher_world_size();

// Every rank agrees on `text` (a description of what must be the same everywhere, e.g. the run
// record): rank 0's is broadcast and compared; when any rank's differs, every rank throws the
// same CollectiveError, naming the first differing rank, built by `describe(root_text,
// that_rank_text)` on that rank. No-op on one rank.
void check_same_on_every_rank(Communicator& comm, const std::string& text,
                              std::string (*describe)(const std::string& root, const std::string& mine, int rank));

}  // namespace vitcuda
