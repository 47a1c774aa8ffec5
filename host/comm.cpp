// vitcuda — the communicators' common parts (include/vitcuda/comm.h): the "single" communicator,
// make_communicator, the launcher's environment, check_same_on_every_rank, the default
// non-blocking all-reduce, and the tensor checks every communicator starts with
// (host/comm_internal.h). "mpi" lives in host/comm_mpi.cpp, "nccl" in kernels/comm_nccl.cpp.
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "host/comm_internal.h"
#include "vitcuda/comm.h"

// Why this build has no "nccl" communicator, set by CMake when it is not built (the CUDA toolkit,
// NCCL or MPI was not found at configure time).
#if !defined(VITCUDA_NCCL_MISSING)
#define VITCUDA_NCCL_MISSING "NCCL support was not configured"
#endif

namespace vitcuda {

// ---- the checks shared by every communicator ---------------------------------------------------
namespace comm_detail {

const char* op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "Sum";
    case ReduceOp::Mean: return "Mean";
    case ReduceOp::Max: return "Max";
    case ReduceOp::Min: return "Min";
  }
  return "invalid";
}

bool is_float(DType d) { return d == DType::F32 || d == DType::F64 || d == DType::BF16 || d == DType::F16; }

namespace {
std::string prefix(const Communicator& comm, const char* what) { return comm.name() + " " + what; }
}  // namespace

void check_collective(const Communicator& comm, const char* collective, const Tensor& t, bool reduce, ReduceOp op,
                      Shape shape, const std::vector<DType>& dtypes) {
  const std::string where = prefix(comm, collective);
  if (!t.defined() && (t.ndim() == 0 || t.numel() != 0)) throw Error(where + ": the tensor is undefined (Tensor{})");
  bool supported = false;
  std::string names;
  for (DType d : dtypes) {
    supported = supported || d == t.dtype();
    names += std::string(names.empty() ? "" : ", ") + dtype_name(d);
  }
  if (!supported)
    throw Error(where + " of tensor " + t.shape_str() + ": dtype " + dtype_name(t.dtype()) +
                " is not supported by the '" + comm.name() + "' communicator (supported: " + names + ")");
  if (reduce && op == ReduceOp::Mean && !is_float(t.dtype()))
    throw Error(where + " of tensor " + t.shape_str() + ": Mean needs a floating-point dtype (the mean of " +
                dtype_name(t.dtype()) + " values is not one); use Sum and divide");
  if (reduce && op != ReduceOp::Sum && op != ReduceOp::Mean && op != ReduceOp::Max && op != ReduceOp::Min)
    throw Error(where + ": invalid ReduceOp " + std::to_string(int(op)));
  if (shape == Shape::Chunked && t.numel() % comm.world_size() != 0)
    throw Error(where + " of tensor " + t.shape_str() + ": its " + std::to_string(t.numel()) +
                " elements do not split into " + std::to_string(comm.world_size()) +
                " equal chunks (one per rank): numel must be divisible by the world size");
  if (t.device() != Device::CPU) {
    const Backend* b = comm.backend();
    if (!b)
      throw Error(where + " of tensor " + t.shape_str() +
                  ": the tensor is in device memory but no backend is bound (call Communicator::bind first)");
    if (b->device() != t.device())
      throw Error(where + " of tensor " + t.shape_str() + ": the tensor is in device memory but the bound backend '" +
                  b->name() + "' is not a device backend");
  }
}

void check_root(const Communicator& comm, const char* collective, int root) {
  if (root < 0 || root >= comm.world_size())
    throw Error(prefix(comm, collective) + ": root " + std::to_string(root) + " is not a rank (0.." +
                std::to_string(comm.world_size() - 1) + ")");
}

void check_host_values(const Communicator& comm, const char* helper, const void* values, int64_t n) {
  if (n < 0) throw Error(prefix(comm, helper) + ": negative count " + std::to_string(n));
  if (n > 0 && !values) throw Error(prefix(comm, helper) + ": null values with count " + std::to_string(n));
}

}  // namespace comm_detail

using comm_detail::check_collective;
using comm_detail::Shape;

// ---- Communicator's defaults -------------------------------------------------------------------
// Without a non-blocking engine the reduction happens at start: correct, with no overlap.
int Communicator::all_reduce_start(const Tensor& t, ReduceOp op) {
  all_reduce(t, op);
  return 0;
}
void Communicator::wait(int handle) { (void)handle; }

// ---- "single": one process ------------------------------------------------------------------------
namespace {

class SingleComm final : public Communicator {
 public:
  std::string name() const override { return "single"; }
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  bool graph_capturable() const override { return true; }

  // The reduction of one rank's values is those values: every collective checks its arguments as
  // "mpi" and "nccl" do (so a misuse shows on one process too) and leaves the tensor as it is.
  void all_reduce(const Tensor& t, ReduceOp op) override {
    check_collective(*this, "all_reduce", t, true, op, Shape::Whole, dtypes());
  }
  void reduce_scatter(const Tensor& t, ReduceOp op) override {
    check_collective(*this, "reduce_scatter", t, true, op, Shape::Chunked, dtypes());
  }
  void all_gather(const Tensor& t) override {
    check_collective(*this, "all_gather", t, false, ReduceOp::Sum, Shape::Chunked, dtypes());
  }
  void broadcast(const Tensor& t, int root) override {
    comm_detail::check_root(*this, "broadcast", root);
    check_collective(*this, "broadcast", t, false, ReduceOp::Sum, Shape::Whole, dtypes());
  }
  void barrier() override {}

