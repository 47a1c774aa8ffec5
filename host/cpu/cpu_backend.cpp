// vitcuda — the "cpu" backend: dispatches on dtype (f32 for training, f64 for gradient
// checks) and calls the reference ops in ref_ops.cpp. Arguments were checked by the public
// ops (host/backend.cpp).
#include <cstdlib>
#include <cstring>

#include "host/cpu/cpu_backend.h"

#include "host/cpu/ref_ops.h"

namespace vitcuda {
namespace {

template <typename T>
T* p(const Tensor& t) {
  return t.defined() ? t.ptr<T>() : nullptr;
}

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string(op) + ": " + what);
}

// Calls f(T{}) with T = float or double according to the dtype of `t`.
template <typename F>
void dispatch(const char* op, const Tensor& t, F&& f) {
  require(t.defined(), op, "input tensor is null");
  if (t.dtype() == DType::F32)
    f(float{});
  else if (t.dtype() == DType::F64)
    f(double{});
  else
    require(false, op, std::string("the cpu backend computes in f32 or f64, got ") + dtype_name(t.dtype()));
}

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  Device device() const override { return Device::CPU; }
  DType compute_dtype() const override { return DType::F32; }

  void* alloc(size_t bytes) override {
    void* ptr = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!ptr) throw Error("cpu: out of memory allocating " + std::to_string(bytes) + " bytes");
    std::memset(ptr, 0, bytes);
    return ptr;
  }
  void release(void* ptr) override { std::free(ptr); }
  void copy_to_device(void* dst, const void* src, size_t n) override { std::memcpy(dst, src, n); }
  void copy_to_host(void* dst, const void* src, size_t n) override { std::memcpy(dst, src, n); }
  void zero(const Tensor& t) override { std::memset(t.data(), 0, t.nbytes()); }

 protected:
  void copy_impl(const Tensor& src, const Tensor& dst) override {
    if (src.dtype() == dst.dtype()) {
      std::memmove(dst.data(), src.data(), src.nbytes());
      return;
    }
    dispatch("copy", src, [&](auto ts) {
      using S = decltype(ts);
      dispatch("copy", dst, [&](auto td) {
        using D = decltype(td);
        for (int64_t i = 0; i < src.numel(); ++i) dst.ptr<D>()[i] = D(src.ptr<S>()[i]);
      });
    });
  }

  // f32: summed and scaled in fp32 (backend.h); f64 (gradient checks) in fp64.
  void add_impl(const Tensor& a, const Tensor& b, const Tensor& out, float scale) override {
    dispatch("add", a, [&](auto tag) {
      using T = decltype(tag);
      const T *pa = a.ptr<T>(), *pb = b.ptr<T>();
      T* po = out.ptr<T>();
      if (scale == 1.f) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < a.numel(); ++i) po[i] = pa[i] + pb[i];
      } else {
        const T s = T(scale);
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < a.numel(); ++i) po[i] = (pa[i] + pb[i]) * s;
      }
    });
  }

  void patch_extract_impl(const Tensor& images, ImageLayout layout, int patch, const float* mean, const float* stdev,
                          const Tensor& cols) override {
    const bool nchw = layout == ImageLayout::NCHW;
    const int64_t B = images.size(0), C = images.size(nchw ? 1 : 3), H = images.size(nchw ? 2 : 1),
                  W = images.size(nchw ? 3 : 2);
    dispatch("patch_extract", cols, [&](auto tag) {
      using T = decltype(tag);
      ref::patch_extract<T>(images.data(), images.dtype() == DType::U8, layout, B, int(C), int(H), int(W), patch, mean,
                            stdev, cols.ptr<T>());
    });
  }

  void linear_forward_impl(const Tensor& x, const Tensor& w, const Tensor& b, Act act, const Tensor& pre,
                           const Tensor& y, const DropoutSpec& drop) override {
    const int64_t N = w.size(0), K = w.size(1), R = x.numel() / K;
    dispatch("linear_forward", x, [&](auto tag) {
      using T = decltype(tag);
      ref::linear_forward<T>(p<T>(x), p<T>(w), p<T>(b), act, p<T>(pre), p<T>(y), R, K, N, drop);
    });
  }

  void linear_backward_impl(const Tensor& dy, const Tensor& x, const Tensor& w, Act act, const Tensor& pre,
                            const Tensor& dx, const Tensor& dw, const Tensor& db, const DropoutSpec& drop) override {
    const char* op = "linear_backward";
    const int64_t N = w.size(0), K = w.size(1), R = dy.numel() / N;
    for (auto [name, t] : {std::pair<const char*, const Tensor*>{"dw", &dw}, {"db", &db}})
      require(!t->defined() || t->dtype() == dy.dtype(), op, std::string(name) + " must have dy's dtype on the cpu");
    dispatch(op, dy, [&](auto tag) {
      using T = decltype(tag);
      ref::linear_backward<T>(p<T>(dy), p<T>(x), p<T>(w), act, p<T>(pre), p<T>(dx), p<T>(dw), p<T>(db), R, K, N, drop);
    });
  }

  void tokens_forward_impl(const Tensor& patches, const Tensor& cls, const Tensor& dist, const Tensor& pos,
                           const Tensor& out) override {
    dispatch("tokens_forward", patches, [&](auto tag) {
      using T = decltype(tag);
      ref::tokens_forward<T>(p<T>(patches), p<T>(cls), p<T>(dist), p<T>(pos), p<T>(out), patches.size(0),
                             patches.size(1), patches.size(2));
    });
  }

  void tokens_backward_impl(const Tensor& dout, const Tensor& dpatches, const Tensor& dcls, const Tensor& ddist,
                            const Tensor& dpos) override {
    const char* op = "tokens_backward";
    const int64_t B = dout.size(0), T_ = dout.size(1), D = dout.size(2),
                  Np = T_ - (dcls.defined() ? 1 : 0) - (ddist.defined() ? 1 : 0);
    for (auto [name, t] : {std::pair<const char*, const Tensor*>{"dpatches", &dpatches},
                           {"dcls", &dcls},
                           {"ddist", &ddist},
                           {"dpos", &dpos}})
      require(!t->defined() || t->dtype() == dout.dtype(), op,
              std::string(name) + " must have dout's dtype on the cpu");
    dispatch(op, dout, [&](auto tag) {
      using T = decltype(tag);
      ref::tokens_backward<T>(p<T>(dout), p<T>(dpatches), p<T>(dcls), p<T>(ddist), p<T>(dpos), B, Np, D);
    });
  }

  void layernorm_forward_impl(const Tensor& x, const Tensor& residual, const Tensor& sum_out, const Tensor& gamma,
                              const Tensor& beta, float eps, const Tensor& y, const Tensor& mean,
                              const Tensor& rstd) override {
    const int64_t C = gamma.numel(), R = x.numel() / C;
    dispatch("layernorm_forward", x, [&](auto tag) {
      using T = decltype(tag);
      ref::layernorm_forward<T>(p<T>(x), p<T>(residual), p<T>(sum_out), p<T>(gamma), p<T>(beta), eps, p<T>(y),
                                p<T>(mean), p<T>(rstd), R, C);
    });
  }

  void layernorm_backward_impl(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                               const Tensor& rstd, const Tensor& dx, const Tensor& dgamma,
                               const Tensor& dbeta) override {
    const int64_t C = gamma.numel(), R = x.numel() / C;
    dispatch("layernorm_backward", dy, [&](auto tag) {
      using T = decltype(tag);
      ref::layernorm_backward<T>(p<T>(dy), p<T>(x), p<T>(gamma), p<T>(mean), p<T>(rstd), p<T>(dx), p<T>(dgamma),
                                 p<T>(dbeta), R, C);
    });
  }

  void attention_forward_impl(const Tensor& qkv, int num_heads, float scale, const DropoutSpec& drop, const Tensor& out,
                              const Tensor& lse) override {
    const int64_t B = qkv.size(0), N = qkv.size(1), H = num_heads, d = qkv.size(2) / (3 * H);
    require(lse.dtype() == qkv.dtype(), "attention_forward", "lse must have qkv's dtype on the cpu");
    dispatch("attention_forward", qkv, [&](auto tag) {
      using T = decltype(tag);
      ref::attention_forward<T>(p<T>(qkv), scale, drop, p<T>(out), p<T>(lse), B, H, N, d);
    });
  }

  void attention_backward_impl(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                               int num_heads, float scale, const DropoutSpec& drop, const Tensor& dqkv) override {
    const int64_t B = qkv.size(0), N = qkv.size(1), H = num_heads, d = qkv.size(2) / (3 * H);
    require(lse.dtype() == qkv.dtype(), "attention_backward", "lse must have qkv's dtype on the cpu");
    dispatch("attention_backward", qkv, [&](auto tag) {
      using T = decltype(tag);
      ref::attention_backward<T>(p<T>(dout), p<T>(qkv), p<T>(out), p<T>(lse), scale, drop, p<T>(dqkv), B, H, N, d);
    });
  }

  void dropout_impl(const Tensor& x, const Tensor& y, const DropoutSpec& spec) override {
    dispatch("dropout", x, [&](auto tag) {
      using T = decltype(tag);
      ref::dropout<T>(p<T>(x), p<T>(y), x.numel(), spec);
    });
  }

  void drop_path_impl(const Tensor& x, const Tensor& y, const DropoutSpec& spec) override {
    const int64_t B = x.size(0);
    dispatch("drop_path", x, [&](auto tag) {
      using T = decltype(tag);
      ref::drop_path<T>(p<T>(x), p<T>(y), B, x.numel() / B, spec);
    });
  }

  void pool_forward_impl(const Tensor& x, Pool pool, int num_prefix, const Tensor& out) override {
    dispatch("pool_forward", x, [&](auto tag) {
      using T = decltype(tag);
      ref::pool_forward<T>(p<T>(x), pool, num_prefix, p<T>(out), x.size(0), x.size(1), x.size(2));
    });
  }

  void pool_backward_impl(const Tensor& dout, Pool pool, int num_prefix, const Tensor& dx) override {
    dispatch("pool_backward", dout, [&](auto tag) {
      using T = decltype(tag);
      ref::pool_backward<T>(p<T>(dout), pool, num_prefix, p<T>(dx), dx.size(0), dx.size(1), dx.size(2));
    });
  }

  void softmax_xent_impl(const Tensor& logits, const Tensor& labels, float smoothing, float dscale,
                         const Tensor& losses, const Tensor& dlogits, const Tensor& hits) override {
    const char* op = "softmax_xent";
    const int64_t B = logits.size(0), C = logits.size(1);
    // Labels are in host memory here, so a bad one is an error rather than a NaN loss.
    for (int64_t b = 0; b < B; ++b)
      require(labels.ptr<int32_t>()[b] >= 0 && labels.ptr<int32_t>()[b] < C, op,
              "label " + std::to_string(labels.ptr<int32_t>()[b]) + " out of range [0, " + std::to_string(C) + ")");
    dispatch(op, logits, [&](auto tag) {
      using T = decltype(tag);
      ref::softmax_xent<T>(p<T>(logits), labels.ptr<int32_t>(), smoothing, dscale, losses.ptr<float>(), p<T>(dlogits),
                           hits.ptr<int32_t>(), B, C);
    });
  }

  void distill_loss_impl(const Tensor& student, const Tensor& teacher, Distill kind, float tau, float alpha,
                         float dscale, const Tensor& losses, const Tensor& dlogits, bool accumulate) override {
    dispatch("distill_loss", student, [&](auto tag) {
      using T = decltype(tag);
      ref::distill_loss<T>(p<T>(student), p<T>(teacher), kind, tau, alpha, dscale, losses.ptr<float>(), p<T>(dlogits),
                           accumulate, student.size(0), student.size(1));
    });
  }

  double sum_squares_impl(const Tensor& t) override {
    double s = 0;
    dispatch("sum_squares", t, [&](auto tag) {
      using T = decltype(tag);
      s = ref::sum_squares<T>(p<T>(t), t.numel());
    });
    return s;
  }

  void step_metrics_impl(const Tensor& losses, const Tensor& hits, StepState* state, bool commit,
                         bool accumulate) override {
    ref::step_metrics(losses.ptr<float>(), hits.ptr<int32_t>(), losses.numel(), state, commit, accumulate);
  }

  void grad_sumsq_impl(const Tensor& grads, StepState* state) override {
    dispatch("grad_sumsq", grads, [&](auto tag) {
      using T = decltype(tag);
      state->grad_sumsq = ref::sum_squares<T>(p<T>(grads), grads.numel());
    });
  }

  void grad_norm_finish_impl(float max_norm, StepState* state) override { ref::grad_norm_finish(max_norm, state); }

  void adamw_update_impl(const Tensor& master, const Tensor& grads, const Tensor& m, const Tensor& v,
                         const Tensor& params, const AdamWHyper& given, const AdamWSegment* segments,
                         int num_segments) override {
    AdamWHyper h = given;
    if (h.state) {  // the StepState is host memory here
      if (!ref::adamw_prepare(h, h.state)) return;
      h.state = nullptr;
    }
    ref::adamw_update(master.ptr<float>(), grads.ptr<float>(), m.ptr<float>(), v.ptr<float>(), h, segments,
                      num_segments);
    if (params.defined() && params.data() != master.data()) copy(master, params);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace vitcuda
