// Determinism under the emulator's adversarial modes (kernels/emu/README.md "Adversarial modes"):
//   * a whole training step (forward, loss, backward, AdamW) of the cuda-emu backend gives the
//     same bits whatever order the blocks of every launch run in (block-order seeds 0, 1, 2):
//     every activation, gradient and parameter; a mismatch names the first differing tensor in
//     the order the step computes them, which points at the kernel;
//   * planted kernels show what the modes catch: float atomics accumulated across blocks (block
//     order), a cp.async whose source is overwritten or whose destination is read before the
//     covering wait (random cp.async landing), while a correct double-buffered cp.async kernel
//     and a fixed-order cross-block reduction stay bitwise equal.
// The modes exist only in the emulator: the native build skips these tests.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernel_test.h"
#include "kernels/cuda_backend.h"
#include "kernels/ptx.cuh"
#include "vitcuda/model.h"
#include "vitcuda/optim.h"

namespace vitcuda::test {
namespace {

#if defined(VITCUDA_EMU)

// Sets the emulator's adversarial seeds for one scope and puts them back (the rest of the suite
// runs with both modes off unless the environment says otherwise).
class AdversarialSeeds {
 public:
  AdversarialSeeds(uint64_t block_order, uint64_t cp_async, const std::string& only_kernels = "")
      : block_order_(emu::block_order_seed()), cp_async_(emu::cp_async_seed()), kernels_(emu::block_order_kernels()) {
    emu::set_block_order_seed(block_order);
    emu::set_cp_async_seed(cp_async);
    emu::set_block_order_kernels(only_kernels);
  }
  ~AdversarialSeeds() {
    emu::set_block_order_seed(block_order_);
    emu::set_cp_async_seed(cp_async_);
    emu::set_block_order_kernels(kernels_);
  }
  AdversarialSeeds(const AdversarialSeeds&) = delete;
  AdversarialSeeds& operator=(const AdversarialSeeds&) = delete;

