// vitcuda — the Backend's public ops: argument checks shared by every backend, then the
// backend's implementation. A check failure is one Error naming the op and the argument.
#include "vitcuda/backend.h"

#include <cmath>
#include <exception>
#include <string>
#include <utility>

#include "host/file_io.h"  // physical_memory_bytes
#include "host/op_cost.h"

namespace vitcuda {
namespace {

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string(op) + ": " + what);
}

void defined(const char* op, const char* name, const Tensor& t) {
  require(t.defined(), op, std::string(name) + " is null");
}

// An optional tensor, when given, has n elements.
void numel_is(const char* op, const char* name, const Tensor& t, int64_t n) {
  if (t.defined())
    require(t.numel() == n, op,
            std::string(name) + " has shape " + t.shape_str() + ", expected " + std::to_string(n) + " elements");
}

// Every given tensor of `ts` has the dtype of `ref` (when `ref` is given).
void same_dtype(const char* op, const Tensor& ref, std::initializer_list<std::pair<const char*, const Tensor*>> ts) {
  if (!ref.defined()) return;
  for (auto [name, t] : ts)
    if (t->defined() && t->dtype() != ref.dtype())
      require(false, op, std::string(name) + " is " + dtype_name(t->dtype()) + ", expected " + dtype_name(ref.dtype()));
}

// The packed qkv projection [B, T, 3A] with A = num_heads · d.
void packed_qkv(const char* op, const char* name, const Tensor& t, int num_heads) {
  defined(op, name, t);
  require(num_heads > 0, op, "num_heads must be > 0, got " + std::to_string(num_heads));
  require(t.ndim() == 3 && t.size(2) % (3 * int64_t(num_heads)) == 0, op,
          std::string(name) + " must be [B, T, 3*H*d] with H=" + std::to_string(num_heads) + ", got " + t.shape_str());
}

}  // namespace

// ---- tracing ----------------------------------------------------------------------------------
RuntimeCounters operator-(const RuntimeCounters& a, const RuntimeCounters& b) {
  RuntimeCounters d;
  d.launches = a.launches - b.launches;
  d.gemms = a.gemms - b.gemms;
  d.h2d = a.h2d - b.h2d;
  d.d2h = a.d2h - b.d2h;
  d.d2d = a.d2d - b.d2d;
  d.memsets = a.memsets - b.memsets;
  d.h2d_bytes = a.h2d_bytes - b.h2d_bytes;
  d.d2h_bytes = a.d2h_bytes - b.d2h_bytes;
  d.syncs = a.syncs - b.syncs;
  d.graph_launches = a.graph_launches - b.graph_launches;
  return d;
}

std::string to_string(const RuntimeCounters& c) {
  return std::to_string(c.launches) + " launches, " + std::to_string(c.gemms) + " GEMMs, " + std::to_string(c.h2d) +
         " host-to-device copies (" + std::to_string(c.h2d_bytes) + " B), " + std::to_string(c.d2h) +
         " device-to-host copies (" + std::to_string(c.d2h_bytes) + " B), " + std::to_string(c.d2d) +
         " device copies, " + std::to_string(c.memsets) + " memsets, " + std::to_string(c.syncs) + " blocking syncs, " +
         std::to_string(c.graph_launches) + " graph launches";
}

void Backend::set_tracer(OpTracer* tracer) {
  if (tracer_ == tracer) return;
  tracer_ = tracer;
  record_launches(tracer != nullptr);
  take_launches();  // nothing recorded before belongs to the first traced op
}

// Reports one public op to the backend's tracer: its cost (computed only while tracing), the
// runtime counters it moved and its launches. An op that an implementation calls from inside
// another op (the CPU AdamW copying master to params) belongs to the outer one; an op that
// throws is not reported.
class OpScope {
 public:
  template <typename CostFn>
  OpScope(Backend& backend, const char* op, CostFn&& cost) : be_(backend) {
    if (!be_.tracer_ || depth()++ > 0) return;
    active_ = true;
    trace_.op = op;
    trace_.cost = cost();
    before_ = be_.runtime_counters();
  }
  ~OpScope() {
    if (!be_.tracer_) return;
    if (!active_) {
      if (depth() > 0) --depth();
      return;
    }
    --depth();
    if (std::uncaught_exceptions() > 0) return;
    trace_.runtime = be_.runtime_counters() - before_;
    trace_.launches = be_.take_launches();
    be_.tracer_->on_op(trace_);
  }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  static int& depth() {
    thread_local int d = 0;
    return d;
  }
  Backend& be_;
  bool active_ = false;
  OpTrace trace_;
  RuntimeCounters before_;
};

