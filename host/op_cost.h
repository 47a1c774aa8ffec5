// vitcuda — the cost of each Backend op from its arguments (what Backend's tracing reports):
// floating-point operations, and the DRAM bytes an ideal implementation moves (every input read
// once, every output written once, in the tensors' dtypes). The step model (bench/step_model)
// turns them into roofline times. One function per public op of include/vitcuda/backend.h, with
// the op's own arguments.
#pragma once
#include "vitcuda/backend.h"

namespace vitcuda::op_cost {

OpCost copy(const Tensor& src, const Tensor& dst);
OpCost add(const Tensor& a, const Tensor& b, const Tensor& out, float scale = 1.f);
OpCost patch_extract(const Tensor& images, ImageLayout layout, int patch, const float* mean, const float* stdev,
                     const Tensor& cols);
OpCost linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Act act, const Tensor& pre, const Tensor& y,
                      const DropoutSpec& drop = DropoutSpec{});
OpCost linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Act act, const Tensor& pre, const Tensor& dx,
                       const Tensor& dw, const Tensor& db, const DropoutSpec& drop = DropoutSpec{});
OpCost tokens_forward(const Tensor& patches, const Tensor& cls, const Tensor& dist, const Tensor& pos,
                      const Tensor& out);
OpCost tokens_backward(const Tensor& dout, const Tensor& dpatches, const Tensor& dcls, const Tensor& ddist,
                       const Tensor& dpos);
OpCost layernorm_forward(const Tensor& x, const Tensor& residual, const Tensor& sum_out, const Tensor& gamma,
                         const Tensor& beta, float eps, const Tensor& y, const Tensor& mean, const Tensor& rstd);
OpCost layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta);
OpCost attention_forward(const Tensor& qkv, int num_heads, float scale, const DropoutSpec& drop, const Tensor& out,
                         const Tensor& lse);
OpCost attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse, int num_heads,
                          float scale, const DropoutSpec& drop, const Tensor& dqkv);
OpCost dropout(const Tensor& x, const Tensor& y, const DropoutSpec& spec);
OpCost drop_path(const Tensor& x, const Tensor& y, const DropoutSpec& spec);
OpCost pool_forward(const Tensor& x, Pool pool, int num_prefix, const Tensor& out);
OpCost pool_backward(const Tensor& dout, Pool pool, int num_prefix, const Tensor& dx);
OpCost softmax_xent(const Tensor& logits, const Tensor& labels, float smoothing, float dscale, const Tensor& losses,
                    const Tensor& dlogits, const Tensor& hits);
OpCost distill_loss(const Tensor& student, const Tensor& teacher, Distill kind, float tau, float alpha, float dscale,
                    const Tensor& losses, const Tensor& dlogits, bool accumulate);
OpCost sum_squares(const Tensor& t);
OpCost step_metrics(const Tensor& losses, const Tensor& hits);
OpCost grad_sumsq(const Tensor& grads);
OpCost grad_norm_finish();
OpCost adamw_update(const Tensor& master, const Tensor& grads, const Tensor& m, const Tensor& v, const Tensor& params,
                    const AdamWHyper& h, const AdamWSegment* segments, int num_segments);

}  // namespace vitcuda::op_cost
