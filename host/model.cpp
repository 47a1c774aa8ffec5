// vitcuda — the ViT host graph. Read forward() and backward() top to bottom: every line is
// one Backend call on views into the arenas planned in plan().
#include "vitcuda/model.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <numeric>
#include <sstream>

#include "host/random.h"

namespace vitcuda {
namespace {

std::string blk(int l, const char* what) { return "blocks." + std::to_string(l) + "." + what; }

// splitmix64 (host/random.h) with the distributions timm's init needs, computed here because
// std::normal_distribution differs between standard libraries.
struct SplitMix {
  uint64_t s;
  uint64_t next() { return splitmix64(s); }
  double uniform() { return ((next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }  // (0, 1)
  double normal() { return std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()); }
  double trunc_normal(double stdev) {  // resampled outside +-2 std, as timm's trunc_normal_
    for (;;) {
      const double z = normal();
      if (std::fabs(z) <= 2.0) return z * stdev;
    }
  }
};

// Dropout call sites; stream = step * kSites + site, so every mask of every step differs.
enum Site : int { kPosDrop, kHeadDrop, kHeadMlp0, kBlockSites = 16 };
enum BlockSite : int { kAttn, kProjDrop, kProjPath, kFc1Drop, kFc2Drop, kFc2Path, kPerBlock };
constexpr int kSites = int(Model::kDropoutSites);

// The config's size fields and the batch, as the sizing errors name them.
std::string size_fields(const ViTConfig& c, int64_t batch) {
  std::string s = "embed_dim " + std::to_string(c.embed_dim) + ", depth " + std::to_string(c.depth) + ", num_heads " +
                  std::to_string(c.num_heads) + ", head_dim " + std::to_string(c.head_dim) + ", mlp_hidden " +
                  std::to_string(c.mlp_hidden) + ", mlp_ratio " + std::to_string(c.mlp_ratio) + ", img_size " +
                  std::to_string(c.img_size) + ", patch_size " + std::to_string(c.patch_size) + ", in_chans " +
                  std::to_string(c.in_chans) + ", num_classes " + std::to_string(c.num_classes);
  if (c.pre_logits > 0) s += ", pre_logits " + std::to_string(c.pre_logits);
  if (!c.head_mlp.empty()) {
    s += ", head_mlp [";
    for (size_t j = 0; j < c.head_mlp.size(); ++j) s += (j ? ", " : "") + std::to_string(c.head_mlp[j]);
    s += "]";
  }
  return s + ", batch size " + std::to_string(batch);
}

[[noreturn]] void too_large(const ViTConfig& c, int64_t batch, const std::string& what) {
  throw Error("Model: config " + c.name + " (" + size_fields(c, batch) + "): " + what);
}

// a * b and a + b for the sizing; an overflow of int64 is refused naming the config.
struct Sizing {
  const ViTConfig& c;
  int64_t batch;
  int64_t mul(int64_t a, int64_t b, const char* what) const {
    int64_t r;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r))
      too_large(c, batch, std::string("the size of ") + what + " overflows 64 bits");
    return r;
  }
  int64_t add(int64_t a, int64_t b, const char* what) const {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
      too_large(c, batch, std::string("the size of ") + what + " overflows 64 bits");
    return r;
  }
  // A derived width the ops take as int.
  int64_t fits_int(int64_t v, const char* what) const {
    if (v < 0 || v > int64_t(INT32_MAX))
      too_large(c, batch, std::string(what) + " is " + std::to_string(v) + ", more than " + std::to_string(INT32_MAX));
    return v;
  }
};
int block_site(int l, BlockSite s) { return kBlockSites + l * kPerBlock + s; }

// Rows [begin, begin + count) of a 2-D tensor, as a [count, cols] view.
Tensor rows(const Tensor& t, int64_t begin, int64_t count) {
  const int64_t cols = t.size(1);
  return Tensor::view(static_cast<char*>(t.data()) + size_t(begin * cols) * dtype_size(t.dtype()), {count, cols},
                      t.dtype(), t.device());
}

}  // namespace

Model::Model(const ViTConfig& config, Backend& backend, int max_batch)
    : Model(config, backend, max_batch, backend.compute_dtype()) {}

Model::Model(const ViTConfig& config, Backend& backend, int max_batch, DType dtype, int64_t arena_multiple, Use use)
    : cfg_(config), be_(backend), max_batch_(max_batch), dtype_(dtype), use_(use) {
  if (use != Use::Training && use != Use::Inference) throw Error("Model: use must be Training or Inference");
  cfg_.validate();
  if (max_batch <= 0) throw Error("Model: batch size must be positive, got " + std::to_string(max_batch));
  if (arena_multiple < 1 || arena_multiple > (int64_t(1) << 20))
    throw Error("Model: arena_multiple must be in [1, 2^20], got " + std::to_string(arena_multiple));
  arena_multiple_ = std::lcm(int64_t(64), arena_multiple);
  if (int64_t(cfg_.depth) * kPerBlock + kBlockSites > kSites)
    throw Error("Model: depth too large for the dropout stream plan");
  plan();  // every element and byte count in 64 bits, overflow refused naming the config
  // The whole footprint, before anything is allocated: a config or batch that needs more than
  // this host's physical memory is refused naming its size fields and the estimate.
  const Sizing z{cfg_, max_batch_};
  const bool separate_master = dtype_ != DType::F32;
  // Parameter gradients are fp32 whatever the compute dtype (fp64 for gradient checks):
  // bf16 gradients would lose the small updates that accumulate over the batch.
  const DType grad_dtype = dtype_ == DType::F64 ? DType::F64 : DType::F32;
  const int64_t pbytes =
      z.add(z.mul(arena_size_, int64_t(dtype_size(dtype_)), "the parameters"), 255, "the parameters") / 256 * 256;
  const int64_t param_total =
      z.add(pbytes, separate_master ? z.mul(arena_size_, 4, "the master weights") : 0, "the parameters");
  const int64_t grad_bytes =
      use_ == Use::Training ? z.mul(arena_size_, int64_t(dtype_size(grad_dtype)), "the gradients") : 0;
  const int64_t total = z.add(z.add(param_total, grad_bytes, "the model"), act_bytes_, "the model");
  const uint64_t memory = be_.memory_capacity();
  if (uint64_t(total) > memory)
    too_large(cfg_, max_batch_,
              "needs an estimated " + std::to_string(total) + " bytes (parameters " + std::to_string(param_total) +
                  ", gradients " + std::to_string(grad_bytes) + ", activations " + std::to_string(act_bytes_) +
                  "), more than the " + be_.name() + " backend's memory of " + std::to_string(memory) + " bytes");
  param_mem_ = be_.alloc(size_t(param_total));
  if (grad_bytes > 0) grad_mem_ = be_.alloc(size_t(grad_bytes));
  act_mem_ = be_.alloc(size_t(act_bytes_));
  const Device dev = be_.device();
  params_ = Tensor::view(param_mem_, {arena_size_}, dtype_, dev);
  master_ =
      separate_master ? Tensor::view(static_cast<char*>(param_mem_) + pbytes, {arena_size_}, DType::F32, dev) : params_;
  if (grad_mem_) grads_ = Tensor::view(grad_mem_, {arena_size_}, grad_dtype, dev);
  for (const ParamSlot& s : param_slots_) {
    *s.param = pview(params_, param_specs_[s.spec]);
    if (grad_mem_) *s.grad = pview(grads_, param_specs_[s.spec]);
  }
  bind_activations();  // at batch 0 until the first forward
  state_ = static_cast<StepState*>(be_.alloc(sizeof(StepState)));
  const StepState initial{};
  be_.copy_to_device(state_, &initial, sizeof initial);
}

