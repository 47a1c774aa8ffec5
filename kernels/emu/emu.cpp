// vitcuda — the fiber scheduler of the emulation build (see kernels/emu/emu.h, kernels/emu/README.md).
//
// One OS thread runs a launch: blocks in blockIdx order (x fastest), each block's threads as
// fibers (ucontext). A fiber runs until it blocks at a barrier or a warp rendezvous (or exits)
// and then switches straight to the next ready fiber; the scheduler context is entered only when
// no fiber is ready, i.e. when the block is finished or deadlocked. Fibers and their stacks are
// created once per OS thread and reused for every block of every launch.
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <ucontext.h>
#include <unistd.h>
#include <cxxabi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/common.cuh"

#if defined(__SANITIZE_ADDRESS__)
#define VITCUDA_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VITCUDA_EMU_ASAN 1
#endif
#endif
#if defined(VITCUDA_EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__x86_64__) && !defined(VITCUDA_EMU_UCONTEXT)
#define VITCUDA_EMU_FAST_SWITCH 1
extern "C" void vitcuda_emu_switch(void** save_sp, void* new_sp);  // emu_switch_x86_64.S
#endif

namespace vitcuda::emu {

uint3 g_thread_idx;
uint3 g_block_idx;
dim3 g_block_dim;
dim3 g_grid_dim;

namespace {

// Kernels keep small local arrays; ASan's redzones make frames several times larger.
#if defined(VITCUDA_EMU_ASAN)
constexpr size_t kFiberStackBytes = 1024 * 1024;
#else
constexpr size_t kFiberStackBytes = 256 * 1024;
#endif

enum class State : uint8_t { Ready, AtBarrier, AtWarp, Done };

struct AsyncCopy {
  void* dst;
  const void* src;
  int bytes;
  int src_bytes;
  long group;     // -1 until committed
  int countdown;  // random cp.async mode: lands after this many more entry points of its thread
};

// ---- adversarial modes --------------------------------------------------------------------------
// SplitMix64: a small, well-mixed generator; the emulator is deterministic, so a seed reproduces.
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t env_seed(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  char* end = nullptr;
  const unsigned long long seed = std::strtoull(v, &end, 10);
  if (*end != '\0') throw Error(std::string("cuda-emu: ") + name + "=" + v + " is not a decimal seed (0: off)");
  return seed;
}
struct AdversarialModes {
  uint64_t block_order_seed = env_seed("VITCUDA_EMU_BLOCK_ORDER");
  std::string block_order_kernels =
      std::getenv("VITCUDA_EMU_BLOCK_ORDER_KERNELS") ? std::getenv("VITCUDA_EMU_BLOCK_ORDER_KERNELS") : "";
  uint64_t launch_seq = 0;  // launches since the block-order seed was set
  uint64_t cp_async_seed = env_seed("VITCUDA_EMU_CP_ASYNC");
  uint64_t cp_async_rng = cp_async_seed;
};
AdversarialModes& modes() {
  static AdversarialModes m;
  return m;
}

// A suspended execution context: a saved stack pointer (fast switch) or a ucontext.
struct Context {
#if defined(VITCUDA_EMU_FAST_SWITCH)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

inline void jump(Context& from, Context& to) {
#if defined(VITCUDA_EMU_FAST_SWITCH)
  vitcuda_emu_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

struct Fiber {
  Context ctx;
  unsigned char* stack = nullptr;  // the usable stack (a guard page lies below it)
  size_t stack_size = 0;
  void* asan_fake_stack = nullptr;

  int tid = 0;  // linear thread index in the block
  uint3 idx{};
  State state = State::Ready;
  bool queued = false;

  int barrier_result = 0;

  // the pending warp collective
  const char* warp_op = nullptr;
  WarpCompleteFn warp_fn = nullptr;
  unsigned warp_mask = 0;
  const void* warp_in = nullptr;
  void* warp_out = nullptr;
  const char* warp_file = nullptr;
  int warp_line = 0;

  std::vector<AsyncCopy> copies;
  long copy_group_seq = 0;
};

struct FiberAbort {};  // unwinds a parked fiber's stack when its block is abandoned

struct Launch {
  const void* kernel = nullptr;
  InvokeFn invoke = nullptr;
  const void* closure = nullptr;
  dim3 grid, block;
  size_t smem_bytes = 0;
  unsigned char* smem = nullptr;
};

// Per warp: which lanes have exited and which are parked in a warp collective, so that an
// arriving lane checks its mask in O(1) and only the completing lane walks the lanes.
struct WarpState {
  unsigned done = 0;
  unsigned parked = 0;
};

struct BlockState {
  int nthreads = 0;
  uint3 idx{};
  int done = 0;
  std::vector<WarpState> warps;
  // the barrier being filled
  int barrier_arrived = 0;
  BarrierOp barrier_op = BarrierOp::Sync;
  const char* barrier_file = nullptr;
  int barrier_line = 0;
  int barrier_acc = 0;
  // failure
  bool aborting = false;
  std::string error;
};

struct Emulator {
  Context sched_ctx;
  void* sched_fake_stack = nullptr;
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
  bool switching_from_scheduler = false;

  std::vector<std::unique_ptr<Fiber>> fibers;
  Fiber* current = nullptr;
  std::vector<int> ready;  // ring buffer of fiber indices
  size_t ready_head = 0, ready_count = 0;

  Launch launch;
  BlockState block;
  bool in_launch = false;
  std::string kernel_name_cache;
};

thread_local Emulator* t_emu = nullptr;

Emulator& emu() {
  if (!t_emu) t_emu = new Emulator();  // per OS thread, lives as long as the process
  return *t_emu;
}

std::mutex& launch_mutex() {  // static __shared__ is process-wide: one emulated launch at a time
  static std::mutex m;
  return m;
}

std::mutex& optin_mutex() {
  static std::mutex m;
  return m;
}
std::map<const void*, size_t>& optin_registry() {
  static std::map<const void*, size_t> r;
  return r;
}

// ---- fiber switching, annotated for AddressSanitizer -----------------------------------------
inline void asan_start(void** fake, const void* bottom, size_t size) {
#if defined(VITCUDA_EMU_ASAN)
  __sanitizer_start_switch_fiber(fake, bottom, size);
#else
  (void)fake, (void)bottom, (void)size;
#endif
}
inline void asan_finish(void* fake, const void** bottom_old, size_t* size_old) {
#if defined(VITCUDA_EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake, bottom_old, size_old);
#else
  (void)fake, (void)bottom_old, (void)size_old;
#endif
}

void push_ready(Emulator& e, Fiber* f) {
  if (f->queued) return;
  f->queued = true;
  e.ready[(e.ready_head + e.ready_count) % e.ready.size()] = f->tid;
  ++e.ready_count;
}
Fiber* pop_ready(Emulator& e) {
  if (e.ready_count == 0) return nullptr;
  Fiber* f = e.fibers[e.ready[e.ready_head]].get();
  e.ready_head = (e.ready_head + 1) % e.ready.size();
  --e.ready_count;
  f->queued = false;
  return f;
}

void enter(Emulator& e, Fiber* f) {
  e.current = f;
  g_thread_idx = f->idx;
}

// Called on a fiber that blocks or has finished: run the next ready fiber, or go back to the
// scheduler when none is ready. Returns when this fiber is resumed.
void switch_away(Emulator& e, Fiber* self) {
  Fiber* next = pop_ready(e);
  if (next == self) return;  // released while it was queued: keep running
  if (next) {
    enter(e, next);
    e.switching_from_scheduler = false;
    asan_start(&self->asan_fake_stack, next->stack, next->stack_size);
    jump(self->ctx, next->ctx);
  } else {
    e.current = nullptr;
    asan_start(&self->asan_fake_stack, e.sched_stack_bottom, e.sched_stack_size);
    jump(self->ctx, e.sched_ctx);
  }
  // resumed
  const void* old_bottom = nullptr;
  size_t old_size = 0;
  asan_finish(self->asan_fake_stack, &old_bottom, &old_size);
  if (e.switching_from_scheduler) {
    e.sched_stack_bottom = old_bottom;
    e.sched_stack_size = old_size;
  }
  enter(e, self);
}

void check_abort(Emulator& e) {
  if (e.block.aborting) throw FiberAbort{};
}

std::string dim_str(const dim3& d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}
std::string idx_str(const uint3& d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}
std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}
std::string site(const char* file, int line) {
  std::string f = file ? file : "?";
  const size_t slash = f.find_last_of('/');
  if (slash != std::string::npos) f = f.substr(slash + 1);
  return f + ":" + std::to_string(line);
}

const std::string& current_kernel_name(Emulator& e) {
  if (e.kernel_name_cache.empty()) e.kernel_name_cache = rt::kernel_name(e.launch.kernel);
  return e.kernel_name_cache;
}

std::string where(Emulator& e, const Fiber* f) {
  std::string s = "kernel " + current_kernel_name(e) + ", block " + idx_str(e.block.idx);
  if (f) s += ", thread " + idx_str(f->idx);
  return s;
}

// Records the first error of the block and wakes every parked fiber so that it unwinds.
void abort_block(Emulator& e, const std::string& message) {
  if (e.block.error.empty()) e.block.error = message;
  e.block.aborting = true;
  for (WarpState& w : e.block.warps) w.parked = 0;
  for (int i = 0; i < e.block.nthreads; ++i) {
    Fiber* f = e.fibers[i].get();
    if (f->state == State::AtBarrier || f->state == State::AtWarp) {
      f->state = State::Ready;
      push_ready(e, f);
    }
  }
}

void land_copy(const AsyncCopy& c) {
  std::memcpy(c.dst, c.src, static_cast<size_t>(c.src_bytes));
  if (c.src_bytes < c.bytes)
    std::memset(static_cast<unsigned char*>(c.dst) + c.src_bytes, 0, static_cast<size_t>(c.bytes - c.src_bytes));
}

void perform_copies(Fiber* f, long up_to_group, bool include_uncommitted) {
  auto& q = f->copies;
  size_t kept = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    const AsyncCopy& c = q[i];
    const bool due = c.group < 0 ? include_uncommitted : c.group <= up_to_group;
    if (due)
      land_copy(c);
    else
      q[kept++] = c;
  }
  q.resize(kept);
}

// Random cp.async mode: the thread reached an emulator entry point; its copies whose countdown
// runs out land now (the rest wait for their countdown or the covering wait).
inline void tick_copies(Fiber* f) {
  if (f->copies.empty() || modes().cp_async_seed == 0) return;
  auto& q = f->copies;
  size_t kept = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    if (--q[i].countdown <= 0)
      land_copy(q[i]);
    else
      q[kept++] = q[i];
  }
  q.resize(kept);
}

// A thread has returned from the kernel (or unwound): check that nobody waits for it.
void thread_exit(Emulator& e, Fiber* self) {
  BlockState& b = e.block;
  self->state = State::Done;
  ++b.done;
  perform_copies(self, self->copy_group_seq, true);  // outstanding cp.async complete at exit
  if (b.aborting) return;
  if (b.barrier_arrived > 0) {
    abort_block(e, where(e, self) + ": exited while " + std::to_string(b.barrier_arrived) +
                       " thread(s) wait at __syncthreads (" + site(b.barrier_file, b.barrier_line) +
                       "); every thread of the block must reach each __syncthreads");
    return;
  }
  const int lane = self->tid % kWarpSize;
  const int warp_base = self->tid - lane;
  WarpState& ws = b.warps[self->tid / kWarpSize];
  ws.done |= 1u << lane;
  for (unsigned p = ws.parked; p; p &= p - 1) {
    Fiber* f = e.fibers[warp_base + __builtin_ctz(p)].get();
    if (f->warp_mask >> lane & 1u) {
      abort_block(e, where(e, f) + ": " + f->warp_op + " (" + site(f->warp_file, f->warp_line) + ") with mask " +
                         hex(f->warp_mask) + " waits for lane " + std::to_string(lane) +
                         ", which exited without arriving");
      return;
    }
  }
}

void fiber_main() {
  Emulator& e = emu();
  Fiber* self = e.current;
  {
    const void* old_bottom = nullptr;
    size_t old_size = 0;
    asan_finish(nullptr, &old_bottom, &old_size);
    if (e.switching_from_scheduler) {
      e.sched_stack_bottom = old_bottom;
      e.sched_stack_size = old_size;
    }
    enter(e, self);
  }
  for (;;) {
    if (!e.block.aborting) {
      try {
        e.launch.invoke(e.launch.closure);
      } catch (const FiberAbort&) {
        // the block is being abandoned
      } catch (const std::exception& ex) {
        const std::string msg = ex.what();
        // errors raised through fail() already name the kernel, block and thread
        abort_block(e, msg.rfind("kernel ", 0) == 0 ? msg : where(e, self) + ": " + msg);
      } catch (...) {
        abort_block(e, where(e, self) + ": unknown exception");
      }
    }
    thread_exit(e, self);
    switch_away(e, self);  // resumes here when the fiber is reused for another block
  }
}

Fiber* make_fiber(int tid) {
  auto f = std::make_unique<Fiber>();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t total = kFiberStackBytes + page;
  void* mem = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw Error("cuda-emu: cannot map a fiber stack");
  mprotect(mem, page, PROT_NONE);  // guard page: a fiber stack overflow faults instead of corrupting
  f->stack = static_cast<unsigned char*>(mem) + page;
  f->stack_size = kFiberStackBytes;
  f->tid = tid;
#if defined(VITCUDA_EMU_FAST_SWITCH)
  // The stack of a fiber suspended in vitcuda_emu_switch, whose return address is fiber_main:
  // from the top (16-byte aligned): a zero return address for fiber_main (it never returns; the
  // zero ends backtraces), fiber_main, rbp rbx r12 r13 r14 r15 (zero), MXCSR and x87 control word.
  auto* top = reinterpret_cast<uint64_t*>(f->stack + f->stack_size);
  uint64_t* sp = top - 10;
  std::memset(sp, 0, 10 * sizeof(uint64_t));
  const uint32_t mxcsr = 0x1f80;  // the default MXCSR: exceptions masked, round to nearest
  const uint16_t fpucw = 0x037f;  // the default x87 control word
  std::memcpy(reinterpret_cast<unsigned char*>(sp), &mxcsr, 4);
  std::memcpy(reinterpret_cast<unsigned char*>(sp) + 4, &fpucw, 2);
  sp[8] = reinterpret_cast<uint64_t>(&fiber_main);
  f->ctx.sp = sp;
#else
  if (getcontext(&f->ctx.uc) != 0) throw Error("cuda-emu: getcontext failed");
  f->ctx.uc.uc_stack.ss_sp = f->stack;
  f->ctx.uc.uc_stack.ss_size = f->stack_size;
  f->ctx.uc.uc_link = nullptr;
  makecontext(&f->ctx.uc, &fiber_main, 0);
  // ASan's swapcontext interceptor clears the shadow of uc_stack on every switch (128 KiB of
  // shadow per MiB of stack); the stack is only needed by makecontext, so forget it.
  f->ctx.uc.uc_stack.ss_sp = nullptr;
  f->ctx.uc.uc_stack.ss_size = 0;
#endif
  return f.release();
}

std::string describe_deadlock(Emulator& e) {
  BlockState& b = e.block;
  std::ostringstream os;
  // Report the first parked thread, with what it waits for.
  for (int i = 0; i < b.nthreads; ++i) {
    Fiber* f = e.fibers[i].get();
    if (f->state == State::AtWarp) {
      const int lane = f->tid % kWarpSize;
      const int base = f->tid - lane;
      std::string missing;
      for (int l = 0; l < kWarpSize; ++l) {
        if (!(f->warp_mask >> l & 1u) || base + l >= b.nthreads) continue;
        Fiber* o = e.fibers[base + l].get();
        if (o->state == State::AtWarp && o->warp_fn == f->warp_fn && o->warp_mask == f->warp_mask) continue;
        if (!missing.empty()) missing += "; ";
        missing +=
            "lane " + std::to_string(l) +
            (o->state == State::AtBarrier ? " waits at __syncthreads (" + site(b.barrier_file, b.barrier_line) + ")"
             : o->state == State::AtWarp  ? std::string(" waits in ") + o->warp_op + " (" +
                                               site(o->warp_file, o->warp_line) + ") with mask " + hex(o->warp_mask)
                                         : std::string(" did not arrive"));
      }
      os << where(e, f) << ": " << f->warp_op << " (" << site(f->warp_file, f->warp_line) << ") with mask "
         << hex(f->warp_mask) << " can never complete: " << missing;
      return os.str();
    }
  }
  os << where(e, nullptr) << ": deadlock: " << b.barrier_arrived << " of " << b.nthreads
     << " threads wait at __syncthreads (" << site(b.barrier_file, b.barrier_line)
     << ") and the others can never arrive";
  return os.str();
}

void run_block(Emulator& e, uint3 block_idx) {
  BlockState& b = e.block;
  const int n = b.nthreads;
  b.idx = block_idx;
  b.done = 0;
  b.barrier_arrived = 0;
  b.aborting = false;
  b.error.clear();
  b.warps.assign((n + kWarpSize - 1) / kWarpSize, WarpState{});
  g_block_idx = block_idx;
  if (e.launch.smem_bytes > 0) std::memset(e.launch.smem, 0xFF, e.launch.smem_bytes);  // NaN fill
  e.ready_head = 0;
  e.ready_count = 0;
  const dim3& bd = e.launch.block;
  for (int t = 0; t < n; ++t) {
    Fiber* f = e.fibers[t].get();
    f->idx = make_uint3(t % bd.x, (t / bd.x) % bd.y, t / (bd.x * bd.y));
    f->state = State::Ready;
    f->queued = false;
    f->copies.clear();
    f->copy_group_seq = 0;
    push_ready(e, f);
  }
  for (;;) {
    Fiber* next = pop_ready(e);
    if (next) {
      enter(e, next);
      e.switching_from_scheduler = true;
      asan_start(&e.sched_fake_stack, next->stack, next->stack_size);
      jump(e.sched_ctx, next->ctx);
      asan_finish(e.sched_fake_stack, nullptr, nullptr);
      e.current = nullptr;
      continue;
    }
    if (b.done == n) break;
    abort_block(e, describe_deadlock(e));  // parked fibers unwind on their next run
  }
  if (!b.error.empty()) throw Error(b.error);
}

void validate_launch(Emulator& e, const void* kernel, dim3 grid, dim3 block, size_t smem) {
  const std::string prefix = "cuda-emu: launch of " + rt::kernel_name(kernel) + " with grid " + dim_str(grid) +
                             ", block " + dim_str(block) + ", " + std::to_string(smem) +
                             " bytes of dynamic shared memory: ";
  (void)e;
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0)
    throw Error(prefix + "grid and block dimensions must be at least 1");
  if (threads > kMaxThreadsPerBlock || block.x > 1024 || block.y > 1024 || block.z > 64)
    throw Error(prefix + "the block has " + std::to_string(threads) +
                " threads; the limit is 1024 per block (x, y <= 1024, z <= 64)");
  if (grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u)
    throw Error(prefix + "grid dimensions over the limit (x < 2^31, y and z <= 65535)");
  if (smem > kMaxDynamicSmemDefault) {
    size_t optin = 0;
    {
      std::lock_guard<std::mutex> lock(optin_mutex());
      auto it = optin_registry().find(kernel);
      if (it != optin_registry().end()) optin = it->second;
    }
    if (smem > kMaxDynamicSmemOptIn)
      throw Error(prefix + "over the device limit of " + std::to_string(kMaxDynamicSmemOptIn) +
                  " bytes (227 KiB, H100)");
    if (smem > optin)
      throw Error(prefix + "over 48 KiB needs an opt-in: call rt::set_max_dynamic_smem(kernel, " +
                  std::to_string(smem) + ") first (the kernel's opt-in is " + std::to_string(optin) + " bytes)");
  }
}

}  // namespace

