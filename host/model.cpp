// vitcuda — the ViT host graph. Read forward() and backward() top to bottom: every line is
// one Backend call on views into the arenas planned in plan().
#include "vitcuda/model.h"

#include <cmath>
#include <cstring>
#include <map>
#include <sstream>

namespace vitcuda {
namespace {

std::string blk(int l, const char* what) { return "blocks." + std::to_string(l) + "." + what; }

// splitmix64: tiny, seedable, identical everywhere (std::normal_distribution is not).
struct SplitMix {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
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
constexpr int kSites = 1 << 12;
int block_site(int l, BlockSite s) { return kBlockSites + l * kPerBlock + s; }

}  // namespace

Model::Model(const ViTConfig& config, Backend& backend, int max_batch)
    : Model(config, backend, max_batch, backend.compute_dtype()) {}

Model::Model(const ViTConfig& config, Backend& backend, int max_batch, DType dtype)
    : cfg_(config), be_(backend), max_batch_(max_batch), dtype_(dtype) {
  cfg_.validate();
  if (max_batch <= 0) throw Error("Model: batch size must be positive, got " + std::to_string(max_batch));
  if (cfg_.depth * kPerBlock + kBlockSites > kSites) throw Error("Model: depth too large for the dropout stream plan");
  plan();
  const size_t pbytes = (size_t(arena_size_) * dtype_size(dtype_) + 255) / 256 * 256;
  const bool separate_master = dtype_ != DType::F32;
  param_mem_ = be_.alloc(pbytes + (separate_master ? size_t(arena_size_) * 4 : 0));
  // Parameter gradients are fp32 whatever the compute dtype (fp64 for gradient checks):
  // bf16 gradients would lose the small updates that accumulate over the batch.
  const DType grad_dtype = dtype_ == DType::F64 ? DType::F64 : DType::F32;
  grad_mem_ = be_.alloc(size_t(arena_size_) * dtype_size(grad_dtype));
  act_mem_ = be_.alloc(size_t(act_bytes_));
  const Device dev = be_.device();
  params_ = Tensor::view(param_mem_, {arena_size_}, dtype_, dev);
  master_ = separate_master ? Tensor::view(static_cast<char*>(param_mem_) + pbytes, {arena_size_}, DType::F32, dev)
                            : params_;
  grads_ = Tensor::view(grad_mem_, {arena_size_}, grad_dtype, dev);
  acts_ = Tensor::view(act_mem_, {act_bytes_}, DType::U8, dev);
}

Model::~Model() {
  be_.release(param_mem_);
  be_.release(grad_mem_);
  be_.release(act_mem_);
}

// ---- planning: the parameter table (timm names and shapes) and the activation table -----
void Model::plan() {
  const ViTConfig& c = cfg_;
  const int64_t D = c.embed_dim, A = c.attn_dim(), Hm = c.mlp_hidden_dim(), PD = c.patch_dim();
  // Every tensor starts on a multiple of 16 elements (32 bytes in bf16): vector loads and
  // cuBLASLt's fast paths need aligned operands. The gaps stay zero.
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool decay) {
    ParamSpec s{name, shape, (arena_size_ + 15) / 16 * 16, 1, decay};
    for (int64_t d : shape) s.numel *= d;
    num_params_ += s.numel;
    arena_size_ = s.offset + s.numel;
    param_specs_.push_back(s);
  };
  add("patch_embed.proj.weight", {D, c.in_chans, c.patch_size, c.patch_size}, true);
  add("patch_embed.proj.bias", {D}, false);
  if (c.class_token) add("cls_token", {1, 1, D}, false);
  add("pos_embed", {1, c.num_tokens(), D}, false);
  for (int l = 0; l < c.depth; ++l) {
    add(blk(l, "norm1.weight"), {D}, false);
    add(blk(l, "norm1.bias"), {D}, false);
    add(blk(l, "attn.qkv.weight"), {3 * A, D}, true);
    if (c.qkv_bias) add(blk(l, "attn.qkv.bias"), {3 * A}, false);
    add(blk(l, "attn.proj.weight"), {D, A}, true);
    add(blk(l, "attn.proj.bias"), {D}, false);
    add(blk(l, "norm2.weight"), {D}, false);
    add(blk(l, "norm2.bias"), {D}, false);
    add(blk(l, "mlp.fc1.weight"), {Hm, D}, true);
    add(blk(l, "mlp.fc1.bias"), {Hm}, false);
    add(blk(l, "mlp.fc2.weight"), {D, Hm}, true);
    add(blk(l, "mlp.fc2.bias"), {D}, false);
  }
  // timm: norm before token pooling, fc_norm after average pooling.
  const std::string final_norm = c.pool == Pool::Avg ? "fc_norm" : "norm";
  add(final_norm + ".weight", {D}, false);
  add(final_norm + ".bias", {D}, false);
  int64_t feat = c.pooled_dim();
  for (size_t j = 0; j < c.head_mlp.size(); ++j) {
    add("head_mlp." + std::to_string(j) + ".weight", {c.head_mlp[j], feat}, true);
    add("head_mlp." + std::to_string(j) + ".bias", {c.head_mlp[j]}, false);
    feat = c.head_mlp[j];
  }
  if (c.pre_logits > 0) {
    add("pre_logits.fc.weight", {c.pre_logits, feat}, true);
    add("pre_logits.fc.bias", {c.pre_logits}, false);
    feat = c.pre_logits;
  }
  add("head.weight", {c.num_classes, feat}, true);
  add("head.bias", {c.num_classes}, false);
  arena_size_ = (arena_size_ + 63) / 64 * 64;

