// vitcuda — step_model: a PREDICTION of one training step and one inference step of a ViT on a
// described GPU, from the launches the real host graph issues. The model is built on the
// emulated CUDA backend ("cuda-emu") in dry run (kernels/runtime.h: launches, matmuls, copies
// and memsets are counted and recorded, not executed), one step of each kind is traced
// (include/vitcuda/step_trace.h), and every traced op is costed by the roofline of
// bench/step_model.h with the GPU's figures from bench/gpus.json. Nothing is measured.
//
//   step_model --model vit_base_patch16_224 --batch 128 --gpu h100 [--precision bf16|fp32]
//              [--ops] [--markdown] [--check] [--gpus FILE]
//              [--num-gpus N [--bucket-mb 25] [--no-graph]]
// --num-gpus adds the data-parallel prediction for 1, 2, 4, ... N GPUs of one machine (the batch
// is per GPU): NCCL all-reduce of the fp32 gradient arena overlapped with backward in buckets,
// without overlap, and ZeRO-1 (bench/step_model.h).
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "bench/step_model.h"
#include "kernels/cuda_backend.h"
#include "kernels/runtime.h"
#include "vitcuda/model.h"
#include "vitcuda/optim.h"
#include "vitcuda/step_trace.h"

#ifndef VITCUDA_STEP_MODEL_GPUS
#define VITCUDA_STEP_MODEL_GPUS "bench/gpus.json"
#endif

namespace vitcuda::step_model {
namespace {

struct Options {
  std::string model = "vit_fmnist";
  std::string teacher;  // a preset: the training step is distilled from it (--teacher)
  int batch = 128;
  std::string gpu = "h100";
  std::string gpus_path = VITCUDA_STEP_MODEL_GPUS;
  Precision precision = Precision::BF16;
  bool ops = false, markdown = false, check = false;
  int num_gpus = 0;  // 0: no data-parallel section
  double bucket_mb = 25;
  bool graph = true;
};

const char* kUsage =
    "step_model: PREDICTED time of one training step and one inference step of a ViT on a GPU\n"
    "(roofline per traced op of the real host graph, dry run on the emulated CUDA backend).\n"
    "Nothing is measured.\n\n"
    "  --model NAME        a preset (vitcuda::preset_names()), default vit_fmnist\n"
    "  --batch N           images per step, default 128\n"
    "  --teacher NAME      a preset: predict the DISTILLED training step (DeiT, hard targets): the teacher,\n"
    "                      built for inference, runs forward on each step's images first\n"
    "  --gpu ID            a GPU of the descriptions file (h100, h200), default h100\n"
    "  --gpus FILE         GPU descriptions, default " VITCUDA_STEP_MODEL_GPUS
    "\n"
    "  --precision P       bf16 (default) or fp32\n"
    "  --ops               every op call in order, with its launches\n"
    "  --markdown          one row of bench/RESULTS.md's step-model table\n"
    "  --check             exit 1 when a GEMM op's counted FLOPs disagree with the matmuls it launched\n"
    "  --num-gpus N        data parallelism on 1, 2, 4, ... N GPUs of one machine (--batch is per GPU):\n"
    "                      step time and scaling efficiency with the NCCL all-reduce overlapped in\n"
    "                      buckets, without overlap, and with ZeRO-1 (interconnect figures of the file)\n"
    "  --bucket-mb MB      gradient bucket size for the overlapped all-reduce, default 25\n"
    "  --no-graph          base the data-parallel steps on eager launches (default: the CUDA Graph step)\n";

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (a == "--model") {
      o.model = value();
    } else if (a == "--teacher") {
      o.teacher = value();
    } else if (a == "--batch") {
      const std::string v = value();
      char* end = nullptr;
      const long b = std::strtol(v.c_str(), &end, 10);
      if (*end || b < 1 || b > (1 << 20)) throw Error("--batch: expected a positive integer, got " + v);
      o.batch = int(b);
    } else if (a == "--gpu") {
      o.gpu = value();
    } else if (a == "--gpus") {
      o.gpus_path = value();
    } else if (a == "--precision") {
      const std::string v = value();
      if (v != "bf16" && v != "fp32") throw Error("--precision: bf16 or fp32, got " + v);
      o.precision = v == "bf16" ? Precision::BF16 : Precision::F32;
    } else if (a == "--ops") {
      o.ops = true;
    } else if (a == "--markdown") {
      o.markdown = true;
    } else if (a == "--check") {
      o.check = true;
    } else if (a == "--num-gpus") {
      const std::string v = value();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || n < 1 || n > 1024) throw Error("--num-gpus: expected an integer in 1..1024, got " + v);
      o.num_gpus = int(n);
    } else if (a == "--bucket-mb") {
      const std::string v = value();
      char* end = nullptr;
      const double mb = std::strtod(v.c_str(), &end);
      if (v.empty() || *end || !(mb > 0) || mb > 1e6)
        throw Error("--bucket-mb: expected a number in (0, 1e6], got " + v);
      o.bucket_mb = mb;
    } else if (a == "--no-graph") {
      o.graph = false;
    } else {
      throw Error("unknown argument " + a + " (--help lists them)");
    }
  }
  return o;
}

