// vitcuda — the cost of each Backend op (host/op_cost.h). FLOPs count a multiply-add as two
// operations and the element-wise work of normalisations and activations at a few operations per
// element (negligible beside the GEMMs, but not zero: the step model's element-wise ops are
// memory-bound anyway). Bytes: each defined input read once and each output written once; an
// output that accumulates (parameter gradients, LayerNorm's dx) is read and written.
#include "host/op_cost.h"

namespace vitcuda::op_cost {
namespace {

double bytes(const Tensor& t) { return t.defined() ? double(t.nbytes()) : 0.0; }
double numel(const Tensor& t) { return t.defined() ? double(t.numel()) : 0.0; }
// A dropout-like op that is a no-op: rate 0 in place moves nothing.
bool inert(const Tensor& x, const Tensor& y, const DropoutSpec& spec) { return spec.p <= 0.f && x.data() == y.data(); }

}  // namespace

OpCost copy(const Tensor& src, const Tensor& dst) { return {0.0, bytes(src) + bytes(dst)}; }

OpCost add(const Tensor& a, const Tensor& b, const Tensor& out, float scale) {
  return {(scale == 1.f ? 1.0 : 2.0) * numel(out), bytes(a) + bytes(b) + bytes(out)};
}

OpCost patch_extract(const Tensor& images, ImageLayout, int, const float*, const float*, const Tensor& cols) {
  return {2.0 * numel(cols), bytes(images) + bytes(cols)};  // (x - mean) * (1 / std)
}

// Dropout fused into the linear (drop active): its compare and scale per output element; no bytes,
// the ideal implementation applies it while the output is in registers.
OpCost linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Act act, const Tensor& pre, const Tensor& y,
                      const DropoutSpec& drop) {
  const double N = double(w.size(0)), K = double(w.size(1)), R = numel(x) / K;
  const double epilogue = R * N * ((b.defined() ? 1 : 0) + (act != Act::None ? 8 : 0) + (drop.active() ? 2 : 0));
  return {2.0 * R * K * N + epilogue, bytes(x) + bytes(w) + bytes(b) + bytes(pre) + bytes(y)};
}

OpCost linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Act act, const Tensor& pre, const Tensor& dx,
                       const Tensor& dw, const Tensor& db, const DropoutSpec& drop) {
  const double N = double(w.size(0)), K = double(w.size(1)), R = numel(x) / K;
  double flops = act != Act::None ? 8.0 * R * N : 0.0;  // dy *= act'(pre)
  if (drop.active()) flops += 2.0 * R * N;              // dy = dropout(dy)
  if (dx.defined()) flops += 2.0 * R * N * K;
  if (dw.defined()) flops += 2.0 * R * N * K;
  if (db.defined()) flops += R * N;
  // pre read (act), dy rewritten (act or dropout)
  const double act_bytes =
      (act != Act::None ? bytes(pre) : 0.0) + (act != Act::None || drop.active() ? bytes(dy) : 0.0);
  return {flops, bytes(dy) + bytes(x) + bytes(w) + act_bytes + bytes(dx) + 2 * bytes(dw) + 2 * bytes(db)};
}

OpCost tokens_forward(const Tensor& patches, const Tensor& cls, const Tensor& dist, const Tensor& pos,
                      const Tensor& out) {
  return {numel(out), bytes(patches) + bytes(cls) + bytes(dist) + bytes(pos) + bytes(out)};
}

OpCost tokens_backward(const Tensor& dout, const Tensor& dpatches, const Tensor& dcls, const Tensor& ddist,
                       const Tensor& dpos) {
  return {numel(dout), bytes(dout) + bytes(dpatches) + 2 * bytes(dcls) + 2 * bytes(ddist) + 2 * bytes(dpos)};
}

OpCost layernorm_forward(const Tensor& x, const Tensor& residual, const Tensor& sum_out, const Tensor& gamma,
                         const Tensor& beta, float, const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  const double n = numel(x);
  return {(residual.defined() ? 1 : 0) * n + 8.0 * n, bytes(x) + bytes(residual) + bytes(sum_out) + bytes(gamma) +
                                                          bytes(beta) + bytes(y) + bytes(mean) + bytes(rstd)};
}

OpCost layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta) {
  return {12.0 * numel(x), bytes(dy) + bytes(x) + bytes(gamma) + bytes(mean) + bytes(rstd) + 2 * bytes(dx) +
                               2 * bytes(dgamma) + 2 * bytes(dbeta)};
}