Model::~Model() {
  be_.release(param_mem_);
  if (grad_mem_) be_.release(grad_mem_);
  be_.release(act_mem_);
  be_.release(state_);
}

// ---- planning: the parameter table (timm names and shapes) and the activation table -----
// Each entry also names the typed field(s) that view it, bound once the arenas exist.
void Model::plan() {
  const ViTConfig& c = cfg_;
  // The derived widths in 64 bits (config.h's helpers compute them in int): each must fit the
  // int the ops take, and every product below is checked.
  const Sizing z{c, max_batch_};
  const int64_t grid = c.patch_size > 0 ? c.img_size / c.patch_size : 0;
  const int64_t Np = z.fits_int(z.mul(grid, grid, "the patch grid"), "the number of patches (img_size / patch_size)^2");
  const int64_t prefix = c.num_prefix_tokens();  // cls, DeiT's distillation token
  const int64_t T = z.fits_int(Np + prefix, "the number of tokens");
  const int64_t D = c.embed_dim;
  const int64_t A = z.fits_int(
      z.mul(c.num_heads, c.head_dim > 0 ? c.head_dim : (c.num_heads > 0 ? c.embed_dim / c.num_heads : 0), "attn_dim"),
      "the attention width num_heads * head_dim");
  const float hm = c.mlp_hidden > 0 ? float(c.mlp_hidden) : c.mlp_ratio * float(c.embed_dim) + 0.5f;
  if (!(hm >= 0.f && hm < 2147483648.f))
    too_large(c, max_batch_, "the MLP width mlp_ratio * embed_dim is " + std::to_string(hm) + ", more than 2147483647");
  const int64_t Hm = c.mlp_hidden_dim();
  const int64_t PD = z.fits_int(z.mul(c.in_chans, z.mul(c.patch_size, c.patch_size, "patch_dim"), "patch_dim"),
                                "the patch width in_chans * patch_size^2");
  const int64_t pooled = z.fits_int(c.pool == Pool::Flatten ? z.mul(T, D, "the flattened tokens") : D,
                                    "the pooled width (tokens * embed_dim)");
  z.mul(3, A, "the qkv width");
  const size_t nmlp = c.head_mlp.size();
  using Init = ParamSpec::Init;
  ParamTensors &p = p_, &g = g_;
  p.blocks.resize(c.depth);
  g.blocks.resize(c.depth);
  p.head.mlp.resize(nmlp);
  g.head.mlp.resize(nmlp);
  // Every tensor starts on a multiple of 16 elements (32 bytes in bf16): vector loads and
  // cuBLASLt's fast paths need aligned operands. The gaps stay zero.
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool decay, Init init, Tensor& pf, Tensor& gf) {
    ParamSpec s{name, shape, z.add(arena_size_, 15, "the parameters") / 16 * 16, 1, decay, init};
    for (int64_t d : shape) s.numel = z.mul(s.numel, d, "the parameters");
    num_params_ = z.add(num_params_, s.numel, "the parameters");
    arena_size_ = z.add(s.offset, s.numel, "the parameters");
    param_slots_.push_back({param_specs_.size(), &pf, &gf});
    param_specs_.push_back(s);
  };
  add("patch_embed.proj.weight", {D, c.in_chans, c.patch_size, c.patch_size}, true, Init::TruncNormal, p.patch_w,
      g.patch_w);
  add("patch_embed.proj.bias", {D}, false, Init::Zeros, p.patch_b, g.patch_b);
  if (c.class_token) add("cls_token", {1, 1, D}, false, Init::ClsNormal, p.cls_token, g.cls_token);
  // timm's VisionTransformerDistilled: trunc_normal_(dist_token, std=.02), no weight decay.
  if (c.distilled) add("dist_token", {1, 1, D}, false, Init::TruncNormal, p.dist_token, g.dist_token);
  add("pos_embed", {1, T, D}, false, Init::TruncNormal, p.pos_embed, g.pos_embed);
  for (int l = 0; l < c.depth; ++l) {
    BlockParams &pb = p.blocks[l], &gb = g.blocks[l];
    add(blk(l, "norm1.weight"), {D}, false, Init::Ones, pb.norm1_w, gb.norm1_w);
    block_offset_.push_back(param_specs_.back().offset);
    add(blk(l, "norm1.bias"), {D}, false, Init::Zeros, pb.norm1_b, gb.norm1_b);
    add(blk(l, "attn.qkv.weight"), {3 * A, D}, true, Init::TruncNormal, pb.qkv_w, gb.qkv_w);
    if (c.qkv_bias) add(blk(l, "attn.qkv.bias"), {3 * A}, false, Init::Zeros, pb.qkv_b, gb.qkv_b);
    add(blk(l, "attn.proj.weight"), {D, A}, true, Init::TruncNormal, pb.proj_w, gb.proj_w);
    add(blk(l, "attn.proj.bias"), {D}, false, Init::Zeros, pb.proj_b, gb.proj_b);
    add(blk(l, "norm2.weight"), {D}, false, Init::Ones, pb.norm2_w, gb.norm2_w);
    add(blk(l, "norm2.bias"), {D}, false, Init::Zeros, pb.norm2_b, gb.norm2_b);
    add(blk(l, "mlp.fc1.weight"), {Hm, D}, true, Init::TruncNormal, pb.fc1_w, gb.fc1_w);
    add(blk(l, "mlp.fc1.bias"), {Hm}, false, Init::Zeros, pb.fc1_b, gb.fc1_b);
    add(blk(l, "mlp.fc2.weight"), {D, Hm}, true, Init::TruncNormal, pb.fc2_w, gb.fc2_w);
    add(blk(l, "mlp.fc2.bias"), {D}, false, Init::Zeros, pb.fc2_b, gb.fc2_b);
  }
  // timm: norm before token pooling, fc_norm after average pooling.
  HeadParams &ph = p.head, &gh = g.head;
  const std::string final_norm = c.pool == Pool::Avg ? "fc_norm" : "norm";
  add(final_norm + ".weight", {D}, false, Init::Ones, ph.norm_w, gh.norm_w);
  head_offset_ = param_specs_.back().offset;
  add(final_norm + ".bias", {D}, false, Init::Zeros, ph.norm_b, gh.norm_b);
  int64_t feat = pooled;
  for (size_t j = 0; j < nmlp; ++j) {
    const std::string n = "head_mlp." + std::to_string(j);
    add(n + ".weight", {c.head_mlp[j], feat}, true, Init::TruncNormal, ph.mlp[j].w, gh.mlp[j].w);
    add(n + ".bias", {c.head_mlp[j]}, false, Init::Zeros, ph.mlp[j].b, gh.mlp[j].b);
    feat = c.head_mlp[j];
  }
  if (c.pre_logits > 0) {
    add("pre_logits.fc.weight", {c.pre_logits, feat}, true, Init::TruncNormal, ph.pre_logits.w, gh.pre_logits.w);
    add("pre_logits.fc.bias", {c.pre_logits}, false, Init::Zeros, ph.pre_logits.b, gh.pre_logits.b);
    feat = c.pre_logits;
  }
  add("head.weight", {c.num_classes, feat}, true, Init::TruncNormal, ph.fc.w, gh.fc.w);
  add("head.bias", {c.num_classes}, false, Init::Zeros, ph.fc.b, gh.fc.b);
  if (c.distilled) {
    add("head_dist.weight", {c.num_classes, feat}, true, Init::TruncNormal, ph.dist.w, gh.dist.w);
    add("head_dist.bias", {c.num_classes}, false, Init::Zeros, ph.dist.b, gh.dist.b);
  }
  arena_size_ = z.mul(z.add(arena_size_, arena_multiple_ - 1, "the parameters") / arena_multiple_, arena_multiple_,
                      "the parameters");

  // Activations, at the maximum batch. Gradient buffers (d_*) are shared by all blocks.
  const int64_t B = max_batch_, H = c.num_heads;
  const DType stats = dtype_ == DType::F64 ? DType::F64 : DType::F32;
  ActTensors& a = a_;
  a.res.resize(c.depth + 1);
  a.blocks.resize(c.depth);
  a.head.mlp.resize(nmlp);
  // shared: the entry's name in every block ("ln1", ...; "res" for the residual stream): a
  // Use::Inference model gives all blocks the first block's buffer (forward reads only the
  // previous block's mid and fc2 while it writes the next block's res and ln1, other buffers).
  const bool inference = use_ == Use::Inference;
  std::map<std::string, int64_t> shared_at;  // shared name -> its bytes' offset
  auto act = [&](const std::string& name, std::vector<int64_t> shape, DType dt, Tensor& field,
                 const std::string& shared = "") {
    ActivationSpec s{name, shape, dt, act_bytes_, 1};
    for (int64_t d : shape) s.numel = z.mul(s.numel, d, "the activations");
    const bool reuse = inference && !shared.empty() && shared_at.count(shared);
    if (reuse) {
      s.offset = shared_at[shared];
    } else {
      if (inference && !shared.empty()) shared_at[shared] = s.offset;
      act_bytes_ =
          z.add(act_bytes_,
                z.add(z.mul(s.numel, int64_t(dtype_size(dt)), "the activations"), 255, "the activations") / 256 * 256,
                "the activations");
    }
    act_slots_.push_back({act_specs_.size(), &field});
    act_specs_.push_back(s);
    act_shared_.push_back(inference && !shared.empty());
  };
  act("input", {B, c.in_chans, c.img_size, c.img_size}, DType::U8, a.input);
  act("labels", {B}, DType::I32, a.labels);
  act("losses", {B}, DType::F32, a.losses);
  act("hits", {B}, DType::I32, a.hits);
  act("cols", {z.mul(B, Np, "the patch columns"), PD}, dtype_, a.cols);
  act("patches", {B, Np, D}, dtype_, a.patches);
  for (int l = 0; l <= c.depth; ++l)
    act("res." + std::to_string(l), {B, T, D}, dtype_, a.res[l], "res");  // block inputs
  for (int l = 0; l < c.depth; ++l) {
    BlockActs& x = a.blocks[l];
    auto block_act = [&](const char* what, std::vector<int64_t> shape, DType dt, Tensor& field) {
      act(blk(l, what), std::move(shape), dt, field, what);
    };
    block_act("ln1", {B, T, D}, dtype_, x.ln1);
    block_act("ln1.mean", {B, T}, stats, x.ln1_mean);
    block_act("ln1.rstd", {B, T}, stats, x.ln1_rstd);
    block_act("qkv", {B, T, 3 * A}, dtype_, x.qkv);  // [B, T, 3, H, d]: attention reads q, k, v in place
    block_act("lse", {B, H, T}, stats, x.lse);
    block_act("att", {B, T, A}, dtype_, x.att);
    block_act("proj", {B, T, D}, dtype_, x.proj);
    block_act("mid", {B, T, D}, dtype_, x.mid);  // res + proj: the input of norm2
    block_act("ln2", {B, T, D}, dtype_, x.ln2);
    block_act("ln2.mean", {B, T}, stats, x.ln2_mean);
    block_act("ln2.rstd", {B, T}, stats, x.ln2_rstd);
    block_act("fc1.pre", {B, T, Hm}, dtype_, x.fc1_pre);
    block_act("fc1", {B, T, Hm}, dtype_, x.fc1);
    if (c.mlp_gelu_out) block_act("fc2.pre", {B, T, D}, dtype_, x.fc2_pre);
    block_act("fc2", {B, T, D}, dtype_, x.fc2);
  }
  HeadActs& h = a.head;
  act("norm", {B, T, D}, dtype_, h.norm);
  act("norm.mean", {B, T}, stats, h.norm_mean);
  act("norm.rstd", {B, T}, stats, h.norm_rstd);
  // Token pooling keeps every prefix token's row, token-major: [cls rows; dist rows].
  const int64_t pooled_rows = c.pool == Pool::Token ? prefix : 1;
  act("pooled", {z.mul(B, pooled_rows, "the pooled features"), D}, dtype_, h.pooled);
  act("fc_norm", {B, D}, dtype_, h.fc_norm);
  act("fc_norm.mean", {B}, stats, h.fc_norm_mean);
  act("fc_norm.rstd", {B}, stats, h.fc_norm_rstd);
  int64_t feat_max = pooled;
  for (size_t j = 0; j < nmlp; ++j) {
    act("head_mlp." + std::to_string(j) + ".pre", {B, c.head_mlp[j]}, dtype_, h.mlp[j].pre);
    act("head_mlp." + std::to_string(j), {B, c.head_mlp[j]}, dtype_, h.mlp[j].out);
    feat_max = std::max<int64_t>(feat_max, c.head_mlp[j]);
  }
  if (c.pre_logits > 0) {
    act("pre_logits.pre", {B, c.pre_logits}, dtype_, h.pre_logits.pre);
    act("pre_logits", {B, c.pre_logits}, dtype_, h.pre_logits.out);
    feat_max = std::max<int64_t>(feat_max, c.pre_logits);
  }
  if (c.distilled) {
    act("head.logits", {B, c.num_classes}, dtype_, h.head_logits);
    act("head_dist.logits", {B, c.num_classes}, dtype_, h.dist_logits);
  }
  act("logits", {B, c.num_classes}, dtype_, h.logits);
  if (inference) return;  // no backward pass: no gradient scratch
  // Gradient scratch.
  GradActs& d = a.d;
  act("d_logits", {B, c.num_classes}, dtype_, d.logits);
  if (c.distilled) act("d_logits_dist", {B, c.num_classes}, dtype_, d.logits_dist);
  act("d_head.a", {z.mul(B, pooled_rows, "the head gradients"), feat_max}, dtype_, d.head_a);
  act("d_head.b", {z.mul(B, pooled_rows, "the head gradients"), feat_max}, dtype_, d.head_b);
  act("d_pooled", {B, D}, dtype_, d.pooled);
  act("d_res", {B, T, D}, dtype_, d.res);
  act("d_branch", {B, T, D}, dtype_, d.branch);
  act("d_ln", {B, T, D}, dtype_, d.ln);
  act("d_fc1", {B, T, Hm}, dtype_, d.fc1);
  act("d_att", {B, T, A}, dtype_, d.att);
  act("d_qkv", {B, T, 3 * A}, dtype_, d.qkv);
  act("d_patches", {B, Np, D}, dtype_, d.patches);
}