// ---- public entry points ---------------------------------------------------------------------

void check_launch_config(const void* kernel, dim3 grid, dim3 block, size_t smem_bytes) {
  validate_launch(emu(), kernel, grid, block, smem_bytes);
}

void set_block_order_seed(uint64_t seed) {
  modes().block_order_seed = seed;
  modes().launch_seq = 0;
}
uint64_t block_order_seed() { return modes().block_order_seed; }
void set_block_order_kernels(const std::string& name_part) { modes().block_order_kernels = name_part; }
std::string block_order_kernels() { return modes().block_order_kernels; }
void set_cp_async_seed(uint64_t seed) {
  modes().cp_async_seed = seed;
  modes().cp_async_rng = seed;
}
uint64_t cp_async_seed() { return modes().cp_async_seed; }

void set_max_dynamic_smem(const void* kernel, size_t bytes) {
  if (bytes > kMaxDynamicSmemOptIn)
    throw Error("cuda-emu: set_max_dynamic_smem(" + rt::kernel_name(kernel) + ", " + std::to_string(bytes) +
                "): over the device limit of " + std::to_string(kMaxDynamicSmemOptIn) + " bytes (227 KiB, H100)");
  std::lock_guard<std::mutex> lock(optin_mutex());
  optin_registry()[kernel] = bytes;
}

