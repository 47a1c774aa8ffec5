// vitcuda — the launch table of the kernel gates (tools/kernel_gates.py): every kernel that a
// training or inference step launches, with the largest block (threads) and dynamic shared memory
// it is launched with. The gates compute occupancy from it and gate exactly these kernels.
//
// Traces the real host graph on the emulated CUDA backend in dry-run mode (launches are checked
// and recorded, nothing is executed, so a ViT-B step takes milliseconds), in bf16 and fp32, for
// models that together reach every kernel a step can use: ViT-B/16 (head dim 64, 197 tokens),
// ViT-H/14 (head dim 80), the default vit_fmnist (head dim 32, drop-path), the Keras CIFAR-100
// model (no cls token, Flatten, head MLP, dropout) and a model of the remaining options (head dim
// 128, tanh GELU, mean pooling, pre-logits, attention dropout).
//
// Usage: vitcuda_gates_launch_table OUT.tsv   (writes "kernel<TAB>block_threads<TAB>dynamic_smem_bytes")
#include <algorithm>
#include <cstdio>
#include <exception>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda_backend.h"
#include "kernels/runtime.h"
#include "vitcuda/config.h"
#include "vitcuda/model.h"
#include "vitcuda/optim.h"
#include "vitcuda/step_trace.h"

namespace {

using namespace vitcuda;

struct Traced {
  const char* what;
  ViTConfig config;
};

std::vector<Traced> models() {
  std::vector<Traced> m;
  ViTConfig b = preset("vit_base_patch16_224");
  b.depth = 1;
  m.push_back({"vit_base_patch16_224, depth 1", b});
  ViTConfig h = preset("vit_huge_patch14_224");
  h.depth = 1;
  m.push_back({"vit_huge_patch14_224, depth 1", h});
  ViTConfig f = preset("vit_fmnist");
  f.depth = 2;  // drop-path rises from 0 over depth: block 2 has it
  m.push_back({"vit_fmnist, depth 2", f});
  ViTConfig k = preset("vit_keras_cifar100");
  k.depth = 1;
  m.push_back({"vit_keras_cifar100, depth 1", k});
  ViTConfig o = preset("vit_fmnist");
  o.embed_dim = 256;
  o.num_heads = 2;  // head dim 128
  o.depth = 2;
  o.gelu = Gelu::Tanh;
  o.pool = Pool::Avg;
  o.drop_rate = 0.1f;
  o.attn_drop_rate = 0.1f;
  o.drop_path_rate = 0.2f;
  o.pre_logits = 16;
  m.push_back({"options: head dim 128, tanh GELU, mean pooling, pre-logits, dropout", o});
  return m;
}

struct Largest {
  unsigned threads = 0;
  size_t smem = 0;
};

void collect(const StepTrace& t, std::map<std::string, Largest>& out) {
  for (const OpTrace& op : t.ops)
    for (const LaunchRecord& r : op.launches) {
      if (r.kernel == "cublasLtMatmul") continue;  // cuBLASLt's kernels are not ours to gate
      Largest& l = out[r.kernel];
      l.threads = std::max(l.threads, r.block[0] * r.block[1] * r.block[2]);
      l.smem = std::max(l.smem, r.smem);
    }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT.tsv\n", argv[0]);
    return 2;
  }
  try {
    std::map<std::string, Largest> kernels;
    const int batch = 2;
    for (const Traced& m : models())
      for (DType dtype : {DType::BF16, DType::F32}) {
        std::unique_ptr<Backend> be = make_cuda_backend(dtype);
        Model model(m.config, *be, batch);
        model.init(1);
        AdamW opt(model, AdamWConfig{});
        rt::set_dry_run(true);
        collect(trace_train_step(model, opt, batch), kernels);
        collect(trace_inference_step(model, batch), kernels);
        rt::set_dry_run(false);
      }
    std::ofstream f(argv[1]);
    f << "# kernel\tblock_threads\tdynamic_smem_bytes   (tests/gates/launch_table.cpp: the largest launch of\n"
         "# each kernel over the training and inference steps of its models, bf16 and fp32)\n";
    for (const auto& [name, l] : kernels) f << name << '\t' << l.threads << '\t' << l.smem << '\n';
    if (!f.flush()) {
      std::fprintf(stderr, "cannot write %s\n", argv[1]);
      return 1;
    }
    std::printf("%zu kernels in the training and inference steps -> %s\n", kernels.size(), argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "launch table: %s\n", e.what());
    return 1;
  }
  return 0;
}