 private:
  uint64_t block_order_, cp_async_;
  std::string kernels_;
};

std::vector<unsigned char> bytes_of(const Tensor& t) {
  std::vector<unsigned char> out(t.nbytes());
  rt::copy_to_host(out.data(), t.data(), out.size());
  return out;
}

// ---- a whole training step --------------------------------------------------------------------
struct StepCase {
  const char* name;
  DType dtype;
  Pool pool;
  Gelu gelu;
  int img_size;  // 4x4 patches: 8 -> 5 tokens; 52 -> 170 tokens
};

// Every tensor of the step, by name, in the order the step computes them: the forward's
// activations (table order), the parameter gradients (backward order: the parameter table
// reversed), the backward's gradient scratch ("d_*", shared by the blocks: its last use), then the
// parameters after the AdamW update.
using Snapshot = std::vector<std::pair<std::string, std::vector<unsigned char>>>;

// One step with the blocks of every launch shuffled by `block_order_seed` (0: blockIdx order),
// or only those of kernels whose name contains `only_kernels`. `kernels`: the kernels it
// launched, in first-launch order.
Snapshot run_step(const StepCase& c, uint64_t block_order_seed, const std::string& only_kernels = "",
                  std::vector<std::string>* kernels = nullptr) {
  AdversarialSeeds seeds(block_order_seed, 0, only_kernels);
  ViTConfig cfg = tiny_vit_config();  // dropout, attention dropout and drop-path on
  // 52x52 images: 169 patches + cls = 170 tokens, so attention's backward has three key tiles
  // (64 keys per CTA) adding into each dQ row (two would commute: a + b == b + a), and the
  // row-parallel kernels (LayerNorm, bias gradients, ...) several blocks per reduction.
  cfg.img_size = c.img_size;
  cfg.pool = c.pool;
  cfg.gelu = c.gelu;
  constexpr int kBatch = 2;  // 2 x 170 rows: several blocks in every row-parallel reduction
  auto be = make_cuda_backend(c.dtype);
  Model m(cfg, *be, kBatch);
  m.init(7);
  std::mt19937 gen(5);
  std::vector<uint8_t> img(kBatch * cfg.in_chans * cfg.img_size * cfg.img_size);
  for (auto& v : img) v = uint8_t(gen() & 0xFF);
  const std::vector<int32_t> labels = {0, 3};
  rt::launch_log().recording = kernels != nullptr;
  (void)rt::take_launch_records();
  m.forward(Tensor::view(img.data(), {kBatch, cfg.in_chans, cfg.img_size, cfg.img_size}, DType::U8), true, 11, 3);
  (void)m.loss(labels.data(), 0.1f, true);
  m.zero_grad();
  m.backward();
  Snapshot snap;
  for (const ActivationSpec& s : m.activations())
    if (s.name.rfind("d_", 0) != 0) snap.emplace_back("activation " + s.name, bytes_of(m.activation(s.name)));
  for (auto it = m.params().rbegin(); it != m.params().rend(); ++it)
    snap.emplace_back("gradient " + it->name, bytes_of(m.grad(it->name)));
  for (const ActivationSpec& s : m.activations())
    if (s.name.rfind("d_", 0) == 0) snap.emplace_back("activation " + s.name, bytes_of(m.activation(s.name)));
  AdamWConfig ocfg;
  ocfg.lr = 1e-3f;
  ocfg.clip_grad = 1.f;  // the global gradient norm: a reduction over every gradient
  AdamW opt(m, ocfg);
  (void)opt.step(1e-3f);
  for (const ParamSpec& s : m.params()) snap.emplace_back("parameter " + s.name, bytes_of(m.param(s.name)));
  snap.emplace_back("master weights", bytes_of(m.master_arena()));
  if (kernels) {
    for (const LaunchRecord& r : rt::take_launch_records())
      if (r.kernel != "cublasLtMatmul" && std::find(kernels->begin(), kernels->end(), r.kernel) == kernels->end())
        kernels->push_back(r.kernel);
    rt::launch_log().recording = false;
  }
  return snap;
}

// "" when equal; else the first differing tensor, then the others.
std::string compare(const Snapshot& want, const Snapshot& got) {
  std::vector<std::string> differ;
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
    if (want[i].first != got[i].first) return "the snapshots list different tensors";
    const auto& a = want[i].second;
    const auto& b = got[i].second;
    if (a.size() != b.size() || std::memcmp(a.data(), b.data(), a.size()) != 0) {
      size_t at = 0;
      while (at < a.size() && at < b.size() && a[at] == b[at]) ++at;
      differ.push_back(want[i].first + " (first at byte " + std::to_string(at) + " of " + std::to_string(a.size()) +
                       ")");
    }
  }
  if (differ.empty()) return "";
  std::string s = "first differing tensor: " + differ[0];
  if (differ.size() > 1) {
    s += "; " + std::to_string(differ.size() - 1) + " more:";
    for (size_t i = 1; i < differ.size(); ++i) s += "\n  " + differ[i];
  }
  return s;
}

class StepDeterminismTest : public ::testing::TestWithParam<StepCase> {};

TEST_P(StepDeterminismTest, EveryTensorIsBitwiseEqualUnderShuffledBlockOrder) {
  const StepCase& c = GetParam();
  std::vector<std::string> kernels;
  const Snapshot base = run_step(c, 0, "", &kernels);
  ASSERT_FALSE(base.empty());
  ASSERT_FALSE(kernels.empty());
  for (const uint64_t seed : {1u, 2u}) {
    const std::string diff = compare(base, run_step(c, seed));
    if (diff.empty()) continue;
    // Which kernels alone change the step when only their blocks are shuffled (once: a step per
    // kernel, ~1 minute under ASan).
    std::string culprits;
    for (const std::string& k : kernels)
      if (!compare(base, run_step(c, seed, k)).empty()) culprits += "\n  " + k;
    ADD_FAILURE() << c.name << ", block-order seed " << seed << " vs blockIdx order: " << diff
                  << "\nkernels whose block order alone changes the step:" << (culprits.empty() ? " none" : culprits);
    break;
  }
}

INSTANTIATE_TEST_SUITE_P(Steps, StepDeterminismTest,
                         ::testing::Values(StepCase{"f32_token_erf_170_tokens", DType::F32, Pool::Token, Gelu::Erf, 52},
                                           StepCase{"f32_avg_tanh_5_tokens", DType::F32, Pool::Avg, Gelu::Tanh, 8},
                                           StepCase{"bf16_token_erf_170_tokens", DType::BF16, Pool::Token, Gelu::Erf,
                                                    52},
                                           StepCase{"bf16_avg_tanh_5_tokens", DType::BF16, Pool::Avg, Gelu::Tanh, 8}),
                         [](const ::testing::TestParamInfo<StepCase>& i) { return std::string(i.param.name); });

// ---- planted: float atomics across blocks -------------------------------------------------------
constexpr int kSumBlocks = 64, kSumThreads = 64;

// Wrong for determinism: the blocks' partial sums meet in one atomicAdd, in whatever order the
// blocks finish.
__global__ void planted_atomic_sum_kernel(const float* in, float* out) {
  __shared__ float partial[kSumThreads];
  partial[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (int s = kSumThreads / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) atomicAdd(out, partial[0]);
}
// Right: per-block partials, summed in a fixed order by a second launch.
__global__ void block_partials_kernel(const float* in, float* partials) {
  __shared__ float partial[kSumThreads];
  partial[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (int s = kSumThreads / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = partial[0];
}
__global__ void ordered_sum_kernel(const float* partials, int n, float* out) {
  float s = 0.f;
  for (int i = 0; i < n; ++i) s += partials[i];
  *out = s;
}

// Values spread over many binades, so that the order of the additions shows in the bits.
std::vector<float> spread_values(int n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> mant(1.f, 2.f);
  std::uniform_int_distribution<int> ex(-12, 12);
  std::vector<float> v(n);
  for (float& x : v) x = std::ldexp(mant(g), ex(g)) * ((g() & 1) ? 1.f : -1.f);
  return v;
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float planted_sum(const rt::DeviceBuffer<float>& in, bool atomic, uint64_t block_order_seed) {
  AdversarialSeeds seeds(block_order_seed, 0);
  rt::DeviceBuffer<float> out(1), partials(kSumBlocks);
  out.zero();
  if (atomic) {
    launch(planted_atomic_sum_kernel, dim3(kSumBlocks), dim3(kSumThreads), 0, nullptr, in.get(), out.get());
  } else {
    launch(block_partials_kernel, dim3(kSumBlocks), dim3(kSumThreads), 0, nullptr, in.get(), partials.get());
    launch(ordered_sum_kernel, dim3(1), dim3(1), 0, nullptr, static_cast<const float*>(partials.get()), kSumBlocks,
           out.get());
  }
  return out.download()[0];
}

TEST(AdversarialBlockOrder, CatchesFloatAtomicsAcrossBlocksAndPassesAFixedOrderReduction) {
  const rt::DeviceBuffer<float> in(spread_values(kSumBlocks * kSumThreads, 3));
  const float atomic0 = planted_sum(in, true, 0), ordered0 = planted_sum(in, false, 0);
  int atomic_differs = 0;
  for (const uint64_t seed : {1u, 2u, 3u}) {
    atomic_differs += bits(planted_sum(in, true, seed)) != bits(atomic0);
    EXPECT_EQ(bits(planted_sum(in, false, seed)), bits(ordered0)) << "fixed-order reduction, seed " << seed;
  }
  EXPECT_GT(atomic_differs, 0) << "three shuffled block orders all gave the blockIdx-order bits of a float atomicAdd "
                                  "across 64 blocks: the block-order mode does not shuffle";
  // the same seed gives the same order: reproducible
  EXPECT_EQ(bits(planted_sum(in, true, 1)), bits(planted_sum(in, true, 1)));
}

// ---- planted: cp.async misuse ---------------------------------------------------------------------
constexpr int kCopyThreads = 64;

// Wrong: overwrites the source of its own cp.async before the wait that covers it.
__global__ void planted_cp_async_overwrite_kernel(float4* src, float4* out) {
  VITCUDA_DYNAMIC_SMEM(float4, buf);
  const int t = threadIdx.x;
  ptx::cp_async<16>(smem_raw(buf + t), src + t);
  ptx::cp_async_commit_group();
  __syncthreads();                               // an entry point between issue and wait
  src[t] = make_float4(-1.f, -2.f, -3.f, -4.f);  // the copy may or may not have read it yet
  ptx::cp_async_wait_all();
  out[t] = buf[t];
}
// Wrong: reads its cp.async destination before the covering wait.
__global__ void planted_cp_async_early_read_kernel(const float4* src, float4* out) {
  VITCUDA_DYNAMIC_SMEM(float4, buf);
  const int t = threadIdx.x;
  buf[t] = make_float4(0.f, 0.f, 0.f, 0.f);
  ptx::cp_async<16>(smem_raw(buf + t), src + t);
  ptx::cp_async_commit_group();
  __syncthreads();
  out[t] = buf[t];  // old zeros or the copy, depending on when it landed
  ptx::cp_async_wait_all();
}
// Right: double-buffered tiles; tile i+1 is in flight while tile i is summed, and each buffer is
// refilled only after the barrier that ends its readers.
__global__ void double_buffered_sum_kernel(const float4* src, int tiles, float4* out) {
  VITCUDA_DYNAMIC_SMEM(float4, buf);  // [2][kCopyThreads]
  const int t = threadIdx.x;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  ptx::cp_async<16>(smem_raw(buf + t), src + t);
  ptx::cp_async_commit_group();
  for (int i = 0; i < tiles; ++i) {
    if (i + 1 < tiles)
      ptx::cp_async<16>(smem_raw(buf + ((i + 1) % 2) * kCopyThreads + t), src + (i + 1) * kCopyThreads + t);
    ptx::cp_async_commit_group();
    ptx::cp_async_wait_group<1>();  // tile i has landed (tile i + 1 may be in flight)
    __syncthreads();
    const float4 v = buf[(i % 2) * kCopyThreads + (kCopyThreads - 1 - t)];  // another thread's copy
    acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
    __syncthreads();  // every reader of buffer i % 2 is done before it is refilled
  }
  out[t] = acc;
}

std::vector<unsigned char> run_cp_async(int which, const std::vector<float>& input, uint64_t cp_async_seed) {
  AdversarialSeeds seeds(0, cp_async_seed);
  const int tiles = static_cast<int>(input.size()) / (4 * kCopyThreads);
  rt::DeviceBuffer<float4> src(input.size() / 4), out(kCopyThreads);
  rt::copy_to_device(src.get(), input.data(), input.size() * sizeof(float));
  out.zero();
  if (which == 0)
    launch(planted_cp_async_overwrite_kernel, dim3(1), dim3(kCopyThreads), kCopyThreads * sizeof(float4), nullptr,
           src.get(), out.get());
  else if (which == 1)
    launch(planted_cp_async_early_read_kernel, dim3(1), dim3(kCopyThreads), kCopyThreads * sizeof(float4), nullptr,
           static_cast<const float4*>(src.get()), out.get());
  else
    launch(double_buffered_sum_kernel, dim3(1), dim3(kCopyThreads), 2 * kCopyThreads * sizeof(float4), nullptr,
           static_cast<const float4*>(src.get()), tiles, out.get());
  std::vector<unsigned char> got(kCopyThreads * sizeof(float4));
  rt::copy_to_host(got.data(), out.get(), got.size());
  return got;
}

TEST(AdversarialCpAsync, CatchesAnOverwrittenSourceAndAnEarlyReadAndPassesDoubleBuffering) {
  const std::vector<float> one_tile = random_floats(4 * kCopyThreads, 1.f, 2.f, 8);
  const std::vector<float> tiles = random_floats(4 * kCopyThreads * 6, -1.f, 1.f, 9);
  const char* names[] = {"overwritten source", "early read of the destination"};
  for (int which = 0; which < 2; ++which) {
    SCOPED_TRACE(names[which]);
    const auto base = run_cp_async(which, one_tile, 0);
    int differs = 0;
    for (const uint64_t seed : {1u, 2u, 3u}) differs += run_cp_async(which, one_tile, seed) != base;
    EXPECT_GT(differs, 0) << "random cp.async landing gave the default mode's bytes for every seed: not caught";
  }
  const auto base = run_cp_async(2, tiles, 0);
  for (const uint64_t seed : {1u, 2u, 3u})
    EXPECT_TRUE(run_cp_async(2, tiles, seed) == base) << "a correct double-buffered kernel changed under seed " << seed;
  // and its result is the sum it should be (not, say, all zeros in every mode)
  std::vector<float> want(4 * kCopyThreads, 0.f);
  for (int i = 0; i < 6; ++i)
    for (int t = 0; t < kCopyThreads; ++t)
      for (int k = 0; k < 4; ++k) want[t * 4 + k] += tiles[(i * kCopyThreads + (kCopyThreads - 1 - t)) * 4 + k];
  std::vector<float> got(4 * kCopyThreads);
  std::memcpy(got.data(), base.data(), base.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << i;  // same order of additions: exact
}

#endif  // VITCUDA_EMU

}  // namespace
}  // namespace vitcuda::test