void run_grid(const void* kernel, dim3 grid, dim3 block, size_t smem_bytes, rt::Stream stream, InvokeFn invoke,
              const void* closure) {
  (void)stream;  // streams are synchronous: the launch completes before run_grid returns
  Emulator& e = emu();
  if (e.in_launch)
    throw Error("cuda-emu: launch of " + rt::kernel_name(kernel) +
                " from inside a kernel (dynamic parallelism) is not supported");
  validate_launch(e, kernel, grid, block, smem_bytes);
  if (rt::dry_run()) return;  // checked and counted (launch()), not executed
  std::lock_guard<std::mutex> lock(launch_mutex());

  const int n = static_cast<int>(block.x * block.y * block.z);
  while (static_cast<int>(e.fibers.size()) < n) e.fibers.emplace_back(make_fiber(static_cast<int>(e.fibers.size())));
  if (e.ready.size() < static_cast<size_t>(n) + 1) e.ready.resize(n + 1);

  // Exactly the requested bytes, so ASan also sees raw accesses past the end.
  std::unique_ptr<unsigned char[]> smem(smem_bytes ? new unsigned char[smem_bytes] : nullptr);
  e.launch = Launch{kernel, invoke, closure, grid, block, smem_bytes, smem.get()};
  e.kernel_name_cache.clear();
  e.block = BlockState{};
  e.block.nthreads = n;
  g_block_dim = block;
  g_grid_dim = grid;
  e.in_launch = true;
  try {
    const AdversarialModes& m = modes();
    if (m.block_order_seed == 0 ||
        (!m.block_order_kernels.empty() &&
         rt::short_kernel_name(rt::kernel_name(kernel)).find(m.block_order_kernels) == std::string::npos)) {
      for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
          for (unsigned x = 0; x < grid.x; ++x) run_block(e, make_uint3(x, y, z));
    } else {
      // A random permutation of the blocks (Fisher-Yates), drawn from the seed and the launch's
      // number since the seed was set: reproducible, and different for every launch.
      const uint64_t nx = grid.x, nxy = nx * grid.y, count = nxy * grid.z;
      std::vector<uint64_t> order(count);
      for (uint64_t i = 0; i < count; ++i) order[i] = i;
      uint64_t rng = modes().block_order_seed ^ (0x632be59bd9b4e019ull * ++modes().launch_seq);
      for (uint64_t i = count; i > 1; --i) std::swap(order[i - 1], order[splitmix64(rng) % i]);
      for (const uint64_t i : order)
        run_block(e, make_uint3(static_cast<unsigned>(i % nx), static_cast<unsigned>(i / nx % grid.y),
                                static_cast<unsigned>(i / nxy)));
    }
  } catch (...) {
    e.in_launch = false;
    e.launch = Launch{};
    throw;
  }
  e.in_launch = false;
  e.launch = Launch{};
}

