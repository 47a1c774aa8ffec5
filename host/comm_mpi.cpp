// vitcuda — the "mpi" communicator (include/vitcuda/comm.h): MPI's collectives on host memory.
// A tensor in host memory (Device::CPU) is reduced in place; one in device memory ("cuda",
// "cuda-emu") is staged through a host buffer with the bound backend's copy_to_host /
// copy_to_device, which synchronise, so the emulated CUDA backend runs the same code as a GPU.
// Built when CMake finds MPI (VITCUDA_HAVE_MPI).
//
// MPI is initialised by the first MPI-based communicator of the process (unless the program did
// it) and finalised when the last one is destroyed: MPI cannot start again after that, so a
// program keeps one communicator for as long as it uses MPI.
// MPI's C API alone: Open MPI's and MPICH's deprecated C++ bindings stay out (and their warnings).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "host/comm_internal.h"
#include "vitcuda/comm.h"

namespace vitcuda::comm_detail {
namespace {

// Elements per MPI call: counts are ints; tensors beyond 2^30 elements go in several calls.
constexpr int64_t kMaxCallElements = int64_t(1) << 30;

std::string mpi_error_string(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return "MPI error code " + std::to_string(rc);
  return std::string(text, size_t(len));
}

// Communicators use MPI_ERRORS_RETURN: a failed call becomes an Error naming the collective.
void check_mpi(int rc, const std::string& what) {
  if (rc != MPI_SUCCESS) throw Error("mpi " + what + " failed: " + mpi_error_string(rc));
}

// ---- MPI's lifetime: initialised once, finalised with the last communicator ---------------------
struct MpiLifetime {
  int users = 0;
  bool initialised_here = false;  // this library called MPI_Init_thread, so it finalises
  bool unfinished = false;        // a communicator died with requests in flight: no MPI_Finalize
};
MpiLifetime& lifetime() {
  static MpiLifetime l;
  return l;
}

void acquire_mpi() {
  int finalized = 0, initialized = 0;
  MPI_Finalized(&finalized);
  if (finalized)
    throw Error(
        "communicator 'mpi': MPI was finalised already in this process (the last MPI communicator was destroyed) "
        "and cannot start again: keep one communicator for as long as the program uses MPI");
  MPI_Initialized(&initialized);
  if (!initialized) {
    // FUNNELED: only the thread that made the communicator calls MPI (the training loop's).
    int provided = 0;
    const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) throw Error("communicator 'mpi': MPI_Init_thread failed: " + mpi_error_string(rc));
    lifetime().initialised_here = true;
  }
  ++lifetime().users;
}

void release_mpi() {
  MpiLifetime& l = lifetime();
  if (--l.users > 0 || !l.initialised_here || l.unfinished) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

MPI_Datatype mpi_type(DType d) {
  switch (d) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::I32: return MPI_INT32_T;
    case DType::I64: return MPI_INT64_T;
    default: break;
  }
  throw Error(std::string("mpi: dtype ") + dtype_name(d) +
              " has no MPI datatype here");  // check_collective refuses it first
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
    case ReduceOp::Mean: return MPI_SUM;  // Mean: the sum, divided afterwards
    case ReduceOp::Max: return MPI_MAX;
    case ReduceOp::Min: return MPI_MIN;
  }
  return MPI_SUM;
}

// Mean = Sum / world, element by element (a division, not a multiplication by 1/world, so a sum
// that is a multiple of world gives the exact mean).
void divide(void* data, int64_t n, DType d, int world) {
  if (d == DType::F32) {
    float* x = static_cast<float*>(data);
    for (int64_t i = 0; i < n; i++) x[i] /= float(world);
  } else if (d == DType::F64) {
    double* x = static_cast<double*>(data);
    for (int64_t i = 0; i < n; i++) x[i] /= double(world);
  }
}

const std::vector<DType>& mpi_dtypes() {
  static const std::vector<DType> d = {DType::F32, DType::F64, DType::I32, DType::I64};
  return d;
}