Tensor Model::act_view(const ActivationSpec& s) const {
  int64_t shape[kMaxDims];
  const int nd = int(s.shape.size());
  for (int i = 0; i < nd; ++i) shape[i] = s.shape[i];
  // Batch-major: the first batch_ rows (for cols, batch_ * Np rows).
  shape[0] = s.shape[0] / max_batch_ * batch_;
  return Tensor::view(static_cast<char*>(act_mem_) + s.offset, shape, nd, s.dtype, be_.device());
}

void Model::bind_activations() {
  for (const ActSlot& s : act_slots_) *s.view = act_view(act_specs_[s.spec]);
}

Tensor Model::activation(const std::string& name) const {
  // The table is small (~20 per block); a linear scan keeps the plan a plain vector.
  for (size_t i = 0; i < act_specs_.size(); ++i) {
    if (act_specs_[i].name != name) continue;
    if (act_shared_[i])
      throw Error("Model (" + cfg_.name + ", built for inference): activation '" + name +
                  "' is not kept (the blocks share their buffers); build the Model with Use::Training");
    return act_view(act_specs_[i]);
  }
  throw Error("Model: no activation named '" + name + "'");
}

void Model::need_training(const char* what) const {
  if (use_ != Use::Training)
    throw Error(std::string("Model (") + cfg_.name + ", built for inference): " + what +
                " needs a Model built with Use::Training");
}

