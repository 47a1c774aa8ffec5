// vitcuda — the CUDA execution model on the CPU (the "cuda-emu" build). Included by
// kernels/common.cuh when compiling with g++ and -DVITCUDA_EMU; never by nvcc.
//
// Every block's threads run as fibers (ucontext) on the calling thread, one block at a time,
// in blockIdx order. A fiber runs until it reaches a synchronisation point (__syncthreads, a
// warp collective: shuffle, vote, __syncwarp, ldmatrix, mma) and then hands over to the next
// ready fiber, so barriers and warp rendezvous behave as on the GPU. Misuse the emulator can
// see (a barrier some threads never reach, a mask naming a lane that does not arrive, a
// dynamic shared-memory access out of bounds, launch limits) throws vitcuda::Error naming the
// kernel, the block and the thread. See kernels/emu/README.md for the design and its limits.
#pragma once
#if !defined(VITCUDA_EMU)
#error "kernels/emu/emu.h is the emulation build only (compile with -DVITCUDA_EMU)"
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_functions.h>
#include <vector_types.h>

#include "kernels/runtime.h"

// ---- qualifiers -----------------------------------------------------------------------------
// cuda's host_defines.h (pulled in above) already makes __global__, __device__, __host__ empty
// and __forceinline__ an always_inline for a host compiler. Shared memory is per block and blocks
// run one at a time, so a function-local static is exactly one block's __shared__ array.
#undef __shared__
#define __shared__ static
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef __constant__
#define __constant__
#endif
#undef __noinline__
#define __noinline__ __attribute__((noinline))

namespace vitcuda::emu {

constexpr int kWarpSize = 32;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxDynamicSmemDefault = 48 * 1024;  // without an opt-in
constexpr size_t kMaxDynamicSmemOptIn = 227 * 1024;   // H100 (sm_90) per-block opt-in limit

// The built-in variables of the running fiber (set by the scheduler on every switch). Plain
// globals, not thread_local: one emulated launch runs at a time in a process (static __shared__
// is process-wide too), and GCC 12's UBSan null check of a TLS address tests stale flags and
// reports a false "reference binding to null pointer".
extern uint3 g_thread_idx;
extern uint3 g_block_idx;
extern dim3 g_block_dim;
extern dim3 g_grid_dim;

// ---- the scheduler's entry point (kernels/emu/emu.cpp) -----------------------------------------
using InvokeFn = void (*)(const void* closure);  // runs the kernel body for the current thread
void run_grid(const void* kernel, dim3 grid, dim3 block, size_t smem_bytes, rt::Stream stream, InvokeFn invoke,
              const void* closure);
void set_max_dynamic_smem(const void* kernel, size_t bytes);
// The launch checks of run_grid (limits, shared-memory opt-in) without running anything: a
// launch captured into a graph is checked when it is captured, as CUDA does.
void check_launch_config(const void* kernel, dim3 grid, dim3 block, size_t smem_bytes);

// ---- graph capture (runtime_emu.cpp; the API is kernels/runtime.h's stream_begin_capture) -----
// While `stream` captures, its work is recorded as a node instead of run; graph_launch runs the
// nodes in order. A node checks rt::dry_run() when it runs.
bool capturing(rt::Stream stream);
void capture_node(std::function<void()> node);

// ---- adversarial modes (README.md "Adversarial modes"; both off, 0, by default) -------------
// Block order: 0 runs a grid's blocks in blockIdx order (x fastest); any other seed runs every
// launch's blocks in a random permutation drawn from the seed and the launch's sequence number
// since the seed was set. Initial value: env VITCUDA_EMU_BLOCK_ORDER (decimal), else 0.
void set_block_order_seed(uint64_t seed);
uint64_t block_order_seed();
// Restricts the shuffle to kernels whose name (rt::short_kernel_name, e.g.
// "vitcuda::(anonymous namespace)::ln_fwd<float>") contains `name_part`; "" (the default, or env
// VITCUDA_EMU_BLOCK_ORDER_KERNELS): every kernel. Finds which kernel of a computation depends on
// the block order.
void set_block_order_kernels(const std::string& name_part);
std::string block_order_kernels();
// cp.async landing: 0 performs each queued copy at the wait_group / wait_all that covers it (or at
// thread exit); any other seed lands each copy at a random point between its issue and that
// wait: immediately, or at one of the issuing thread's later emulator entry points (cp.async,
// commit, wait, __syncthreads, a warp collective). Initial value: env VITCUDA_EMU_CP_ASYNC.
void set_cp_async_seed(uint64_t seed);
uint64_t cp_async_seed();

// Throws vitcuda::Error "kernel K, block (..), thread (..): what" for the running thread.
[[noreturn]] void fail(const std::string& what);

// ---- block barrier --------------------------------------------------------------------------
enum class BarrierOp : int { Sync, Count, And, Or };
int block_barrier(BarrierOp op, int predicate, const char* file, int line);

// ---- warp collectives -----------------------------------------------------------------------
// Every warp-synchronous operation is a rendezvous of the lanes named in `mask`: each lane
// deposits `in` and `out` and blocks; the lane that completes the set runs `complete` once, for
// all of them, while the others are parked (their `in`/`out` point into their own stacks).
struct WarpSlot {
  const void* in;
  void* out;
};
using WarpCompleteFn = void (*)(unsigned mask, const WarpSlot* slots /*[32], by lane*/);
void warp_collective(const char* op_name, WarpCompleteFn complete, unsigned mask, const void* in, void* out,
                     const char* file, int line);
unsigned active_mask();  // lanes of the caller's warp that have not exited

// ---- dynamic shared memory ------------------------------------------------------------------
struct DynamicSmem {
  unsigned char* base;
  size_t bytes;
};
DynamicSmem dynamic_smem();
[[noreturn]] void fail_smem_access(ptrdiff_t offset, size_t access_bytes, size_t smem_bytes, const char* type_name);
// An address used by a shared-memory instruction (ldmatrix, cp.async): when it lies in the
// dynamic shared memory, [addr, addr + bytes) must fit in it. Static __shared__ is not checked.
void check_shared_range(const void* addr, size_t bytes, const char* op);

// ---- cp.async: per-thread queues of deferred copies, performed at wait_group ------------------
void cp_async(void* dst, const void* src, int bytes, int src_bytes);
void cp_async_commit_group();
void cp_async_wait_group(int n);  // n == -1: wait_all (also the uncommitted copies)

}  // namespace vitcuda::emu