class MpiComm final : public Communicator {
 public:
  MpiComm() {
    acquire_mpi();
    try {
      // A communicator of its own: its collectives never match another library's on WORLD.
      check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
      check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
      check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
      check_mpi(MPI_Comm_size(comm_, &world_), "MPI_Comm_size");
      MPI_Comm local = MPI_COMM_NULL;
      check_mpi(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local),
                "MPI_Comm_split_type (the ranks of this machine)");
      MPI_Comm_rank(local, &local_rank_);
      MPI_Comm_size(local, &local_size_);
      MPI_Comm_free(&local);
    } catch (...) {
      if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
      release_mpi();
      throw;
    }
  }
  ~MpiComm() override {
    for (const Pending& p : pending_)
      if (p.active) lifetime().unfinished = true;  // MPI_Finalize would wait for them forever
    int finalized = 0;
    MPI_Finalized(&finalized);  // the program may have finalised MPI itself
    if (!finalized) MPI_Comm_free(&comm_);
    release_mpi();
  }
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  std::string name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  bool graph_capturable() const override { return false; }  // host calls

  void all_reduce(const Tensor& t, ReduceOp op) override {
    check_collective(*this, "all_reduce", t, true, op, Shape::Whole, mpi_dtypes());
    if (t.numel() == 0) return;
    void* buf = to_host(t, staging_);
    const std::string what =
        "all_reduce " + std::string(op_name(op)) + " of tensor " + t.shape_str() + " (MPI_Allreduce)";
    for_each_call(t, buf, [&](void* p, int count) {
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, p, count, mpi_type(t.dtype()), mpi_op(op), comm_), what);
    });
    if (op == ReduceOp::Mean) divide(buf, t.numel(), t.dtype(), world_);
    from_host(t, buf, 0, t.nbytes());
  }

  void reduce_scatter(const Tensor& t, ReduceOp op) override {
    check_collective(*this, "reduce_scatter", t, true, op, Shape::Chunked, mpi_dtypes());
    if (t.numel() == 0) return;
    const int chunk = chunk_count(t, "reduce_scatter");
    const size_t chunk_bytes = size_t(chunk) * dtype_size(t.dtype());
    // MPI_Reduce_scatter_block's in-place result lands in the first chunk, not chunk rank(): the
    // result goes to a buffer of its own and is copied into chunk rank().
    const void* send = to_host(t, staging_);
    result_.resize(chunk_bytes);
    check_mpi(
        MPI_Reduce_scatter_block(send, result_.data(), chunk, mpi_type(t.dtype()), mpi_op(op), comm_),
        "reduce_scatter " + std::string(op_name(op)) + " of tensor " + t.shape_str() + " (MPI_Reduce_scatter_block)");
    if (op == ReduceOp::Mean) divide(result_.data(), chunk, t.dtype(), world_);
    const size_t offset = size_t(rank_) * chunk_bytes;
    char* mine = static_cast<char*>(t.data()) + offset;
    if (t.device() == Device::CPU)
      std::memcpy(mine, result_.data(), chunk_bytes);
    else
      backend_->copy_to_device(mine, result_.data(), chunk_bytes);
  }

  void all_gather(const Tensor& t) override {
    check_collective(*this, "all_gather", t, false, ReduceOp::Sum, Shape::Chunked, mpi_dtypes());
    if (t.numel() == 0) return;
    const int chunk = chunk_count(t, "all_gather");
    const size_t chunk_bytes = size_t(chunk) * dtype_size(t.dtype());
    void* buf = t.data();
    if (t.device() != Device::CPU) {
      // Only this rank's chunk goes up; the others arrive.
      staging_.resize(t.nbytes());
      buf = staging_.data();
      backend_->copy_to_host(static_cast<char*>(buf) + size_t(rank_) * chunk_bytes,
                             static_cast<const char*>(t.data()) + size_t(rank_) * chunk_bytes, chunk_bytes);
    }
    check_mpi(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, chunk, mpi_type(t.dtype()), comm_),
              "all_gather of tensor " + t.shape_str() + " (MPI_Allgather)");
    from_host(t, buf, 0, t.nbytes());
  }

  void broadcast(const Tensor& t, int root) override {
    check_root(*this, "broadcast", root);
    check_collective(*this, "broadcast", t, false, ReduceOp::Sum, Shape::Whole, mpi_dtypes());
    if (t.numel() == 0) return;
    void* buf = t.data();
    if (t.device() != Device::CPU) {
      staging_.resize(t.nbytes());
      buf = staging_.data();
      if (rank_ == root) backend_->copy_to_host(buf, t.data(), t.nbytes());
    }
    const std::string what =
        "broadcast of tensor " + t.shape_str() + " from rank " + std::to_string(root) + " (MPI_Bcast)";
    for_each_call(t, buf,
                  [&](void* p, int count) { check_mpi(MPI_Bcast(p, count, mpi_type(t.dtype()), root, comm_), what); });
    if (rank_ != root) from_host(t, buf, 0, t.nbytes());
  }

  void barrier() override { check_mpi(MPI_Barrier(comm_), "barrier (MPI_Barrier)"); }

  // MPI_Iallreduce in place (on a staging copy for device memory, copied back by wait()). MPI
  // implementations progress a non-blocking collective mostly inside MPI calls: each start tests
  // the requests in flight, so the earlier buckets advance while the backward pass goes on.
  int all_reduce_start(const Tensor& t, ReduceOp op) override {
    check_collective(*this, "all_reduce_start", t, true, op, Shape::Whole, mpi_dtypes());
    progress();
    int handle = 0;
    while (handle < int(pending_.size()) && pending_[size_t(handle)].active) handle++;
    if (handle == int(pending_.size())) pending_.emplace_back();
    Pending& p = pending_[size_t(handle)];
    p.t = t;
    p.op = op;
    p.requests.clear();
    void* buf = t.numel() == 0 ? nullptr : to_host(t, p.staging);
    const std::string what =
        "all_reduce_start " + std::string(op_name(op)) + " of tensor " + t.shape_str() + " (MPI_Iallreduce)";
    if (buf) {
      for_each_call(t, buf, [&](void* ptr, int count) {
        MPI_Request r = MPI_REQUEST_NULL;
        check_mpi(MPI_Iallreduce(MPI_IN_PLACE, ptr, count, mpi_type(t.dtype()), mpi_op(op), comm_, &r), what);
        p.requests.push_back(r);
      });
    }
    p.active = true;
    return handle;
  }

  void wait(int handle) override {
    if (handle < 0 || handle >= int(pending_.size()) || !pending_[size_t(handle)].active)
      throw Error("mpi wait(" + std::to_string(handle) +
                  "): no all_reduce_start with that handle is in flight (each handle is waited for once)");
    Pending& p = pending_[size_t(handle)];
    p.active = false;
    const Tensor t = p.t;
    p.t = Tensor{};
    if (t.numel() == 0) return;
    check_mpi(MPI_Waitall(int(p.requests.size()), p.requests.data(), MPI_STATUSES_IGNORE),
              "wait for all_reduce_start of tensor " + t.shape_str() + " (MPI_Waitall)");
    void* buf = t.device() == Device::CPU ? t.data() : p.staging.data();
    if (p.op == ReduceOp::Mean) divide(buf, t.numel(), t.dtype(), world_);
    from_host(t, buf, 0, t.nbytes());
  }

  void all_reduce_host(double* values, int64_t n, ReduceOp op) override {
    check_host_values(*this, "all_reduce_host", values, n);
    for (int64_t i = 0; i < n; i += kMaxCallElements)
      check_mpi(
          MPI_Allreduce(MPI_IN_PLACE, values + i, int(std::min(kMaxCallElements, n - i)), MPI_DOUBLE, mpi_op(op),
                        comm_),
          "all_reduce_host " + std::string(op_name(op)) + " of " + std::to_string(n) + " doubles (MPI_Allreduce)");
    if (op == ReduceOp::Mean) divide(values, n, DType::F64, world_);
  }
  void all_reduce_host(int64_t* values, int64_t n, ReduceOp op) override {
    check_host_values(*this, "all_reduce_host", values, n);
    if (op == ReduceOp::Mean) throw Error("mpi all_reduce_host: Mean needs floating-point values, not int64");
    for (int64_t i = 0; i < n; i += kMaxCallElements)
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, values + i, int(std::min(kMaxCallElements, n - i)), MPI_INT64_T, mpi_op(op),
                              comm_),
                "all_reduce_host " + std::string(op_name(op)) + " of " + std::to_string(n) + " int64 (MPI_Allreduce)");
  }

  // The length first, then the bytes: the other ranks do not know how long root's string is.
  std::string broadcast_string(const std::string& s, int root) override {
    check_root(*this, "broadcast_string", root);
    int64_t len = rank_ == root ? int64_t(s.size()) : 0;
    const std::string what = "broadcast_string from rank " + std::to_string(root) + " (MPI_Bcast)";
    check_mpi(MPI_Bcast(&len, 1, MPI_INT64_T, root, comm_), what);
    std::string out = rank_ == root ? s : std::string(size_t(len), '\0');
    for (int64_t i = 0; i < len; i += kMaxCallElements)
      check_mpi(MPI_Bcast(&out[size_t(i)], int(std::min(kMaxCallElements, len - i)), MPI_CHAR, root, comm_), what);
    return out;
  }

  [[noreturn]] void abort(int code) override {
    // This rank's last words (its error) reach the terminal before mpirun kills the others.
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; should it, this process still ends
  }

 private:
  struct Pending {
    bool active = false;
    Tensor t;
    ReduceOp op = ReduceOp::Sum;
    std::vector<MPI_Request> requests;   // one per kMaxCallElements piece
    std::vector<unsigned char> staging;  // host copy of a device tensor (kept for reuse)
  };

  // t's elements in host memory: t itself (Device::CPU), else a copy in `staging`.
  void* to_host(const Tensor& t, std::vector<unsigned char>& staging) {
    if (t.device() == Device::CPU) return t.data();
    staging.resize(t.nbytes());
    backend_->copy_to_host(staging.data(), t.data(), t.nbytes());
    return staging.data();
  }
  // Bytes [offset, offset + bytes) of host buffer `buf`, a whole copy of t, back into the same
  // bytes of t (nothing when t is in host memory: buf is t).
  void from_host(const Tensor& t, const void* buf, size_t offset, size_t bytes) {
    if (t.device() == Device::CPU) return;
    backend_->copy_to_device(static_cast<char*>(t.data()) + offset, static_cast<const char*>(buf) + offset, bytes);
  }

  // Calls f(pointer, count) over t's elements at buf in pieces of at most kMaxCallElements.
  template <typename F>
  void for_each_call(const Tensor& t, void* buf, F&& f) {
    const int64_t n = t.numel();
    const size_t esize = dtype_size(t.dtype());
    for (int64_t i = 0; i < n; i += kMaxCallElements)
      f(static_cast<char*>(buf) + size_t(i) * esize, int(std::min(kMaxCallElements, n - i)));
  }

  int chunk_count(const Tensor& t, const char* collective) const {
    const int64_t chunk = t.numel() / world_;
    if (chunk > INT_MAX)
      throw Error("mpi " + std::string(collective) + " of tensor " + t.shape_str() + ": a chunk of " +
                  std::to_string(chunk) + " elements is beyond one MPI call's count (2^31 - 1)");
    return int(chunk);
  }

  // MPI_Test on every request in flight: completed ones become MPI_REQUEST_NULL (wait() then
  // finds them done).
  void progress() {
    for (Pending& p : pending_) {
      if (!p.active) continue;
      for (MPI_Request& r : p.requests) {
        if (r == MPI_REQUEST_NULL) continue;
        int done = 0;
        check_mpi(MPI_Test(&r, &done, MPI_STATUS_IGNORE), "all_reduce_start progress (MPI_Test)");
      }
    }
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, world_ = 1, local_rank_ = 0, local_size_ = 1;
  std::vector<unsigned char> staging_, result_;  // host copies of device tensors, kept for reuse
  std::vector<Pending> pending_;                 // indexed by all_reduce_start's handles
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator() { return std::make_unique<MpiComm>(); }

}  // namespace vitcuda::comm_detail
