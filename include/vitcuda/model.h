// vitcuda — Model: a ViT whose parameters, gradients and activations each live in one
// arena sized once from (config, batch size); forward() and backward() are flat lists of
// Backend calls, like llm.c's gpt2_forward.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "vitcuda/backend.h"
#include "vitcuda/config.h"
#include "vitcuda/tensor.h"

namespace vitcuda {

// One parameter tensor, by timm's name, at `offset` elements into the arenas.
struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;
  int64_t numel = 0;
  bool decay = true;  // AdamW weight decay: weights yes; biases, norms, cls token, pos embed no
  // timm's initialisation: truncated normal(0.02) for weights and pos_embed, zeros for biases,
  // ones for LayerNorm weights, normal(1e-6) for the cls token.
  enum class Init : uint8_t { TruncNormal, Zeros, Ones, ClsNormal };
  Init init = Init::TruncNormal;
};

// One activation buffer: name, shape at the maximum batch size, offset into the arena.
struct ActivationSpec {
  std::string name;
  std::vector<int64_t> shape;  // shape[0] is the batch
  DType dtype = DType::F32;
  int64_t offset = 0;  // bytes
  int64_t numel = 0;
};

// Distilled training's target for Model::loss / loss_staged (DeiT; timm's DistillationLoss):
// loss = (1 − α)·CE(cls head, label) + α·term(distillation head, teacher), the term of
// Backend::distill_loss. The distillation head is head_dist on a distilled model (the cls head
// then gets only the label loss), else the one head (both terms on it, as Hinton's KD).
struct DistillTarget {
  Distill kind = Distill::Hard;
  float alpha = 0.5f;     // in [0, 1]
  float tau = 1.f;        // > 0
  Tensor teacher_logits;  // [B, num_classes] in backend memory, the model's compute dtype
};

struct StepStats {
  double loss = 0;   // mean over the batch
  int64_t top1 = 0;  // correct predictions in the batch
  int64_t top5 = 0;
  int64_t count = 0;
};

class Model {
 public:
  // Dropout streams per step: the masks of a train forward at step s use streams
  // s · kDropoutSites + site, one site per dropout / drop-path call of the graph.
  static constexpr uint64_t kDropoutSites = 1 << 12;

  // What the Model is built for. Training: gradients, the backward pass's scratch and every
  // layer's activations (backward reads them). Inference (a distillation teacher, vit_infer):
  // no gradient arena, no backward scratch, and the transformer blocks share one set of
  // activation buffers (and the residual stream one buffer), each block overwriting the last's:
  // forward(train = false) gives the same logits bit for bit in a fraction of the memory
  // (ViT-B/16: 1/12 of the blocks' activations); backward, a train forward and the per-block
  // activations (activation("blocks.3.qkv"), attention maps) are refused with an Error.
  enum class Use : uint8_t { Training, Inference };

  // dtype: the activation/compute dtype (default: the backend's); F64 on the cpu backend is
  // for gradient checks. The arenas are allocated here, once.
  // arena_multiple: arena_size() is rounded up to a multiple of it (and of 64): ZeRO-1 splits
  // the arenas into one equal shard per rank (64 · ranks).
  Model(const ViTConfig& config, Backend& backend, int max_batch, DType dtype, int64_t arena_multiple = 64,
        Use use = Use::Training);
  Model(const ViTConfig& config, Backend& backend, int max_batch);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ViTConfig& config() const { return cfg_; }
  Backend& backend() const { return be_; }
  int max_batch() const { return max_batch_; }
  DType dtype() const { return dtype_; }
  Use use() const { return use_; }

  // timm's initialisation from a seed: truncated normal(0.02) for weights and pos_embed,
  // normal(1e-6) for cls_token, zeros for biases, ones for LayerNorm weights.
  void init(uint64_t seed);

