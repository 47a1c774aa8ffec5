// vitcuda — what the communicators share (host/comm.cpp, host/comm_mpi.cpp, kernels/comm_nccl.cpp):
// the tensor checks every collective starts with, so "single", "mpi" and "nccl" refuse the same
// misuse with the same message, and the factories make_communicator picks from. Internal to
// libvitcuda (not installed).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vitcuda/comm.h"

namespace vitcuda::comm_detail {

const char* op_name(ReduceOp op);  // "Sum", "Mean", "Max", "Min"
bool is_float(DType d);            // F32, F64, BF16, F16

// What a collective is asked to do with its tensor, for check_collective.
enum class Shape : uint8_t {
  Whole,   // all_reduce, broadcast
  Chunked  // reduce_scatter, all_gather: world_size() equal chunks
};

// Throws Error "<comm> <collective>: ..." naming the tensor (shape and dtype) when `t` cannot take
// part: undefined, a dtype not in `dtypes` (the message lists them), Mean of an integer dtype (a
// mean of integers is not an integer), a numel not divisible by the world size for a chunked
// collective, or device memory without a bound backend of that device. `reduce` says whether `op`
// applies (not for all_gather and broadcast).
void check_collective(const Communicator& comm, const char* collective, const Tensor& t, bool reduce, ReduceOp op,
                      Shape shape, const std::vector<DType>& dtypes);
// Throws Error when root is not a rank of comm.
void check_root(const Communicator& comm, const char* collective, int root);
// Throws Error when a host helper is given a negative count or a null pointer with n > 0.
void check_host_values(const Communicator& comm, const char* helper, const void* values, int64_t n);

#if defined(VITCUDA_HAVE_MPI)
std::unique_ptr<Communicator> make_mpi_communicator();  // host/comm_mpi.cpp
#endif
#if defined(VITCUDA_HAVE_NCCL)
std::unique_ptr<Communicator> make_nccl_communicator();  // kernels/comm_nccl.cpp
#endif

}  // namespace vitcuda::comm_detail
