// Misuse the emulator must report as vitcuda::Error naming the kernel, the block and the thread.
// Each kernel provokes one on purpose. These are emulator features: the native build skips them
// (compute-sanitizer's synccheck and memcheck cover the same ground on a GPU, tools/sanitize.sh).
#include <string>

#include "kernel_test.h"

namespace vitcuda::test {
namespace {

// Runs `fn`, expects an Error whose message contains every string of `parts`, and records the
// message as the test's property "error".
template <typename Fn>
void expect_misuse(Fn fn, std::initializer_list<const char*> parts) {
  const std::string msg = expect_error(fn, parts);
  if (!msg.empty()) ::testing::Test::RecordProperty("error", msg);  // visible with --gtest_output=xml
}

__global__ void misuse_early_exit_kernel(float* out) {
  if (threadIdx.x >= 16) return;  // half the block leaves ...
  __syncthreads();                // ... and the other half waits for it forever
  out[threadIdx.x] = 1.f;
}

__global__ void misuse_divergent_barrier_kernel(float* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();  // a different barrier: undefined on the GPU
  }
  out[threadIdx.x] = 1.f;
}

__global__ void misuse_shuffle_exited_lane_kernel(float* out) {
  if (threadIdx.x == 5) return;
  const float v = __shfl_down_sync(0xffffffffu, 1.f, 1);  // the mask names lane 5
  out[threadIdx.x] = v;
}

__global__ void misuse_shuffle_lane_at_barrier_kernel(float* out) {
  float v = 1.f;
  if (threadIdx.x % 32 == 7) {
    __syncthreads();  // lane 7 waits for the block, the block waits for lane 7
  } else {
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  }
  out[threadIdx.x] = v;
}

__global__ void misuse_mask_without_caller_kernel(float* out) {
  const int lane = threadIdx.x % 32;
  float v = 1.f;
  if (lane == 31) v = __shfl_sync(0x0000ffffu, v, 0);  // lane 31 is not in its own mask
  out[threadIdx.x] = v;
}

__global__ void misuse_smem_overrun_kernel(float* out, int n) {
  VITCUDA_DYNAMIC_SMEM(float, buf);
  buf[threadIdx.x] = 1.f;  // thread 64 writes past 256 bytes
  out[threadIdx.x] = buf[threadIdx.x] + static_cast<float>(n);
}

__global__ void misuse_smem_negative_kernel(float* out) {
  VITCUDA_DYNAMIC_SMEM(float, buf);
  SmemPtr<float> p = buf + 4;
  out[threadIdx.x] = p[-5];
}

__global__ void fine_kernel(float* out) {
  __shared__ float s[64];
  s[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = s[63 - threadIdx.x];
}

__global__ void big_smem_kernel(float* out) {
  VITCUDA_DYNAMIC_SMEM(float, buf);
  buf[threadIdx.x] = 2.f;
  __syncthreads();
  out[threadIdx.x] = buf[threadIdx.x];
}

class Misuse : public KernelTest {
 protected:
  void SetUp() override {
    VITCUDA_EMU_ONLY();
    KernelTest::SetUp();
    if (IsSkipped()) return;
    out = rt::DeviceBuffer<float>(1024);
  }
  rt::DeviceBuffer<float> out;
};

TEST_F(Misuse, SyncthreadsAfterSomeThreadsExited) {
  expect_misuse([&] { launch(misuse_early_exit_kernel, dim3(2), dim3(32), 0, nullptr, out.get()); },
                {"misuse_early_exit_kernel", "block (0,0,0)", "thread (", "__syncthreads", "exit"});
}

TEST_F(Misuse, DivergentBarriers) {
  expect_misuse(
      [&] { launch(misuse_divergent_barrier_kernel, dim3(1), dim3(64), 0, nullptr, out.get()); },
      {"misuse_divergent_barrier_kernel", "block (0,0,0)", "thread (32,0,0)", "__syncthreads", "test_misuse.cpp"});
}

TEST_F(Misuse, ShuffleMaskNamesAnExitedLane) {
  expect_misuse(
      [&] { launch(misuse_shuffle_exited_lane_kernel, dim3(1), dim3(32), 0, nullptr, out.get()); },
      {"misuse_shuffle_exited_lane_kernel", "block (0,0,0)", "thread (", "__shfl_down_sync", "lane 5", "0xffffffff"});
}

TEST_F(Misuse, ShuffleMaskNamesALaneWaitingAtABarrier) {
  expect_misuse(
      [&] { launch(misuse_shuffle_lane_at_barrier_kernel, dim3(1), dim3(64), 0, nullptr, out.get()); },
      {"misuse_shuffle_lane_at_barrier_kernel", "block (0,0,0)", "__shfl_xor_sync", "lane 7", "__syncthreads"});
}

TEST_F(Misuse, ShuffleMaskWithoutTheCallingLane) {
  expect_misuse([&] { launch(misuse_mask_without_caller_kernel, dim3(1), dim3(32), 0, nullptr, out.get()); },
                {"misuse_mask_without_caller_kernel", "thread (31,0,0)", "does not include"});
}

TEST_F(Misuse, DynamicSharedMemoryOverrun) {
  expect_misuse([&] { launch(misuse_smem_overrun_kernel, dim3(1), dim3(128), 256, nullptr, out.get(), 0); },
                {"misuse_smem_overrun_kernel", "block (0,0,0)", "thread (64,0,0)", "out of bounds", "256 bytes"});
}

TEST_F(Misuse, DynamicSharedMemoryUnderrun) {
  expect_misuse([&] { launch(misuse_smem_negative_kernel, dim3(1), dim3(32), 64, nullptr, out.get()); },
                {"misuse_smem_negative_kernel", "thread (0,0,0)", "offset -4", "out of bounds"});
}

TEST_F(Misuse, BlockOver1024Threads) {
  expect_misuse([&] { launch(fine_kernel, dim3(1), dim3(1025), 0, nullptr, out.get()); },
                {"fine_kernel", "1025 threads", "1024"});
  expect_misuse([&] { launch(fine_kernel, dim3(1), dim3(32, 32, 2), 0, nullptr, out.get()); },
                {"fine_kernel", "2048 threads"});
}

TEST_F(Misuse, DynamicSharedMemoryOverTheLimits) {
  // The rule (as on the GPU): up to 48 KiB without asking; up to 227 KiB (H100) after
  // rt::set_max_dynamic_smem(kernel, bytes); never more.
  expect_misuse([&] { launch(big_smem_kernel, dim3(1), dim3(32), 64 * 1024, nullptr, out.get()); },
                {"big_smem_kernel", "65536 bytes", "opt-in", "set_max_dynamic_smem"});
  rt::set_max_dynamic_smem(big_smem_kernel, 64 * 1024);
  launch(big_smem_kernel, dim3(1), dim3(32), 64 * 1024, nullptr, out.get());  // fine now
  EXPECT_EQ(out.download()[0], 2.f);
  expect_misuse([&] { launch(big_smem_kernel, dim3(1), dim3(32), 100 * 1024, nullptr, out.get()); },
                {"big_smem_kernel", "opt-in is 65536"});
  expect_misuse([&] { rt::set_max_dynamic_smem(big_smem_kernel, 228 * 1024); }, {"big_smem_kernel", "232448"});
  expect_misuse([&] { launch(big_smem_kernel, dim3(1), dim3(32), 228 * 1024, nullptr, out.get()); },
                {"big_smem_kernel", "device limit"});
}

TEST_F(Misuse, TheEmulatorRecoversAfterAnError) {
  for (int i = 0; i < 3; ++i) {
    EXPECT_THROW(launch(misuse_shuffle_lane_at_barrier_kernel, dim3(2), dim3(256), 0, nullptr, out.get()), Error);
    EXPECT_THROW(launch(misuse_smem_overrun_kernel, dim3(1), dim3(1024), 256, nullptr, out.get(), 0), Error);
  }
  launch(fine_kernel, dim3(1), dim3(64), 0, nullptr, out.get());
  const std::vector<float> got = out.download();
  for (int t = 0; t < 64; ++t) EXPECT_EQ(got[t], static_cast<float>(63 - t));
}

#if defined(__SANITIZE_ADDRESS__)
// Device memory is heap memory in the emulator, so AddressSanitizer sees a kernel that writes
// past an allocation, from inside a fiber: the switches are annotated, so ASan knows the stack.
__global__ void global_overrun_kernel(float* p, int n) { p[n + threadIdx.x] = 1.f; }

TEST_F(Misuse, GlobalMemoryOverrunCaughtByAddressSanitizer) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        rt::DeviceBuffer<float> b(64);  // 256 bytes: the allocation is exactly this size
        launch(global_overrun_kernel, dim3(1), dim3(32), 0, nullptr, b.get(), 64);
      },
      "heap-buffer-overflow");
}
#endif

}  // namespace
}  // namespace vitcuda::test