std::string join(const std::vector<std::string>& v, size_t max_chars) {
  std::string s;
  for (const std::string& k : v) s += (s.empty() ? "" : ", ") + k;
  if (s.size() > max_chars) s = s.substr(0, max_chars - 3) + "...";
  return s;
}

void print_row(const Row& r, double step_s, bool with_count) {
  std::printf("%-20s %5s %6lld %9.3f %9.2f %10.1f %10.1f %9.1f %10.1f %6.1f%% %-7s %s\n", r.op.c_str(),
              with_count ? std::to_string(r.count).c_str() : "", static_cast<long long>(runtime_calls(r.runtime)),
              r.cost.flops * 1e-9, r.cost.bytes * 1e-6, r.eager.compute_s * 1e6, r.eager.memory_s * 1e6,
              (r.eager.launch_s + r.eager.host_s) * 1e6, r.time_s * 1e6, step_s > 0 ? 100.0 * r.time_s / step_s : 0.0,
              bound(r).c_str(), join(r.kernels, 70).c_str());
}

void print_header() {
  std::printf("%-20s %5s %6s %9s %9s %10s %10s %9s %10s %7s %-7s %s\n", "op", "calls", "rt", "GFLOP", "MB", "compute",
              "memory", "launch+", "time", "share", "bound", "kernels (launched)");
  std::printf("%-20s %5s %6s %9s %9s %10s %10s %9s %10s %7s %-7s %s\n", "", "", "calls", "", "", "us", "us", "host us",
              "us", "", "", "");
}

void print_launches(const OpTrace& t) {
  for (const LaunchRecord& l : t.launches) {
    if (l.kernel == "cublasLtMatmul") {
      std::printf("      cublasLtMatmul m=%lld n=%lld k=%lld batch=%lld  (%.3f GFLOP)\n", static_cast<long long>(l.m),
                  static_cast<long long>(l.n), static_cast<long long>(l.k), static_cast<long long>(l.batch),
                  2e-9 * double(l.m) * double(l.n) * double(l.k) * double(l.batch));
    } else {
      std::printf("      %s grid (%u,%u,%u) block (%u,%u,%u) smem %zu\n", display_kernel_name(l.kernel).c_str(),
                  l.grid[0], l.grid[1], l.grid[2], l.block[0], l.block[1], l.block[2], l.smem);
    }
  }
}

// Model FLOPs by the 6·N·D convention (Kaplan et al.; PaLM's MFU without the attention term):
// 6 × parameters × tokens for a training step, 2 × parameters × tokens for inference.
double convention_flops(const Model& m, int64_t batch, bool training) {
  return (training ? 6.0 : 2.0) * double(m.num_params()) * double(batch) * double(m.config().num_tokens());
}

