// The step model (bench/step_model.h) against hand-counted cases: op costs (host/op_cost.cpp) as
// the backend's tracing reports them, traced here on the cpu backend (the cost is computed from
// the op's arguments by the shared public op, whatever the backend); the roofline arithmetic; the
// step's totals over a hand-made trace; the GPU descriptions of bench/gpus.json. The launch
// counts of a real step on the CUDA backend are pinned in tests/kernels/test_step_trace.cpp, and
// the tool's smoke runs (ctest step_model_smoke*) check the linear/qkv ops' counted FLOPs against
// the matmuls they launch. Data parallelism: the ring collectives' 2(N−1)/N and (N−1)/N, the
// bucket schedule against the backward span by hand and its bounds, ZeRO-1, and the bytes
// reduced (ViT-B/16's fp32 arena).
//
// Tolerances: FLOPs and bytes are integers well below 2^53, so exact. Times are sums and
// quotients of doubles: compared to the same arithmetic written out, to 1e-12 relative (the
// model sums in its own order: only the rounding of a handful of additions differs).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "bench/step_model.h"
#include "vitcuda/backend.h"
#include "vitcuda/model.h"
#include "vitcuda/optim.h"
#include "vitcuda/step_trace.h"

using namespace vitcuda;
using namespace vitcuda::step_model;

