// vitcuda — the runtime layer of the native build: thin wrappers over the CUDA runtime that throw
// vitcuda::Error naming the call and the CUDA error.
#include <cuda_runtime.h>
#include <cxxabi.h>

#include <cstdlib>

#include <string>

#include "kernels/common.cuh"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN
namespace rt {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear a non-sticky error so later calls see their own
    throw Error(std::string("cuda: ") + what + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
  }
}

cudaStream_t native(Stream s) { return reinterpret_cast<cudaStream_t>(s); }
cudaEvent_t native(Event e) { return reinterpret_cast<cudaEvent_t>(e); }

}  // namespace

const char* backend_name() { return "cuda"; }

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no device: report none
    return 0;
  }
  return count;
}

DeviceInfo device_info() {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  cudaDeviceProp p;
  check(cudaGetDeviceProperties(&p, dev), "cudaGetDeviceProperties");
  DeviceInfo d;
  d.name = p.name;
  d.sm_count = p.multiProcessorCount;
  d.max_threads_per_block = p.maxThreadsPerBlock;
  d.max_dynamic_smem_default = p.sharedMemPerBlock;
  d.max_dynamic_smem_optin = p.sharedMemPerBlockOptin;
  d.total_memory = p.totalGlobalMem;
  return d;
}

void* device_malloc(size_t bytes) {
  refuse_while_capturing("device_malloc");
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  check(cudaMalloc(&p, bytes), ("cudaMalloc of " + std::to_string(bytes) + " bytes").c_str());
  return p;
}

void device_free(void* ptr) {
  refuse_while_capturing("device_free");
  if (ptr) check(cudaFree(ptr), "cudaFree");
}

void* host_alloc_pinned(size_t bytes) {
  refuse_while_capturing("host_alloc_pinned");
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  check(cudaHostAlloc(&p, bytes, cudaHostAllocDefault),
        ("cudaHostAlloc of " + std::to_string(bytes) + " bytes").c_str());
  return p;
}
void host_free_pinned(void* ptr) {
  refuse_while_capturing("host_free_pinned");
  if (ptr) check(cudaFreeHost(ptr), "cudaFreeHost");
}

// Asynchronous on the stream: from pinned memory a true DMA the host does not wait for (and the
// form a graph captures); from pageable memory CUDA stages it first.
void copy_to_device(void* dst, const void* src, size_t bytes, Stream stream) {
  refuse_other_stream_while_capturing(stream, "copy_to_device");
  ++counters().h2d;
  counters().h2d_bytes += int64_t(bytes);
  if (bytes)
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, native(stream)), "cudaMemcpyAsync host to device");
}
void copy_to_host(void* dst, const void* src, size_t bytes, Stream stream) {
  refuse_while_capturing("copy_to_host");
  ++counters().d2h;
  counters().d2h_bytes += int64_t(bytes);
  if (!bytes) return;
  ++counters().syncs;  // the wait below
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, native(stream)), "cudaMemcpyAsync device to host");
  // Host memory is pageable: the caller reads it right after, so wait for the copy.
  check(cudaStreamSynchronize(native(stream)), "cudaStreamSynchronize after a copy to host");
}
void copy_device_to_device(void* dst, const void* src, size_t bytes, Stream stream) {
  refuse_other_stream_while_capturing(stream, "copy_device_to_device");
  ++counters().d2d;
  if (bytes)
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, native(stream)),
          "cudaMemcpyAsync device to device");
}
void memset_device(void* dst, int value, size_t bytes, Stream stream) {
  refuse_other_stream_while_capturing(stream, "memset_device");
  ++counters().memsets;
  if (bytes) check(cudaMemsetAsync(dst, value, bytes, native(stream)), "cudaMemsetAsync");
}