const ParamSpec& Model::param_spec(const std::string& name) const {
  for (const ParamSpec& s : param_specs_)
    if (s.name == name) return s;
  throw Error("Model: no parameter named '" + name + "'");
}

Tensor Model::pview(const Tensor& arena, const ParamSpec& s) const {
  void* data = static_cast<char*>(arena.data()) + s.offset * dtype_size(arena.dtype());
  // The conv weight is used as a 2-D matrix [D, C*P*P] by the ops.
  if (s.name == "patch_embed.proj.weight")
    return Tensor::view(data, {s.shape[0], s.numel / s.shape[0]}, arena.dtype(), arena.device());
  int64_t shape[kMaxDims];
  const int nd = int(s.shape.size());
  for (int i = 0; i < nd; ++i) shape[i] = s.shape[i];
  return Tensor::view(data, shape, nd, arena.dtype(), arena.device());
}

Tensor Model::param(const std::string& name) const { return pview(params_, param_spec(name)); }
Tensor Model::grad(const std::string& name) const {
  need_training("grad()");
  return pview(grads_, param_spec(name));
}

// The input of the head: fc_norm (average pooling), the cls token's features (token
// pooling) or all tokens' features flattened (Keras Flatten).
Tensor Model::features() const {
  const HeadActs& h = a_.head;
  if (cfg_.pool == Pool::Avg) return h.fc_norm;
  if (cfg_.pool == Pool::Token) return h.pooled;
  return h.norm.reshape({batch_, int64_t(cfg_.num_tokens()) * cfg_.embed_dim});
}