void print_step(const char* title, const StepTrace& trace, const Prediction& p, const Model& model, const Gpu& gpu,
                const Options& o, bool training) {
  std::printf("\n== %s: PREDICTED ==\n", title);
  if (o.ops) {
    std::printf("(every op call in order; its launches below it)\n");
    print_header();
    for (size_t i = 0; i < p.ops.size(); ++i) {
      print_row(p.ops[i], p.time_s, false);
      print_launches(trace.ops[i]);
    }
  } else {
    print_header();
    for (const Row& r : group_by_op(p.ops)) print_row(r, p.time_s, true);
  }
  print_row(p.outside, p.time_s, false);
  std::printf("%-20s %5s %6lld %9s %9s %10s %10s %9.1f %10.1f %6.1f%% %-7s\n", "(blocking syncs)", "",
              static_cast<long long>(p.total.syncs), "", "", "", "", p.sync_s * 1e6, p.sync_s * 1e6,
              100.0 * p.sync_s / p.time_s, "sync");
  std::printf("%-20s %5zu %6lld %9.3f %9.2f %10.1f %10.1f %9.1f %10.1f %6.1f%%\n", "total", p.ops.size(),
              static_cast<long long>(runtime_calls(p.total)), p.flops * 1e-9, p.bytes * 1e-6, p.compute_floor_s * 1e6,
              p.memory_floor_s * 1e6, (p.launch_s + p.host_s + p.sync_s) * 1e6, p.time_s * 1e6, 100.0);

  const double peak = headline_peak(o.precision, gpu);
  const double conv = convention_flops(model, p.batch, training);
  std::printf("\nPREDICTED %s time:    %.3f ms (eager launches), %.3f ms (CUDA Graph launches)\n",
              training ? "step" : "inference", p.time_s * 1e3, p.graph_time_s * 1e3);
  std::printf("PREDICTED throughput:  %.0f img/s (eager), %.0f img/s (CUDA Graph)\n", p.img_per_s(),
              p.graph_img_per_s());
  std::printf(
      "PREDICTED MFU:         %.2f%% of %.1f TFLOP/s (%s), counted FLOPs: %.4g per step "
      "(op_cost: GEMMs 2·m·n·k, attention incl. the backward's recomputed Q·Kᵀ, element-wise ops)\n",
      100.0 * p.mfu(), peak * 1e-12, o.precision == Precision::BF16 ? "dense bf16 tensor" : "fp32", p.flops);
  std::printf("                       %.2f%% by the %d·params·tokens convention (%.4g FLOPs: %.0f%% of counted)\n",
              100.0 * conv / (p.time_s * peak), training ? 6 : 2, conv, 100.0 * conv / p.flops);
  std::printf("ideal (100%% MFU):      %.3f ms = counted FLOPs / peak\n", p.ideal_s * 1e3);
  std::printf("compute floor:         %.3f ms = Σ FLOPs / each op's peak (element-wise ops at fp32)\n",
              p.compute_floor_s * 1e3);
  std::printf("memory floor:          %.3f ms = %.4g bytes / %.2f TB/s\n", p.memory_floor_s * 1e3, p.bytes,
              gpu.hbm_bytes_per_s * 1e-12);
  std::printf("roofline sum:          %.3f ms = Σ max(compute, memory), without launch, host and sync costs\n",
              p.roofline_s * 1e3);
  std::printf(
      "serial bound:          %.3f ms = Σ (compute + memory) + launch + host + sync: no op overlaps its "
      "compute with its memory traffic (the slow end of the roofline)\n",
      p.serial_s * 1e3);
  std::printf("launch overhead:       %.3f ms (%.1f%% of the step) = %lld runtime calls × %.1f us\n", p.launch_s * 1e3,
              100.0 * p.launch_share(), static_cast<long long>(runtime_calls(p.total)), gpu.launch_s * 1e6);
  std::printf("host link + syncs:     %.3f ms + %.3f ms (%lld blocking waits × %.1f us)\n", p.host_s * 1e3,
              p.sync_s * 1e3, static_cast<long long>(p.total.syncs), gpu.sync_s * 1e6);
  std::printf("runtime (counted):     %s\n", to_string(p.total).c_str());
  std::printf(
      "kernels with fewer blocks than the %d SMs: %lld of %lld launches (not modelled: the roofline "
      "assumes every kernel fills the GPU)\n",
      gpu.sm_count, static_cast<long long>(p.underfilled), static_cast<long long>(p.kernel_launches));
}