void Backend::copy(const Tensor& src, const Tensor& dst) {
  defined("copy", "src", src);
  defined("copy", "dst", dst);
  numel_is("copy", "dst", dst, src.numel());
  const OpScope scope(*this, "copy", [&] { return op_cost::copy(src, dst); });
  copy_impl(src, dst);
}

void Backend::add(const Tensor& a, const Tensor& b, const Tensor& out, float scale) {
  defined("add", "a", a);
  defined("add", "b", b);
  defined("add", "out", out);
  numel_is("add", "b", b, a.numel());
  numel_is("add", "out", out, a.numel());
  same_dtype("add", a, {{"b", &b}, {"out", &out}});
  require(std::isfinite(scale), "add", "scale must be finite, got " + std::to_string(scale));
  const OpScope scope(*this, "add", [&] { return op_cost::add(a, b, out, scale); });
  add_impl(a, b, out, scale);
}

void Backend::patch_extract(const Tensor& images, ImageLayout layout, int patch, const float* mean, const float* stdev,
                            const Tensor& cols) {
  const char* op = "patch_extract";
  defined(op, "images", images);
  defined(op, "cols", cols);
  require(mean && stdev, op, "mean and std must be given");
  require(images.ndim() == 4, op, "images must be [B, C, H, W] or [B, H, W, C], got " + images.shape_str());
  require(images.dtype() == DType::U8 || images.dtype() == DType::F32, op, "images must be u8 or f32");
  const bool nchw = layout == ImageLayout::NCHW;
  const int64_t B = images.size(0), C = images.size(nchw ? 1 : 3), H = images.size(nchw ? 2 : 1),
                W = images.size(nchw ? 3 : 2);
  require(patch > 0 && H % patch == 0 && W % patch == 0, op,
          "patch " + std::to_string(patch) + " does not divide the image " + images.shape_str());
  numel_is(op, "cols", cols, B * (H / patch) * (W / patch) * C * patch * patch);
  const OpScope scope(*this, "patch_extract",
                      [&] { return op_cost::patch_extract(images, layout, patch, mean, stdev, cols); });
  patch_extract_impl(images, layout, patch, mean, stdev, cols);
}

void Backend::linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Act act, const Tensor& pre,
                             const Tensor& y, const DropoutSpec& drop) {
  const char* op = "linear_forward";
  defined(op, "x", x);
  defined(op, "w", w);
  defined(op, "y", y);
  require(w.ndim() == 2, op, "w must be [N, K], got " + w.shape_str());
  const int64_t N = w.size(0), K = w.size(1), R = x.numel() / K;
  require(x.numel() == R * K, op, "x " + x.shape_str() + " is not a multiple of K = " + std::to_string(K));
  numel_is(op, "y", y, R * N);
  numel_is(op, "b", b, N);
  require(act == Act::None || pre.defined(), op, "an activation needs the pre-activation buffer");
  numel_is(op, "pre", pre, R * N);
  same_dtype(op, x, {{"w", &w}, {"b", &b}, {"pre", &pre}, {"y", &y}});
  require(drop.p >= 0.f && drop.p < 1.f, op, "dropout p must be in [0, 1)");
  const OpScope scope(*this, "linear_forward", [&] { return op_cost::linear_forward(x, w, b, act, pre, y, drop); });
  linear_forward_impl(x, w, b, act, pre, y, drop);
}

