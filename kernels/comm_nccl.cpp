// vitcuda — the "nccl" communicator (include/vitcuda/comm.h): NCCL's collectives on the "cuda"
// backend's device memory, on a stream of its own ordered against the backend's stream with
// events, so the backend never waits on the host and a step that contains collectives can be
// captured into a CUDA Graph. Ranks, the unique id's broadcast and the host helpers come from an
// "mpi" communicator (as llm.c bootstraps NCCL). Host code against the CUDA runtime and NCCL:
// compiled into vitcuda_kernels by the host compiler when CUDA, NCCL and MPI are all found
// (VITCUDA_HAVE_NCCL). Each process uses the current CUDA device (use_cuda_device, before the
// backend is made): one GPU per local rank.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "host/comm_internal.h"
#include "vitcuda/comm.h"

namespace vitcuda::comm_detail {
namespace {

void check_cuda(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw Error("nccl " + what + ": " + cudaGetErrorString(e));
}
void check_nccl(ncclResult_t r, const std::string& what) {
  if (r != ncclSuccess) throw Error("nccl " + what + " failed: " + ncclGetErrorString(r));
}

ncclDataType_t nccl_type(DType d) {
  switch (d) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::BF16: return ncclBfloat16;
    case DType::I32: return ncclInt32;
    case DType::I64: return ncclInt64;
    default: break;
  }
  throw Error(std::string("nccl: dtype ") + dtype_name(d) + " has no NCCL datatype here");  // refused earlier
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Mean: return ncclAvg;
    case ReduceOp::Max: return ncclMax;
    case ReduceOp::Min: return ncclMin;
  }
  return ncclSum;
}

const std::vector<DType>& nccl_dtypes() {
  static const std::vector<DType> d = {DType::F32, DType::F64, DType::BF16, DType::I32, DType::I64};
  return d;
}

cudaEvent_t make_event() {
  cudaEvent_t e = nullptr;
  check_cuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  return e;
}

