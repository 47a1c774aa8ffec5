// vitcuda — the runtime layer of the emulation build: "device" memory is host memory, every
// stream is synchronous (work is done when the call returns), events read the host clock.
// The emulated device has the limits of an H100 (sm_90): 1024 threads per block, 48 KiB of
// dynamic shared memory without opt-in and 227 KiB with it.
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

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
  return d;
}

void* device_malloc(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t rounded = (bytes + 255) / 256 * 256;
  void* p = std::aligned_alloc(256, rounded);
  if (!p) throw Error("cuda-emu: device_malloc of " + std::to_string(bytes) + " bytes failed");
  return p;
}

void device_free(void* ptr) { std::free(ptr); }

namespace {
bool g_dry_run = false;
}  // namespace
void set_dry_run(bool on) { g_dry_run = on; }
bool dry_run() { return g_dry_run; }

// Counted as the CUDA build counts them (a copy to host is a blocking wait there).
void copy_to_device(void* dst, const void* src, size_t bytes, Stream) {
  ++counters().h2d;
  counters().h2d_bytes += int64_t(bytes);
  if (bytes && !g_dry_run) std::memcpy(dst, src, bytes);
}
void copy_to_host(void* dst, const void* src, size_t bytes, Stream) {
  ++counters().d2h;
  counters().d2h_bytes += int64_t(bytes);
  if (!bytes) return;
  ++counters().syncs;
  if (!g_dry_run) std::memcpy(dst, src, bytes);
}
void copy_device_to_device(void* dst, const void* src, size_t bytes, Stream) {
  ++counters().d2d;
  if (bytes && !g_dry_run) std::memmove(dst, src, bytes);
}
void memset_device(void* dst, int value, size_t bytes, Stream) {
  ++counters().memsets;
  if (bytes && !g_dry_run) std::memset(dst, value, bytes);
}

Stream stream_create() {
  static int next_id = 1;
  return new EmuStream{next_id++};
}
void stream_destroy(Stream stream) { delete stream; }
void stream_synchronize(Stream) { ++counters().syncs; }
void device_synchronize() { ++counters().syncs; }

Event event_create() { return new EmuEvent{}; }
void event_destroy(Event event) { delete event; }
void event_record(Event event, Stream) {
  if (!event) throw Error("cuda-emu: event_record on a null event");
  event->time = std::chrono::steady_clock::now();
  event->recorded = true;
}
void event_synchronize(Event) { ++counters().syncs; }
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
}  // namespace vitcuda
