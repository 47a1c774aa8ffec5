// vitcuda — the runtime layer of the emulation build: "device" memory is host memory, every
// stream is synchronous (work is done when the call returns), events read the host clock.
// The emulated device has the limits of an H100 (sm_90): 1024 threads per block, 48 KiB of
// dynamic shared memory without opt-in and 227 KiB with it.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/common.cuh"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN
namespace rt {

struct EmuStream {
  int id;
};
struct EmuEvent {
  std::chrono::steady_clock::time_point time;
  bool recorded = false;
};

const char* backend_name() { return "cuda-emu"; }

int device_count() { return 1; }

DeviceInfo device_info() {
  DeviceInfo d;
  d.name = "cuda-emu (CPU emulation with H100 limits)";
  d.sm_count = 132;
  d.max_threads_per_block = emu::kMaxThreadsPerBlock;
  d.max_dynamic_smem_default = emu::kMaxDynamicSmemDefault;
  d.max_dynamic_smem_optin = emu::kMaxDynamicSmemOptIn;
  // "Device" memory is host memory (0: the backend then takes the host's); a dry run touches
  // none, so the step model may size any model.
  d.total_memory = dry_run() ? UINT64_MAX : 0;
  return d;
}

namespace {
void* aligned_host_alloc(size_t bytes, const char* what) {
  if (bytes == 0) return nullptr;
  const size_t rounded = (bytes + 255) / 256 * 256;
  void* p = std::aligned_alloc(256, rounded);
  if (!p) throw Error(std::string("cuda-emu: ") + what + " of " + std::to_string(bytes) + " bytes failed");
  return p;
}

// The nodes of the open capture (capture_log() in runtime.h holds the rest of its state).
std::vector<std::function<void()>>& capture_nodes() {
  static std::vector<std::function<void()>> nodes;
  return nodes;
}
}  // namespace

void* device_malloc(size_t bytes) {
  refuse_while_capturing("device_malloc");
  return aligned_host_alloc(bytes, "device_malloc");
}
void device_free(void* ptr) {
  refuse_while_capturing("device_free");
  std::free(ptr);
}

void* host_alloc_pinned(size_t bytes) {
  refuse_while_capturing("host_alloc_pinned");
  return aligned_host_alloc(bytes, "host_alloc_pinned");
}
void host_free_pinned(void* ptr) {
  refuse_while_capturing("host_free_pinned");
  std::free(ptr);
}

namespace {
bool g_dry_run = false;
}  // namespace
void set_dry_run(bool on) { g_dry_run = on; }
bool dry_run() { return g_dry_run; }

// Counted as the CUDA build counts them (a copy to host is a blocking wait there). While the
// stream captures, the copy is a graph node: a copy to device reads its host source at replay.
void copy_to_device(void* dst, const void* src, size_t bytes, Stream stream) {
  refuse_other_stream_while_capturing(stream, "copy_to_device");
  ++counters().h2d;
  counters().h2d_bytes += int64_t(bytes);
  if (!bytes) return;
  if (emu::capturing(stream))
    emu::capture_node([dst, src, bytes] {
      if (!g_dry_run) std::memcpy(dst, src, bytes);
    });
  else if (!g_dry_run)
    std::memcpy(dst, src, bytes);
}
void copy_to_host(void* dst, const void* src, size_t bytes, Stream) {
  refuse_while_capturing("copy_to_host");
  ++counters().d2h;
  counters().d2h_bytes += int64_t(bytes);
  if (!bytes) return;
  ++counters().syncs;
  if (!g_dry_run) std::memcpy(dst, src, bytes);
}
void copy_device_to_device(void* dst, const void* src, size_t bytes, Stream stream) {
  refuse_other_stream_while_capturing(stream, "copy_device_to_device");
  ++counters().d2d;
  if (!bytes) return;
  if (emu::capturing(stream))
    emu::capture_node([dst, src, bytes] {
      if (!g_dry_run) std::memmove(dst, src, bytes);
    });
  else if (!g_dry_run)
    std::memmove(dst, src, bytes);
}
void memset_device(void* dst, int value, size_t bytes, Stream stream) {
  refuse_other_stream_while_capturing(stream, "memset_device");
  ++counters().memsets;
  if (!bytes) return;
  if (emu::capturing(stream))
    emu::capture_node([dst, value, bytes] {
      if (!g_dry_run) std::memset(dst, value, bytes);
    });
  else if (!g_dry_run)
    std::memset(dst, value, bytes);
}

Stream stream_create() {
  static int next_id = 1;
  return new EmuStream{next_id++};
}
void stream_destroy(Stream stream) {
  if (capture_log().active && capture_log().stream == stream) refuse_while_capturing("stream_destroy");
  delete stream;
}
void stream_synchronize(Stream) {
  refuse_while_capturing("stream_synchronize");
  ++counters().syncs;
}
void device_synchronize() {
  refuse_while_capturing("device_synchronize");
  ++counters().syncs;
}
void stream_wait_event(Stream stream, Event event) {
  refuse_other_stream_while_capturing(stream, "stream_wait_event");
  if (!event) throw Error("cuda-emu: stream_wait_event: the event is null");
  // streams are synchronous: the work before the event's record is done
}

Event event_create() { return new EmuEvent{}; }
void event_destroy(Event event) { delete event; }
void event_record(Event event, Stream stream) {
  if (!event) throw Error("cuda-emu: event_record on a null event");
  refuse_other_stream_while_capturing(stream, "event_record");
  if (emu::capturing(stream)) {  // a node: the event is recorded when the graph runs
    emu::capture_node([event] {
      event->time = std::chrono::steady_clock::now();
      event->recorded = true;
    });
    return;
  }
  event->time = std::chrono::steady_clock::now();
  event->recorded = true;
}
void event_synchronize(Event) {
  refuse_while_capturing("event_synchronize");
  ++counters().syncs;
}

// ---- graphs: a list of nodes run in order (streams are synchronous) ------------------------------
struct GraphExec {
  std::vector<std::function<void()>> nodes;
  CapturedWork work;
};

void stream_begin_capture(Stream stream) {
  if (!stream)
    throw Error(
        "cuda-emu: stream_begin_capture: the default stream cannot be captured; capture a stream from "
        "stream_create()");
  if (capture_log().active) throw Error("cuda-emu: stream_begin_capture: a capture is already open (one at a time)");
  capture_nodes().clear();
  open_capture_log(stream);
}

Graph stream_end_capture(Stream stream) {
  if (!capture_log().active || capture_log().stream != stream)
    throw Error("cuda-emu: stream_end_capture: this stream is not capturing (stream_begin_capture)");
  std::string invalidated_by;
  CapturedWork work = close_capture_log(invalidated_by);
  std::vector<std::function<void()>> nodes;
  nodes.swap(capture_nodes());
  if (!invalidated_by.empty())
    throw Error("cuda-emu: stream_end_capture: the capture was invalidated by " + invalidated_by +
                " while it was open");
  return new GraphExec{std::move(nodes), std::move(work)};
}

void graph_launch(Graph graph, Stream stream) {
  if (!graph) throw Error("cuda-emu: graph_launch: the graph is null");
  refuse_other_stream_while_capturing(stream, "graph_launch");
  count_replay(graph->work);
  if (emu::capturing(stream)) {  // a child graph: its nodes join the open capture
    for (const auto& node : graph->nodes) emu::capture_node(node);
    return;
  }
  for (const auto& node : graph->nodes) node();
}

void graph_destroy(Graph graph) { delete graph; }

bool stream_is_capturing(Stream stream) { return emu::capturing(stream); }
float event_elapsed_ms(Event start, Event stop) {
  if (!start || !stop || !start->recorded || !stop->recorded)
    throw Error("cuda-emu: event_elapsed_ms needs two recorded events");
  return std::chrono::duration<float, std::milli>(stop->time - start->time).count();
}

void set_max_dynamic_smem(const void* kernel, size_t bytes) { emu::set_max_dynamic_smem(kernel, bytes); }

void check_launch(const void*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, size_t) {
}  // run_grid throws on failure

}  // namespace rt
VITCUDA_KERNELS_END

namespace emu {
bool capturing(rt::Stream stream) {
  const rt::CaptureLog& c = rt::capture_log();
  return c.active && c.stream == stream;
}
void capture_node(std::function<void()> node) { rt::capture_nodes().push_back(std::move(node)); }
}  // namespace emu
}  // namespace vitcuda