class NcclComm final : public Communicator {
 public:
  NcclComm() : mpi_(make_mpi_communicator()) {}
  ~NcclComm() override {
    if (stream_) cudaStreamSynchronize(stream_);  // the collectives enqueued last have run
    if (nccl_) ncclCommDestroy(nccl_);
    for (const Handle& h : handles_) cudaEventDestroy(h.done);
    if (ready_) cudaEventDestroy(ready_);
    if (done_) cudaEventDestroy(done_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  std::string name() const override { return "nccl"; }
  int rank() const override { return mpi_->rank(); }
  int world_size() const override { return mpi_->world_size(); }
  int local_rank() const override { return mpi_->local_rank(); }
  int local_size() const override { return mpi_->local_size(); }
  bool graph_capturable() const override { return true; }

  // Rank 0's ncclUniqueId reaches every rank through MPI; every rank then joins the NCCL
  // communicator on its current device (collective: every rank binds at the same point).
  void bind(Backend& backend) override {
    if (backend.name() != "cuda")
      throw Error("nccl bind: the backend must be 'cuda' (NCCL reduces GPU memory), got '" + backend.name() + "'");
    if (nccl_) {
      if (&backend != backend_) throw Error("nccl bind: already bound to another backend (bind once)");
      return;
    }
    if (!backend.native_stream()) throw Error("nccl bind: the 'cuda' backend has no native stream");
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    if (rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    const std::string sent = mpi_->broadcast_string(std::string(reinterpret_cast<const char*>(&id), sizeof id), 0);
    if (sent.size() != sizeof id) throw Error("nccl bind: rank 0's ncclUniqueId arrived with the wrong size");
    std::memcpy(&id, sent.data(), sizeof id);
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    ready_ = make_event();
    done_ = make_event();
    check_nccl(ncclCommInitRank(&nccl_, world_size(), id, rank()),
               "ncclCommInitRank (rank " + std::to_string(rank()) + " of " + std::to_string(world_size()) + ")");
    backend_ = &backend;
  }

  void all_reduce(const Tensor& t, ReduceOp op) override {
    check(t, "all_reduce", true, op, Shape::Whole);
    if (t.numel() == 0) return;
    ordered("all_reduce of tensor " + t.shape_str(), [&](cudaStream_t s) {
      return ncclAllReduce(t.data(), t.data(), size_t(t.numel()), nccl_type(t.dtype()), nccl_op(op), nccl_, s);
    });
  }

  // In place: NCCL reduces into recvbuff == sendbuff + rank · chunk, which is chunk rank().
  void reduce_scatter(const Tensor& t, ReduceOp op) override {
    check(t, "reduce_scatter", true, op, Shape::Chunked);
    if (t.numel() == 0) return;
    const size_t chunk = size_t(t.numel() / world_size());
    char* mine = static_cast<char*>(t.data()) + size_t(rank()) * chunk * dtype_size(t.dtype());
    ordered("reduce_scatter of tensor " + t.shape_str(), [&](cudaStream_t s) {
      return ncclReduceScatter(t.data(), mine, chunk, nccl_type(t.dtype()), nccl_op(op), nccl_, s);
    });
  }

  // In place: sendbuff == recvbuff + rank · chunk.
  void all_gather(const Tensor& t) override {
    check(t, "all_gather", false, ReduceOp::Sum, Shape::Chunked);
    if (t.numel() == 0) return;
    const size_t chunk = size_t(t.numel() / world_size());
    const char* mine = static_cast<const char*>(t.data()) + size_t(rank()) * chunk * dtype_size(t.dtype());
    ordered("all_gather of tensor " + t.shape_str(),
            [&](cudaStream_t s) { return ncclAllGather(mine, t.data(), chunk, nccl_type(t.dtype()), nccl_, s); });
  }

  void broadcast(const Tensor& t, int root) override {
    check_root(*this, "broadcast", root);
    check(t, "broadcast", false, ReduceOp::Sum, Shape::Whole);
    if (t.numel() == 0) return;
    ordered("broadcast of tensor " + t.shape_str(), [&](cudaStream_t s) {
      return ncclBroadcast(t.data(), t.data(), size_t(t.numel()), nccl_type(t.dtype()), root, nccl_, s);
    });
  }

  // Every rank's work enqueued so far is done, then the ranks meet (host barrier).
  void barrier() override {
    if (backend_) backend_->synchronize();
    mpi_->barrier();
  }

  // The reduction is enqueued on the communicator's stream after the backend's work so far; the
  // backend's stream goes on without it until wait() makes it wait for the handle's event.
  int all_reduce_start(const Tensor& t, ReduceOp op) override {
    check(t, "all_reduce_start", true, op, Shape::Whole);
    size_t h = 0;
    while (h < handles_.size() && handles_[h].in_flight) h++;
    if (h == handles_.size()) handles_.push_back(Handle{make_event(), false});
    const std::string what = "all_reduce_start of tensor " + t.shape_str();
    cudaStream_t backend_stream = static_cast<cudaStream_t>(backend_->native_stream());
    check_cuda(cudaEventRecord(ready_, backend_stream), what + ": cudaEventRecord on the backend's stream");
    check_cuda(cudaStreamWaitEvent(stream_, ready_, 0), what + ": cudaStreamWaitEvent");
    if (t.numel() > 0)
      check_nccl(
          ncclAllReduce(t.data(), t.data(), size_t(t.numel()), nccl_type(t.dtype()), nccl_op(op), nccl_, stream_),
          what + " (ncclAllReduce)");
    check_cuda(cudaEventRecord(handles_[h].done, stream_), what + ": cudaEventRecord");
    handles_[h].in_flight = true;
    return int(h);
  }

  void wait(int handle) override {
    if (handle < 0 || size_t(handle) >= handles_.size() || !handles_[size_t(handle)].in_flight)
      throw Error("nccl wait(" + std::to_string(handle) +
                  "): no all_reduce_start with that handle is in flight (each handle is waited for once)");
    Handle& h = handles_[size_t(handle)];
    h.in_flight = false;
    check_cuda(cudaStreamWaitEvent(static_cast<cudaStream_t>(backend_->native_stream()), h.done, 0),
               "wait(" + std::to_string(handle) + "): cudaStreamWaitEvent on the backend's stream");
  }

  void all_reduce_host(double* values, int64_t n, ReduceOp op) override { mpi_->all_reduce_host(values, n, op); }
  void all_reduce_host(int64_t* values, int64_t n, ReduceOp op) override { mpi_->all_reduce_host(values, n, op); }
  std::string broadcast_string(const std::string& s, int root) override { return mpi_->broadcast_string(s, root); }
  [[noreturn]] void abort(int code) override {
    mpi_->abort(code);  // MPI_Abort: every rank ends, GPU work and all
    std::_Exit(code);   // not reached (a virtual call does not carry [[noreturn]])
  }

 private:
  struct Handle {
    cudaEvent_t done = nullptr;  // recorded on stream_ after the handle's reduction
    bool in_flight = false;
  };

  void check(const Tensor& t, const char* collective, bool reduce, ReduceOp op, Shape shape) const {
    if (!nccl_) throw Error(std::string("nccl ") + collective + ": no backend is bound (call bind(backend) first)");
    check_collective(*this, collective, t, reduce, op, shape, nccl_dtypes());
    if (t.device() != Device::CUDA)
      throw Error(std::string("nccl ") + collective + " of tensor " + t.shape_str() +
                  ": the tensor is in host memory; NCCL reduces the 'cuda' backend's device memory");
  }

  // backend stream --ready_--> stream_: call(stream_) --done_--> backend stream. Both waits are on
  // the device: the host returns at once, and under stream capture the pattern becomes a fork and
  // a join of the graph.
  template <typename F>
  void ordered(const std::string& what, F&& call) {
    cudaStream_t backend_stream = static_cast<cudaStream_t>(backend_->native_stream());
    check_cuda(cudaEventRecord(ready_, backend_stream), what + ": cudaEventRecord on the backend's stream");
    check_cuda(cudaStreamWaitEvent(stream_, ready_, 0), what + ": cudaStreamWaitEvent");
    check_nccl(call(stream_), what);
    check_cuda(cudaEventRecord(done_, stream_), what + ": cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(backend_stream, done_, 0), what + ": cudaStreamWaitEvent on the backend's stream");
  }

  std::unique_ptr<Communicator> mpi_;  // ranks, bootstrap, host helpers
  ncclComm_t nccl_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
  std::vector<Handle> handles_;  // indexed by all_reduce_start's handles
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator() { return std::make_unique<NcclComm>(); }

}  // namespace vitcuda::comm_detail