void fail(const std::string& what) {
  Emulator& e = emu();
  if (!e.current) throw Error("cuda-emu: " + what);
  throw Error(where(e, e.current) + ": " + what);
}

int block_barrier(BarrierOp op, int predicate, const char* file, int line) {
  Emulator& e = emu();
  Fiber* self = e.current;
  if (!self) throw Error("cuda-emu: __syncthreads called outside a kernel");
  tick_copies(self);
  BlockState& b = e.block;
  if (b.done > 0) {
    for (int i = 0; i < b.nthreads; ++i)
      if (e.fibers[i]->state == State::Done)
        fail("__syncthreads (" + site(file, line) + ") can never complete: thread " + idx_str(e.fibers[i]->idx) +
             " has exited; every thread of the block must reach each __syncthreads");
  }
  if (b.barrier_arrived == 0) {
    b.barrier_op = op;
    b.barrier_file = file;
    b.barrier_line = line;
    b.barrier_acc = op == BarrierOp::And ? 1 : 0;
  } else if (b.barrier_line != line || std::strcmp(b.barrier_file, file) != 0 || b.barrier_op != op) {
    fail("reached __syncthreads at " + site(file, line) + " while " + std::to_string(b.barrier_arrived) +
         " thread(s) wait at the one at " + site(b.barrier_file, b.barrier_line) + " (divergent barriers)");
  }
  const int p = predicate != 0;
  switch (op) {
    case BarrierOp::Sync: break;
    case BarrierOp::Count: b.barrier_acc += p; break;
    case BarrierOp::And: b.barrier_acc &= p; break;
    case BarrierOp::Or: b.barrier_acc |= p; break;
  }
  if (++b.barrier_arrived == b.nthreads) {
    const int result = b.barrier_acc;
    b.barrier_arrived = 0;
    for (int i = 0; i < b.nthreads; ++i) {
      Fiber* f = e.fibers[i].get();
      if (f->state == State::AtBarrier) {
        f->barrier_result = result;
        f->state = State::Ready;
        push_ready(e, f);
      }
    }
    return result;  // the last thread to arrive runs on without switching
  }
  self->state = State::AtBarrier;
  switch_away(e, self);
  check_abort(e);
  return self->barrier_result;
}