// ---- built-in variables ---------------------------------------------------------------------
// Read-only, as in CUDA.
#define threadIdx (static_cast<const uint3&>(::vitcuda::emu::g_thread_idx))
#define blockIdx (static_cast<const uint3&>(::vitcuda::emu::g_block_idx))
#define blockDim (static_cast<const dim3&>(::vitcuda::emu::g_block_dim))
#define gridDim (static_cast<const dim3&>(::vitcuda::emu::g_grid_dim))
constexpr int warpSize = 32;

// ---- barriers -------------------------------------------------------------------------------
// The call site (file, line) is captured so that a barrier reached from two different places,
// or not at all, is reported where it happens.
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::vitcuda::emu::block_barrier(::vitcuda::emu::BarrierOp::Sync, 0, file, line);
}
inline int __syncthreads_count(int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::vitcuda::emu::block_barrier(::vitcuda::emu::BarrierOp::Count, predicate, file, line);
}
inline int __syncthreads_and(int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::vitcuda::emu::block_barrier(::vitcuda::emu::BarrierOp::And, predicate, file, line);
}
inline int __syncthreads_or(int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::vitcuda::emu::block_barrier(::vitcuda::emu::BarrierOp::Or, predicate, file, line);
}
inline void __threadfence() {}
inline void __threadfence_block() {}

// ---- warp shuffles and votes ----------------------------------------------------------------
namespace vitcuda::emu {
struct ShuffleIn {
  uint64_t bits;
  int lane_arg;  // srcLane, delta or laneMask
  int width;
};
void shfl_idx_complete(unsigned mask, const WarpSlot* slots);
void shfl_up_complete(unsigned mask, const WarpSlot* slots);
void shfl_down_complete(unsigned mask, const WarpSlot* slots);
void shfl_xor_complete(unsigned mask, const WarpSlot* slots);
void syncwarp_complete(unsigned mask, const WarpSlot* slots);
void ballot_complete(unsigned mask, const WarpSlot* slots);

template <typename T>
T shuffle(const char* name, WarpCompleteFn fn, unsigned mask, T var, int lane_arg, int width, const char* file,
          int line) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "warp shuffles move values of at most 8 bytes");
  if (width <= 0 || width > kWarpSize || (width & (width - 1)) != 0)
    fail(std::string(name) + ": width " + std::to_string(width) + " is not a power of two in [1, 32]");
  ShuffleIn in{0, lane_arg, width};
  std::memcpy(&in.bits, &var, sizeof(T));
  uint64_t out = 0;
  warp_collective(name, fn, mask, &in, &out, file, line);
  T result;
  std::memcpy(&result, &out, sizeof(T));
  return result;
}
}  // namespace vitcuda::emu