  // images: host tensor [B, C, H, W], u8 (or f32), B <= max_batch. `train` enables dropout
  // and drop-path with masks drawn from (seed, step). Returns the logits [B, num_classes]
  // (backend memory, valid until the next forward).
  Tensor forward(const Tensor& images, bool train, uint64_t seed = 0, uint64_t step = 0);
  // Loss, top-1/top-5 of the last forward against labels (host i32 [B]); when `backward_ready`,
  // also the gradient of the mean loss with respect to the logits, for backward().
  // A distilled model's logits (the activation "logits", what forward() returns) are the mean of
  // its heads' ("head.logits", "head_dist.logits"), and without `distill` the loss is on them
  // (timm's training without a teacher). With `distill`: the distilled loss; top-1/top-5 are then
  // the cls head's.
  StepStats loss(const int32_t* labels, float smoothing, bool backward_ready, const DistillTarget* distill = nullptr);
  // Gradients of the mean loss; accumulates into the gradient arena (call zero_grad first).
  // With a hook set, backward() calls it each time a suffix of the gradient arena is final:
  // hook(offset) says every gradient at arena offsets >= offset is complete (the backward pass
  // produces them from the end of the arena toward its start: head, last block, ..., first
  // block, then the embeddings: hook(0)). A data-parallel step starts reducing them there.
  void backward();
  void set_grads_ready_hook(std::function<void(int64_t offset)> hook) { grads_ready_ = std::move(hook); }
  void zero_grad();

  // ---- the same step without host round trips (TrainStep, vitcuda/train_step.h) ----
  // The step's state in backend memory: the dropout offset (every dropout mask of a train
  // forward is drawn from stream step · sites + site, the step read from here), lr, metrics,
  // clipping and AdamW's counters (vitcuda/backend.h StepState).
  StepState* step_state() const { return state_; }
  // Sets the batch size (1..max_batch) and returns the input buffers at that size in backend
  // memory, images [n, C, H, W] u8 and labels [n] i32, for the caller to copy into.
  void set_batch(int64_t n);
  Tensor input_images() const { return a_.input; }
  Tensor input_labels() const { return a_.labels; }
  // forward() and the loss on what the buffers and the state hold, without a host transfer.
  // loss_staged, train: the batch's metrics into the state (step_metrics, committed by
  // grad_norm_clip once the step is applied) and the gradient of the mean loss for backward();
  // else the metrics only, committed at once.
  // loss_staged's gradient is that of Σ losses / grad_batch (0: the batch size): gradient
  // accumulation and data parallelism divide by the samples of the whole step. accumulate: the
  // step's metrics add to those of the step's earlier micro-batches (Backend::step_metrics).
  void forward_staged(bool train, uint64_t seed);
  // distill: as in loss() (train only; the teacher's logits must hold this batch's).
  void loss_staged(float smoothing, bool train, int64_t grad_batch = 0, bool accumulate = false,
                   const DistillTarget* distill = nullptr);

  // Parameter table, and views of one tensor in the arenas (backend memory).
  const std::vector<ParamSpec>& params() const { return param_specs_; }
  const std::vector<ActivationSpec>& activations() const { return act_specs_; }
  const ParamSpec& param_spec(const std::string& name) const;  // throws Error if unknown
  // A view of a saved activation of the last forward (backend memory) by its table name,
  // e.g. "blocks.0.qkv", "blocks.0.lse", "logits"; throws Error if unknown, or for a per-block
  // tensor or the residual stream ("res.N") of a Use::Inference model (not kept).
  Tensor activation(const std::string& name) const;
  Tensor param(const std::string& name) const;
  Tensor grad(const std::string& name) const;
  int64_t num_params() const { return num_params_; }       // parameters, as timm counts them
  int64_t arena_size() const { return arena_size_; }       // elements of each arena (tensors + alignment gaps)
  int64_t activation_bytes() const { return act_bytes_; }  // the activation arena at max_batch
  // Whole arenas: fp32 master weights (what the optimizer updates and checkpoints hold),
  // compute-dtype parameters, fp32 gradients (fp64 when the compute dtype is fp64; undefined
  // for a Use::Inference model).
  Tensor master_arena() const { return master_; }
  Tensor param_arena() const { return params_; }
  Tensor grad_arena() const { return grads_; }
  // Copies the master weights (arena_size() floats, tensors at ParamSpec::offset) to / from
  // host fp32 (checkpoints) and refreshes the compute-dtype copy after set_master.
  std::vector<float> get_master() const;
  void set_master(const std::vector<float>& host);
  void sync_params_from_master();

  // Multiply-accumulates per image in the forward pass (GEMMs and attention), as timm and
  // fvcore count them.
  double macs_per_image() const;
  // The parameter table, the activation table and the totals, as text.
  std::string summary() const;