void warp_collective(const char* op_name, WarpCompleteFn complete, unsigned mask, const void* in, void* out,
                     const char* file, int line) {
  Emulator& e = emu();
  Fiber* self = e.current;
  if (!self) throw Error(std::string("cuda-emu: ") + op_name + " called outside a kernel");
  tick_copies(self);
  BlockState& b = e.block;
  const int lane = self->tid % kWarpSize;
  const int base = self->tid - lane;
  const int lanes = std::min(kWarpSize, b.nthreads - base);
  const unsigned existing = lanes == kWarpSize ? 0xffffffffu : ((1u << lanes) - 1u);
  if (!(mask >> lane & 1u))
    fail(std::string(op_name) + " (" + site(file, line) + "): the mask " + hex(mask) +
         " does not include the calling lane " + std::to_string(lane));
  if (mask & ~existing)
    fail(std::string(op_name) + " (" + site(file, line) + "): the mask " + hex(mask) +
         " names lanes that do not exist (this warp has " + std::to_string(lanes) + " lanes)");
  WarpState& ws = b.warps[self->tid / kWarpSize];
  if (const unsigned exited = mask & ws.done)
    fail(std::string(op_name) + " (" + site(file, line) + ") with mask " + hex(mask) + " names lane " +
         std::to_string(__builtin_ctz(exited)) + ", which has exited");
  self->warp_op = op_name;
  self->warp_fn = complete;
  self->warp_mask = mask;
  self->warp_in = in;
  self->warp_out = out;
  self->warp_file = file;
  self->warp_line = line;
  const unsigned self_bit = 1u << lane;
  const unsigned others = mask & ~self_bit;
  bool complete_now = (others & ~ws.parked) == 0;
  for (unsigned p = others; complete_now && p; p &= p - 1) {
    const Fiber* f = e.fibers[base + __builtin_ctz(p)].get();
    complete_now = f->warp_fn == complete && f->warp_mask == mask;  // else parked elsewhere
  }
  if (complete_now) {
    WarpSlot slots[kWarpSize] = {};
    for (unsigned p = mask; p; p &= p - 1) {
      const Fiber* f = e.fibers[base + __builtin_ctz(p)].get();
      slots[__builtin_ctz(p)] = WarpSlot{f->warp_in, f->warp_out};
    }
    complete(mask, slots);
    ws.parked &= ~others;
    for (unsigned p = others; p; p &= p - 1) {
      Fiber* f = e.fibers[base + __builtin_ctz(p)].get();
      f->state = State::Ready;
      push_ready(e, f);
    }
    return;
  }
  ws.parked |= self_bit;
  self->state = State::AtWarp;
  switch_away(e, self);
  check_abort(e);
}

