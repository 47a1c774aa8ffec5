// vitcuda — Backend: one interface, one method per op (forward and backward), three
// implementations: "cpu" (the fp32/fp64 reference), "cuda", "cuda-emu".
//
// Conventions, the same for every backend:
//  * Tensors are row-major; shapes are written [rows, cols] or [B, T, D].
//  * Parameter gradients (dw, db, dcls, dpos, dgamma, dbeta) ACCUMULATE (+=): the model
//    zeroes the gradient arena once per step. Activation gradients OVERWRITE, except
//    layernorm_backward's dx, which accumulates into the residual-stream gradient.
//  * An undefined Tensor (Tensor{}) means "absent" (no bias, no residual, no dx wanted).
//  * Dropout masks are never stored: they are regenerated from (seed, stream, index) with
//    Philox4x32-10, so the same call with the same DropoutSpec applies the same mask.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vitcuda/config.h"
#include "vitcuda/tensor.h"

namespace vitcuda {

enum class Act : uint8_t { None, GeluErf, GeluTanh, Tanh };
inline Act gelu_act(Gelu g) { return g == Gelu::Erf ? Act::GeluErf : Act::GeluTanh; }
inline const char* act_name(Act a) {
  switch (a) {
    case Act::None: return "None";
    case Act::GeluErf: return "GeluErf";
    case Act::GeluTanh: return "GeluTanh";
    case Act::Tanh: return "Tanh";
  }
  return "?";
}

// Where an op's random numbers come from. `stream` separates call sites and steps.
// With `stream_offset` set, the call's stream is stream + *stream_offset, read where the op
// runs and when it runs (device memory for "cuda", host memory otherwise): the model keeps the
// step's offset there, so one captured CUDA Graph applies a new mask at every step.
struct DropoutSpec {
  float p = 0.f;
  uint64_t seed = 0;
  uint64_t stream = 0;
  const uint64_t* stream_offset = nullptr;
  bool active() const { return p > 0.f; }
};

enum class ImageLayout : uint8_t { NCHW, NHWC };

// Knowledge distillation's term (DeiT, timm's DistillationLoss): the teacher's argmax as a hard
// label, or its softened distribution.
enum class Distill : uint8_t { Hard, Soft };
inline const char* distill_name(Distill d) { return d == Distill::Hard ? "hard" : "soft"; }

// AdamW's coefficients, those of torch.optim.AdamW(lr, betas, eps, weight_decay). The
// optimizer's configuration (AdamWConfig, vitcuda/optim.h) and the update op's arguments
// (AdamWHyper) both start from them.
struct AdamWCoefficients {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.05f;
};

// The arguments of one update (Backend::adamw_update): the coefficients, lr being this step's
// rate, and what changes every step.
// The state of a training step that lives where the step runs (device memory for "cuda"), so
// that the host writes nothing into a step but its inputs and reads nothing back until it wants
// to: one captured CUDA Graph serves every step. The host writes `lr` and `dropout_offset`
// before each step (a copy from pinned memory that the graph replays; they come first so one
// 16-byte copy does it); step_metrics, grad_norm_clip and adamw_update compute the rest. Plain
// data, the same layout on every backend; the host reads it with copy_to_host.
struct StepState {
  // ---- written by the host before each step
  float lr = 0.f;               // this step's learning rate
  int32_t reserved0 = 0;        //
  uint64_t dropout_offset = 0;  // DropoutSpec::stream_offset points here (the model: step · sites)
  // ---- this step (device-computed)
  double step_loss = 0;  // Σ of the batch's per-sample losses (step_metrics)
  int64_t step_samples = 0, step_top1 = 0, step_top5 = 0;
  double grad_sumsq = 0;   // Σ g² over the gradient arena (grad_sumsq; grad_norm_finish reads it)
  float grad_scale = 1.f;  // min(1, max_norm / (‖g‖ + 1e-6)), torch.nn.utils.clip_grad_norm_'s factor
  int32_t skip = 0;        // 1: this step's loss or a gradient is not finite: no update (AMP's rule)
  // ---- AdamW (device-computed by adamw_update)
  int64_t adam_step = 0;  // updates applied: skipped steps do not count (torch's state['step'])
  float inv_bc1 = 1.f, inv_bc2 = 1.f, decay_factor = 1.f;  // this update's scalars
  int32_t reserved1 = 0;
  // ---- accumulated over the applied steps since the host last cleared them
  double loss_sum = 0;
  int64_t samples = 0, top1 = 0, top5 = 0;
  int64_t skipped_steps = 0;  // steps not applied (non-finite loss or gradients)
};

struct AdamWHyper : AdamWCoefficients {
  int64_t step = 1;        // 1-based, for bias correction
  float grad_scale = 1.f;  // multiplies every gradient first (global-norm clipping)
  // When set (backend memory): lr, the step count and grad_scale come from the StepState where
  // the op runs, and the update is skipped when state->skip is set. `lr`, `step` and
  // `grad_scale` above are then ignored; the coefficients are used as given.
  StepState* state = nullptr;
};

// A contiguous run of the parameter arena with one weight-decay setting.
struct AdamWSegment {
  int64_t offset = 0;
  int64_t count = 0;
  bool decay = true;
};

// Public op methods validate their arguments (one Error naming the op and the argument)
// and call the backend's *_impl, as tiny-cuda-nn's public-validates / private-computes.
// ---- tracing: what each op costs and what it made the device runtime do ---------------------
// Counted by the runtime layer (kernels/runtime.h) of the "cuda" and "cuda-emu" backends, per
// process since the last reset; the CPU backend has no device runtime and reports zeros.
struct RuntimeCounters {
  int64_t launches = 0;                  // kernels started (launch())
  int64_t gemms = 0;                     // cuBLASLt matmuls (emulated ones too)
  int64_t h2d = 0, d2h = 0, d2d = 0;     // copies by direction
  int64_t memsets = 0;                   //
  int64_t h2d_bytes = 0, d2h_bytes = 0;  //
  int64_t syncs = 0;                     // blocking host waits: synchronise calls and copies to host
  int64_t graph_launches = 0;            // CUDA Graph replays (their work is counted above too)
};
RuntimeCounters operator-(const RuntimeCounters& a, const RuntimeCounters& b);
std::string to_string(const RuntimeCounters& c);  // "12 launches, 4 GEMMs, ..."

// One kernel launch or cuBLASLt matmul, as the runtime saw it. Kernels: the demangled name
// without arguments, grid, block and dynamic shared memory. GEMMs: kernel "cublasLtMatmul",
// m, n, k and the batch count.
struct LaunchRecord {
  std::string kernel;
  unsigned grid[3] = {1, 1, 1}, block[3] = {1, 1, 1};
  size_t smem = 0;
  int64_t m = 0, n = 0, k = 0, batch = 0;  // GEMMs only
};

// The work of one public op, from its arguments: floating-point operations and the DRAM bytes
// an ideal implementation moves (each input read once, each output written once).
struct OpCost {
  double flops = 0, bytes = 0;
};

// One public op as a tracer sees it: its name, its cost, and what the runtime did for it.
struct OpTrace {
  const char* op = "";
  OpCost cost;
  RuntimeCounters runtime;
  std::vector<LaunchRecord> launches;
};

// Receives every public op of a backend while set (Backend::set_tracer).
class OpTracer {
 public:
  virtual ~OpTracer() = default;
  virtual void on_op(const OpTrace& trace) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;
  // dtype of activations and of the parameter copy used by the step.
  virtual DType compute_dtype() const = 0;