namespace {

void expect_close(double got, double want, const char* what) {
  EXPECT_NEAR(got, want, 1e-12 * std::fabs(want)) << what;
}

class Collector final : public OpTracer {
 public:
  void on_op(const OpTrace& t) override { ops.push_back(t); }
  std::vector<OpTrace> ops;
};

// Runs `op` on the cpu backend with a tracer attached and returns the single op it reported.
template <typename Fn>
OpTrace trace_one(Fn&& op) {
  std::unique_ptr<Backend> be = make_backend("cpu");
  Collector c;
  be->set_tracer(&c);
  op(*be);
  be->set_tracer(nullptr);
  EXPECT_EQ(c.ops.size(), 1u);
  return c.ops.empty() ? OpTrace{} : c.ops[0];
}

Tensor filled(std::initializer_list<int64_t> shape, DType dtype = DType::F32, float value = 0.25f) {
  Tensor t = Tensor::empty(shape, dtype);
  if (dtype == DType::F32)
    for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = value * float(1 + i % 7) / 7.f;
  return t;
}

// ---- op costs, counted by hand ----------------------------------------------------------------

// y[R, N] = x[R, K] · w[N, K]ᵀ + b: 2·R·K·N FLOPs for the products plus R·N bias adds; x, w, b
// read once, y written once (f32: 4 bytes each).
TEST(StepModelCost, LinearForwardIsTwoRKNPlusBias) {
  const int64_t R = 6, K = 8, N = 5;
  Tensor x = filled({R, K}), w = filled({N, K}), b = filled({N}), y = filled({R, N});
  const OpTrace t = trace_one([&](Backend& be) { be.linear_forward(x, w, b, Act::None, Tensor{}, y); });
  EXPECT_STREQ(t.op, "linear_forward");
  EXPECT_EQ(t.cost.flops, 2.0 * R * K * N + R * N);
  EXPECT_EQ(t.cost.flops, 510.0);
  EXPECT_EQ(t.cost.bytes, 4.0 * (R * K + N * K + N + R * N));
  EXPECT_EQ(t.cost.bytes, 492.0);
  // The cpu backend has no device runtime.
  EXPECT_EQ(t.runtime.launches, 0);
}

// With GELU: 8 operations per output element for the activation, and pre written too.
TEST(StepModelCost, LinearForwardWithGeluAddsTheEpilogue) {
  const int64_t R = 6, K = 8, N = 5;
  Tensor x = filled({R, K}), w = filled({N, K}), b = filled({N}), pre = filled({R, N}), y = filled({R, N});
  const OpTrace t = trace_one([&](Backend& be) { be.linear_forward(x, w, b, Act::GeluErf, pre, y); });
  EXPECT_EQ(t.cost.flops, 2.0 * R * K * N + R * N * (1 + 8));  // 750
  EXPECT_EQ(t.cost.bytes, 4.0 * (R * K + N * K + N + 2 * R * N));
}

// Backward without activation: dx = dy·w and dw += dyᵀ·x, 2·R·N·K each, db += R·N; dw and db are
// accumulated (read and written).
TEST(StepModelCost, LinearBackwardIsTwoGemmsAndTheBiasSum) {
  const int64_t R = 6, K = 8, N = 5;
  Tensor dy = filled({R, N}), x = filled({R, K}), w = filled({N, K});
  Tensor dx = filled({R, K}), dw = filled({N, K}), db = filled({N});
  const OpTrace t = trace_one([&](Backend& be) { be.linear_backward(dy, x, w, Act::None, Tensor{}, dx, dw, db); });
  EXPECT_EQ(t.cost.flops, 4.0 * R * N * K + R * N);  // 990
  EXPECT_EQ(t.cost.bytes, 4.0 * (R * N + R * K + N * K + R * K + 2 * N * K + 2 * N));
}

// Attention forward on the packed qkv [B, N, 3, H, d]: S = q·kᵀ and O = P·v, 2·N²·d FLOPs each per
// head, plus the softmax at 5 operations per score (and 2 more per score with dropout). Bytes:
// qkv read, out [B, N, H·d] and lse [B, H, N] (f32) written.
TEST(StepModelCost, AttentionForwardIsFourBHN2dPlusSoftmax) {
  const int64_t B = 2, H = 2, N = 5, d = 16;
  Tensor qkv = filled({B, N, 3 * H * d});
  Tensor out = filled({B, N, H * d}), lse = filled({B, H, N});
  const double scores = double(B * H * N * N);  // 100
  const OpTrace t = trace_one([&](Backend& be) { be.attention_forward(qkv, H, 0.25f, DropoutSpec{}, out, lse); });
  EXPECT_STREQ(t.op, "attention_forward");
  EXPECT_EQ(t.cost.flops, 4.0 * scores * d + 5.0 * scores);  // 6900
  EXPECT_EQ(t.cost.flops, 6900.0);
  EXPECT_EQ(t.cost.bytes, 4.0 * (3 * B * H * N * d + B * N * H * d + B * H * N));  // 5200

  DropoutSpec drop;
  drop.p = 0.1f;
  drop.seed = 3;
  const OpTrace td = trace_one([&](Backend& be) { be.attention_forward(qkv, H, 0.25f, drop, out, lse); });
  EXPECT_EQ(td.cost.flops, 4.0 * scores * d + 7.0 * scores);  // 7100
}

// Backward as the kernels do it, deterministically (kernels/attention.cu): the dQ kernel
// recomputes S and dP and forms dQ; the dK-dV kernel recomputes S and dP and forms dV and dK:
// seven N²·d products = 14·N²·d FLOPs per head, and the 7 operations per score twice.
TEST(StepModelCost, AttentionBackwardIsFourteenBHN2dPlusSoftmaxTwice) {
  const int64_t B = 2, H = 2, N = 5, d = 16;
  Tensor qkv = filled({B, N, 3 * H * d});
  Tensor out = filled({B, N, H * d}), dout = filled({B, N, H * d}), lse = filled({B, H, N});
  Tensor dqkv = filled({B, N, 3 * H * d});
  const OpTrace t =
      trace_one([&](Backend& be) { be.attention_backward(dout, qkv, out, lse, H, 0.25f, DropoutSpec{}, dqkv); });
  const double scores = double(B * H * N * N);
  EXPECT_EQ(t.cost.flops, 14.0 * scores * d + 14.0 * scores);  // 23800
  EXPECT_EQ(t.cost.bytes, 4.0 * (2 * B * N * H * d + 6 * B * H * N * d + B * H * N));
}

// LayerNorm with a fused residual over [R, C]: the add (1 per element) and ~8 operations per
// element; x, residual read, sum_out and y written, gamma and beta read, mean and rstd written.
TEST(StepModelCost, LayerNormForwardIsMemoryTraffic) {
  const int64_t R = 4, C = 8;
  Tensor x = filled({R, C}), res = filled({R, C}), sum = filled({R, C}), y = filled({R, C});
  Tensor gamma = filled({C}, DType::F32, 1.f), beta = filled({C}), mean = filled({R}), rstd = filled({R});
  const OpTrace t =
      trace_one([&](Backend& be) { be.layernorm_forward(x, res, sum, gamma, beta, 1e-6f, y, mean, rstd); });
  EXPECT_EQ(t.cost.flops, 9.0 * R * C);
  EXPECT_EQ(t.cost.bytes, 4.0 * (4 * R * C + 2 * C + 2 * R));
}

// pool_backward overwrites dx (backend.h): dout read, dx written once.
TEST(StepModelCost, PoolBackwardWritesDxOnce) {
  const int64_t B = 2, N = 5, D = 4;
  Tensor dout = filled({B, D}), dx = filled({B, N, D});
  const OpTrace t = trace_one([&](Backend& be) { be.pool_backward(dout, Pool::Avg, 1, dx); });
  EXPECT_EQ(t.cost.flops, double(B * N * D));
  EXPECT_EQ(t.cost.bytes, 4.0 * (B * D + B * N * D));
}

// ---- the roofline ------------------------------------------------------------------------------

TEST(StepModelRoofline, ComputeBoundAddsLaunchOverhead) {
  // 2 TFLOP at 1 PFLOP/s = 2 ms; 1 GB at 1 TB/s = 1 ms; 3 calls × 4 µs.
  const Roofline r = roofline(2e12, 1e15, 1e9, 1e12, 0, 64e9, 3, 4e-6);
  EXPECT_TRUE(r.compute_bound());
  expect_close(r.compute_s, 2e-3, "compute");
  expect_close(r.memory_s, 1e-3, "memory");
  expect_close(r.launch_s, 12e-6, "launch");
  EXPECT_EQ(r.host_s, 0.0);
  expect_close(r.time_s(), 2e-3 + 12e-6, "time = compute + launches");
}

TEST(StepModelRoofline, MemoryBoundAddsHostLinkAndLaunch) {
  // 1 GFLOP at 1 PFLOP/s = 1 µs; 3 GB at 3 TB/s = 1 ms; 64 kB over 64 GB/s = 1 µs; 1 call × 4 µs.
  const Roofline r = roofline(1e9, 1e15, 3e9, 3e12, 64e3, 64e9, 1, 4e-6);
  EXPECT_FALSE(r.compute_bound());
  expect_close(r.time_s(), 1e-3 + 1e-6 + 4e-6, "time = memory + host + launch");
  const Roofline none = roofline(0, 1e15, 0, 3e12, 0, 64e9, 0, 4e-6);
  EXPECT_EQ(none.time_s(), 0.0);
}

TEST(StepModelRoofline, GemmOpsUseTheTensorPeakInBf16Only) {
  Gpu g;
  g.bf16_tensor_flops = 1000e12;
  g.fp32_flops = 60e12;
  for (const char* op : {"linear_forward", "linear_backward", "attention_forward", "attention_backward"}) {
    EXPECT_TRUE(is_gemm_op(op)) << op;
    EXPECT_EQ(op_peak(op, Precision::BF16, g), 1000e12) << op;
    EXPECT_EQ(op_peak(op, Precision::F32, g), 60e12) << op;
  }
  for (const char* op : {"layernorm_forward", "adamw_update", "dropout", "softmax_xent", "copy"}) {
    EXPECT_FALSE(is_gemm_op(op)) << op;
    EXPECT_EQ(op_peak(op, Precision::BF16, g), 60e12) << op;
  }
  EXPECT_EQ(headline_peak(Precision::BF16, g), 1000e12);
  EXPECT_EQ(headline_peak(Precision::F32, g), 60e12);
}

// ---- a step: totals are the sums of the rows ---------------------------------------------------

Gpu round_gpu() {
  Gpu g;
  g.id = "test";
  g.bf16_tensor_flops = 1e15;
  g.fp32_flops = 1e14;
  g.hbm_bytes_per_s = 1e12;
  g.host_link_bytes_per_s = 1e10;
  g.sm_count = 4;
  g.launch_s = 5e-6;
  g.graph_launch_s = 1e-6;
  g.sync_s = 1e-5;
  return g;
}

LaunchRecord kernel(const char* name, unsigned blocks) {
  LaunchRecord r;
  r.kernel = name;
  r.grid[0] = blocks;
  r.block[0] = 128;
  return r;
}

LaunchRecord matmul(int64_t m, int64_t n, int64_t k) {
  LaunchRecord r;
  r.kernel = "cublasLtMatmul";
  r.m = m, r.n = n, r.k = k, r.batch = 1;
  return r;
}

// Three ops and what happens outside them, by hand:
//   A linear_forward: 2e12 FLOPs (bf16 tensor: 2 ms), 1e9 B (1 ms), a matmul + a kernel of 2 blocks
//     -> 2 ms + 2 × 5 µs, compute-bound;
//   B layernorm_forward: 1e9 FLOPs (fp32: 10 µs), 2e9 B (2 ms), one kernel of 8 blocks
//     -> 2 ms + 5 µs, memory-bound;
//   C sum_squares: no cost, 2 kernels and a copy to the host of 8 B (one sync)
//     -> 8 B / 10 GB/s + 3 × 5 µs;
//   outside: 2 uploads of 1e6 B in all, one memset, one more sync -> 1e6 / 1e10 + 3 × 5 µs;
//   syncs: 2 × 10 µs.
StepTrace hand_trace() {
  StepTrace s;
  s.batch = 64;
  OpTrace a;
  a.op = "linear_forward";
  a.cost = {2e12, 1e9};
  a.runtime.launches = 1, a.runtime.gemms = 1;
  a.launches = {matmul(1000, 1000, 1000), kernel("vitcuda::(anonymous namespace)::bias_act_kernel<float>", 2)};
  OpTrace b;
  b.op = "layernorm_forward";
  b.cost = {1e9, 2e9};
  b.runtime.launches = 1;
  b.launches = {kernel("vitcuda::ln_fwd<float>", 8)};
  OpTrace c;
  c.op = "sum_squares";
  c.runtime.launches = 2, c.runtime.d2h = 1, c.runtime.d2h_bytes = 8, c.runtime.syncs = 1;
  c.launches = {kernel("partial", 64), kernel("final", 1)};
  s.ops = {a, b, c};
  s.total = a.runtime + b.runtime + c.runtime;
  s.total.h2d = 2, s.total.h2d_bytes = 1000000, s.total.memsets = 1, s.total.syncs += 1;
  return s;
}

TEST(StepModelPredict, TotalsAreTheSumOfTheRows) {
  const Gpu g = round_gpu();
  const Prediction p = predict(hand_trace(), g, Precision::BF16);
  ASSERT_EQ(p.ops.size(), 3u);
  const double ta = 2e-3 + 2 * 5e-6, tb = 2e-3 + 5e-6, tc = 8.0 / 1e10 + 3 * 5e-6;
  const double outside = 1e6 / 1e10 + 3 * 5e-6, syncs = 2 * 1e-5;
  expect_close(p.ops[0].time_s, ta, "A");
  EXPECT_EQ(bound(p.ops[0]), "compute");
  expect_close(p.ops[1].time_s, tb, "B");
  EXPECT_EQ(bound(p.ops[1]), "memory");
  expect_close(p.ops[2].time_s, tc, "C");
  EXPECT_EQ(bound(p.ops[2]), "launch");
  expect_close(p.outside.time_s, outside, "outside");
  EXPECT_EQ(p.outside.runtime.h2d, 2);
  EXPECT_EQ(p.outside.runtime.memsets, 1);
  EXPECT_EQ(p.outside.runtime.syncs, 1);
  EXPECT_EQ(p.outside.runtime.launches, 0);
  expect_close(p.sync_s, syncs, "syncs");
  expect_close(p.time_s, ta + tb + tc + outside + syncs, "step = Σ rows + syncs");
  expect_close(p.graph_time_s, 2e-3 + 2e-6 + 2e-3 + 1e-6 + 8.0 / 1e10 + 3e-6 + 1e6 / 1e10 + 3e-6 + syncs,
               "CUDA Graph: 1 µs per call");

  EXPECT_EQ(p.flops, 2e12 + 1e9);
  EXPECT_EQ(p.bytes, 3e9);
  expect_close(p.ideal_s, (2e12 + 1e9) / 1e15, "ideal = FLOPs / bf16 peak");
  expect_close(p.compute_floor_s, 2e-3 + 1e-5, "compute floor: B at the fp32 peak");
  expect_close(p.memory_floor_s, 3e-3, "memory floor = bytes / HBM");
  expect_close(p.roofline_s, 2e-3 + 2e-3, "Σ max(compute, memory)");
  expect_close(p.launch_s, 9 * 5e-6, "9 runtime calls");
  expect_close(p.host_s, 8.0 / 1e10 + 1e6 / 1e10, "host link");
  expect_close(p.serial_s, (2e-3 + 1e-3) + (1e-5 + 2e-3) + 9 * 5e-6 + 8.0 / 1e10 + 1e6 / 1e10 + syncs, "serial bound");
  expect_close(p.img_per_s(), 64 / p.time_s, "img/s");
  expect_close(p.mfu(), p.ideal_s / p.time_s, "MFU");
  EXPECT_EQ(p.matmul_flops, 2e9);
  EXPECT_EQ(p.kernel_launches, 4);  // the matmul is not a grid launch
  EXPECT_EQ(p.underfilled, 2);      // grids of 2 and 1 blocks on 4 SMs (8 and 64 fill them)
}

TEST(StepModelPredict, GroupsSumCallsAndKeepEachCallsMax) {
  StepTrace s = hand_trace();
  s.ops.push_back(s.ops[1]);       // a second layernorm, memory-bound
  s.ops[3].op = "linear_forward";  // ...named as a linear: the group is mixed
  s.total = s.total + s.ops[3].runtime;
  const Prediction p = predict(s, round_gpu(), Precision::BF16);
  const std::vector<Row> g = group_by_op(p.ops);
  ASSERT_EQ(g.size(), 3u);
  EXPECT_EQ(g[0].op, "linear_forward");
  EXPECT_EQ(g[0].count, 2);
  EXPECT_EQ(bound(g[0]), "mixed");
  expect_close(g[0].time_s, p.ops[0].time_s + p.ops[3].time_s, "Σ of the calls' own times");
  EXPECT_EQ(g[0].runtime.launches, 2);
  EXPECT_EQ(g[0].kernels, (std::vector<std::string>{"cublasLtMatmul", "bias_act_kernel<float>", "ln_fwd<float>"}));
  EXPECT_EQ(g[2].kernels, (std::vector<std::string>{"partial", "final", "memcpy D2H"}));
}

TEST(StepModelPredict, Fp32UsesTheFp32PeakEverywhere) {
  const Prediction p = predict(hand_trace(), round_gpu(), Precision::F32);
  expect_close(p.ops[0].eager.compute_s, 2e12 / 1e14, "linear at fp32: 20 ms");
  expect_close(p.ideal_s, (2e12 + 1e9) / 1e14, "ideal at the fp32 peak");
}

// A whole step of a tiny model on the cpu backend: no device runtime, so the step is the
// roofline sum alone, and the model's FLOPs are the trace's.
TEST(StepModelPredict, CpuTraceOfAStepIsItsRooflineSum) {
  ViTConfig c = preset("vit_fmnist");
  c.depth = 1;
  c.drop_path_rate = 0.f;
  std::unique_ptr<Backend> be = make_backend("cpu");
  Model model(c, *be, 2);
  model.init(1);
  AdamW opt(model, AdamWConfig{});
  const StepTrace t = trace_train_step(model, opt, 2);
  const Prediction p = predict(t, round_gpu(), Precision::BF16);
  EXPECT_EQ(runtime_calls(p.total), 0);
  EXPECT_EQ(p.flops, t.flops());
  EXPECT_EQ(p.bytes, t.bytes());
  expect_close(p.time_s, p.roofline_s, "no launches, copies or syncs on the cpu");
  EXPECT_GT(p.flops, 3 * 2.0 * model.macs_per_image() * 2 * 0.9);  // forward + 2× backward
}

// A distilled step (TrainStepOptions::teacher) traces the teacher's forward too: the step's FLOPs
// are the plain step's plus the teacher's forward and the distillation loss.
TEST(StepModelPredict, DistilledStepAddsTheTeachersForward) {
  ViTConfig c = preset("vit_fmnist");
  c.depth = 1;
  c.drop_path_rate = 0.f;
  ViTConfig tc = preset("vit_fmnist");
  tc.depth = 2;
  std::unique_ptr<Backend> be = make_backend("cpu");
  Model model(c, *be, 2);
  model.init(1);
  Model teacher(tc, *be, 2, be->compute_dtype(), 64, Model::Use::Inference);
  teacher.init(2);
  AdamW opt(model, AdamWConfig{});
  const StepTrace plain = trace_train_step(model, opt, 2);
  const StepTrace distilled = trace_train_step(model, opt, 2, 0.1f, 1e-3f, &teacher);
  const StepTrace teacher_fwd = trace_inference_step(teacher, 2);
  int distill_ops = 0;
  for (const OpTrace& t : distilled.ops) distill_ops += std::string(t.op) == "distill_loss";
  EXPECT_EQ(distill_ops, 1);
  // The teacher's inference step also has its loss (softmax_xent on [2, 10]): a few hundred FLOPs.
  EXPECT_NEAR(distilled.flops(), plain.flops() + teacher_fwd.flops(), 0.001 * teacher_fwd.flops());
  EXPECT_GT(teacher_fwd.flops(), 2.0 * teacher.macs_per_image() * 2 * 0.9);
}

// ---- GPU descriptions --------------------------------------------------------------------------

TEST(StepModelGpus, H100AndH200AreDescribedDense) {
  const std::vector<Gpu> gpus = load_gpus(VITCUDA_SOURCE_DIR "/bench/gpus.json");
  const Gpu& h100 = find_gpu(gpus, "h100");
  const Gpu& h200 = find_gpu(gpus, "H200");  // case-insensitive
  // The file gives TFLOP/s and TB/s; × 1e12 rounds: 4 ulps.
  EXPECT_DOUBLE_EQ(h100.bf16_tensor_flops, 989.4e12);  // dense: half the datasheet's 1,979 with sparsity
  EXPECT_DOUBLE_EQ(h100.fp32_flops, 66.9e12);
  EXPECT_DOUBLE_EQ(h100.hbm_bytes_per_s, 3.35e12);
  EXPECT_EQ(h100.sm_count, 132);
  EXPECT_EQ(h200.bf16_tensor_flops, h100.bf16_tensor_flops);
  EXPECT_EQ(h200.fp32_flops, h100.fp32_flops);
  EXPECT_DOUBLE_EQ(h200.hbm_bytes_per_s, 4.8e12);
  EXPECT_EQ(h200.sm_count, 132);
  EXPECT_DOUBLE_EQ(h100.launch_s, 4e-6);
  EXPECT_DOUBLE_EQ(h100.graph_launch_s, 1e-6);
  EXPECT_FALSE(h100.source.empty());
  for (const Gpu* g : {&h100, &h200}) {
    EXPECT_DOUBLE_EQ(g->interconnect.link_bytes_per_s, 900e9);  // NVLink 4, both directions
    EXPECT_DOUBLE_EQ(g->interconnect.allreduce_busbw, 370e9);
    EXPECT_DOUBLE_EQ(g->interconnect.latency_s, 20e-6);
    EXPECT_EQ(g->interconnect.max_gpus, 8);
    EXPECT_NE(g->interconnect.source.find("nccl-tests"), std::string::npos);
  }
  try {
    find_gpu(gpus, "a100");
    ADD_FAILURE() << "a100 is not described";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("h100, h200"), std::string::npos) << e.what();
  }
}