unsigned active_mask() {
  Emulator& e = emu();
  Fiber* self = e.current;
  if (!self) return 0;
  const int base = self->tid - self->tid % kWarpSize;
  const int lanes = std::min(kWarpSize, e.block.nthreads - base);
  const unsigned existing = lanes == kWarpSize ? 0xffffffffu : ((1u << lanes) - 1u);
  return existing & ~e.block.warps[self->tid / kWarpSize].done;
}

// ---- shuffles (PTX ISA shfl.sync: the segment of `width` lanes is [minLane, maxLane]) ---------
namespace {
template <typename SourceLane>
void shuffle_complete(unsigned mask, const WarpSlot* slots, SourceLane source_lane) {
  for (int l = 0; l < kWarpSize; ++l) {
    if (!(mask >> l & 1u)) continue;
    const auto* in = static_cast<const ShuffleIn*>(slots[l].in);
    const int width = in->width;
    const int min_lane = l & ~(width - 1);
    const int max_lane = min_lane + width - 1;
    const int src = source_lane(l, in->lane_arg, width, min_lane, max_lane);
    uint64_t v = in->bits;  // out of the segment: the lane keeps its own value
    // A source lane outside the mask has no defined value on the GPU; the emulator gives the
    // caller's own value (documented in kernels/emu/README.md).
    if (src >= 0 && (mask >> src & 1u)) v = static_cast<const ShuffleIn*>(slots[src].in)->bits;
    *static_cast<uint64_t*>(slots[l].out) = v;
  }
}
}  // namespace

