// vitcuda — the runtime layer under the kernels: device memory, copies, memsets, streams,
// events and the shared-memory opt-in. Two implementations with one interface:
//   runtime_cuda.cu  (library vitcuda_kernels): the CUDA runtime, errors thrown as vitcuda::Error;
//   runtime_emu.cpp  (library vitcuda_emu, built with -DVITCUDA_EMU): host memory, synchronous
//                    streams, an emulated device with H100 limits.
// Plain C++: host code includes this without CUDA headers. The symbols of the two builds live in
// different inline namespaces (kernels_cuda / kernels_emu), so both libraries can be linked into
// one program and `vitcuda::rt::...` means the build the translation unit was compiled for.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "vitcuda/backend.h"  // RuntimeCounters, LaunchRecord
#include "vitcuda/tensor.h"   // vitcuda::Error

#if defined(VITCUDA_EMU)
#define VITCUDA_KERNELS_BEGIN inline namespace kernels_emu {
#else
#define VITCUDA_KERNELS_BEGIN inline namespace kernels_cuda {
#endif
#define VITCUDA_KERNELS_END }

#if !defined(VITCUDA_EMU)
struct CUstream_st;  // cudaStream_t is CUstream_st*
struct CUevent_st;   // cudaEvent_t is CUevent_st*
#endif

namespace vitcuda {
VITCUDA_KERNELS_BEGIN
namespace rt {

#if defined(VITCUDA_EMU)
struct EmuStream;
struct EmuEvent;
using Stream = EmuStream*;  // nullptr: the default stream
using Event = EmuEvent*;
#else
using Stream = CUstream_st*;  // == cudaStream_t; nullptr: the default stream
using Event = CUevent_st*;    // == cudaEvent_t
#endif

// "cuda-emu" or "cuda": which build this translation unit talks to.
const char* backend_name();

struct DeviceInfo {
  std::string name;
  int sm_count = 0;
  int max_threads_per_block = 0;
  size_t max_dynamic_smem_default = 0;  // without opt-in (48 KiB)
  size_t max_dynamic_smem_optin = 0;    // with set_max_dynamic_smem (227 KiB on H100)
  // Global memory in bytes (cudaDeviceProp::totalGlobalMem); the emulator's is 0 (its device
  // memory is the host's, which Backend::memory_capacity() then reports), unlimited
  // (UINT64_MAX) in a dry run, which touches none.
  uint64_t total_memory = 0;
};

int device_count();  // 0 when no GPU (cuda build); always 1 in the emulator
DeviceInfo device_info();

void* device_malloc(size_t bytes);  // 256-byte aligned; bytes == 0 gives nullptr
void device_free(void* ptr);        // nullptr is fine

// Page-locked host memory (cudaHostAlloc; 256-byte aligned host memory in the emulator): the
// source of copies captured into a graph, which read it when the graph runs. 0 bytes: nullptr.
void* host_alloc_pinned(size_t bytes);
void host_free_pinned(void* ptr);  // nullptr is fine

// Copies and memsets are ordered on `stream` (synchronous in the emulator).
void copy_to_device(void* dst, const void* src, size_t bytes, Stream stream = nullptr);
void copy_to_host(void* dst, const void* src, size_t bytes, Stream stream = nullptr);
void copy_device_to_device(void* dst, const void* src, size_t bytes, Stream stream = nullptr);
void memset_device(void* dst, int value, size_t bytes, Stream stream = nullptr);

Stream stream_create();
void stream_destroy(Stream stream);
void stream_synchronize(Stream stream);
void device_synchronize();

// The stream's later work waits for the event's last record (cudaStreamWaitEvent). The emulator's
// streams are synchronous: it checks the event and returns.
void stream_wait_event(Stream stream, Event event);

Event event_create();
void event_destroy(Event event);
void event_record(Event event, Stream stream = nullptr);
void event_synchronize(Event event);
float event_elapsed_ms(Event start, Event stop);

// ---- CUDA Graphs: capture a stream's work once, replay it with one call ----------------------
// stream_begin_capture(s) (cudaStreamBeginCapture, cudaStreamCaptureModeThreadLocal; the default
// stream is refused) turns s's launches, cuBLASLt matmuls, copies to device, device copies and
// memsets into the nodes of a graph instead of running them; stream_end_capture(s) ends the
// capture and instantiates it (cudaGraphInstantiate); graph_launch runs the whole graph on a
// stream, in capture order. A captured copy_to_device reads its host source when the graph runs
// (use host_alloc_pinned memory that outlives the graph).
// While a capture is open these are refused with an Error naming them (CUDA invalidates the
// capture; so does this runtime: stream_end_capture then throws too): copy_to_host, stream /
// device / event synchronize, device_malloc / device_free, host_alloc_pinned / host_free_pinned,
// work (launch, copy, memset) on another stream. One capture at a time per process.
// Counters: the capture itself counts nothing (the counters read the same after it as before);
// the graph keeps what was captured (launches, GEMMs, copies, memsets, bytes, LaunchRecords) and
// every graph_launch adds it to counters() (and graph_launches by one), and its LaunchRecords to
// the launch log while recording, so per-step counts read the same eager or replayed.
struct GraphExec;  // opaque: a cudaGraphExec_t and what was captured into it
using Graph = GraphExec*;
void stream_begin_capture(Stream stream);
Graph stream_end_capture(Stream stream);
void graph_launch(Graph graph, Stream stream);
void graph_destroy(Graph graph);  // nullptr is fine
bool stream_is_capturing(Stream stream);

// Dynamic shared memory over 48 KiB needs an opt-in per kernel, as in CUDA
// (cudaFuncAttributeMaxDynamicSharedMemorySize). Throws Error when `bytes` is over the
// device's opt-in limit. The emulator applies the same rule at launch.
void set_max_dynamic_smem(const void* kernel, size_t bytes);
template <typename... P>
void set_max_dynamic_smem(void (*kernel)(P...), size_t bytes) {
  set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), bytes);
}