  // ---- memory (bytes; device memory for "cuda", host memory otherwise) ----
  // What alloc() can hand out at most in all: the GPU's memory for "cuda", the host's physical
  // memory otherwise (no limit for the emulator's dry run, which touches no memory). Model
  // refuses a config and batch whose estimated footprint exceeds it before allocating.
  virtual uint64_t memory_capacity() const;
  virtual void* alloc(size_t bytes) = 0;
  virtual void release(void* ptr) = 0;
  virtual void copy_to_device(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy_to_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void zero(const Tensor& t) = 0;
  void copy(const Tensor& src, const Tensor& dst);  // same numel; converts dtype
  // out = (a + b) · scale, summed and scaled in fp32 (scale 1: exactly a + b). out may alias a or b.
  void add(const Tensor& a, const Tensor& b, const Tensor& out, float scale = 1.f);
  virtual void synchronize() {}
  // The native stream the backend's work is ordered on (cudaStream_t for "cuda"; nullptr where
  // there is none): the NCCL communicator orders its own stream against it with events.
  virtual void* native_stream() const { return nullptr; }

  // ---- what a step that runs without the host needs (TrainStep, vitcuda/train_step.h) ----
  // Host memory the device copies from asynchronously (pinned on "cuda"; plain elsewhere).
  virtual void* alloc_host(size_t bytes);
  virtual void release_host(void* ptr);
  // Uploads that overlap the work already queued: upload() copies `bytes` of alloc_host memory to
  // backend memory on a copy stream and marks `channel` (0..7) when they have landed;
  // wait_upload(channel) makes the backend's later work wait for that (on the device; while
  // capturing, the graph waits for the channel's latest upload each time it runs). Where ops
  // complete before they return (the CPU), a plain copy and a no-op.
  virtual void upload(void* dst, const void* src, size_t bytes, int channel);
  virtual void wait_upload(int channel) { (void)channel; }
  // Markers in the backend's stream: mark() after some work, wait_mark() blocks the host until
  // the device has done it (no-ops where ops complete before they return, as on the CPU).
  virtual int mark() { return 0; }
  virtual void wait_mark(int marker) { (void)marker; }
  // CUDA Graphs: the ops issued between begin_capture() and end_capture() are recorded, not run;
  // replay() runs them again (reading their arguments' memory as it is then). Only where
  // graphs_supported(); nothing may allocate, free or copy to the host while capturing.
  virtual bool graphs_supported() const { return false; }
  virtual void begin_capture();
  virtual void* end_capture();
  virtual void replay(void* graph);
  virtual void destroy_graph(void* graph) { (void)graph; }

  // ---- tracing (the step model, --summary's counters) ----
  // The runtime's counters since the process started or the last reset (zeros on the CPU).
  virtual RuntimeCounters runtime_counters() const { return {}; }
  virtual void reset_runtime_counters() {}
  // While a tracer is set, every public op reports an OpTrace to it (nullptr: off).
  void set_tracer(OpTracer* tracer);
  OpTracer* tracer() const { return tracer_; }

  // ---- patch_embed: images [B, C, H, W] (or [B, H, W, C]), uint8 or float ----
  // cols[b*Np + p, (c*P + ky)*P + kx] = (pixel/255 (uint8 only) - mean[c]) / std[c],
  // the im2col of Conv2d(kernel = stride = P); the projection is linear_forward on cols.
  void patch_extract(const Tensor& images, ImageLayout layout, int patch, const float* mean, const float* stdev,
                     const Tensor& cols);

  // ---- linear: y[R, N] = act(x[R, K] · w[N, K]ᵀ + b[N]); pre (if act != None) keeps
  // x·wᵀ+b. Backward: when act != None, dy is overwritten with the gradient of pre.
  // With drop active, y = dropout(act(...)): the mask and values of dropout(y, y, drop) over the
  // [R, N] output, in the same pass; backward then overwrites dy with act'(pre) ⊙ dropout(dy)
  // (the same regenerated mask), also when act is None.
  void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Act act, const Tensor& pre, const Tensor& y,
                      const DropoutSpec& drop = DropoutSpec{});
  void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Act act, const Tensor& pre, const Tensor& dx,
                       const Tensor& dw, const Tensor& db, const DropoutSpec& drop = DropoutSpec{});