template <typename T>
T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize, const char* file = __builtin_FILE(),
              int line = __builtin_LINE()) {
  return ::vitcuda::emu::shuffle("__shfl_sync", ::vitcuda::emu::shfl_idx_complete, mask, var, srcLane, width, file,
                                 line);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize, const char* file = __builtin_FILE(),
                 int line = __builtin_LINE()) {
  return ::vitcuda::emu::shuffle("__shfl_up_sync", ::vitcuda::emu::shfl_up_complete, mask, var, static_cast<int>(delta),
                                 width, file, line);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize, const char* file = __builtin_FILE(),
                   int line = __builtin_LINE()) {
  return ::vitcuda::emu::shuffle("__shfl_down_sync", ::vitcuda::emu::shfl_down_complete, mask, var,
                                 static_cast<int>(delta), width, file, line);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize, const char* file = __builtin_FILE(),
                  int line = __builtin_LINE()) {
  return ::vitcuda::emu::shuffle("__shfl_xor_sync", ::vitcuda::emu::shfl_xor_complete, mask, var, laneMask, width, file,
                                 line);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::vitcuda::emu::warp_collective("__syncwarp", ::vitcuda::emu::syncwarp_complete, mask, nullptr, nullptr, file, line);
}
inline unsigned __ballot_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  const int pred = predicate != 0;
  unsigned out = 0;
  ::vitcuda::emu::warp_collective("__ballot_sync", ::vitcuda::emu::ballot_complete, mask, &pred, &out, file, line);
  return out;
}
// __any_sync and __all_sync are ballots over the mask (one rendezvous kind, as in hardware vote).
inline int __any_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return __ballot_sync(mask, predicate, file, line) != 0;
}
inline int __all_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return __ballot_sync(mask, predicate, file, line) == mask;
}
inline unsigned __activemask() { return ::vitcuda::emu::active_mask(); }

// ---- atomics: blocks run one at a time and fibers switch only at synchronisation points, so a
// plain read-modify-write is atomic with respect to every other emulated thread. ---------------
template <typename T>
inline T vitcuda_emu_atomic_add(T* address, T val) {
  const T old = *address;
  *address = old + val;
  return old;
}
inline float atomicAdd(float* a, float v) { return vitcuda_emu_atomic_add(a, v); }
inline double atomicAdd(double* a, double v) { return vitcuda_emu_atomic_add(a, v); }
inline int atomicAdd(int* a, int v) {
  const int old = *a;
  *a = static_cast<int>(static_cast<unsigned>(old) + static_cast<unsigned>(v));  // wraps like HW
  return old;
}
inline unsigned atomicAdd(unsigned* a, unsigned v) { return vitcuda_emu_atomic_add(a, v); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return vitcuda_emu_atomic_add(a, v);
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* a, __nv_bfloat16 v) {
  const __nv_bfloat16 old = *a;
  *a = __float2bfloat16(__bfloat162float(old) + __bfloat162float(v));
  return old;
}
inline __half atomicAdd(__half* a, __half v) {
  const __half old = *a;
  *a = __float2half(__half2float(old) + __half2float(v));
  return old;
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162* a, __nv_bfloat162 v) {
  const __nv_bfloat162 old = *a;
  a->x = __float2bfloat16(__bfloat162float(old.x) + __bfloat162float(v.x));
  a->y = __float2bfloat16(__bfloat162float(old.y) + __bfloat162float(v.y));
  return old;
}
inline __half2 atomicAdd(__half2* a, __half2 v) {
  const __half2 old = *a;
  a->x = __float2half(__half2float(old.x) + __half2float(v.x));
  a->y = __float2half(__half2float(old.y) + __half2float(v.y));
  return old;
}
template <typename T>
inline T vitcuda_emu_atomic_max(T* a, T v) {
  const T old = *a;
  if (v > old) *a = v;
  return old;
}
template <typename T>
inline T vitcuda_emu_atomic_min(T* a, T v) {
  const T old = *a;
  if (v < old) *a = v;
  return old;
}
inline int atomicMax(int* a, int v) { return vitcuda_emu_atomic_max(a, v); }
inline unsigned atomicMax(unsigned* a, unsigned v) { return vitcuda_emu_atomic_max(a, v); }
inline long long atomicMax(long long* a, long long v) { return vitcuda_emu_atomic_max(a, v); }
inline unsigned long long atomicMax(unsigned long long* a, unsigned long long v) {
  return vitcuda_emu_atomic_max(a, v);
}
inline int atomicMin(int* a, int v) { return vitcuda_emu_atomic_min(a, v); }
inline unsigned atomicMin(unsigned* a, unsigned v) { return vitcuda_emu_atomic_min(a, v); }
inline long long atomicMin(long long* a, long long v) { return vitcuda_emu_atomic_min(a, v); }
inline unsigned long long atomicMin(unsigned long long* a, unsigned long long v) {
  return vitcuda_emu_atomic_min(a, v);
}
template <typename T>
inline T vitcuda_emu_atomic_cas(T* a, T compare, T val) {
  const T old = *a;
  if (old == compare) *a = val;
  return old;
}
inline int atomicCAS(int* a, int c, int v) { return vitcuda_emu_atomic_cas(a, c, v); }
inline unsigned atomicCAS(unsigned* a, unsigned c, unsigned v) { return vitcuda_emu_atomic_cas(a, c, v); }
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long c, unsigned long long v) {
  return vitcuda_emu_atomic_cas(a, c, v);
}
inline unsigned short atomicCAS(unsigned short* a, unsigned short c, unsigned short v) {
  return vitcuda_emu_atomic_cas(a, c, v);
}
template <typename T>
inline T vitcuda_emu_atomic_exch(T* a, T v) {
  const T old = *a;
  *a = v;
  return old;
}
inline int atomicExch(int* a, int v) { return vitcuda_emu_atomic_exch(a, v); }
inline unsigned atomicExch(unsigned* a, unsigned v) { return vitcuda_emu_atomic_exch(a, v); }
inline unsigned long long atomicExch(unsigned long long* a, unsigned long long v) {
  return vitcuda_emu_atomic_exch(a, v);
}
inline float atomicExch(float* a, float v) { return vitcuda_emu_atomic_exch(a, v); }