// The kernel's (demangled) name, for error messages; "kernel@0x..." when unknown.
std::string kernel_name(const void* kernel);

// After a launch: throws Error naming the kernel and configuration when the launch failed.
void check_launch(const void* kernel, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                  size_t smem);

// ---- counters and launch records (both builds, one implementation) --------------------------
// Every launch, cuBLASLt matmul, copy, memset and blocking wait of this build's runtime is counted
// (RuntimeCounters, include/vitcuda/backend.h); while recording is on, launches and matmuls are
// also kept as LaunchRecords (while a capture is open: with the graph, see above). Used from the
// host thread that drives the backend.
inline RuntimeCounters& counters() {
  static RuntimeCounters c;
  return c;
}
inline void reset_counters() { counters() = RuntimeCounters{}; }
struct LaunchLog {
  bool recording = false;
  std::vector<LaunchRecord> records;
};
inline LaunchLog& launch_log() {
  static LaunchLog log;
  return log;
}
// a += b, field by field (graph replays add what their capture counted).
inline void add_counters(RuntimeCounters& a, const RuntimeCounters& b) {
  a.launches += b.launches;
  a.gemms += b.gemms;
  a.h2d += b.h2d;
  a.d2h += b.d2h;
  a.d2d += b.d2d;
  a.memsets += b.memsets;
  a.h2d_bytes += b.h2d_bytes;
  a.d2h_bytes += b.d2h_bytes;
  a.syncs += b.syncs;
  a.graph_launches += b.graph_launches;
}
// a - b, field by field.
inline RuntimeCounters sub_counters(RuntimeCounters a, const RuntimeCounters& b) {
  a.launches -= b.launches;
  a.gemms -= b.gemms;
  a.h2d -= b.h2d;
  a.d2h -= b.d2h;
  a.d2d -= b.d2d;
  a.memsets -= b.memsets;
  a.h2d_bytes -= b.h2d_bytes;
  a.d2h_bytes -= b.d2h_bytes;
  a.syncs -= b.syncs;
  a.graph_launches -= b.graph_launches;
  return a;
}
// The open capture (stream_begin_capture .. stream_end_capture), shared by both builds: counters
// at its start, the LaunchRecords of what it captured (kept with the graph, always, so that a
// replay while recording logs them), and the first refused call (which invalidates it).
struct CaptureLog {
  bool active = false;
  Stream stream = nullptr;
  RuntimeCounters before;
  std::vector<LaunchRecord> records;
  std::string invalidated_by;  // empty: valid
};
inline CaptureLog& capture_log() {
  static CaptureLog log;
  return log;
}
// Throws (and invalidates the open capture) when a capture is open: `what` may not run then.
inline void refuse_while_capturing(const char* what) {
  CaptureLog& c = capture_log();
  if (!c.active) return;
  if (c.invalidated_by.empty()) c.invalidated_by = what;
  throw Error(std::string(what) + ": not allowed while a stream capture is open (stream_begin_capture .. " +
              "stream_end_capture), as in CUDA; the capture is invalidated");
}
// Throws when a capture is open on another stream than `stream`: its work would not be ordered
// with the captured work (one capturing stream, no fork/join).
inline bool capturing_other_stream(Stream stream) {
  const CaptureLog& c = capture_log();
  return c.active && c.stream != stream;
}
inline void refuse_other_stream_while_capturing(Stream stream, const std::string& what) {
  CaptureLog& c = capture_log();
  if (!capturing_other_stream(stream)) return;
  if (c.invalidated_by.empty()) c.invalidated_by = what;
  throw Error(what + ": on another stream than the one capturing a graph (stream_begin_capture); only the " +
              "capturing stream may take work while a capture is open; the capture is invalidated");
}
// What a graph keeps of its capture: the counters it moved and its LaunchRecords.
struct CapturedWork {
  RuntimeCounters counted;
  std::vector<LaunchRecord> records;
};
// The bookkeeping of stream_begin_capture / stream_end_capture / graph_launch, both builds.
inline void open_capture_log(Stream stream) {
  CaptureLog& c = capture_log();
  c.active = true;
  c.stream = stream;
  c.before = counters();
  c.records.clear();
  c.invalidated_by.clear();
}
// Closes the capture and puts the counters back as they were when it opened. Returns what it
// captured; `invalidated_by` gets the first refused call ("" when none).
inline CapturedWork close_capture_log(std::string& invalidated_by) {
  CaptureLog& c = capture_log();
  CapturedWork w;
  w.counted = sub_counters(counters(), c.before);
  w.records.swap(c.records);
  counters() = c.before;
  invalidated_by.swap(c.invalidated_by);
  c = CaptureLog{};
  return w;
}
// A replay counts what the capture counted, plus one graph launch; while recording (or inside
// another capture) its LaunchRecords are logged again.
inline void count_replay(const CapturedWork& w) {
  add_counters(counters(), w.counted);
  ++counters().graph_launches;
  if (capture_log().active)
    capture_log().records.insert(capture_log().records.end(), w.records.begin(), w.records.end());
  else if (launch_log().recording)
    launch_log().records.insert(launch_log().records.end(), w.records.begin(), w.records.end());
}
inline void keep_record(LaunchRecord&& r) {
  if (capture_log().active)
    capture_log().records.push_back(std::move(r));
  else
    launch_log().records.push_back(std::move(r));
}
inline std::vector<LaunchRecord> take_launch_records() {
  std::vector<LaunchRecord> out;
  out.swap(launch_log().records);
  return out;
}
// A kernel's name as records show it: kernel_name() without the return type, the parameter
// list and the build's inline namespace, e.g. "vitcuda::(anonymous namespace)::ln_fwd<float>".
inline std::string short_kernel_name(std::string name) {
  if (name.rfind("void ", 0) == 0) name.erase(0, 5);
  int depth = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '<')
      ++depth;
    else if (name[i] == '>')
      --depth;
    else if (name[i] == '(' && depth == 0 && name.compare(i, 21, "(anonymous namespace)") != 0) {
      name.erase(i);
      break;
    }
  }
  for (const char* ns : {"kernels_emu::", "kernels_cuda::"})
    for (size_t at; (at = name.find(ns)) != std::string::npos;) name.erase(at, std::string(ns).size());
  return name;
}
// Called by launch() (kernels/common.cuh) for every kernel started.
inline void note_launch(const void* kernel, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, size_t smem) {
  ++counters().launches;
  if (!launch_log().recording && !capture_log().active) return;
  LaunchRecord r;
  r.kernel = short_kernel_name(kernel_name(kernel));
  r.grid[0] = gx, r.grid[1] = gy, r.grid[2] = gz;
  r.block[0] = bx, r.block[1] = by, r.block[2] = bz;
  r.smem = smem;
  keep_record(std::move(r));
}
// Called by the project GEMM (kernels/gemm.cu) for every cuBLASLt matmul, emulated or not.
inline void note_gemm(int64_t m, int64_t n, int64_t k, int64_t batch) {
  ++counters().gemms;
  if (!launch_log().recording && !capture_log().active) return;
  LaunchRecord r;
  r.kernel = "cublasLtMatmul";
  r.m = m, r.n = n, r.k = k, r.batch = batch;
  keep_record(std::move(r));
}