// qkv: [B, N, 3, H, d]. Forward: S = q·kᵀ and O = P·v, 2·N²·d each per head, and the softmax at
// ~5 operations per score. Backward, as the kernels do it (kernels/attention.cu: deterministic,
// no dQ atomics): the dQ kernel recomputes S = q·kᵀ and dP = dO·vᵀ and forms dQ = dS·k; the dK-dV
// kernel recomputes S and dP again and forms dV = Pᵀ·dO, dK = dSᵀ·q: seven N²·d products (FA2's
// atomics version does five), the softmax recomputation twice.
OpCost attention_forward(const Tensor& qkv, int num_heads, float, const DropoutSpec& drop, const Tensor& out,
                         const Tensor& lse) {
  const double B = double(qkv.size(0)), N = double(qkv.size(1)), H = num_heads, d = double(qkv.size(2)) / (3 * H);
  const double scores = B * H * N * N;
  return {4.0 * scores * d + (5.0 + (drop.p > 0 ? 2.0 : 0.0)) * scores, bytes(qkv) + bytes(out) + bytes(lse)};
}

OpCost attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse, int num_heads,
                          float, const DropoutSpec& drop, const Tensor& dqkv) {
  const double B = double(qkv.size(0)), N = double(qkv.size(1)), H = num_heads, d = double(qkv.size(2)) / (3 * H);
  const double scores = B * H * N * N;
  return {14.0 * scores * d + 2 * (7.0 + (drop.p > 0 ? 2.0 : 0.0)) * scores,
          bytes(dout) + bytes(qkv) + bytes(out) + bytes(lse) + bytes(dqkv)};
}

OpCost dropout(const Tensor& x, const Tensor& y, const DropoutSpec& spec) {
  if (inert(x, y, spec)) return {};
  return {2.0 * numel(x), bytes(x) + bytes(y)};
}

OpCost drop_path(const Tensor& x, const Tensor& y, const DropoutSpec& spec) {
  if (inert(x, y, spec)) return {};
  return {numel(x), bytes(x) + bytes(y)};
}

OpCost pool_forward(const Tensor& x, Pool, int, const Tensor& out) { return {numel(x), bytes(x) + bytes(out)}; }

OpCost pool_backward(const Tensor& dout, Pool, int, const Tensor& dx) {
  return {numel(dx), bytes(dout) + bytes(dx)};  // dx is overwritten (backend.h), every element
}

OpCost softmax_xent(const Tensor& logits, const Tensor& labels, float, float, const Tensor& losses,
                    const Tensor& dlogits, const Tensor& hits) {
  return {(dlogits.defined() ? 8.0 : 5.0) * numel(logits),
          bytes(logits) + bytes(labels) + bytes(losses) + bytes(dlogits) + bytes(hits)};
}

// Per logit: the student's softmax (max, exp, sum, ~5 operations), for soft the teacher's too and
// the KL term (~12 in all); the gradient ~3 more. losses read and written, dlogits written (read
// too when it accumulates).
OpCost distill_loss(const Tensor& student, const Tensor& teacher, Distill kind, float, float, float,
                    const Tensor& losses, const Tensor& dlogits, bool accumulate) {
  const double per_logit = (kind == Distill::Soft ? 12.0 : 5.0) + (dlogits.defined() ? 3.0 : 0.0);
  return {per_logit * numel(student),
          bytes(student) + bytes(teacher) + 2 * bytes(losses) + (accumulate ? 2 : 1) * bytes(dlogits)};
}

OpCost sum_squares(const Tensor& t) { return {2.0 * numel(t), bytes(t)}; }
OpCost step_metrics(const Tensor& losses, const Tensor& hits) {
  return {double(numel(losses)), bytes(losses) + bytes(hits)};
}
OpCost grad_sumsq(const Tensor& grads) { return sum_squares(grads); }
OpCost grad_norm_finish() { return {}; }  // a few scalars of the StepState

// Per parameter: master, m and v read and written, the gradient read, the compute-dtype copy
// written (when separate); ~12 operations of the AdamW update.
OpCost adamw_update(const Tensor& master, const Tensor& grads, const Tensor& m, const Tensor& v, const Tensor& params,
                    const AdamWHyper&, const AdamWSegment*, int) {
  const bool separate = params.defined() && params.data() != master.data();
  return {12.0 * numel(master),
          2 * bytes(master) + bytes(grads) + 2 * bytes(m) + 2 * bytes(v) + (separate ? bytes(params) : 0.0)};
}

}  // namespace vitcuda::op_cost
