// The whole ViT on the CUDA backend ("cuda-emu" here, "cuda" natively) against the CPU
// reference backend: loss, every parameter gradient, the parameters after an AdamW step, and
// ten training steps, in fp32 and bf16.
#include <cmath>
#include <vector>

#include "kernel_test.h"
#include "kernels/cuda_backend.h"
#include "vitcuda/model.h"
#include "vitcuda/optim.h"

namespace vitcuda::test {
namespace {

constexpr int kBatch = 3;

std::vector<uint8_t> images(uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<uint8_t> v(kBatch * 8 * 8);
  for (auto& x : v) x = uint8_t(g() & 0xFF);
  return v;
}

// ||a - b|| / ||b|| over a whole tensor: robust to individual near-zero entries.
double rel_norm_error(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

std::vector<float> grads_of(const Model& m) {
  std::vector<float> g(m.arena_size());
  m.backend().copy_to_host(g.data(), m.grad_arena().data(), g.size() * sizeof(float));
  return g;
}

struct Pair {
  std::unique_ptr<Backend> cpu, gpu;
  std::unique_ptr<Model> ref, dut;
  explicit Pair(DType dtype, const ViTConfig& config = tiny_vit_config()) {
    cpu = make_backend("cpu");
    gpu = make_cuda_backend(dtype);
    ref = std::make_unique<Model>(config, *cpu, kBatch);
    dut = std::make_unique<Model>(config, *gpu, kBatch);
    ref->init(7);
    dut->init(7);
    if (dtype == DType::BF16) {  // the same bf16-representable starting weights on both
      ref->set_master(round_bf16(ref->get_master()));
      dut->set_master(ref->get_master());
    }
  }
  static std::vector<float> round_bf16(std::vector<float> w) {
    for (float& x : w) x = bf16_round(x);
    return w;
  }
};

// fp32: the kernels and the reference differ only in summation order: ~1e-7 relative per
// op, ~20 ops deep: 1e-5 on the loss and 2e-5 on gradient norms (measured: 6e-7).
// bf16: every stored activation is rounded to 8 mantissa bits (2^-9 relative), compounding
// over ~20 ops of a step and through the backward: 2% on the loss, 4% on gradient norms
// (measured: 1.1% at worst, pre_logits/head).
struct Tol {
  double loss, grad, param;
};
Tol tolerance(DType d) { return d == DType::F32 ? Tol{1e-5, 2e-5, 1e-5} : Tol{2e-2, 4e-2, 2e-3}; }

// Every parameter's gradient on the device within tol.grad of the reference's (relative norm).
void expect_grads_match(const Pair& p, const Tol& tol) {
  const auto g_ref = grads_of(*p.ref), g_dut = grads_of(*p.dut);
  for (const ParamSpec& spec : p.ref->params()) {
    const std::vector<float> a(g_dut.begin() + spec.offset, g_dut.begin() + spec.offset + spec.numel);
    const std::vector<float> b(g_ref.begin() + spec.offset, g_ref.begin() + spec.offset + spec.numel);
    EXPECT_LT(rel_norm_error(a, b), tol.grad) << "gradient of " << spec.name;
  }
}

class ModelBackendTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { VITCUDA_SKIP_WITHOUT_DEVICE(); }
};

TEST_P(ModelBackendTest, LossGradientsAndAdamWStepMatchCpu) {
  const DType dtype = GetParam();
  const Tol tol = tolerance(dtype);
  Pair p(dtype);
  const auto img = images(1);
  const std::vector<int32_t> labels = {0, 3, 4};
  const Tensor x = Tensor::view(const_cast<uint8_t*>(img.data()), {kBatch, 1, 8, 8}, DType::U8);
  StepStats s[2];
  Model* models[2] = {p.ref.get(), p.dut.get()};
  for (int i = 0; i < 2; ++i) {
    models[i]->forward(x, /*train=*/true, /*seed=*/11, /*step=*/3);
    s[i] = models[i]->loss(labels.data(), 0.1f, true);
    models[i]->zero_grad();
    models[i]->backward();
  }
  EXPECT_NEAR(s[1].loss, s[0].loss, tol.loss * std::fabs(s[0].loss)) << "loss";
  expect_grads_match(p, tol);
  // One AdamW step from those gradients.
  AdamWConfig cfg;
  cfg.lr = 1e-3f;
  cfg.clip_grad = 1.f;
  AdamW o_ref(*p.ref, cfg), o_dut(*p.dut, cfg);
  o_ref.step(1e-3f);
  o_dut.step(1e-3f);
  const auto w_ref = p.ref->get_master(), w_dut = p.dut->get_master();
  double worst = 0;
  for (size_t i = 0; i < w_ref.size(); ++i) worst = std::max(worst, double(std::fabs(w_ref[i] - w_dut[i])));
  // Adam's first step moves every weight by ~lr * sign(g) whatever |g|, so where a gradient
  // near zero has opposite signs on the two backends the weights differ by up to 2 lr;
  // elsewhere far less (the norm check below).
  EXPECT_LE(worst, 2e-3 * (1 + 1e-3)) << "weights after one AdamW step";
  EXPECT_LT(rel_norm_error(w_dut, w_ref), tol.param) << "weights after one AdamW step";
}

TEST_P(ModelBackendTest, TenTrainingStepsTrackCpuLosses) {
  const DType dtype = GetParam();
  const Tol tol = tolerance(dtype);
  Pair p(dtype);
  AdamWConfig cfg;
  cfg.lr = 2e-3f;
  AdamW o_ref(*p.ref, cfg), o_dut(*p.dut, cfg);
  const std::vector<int32_t> labels = {1, 2, 0};
  for (int step = 0; step < 10; ++step) {
    const auto img = images(100 + step % 2);
    const Tensor x = Tensor::view(const_cast<uint8_t*>(img.data()), {kBatch, 1, 8, 8}, DType::U8);
    double loss[2];
    Model* models[2] = {p.ref.get(), p.dut.get()};
    AdamW* opts[2] = {&o_ref, &o_dut};
    for (int i = 0; i < 2; ++i) {
      models[i]->forward(x, true, 5, step);
      loss[i] = models[i]->loss(labels.data(), 0.f, true).loss;
      models[i]->zero_grad();
      models[i]->backward();
      opts[i]->step(2e-3f);
    }
    // Differences compound over steps: allow 5x the one-step loss tolerance.
    EXPECT_NEAR(loss[1], loss[0], 5 * tol.loss * std::fabs(loss[0])) << "step " << step;
  }
}

// Backend memory holding `v` in the backend's compute dtype (through an f32 staging buffer).
struct DeviceLogits {
  Backend& be;
  void* f32 = nullptr;
  void* mem = nullptr;
  Tensor t;
  DeviceLogits(Backend& b, const std::vector<float>& v, int64_t rows, int64_t cols) : be(b) {
    f32 = be.alloc(v.size() * 4);
    mem = be.alloc(v.size() * 4);
    be.copy_to_device(f32, v.data(), v.size() * 4);
    t = Tensor::view(mem, {rows, cols}, be.compute_dtype(), be.device());
    be.copy(Tensor::view(f32, {rows, cols}, DType::F32, be.device()), t);
  }
  ~DeviceLogits() {
    be.release(f32);
    be.release(mem);
  }
};

// DeiT's distilled model (dist_token, head_dist, logits = the heads' mean) on both backends:
// trained without a teacher, then with hard and soft distillation targets (the teacher's logits
// bf16-representable, the same on both); loss and every gradient within the tolerances above.
TEST_P(ModelBackendTest, DistilledModelMatchesCpu) {
  const DType dtype = GetParam();
  const Tol tol = tolerance(dtype);
  ViTConfig c = tiny_vit_config();
  c.pre_logits = 0;
  c.distilled = true;
  Pair p(dtype, c);
  const auto img = images(3);
  const std::vector<int32_t> labels = {4, 0, 2};
  const Tensor x = Tensor::view(const_cast<uint8_t*>(img.data()), {kBatch, 1, 8, 8}, DType::U8);
  std::vector<float> teacher = random_floats(size_t(kBatch) * c.num_classes, -3.f, 3.f, 17);
  for (float& v : teacher) v = bf16_round(v);
  DeviceLogits t_ref(*p.cpu, teacher, kBatch, c.num_classes), t_dut(*p.gpu, teacher, kBatch, c.num_classes);
  struct Case {
    const char* name;
    bool distill;
    Distill kind;
    float alpha, tau;
  };
  for (const Case& k : {Case{"no teacher", false, Distill::Hard, 0.f, 1.f},
                        Case{"hard", true, Distill::Hard, 0.5f, 1.f}, Case{"soft", true, Distill::Soft, 0.7f, 3.f}}) {
    SCOPED_TRACE(k.name);
    StepStats s[2];
    Model* models[2] = {p.ref.get(), p.dut.get()};
    const DistillTarget targets[2] = {{k.kind, k.alpha, k.tau, t_ref.t}, {k.kind, k.alpha, k.tau, t_dut.t}};
    for (int i = 0; i < 2; ++i) {
      models[i]->forward(x, /*train=*/true, /*seed=*/11, /*step=*/3);
      s[i] = models[i]->loss(labels.data(), 0.1f, true, k.distill ? &targets[i] : nullptr);
      models[i]->zero_grad();
      models[i]->backward();
    }
    EXPECT_NEAR(s[1].loss, s[0].loss, tol.loss * std::fabs(s[0].loss)) << "loss";
    expect_grads_match(p, tol);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ModelBackendTest, ::testing::Values(DType::F32, DType::BF16),
                         [](const ::testing::TestParamInfo<DType>& i) { return std::string(dtype_name(i.param)); });

TEST(CudaBackend, RejectsWhatItCannotRun) {
  VITCUDA_SKIP_WITHOUT_DEVICE();
  EXPECT_THROW(make_cuda_backend(DType::F64), Error);
  auto be = make_cuda_backend(DType::F32);
  ViTConfig c = tiny_vit_config();
  c.embed_dim = 48;  // head dim 24: no attention kernel for it
  Model m(c, *be, 1);
  m.init(0);
  std::vector<uint8_t> img(64, 0);
  try {
    m.forward(Tensor::view(img.data(), {1, 1, 8, 8}, DType::U8), false);
    FAIL() << "head dim 24 ran";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attention"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vitcuda::test
