// Builds the default ViT on the cpu backend and runs one forward pass on a blank batch.
#include <vitcuda/model.h>

#include <cstdio>
#include <vector>

int main() {
  auto backend = vitcuda::make_backend("cpu");
  vitcuda::ViTConfig cfg = vitcuda::preset("vit_fmnist");
  vitcuda::Model model(cfg, *backend, 2);
  model.init(0);
  std::vector<uint8_t> images(2 * 28 * 28, 128);
  vitcuda::Tensor logits =
      model.forward(vitcuda::Tensor::view(images.data(), {2, 1, 28, 28}, vitcuda::DType::U8), false);
  std::printf("consumer: %lld parameters, logits %s\n", (long long)model.num_params(), logits.shape_str().c_str());
  return logits.size(1) == cfg.num_classes ? 0 : 1;
}