// The linear ops' counted FLOPs against the matmuls they launched (2·m·n·k·batch): the
// counted figure adds only the epilogues (bias, activation), a few percent. 0: agree.
int check_gemm_flops(const Prediction& p, const char* what) {
  int bad = 0;
  for (const Row& r : p.ops) {
    if (r.op.rfind("linear_", 0) != 0) continue;
    const bool ok =
        r.matmul_flops > 0 && r.matmul_flops <= r.cost.flops * (1 + 1e-12) && r.cost.flops <= 1.25 * r.matmul_flops;
    if (!ok) {
      std::fprintf(stderr, "CHECK FAILED (%s): %s counts %.6g FLOPs but launched matmuls of %.6g FLOPs\n", what,
                   r.op.c_str(), r.cost.flops, r.matmul_flops);
      ++bad;
    }
  }
  const RuntimeCounters& o = p.outside.runtime;
  if (o.launches < 0 || o.gemms < 0 || o.h2d < 0 || o.d2h < 0 || o.d2d < 0 || o.memsets < 0 || o.syncs < 0) {
    std::fprintf(stderr, "CHECK FAILED (%s): the ops' runtime counters exceed the step's total\n", what);
    ++bad;
  }
  if (bad == 0)
    std::printf("check (%s): every linear op's counted FLOPs are within [1, 1.25] × its launched matmuls'\n", what);
  return bad;
}

// 1, 2, 4, ... up to n, and n itself.
std::vector<int> gpu_counts(int n) {
  std::vector<int> out;
  for (int k = 1; k < n; k *= 2) out.push_back(k);
  out.push_back(n);
  return out;
}

struct DpRow {
  DataParallel overlap, serial, zero;
};

DpRow dp_row(const Prediction& pt, const Gpu& gpu, int64_t arena, int n, const Options& o) {
  DataParallelOptions d;
  d.gpus = n;
  d.bucket_bytes = o.bucket_mb * 1024 * 1024;
  d.graph = o.graph;
  DpRow r;
  r.overlap = predict_data_parallel(pt, gpu, arena, d);
  d.overlap = false;
  r.serial = predict_data_parallel(pt, gpu, arena, d);
  d.zero = 1;
  r.zero = predict_data_parallel(pt, gpu, arena, d);
  return r;
}

void print_data_parallel(const Prediction& pt, const Gpu& gpu, const Model& model, const Options& o) {
  const Interconnect& ic = gpu.interconnect;
  const int64_t arena = model.arena_size();
  const double grad_bytes = grad_arena_bytes(arena);
  const double single = o.graph ? pt.graph_time_s : pt.time_s;
  std::printf("\n== data parallelism on %s GPUs of one machine: PREDICTED ==\n", gpu.id.c_str());
  std::printf(
      "interconnect: %s, %.0f GB/s per GPU (both directions); all-reduce bus bandwidth %.0f GB/s; %.1f us per "
      "collective call; %d GPUs per machine\nsource: %s\n",
      ic.name.c_str(), ic.link_bytes_per_s * 1e-9, ic.allreduce_busbw * 1e-9, ic.latency_s * 1e6, ic.max_gpus,
      ic.source.c_str());
  std::printf(
      "gradient arena: %lld fp32 elements = %.1f MB (%lld parameters and the alignment gaps); buckets of %.0f MB "
      "from the arena's end (head first, patch embedding last): %zu\n",
      static_cast<long long>(arena), grad_bytes * 1e-6, static_cast<long long>(model.num_params()), o.bucket_mb,
      bucket_sizes(grad_bytes, o.bucket_mb * 1024 * 1024).size());
  std::printf("one GPU: step %.3f ms (%s), backward span %.3f ms, AdamW %.3f ms; batch %lld per GPU\n", single * 1e3,
              o.graph ? "CUDA Graph launches" : "eager launches", backward_s(pt, o.graph) * 1e3,
              optimizer_s(pt, o.graph) * 1e3, static_cast<long long>(pt.batch));
  std::printf(
      "all-reduce = 2(N-1)/N x bytes / bus bandwidth + latency x calls; overlap: gradient bytes final at a "
      "uniform rate over the backward span, buckets reduced in order, exposed = done - backward end;\n"
      "ZeRO-1: reduce-scatter + all-gather of the padded arena after backward (not overlapped), AdamW on 1/N\n");
  std::printf("%4s %7s %10s %10s %10s %9s %7s | %10s %7s | %10s %7s %9s\n", "GPUs", "global", "all-reduce", "exposed",
              "step", "img/s", "effic.", "no-overlap", "effic.", "ZeRO-1", "effic.", "moments");
  std::printf("%4s %7s %10s %10s %10s %9s %7s | %10s %7s | %10s %7s %9s\n", "", "batch", "ms", "ms", "ms", "", "",
              "step ms", "", "step ms", "", "MB/GPU");
  for (int n : gpu_counts(o.num_gpus)) {
    const DpRow r = dp_row(pt, gpu, arena, n, o);
    std::printf("%4d %7lld %10.3f %10.3f %10.3f %9.0f %6.1f%% | %10.3f %6.1f%% | %10.3f %6.1f%% %9.1f\n", n,
                static_cast<long long>(n * pt.batch), r.overlap.comm_s * 1e3, r.overlap.exposed_s * 1e3,
                r.overlap.step_s * 1e3, r.overlap.img_per_s(), 100 * r.overlap.efficiency(), r.serial.step_s * 1e3,
                100 * r.serial.efficiency(), r.zero.step_s * 1e3, 100 * r.zero.efficiency(),
                r.zero.moments_bytes_per_gpu * 1e-6);
  }
  std::printf(
      "not modelled: NCCL's kernels taking SMs and HBM bandwidth from the overlapped backward, the lower bus "
      "bandwidth of %.0f MB messages (only the latency term), stragglers and input pipelines, several machines.\n",
      o.bucket_mb);
}