void Backend::linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Act act, const Tensor& pre,
                              const Tensor& dx, const Tensor& dw, const Tensor& db, const DropoutSpec& drop) {
  const char* op = "linear_backward";
  defined(op, "dy", dy);
  defined(op, "w", w);
  require(w.ndim() == 2, op, "w must be [N, K], got " + w.shape_str());
  const int64_t N = w.size(0), K = w.size(1), R = dy.numel() / N;
  require(dy.numel() == R * N, op, "dy " + dy.shape_str() + " is not a multiple of N = " + std::to_string(N));
  require(!dw.defined() || x.defined(), op, "dw needs x");
  numel_is(op, "x", x, R * K);
  numel_is(op, "dx", dx, R * K);
  numel_is(op, "dw", dw, N * K);
  numel_is(op, "db", db, N);
  require(act == Act::None || pre.defined(), op, "an activation needs the pre-activation buffer");
  numel_is(op, "pre", pre, R * N);
  same_dtype(op, dy, {{"x", &x}, {"w", &w}, {"pre", &pre}, {"dx", &dx}});
  same_dtype(op, dw, {{"db", &db}});
  require(drop.p >= 0.f && drop.p < 1.f, op, "dropout p must be in [0, 1)");
  const OpScope scope(*this, "linear_backward",
                      [&] { return op_cost::linear_backward(dy, x, w, act, pre, dx, dw, db, drop); });
  linear_backward_impl(dy, x, w, act, pre, dx, dw, db, drop);
}

void Backend::tokens_forward(const Tensor& patches, const Tensor& cls, const Tensor& dist, const Tensor& pos,
                             const Tensor& out) {
  const char* op = "tokens_forward";
  defined(op, "patches", patches);
  defined(op, "pos", pos);
  defined(op, "out", out);
  require(!dist.defined() || cls.defined(), op, "dist (the distillation token) needs cls");
  require(patches.ndim() == 3, op, "patches must be [B, Np, D], got " + patches.shape_str());
  const int64_t B = patches.size(0), Np = patches.size(1), D = patches.size(2);
  const int64_t T = Np + (cls.defined() ? 1 : 0) + (dist.defined() ? 1 : 0);
  numel_is(op, "cls", cls, D);
  numel_is(op, "dist", dist, D);
  numel_is(op, "pos", pos, T * D);
  numel_is(op, "out", out, B * T * D);
  same_dtype(op, patches, {{"cls", &cls}, {"dist", &dist}, {"pos", &pos}, {"out", &out}});
  const OpScope scope(*this, "tokens_forward", [&] { return op_cost::tokens_forward(patches, cls, dist, pos, out); });
  tokens_forward_impl(patches, cls, dist, pos, out);
}

void Backend::tokens_backward(const Tensor& dout, const Tensor& dpatches, const Tensor& dcls, const Tensor& ddist,
                              const Tensor& dpos) {
  const char* op = "tokens_backward";
  defined(op, "dout", dout);
  require(!ddist.defined() || dcls.defined(), op, "ddist (the distillation token's gradient) needs dcls");
  require(dout.ndim() == 3, op, "dout must be [B, T, D], got " + dout.shape_str());
  const int64_t B = dout.size(0), T = dout.size(1), D = dout.size(2);
  const int64_t prefix = (dcls.defined() ? 1 : 0) + (ddist.defined() ? 1 : 0), Np = T - prefix;
  require(Np >= 0, op, "dout " + dout.shape_str() + " has fewer than the " + std::to_string(prefix) + " prefix tokens");
  numel_is(op, "dpatches", dpatches, B * Np * D);
  numel_is(op, "dcls", dcls, D);
  numel_is(op, "ddist", ddist, D);
  numel_is(op, "dpos", dpos, T * D);
  same_dtype(op, dpos, {{"dcls", &dcls}, {"ddist", &ddist}});
  same_dtype(op, dcls, {{"ddist", &ddist}});
  same_dtype(op, dout, {{"dpatches", &dpatches}});
  const OpScope scope(*this, "tokens_backward",
                      [&] { return op_cost::tokens_backward(dout, dpatches, dcls, ddist, dpos); });
  tokens_backward_impl(dout, dpatches, dcls, ddist, dpos);
}