  // ---- tokens: out[b] = [cls; dist; patches[b]] + pos: the prefix tokens (cls [D], then DeiT's
  // distillation token dist [D]; each absent when undefined, dist only with cls) before the
  // patches [B, Np, D]; pos [T, D], out [B, T, D], T = Np + prefix tokens.
  // Backward: dpatches = dout's patch rows; dcls, ddist, dpos ACCUMULATE the batch sums (parameter
  // gradients); the prefix count is that of the forward: dcls and ddist defined as cls and dist were.
  void tokens_forward(const Tensor& patches, const Tensor& cls, const Tensor& dist, const Tensor& pos,
                      const Tensor& out);
  void tokens_backward(const Tensor& dout, const Tensor& dpatches, const Tensor& dcls, const Tensor& ddist,
                       const Tensor& dpos);

  // ---- layernorm over the last dim of x[R, C]; with residual: s = x + residual is written
  // to sum_out and normalised. mean and rstd [R] (fp32) are saved for backward.
  void layernorm_forward(const Tensor& x, const Tensor& residual, const Tensor& sum_out, const Tensor& gamma,
                         const Tensor& beta, float eps, const Tensor& y, const Tensor& mean, const Tensor& rstd);
  // x is the normalised input (sum_out when the forward had a residual). dx accumulates.
  void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta);

  // ---- attention on the packed qkv projection (linear_forward's output [B, T, 3A], read as
  // [B, T, 3, H, d], A = H·d): out[B, T, A] = softmax(q kᵀ · scale) v per head, with dropout on
  // the probabilities; lse [B, H, T] (fp32) saved for the backward recomputation of P. Backward
  // OVERWRITES dqkv [B, T, 3A] (dq, dk, dv in place: the dy of the qkv linear_backward).
  void attention_forward(const Tensor& qkv, int num_heads, float scale, const DropoutSpec& drop, const Tensor& out,
                         const Tensor& lse);
  void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse, int num_heads,
                          float scale, const DropoutSpec& drop, const Tensor& dqkv);

  // ---- dropout: y = x * mask / (1 - p), element-wise; forward and backward are the same
  // call (the mask is regenerated). y may alias x. p == 0 copies.
  void dropout(const Tensor& x, const Tensor& y, const DropoutSpec& spec);
  // ---- drop_path (stochastic depth): x[B, ...], one keep/drop per sample, same rules.
  void drop_path(const Tensor& x, const Tensor& y, const DropoutSpec& spec);

  // ---- pooling of x[B, T, D]:
  // Pool::Token: the num_prefix (>= 1) prefix rows, token-major: out[p, b, :] = x[b, p, :],
  //   out [num_prefix · B, D] ([B, D], the cls row, for one; DeiT: the cls rows, then the
  //   distillation token's rows, each block the [B, D] input of its head);
  // Pool::Avg, as timm's global_pool='avg': out[B, D] = the mean over the tokens t >= num_prefix.
  // Backward OVERWRITES dx (zeros where the forward read nothing).
  void pool_forward(const Tensor& x, Pool pool, int num_prefix, const Tensor& out);
  void pool_backward(const Tensor& dout, Pool pool, int num_prefix, const Tensor& dx);

  // ---- softmax cross-entropy with label smoothing, one pass: per-sample loss [B] (fp32),
  // dlogits = (softmax - target) * dscale (skipped when undefined), hits [B] (i32,
  // bit 0: label is the top-1 class, bit 1: within the top 5).
  void softmax_xent(const Tensor& logits, const Tensor& labels, float smoothing, float dscale, const Tensor& losses,
                    const Tensor& dlogits, const Tensor& hits);

  // ---- distillation (DeiT; timm's DistillationLoss), per sample b of the student's logits s[B, C]
  // and the teacher's t[B, C] (same dtype):
  //   hard: L[b] = CE(s[b], argmax t[b])  (the first index of the maximum, as torch.argmax on the CPU)
  //   soft: L[b] = τ² · KL(q ‖ p) = τ² Σ_c q_c (log q_c − log p_c),  q = softmax(t[b]/τ), p = softmax(s[b]/τ)
  //         (F.kl_div(log p, log q, log_target=True) per sample)
  // losses [B] (f32, in/out; softmax_xent's label loss) becomes (1 − α)·losses[b] + α·L[b].
  // dlogits (optional, [B, C] in s's dtype) gets α·dscale·∂L/∂s[b] — hard: softmax(s) − onehot;
  // soft: τ·(p − q) — written, or added to what it holds when accumulate (a student with one head:
  // softmax_xent wrote (1 − α)·dscale·(softmax − target) there). α in [0, 1], τ > 0.
  void distill_loss(const Tensor& student, const Tensor& teacher, Distill kind, float tau, float alpha, float dscale,
                    const Tensor& losses, const Tensor& dlogits, bool accumulate);

  // ---- optimizer ----
  // Sum of squares of every element (for global grad-norm clipping). Synchronises.
  double sum_squares(const Tensor& t);
  // The step's metrics into `state` (backend memory): step_loss = Σ losses[B] (fp32 per sample,
  // summed in fp64 in sample order), step_top1/top5 from hits (softmax_xent's bits), step_samples
  // = B. commit: also add them to the accumulators now (evaluation; a training step's are added by
  // grad_norm_clip once the step is known to be applied).
  // accumulate: add to this step's metrics (step_loss += ..., step_samples += B, ...) instead of
  // replacing them (the micro-batches of one step under gradient accumulation).
  void step_metrics(const Tensor& losses, const Tensor& hits, StepState* state, bool commit, bool accumulate = false);
  // Global gradient norm on the device, in two halves so that a data-parallel step can reduce
  // Σ g² (ZeRO-1: each rank holds a shard of the gradients) and the step's metrics over the ranks
  // in between. Neither synchronises.
  // grad_sumsq: state->grad_sumsq = Σ g² over grads (in a fixed order, as sum_squares).
  void grad_sumsq(const Tensor& grads, StepState* state);
  // grad_norm_finish, from state->grad_sumsq: grad_scale = max_norm / (‖g‖ + 1e-6) when
  // max_norm > 0 and ‖g‖ > max_norm, else 1; skip = the step's loss or Σ g² is not finite; then
  // the step's metrics are added to the accumulators, or skipped_steps counts it.
  void grad_norm_finish(float max_norm, StepState* state);
  // Both halves on one process's whole gradient arena.
  void grad_norm_clip(const Tensor& grads, float max_norm, StepState* state);
  // AdamW with decoupled weight decay over the fp32 master arena; `params` (compute
  // dtype, may alias master) receives the updated weights.
  void adamw_update(const Tensor& master, const Tensor& grads, const Tensor& m, const Tensor& v, const Tensor& params,
                    const AdamWHyper& h, const AdamWSegment* segments, int num_segments);

 protected:
  // While tracing, the backend's runtime keeps LaunchRecords; take_launches() hands them over.
  virtual void record_launches(bool on) { (void)on; }
  virtual std::vector<LaunchRecord> take_launches() { return {}; }
  friend class OpScope;

  // What a backend implements: called by the public op above after it has checked shapes
  // and argument consistency (host/backend.cpp), so the checks are the same for every
  // backend; an implementation adds only what is specific to it (supported dtypes, sizes).
  virtual void copy_impl(const Tensor& src, const Tensor& dst) = 0;
  virtual void add_impl(const Tensor& a, const Tensor& b, const Tensor& out, float scale) = 0;
  virtual void patch_extract_impl(const Tensor& images, ImageLayout layout, int patch, const float* mean,
                                  const float* stdev, const Tensor& cols) = 0;
  virtual void linear_forward_impl(const Tensor& x, const Tensor& w, const Tensor& b, Act act, const Tensor& pre,
                                   const Tensor& y, const DropoutSpec& drop) = 0;
  virtual void linear_backward_impl(const Tensor& dy, const Tensor& x, const Tensor& w, Act act, const Tensor& pre,
                                    const Tensor& dx, const Tensor& dw, const Tensor& db, const DropoutSpec& drop) = 0;
  virtual void tokens_forward_impl(const Tensor& patches, const Tensor& cls, const Tensor& dist, const Tensor& pos,
                                   const Tensor& out) = 0;
  virtual void tokens_backward_impl(const Tensor& dout, const Tensor& dpatches, const Tensor& dcls, const Tensor& ddist,
                                    const Tensor& dpos) = 0;
  virtual void layernorm_forward_impl(const Tensor& x, const Tensor& residual, const Tensor& sum_out,
                                      const Tensor& gamma, const Tensor& beta, float eps, const Tensor& y,
                                      const Tensor& mean, const Tensor& rstd) = 0;
  virtual void layernorm_backward_impl(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                       const Tensor& rstd, const Tensor& dx, const Tensor& dgamma,
                                       const Tensor& dbeta) = 0;
  virtual void attention_forward_impl(const Tensor& qkv, int num_heads, float scale, const DropoutSpec& drop,
                                      const Tensor& out, const Tensor& lse) = 0;
  virtual void attention_backward_impl(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                                       int num_heads, float scale, const DropoutSpec& drop, const Tensor& dqkv) = 0;
  virtual void dropout_impl(const Tensor& x, const Tensor& y, const DropoutSpec& spec) = 0;
  virtual void drop_path_impl(const Tensor& x, const Tensor& y, const DropoutSpec& spec) = 0;
  virtual void pool_forward_impl(const Tensor& x, Pool pool, int num_prefix, const Tensor& out) = 0;
  virtual void pool_backward_impl(const Tensor& dout, Pool pool, int num_prefix, const Tensor& dx) = 0;
  virtual void softmax_xent_impl(const Tensor& logits, const Tensor& labels, float smoothing, float dscale,
                                 const Tensor& losses, const Tensor& dlogits, const Tensor& hits) = 0;
  virtual void distill_loss_impl(const Tensor& student, const Tensor& teacher, Distill kind, float tau, float alpha,
                                 float dscale, const Tensor& losses, const Tensor& dlogits, bool accumulate) = 0;
  virtual double sum_squares_impl(const Tensor& t) = 0;
  virtual void step_metrics_impl(const Tensor& losses, const Tensor& hits, StepState* state, bool commit,
                                 bool accumulate) = 0;
  virtual void grad_sumsq_impl(const Tensor& grads, StepState* state) = 0;
  virtual void grad_norm_finish_impl(float max_norm, StepState* state) = 0;
  virtual void adamw_update_impl(const Tensor& master, const Tensor& grads, const Tensor& m, const Tensor& v,
                                 const Tensor& params, const AdamWHyper& h, const AdamWSegment* segments,
                                 int num_segments) = 0;

 private:
  OpTracer* tracer_ = nullptr;
};

// "cpu" (fp32; fp64 tensors for gradient checks) or "cuda" (compute: DType::BF16 — bf16
// activations and weight copy, fp32 accumulation, master weights, gradients and optimizer
// state — or DType::F32). The emulated "cuda-emu" backend is linked into the kernel tests
// only (kernels/cuda_backend.h). Throws Error naming the backend when it is unknown or not
// available in this build or on this machine.
std::unique_ptr<Backend> make_backend(const std::string& name, DType compute = DType::BF16);
bool cuda_device_available();  // a CUDA GPU is present and usable
// Makes GPU `ordinal` the current device of this process (a data-parallel rank takes its local
// rank's GPU); an Error naming the ordinal and the GPU count when it does not exist; a no-op for 0
// in a build without CUDA.
void use_cuda_device(int ordinal);

// The --device flag of the tools: "cpu", "cuda" (an Error when no GPU is present) or "auto"
// (the GPU when present and supported by this build, else the CPU; when it falls back
// although a GPU is present, the reason goes to *note).
std::unique_ptr<Backend> pick_backend(const std::string& device, DType compute = DType::BF16,
                                      std::string* note = nullptr);

}  // namespace vitcuda