Stream stream_create() {
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  return reinterpret_cast<Stream>(s);
}
void stream_destroy(Stream stream) {
  if (capture_log().active && capture_log().stream == stream) refuse_while_capturing("stream_destroy");
  if (stream) check(cudaStreamDestroy(native(stream)), "cudaStreamDestroy");
}
void stream_synchronize(Stream stream) {
  refuse_while_capturing("stream_synchronize");
  ++counters().syncs;
  check(cudaStreamSynchronize(native(stream)), "cudaStreamSynchronize");
}
void device_synchronize() {
  refuse_while_capturing("device_synchronize");
  ++counters().syncs;
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

Event event_create() {
  cudaEvent_t e = nullptr;
  check(cudaEventCreate(&e), "cudaEventCreate");
  return reinterpret_cast<Event>(e);
}
void event_destroy(Event event) {
  if (event) check(cudaEventDestroy(native(event)), "cudaEventDestroy");
}
void event_record(Event event, Stream stream) {
  refuse_other_stream_while_capturing(stream, "event_record");
  check(cudaEventRecord(native(event), native(stream)), "cudaEventRecord");
}
void event_synchronize(Event event) {
  refuse_while_capturing("event_synchronize");
  ++counters().syncs;
  check(cudaEventSynchronize(native(event)), "cudaEventSynchronize");
}
float event_elapsed_ms(Event start, Event stop) {
  float ms = 0.f;
  check(cudaEventElapsedTime(&ms, native(start), native(stop)), "cudaEventElapsedTime");
  return ms;
}

void stream_wait_event(Stream stream, Event event) {
  refuse_other_stream_while_capturing(stream, "stream_wait_event");
  if (!event) throw Error("stream_wait_event: the event is null");
  // While capturing, an event recorded outside the capture is waited for as an external event
  // node: each launch of the graph waits for the event's latest record.
  const unsigned flags = stream_is_capturing(stream) ? cudaEventWaitExternal : cudaEventWaitDefault;
  check(cudaStreamWaitEvent(native(stream), native(event), flags), "cudaStreamWaitEvent");
}

// ---- CUDA Graphs --------------------------------------------------------------------------------
struct GraphExec {
  cudaGraphExec_t exec = nullptr;
  CapturedWork work;
};

void stream_begin_capture(Stream stream) {
  if (!stream)
    throw Error("stream_begin_capture: the default stream cannot be captured; capture a stream from stream_create()");
  if (capture_log().active) throw Error("stream_begin_capture: a capture is already open (one at a time)");
  check(cudaStreamBeginCapture(native(stream), cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  open_capture_log(stream);
}

Graph stream_end_capture(Stream stream) {
  if (!capture_log().active || capture_log().stream != stream)
    throw Error("stream_end_capture: this stream is not capturing (stream_begin_capture)");
  std::string invalidated_by;
  CapturedWork work = close_capture_log(invalidated_by);
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(native(stream), &graph);
  if (!invalidated_by.empty()) {
    if (graph) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    throw Error("stream_end_capture: the capture was invalidated by " + invalidated_by + " while it was open");
  }
  check(end, "cudaStreamEndCapture");
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);  // the executable graph is a copy
  check(inst, "cudaGraphInstantiate");
  return new GraphExec{exec, std::move(work)};
}

void graph_launch(Graph graph, Stream stream) {
  if (!graph) throw Error("graph_launch: the graph is null");
  refuse_other_stream_while_capturing(stream, "graph_launch");
  check(cudaGraphLaunch(graph->exec, native(stream)), "cudaGraphLaunch");
  count_replay(graph->work);
}

void graph_destroy(Graph graph) {
  if (!graph) return;
  const cudaError_t err = cudaGraphExecDestroy(graph->exec);
  delete graph;
  check(err, "cudaGraphExecDestroy");
}

bool stream_is_capturing(Stream stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(native(stream), &status), "cudaStreamIsCapturing");
  return status != cudaStreamCaptureStatusNone;
}

void set_max_dynamic_smem(const void* kernel, size_t bytes) {
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
        ("cudaFuncSetAttribute(MaxDynamicSharedMemorySize = " + std::to_string(bytes) + ") for " + kernel_name(kernel))
            .c_str());
}

std::string kernel_name(const void* kernel) {
  const char* name = nullptr;
  if (cudaFuncGetName(&name, kernel) == cudaSuccess && name) {
    int status = 0;
    char* demangled = abi::__cxa_demangle(name, nullptr, nullptr, &status);
    std::string out = status == 0 && demangled ? demangled : name;
    std::free(demangled);
    return out;
  }
  (void)cudaGetLastError();
  char buf[32];
  std::snprintf(buf, sizeof buf, "kernel@%p", kernel);
  return buf;
}

void check_launch(const void* kernel, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                  size_t smem) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw Error("cuda: launch of " + kernel_name(kernel) + " with grid (" + std::to_string(gx) + "," +
                std::to_string(gy) + "," + std::to_string(gz) + "), block (" + std::to_string(bx) + "," +
                std::to_string(by) + "," + std::to_string(bz) + "), " + std::to_string(smem) +
                " bytes of dynamic shared memory: " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

}  // namespace rt
VITCUDA_KERNELS_END
}  // namespace vitcuda