void Backend::layernorm_forward(const Tensor& x, const Tensor& residual, const Tensor& sum_out, const Tensor& gamma,
                                const Tensor& beta, float eps, const Tensor& y, const Tensor& mean,
                                const Tensor& rstd) {
  const char* op = "layernorm_forward";
  defined(op, "x", x);
  defined(op, "gamma", gamma);
  defined(op, "beta", beta);
  defined(op, "y", y);
  defined(op, "mean", mean);
  defined(op, "rstd", rstd);
  const int64_t C = gamma.numel(), R = C > 0 ? x.numel() / C : 0;
  require(C > 0 && x.numel() == R * C, op, "x " + x.shape_str() + " does not match gamma " + gamma.shape_str());
  require(eps > 0.f, op, "eps must be positive");
  numel_is(op, "beta", beta, C);
  numel_is(op, "residual", residual, R * C);
  numel_is(op, "sum_out", sum_out, R * C);
  require(residual.defined() == sum_out.defined(), op, "residual and sum_out come together");
  numel_is(op, "y", y, R * C);
  numel_is(op, "mean", mean, R);
  numel_is(op, "rstd", rstd, R);
  same_dtype(op, x, {{"residual", &residual}, {"sum_out", &sum_out}, {"gamma", &gamma}, {"beta", &beta}, {"y", &y}});
  same_dtype(op, mean, {{"rstd", &rstd}});
  const OpScope scope(*this, "layernorm_forward", [&] {
    return op_cost::layernorm_forward(x, residual, sum_out, gamma, beta, eps, y, mean, rstd);
  });
  layernorm_forward_impl(x, residual, sum_out, gamma, beta, eps, y, mean, rstd);
}

void Backend::layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                 const Tensor& rstd, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta) {
  const char* op = "layernorm_backward";
  defined(op, "dy", dy);
  defined(op, "x", x);
  defined(op, "gamma", gamma);
  defined(op, "mean", mean);
  defined(op, "rstd", rstd);
  const int64_t C = gamma.numel(), R = C > 0 ? x.numel() / C : 0;
  require(C > 0 && x.numel() == R * C, op, "x " + x.shape_str() + " does not match gamma " + gamma.shape_str());
  numel_is(op, "dy", dy, R * C);
  numel_is(op, "dx", dx, R * C);
  numel_is(op, "mean", mean, R);
  numel_is(op, "rstd", rstd, R);
  numel_is(op, "dgamma", dgamma, C);
  numel_is(op, "dbeta", dbeta, C);
  same_dtype(op, dy, {{"x", &x}, {"gamma", &gamma}, {"dx", &dx}});
  same_dtype(op, dgamma, {{"dbeta", &dbeta}});
  const OpScope scope(*this, "layernorm_backward",
                      [&] { return op_cost::layernorm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta); });
  layernorm_backward_impl(dy, x, gamma, mean, rstd, dx, dgamma, dbeta);
}

void Backend::attention_forward(const Tensor& qkv, int num_heads, float scale, const DropoutSpec& drop,
                                const Tensor& out, const Tensor& lse) {
  const char* op = "attention_forward";
  packed_qkv(op, "qkv", qkv, num_heads);
  defined(op, "out", out);
  defined(op, "lse", lse);
  const int64_t B = qkv.size(0), N = qkv.size(1), A = qkv.size(2) / 3;
  numel_is(op, "out", out, B * N * A);
  numel_is(op, "lse", lse, B * num_heads * N);
  require(drop.p >= 0.f && drop.p < 1.f, op, "dropout p must be in [0, 1)");
  same_dtype(op, qkv, {{"out", &out}});
  const OpScope scope(*this, "attention_forward",
                      [&] { return op_cost::attention_forward(qkv, num_heads, scale, drop, out, lse); });
  attention_forward_impl(qkv, num_heads, scale, drop, out, lse);
}