TEST(StepModelGpus, BadDescriptionsNameTheField) {
  const std::string ok =
      R"({"gpus": [{"id": "x", "bf16_tensor_dense_tflops": 1, "tf32_tensor_dense_tflops": 1, "fp32_tflops": 1,
          "hbm_tb_per_s": 1, "host_link_gb_per_s": 1, "sm_count": 1, "launch_us": 1, "graph_launch_us": 1,
          "sync_us": 1}]})";
  EXPECT_EQ(parse_gpus(ok).size(), 1u);
  auto message = [](const std::string& text) {
    try {
      parse_gpus(text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::string missing = ok;
  missing.replace(missing.find("\"hbm_tb_per_s\": 1"), 17, "\"hbm\": 1");
  EXPECT_NE(message(missing).find("hbm_tb_per_s"), std::string::npos) << message(missing);
  std::string negative = ok;
  negative.replace(negative.find("\"sm_count\": 1"), 13, "\"sm_count\": -1");
  EXPECT_NE(message(negative).find("sm_count"), std::string::npos) << message(negative);
  EXPECT_NE(message("{").find("not valid JSON"), std::string::npos);
  EXPECT_NE(message(R"({"gpus": []})").find("empty"), std::string::npos);
  // The interconnect is optional; when given, each figure is required and named.
  EXPECT_EQ(parse_gpus(ok)[0].interconnect.allreduce_busbw, 0.0);
  std::string link = ok;
  link.replace(link.find("\"sync_us\": 1"), 12,
               R"("sync_us": 1, "interconnect": {"link_gb_per_s_bidirectional": 900, "allreduce_busbw_gb_per_s": 370,
                  "latency_us": 20, "max_gpus": 8})");
  EXPECT_DOUBLE_EQ(parse_gpus(link)[0].interconnect.allreduce_busbw, 370e9);
  std::string no_bw = link;
  const std::string bw = "\"allreduce_busbw_gb_per_s\": 370";
  no_bw.replace(no_bw.find(bw), bw.size(), "\"busbw\": 370");
  EXPECT_NE(message(no_bw).find("allreduce_busbw_gb_per_s"), std::string::npos) << message(no_bw);
}

// ---- data parallelism ---------------------------------------------------------------------------

Interconnect round_link() {
  Interconnect ic;
  ic.name = "test link";
  ic.allreduce_busbw = 1e9;  // 1 GB/s: 1e6 bytes take 1 ms at factor 1
  ic.latency_s = 0;
  ic.max_gpus = 8;
  return ic;
}

// N = 1: no collective costs anything, with or without interconnect figures, and the step is the
// single GPU's.
TEST(StepModelDataParallel, OneGpuHasNoCommunication) {
  Interconnect ic = round_link();
  ic.latency_s = 1e-3;
  EXPECT_EQ(allreduce_s(1e9, 1, ic, 10), 0.0);
  EXPECT_EQ(reduce_scatter_s(1e9, 1, ic), 0.0);
  EXPECT_EQ(all_gather_s(1e9, 1, ic), 0.0);
  EXPECT_EQ(exposed_comm_s({1e6, 1e6}, 1e-3, 1, ic), 0.0);

  const Prediction p = predict(hand_trace(), round_gpu(), Precision::BF16);  // round_gpu: no interconnect
  for (int zero : {0, 1}) {
    for (bool overlap : {true, false}) {
      DataParallelOptions o;
      o.zero = zero;
      o.overlap = overlap;
      const DataParallel d = predict_data_parallel(p, round_gpu(), 1000, o);
      EXPECT_EQ(d.comm_s, 0.0);
      EXPECT_EQ(d.exposed_s, 0.0);
      EXPECT_EQ(d.optimizer_saved_s, 0.0);
      EXPECT_EQ(d.step_s, p.graph_time_s);
      EXPECT_EQ(d.efficiency(), 1.0);
      expect_close(d.img_per_s(), 64 / p.graph_time_s, "img/s of one GPU");
    }
  }
  // Without figures, more than one GPU is refused, naming the GPU.
  DataParallelOptions two;
  two.gpus = 2;
  try {
    predict_data_parallel(p, round_gpu(), 1000, two);
    ADD_FAILURE() << "no interconnect figures";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"test\""), std::string::npos) << e.what();
  }
}