void shfl_idx_complete(unsigned mask, const WarpSlot* slots) {
  shuffle_complete(mask, slots,
                   [](int, int arg, int width, int min_lane, int) { return min_lane + (arg & (width - 1)); });
}
void shfl_up_complete(unsigned mask, const WarpSlot* slots) {
  shuffle_complete(mask, slots, [](int l, int arg, int, int min_lane, int) {
    const int j = l - arg;
    return j >= min_lane ? j : -1;
  });
}
void shfl_down_complete(unsigned mask, const WarpSlot* slots) {
  shuffle_complete(mask, slots, [](int l, int arg, int, int, int max_lane) {
    const int j = l + arg;
    return j <= max_lane ? j : -1;
  });
}
void shfl_xor_complete(unsigned mask, const WarpSlot* slots) {
  shuffle_complete(mask, slots, [](int l, int arg, int, int, int max_lane) {
    const int j = l ^ (arg & 31);
    return j <= max_lane ? j : -1;
  });
}
void syncwarp_complete(unsigned, const WarpSlot*) {}
void ballot_complete(unsigned mask, const WarpSlot* slots) {
  unsigned ballot = 0;
  for (int l = 0; l < kWarpSize; ++l)
    if ((mask >> l & 1u) && *static_cast<const int*>(slots[l].in)) ballot |= 1u << l;
  for (int l = 0; l < kWarpSize; ++l)
    if (mask >> l & 1u) *static_cast<unsigned*>(slots[l].out) = ballot;
}

// ---- shared memory ---------------------------------------------------------------------------
DynamicSmem dynamic_smem() {
  Emulator& e = emu();
  if (!e.current) throw Error("cuda-emu: dynamic shared memory used outside a kernel");
  return DynamicSmem{e.launch.smem, e.launch.smem_bytes};
}

void fail_smem_access(ptrdiff_t offset, size_t access_bytes, size_t smem_bytes, const char* type_name) {
  std::string what = "dynamic shared memory access of " + std::to_string(access_bytes) + " byte(s) (" + type_name +
                     ") at byte offset " + std::to_string(offset);
  if (offset >= 0 && access_bytes > 0 && offset % static_cast<ptrdiff_t>(access_bytes) != 0 &&
      static_cast<size_t>(offset) + access_bytes <= smem_bytes)
    what += " is misaligned";
  else
    what += " is out of bounds: the launch gave " + std::to_string(smem_bytes) + " bytes";
  fail(what);
}

void check_shared_range(const void* addr, size_t bytes, const char* op) {
  Emulator& e = emu();
  const auto* p = static_cast<const unsigned char*>(addr);
  const unsigned char* lo = e.launch.smem;
  if (!lo || p < lo || p >= lo + e.launch.smem_bytes + 4096) return;  // static __shared__ etc.
  if (p + bytes > lo + e.launch.smem_bytes)
    fail(std::string(op) + ": " + std::to_string(bytes) + " bytes at dynamic shared memory offset " +
         std::to_string(p - lo) + " are out of bounds: the launch gave " + std::to_string(e.launch.smem_bytes) +
         " bytes");
}