void Backend::attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                                 int num_heads, float scale, const DropoutSpec& drop, const Tensor& dqkv) {
  const char* op = "attention_backward";
  packed_qkv(op, "qkv", qkv, num_heads);
  for (auto [name, t] :
       {std::pair<const char*, const Tensor*>{"dout", &dout}, {"out", &out}, {"lse", &lse}, {"dqkv", &dqkv}})
    defined(op, name, *t);
  const int64_t B = qkv.size(0), N = qkv.size(1), A = qkv.size(2) / 3;
  numel_is(op, "dout", dout, B * N * A);
  numel_is(op, "out", out, B * N * A);
  numel_is(op, "lse", lse, B * num_heads * N);
  numel_is(op, "dqkv", dqkv, B * N * 3 * A);
  require(dqkv.data() != qkv.data(), op, "dqkv must not alias qkv");
  require(drop.p >= 0.f && drop.p < 1.f, op, "dropout p must be in [0, 1)");
  same_dtype(op, qkv, {{"dout", &dout}, {"out", &out}, {"dqkv", &dqkv}});
  const OpScope scope(*this, "attention_backward",
                      [&] { return op_cost::attention_backward(dout, qkv, out, lse, num_heads, scale, drop, dqkv); });
  attention_backward_impl(dout, qkv, out, lse, num_heads, scale, drop, dqkv);
}

void Backend::dropout(const Tensor& x, const Tensor& y, const DropoutSpec& spec) {
  defined("dropout", "x", x);
  defined("dropout", "y", y);
  numel_is("dropout", "y", y, x.numel());
  same_dtype("dropout", x, {{"y", &y}});
  require(spec.p >= 0.f && spec.p < 1.f, "dropout", "p must be in [0, 1)");
  const OpScope scope(*this, "dropout", [&] { return op_cost::dropout(x, y, spec); });
  dropout_impl(x, y, spec);
}

void Backend::drop_path(const Tensor& x, const Tensor& y, const DropoutSpec& spec) {
  defined("drop_path", "x", x);
  defined("drop_path", "y", y);
  require(x.ndim() >= 1 && x.size(0) > 0, "drop_path", "x must be [B, ...] with B > 0");
  numel_is("drop_path", "y", y, x.numel());
  same_dtype("drop_path", x, {{"y", &y}});
  require(spec.p >= 0.f && spec.p < 1.f, "drop_path", "p must be in [0, 1)");
  const OpScope scope(*this, "drop_path", [&] { return op_cost::drop_path(x, y, spec); });
  drop_path_impl(x, y, spec);
}

namespace {

// Pool::Token reads the num_prefix (1..T) prefix rows; Pool::Avg the mean of at least one row
// after num_prefix (0..T-1).
void check_pool_prefix(const char* op, Pool pool, int num_prefix, int64_t T) {
  require(pool != Pool::Flatten, op, "flatten is a view, not an op");
  if (pool == Pool::Token)
    require(num_prefix >= 1 && num_prefix <= T, op,
            "num_prefix " + std::to_string(num_prefix) + " out of range: Pool::Token pools 1 to " + std::to_string(T) +
                " prefix tokens");
  else
    require(num_prefix >= 0 && num_prefix < T, op,
            "num_prefix " + std::to_string(num_prefix) + " out of range: Pool::Avg needs 0 <= num_prefix < " +
                std::to_string(T));
}

int64_t pooled_rows(Pool pool, int num_prefix, int64_t B) { return pool == Pool::Token ? num_prefix * B : B; }

}  // namespace

void Backend::pool_forward(const Tensor& x, Pool pool, int num_prefix, const Tensor& out) {
  defined("pool_forward", "x", x);
  defined("pool_forward", "out", out);
  require(x.ndim() == 3, "pool_forward", "x must be [B, T, D], got " + x.shape_str());
  check_pool_prefix("pool_forward", pool, num_prefix, x.size(1));
  numel_is("pool_forward", "out", out, pooled_rows(pool, num_prefix, x.size(0)) * x.size(2));
  same_dtype("pool_forward", x, {{"out", &out}});
  const OpScope scope(*this, "pool_forward", [&] { return op_cost::pool_forward(x, pool, num_prefix, out); });
  pool_forward_impl(x, pool, num_prefix, out);
}