// The ring: all-reduce moves 2(N−1)/N of the bytes per GPU, reduce-scatter and all-gather (N−1)/N
// each (nccl-tests' busbw factors), plus the latency once per call.
TEST(StepModelDataParallel, CommGrowsAsTwoNMinusOneOverN) {
  Interconnect ic = round_link();
  const double bytes = 4e6, one = bytes / ic.allreduce_busbw;  // 4 ms at factor 1
  for (int n : {2, 3, 4, 8}) {
    expect_close(allreduce_s(bytes, n, ic), 2.0 * (n - 1) / n * one, "all-reduce");
    expect_close(reduce_scatter_s(bytes, n, ic), double(n - 1) / n * one, "reduce-scatter");
    expect_close(all_gather_s(bytes, n, ic), double(n - 1) / n * one, "all-gather");
    expect_close(reduce_scatter_s(bytes, n, ic) + all_gather_s(bytes, n, ic), allreduce_s(bytes, n, ic),
                 "ZeRO-1's two halves move the all-reduce's bytes");
  }
  EXPECT_EQ(allreduce_s(bytes, 2, ic), one);  // 2(2−1)/2 = 1
  EXPECT_LT(allreduce_s(bytes, 2, ic), allreduce_s(bytes, 4, ic));
  EXPECT_LT(allreduce_s(bytes, 4, ic), allreduce_s(bytes, 8, ic));
  EXPECT_LT(allreduce_s(bytes, 8, ic), 2 * one);  // bounded by 2 × bytes / busbw
  ic.latency_s = 2e-5;
  expect_close(allreduce_s(bytes, 8, ic, 7), 2.0 * 7 / 8 * one + 7 * 2e-5, "latency per call");
}

