// vitcuda — the step model: one traced step of the real host graph (include/vitcuda/step_trace.h)
// turned into a PREDICTED time on a described GPU, op by op, by the roofline. Everything here is
// arithmetic on the trace; nothing is measured. Used by bench/step_model.cpp (the tool) and
// tests/test_step_model.cpp.
//
// The formula, per traced op:
//   time = max(flops / peak, dram_bytes / hbm_bandwidth) + host_bytes / host_link + calls × launch
// where
//   flops, dram_bytes  the op's cost from its arguments (host/op_cost.cpp: 2 FLOPs per
//                      multiply-add; each input read once, each output written once);
//   peak               the dense tensor-core bf16 peak for the GEMM ops (linear_*,
//                      attention_*: cuBLASLt and the mma attention kernels) in bf16; the fp32
//                      (non-tensor) peak for every other op, and for every op in fp32 (the fp32
//                      GEMMs use CUBLAS_COMPUTE_32F, no TF32; the fp32 attention kernel no mma);
//   host_bytes         bytes copied to or from the host inside the op (the host link: PCIe);
//   calls              what the op made the runtime do: kernel launches + cuBLASLt matmuls +
//                      copies + memsets (RuntimeCounters), each charged one launch overhead,
//                      added, not overlapped (a conservative, eager-mode assumption; the CUDA
//                      Graph column charges the graph's per-node overhead instead).
// The runtime calls outside any op (input and label uploads, zero_grad's memset, the loss
// read-back: StepTrace::total minus the ops' sum) form one more row with the same formula and
// no FLOPs (their DRAM bytes are not counted by the runtime). Every blocking host wait
// (RuntimeCounters::syncs) adds the GPU's sync cost. The step's predicted time is the sum.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "vitcuda/backend.h"
#include "vitcuda/step_trace.h"