DropoutSpec Model::drop(float p, int site) const {
  DropoutSpec s;
  s.p = train_ ? p : 0.f;
  s.seed = seed_;
  s.stream = uint64_t(site);
  s.stream_offset = &state_->dropout_offset;  // step · kSites, where the op runs
  return s;
}

// ---- initialisation ---------------------------------------------------------------------
void Model::init(uint64_t seed) {
  std::vector<float> host(arena_size_, 0.f);
  for (const ParamSpec& s : param_specs_) {
    SplitMix rng{seed ^ std::hash<std::string>{}(s.name)};
    float* w = host.data() + s.offset;
    for (int64_t i = 0; i < s.numel; ++i) {
      switch (s.init) {
        case ParamSpec::Init::TruncNormal: w[i] = float(rng.trunc_normal(0.02)); break;
        case ParamSpec::Init::Zeros: w[i] = 0.f; break;
        case ParamSpec::Init::Ones: w[i] = 1.f; break;
        case ParamSpec::Init::ClsNormal: w[i] = float(rng.normal() * 1e-6); break;
      }
    }
  }
  set_master(host);
}

std::vector<float> Model::get_master() const {
  std::vector<float> host(arena_size_);
  be_.copy_to_host(host.data(), master_.data(), host.size() * sizeof(float));
  return host;
}

void Model::set_master(const std::vector<float>& host) {
  if (int64_t(host.size()) != arena_size_)
    throw Error("Model: set_master got " + std::to_string(host.size()) + " values for an arena of " +
                std::to_string(arena_size_));
  be_.copy_to_device(master_.data(), host.data(), host.size() * sizeof(float));
  sync_params_from_master();
}

void Model::sync_params_from_master() {
  if (params_.data() != master_.data()) be_.copy(master_, params_);
}

void Model::zero_grad() {
  need_training("zero_grad()");
  be_.zero(grads_);
}

// ---- forward ------------------------------------------------------------------------------
Tensor Model::forward(const Tensor& images, bool train, uint64_t seed, uint64_t step) {
  const ViTConfig& c = cfg_;
  if (images.ndim() != 4 || images.size(1) != c.in_chans || images.size(2) != c.img_size ||
      images.size(3) != c.img_size)
    throw Error("Model::forward: images must be [B, " + std::to_string(c.in_chans) + ", " + std::to_string(c.img_size) +
                ", " + std::to_string(c.img_size) + "], got " + images.shape_str());
  if (images.dtype() != DType::U8) throw Error("Model::forward: images must be u8");
  if (train) need_training("a training forward (dropout)");
  set_batch(images.size(0));
  be_.copy_to_device(a_.input.data(), images.data(), images.nbytes());
  if (train) {
    offset_host_ = step * kSites;
    be_.copy_to_device(&state_->dropout_offset, &offset_host_, sizeof offset_host_);
  }
  forward_staged(train, seed);
  return a_.head.logits;
}

void Model::set_batch(int64_t n) {
  if (n < 1 || n > max_batch_)
    throw Error("Model: batch " + std::to_string(n) + " is outside [1, " + std::to_string(max_batch_) + "]");
  batch_ = n;
  bind_activations();
}