// ---- math intrinsics: the fast-math forms compute the accurate value (the GPU's are within a
// few ulp of it; tests allow for that). ---------------------------------------------------------
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fadd_rn(float x, float y) { return x + y; }
inline float __fsub_rn(float x, float y) { return x - y; }
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __fdiv_rn(float x, float y) { return x / y; }
inline float __fmaf_rn(float x, float y, float z) { return std::fma(x, y, z); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / std::cbrt(x); }
inline float __saturatef(float x) { return x > 0.f ? (x < 1.f ? x : 1.f) : 0.f; }  // NaN -> 0
inline float exp10f(float x) { return std::pow(10.f, x); }
inline int __float2int_rn(float x) { return static_cast<int>(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(std::floor(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(std::ceil(x)); }
inline unsigned __float2uint_rn(float x) { return static_cast<unsigned>(std::nearbyint(x)); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }
inline int __float_as_int(float x) {
  int r;
  std::memcpy(&r, &x, 4);
  return r;
}
inline unsigned __float_as_uint(float x) {
  unsigned r;
  std::memcpy(&r, &x, 4);
  return r;
}
inline float __int_as_float(int x) {
  float r;
  std::memcpy(&r, &x, 4);
  return r;
}
inline float __uint_as_float(unsigned x) {
  float r;
  std::memcpy(&r, &x, 4);
  return r;
}
inline long long __double_as_longlong(double x) {
  long long r;
  std::memcpy(&r, &x, 8);
  return r;
}
inline double __longlong_as_double(long long x) {
  double r;
  std::memcpy(&r, &x, 8);
  return r;
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  x = ((x >> 8) & 0x00FF00FFu) | ((x & 0x00FF00FFu) << 8);
  return (x >> 16) | (x << 16);
}
inline unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((static_cast<uint64_t>(a) * b) >> 32); }
inline int __mulhi(int a, int b) { return static_cast<int>((static_cast<int64_t>(a) * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
// CUDA's device code has unqualified min/max overloads for the arithmetic types.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// ---- launch -----------------------------------------------------------------------------------
namespace vitcuda::emu {
template <typename Kernel, typename Params>
struct LaunchClosure {
  Kernel kernel;
  Params params;
  static void invoke(const void* self) {
    const auto* c = static_cast<const LaunchClosure*>(self);
    std::apply(c->kernel, c->params);  // each thread gets its own copies of the arguments
  }
};
}  // namespace vitcuda::emu