namespace vitcuda::step_model {

// How GPUs of this kind talk to each other within a machine (gpus.json "interconnect",
// optional: absent, allreduce_busbw is 0 and data-parallel predictions for N > 1 are refused).
struct Interconnect {
  std::string name, source;
  double link_bytes_per_s = 0;  // per GPU, both directions (informative: NVLink 4, 900 GB/s)
  double allreduce_busbw = 0;   // bytes/s: nccl-tests all_reduce_perf busbw, large messages
  double latency_s = 0;         // per collective call (small-message time)
  int max_gpus = 0;             // GPUs one machine joins by it (8 on HGX H100 / H200)
};

// A GPU as data (bench/gpus.json). Rates in SI units: FLOP/s, bytes/s, seconds.
struct Gpu {
  std::string id, name, source;
  double bf16_tensor_flops = 0;  // dense (not the 2:4-sparse figure)
  double tf32_tensor_flops = 0;  // dense; informative: no vitcuda kernel uses TF32
  double fp32_flops = 0;         // non-tensor FP32
  double hbm_bytes_per_s = 0;
  double host_link_bytes_per_s = 0;  // host <-> device, one direction
  int sm_count = 0;
  double launch_s = 0;        // per runtime call, eager
  double graph_launch_s = 0;  // per kernel node, inside a CUDA Graph
  double sync_s = 0;          // per blocking host wait
  Interconnect interconnect;
};

// Parses the "gpus" array of a gpus.json text / file; throws Error naming the field.
std::vector<Gpu> parse_gpus(const std::string& json_text);
std::vector<Gpu> load_gpus(const std::string& path);
// By id ("h100"), case-insensitive; throws Error listing the ids when absent.
const Gpu& find_gpu(const std::vector<Gpu>& gpus, const std::string& id);

enum class Precision { BF16, F32 };
const char* precision_name(Precision p);

// The ops whose FLOPs run on the tensor cores in bf16.
bool is_gemm_op(const std::string& op);
double op_peak(const std::string& op, Precision precision, const Gpu& gpu);
// The peak MFU and the ideal time refer to: dense bf16 tensor (bf16), fp32 (fp32).
double headline_peak(Precision precision, const Gpu& gpu);

// Runtime calls charged one launch overhead each: launches + matmuls + copies + memsets.
int64_t runtime_calls(const RuntimeCounters& c);
RuntimeCounters operator+(const RuntimeCounters& a, const RuntimeCounters& b);

// The roofline of one piece of work (seconds).
struct Roofline {
  double compute_s = 0, memory_s = 0, host_s = 0, launch_s = 0;
  double time_s() const;  // max(compute, memory) + host + launch
  bool compute_bound() const { return compute_s > memory_s; }
};
Roofline roofline(double flops, double peak_flops, double dram_bytes, double dram_bytes_per_s, double host_bytes,
                  double host_bytes_per_s, int64_t calls, double launch_s);

// One row: a traced op, or several of the same name summed (group_by_op), or the calls
// outside any op.
struct Row {
  std::string op;
  int64_t count = 0;  // op calls summed into the row
  OpCost cost;
  RuntimeCounters runtime;
  Roofline eager, graph;             // launch overhead: Gpu::launch_s / Gpu::graph_launch_s; summed
                                     // rows hold the sums of the calls' parts
  double time_s = 0;                 // Σ over the calls of eager.time_s() (of each call's own max)
  double graph_time_s = 0;           // the same with graph launches
  int64_t compute_bound = 0;         // calls with compute time over memory time
  std::vector<std::string> kernels;  // distinct kernels (display names), in first-launch order,
                                     // then "memcpy D2D" etc. for the op's copies and memsets
  double matmul_flops = 0;           // 2·m·n·k·batch over the op's cuBLASLt records
};

struct Prediction {
  std::string gpu;
  Precision precision = Precision::BF16;
  int64_t batch = 0;
  std::vector<Row> ops;  // one per traced op, in call order
  Row outside;           // StepTrace::total minus the ops' sum
  RuntimeCounters total;
  double flops = 0, bytes = 0;  // sums over the ops (counted: op_cost)
  double sync_s = 0;            // total.syncs × Gpu::sync_s
  double time_s = 0;            // predicted step time, eager launches
  double graph_time_s = 0;      // the same with CUDA Graph launch overhead
  double ideal_s = 0;           // flops / headline peak (100% MFU)
  double compute_floor_s = 0;   // Σ flops / op peak (no op faster than its own peak)
  double memory_floor_s = 0;    // bytes / HBM bandwidth
  double roofline_s = 0;        // Σ max(compute, memory): the step without launch, host, sync costs
  double serial_s = 0;          // Σ (compute + memory) + launch + host + sync: no op overlaps its
                                // compute with its memory traffic (its kernels run one after
                                // another: a GEMM, then its epilogue pass): the slow end
  double launch_s = 0;          // Σ calls × Gpu::launch_s (ops and outside)
  double host_s = 0;            // host-link time of every copy to or from the host
  int64_t kernel_launches = 0;  // kernels with a grid (matmuls excluded)
  int64_t underfilled = 0;      // of those, grids with fewer blocks than the GPU has SMs
  double matmul_flops = 0;      // Σ 2·m·n·k·batch over every cuBLASLt record
  double img_per_s() const { return time_s > 0 ? double(batch) / time_s : 0; }
  double graph_img_per_s() const { return graph_time_s > 0 ? double(batch) / graph_time_s : 0; }
  double mfu() const { return time_s > 0 ? ideal_s / time_s : 0; }  // counted FLOPs / (time × peak)
  double launch_share() const { return time_s > 0 ? launch_s / time_s : 0; }
};

Prediction predict(const StepTrace& trace, const Gpu& gpu, Precision precision);
// Rows of the same op name summed, in order of first appearance.
std::vector<Row> group_by_op(const std::vector<Row>& rows);
// What bounds a row: "compute", "memory" (or "mixed" when a summed row has both), "launch" when
// the launch overhead exceeds max(compute, memory), "host" when the host link does.
std::string bound(const Row& row);
// "vitcuda::(anonymous namespace)::ln_fwd<float, 8>" -> "ln_fwd<float, 8>".
std::string display_kernel_name(const std::string& kernel);

// ---- data parallelism (see the top of this file) ----------------------------------------------

// Ring collectives over n GPUs of `bytes` each, in `calls` calls (latency per call). 0 for n = 1.
double allreduce_s(double bytes, int n, const Interconnect& ic, int64_t calls = 1);
double reduce_scatter_s(double bytes, int n, const Interconnect& ic, int64_t calls = 1);
double all_gather_s(double bytes, int n, const Interconnect& ic, int64_t calls = 1);

// The gradient arena vit_train reduces: fp32, Model::arena_size() elements (tensors and their
// alignment gaps), whatever the compute dtype.
double grad_arena_bytes(int64_t arena_elements);
// ZeRO-1 pads the arena to a multiple of 64·n elements (n equal shards, each 256-byte aligned).
int64_t zero_padded_elements(int64_t arena_elements, int n);

// Bucket sizes in bytes in reduction order (the arena's end first): full buckets of
// bucket_bytes, the last (holding the arena's start) the remainder. One bucket when
// bucket_bytes <= 0 or >= bytes.
std::vector<double> bucket_sizes(double bytes, double bucket_bytes);

// The schedule of the overlapped buckets: bucket k ready at backward_s × (bytes up to the end of
// bucket k) / total bytes, reduced in order on one channel. Returns when the last is done minus
// backward_s (>= 0): the exposed communication time.
double exposed_comm_s(const std::vector<double>& buckets, double backward_s, int n, const Interconnect& ic);

// The backward span of a predicted step: the first through the last op whose name ends in
// "_backward" (with whatever runs between them), summed; graph: CUDA Graph launch costs.
double backward_s(const Prediction& p, bool graph);
// The adamw_update ops' time.
double optimizer_s(const Prediction& p, bool graph);

struct DataParallelOptions {
  int gpus = 1;
  double bucket_bytes = 25.0 * 1024 * 1024;  // --bucket-mb 25 (PyTorch DDP's bucket_cap_mb)
  bool overlap = true;                       // false: one all-reduce after backward
  int zero = 0;                              // 1: ZeRO-1
  bool graph = true;                         // base the step on the CUDA Graph column
};

struct DataParallel {
  int gpus = 1;
  int zero = 0;
  bool overlap = true;
  int64_t batch_per_gpu = 0;
  double grad_bytes = 0;             // fp32 gradient arena (ZeRO-1: padded)
  int64_t buckets = 0;               // all-reduce calls per step (ZeRO-1: 0)
  double single_step_s = 0;          // the traced step on one GPU (eager or graph per the options)
  double backward_s = 0;             // its backward span
  double comm_s = 0;                 // every collective of the step back to back (the no-overlap time)
  double exposed_s = 0;              // what the step waits for communication
  double optimizer_saved_s = 0;      // ZeRO-1: AdamW's time × (1 − 1/N)
  double step_s = 0;                 // single_step_s + exposed_s − optimizer_saved_s
  double moments_bytes_per_gpu = 0;  // AdamW m and v (fp32): 8 bytes per arena element / (ZeRO-1: N)
  double img_per_s() const { return step_s > 0 ? double(gpus) * double(batch_per_gpu) / step_s : 0; }
  // Throughput over N × the one-GPU throughput: single_step_s / step_s.
  double efficiency() const { return step_s > 0 ? single_step_s / step_s : 0; }
};

// N GPUs each running `single` (the trace's batch is per GPU) on an arena of arena_elements.
// Throws Error when opts.gpus > 1 and the GPU has no interconnect figures, or gpus exceeds
// Interconnect::max_gpus (one machine; several are not modelled), or zero is not 0 or 1.
DataParallel predict_data_parallel(const Prediction& single, const Gpu& gpu, int64_t arena_elements,
                                   const DataParallelOptions& opts);

}  // namespace vitcuda::step_model