void Model::forward_staged(bool train, uint64_t seed) {
  const ViTConfig& c = cfg_;
  if (batch_ == 0) throw Error("Model::forward_staged: call set_batch first");
  if (train) need_training("a training forward (dropout)");
  train_ = train;
  seed_ = seed;
  const float eps = c.ln_eps;
  const Act gelu = gelu_act(c.gelu);
  const ParamTensors& p = p_;
  const ActTensors& a = a_;
  const Tensor none;

  be_.patch_extract(a.input, ImageLayout::NCHW, c.patch_size, c.pixel_mean.data(), c.pixel_std.data(), a.cols);
  be_.linear_forward(a.cols, p.patch_w, p.patch_b, Act::None, none, a.patches);
  be_.tokens_forward(a.patches, p.cls_token, p.dist_token, p.pos_embed, a.res[0]);
  be_.dropout(a.res[0], a.res[0], drop(c.drop_rate, kPosDrop));

  for (int l = 0; l < c.depth; ++l) {
    const BlockParams& w = p.blocks[l];
    const BlockActs& x = a.blocks[l];
    const float dpr = c.depth > 1 ? c.drop_path_rate * l / (c.depth - 1) : c.drop_path_rate;
    // norm1, fused with the residual add that ends the previous block: res = mid + fc2
    if (l == 0)
      be_.layernorm_forward(a.res[0], none, none, w.norm1_w, w.norm1_b, eps, x.ln1, x.ln1_mean, x.ln1_rstd);
    else
      be_.layernorm_forward(a.blocks[l - 1].mid, a.blocks[l - 1].fc2, a.res[l], w.norm1_w, w.norm1_b, eps, x.ln1,
                            x.ln1_mean, x.ln1_rstd);
    // attention
    be_.linear_forward(x.ln1, w.qkv_w, w.qkv_b, Act::None, none, x.qkv);
    be_.attention_forward(x.qkv, int(c.num_heads), c.attn_scale(), drop(c.attn_drop_rate, block_site(l, kAttn)), x.att,
                          x.lse);
    be_.linear_forward(x.att, w.proj_w, w.proj_b, Act::None, none, x.proj);
    be_.dropout(x.proj, x.proj, drop(c.drop_rate, block_site(l, kProjDrop)));
    be_.drop_path(x.proj, x.proj, drop(dpr, block_site(l, kProjPath)));
    // norm2 on mid = res + proj
    be_.layernorm_forward(a.res[l], x.proj, x.mid, w.norm2_w, w.norm2_b, eps, x.ln2, x.ln2_mean, x.ln2_rstd);
    // MLP
    be_.linear_forward(x.ln2, w.fc1_w, w.fc1_b, gelu, x.fc1_pre, x.fc1, drop(c.drop_rate, block_site(l, kFc1Drop)));
    be_.linear_forward(x.fc1, w.fc2_w, w.fc2_b, c.mlp_gelu_out ? gelu : Act::None, x.fc2_pre, x.fc2);
    be_.dropout(x.fc2, x.fc2, drop(c.drop_rate, block_site(l, kFc2Drop)));
    be_.drop_path(x.fc2, x.fc2, drop(dpr, block_site(l, kFc2Path)));
  }

  // final norm and pooling; res[L] = mid + fc2 of the last block
  const int L = c.depth;
  const BlockActs& last = a.blocks[L - 1];
  const HeadParams& hp = p.head;
  const HeadActs& h = a.head;
  if (c.pool == Pool::Avg) {
    be_.add(last.mid, last.fc2, a.res[L]);
    be_.pool_forward(a.res[L], Pool::Avg, c.num_prefix_tokens(), h.pooled);
    be_.layernorm_forward(h.pooled, none, none, hp.norm_w, hp.norm_b, eps, h.fc_norm, h.fc_norm_mean, h.fc_norm_rstd);
  } else {
    be_.layernorm_forward(last.mid, last.fc2, a.res[L], hp.norm_w, hp.norm_b, eps, h.norm, h.norm_mean, h.norm_rstd);
    if (c.pool == Pool::Token) be_.pool_forward(h.norm, Pool::Token, c.num_prefix_tokens(), h.pooled);
  }
  // head: [dropout, Dense+GELU+dropout...], [pre-logits Linear+tanh], classifier
  Tensor feat = features();
  be_.dropout(feat, feat, drop(c.head_drop_rate, kHeadDrop));
  for (size_t j = 0; j < hp.mlp.size(); ++j) {
    be_.linear_forward(feat, hp.mlp[j].w, hp.mlp[j].b, gelu, h.mlp[j].pre, h.mlp[j].out,
                       drop(c.head_drop_rate, kHeadMlp0 + int(j)));
    feat = h.mlp[j].out;
  }
  if (c.pre_logits > 0) {
    be_.linear_forward(feat, hp.pre_logits.w, hp.pre_logits.b, Act::Tanh, h.pre_logits.pre, h.pre_logits.out);
    feat = h.pre_logits.out;
  }
  if (!c.distilled) {
    be_.linear_forward(feat, hp.fc.w, hp.fc.b, Act::None, none, h.logits);
    return;
  }
  // DeiT: head on the cls token, head_dist on the distillation token, logits = their mean
  // (timm's VisionTransformerDistilled at inference and in training without a teacher).
  be_.linear_forward(rows(feat, 0, batch_), hp.fc.w, hp.fc.b, Act::None, none, h.head_logits);
  be_.linear_forward(rows(feat, batch_, batch_), hp.dist.w, hp.dist.b, Act::None, none, h.dist_logits);
  be_.add(h.head_logits, h.dist_logits, h.logits, 0.5f);
}

// softmax_xent on the logits, or, distilling, on the cls head with (1 − α) and distill_loss on the
// distillation head (head_dist, or the one head). dscale 0: no gradients (evaluation).
void Model::loss_ops(float smoothing, float dscale, const DistillTarget* distill) {
  const ActTensors& a = a_;
  const HeadActs& h = a.head;
  const bool grads = dscale > 0.f;
  split_heads_ = false;
  if (!distill) {
    // A distilled model's logits are the mean of its heads': each head's gradient is half of it.
    const float half = cfg_.distilled ? 0.5f : 1.f;
    be_.softmax_xent(h.logits, a.labels, smoothing, dscale * half, a.losses, grads ? a.d.logits : Tensor{}, a.hits);
    return;
  }
  if (!(distill->alpha >= 0.f && distill->alpha <= 1.f))
    throw Error("Model: distillation alpha must be in [0, 1], got " + std::to_string(distill->alpha));
  const bool two_heads = cfg_.distilled;
  const Tensor& cls_logits = two_heads ? h.head_logits : h.logits;
  const Tensor& kd_logits = two_heads ? h.dist_logits : h.logits;
  be_.softmax_xent(cls_logits, a.labels, smoothing, (1.f - distill->alpha) * dscale, a.losses,
                   grads ? a.d.logits : Tensor{}, a.hits);
  const Tensor d_kd = !grads ? Tensor{} : two_heads ? a.d.logits_dist : a.d.logits;
  be_.distill_loss(kd_logits, distill->teacher_logits, distill->kind, distill->tau, distill->alpha, dscale, a.losses,
                   d_kd, /*accumulate=*/!two_heads);
  split_heads_ = two_heads;
}