TEST(StepModelDataParallel, BucketsStartAtTheArenasEnd) {
  EXPECT_EQ(bucket_sizes(10, 4), (std::vector<double>{4, 4, 2}));  // the remainder holds the arena's start
  EXPECT_EQ(bucket_sizes(8, 4), (std::vector<double>{4, 4}));
  EXPECT_EQ(bucket_sizes(3, 4), (std::vector<double>{3}));
  EXPECT_EQ(bucket_sizes(3, 0), (std::vector<double>{3}));
  EXPECT_TRUE(bucket_sizes(0, 4).empty());
  EXPECT_EQ(zero_padded_elements(1000, 8), 1024);  // multiple of 64 · 8
  EXPECT_EQ(zero_padded_elements(1024, 8), 1024);
  EXPECT_EQ(zero_padded_elements(1, 1), 64);
}

// The overlap schedule by hand: 3 buckets of 1e6 B on 2 GPUs at 1 GB/s take 1 ms each; backward
// 2 ms makes them ready at 2/3, 4/3 and 2 ms. Channel: 2/3 → 5/3, 5/3 → 8/3, 8/3 → 11/3 ms:
// exposed 5/3 ms. Bounds: never less than the last bucket (it is ready only when backward ends)
// nor than all of it minus backward; never more than all of it; a long backward hides all but
// the last bucket; a zero-length backward hides nothing.
TEST(StepModelDataParallel, OverlapIsBoundedByTheLastBucketAndTheWhole) {
  const Interconnect ic = round_link();
  const std::vector<double> b = {1e6, 1e6, 1e6};
  expect_close(exposed_comm_s(b, 2e-3, 2, ic), 5e-3 / 3, "hand schedule");
  const double whole = allreduce_s(3e6, 2, ic, 3), last = allreduce_s(1e6, 2, ic);
  for (double backward : {0.0, 1e-4, 1e-3, 2e-3, 5e-3, 1.0}) {
    for (int n : {2, 4, 8}) {
      const double e = exposed_comm_s(b, backward, n, ic);
      const double whole_n = allreduce_s(3e6, n, ic, 3), last_n = allreduce_s(1e6, n, ic);
      EXPECT_GE(e, last_n * (1 - 1e-12)) << backward << " " << n;
      EXPECT_GE(e, (whole_n - backward) * (1 - 1e-12)) << backward << " " << n;
      EXPECT_LE(e, whole_n * (1 + 1e-12)) << backward << " " << n;
    }
  }
  expect_close(exposed_comm_s(b, 1.0, 2, ic), last, "long backward: only the last bucket shows");
  expect_close(exposed_comm_s(b, 0.0, 2, ic), whole, "no backward to hide behind");
  Interconnect lat = ic;
  lat.latency_s = 1e-4;
  expect_close(exposed_comm_s(b, 1.0, 2, lat), last + 1e-4, "the last call's latency shows too");
}