 private:
  // Typed views into the arenas, as llm.c's ParameterTensors / ActivationTensors: plan()
  // records which table entry each field views, and forward() / backward() use the fields,
  // never a name. Fields of optional tensors (qkv bias, cls token, fc2.pre, ...) stay
  // undefined, which the ops read as "none".
  struct LinearParams {
    Tensor w, b;
  };
  struct BlockParams {
    Tensor norm1_w, norm1_b, qkv_w, qkv_b, proj_w, proj_b, norm2_w, norm2_b, fc1_w, fc1_b, fc2_w, fc2_b;
  };
  struct HeadParams {
    Tensor norm_w, norm_b;  // "norm" before token pooling, "fc_norm" after average pooling
    std::vector<LinearParams> mlp;
    LinearParams pre_logits, fc;
    LinearParams dist;  // head_dist: the distillation token's classifier (distilled models)
  };
  struct ParamTensors {
    Tensor patch_w, patch_b, cls_token, dist_token, pos_embed;  // patch_w viewed as [D, C*P*P]
    std::vector<BlockParams> blocks;
    HeadParams head;
  };
  // Activations: views of the first batch_ rows, rebound by forward().
  struct LinearActs {
    Tensor pre, out;
  };  // pre-activation (for the backward of the activation), output
  struct BlockActs {
    Tensor ln1, ln1_mean, ln1_rstd, qkv, lse, att, proj, mid, ln2, ln2_mean, ln2_rstd, fc1_pre, fc1, fc2_pre, fc2;
  };
  struct HeadActs {
    Tensor norm, norm_mean, norm_rstd, pooled, fc_norm, fc_norm_mean, fc_norm_rstd;
    std::vector<LinearActs> mlp;
    LinearActs pre_logits;
    Tensor logits;
    Tensor head_logits, dist_logits;  // distilled models: each head's; logits is their mean
  };
  struct GradActs {              // gradient scratch ("d_*" in the table), shared by all blocks
    Tensor logits, logits_dist;  // logits_dist: head_dist's, when the heads have their own losses
    Tensor head_a, head_b,       // head_a / head_b alternate as dy / dx through the head
        pooled, res, branch, ln, fc1, att, qkv, patches;
  };
  struct ActTensors {
    Tensor input, labels, losses, hits, cols, patches;
    std::vector<Tensor> res;  // block inputs res[0..depth]; res[depth] is the final norm's input
    std::vector<BlockActs> blocks;
    HeadActs head;
    GradActs d;  // gradients
  };
  // Table entry -> the field(s) viewing it (Model does not move, so the pointers stay valid).
  struct ParamSlot {
    size_t spec;
    Tensor* param;
    Tensor* grad;
  };
  struct ActSlot {
    size_t spec;
    Tensor* view;
  };
  // Table entries that a Use::Inference model shares between blocks (every block's and the
  // residual stream's except the first): activation() refuses them.
  std::vector<bool> act_shared_;

  void plan();
  void need_training(const char* what) const;      // throws for a Use::Inference model
  void bind_activations();                         // points the ActTensors fields at the first batch_ rows
  Tensor act_view(const ActivationSpec& s) const;  // at the current batch size
  Tensor pview(const Tensor& arena, const ParamSpec& s) const;
  Tensor features() const;  // the pooled features the head starts from
  DropoutSpec drop(float p, int site) const;
  // The loss ops of loss() and loss_staged(): losses, hits and (dscale > 0) the logits' gradients.
  void loss_ops(float smoothing, float dscale, const DistillTarget* distill);

  ViTConfig cfg_;
  Backend& be_;
  int max_batch_;
  DType dtype_;
  Use use_;
  std::vector<ParamSpec> param_specs_;
  std::vector<ActivationSpec> act_specs_;
  std::vector<ParamSlot> param_slots_;
  std::vector<ActSlot> act_slots_;
  int64_t num_params_ = 0, arena_size_ = 0, act_bytes_ = 0, arena_multiple_ = 64;
  std::vector<int64_t> block_offset_;  // arena offset of block l's first parameter
  int64_t head_offset_ = 0;            // of the head's first parameter (the final norm)
  std::function<void(int64_t)> grads_ready_;
  void* param_mem_ = nullptr;  // params (+ master when dtypes differ)
  void* grad_mem_ = nullptr;
  void* act_mem_ = nullptr;
  Tensor params_, master_, grads_;
  ParamTensors p_, g_;  // compute-dtype parameters and their gradients
  ActTensors a_;
  StepState* state_ = nullptr;  // backend memory
  uint64_t offset_host_ = 0;    // the source of forward()'s dropout-offset upload
  // Forward state remembered for loss() and backward().
  int64_t batch_ = 0;
  bool train_ = false;
  bool split_heads_ = false;  // the last loss gave head_dist its own gradient (d_logits_dist)
  uint64_t seed_ = 0;
};

}  // namespace vitcuda