  // Activations, at the maximum batch. Gradient buffers (d_*) are shared by all blocks.
  const int64_t B = max_batch_, T = c.num_tokens(), Np = c.num_patches(), H = c.num_heads,
                hd = c.attn_head_dim();
  const DType stats = dtype_ == DType::F64 ? DType::F64 : DType::F32;
  auto act = [&](const std::string& name, std::vector<int64_t> shape, DType dt) {
    ActivationSpec s{name, shape, dt, act_bytes_, 1};
    for (int64_t d : shape) s.numel *= d;
    act_bytes_ += (s.numel * int64_t(dtype_size(dt)) + 255) / 256 * 256;
    act_specs_.push_back(s);
  };
  act("input", {B, c.in_chans, c.img_size, c.img_size}, DType::U8);
  act("labels", {B}, DType::I32);
  act("losses", {B}, DType::F32);
  act("hits", {B}, DType::I32);
  act("cols", {B * Np, PD}, dtype_);
  act("patches", {B, Np, D}, dtype_);
  for (int l = 0; l <= c.depth; ++l) act("res." + std::to_string(l), {B, T, D}, dtype_);  // block inputs
  for (int l = 0; l < c.depth; ++l) {
    act(blk(l, "ln1"), {B, T, D}, dtype_);
    act(blk(l, "ln1.mean"), {B, T}, stats);
    act(blk(l, "ln1.rstd"), {B, T}, stats);
    act(blk(l, "q"), {B, H, T, hd}, dtype_);
    act(blk(l, "k"), {B, H, T, hd}, dtype_);
    act(blk(l, "v"), {B, H, T, hd}, dtype_);
    act(blk(l, "lse"), {B, H, T}, stats);
    act(blk(l, "att"), {B, T, A}, dtype_);
    act(blk(l, "proj"), {B, T, D}, dtype_);
    act(blk(l, "mid"), {B, T, D}, dtype_);  // res + proj: the input of norm2
    act(blk(l, "ln2"), {B, T, D}, dtype_);
    act(blk(l, "ln2.mean"), {B, T}, stats);
    act(blk(l, "ln2.rstd"), {B, T}, stats);
    act(blk(l, "fc1.pre"), {B, T, Hm}, dtype_);
    act(blk(l, "fc1"), {B, T, Hm}, dtype_);
    if (c.mlp_gelu_out) act(blk(l, "fc2.pre"), {B, T, D}, dtype_);
    act(blk(l, "fc2"), {B, T, D}, dtype_);
  }
  act("qkv", {B, T, 3 * A}, dtype_);  // packed projection, consumed at once by the split
  act("norm", {B, T, D}, dtype_);
  act("norm.mean", {B, T}, stats);
  act("norm.rstd", {B, T}, stats);
  act("pooled", {B, D}, dtype_);
  act("fc_norm", {B, D}, dtype_);
  act("fc_norm.mean", {B}, stats);
  act("fc_norm.rstd", {B}, stats);
  int64_t feat_max = c.pooled_dim();
  for (size_t j = 0; j < c.head_mlp.size(); ++j) {
    act("head_mlp." + std::to_string(j) + ".pre", {B, c.head_mlp[j]}, dtype_);
    act("head_mlp." + std::to_string(j), {B, c.head_mlp[j]}, dtype_);
    feat_max = std::max<int64_t>(feat_max, c.head_mlp[j]);
  }
  if (c.pre_logits > 0) {
    act("pre_logits.pre", {B, c.pre_logits}, dtype_);
    act("pre_logits", {B, c.pre_logits}, dtype_);
    feat_max = std::max<int64_t>(feat_max, c.pre_logits);
  }
  act("logits", {B, c.num_classes}, dtype_);
  // Gradient scratch.
  act("d_logits", {B, c.num_classes}, dtype_);
  act("d_head.a", {B, feat_max}, dtype_);
  act("d_head.b", {B, feat_max}, dtype_);
  act("d_pooled", {B, D}, dtype_);
  act("d_res", {B, T, D}, dtype_);
  act("d_branch", {B, T, D}, dtype_);
  act("d_ln", {B, T, D}, dtype_);
  act("d_fc1", {B, T, Hm}, dtype_);
  act("d_att", {B, T, A}, dtype_);
  act("d_q", {B, H, T, hd}, dtype_);
  act("d_k", {B, H, T, hd}, dtype_);
  act("d_v", {B, H, T, hd}, dtype_);
  act("d_qkv", {B, T, 3 * A}, dtype_);
  act("d_patches", {B, Np, D}, dtype_);
}

Tensor Model::A(const std::string& name) const {
  // The table is small (~20 per block); a linear scan keeps the plan a plain vector.
  for (const ActivationSpec& s : act_specs_) {
    if (s.name != name) continue;
    int64_t shape[kMaxDims];
    const int nd = int(s.shape.size());
    for (int i = 0; i < nd; ++i) shape[i] = s.shape[i];
    // Batch-major: the first batch_ rows (for cols, batch_ * Np rows).
    shape[0] = s.shape[0] / max_batch_ * batch_;
    return Tensor::view(static_cast<char*>(act_mem_) + s.offset, shape, nd, s.dtype, be_.device());
  }
  throw Error("Model: no activation named '" + name + "'");
}

const ParamSpec& Model::param_spec(const std::string& name) const {
  for (const ParamSpec& s : param_specs_)
    if (s.name == name) return s;
  throw Error("Model: no parameter named '" + name + "'");
}

Tensor Model::pview(const Tensor& arena, const std::string& name) const {
  const ParamSpec& s = param_spec(name);
  int64_t shape[kMaxDims];
  const int nd = int(s.shape.size());
  for (int i = 0; i < nd; ++i) shape[i] = s.shape[i];
  // Conv and [1, N, D] parameters are used as 2-D matrices by the ops.
  if (name == "patch_embed.proj.weight") return Tensor::view(static_cast<char*>(arena.data()) + s.offset * dtype_size(arena.dtype()), {s.shape[0], s.numel / s.shape[0]}, arena.dtype(), arena.device());
  return Tensor::view(static_cast<char*>(arena.data()) + s.offset * dtype_size(arena.dtype()), shape, nd,
                      arena.dtype(), arena.device());
}

Tensor Model::param(const std::string& name) const { return pview(params_, name); }
Tensor Model::grad(const std::string& name) const { return pview(grads_, name); }

DropoutSpec Model::drop(float p, int site) const {
  DropoutSpec s;
  s.p = train_ ? p : 0.f;
  s.seed = seed_;
  s.stream = step_ * kSites + uint64_t(site);
  return s;
}

// ---- initialisation ---------------------------------------------------------------------
void Model::init(uint64_t seed) {
  std::vector<float> host(arena_size_, 0.f);
  for (const ParamSpec& s : param_specs_) {
    SplitMix rng{seed ^ std::hash<std::string>{}(s.name)};
    float* w = host.data() + s.offset;
    const bool is_norm = s.name.find("norm") != std::string::npos;
    const bool is_bias = s.name.size() >= 5 && s.name.compare(s.name.size() - 5, 5, ".bias") == 0;
    for (int64_t i = 0; i < s.numel; ++i) {
      if (s.name == "cls_token") w[i] = float(rng.normal() * 1e-6);
      else if (is_norm) w[i] = is_bias ? 0.f : 1.f;
      else if (is_bias) w[i] = 0.f;
      else w[i] = float(rng.trunc_normal(0.02));
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

void Model::zero_grad() { be_.zero(grads_); }

// ---- forward ------------------------------------------------------------------------------
Tensor Model::forward(const Tensor& images, bool train, uint64_t seed, uint64_t step) {
  const ViTConfig& c = cfg_;
  if (images.ndim() != 4 || images.size(1) != c.in_chans || images.size(2) != c.img_size ||
      images.size(3) != c.img_size)
    throw Error("Model::forward: images must be [B, " + std::to_string(c.in_chans) + ", " +
                std::to_string(c.img_size) + ", " + std::to_string(c.img_size) + "], got " + images.shape_str());
  if (images.size(0) < 1 || images.size(0) > max_batch_)
    throw Error("Model::forward: batch " + std::to_string(images.size(0)) + " is outside [1, " +
                std::to_string(max_batch_) + "]");
  if (images.dtype() != DType::U8) throw Error("Model::forward: images must be u8");
  batch_ = images.size(0);
  train_ = train;
  seed_ = seed;
  step_ = step;
  const int64_t B = batch_, T = c.num_tokens(), H = c.num_heads;
  const float eps = c.ln_eps;
  const Act gelu = gelu_act(c.gelu);
  auto P = [&](const std::string& n) { return param(n); };
  auto none = Tensor{};

  be_.copy_to_device(A("input").data(), images.data(), images.nbytes());
  be_.patch_extract(A("input"), ImageLayout::NCHW, c.patch_size, c.pixel_mean.data(), c.pixel_std.data(), A("cols"));
  be_.linear_forward(A("cols"), P("patch_embed.proj.weight"), P("patch_embed.proj.bias"), Act::None, none, A("patches"));
  be_.tokens_forward(A("patches"), c.class_token ? P("cls_token") : none, P("pos_embed"), A("res.0"));
  be_.dropout(A("res.0"), A("res.0"), drop(c.drop_rate, kPosDrop));

  for (int l = 0; l < c.depth; ++l) {
    const std::string res = "res." + std::to_string(l);
    auto X = [&](const char* what) { return A(blk(l, what)); };
    auto W = [&](const char* what) { return P(blk(l, what)); };
    const float dpr = c.depth > 1 ? c.drop_path_rate * l / (c.depth - 1) : c.drop_path_rate;
    // norm1, fused with the residual add that ends the previous block
    if (l == 0)
      be_.layernorm_forward(A(res), none, none, W("norm1.weight"), W("norm1.bias"), eps, X("ln1"), X("ln1.mean"), X("ln1.rstd"));
    else
      be_.layernorm_forward(A(blk(l - 1, "mid")), A(blk(l - 1, "fc2")), A(res), W("norm1.weight"), W("norm1.bias"), eps,
                            X("ln1"), X("ln1.mean"), X("ln1.rstd"));
    // attention
    be_.qkv_forward(X("ln1"), W("attn.qkv.weight"), c.qkv_bias ? W("attn.qkv.bias") : none, A("qkv"), X("q"), X("k"), X("v"));
    be_.attention_forward(X("q"), X("k"), X("v"), c.attn_scale(), drop(c.attn_drop_rate, block_site(l, kAttn)), X("att"), X("lse"));
    be_.linear_forward(X("att"), W("attn.proj.weight"), W("attn.proj.bias"), Act::None, none, X("proj"));
    be_.dropout(X("proj"), X("proj"), drop(c.drop_rate, block_site(l, kProjDrop)));
    be_.drop_path(X("proj"), X("proj"), drop(dpr, block_site(l, kProjPath)));
    // norm2 on mid = res + proj
    be_.layernorm_forward(A(res), X("proj"), X("mid"), W("norm2.weight"), W("norm2.bias"), eps, X("ln2"), X("ln2.mean"), X("ln2.rstd"));
    // MLP
    be_.linear_forward(X("ln2"), W("mlp.fc1.weight"), W("mlp.fc1.bias"), gelu, X("fc1.pre"), X("fc1"));
    be_.dropout(X("fc1"), X("fc1"), drop(c.drop_rate, block_site(l, kFc1Drop)));
    be_.linear_forward(X("fc1"), W("mlp.fc2.weight"), W("mlp.fc2.bias"), c.mlp_gelu_out ? gelu : Act::None,
                       c.mlp_gelu_out ? X("fc2.pre") : none, X("fc2"));
    be_.dropout(X("fc2"), X("fc2"), drop(c.drop_rate, block_site(l, kFc2Drop)));
    be_.drop_path(X("fc2"), X("fc2"), drop(dpr, block_site(l, kFc2Path)));
  }

  // final norm and pooling; res.L = mid + fc2 of the last block
  const int L = c.depth;
  const std::string last = "res." + std::to_string(L);
  Tensor feat;
  if (c.pool == Pool::Avg) {
    be_.add(A(blk(L - 1, "mid")), A(blk(L - 1, "fc2")), A(last));
    be_.pool_forward(A(last), Pool::Avg, c.class_token ? 1 : 0, A("pooled"));
    be_.layernorm_forward(A("pooled"), none, none, P("fc_norm.weight"), P("fc_norm.bias"), eps, A("fc_norm"),
                          A("fc_norm.mean"), A("fc_norm.rstd"));
    feat = A("fc_norm");
  } else {
    be_.layernorm_forward(A(blk(L - 1, "mid")), A(blk(L - 1, "fc2")), A(last), P("norm.weight"), P("norm.bias"), eps,
                          A("norm"), A("norm.mean"), A("norm.rstd"));
    if (c.pool == Pool::Token) {
      be_.pool_forward(A("norm"), Pool::Token, 1, A("pooled"));
      feat = A("pooled");
    } else {
      feat = A("norm").reshape({B, T * c.embed_dim});  // Keras Flatten
    }
  }
  // head: [dropout, Dense+GELU+dropout...], [pre-logits Linear+tanh], classifier
  be_.dropout(feat, feat, drop(c.head_drop_rate, kHeadDrop));
  for (size_t j = 0; j < c.head_mlp.size(); ++j) {
    const std::string n = "head_mlp." + std::to_string(j);
    be_.linear_forward(feat, P(n + ".weight"), P(n + ".bias"), gelu, A(n + ".pre"), A(n));
    feat = A(n);
    be_.dropout(feat, feat, drop(c.head_drop_rate, kHeadMlp0 + int(j)));
  }
  if (c.pre_logits > 0) {
    be_.linear_forward(feat, P("pre_logits.fc.weight"), P("pre_logits.fc.bias"), Act::Tanh, A("pre_logits.pre"), A("pre_logits"));
    feat = A("pre_logits");
  }
  be_.linear_forward(feat, P("head.weight"), P("head.bias"), Act::None, none, A("logits"));
  (void)H;
  return A("logits");
}

StepStats Model::loss(const int32_t* labels, float smoothing, bool backward_ready) {
  if (batch_ == 0) throw Error("Model::loss: call forward first");
  for (int64_t b = 0; b < batch_; ++b)
    if (labels[b] < 0 || labels[b] >= cfg_.num_classes)
      throw Error("Model::loss: label " + std::to_string(labels[b]) + " of sample " + std::to_string(b) +
                  " is outside [0, " + std::to_string(cfg_.num_classes) + ")");
  be_.copy_to_device(A("labels").data(), labels, size_t(batch_) * sizeof(int32_t));
  be_.softmax_xent(A("logits"), A("labels"), smoothing, 1.f / float(batch_), A("losses"),
                   backward_ready ? A("d_logits") : Tensor{}, A("hits"));
  std::vector<float> losses(batch_);
  std::vector<int32_t> hits(batch_);
  be_.copy_to_host(losses.data(), A("losses").data(), losses.size() * sizeof(float));
  be_.copy_to_host(hits.data(), A("hits").data(), hits.size() * sizeof(int32_t));
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
  if (batch_ == 0) throw Error("Model::backward: call forward and loss first");
  const int64_t B = batch_, T = c.num_tokens();
  const Act gelu = gelu_act(c.gelu);
  auto P = [&](const std::string& n) { return param(n); };
  auto G = [&](const std::string& n) { return grad(n); };
  auto none = Tensor{};
  const int L = c.depth;

  // head, from the logits back to the pooled features. d_head.a / d_head.b alternate as dy/dx.
  Tensor dy = A("d_logits");
  auto head_input = [&](int j) -> Tensor {  // the input of head layer j (j = head_mlp.size() for pre-logits...)
    if (j < 0) return Tensor{};
    return A("head_mlp." + std::to_string(j));
  };
  const int nmlp = int(c.head_mlp.size());
  Tensor pooled_feat = c.pool == Pool::Avg ? A("fc_norm") : c.pool == Pool::Token ? A("pooled")
                                                                                  : A("norm").reshape({B, T * c.embed_dim});
  Tensor last_feat = nmlp > 0 ? head_input(nmlp - 1) : pooled_feat;
  bool use_a = true;
  auto scratch = [&](int64_t width) {
    Tensor t = A(use_a ? "d_head.a" : "d_head.b");
    use_a = !use_a;
    return Tensor::view(t.data(), {B, width}, t.dtype(), t.device());
  };
  Tensor head_in = c.pre_logits > 0 ? A("pre_logits") : last_feat;
  Tensor dx = scratch(head_in.size(1));
  be_.linear_backward(dy, head_in, P("head.weight"), Act::None, none, dx, G("head.weight"), G("head.bias"));
  dy = dx;
  if (c.pre_logits > 0) {
    dx = scratch(last_feat.size(1));
    be_.linear_backward(dy, last_feat, P("pre_logits.fc.weight"), Act::Tanh, A("pre_logits.pre"), dx,
                        G("pre_logits.fc.weight"), G("pre_logits.fc.bias"));
    dy = dx;
  }
  for (int j = nmlp - 1; j >= 0; --j) {
    const std::string n = "head_mlp." + std::to_string(j);
    be_.dropout(dy, dy, drop(c.head_drop_rate, kHeadMlp0 + j));
    Tensor in = j > 0 ? head_input(j - 1) : pooled_feat;
    dx = scratch(in.size(1));
    be_.linear_backward(dy, in, P(n + ".weight"), gelu, A(n + ".pre"), dx, G(n + ".weight"), G(n + ".bias"));
    dy = dx;
  }
  be_.dropout(dy, dy, drop(c.head_drop_rate, kHeadDrop));

  // final norm and pooling, into d_res = d res.L
  Tensor d_res = A("d_res");
  be_.zero(d_res);
  const std::string last = "res." + std::to_string(L);
  if (c.pool == Pool::Avg) {
    Tensor d_pooled = A("d_pooled");
    be_.zero(d_pooled);
    be_.layernorm_backward(dy, A("pooled"), P("fc_norm.weight"), A("fc_norm.mean"), A("fc_norm.rstd"), d_pooled,
                           G("fc_norm.weight"), G("fc_norm.bias"));
    be_.pool_backward(d_pooled, Pool::Avg, c.class_token ? 1 : 0, d_res);
  } else {
    Tensor d_norm = A("d_ln");
    if (c.pool == Pool::Token) be_.pool_backward(dy, Pool::Token, 1, d_norm);
    else be_.copy(dy, d_norm);
    be_.layernorm_backward(d_norm, A(last), P("norm.weight"), A("norm.mean"), A("norm.rstd"), d_res,
                           G("norm.weight"), G("norm.bias"));
  }

  // blocks in reverse. d_res holds d res.{l+1} = d mid + d fc2 (the residual carries it).
  Tensor d_branch = A("d_branch"), d_ln = A("d_ln"), d_fc1 = A("d_fc1"), d_att = A("d_att");
  for (int l = L - 1; l >= 0; --l) {
    const std::string res = "res." + std::to_string(l);
    auto X = [&](const char* what) { return A(blk(l, what)); };
    auto W = [&](const char* what) { return P(blk(l, what)); };
    auto GW = [&](const char* what) { return G(blk(l, what)); };
    const float dpr = c.depth > 1 ? c.drop_path_rate * l / (c.depth - 1) : c.drop_path_rate;
    // MLP branch
    be_.drop_path(d_res, d_branch, drop(dpr, block_site(l, kFc2Path)));
    be_.dropout(d_branch, d_branch, drop(c.drop_rate, block_site(l, kFc2Drop)));
    be_.linear_backward(d_branch, X("fc1"), W("mlp.fc2.weight"), c.mlp_gelu_out ? gelu : Act::None,
                        c.mlp_gelu_out ? X("fc2.pre") : none, d_fc1, GW("mlp.fc2.weight"), GW("mlp.fc2.bias"));
    be_.dropout(d_fc1, d_fc1, drop(c.drop_rate, block_site(l, kFc1Drop)));
    be_.linear_backward(d_fc1, X("ln2"), W("mlp.fc1.weight"), gelu, X("fc1.pre"), d_ln, GW("mlp.fc1.weight"),
                        GW("mlp.fc1.bias"));
    be_.layernorm_backward(d_ln, X("mid"), W("norm2.weight"), X("ln2.mean"), X("ln2.rstd"), d_res,
                           GW("norm2.weight"), GW("norm2.bias"));
    // attention branch (d_res is now d mid = d res.l + d proj)
    be_.drop_path(d_res, d_branch, drop(dpr, block_site(l, kProjPath)));
    be_.dropout(d_branch, d_branch, drop(c.drop_rate, block_site(l, kProjDrop)));
    be_.linear_backward(d_branch, X("att"), W("attn.proj.weight"), Act::None, none, d_att, GW("attn.proj.weight"),
                        GW("attn.proj.bias"));
    be_.attention_backward(d_att, X("q"), X("k"), X("v"), X("att"), X("lse"), c.attn_scale(),
                           drop(c.attn_drop_rate, block_site(l, kAttn)), A("d_q"), A("d_k"), A("d_v"));
    be_.qkv_backward(A("d_q"), A("d_k"), A("d_v"), X("ln1"), W("attn.qkv.weight"), A("d_qkv"), d_ln,
                     GW("attn.qkv.weight"), c.qkv_bias ? GW("attn.qkv.bias") : none);
    be_.layernorm_backward(d_ln, A(res), W("norm1.weight"), X("ln1.mean"), X("ln1.rstd"), d_res,
                           GW("norm1.weight"), GW("norm1.bias"));
  }

  // tokens and patch embedding
  be_.dropout(d_res, d_res, drop(c.drop_rate, kPosDrop));
  be_.tokens_backward(d_res, A("d_patches"), c.class_token ? G("cls_token") : none, G("pos_embed"));
  be_.linear_backward(A("d_patches"), A("cols"), P("patch_embed.proj.weight"), Act::None, none, none,
                      G("patch_embed.proj.weight"), G("patch_embed.proj.bias"));
}

// ---- accounting ---------------------------------------------------------------------------
double Model::macs_per_image() const {
  const ViTConfig& c = cfg_;
  const double T = c.num_tokens(), D = c.embed_dim, Aw = c.attn_dim(), Hm = c.mlp_hidden_dim();
  double macs = double(c.num_patches()) * c.patch_dim() * D;                   // patch embedding
  macs += c.depth * (T * D * 3 * Aw + 2 * T * T * Aw + T * Aw * D + 2 * T * D * Hm);  // blocks
  double feat = c.pooled_dim();
  for (int h : c.head_mlp) macs += feat * h, feat = h;
  if (c.pre_logits > 0) macs += feat * c.pre_logits, feat = c.pre_logits;
  macs += feat * c.num_classes;
  return macs;
}

std::string Model::summary() const {
  std::ostringstream os;
  auto shape_str = [](const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
  };
  os << "model " << cfg_.name << ": image " << cfg_.img_size << "x" << cfg_.img_size << "x" << cfg_.in_chans
     << ", patch " << cfg_.patch_size << ", tokens " << cfg_.num_tokens() << ", dim " << cfg_.embed_dim
     << ", depth " << cfg_.depth << ", heads " << cfg_.num_heads << " x " << cfg_.attn_head_dim() << ", mlp "
     << cfg_.mlp_hidden_dim() << " (gelu " << gelu_name(cfg_.gelu) << "), pool " << pool_name(cfg_.pool) << ", classes " << cfg_.num_classes << "\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-36s %-22s %12s %s\n", "parameter", "shape", "count", "decay");
  os << line;
  for (const ParamSpec& s : param_specs_) {
    std::snprintf(line, sizeof line, "%-36s %-22s %12lld %s\n", s.name.c_str(), shape_str(s.shape).c_str(),
                  (long long)s.numel, s.decay ? "yes" : "no");
    os << line;
  }
  const double macs = macs_per_image();
  std::snprintf(line, sizeof line,
                "total parameters: %lld (%.2f M)\nper image: %.2f MMACs = %.3f GMACs (%.3f GFLOPs forward, ~%.3f "
                "GFLOPs forward+backward)\nactivation arena at batch %d: %.1f MiB (%s)\n",
                (long long)num_params_, num_params_ / 1e6, macs / 1e6, macs / 1e9, 2 * macs / 1e9, 6 * macs / 1e9,
                max_batch_, act_bytes_ / 1048576.0, dtype_name(dtype_));
  os << line;
  return os.str();
}

}  // namespace vitcuda