// A step with a forward, two backward ops (an add between them), and AdamW: the backward span and
// the optimizer's time are read from the op names; the step adds the exposed time; ZeRO-1 adds the
// reduce-scatter and all-gather of the padded arena and takes (1 − 1/N) of AdamW off.
TEST(StepModelDataParallel, StepAddsTheExposedTimeAndZeroShardsAdamW) {
  StepTrace s;
  s.batch = 16;
  auto op = [](const char* name, double bytes) {
    OpTrace t;
    t.op = name;
    t.cost = {0, bytes};
    return t;
  };
  // round_gpu: HBM 1e12 B/s, so 1e9 B = 1 ms.
  s.ops = {op("linear_forward", 1e9), op("linear_backward", 2e9), op("add", 1e9), op("layernorm_backward", 1e9),
           op("adamw_update", 4e9)};
  Gpu g = round_gpu();
  g.interconnect = round_link();
  const Prediction p = predict(s, g, Precision::BF16);
  expect_close(backward_s(p, true), 4e-3, "linear_backward .. layernorm_backward");
  expect_close(optimizer_s(p, true), 4e-3, "adamw_update");

  const int64_t arena = 250000;  // 1e6 B of fp32 gradients: 4 buckets of 0.25 MB
  DataParallelOptions o;
  o.gpus = 4;
  o.bucket_bytes = 250000;
  const DataParallel d = predict_data_parallel(p, g, arena, o);
  EXPECT_EQ(d.grad_bytes, 1e6);
  EXPECT_EQ(d.buckets, 4);
  expect_close(d.comm_s, 1.5e-3, "2·3/4 × 1e6 B / 1 GB/s");
  // Buckets of 0.375 ms each, ready every 1 ms: each is done before the next is ready.
  expect_close(d.exposed_s, 0.375e-3, "only the last bucket");
  expect_close(d.step_s, p.graph_time_s + 0.375e-3, "step");
  expect_close(d.efficiency(), p.graph_time_s / d.step_s, "efficiency");
  expect_close(d.img_per_s(), 4 * 16 / d.step_s, "global img/s");

  o.overlap = false;
  const DataParallel serial = predict_data_parallel(p, g, arena, o);
  EXPECT_EQ(serial.buckets, 1);
  expect_close(serial.exposed_s, 1.5e-3, "one call after backward");

  o.zero = 1;
  const DataParallel z = predict_data_parallel(p, g, arena, o);
  EXPECT_EQ(z.grad_bytes, 4.0 * 250112);  // padded to a multiple of 256 elements
  expect_close(z.exposed_s, 2 * 0.75 * 4.0 * 250112 / 1e9, "reduce-scatter + all-gather, not overlapped");
  expect_close(z.optimizer_saved_s, 3e-3, "AdamW on a quarter of the arena");
  expect_close(z.step_s, p.graph_time_s + z.exposed_s - 3e-3, "ZeRO-1 step");
  expect_close(z.moments_bytes_per_gpu, 8.0 * 250112 / 4, "moments sharded");
  EXPECT_EQ(serial.moments_bytes_per_gpu, 8.0 * arena);

  o.gpus = 16;  // beyond the one machine of 8
  EXPECT_THROW(predict_data_parallel(p, g, arena, o), Error);
  o.gpus = 2;
  o.zero = 2;
  EXPECT_THROW(predict_data_parallel(p, g, arena, o), Error);
}