int run(const Options& o) {
  const std::vector<Gpu> gpus = load_gpus(o.gpus_path);
  const Gpu& gpu = find_gpu(gpus, o.gpu);
  if (o.num_gpus > 1 && !(gpu.interconnect.allreduce_busbw > 0))
    throw Error("--num-gpus: GPU \"" + gpu.id + "\" has no \"interconnect\" figures in " + o.gpus_path);
  if (o.num_gpus > 1 && o.num_gpus > gpu.interconnect.max_gpus)
    throw Error("--num-gpus: " + std::to_string(o.num_gpus) + " GPUs exceed the " +
                std::to_string(gpu.interconnect.max_gpus) + " one " + gpu.id +
                " machine joins (several machines are not modelled)");
  const ViTConfig cfg = preset(o.model);

  rt::set_dry_run(true);  // counted and recorded, never executed
  std::unique_ptr<Backend> be = make_cuda_backend(o.precision == Precision::BF16 ? DType::BF16 : DType::F32);
  Model model(cfg, *be, o.batch);
  model.init(1);
  AdamW opt(model, AdamWConfig{});
  // Distilled: the teacher (an inference Model on the same backend) is part of the training step.
  std::unique_ptr<Model> teacher;
  if (!o.teacher.empty()) {
    teacher = std::make_unique<Model>(preset(o.teacher), *be, o.batch, be->compute_dtype(), 64, Model::Use::Inference);
    teacher->init(2);
  }
  const StepTrace train = trace_train_step(model, opt, o.batch, 0.1f, 1e-3f, teacher.get());
  const StepTrace infer = trace_inference_step(model, o.batch);
  const StepTrace plain = teacher ? trace_train_step(model, opt, o.batch) : StepTrace{};
  rt::set_dry_run(false);

  const Prediction pt = predict(train, gpu, o.precision);
  const Prediction pi = predict(infer, gpu, o.precision);

  if (o.markdown && o.num_gpus > 0) {
    // | model | batch per GPU | GPU | GPUs | global batch | all-reduce ms | exposed ms | step ms | img/s |
    // efficiency | no-overlap step ms (eff.) | ZeRO-1 step ms (eff.) |
    for (int n : gpu_counts(o.num_gpus)) {
      const DpRow r = dp_row(pt, gpu, model.arena_size(), n, o);
      std::printf("| %s | %d | %s | %d | %lld | %.2f | %.2f | %.2f | %.0f | %.1f%% | %.2f (%.1f%%) | %.2f (%.1f%%) |\n",
                  cfg.name.c_str(), o.batch, gpu.id.c_str(), n, static_cast<long long>(n) * o.batch,
                  r.overlap.comm_s * 1e3, r.overlap.exposed_s * 1e3, r.overlap.step_s * 1e3, r.overlap.img_per_s(),
                  100 * r.overlap.efficiency(), r.serial.step_s * 1e3, 100 * r.serial.efficiency(), r.zero.step_s * 1e3,
                  100 * r.zero.efficiency());
    }
    return 0;
  }
  if (o.markdown) {
    // | model | batch | GPU | train step ms | img/s | MFU | ideal ms | memory floor ms | serial bound ms |
    // launches + matmuls | launch share | CUDA Graph step ms | inference ms (img/s) |
    std::printf(
        "| %s | %d | %s | %.2f | %.0f | %.1f%% | %.2f | %.2f | %.2f | %lld + %lld | %.0f%% | %.2f | %.2f (%.0f) |\n",
        cfg.name.c_str(), o.batch, gpu.id.c_str(), pt.time_s * 1e3, pt.img_per_s(), 100 * pt.mfu(), pt.ideal_s * 1e3,
        pt.memory_floor_s * 1e3, pt.serial_s * 1e3, static_cast<long long>(pt.total.launches),
        static_cast<long long>(pt.total.gemms), 100 * pt.launch_share(), pt.graph_time_s * 1e3, pi.time_s * 1e3,
        pi.img_per_s());
    return 0;
  }

  std::printf("PREDICTION (step model), not a measurement.\n");
  std::printf("model %s (%.2f M parameters, %d tokens per image), batch %d, %s, on %s (%s)\n", cfg.name.c_str(),
              double(model.num_params()) * 1e-6, cfg.num_tokens(), o.batch, precision_name(o.precision),
              gpu.name.c_str(), gpu.id.c_str());
  std::printf(
      "GPU figures (%s): %.1f TFLOP/s dense bf16 tensor, %.1f TFLOP/s fp32, %.2f TB/s HBM, %d SMs, "
      "host link %.0f GB/s; %s\n",
      o.gpus_path.c_str(), gpu.bf16_tensor_flops * 1e-12, gpu.fp32_flops * 1e-12, gpu.hbm_bytes_per_s * 1e-12,
      gpu.sm_count, gpu.host_link_bytes_per_s * 1e-9, gpu.source.c_str());
  std::printf(
      "assumed overheads: %.1f us per runtime call (eager), %.1f us per kernel in a CUDA Graph, "
      "%.1f us per blocking host wait\n",
      gpu.launch_s * 1e6, gpu.graph_launch_s * 1e6, gpu.sync_s * 1e6);
  std::printf(
      "per op: time = max(FLOPs / peak, DRAM bytes / HBM) + host bytes / host link + runtime calls × "
      "launch overhead;\n        peak = %s; runtime calls = kernels + cuBLASLt matmuls + copies + memsets, "
      "from the dry-run trace of the real host graph\n",
      o.precision == Precision::BF16 ? "dense bf16 tensor for linear/attention ops, fp32 for the others (memory-bound)"
                                     : "fp32 for every op (fp32 GEMMs: CUBLAS_COMPUTE_32F, no TF32)");

  if (teacher) {
    const Prediction pp = predict(plain, gpu, o.precision);
    std::printf(
        "distilled from %s (%.2f M parameters, inference Model): the training step below includes the "
        "teacher's forward; the same step without it: %.2f ms (%.0f img/s), with it %.2f ms (%.0f img/s): x%.2f\n",
        o.teacher.c_str(), double(teacher->num_params()) * 1e-6, pp.time_s * 1e3, pp.img_per_s(), pt.time_s * 1e3,
        pt.img_per_s(), pt.time_s / pp.time_s);
  }
  print_step(teacher
                 ? "training step (teacher forward, forward with dropout, distilled loss, zero_grad, backward, AdamW)"
                 : "training step (forward with dropout, loss, zero_grad, backward, AdamW)",
             train, pt, model, gpu, o, true);
  print_step("inference step (forward without dropout, loss)", infer, pi, model, gpu, o, false);
  std::printf(
      "\nnot counted: DRAM bytes of memsets and device copies outside ops (zero_grad clears the %.1f MB "
      "fp32 gradient arena: %.1f us at HBM bandwidth), L2 reuse, kernel efficiency below peak, overlap "
      "of launches with execution.\n",
      double(model.grad_arena().nbytes()) * 1e-6, double(model.grad_arena().nbytes()) / gpu.hbm_bytes_per_s * 1e6);
  if (o.num_gpus > 0) print_data_parallel(pt, gpu, model, o);
  std::printf("PREDICTION (step model), not a measurement.\n");

  if (o.check) {
    const int bad = check_gemm_flops(pt, "training") + check_gemm_flops(pi, "inference");
    return bad ? 1 : 0;
  }
  return 0;
}

}  // namespace
}  // namespace vitcuda::step_model

int main(int argc, char** argv) {
  try {
    return vitcuda::step_model::run(vitcuda::step_model::parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "step_model: %s\n", e.what());
    return 2;
  }
}