void Model::loss_staged(float smoothing, bool train, int64_t grad_batch, bool accumulate,
                        const DistillTarget* distill) {
  if (batch_ == 0) throw Error("Model::loss_staged: call forward first");
  if (grad_batch < 0) throw Error("Model::loss_staged: grad_batch must be >= 0, got " + std::to_string(grad_batch));
  if (distill && !train) throw Error("Model::loss_staged: distillation is a training loss (train = true)");
  if (train) need_training("a training loss");
  loss_ops(smoothing, train ? 1.f / float(grad_batch > 0 ? grad_batch : batch_) : 0.f, distill);
  be_.step_metrics(a_.losses, a_.hits, state_, /*commit=*/!train, accumulate);
}

StepStats Model::loss(const int32_t* labels, float smoothing, bool backward_ready, const DistillTarget* distill) {
  if (batch_ == 0) throw Error("Model::loss: call forward first");
  for (int64_t b = 0; b < batch_; ++b)
    if (labels[b] < 0 || labels[b] >= cfg_.num_classes)
      throw Error("Model::loss: label " + std::to_string(labels[b]) + " of sample " + std::to_string(b) +
                  " is outside [0, " + std::to_string(cfg_.num_classes) + ")");
  if (backward_ready) need_training("the loss's gradient (backward_ready)");
  const ActTensors& a = a_;
  be_.copy_to_device(a.labels.data(), labels, size_t(batch_) * sizeof(int32_t));
  loss_ops(smoothing, backward_ready ? 1.f / float(batch_) : 0.f, distill);
  std::vector<float> losses(batch_);
  std::vector<int32_t> hits(batch_);
  be_.copy_to_host(losses.data(), a.losses.data(), losses.size() * sizeof(float));
  be_.copy_to_host(hits.data(), a.hits.data(), hits.size() * sizeof(int32_t));
  StepStats st;
  st.count = batch_;
  for (int64_t b = 0; b < batch_; ++b) {
    st.loss += losses[b];
    st.top1 += hits[b] & 1;
    st.top5 += (hits[b] >> 1) & 1;
  }
  st.loss /= double(batch_);
  return st;
}

// ---- backward: forward's list reversed ------------------------------------------------
void Model::backward() {
  const ViTConfig& c = cfg_;
  need_training("backward()");
  if (batch_ == 0) throw Error("Model::backward: call forward and loss first");
  const int64_t B = batch_;
  const int L = c.depth;
  const Act gelu = gelu_act(c.gelu);
  const ParamTensors &p = p_, &g = g_;
  const ActTensors& a = a_;
  const GradActs& d = a.d;
  const HeadParams &hp = p.head, &hg = g.head;
  const HeadActs& h = a.head;
  const Tensor none;

  // head, from the logits back to the pooled features. d.head_a / d.head_b alternate as dy/dx.
  const int nmlp = int(c.head_mlp.size());
  const Tensor pooled_feat = features();
  const Tensor last_feat = nmlp > 0 ? h.mlp[nmlp - 1].out : pooled_feat;  // the input of pre-logits
  bool use_a = true;
  auto scratch = [&](int64_t width) {
    const Tensor& t = use_a ? d.head_a : d.head_b;
    use_a = !use_a;
    return Tensor::view(t.data(), {B, width}, t.dtype(), t.device());
  };
  Tensor dy = d.logits;
  const Tensor head_in = c.pre_logits > 0 ? h.pre_logits.out : last_feat;
  Tensor dx;
  if (c.distilled) {  // both heads, into the rows of the pooled tokens they read: [d cls; d dist]
    dx = scratch(head_in.size(1));
    dx = Tensor::view(dx.data(), {2 * B, head_in.size(1)}, dx.dtype(), dx.device());
    be_.linear_backward(d.logits, rows(head_in, 0, B), hp.fc.w, Act::None, none, rows(dx, 0, B), hg.fc.w, hg.fc.b);
    be_.linear_backward(split_heads_ ? d.logits_dist : d.logits, rows(head_in, B, B), hp.dist.w, Act::None, none,
                        rows(dx, B, B), hg.dist.w, hg.dist.b);
  } else {
    dx = scratch(head_in.size(1));
    be_.linear_backward(dy, head_in, hp.fc.w, Act::None, none, dx, hg.fc.w, hg.fc.b);
  }
  dy = dx;
  if (c.pre_logits > 0) {
    dx = scratch(last_feat.size(1));
    be_.linear_backward(dy, last_feat, hp.pre_logits.w, Act::Tanh, h.pre_logits.pre, dx, hg.pre_logits.w,
                        hg.pre_logits.b);
    dy = dx;
  }
  for (int j = nmlp - 1; j >= 0; --j) {
    const Tensor in = j > 0 ? h.mlp[j - 1].out : pooled_feat;
    dx = scratch(in.size(1));
    be_.linear_backward(dy, in, hp.mlp[j].w, gelu, h.mlp[j].pre, dx, hg.mlp[j].w, hg.mlp[j].b,
                        drop(c.head_drop_rate, kHeadMlp0 + j));
    dy = dx;
  }
  be_.dropout(dy, dy, drop(c.head_drop_rate, kHeadDrop));

  // final norm and pooling, into d.res = d res[L]
  be_.zero(d.res);
  if (c.pool == Pool::Avg) {
    be_.zero(d.pooled);
    be_.layernorm_backward(dy, h.pooled, hp.norm_w, h.fc_norm_mean, h.fc_norm_rstd, d.pooled, hg.norm_w, hg.norm_b);
    be_.pool_backward(d.pooled, Pool::Avg, c.num_prefix_tokens(), d.res);
  } else {
    const Tensor& d_norm = d.ln;
    if (c.pool == Pool::Token)
      be_.pool_backward(dy, Pool::Token, c.num_prefix_tokens(), d_norm);
    else
      be_.copy(dy, d_norm);
    be_.layernorm_backward(d_norm, a.res[L], hp.norm_w, h.norm_mean, h.norm_rstd, d.res, hg.norm_w, hg.norm_b);
  }
  if (grads_ready_) grads_ready_(head_offset_);

  // blocks in reverse. d.res holds d res[l+1] = d mid + d fc2 (the residual carries it).
  for (int l = L - 1; l >= 0; --l) {
    const BlockParams &w = p.blocks[l], &gw = g.blocks[l];
    const BlockActs& x = a.blocks[l];
    const float dpr = c.depth > 1 ? c.drop_path_rate * l / (c.depth - 1) : c.drop_path_rate;
    // The gradient entering a branch: d.res through the branch's drop-path and dropout. When both
    // are off (rate 0, or eval) and the branch's linear does not overwrite its dy (no activation),
    // it is d.res itself: no copy.
    auto branch_grad = [&](BlockSite path_site, BlockSite drop_site, bool dy_overwritten) {
      const DropoutSpec path = drop(dpr, block_site(l, path_site)), dr = drop(c.drop_rate, block_site(l, drop_site));
      if (path.p <= 0.f && dr.p <= 0.f && !dy_overwritten) return d.res;
      if (path.p <= 0.f) {  // one pass: the dropout (or, at rate 0, the copy) from d.res
        be_.dropout(d.res, d.branch, dr);
      } else {
        be_.drop_path(d.res, d.branch, path);
        be_.dropout(d.branch, d.branch, dr);
      }
      return d.branch;
    };
    // MLP branch
    const Act fc2_act = c.mlp_gelu_out ? gelu : Act::None;
    const Tensor d_fc2 = branch_grad(kFc2Path, kFc2Drop, fc2_act != Act::None);
    be_.linear_backward(d_fc2, x.fc1, w.fc2_w, fc2_act, x.fc2_pre, d.fc1, gw.fc2_w, gw.fc2_b);
    be_.linear_backward(d.fc1, x.ln2, w.fc1_w, gelu, x.fc1_pre, d.ln, gw.fc1_w, gw.fc1_b,
                        drop(c.drop_rate, block_site(l, kFc1Drop)));
    be_.layernorm_backward(d.ln, x.mid, w.norm2_w, x.ln2_mean, x.ln2_rstd, d.res, gw.norm2_w, gw.norm2_b);
    // attention branch (d.res is now d mid = d res[l] + d proj)
    const Tensor d_proj = branch_grad(kProjPath, kProjDrop, false);
    be_.linear_backward(d_proj, x.att, w.proj_w, Act::None, none, d.att, gw.proj_w, gw.proj_b);
    be_.attention_backward(d.att, x.qkv, x.att, x.lse, int(c.num_heads), c.attn_scale(),
                           drop(c.attn_drop_rate, block_site(l, kAttn)), d.qkv);
    be_.linear_backward(d.qkv, x.ln1, w.qkv_w, Act::None, none, d.ln, gw.qkv_w, gw.qkv_b);
    be_.layernorm_backward(d.ln, a.res[l], w.norm1_w, x.ln1_mean, x.ln1_rstd, d.res, gw.norm1_w, gw.norm1_b);
    if (grads_ready_) grads_ready_(block_offset_[size_t(l)]);
  }

  // tokens and patch embedding
  be_.dropout(d.res, d.res, drop(c.drop_rate, kPosDrop));
  be_.tokens_backward(d.res, d.patches, g.cls_token, g.dist_token, g.pos_embed);
  be_.linear_backward(d.patches, a.cols, p.patch_w, Act::None, none, none, g.patch_w, g.patch_b);
  if (grads_ready_) grads_ready_(0);
}