void Backend::pool_backward(const Tensor& dout, Pool pool, int num_prefix, const Tensor& dx) {
  defined("pool_backward", "dout", dout);
  defined("pool_backward", "dx", dx);
  require(dx.ndim() == 3, "pool_backward", "dx must be [B, T, D], got " + dx.shape_str());
  check_pool_prefix("pool_backward", pool, num_prefix, dx.size(1));
  numel_is("pool_backward", "dout", dout, pooled_rows(pool, num_prefix, dx.size(0)) * dx.size(2));
  same_dtype("pool_backward", dout, {{"dx", &dx}});
  const OpScope scope(*this, "pool_backward", [&] { return op_cost::pool_backward(dout, pool, num_prefix, dx); });
  pool_backward_impl(dout, pool, num_prefix, dx);
}

void Backend::softmax_xent(const Tensor& logits, const Tensor& labels, float smoothing, float dscale,
                           const Tensor& losses, const Tensor& dlogits, const Tensor& hits) {
  const char* op = "softmax_xent";
  defined(op, "logits", logits);
  require(logits.ndim() == 2, op, "logits must be [B, C], got " + logits.shape_str());
  const int64_t B = logits.size(0), C = logits.size(1);
  require(labels.defined() && labels.dtype() == DType::I32 && labels.numel() == B, op, "labels must be i32 [B]");
  require(losses.defined() && losses.dtype() == DType::F32 && losses.numel() == B, op, "losses must be f32 [B]");
  require(hits.defined() && hits.dtype() == DType::I32 && hits.numel() == B, op, "hits must be i32 [B]");
  require(smoothing >= 0.f && smoothing < 1.f, op, "smoothing must be in [0, 1)");
  numel_is(op, "dlogits", dlogits, B * C);
  same_dtype(op, logits, {{"dlogits", &dlogits}});
  const OpScope scope(*this, "softmax_xent",
                      [&] { return op_cost::softmax_xent(logits, labels, smoothing, dscale, losses, dlogits, hits); });
  softmax_xent_impl(logits, labels, smoothing, dscale, losses, dlogits, hits);
}

void Backend::distill_loss(const Tensor& student, const Tensor& teacher, Distill kind, float tau, float alpha,
                           float dscale, const Tensor& losses, const Tensor& dlogits, bool accumulate) {
  const char* op = "distill_loss";
  defined(op, "student", student);
  defined(op, "teacher", teacher);
  require(student.ndim() == 2, op, "student must be [B, C], got " + student.shape_str());
  const int64_t B = student.size(0), C = student.size(1);
  require(C > 0, op, "student must have at least one class, got " + student.shape_str());
  require(teacher.ndim() == 2 && teacher.size(0) == B && teacher.size(1) == C, op,
          "teacher has shape " + teacher.shape_str() + ", expected the student's " + student.shape_str());
  same_dtype(op, student, {{"teacher", &teacher}, {"dlogits", &dlogits}});
  require(losses.defined() && losses.dtype() == DType::F32 && losses.numel() == B, op,
          "losses must be f32 [" + std::to_string(B) + "]");
  numel_is(op, "dlogits", dlogits, B * C);
  require(kind == Distill::Hard || kind == Distill::Soft, op, "kind must be hard or soft");
  require(alpha >= 0.f && alpha <= 1.f, op, "alpha must be in [0, 1], got " + std::to_string(alpha));
  require(std::isfinite(tau) && tau > 0.f, op, "tau must be finite and > 0, got " + std::to_string(tau));
  require(std::isfinite(dscale), op, "dscale must be finite, got " + std::to_string(dscale));
  const OpScope scope(*this, op, [&] {
    return op_cost::distill_loss(student, teacher, kind, tau, alpha, dscale, losses, dlogits, accumulate);
  });
  distill_loss_impl(student, teacher, kind, tau, alpha, dscale, losses, dlogits, accumulate);
}

double Backend::sum_squares(const Tensor& t) {
  defined("sum_squares", "t", t);
  const OpScope scope(*this, "sum_squares", [&] { return op_cost::sum_squares(t); });
  return sum_squares_impl(t);
}

uint64_t Backend::memory_capacity() const { return physical_memory_bytes(); }