#if defined(VITCUDA_EMU)
// Dry run (emulation build only): launches, matmuls, copies and memsets are checked and counted
// but not executed, so a whole training step of a large model is traced in milliseconds (its
// results are garbage). The step model (bench/step_model.cpp) runs this way.
void set_dry_run(bool on);
bool dry_run();
#endif

// An owning device buffer of n elements of T (RAII, move-only), for tests and tools.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n), ptr_(static_cast<T*>(device_malloc(n * sizeof(T)))) {}
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : n_(o.n_), ptr_(o.ptr_) {
    o.n_ = 0;
    o.ptr_ = nullptr;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      n_ = o.n_;
      ptr_ = o.ptr_;
      o.n_ = 0;
      o.ptr_ = nullptr;
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  T* get() const { return ptr_; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& host) {
    if (host.size() != n_) throw Error("DeviceBuffer::upload: size mismatch");
    copy_to_device(ptr_, host.data(), n_ * sizeof(T));
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    copy_to_host(host.data(), ptr_, n_ * sizeof(T));
    return host;
  }
  void zero() { memset_device(ptr_, 0, n_ * sizeof(T)); }

 private:
  // A destructor must not throw: a free refused while a capture is open (which invalidates the
  // capture; stream_end_capture then names device_free) leaks the memory instead.
  void release() noexcept {
    try {
      device_free(ptr_);
    } catch (const Error&) {
    }
  }
  size_t n_ = 0;
  T* ptr_ = nullptr;
};

}  // namespace rt
VITCUDA_KERNELS_END
}  // namespace vitcuda