// ---- accounting ---------------------------------------------------------------------------
double Model::macs_per_image() const {
  const ViTConfig& c = cfg_;
  const double T = c.num_tokens(), D = c.embed_dim, Aw = c.attn_dim(), Hm = c.mlp_hidden_dim();
  double macs = double(c.num_patches()) * c.patch_dim() * D;                          // patch embedding
  macs += c.depth * (T * D * 3 * Aw + 2 * T * T * Aw + T * Aw * D + 2 * T * D * Hm);  // blocks
  double feat = c.pooled_dim();
  for (int h : c.head_mlp) macs += feat * h, feat = h;
  if (c.pre_logits > 0) macs += feat * c.pre_logits, feat = c.pre_logits;
  macs += feat * c.num_classes * (c.distilled ? 2 : 1);  // head (and head_dist)
  return macs;
}

std::string Model::summary() const {
  std::ostringstream os;
  os << "model " << cfg_.name << ": image " << cfg_.img_size << "x" << cfg_.img_size << "x" << cfg_.in_chans
     << ", patch " << cfg_.patch_size << ", tokens " << cfg_.num_tokens() << ", dim " << cfg_.embed_dim << ", depth "
     << cfg_.depth << ", heads " << cfg_.num_heads << " x " << cfg_.attn_head_dim() << ", mlp " << cfg_.mlp_hidden_dim()
     << " (gelu " << gelu_name(cfg_.gelu) << "), pool " << pool_name(cfg_.pool)
     << (cfg_.distilled ? " + distillation token" : "") << ", classes " << cfg_.num_classes << "\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-36s %-22s %12s %s\n", "parameter", "shape", "count", "decay");
  os << line;
  for (const ParamSpec& s : param_specs_) {
    std::snprintf(line, sizeof line, "%-36s %-22s %12lld %s\n", s.name.c_str(), shape_string(s.shape).c_str(),
                  (long long)s.numel, s.decay ? "yes" : "no");
    os << line;
  }
  const double macs = macs_per_image();
  std::snprintf(line, sizeof line,
                "total parameters: %lld (%.2f M)\nper image: %.2f MMACs = %.3f GMACs (%.3f GFLOPs forward, ~%.3f "
                "GFLOPs forward+backward)\nactivation arena at batch %d: %.1f MiB (%s)\n",
                (long long)num_params_, num_params_ / 1e6, macs / 1e6, macs / 1e9, 2 * macs / 1e9, 6 * macs / 1e9,
                max_batch_, act_bytes_ / 1048576.0,
                (std::string(dtype_name(dtype_)) + (use_ == Use::Inference ? ", inference: one block's" : "")).c_str());
  os << line;
  return os.str();
}

}  // namespace vitcuda