  void all_reduce_host(double* values, int64_t n, ReduceOp op) override {
    comm_detail::check_host_values(*this, "all_reduce_host", values, n);
    (void)op;
  }
  void all_reduce_host(int64_t* values, int64_t n, ReduceOp op) override {
    comm_detail::check_host_values(*this, "all_reduce_host", values, n);
    if (op == ReduceOp::Mean) throw Error("single all_reduce_host: Mean needs floating-point values, not int64");
  }
  std::string broadcast_string(const std::string& s, int root) override {
    comm_detail::check_root(*this, "broadcast_string", root);
    return s;
  }

  [[noreturn]] void abort(int code) override {
    // exit() flushes stdio too, but after the atexit handlers: flushing first keeps this rank's
    // last words (its error) ahead of whatever they print.
    std::fflush(stdout);
    std::fflush(stderr);
    std::exit(code);
  }

 private:
  // What "nccl" takes (the widest set), so code tested on one process runs on any communicator.
  static const std::vector<DType>& dtypes() {
    static const std::vector<DType> d = {DType::F32, DType::F64, DType::BF16, DType::I32, DType::I64};
    return d;
  }
};

// The first of `names` set in the environment, parsed as a non-negative int; -1 when none is.
int env_int(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const char* v = std::getenv(name);
    if (!v || !*v) continue;
    char* end = nullptr;
    const long x = std::strtol(v, &end, 10);
    if (*end == '\0' && x >= 0 && x <= 1 << 30) return int(x);
  }
  return -1;
}

}  // namespace

// Open MPI's mpirun (OMPI_COMM_WORLD_*), MPICH / Intel MPI's hydra (PMI_*), PMIx launchers
// (PMIX_RANK; they give no size variable) and Slurm's srun (SLURM_PROCID / SLURM_NTASKS).
int launcher_rank() {
  const int r = env_int({"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"});
  return r < 0 ? 0 : r;
}
int launcher_world_size() {
  const int n = env_int({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"});
  return n < 1 ? 1 : n;
}

std::vector<std::string> communicator_kinds() {
  std::vector<std::string> kinds = {"single"};
#if defined(VITCUDA_HAVE_MPI)
  kinds.push_back("mpi");
#endif
#if defined(VITCUDA_HAVE_NCCL)
  kinds.push_back("nccl");
#endif
  return kinds;
}

std::unique_ptr<Communicator> make_communicator(const std::string& kind) {
  if (kind == "single") return std::make_unique<SingleComm>();
  if (kind == "mpi") {
#if defined(VITCUDA_HAVE_MPI)
    return comm_detail::make_mpi_communicator();
#else
    throw Error(
        "communicator 'mpi': this build of vitcuda has no MPI (MPI's C development files were not found at "
        "configure time, or VITCUDA_MPI=OFF): install Open MPI (libopenmpi-dev openmpi-bin; tools/setup.sh) and "
        "reconfigure");
#endif
  }
  if (kind == "nccl") {
#if defined(VITCUDA_HAVE_NCCL)
    return comm_detail::make_nccl_communicator();
#else
    throw Error(std::string("communicator 'nccl': this build of vitcuda has no NCCL communicator: ") +
                VITCUDA_NCCL_MISSING);
#endif
  }
  if (kind == "auto") {
    const int n = launcher_world_size();
#if defined(VITCUDA_HAVE_MPI)
    if (n > 1) return comm_detail::make_mpi_communicator();
#else
    // Each of the launcher's processes would train alone: say so once, on the launcher's rank 0.
    if (n > 1 && launcher_rank() == 0)
      std::fprintf(stderr,
                   "vitcuda: started by an MPI launcher with %d ranks, but this build has no MPI: every rank "
                   "runs as a single process\n",
                   n);
#endif
    return std::make_unique<SingleComm>();
  }
  throw Error("unknown communicator kind '" + kind + "' (known: single, mpi, nccl, auto)");
}

// Rank 0's text goes to every rank; each compares its own; the smallest differing rank (world_size
// when none differs) is found with one Min reduction; that rank describes the difference and
// broadcasts the message, so every rank throws the same text and none is left waiting.
void check_same_on_every_rank(Communicator& comm, const std::string& text,
                              std::string (*describe)(const std::string& root, const std::string& mine, int rank)) {
  const int world = comm.world_size();
  if (world == 1) return;
  const std::string root_text = comm.broadcast_string(text, 0);
  int64_t first = text == root_text ? world : comm.rank();
  comm.all_reduce_host(&first, 1, ReduceOp::Min);
  if (first == world) return;
  const int differing = int(first);
  std::string message;
  if (comm.rank() == differing) {
    // describe() must not leave the others waiting in the broadcast below: its own error becomes
    // the message.
    try {
      message = describe ? describe(root_text, text, differing)
                         : "rank " + std::to_string(differing) + " differs from rank 0";
    } catch (const std::exception& e) {
      message = "rank " + std::to_string(differing) + " differs from rank 0 (describing it failed: " + e.what() + ")";
    }
  }
  message = comm.broadcast_string(message, differing);
  throw CollectiveError(message);
}

}  // namespace vitcuda