// The bytes reduced are the model's whole fp32 gradient arena: ViT-B/16's parameter arena × 4.
TEST(StepModelDataParallel, VitBaseArenaBytesAreTheParameterArenaTimesFour) {
  std::unique_ptr<Backend> be = make_backend("cpu");
  Model model(preset("vit_base_patch16_224"), *be, 1);
  EXPECT_EQ(model.num_params(), 86567656);  // timm's count for vit_base_patch16_224
  EXPECT_GE(model.arena_size(), model.num_params());
  EXPECT_LT(model.arena_size(), model.num_params() + 16 * int64_t(model.params().size()));  // alignment gaps
  EXPECT_EQ(grad_arena_bytes(model.arena_size()), 4.0 * double(model.arena_size()));
  EXPECT_EQ(grad_arena_bytes(model.arena_size()), double(model.grad_arena().nbytes()));
  EXPECT_EQ(model.grad_arena().dtype(), DType::F32);
}

TEST(StepModelNames, KernelNamesLoseTheNamespaces) {
  EXPECT_EQ(display_kernel_name("vitcuda::(anonymous namespace)::ln_fwd<float, 8>"), "ln_fwd<float, 8>");
  EXPECT_EQ(display_kernel_name("cublasLtMatmul"), "cublasLtMatmul");
}

}  // namespace