void* Backend::alloc_host(size_t bytes) { return bytes ? ::operator new(bytes) : nullptr; }
void Backend::release_host(void* ptr) { ::operator delete(ptr); }
void Backend::upload(void* dst, const void* src, size_t bytes, int channel) {
  (void)channel;
  copy_to_device(dst, src, bytes);
}
void Backend::begin_capture() { throw Error(name() + ": CUDA Graphs are not supported by this backend"); }
void* Backend::end_capture() { throw Error(name() + ": CUDA Graphs are not supported by this backend"); }
void Backend::replay(void*) { throw Error(name() + ": CUDA Graphs are not supported by this backend"); }

void Backend::step_metrics(const Tensor& losses, const Tensor& hits, StepState* state, bool commit, bool accumulate) {
  const char* op = "step_metrics";
  defined(op, "losses", losses);
  defined(op, "hits", hits);
  require(losses.dtype() == DType::F32, op, "losses must be f32");
  require(hits.dtype() == DType::I32, op, "hits must be i32");
  numel_is(op, "hits", hits, losses.numel());
  require(state != nullptr, op, "state is null");
  const OpScope scope(*this, op, [&] { return op_cost::step_metrics(losses, hits); });
  step_metrics_impl(losses, hits, state, commit, accumulate);
}

void Backend::grad_sumsq(const Tensor& grads, StepState* state) {
  const char* op = "grad_sumsq";
  defined(op, "grads", grads);
  require(grads.dtype() == DType::F32 || grads.dtype() == DType::F64, op, "grads must be f32 or f64");
  require(state != nullptr, op, "state is null");
  const OpScope scope(*this, op, [&] { return op_cost::grad_sumsq(grads); });
  grad_sumsq_impl(grads, state);
}

void Backend::grad_norm_finish(float max_norm, StepState* state) {
  const char* op = "grad_norm_finish";
  require(std::isfinite(max_norm) && max_norm >= 0.f, op,
          "max_norm must be finite and >= 0, got " + std::to_string(max_norm));
  require(state != nullptr, op, "state is null");
  const OpScope scope(*this, op, [&] { return op_cost::grad_norm_finish(); });
  grad_norm_finish_impl(max_norm, state);
}

// Not an op of its own: the two halves, each validated and traced. Checked up front too, so that
// a bad max_norm leaves state->grad_sumsq untouched.
void Backend::grad_norm_clip(const Tensor& grads, float max_norm, StepState* state) {
  const char* op = "grad_norm_clip";
  defined(op, "grads", grads);
  require(grads.dtype() == DType::F32 || grads.dtype() == DType::F64, op, "grads must be f32 or f64");
  require(std::isfinite(max_norm) && max_norm >= 0.f, op,
          "max_norm must be finite and >= 0, got " + std::to_string(max_norm));
  require(state != nullptr, op, "state is null");
  grad_sumsq(grads, state);
  grad_norm_finish(max_norm, state);
}

void Backend::adamw_update(const Tensor& master, const Tensor& grads, const Tensor& m, const Tensor& v,
                           const Tensor& params, const AdamWHyper& h, const AdamWSegment* segments, int num_segments) {
  const char* op = "adamw_update";
  for (auto [name, t] :
       {std::pair<const char*, const Tensor*>{"master", &master}, {"grads", &grads}, {"m", &m}, {"v", &v}}) {
    defined(op, name, *t);
    require(t->dtype() == DType::F32, op, std::string(name) + " must be f32");
    numel_is(op, name, *t, master.numel());
  }
  numel_is(op, "params", params, master.numel());
  require(num_segments >= 0 && (num_segments == 0 || segments), op, "segments missing");
  for (int s = 0; s < num_segments; ++s)
    require(
        segments[s].offset >= 0 && segments[s].count >= 0 && segments[s].offset + segments[s].count <= master.numel(),
        op, "segment " + std::to_string(s) + " lies outside the parameter arena");
  const OpScope scope(*this, "adamw_update",
                      [&] { return op_cost::adamw_update(master, grads, m, v, params, h, segments, num_segments); });
  adamw_update_impl(master, grads, m, v, params, h, segments, num_segments);
}

}  // namespace vitcuda