// ---- cp.async ----------------------------------------------------------------------------------
void cp_async(void* dst, const void* src, int bytes, int src_bytes) {
  Emulator& e = emu();
  Fiber* self = e.current;
  if (!self) throw Error("cuda-emu: cp.async outside a kernel");
  if (reinterpret_cast<uintptr_t>(dst) % bytes || reinterpret_cast<uintptr_t>(src) % bytes)
    fail("cp.async of " + std::to_string(bytes) + " bytes needs " + std::to_string(bytes) + "-byte aligned addresses");
  if (src_bytes < 0 || src_bytes > bytes)
    fail("cp.async: src-size " + std::to_string(src_bytes) + " is not in [0, " + std::to_string(bytes) + "]");
  check_shared_range(dst, static_cast<size_t>(bytes), "cp.async");
  tick_copies(self);
  AsyncCopy c{dst, src, bytes, src_bytes, -1, 0};
  if (modes().cp_async_seed != 0) {
    // 1 in 4 lands at once; the others after 1..8 more entry points of this thread (or at the
    // covering wait, whichever comes first)
    const uint64_t r = splitmix64(modes().cp_async_rng);
    if (r % 4 == 0) {
      land_copy(c);
      return;
    }
    c.countdown = 1 + static_cast<int>((r >> 8) % 8);
  }
  self->copies.push_back(c);
}

void cp_async_commit_group() {
  Emulator& e = emu();
  Fiber* self = e.current;
  if (!self) throw Error("cuda-emu: cp.async.commit_group outside a kernel");
  tick_copies(self);
  const long g = ++self->copy_group_seq;
  for (AsyncCopy& c : self->copies)
    if (c.group < 0) c.group = g;
}

void cp_async_wait_group(int n) {
  Emulator& e = emu();
  Fiber* self = e.current;
  if (!self) throw Error("cuda-emu: cp.async.wait_group outside a kernel");
  tick_copies(self);
  if (n < 0)
    perform_copies(self, self->copy_group_seq, true);
  else
    perform_copies(self, self->copy_group_seq - n, false);
}

}  // namespace vitcuda::emu

// ---- kernel names: dladdr, then the ELF symbol table (static and hidden functions) ------------
namespace vitcuda {
VITCUDA_KERNELS_BEGIN
namespace rt {
namespace {

std::string demangle(const char* name) {
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string s = (status == 0 && d) ? d : name;
  std::free(d);
  return s;
}

struct ObjectHit {
  uintptr_t addr = 0;
  std::string path;
  uintptr_t bias = 0;
  bool found = false;
};

int find_object(struct dl_phdr_info* info, size_t, void* data) {
  auto* hit = static_cast<ObjectHit*>(data);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD) continue;
    const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
    if (hit->addr >= lo && hit->addr < lo + ph.p_memsz) {
      hit->path = info->dlpi_name && info->dlpi_name[0] ? info->dlpi_name : "/proc/self/exe";
      hit->bias = info->dlpi_addr;
      hit->found = true;
      return 1;
    }
  }
  return 0;
}

std::string symtab_lookup(uintptr_t addr) {
  ObjectHit hit;
  hit.addr = addr;
  dl_iterate_phdr(&find_object, &hit);
  if (!hit.found) return {};
  const int fd = open(hit.path.c_str(), O_RDONLY);
  if (fd < 0) return {};
  struct stat st;
  std::string result;
  if (fstat(fd, &st) == 0 && st.st_size > static_cast<off_t>(sizeof(ElfW(Ehdr)))) {
    void* map = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (map != MAP_FAILED) {
      const auto* base = static_cast<const unsigned char*>(map);
      const auto* eh = reinterpret_cast<const ElfW(Ehdr)*>(base);
      const auto* sh = reinterpret_cast<const ElfW(Shdr)*>(base + eh->e_shoff);
      const uintptr_t rel = addr - hit.bias;
      for (int i = 0; i < eh->e_shnum && result.empty(); ++i) {
        if (sh[i].sh_type != SHT_SYMTAB) continue;
        const auto* syms = reinterpret_cast<const ElfW(Sym)*>(base + sh[i].sh_offset);
        const char* strs = reinterpret_cast<const char*>(base + sh[sh[i].sh_link].sh_offset);
        const size_t count = sh[i].sh_size / sizeof(ElfW(Sym));
        for (size_t k = 0; k < count; ++k) {
          if (ELF64_ST_TYPE(syms[k].st_info) != STT_FUNC) continue;
          if (rel >= syms[k].st_value && rel < syms[k].st_value + std::max<uint64_t>(syms[k].st_size, 1)) {
            result = demangle(strs + syms[k].st_name);
            break;
          }
        }
      }
      munmap(map, static_cast<size_t>(st.st_size));
    }
  }
  close(fd);
  return result;
}

}  // namespace

std::string kernel_name(const void* kernel) {
  static std::mutex m;
  static std::map<const void*, std::string> cache;
  std::lock_guard<std::mutex> lock(m);
  auto it = cache.find(kernel);
  if (it != cache.end()) return it->second;
  std::string name;
  Dl_info info;
  if (dladdr(kernel, &info) && info.dli_sname && info.dli_saddr == kernel) name = demangle(info.dli_sname);
  if (name.empty()) name = symtab_lookup(reinterpret_cast<uintptr_t>(kernel));
  if (name.empty()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "kernel@%p", kernel);
    name = buf;
  }
  cache.emplace(kernel, name);
  return name;
}

}  // namespace rt
VITCUDA_KERNELS_END
}  // namespace vitcuda
