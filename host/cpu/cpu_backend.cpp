// vitcuda — the "cpu" backend: validates shapes, dispatches on dtype (f32 for training,
// f64 for gradient checks) and calls the reference ops in ref_ops.cpp.
#include <cstdlib>
#include <cstring>

#include "host/cpu/ref_ops.h"
#if defined(VITCUDA_WITH_CUDA_BACKEND)
#include "kernels/cuda_backend.h"
#endif
#include "vitcuda/backend.h"

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
  if (t.dtype() == DType::F32) f(float{});
  else if (t.dtype() == DType::F64) f(double{});
  else require(false, op, std::string("the cpu backend computes in f32 or f64, got ") + dtype_name(t.dtype()));
}

void same_dtype(const char* op, const Tensor& ref, std::initializer_list<std::pair<const char*, const Tensor*>> ts) {
  for (auto [name, t] : ts)
    if (t->defined() && t->dtype() != ref.dtype())
      require(false, op, std::string(name) + " is " + dtype_name(t->dtype()) + ", expected " + dtype_name(ref.dtype()));
}

void numel_is(const char* op, const char* name, const Tensor& t, int64_t n) {
  if (t.defined())
    require(t.numel() == n, op, std::string(name) + " has shape " + t.shape_str() + ", expected " +
                                    std::to_string(n) + " elements");
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
  void copy(const Tensor& src, const Tensor& dst) override {
    numel_is("copy", "dst", dst, src.numel());
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

  void add(const Tensor& a, const Tensor& b, const Tensor& out) override {
    numel_is("add", "b", b, a.numel());
    numel_is("add", "out", out, a.numel());
    same_dtype("add", a, {{"b", &b}, {"out", &out}});
    dispatch("add", a, [&](auto tag) {
      using T = decltype(tag);
      const T *pa = a.ptr<T>(), *pb = b.ptr<T>();
      T* po = out.ptr<T>();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < a.numel(); ++i) po[i] = pa[i] + pb[i];
    });
  }

  void patch_extract(const Tensor& images, ImageLayout layout, int patch, const float* mean,
                     const float* stdev, const Tensor& cols) override {
    const char* op = "patch_extract";
    require(images.ndim() == 4, op, "images must be [B, C, H, W] or [B, H, W, C], got " + images.shape_str());
    require(images.dtype() == DType::U8 || images.dtype() == DType::F32, op, "images must be u8 or f32");
    const bool nchw = layout == ImageLayout::NCHW;
    const int64_t B = images.size(0), C = images.size(nchw ? 1 : 3), H = images.size(nchw ? 2 : 1),
                  W = images.size(nchw ? 3 : 2);
    require(patch > 0 && H % patch == 0 && W % patch == 0, op,
            "patch " + std::to_string(patch) + " does not divide the image " + images.shape_str());
    numel_is(op, "cols", cols, B * (H / patch) * (W / patch) * C * patch * patch);
    dispatch(op, cols, [&](auto tag) {
      using T = decltype(tag);
      ref::patch_extract<T>(images.data(), images.dtype() == DType::U8, layout, B, int(C), int(H),
                            int(W), patch, mean, stdev, cols.ptr<T>());
    });
  }

  void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Act act, const Tensor& pre,
                      const Tensor& y) override {
    const char* op = "linear_forward";
    require(w.ndim() == 2, op, "w must be [N, K], got " + w.shape_str());
    const int64_t N = w.size(0), K = w.size(1), R = x.numel() / K;
    require(x.numel() == R * K, op, "x " + x.shape_str() + " is not a multiple of K = " + std::to_string(K));
    numel_is(op, "y", y, R * N);
    numel_is(op, "b", b, N);
    require(act == Act::None || pre.defined(), op, "an activation needs the pre-activation buffer");
    numel_is(op, "pre", pre, R * N);
    same_dtype(op, x, {{"w", &w}, {"b", &b}, {"pre", &pre}, {"y", &y}});
    dispatch(op, x, [&](auto tag) {
      using T = decltype(tag);
      ref::linear_forward<T>(p<T>(x), p<T>(w), p<T>(b), act, p<T>(pre), p<T>(y), R, K, N);
    });
  }

  void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Act act, const Tensor& pre,
                       const Tensor& dx, const Tensor& dw, const Tensor& db) override {
    const char* op = "linear_backward";
    require(w.ndim() == 2, op, "w must be [N, K], got " + w.shape_str());
    const int64_t N = w.size(0), K = w.size(1), R = dy.numel() / N;
    numel_is(op, "x", x, R * K);
    numel_is(op, "dx", dx, R * K);
    numel_is(op, "dw", dw, N * K);
    numel_is(op, "db", db, N);
    require(act == Act::None || pre.defined(), op, "an activation needs the pre-activation buffer");
    same_dtype(op, dy, {{"x", &x}, {"w", &w}, {"pre", &pre}, {"dx", &dx}, {"dw", &dw}, {"db", &db}});
    dispatch(op, dy, [&](auto tag) {
      using T = decltype(tag);
      ref::linear_backward<T>(p<T>(dy), p<T>(x), p<T>(w), act, p<T>(pre), p<T>(dx), p<T>(dw),
                              p<T>(db), R, K, N);
    });
  }

  void tokens_forward(const Tensor& patches, const Tensor& cls, const Tensor& pos,
                      const Tensor& out) override {
    const char* op = "tokens_forward";
    require(patches.ndim() == 3, op, "patches must be [B, Np, D], got " + patches.shape_str());
    const int64_t B = patches.size(0), Np = patches.size(1), D = patches.size(2);
    const int64_t T_ = Np + (cls.defined() ? 1 : 0);
    numel_is(op, "cls", cls, D);
    numel_is(op, "pos", pos, T_ * D);
    numel_is(op, "out", out, B * T_ * D);
    dispatch(op, patches, [&](auto tag) {
      using T = decltype(tag);
      ref::tokens_forward<T>(p<T>(patches), p<T>(cls), p<T>(pos), p<T>(out), B, Np, D);
    });
  }

  void tokens_backward(const Tensor& dout, const Tensor& dpatches, const Tensor& dcls,
                       const Tensor& dpos) override {
    const char* op = "tokens_backward";
    require(dout.ndim() == 3, op, "dout must be [B, T, D], got " + dout.shape_str());
    const int64_t B = dout.size(0), T_ = dout.size(1), D = dout.size(2);
    const int64_t Np = T_ - (dcls.defined() ? 1 : 0);
    numel_is(op, "dpatches", dpatches, B * Np * D);
    numel_is(op, "dpos", dpos, T_ * D);
    dispatch(op, dout, [&](auto tag) {
      using T = decltype(tag);
      ref::tokens_backward<T>(p<T>(dout), p<T>(dpatches), p<T>(dcls), p<T>(dpos), B, Np, D);
    });
  }

  void layernorm_forward(const Tensor& x, const Tensor& residual, const Tensor& sum_out,
                         const Tensor& gamma, const Tensor& beta, float eps, const Tensor& y,
                         const Tensor& mean, const Tensor& rstd) override {
    const char* op = "layernorm_forward";
    const int64_t C = gamma.numel(), R = x.numel() / C;
    require(C > 0 && x.numel() == R * C, op, "x " + x.shape_str() + " does not match gamma " + gamma.shape_str());
    numel_is(op, "beta", beta, C);
    numel_is(op, "residual", residual, R * C);
    numel_is(op, "sum_out", sum_out, R * C);
    require(residual.defined() == sum_out.defined(), op, "residual and sum_out come together");
    numel_is(op, "y", y, R * C);
    numel_is(op, "mean", mean, R);
    numel_is(op, "rstd", rstd, R);
    dispatch(op, x, [&](auto tag) {
      using T = decltype(tag);
      ref::layernorm_forward<T>(p<T>(x), p<T>(residual), p<T>(sum_out), p<T>(gamma), p<T>(beta), eps,
                                p<T>(y), p<T>(mean), p<T>(rstd), R, C);
    });
  }

  void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, const Tensor& dx, const Tensor& dgamma,
                          const Tensor& dbeta) override {
    const char* op = "layernorm_backward";
    const int64_t C = gamma.numel(), R = x.numel() / C;
    numel_is(op, "dy", dy, R * C);
    numel_is(op, "dx", dx, R * C);
    numel_is(op, "mean", mean, R);
    numel_is(op, "dgamma", dgamma, C);
    numel_is(op, "dbeta", dbeta, C);
    dispatch(op, dy, [&](auto tag) {
      using T = decltype(tag);
      ref::layernorm_backward<T>(p<T>(dy), p<T>(x), p<T>(gamma), p<T>(mean), p<T>(rstd), p<T>(dx),
                                 p<T>(dgamma), p<T>(dbeta), R, C);
    });
  }

  void qkv_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& qkv_scratch,
                   const Tensor& q, const Tensor& k, const Tensor& v) override {
    const char* op = "qkv_forward";
    require(q.ndim() == 4, op, "q must be [B, H, T, d], got " + q.shape_str());
    const int64_t B = q.size(0), H = q.size(1), T_ = q.size(2), d = q.size(3);
    numel_is(op, "k", k, B * H * T_ * d);
    numel_is(op, "v", v, B * H * T_ * d);
    numel_is(op, "qkv_scratch", qkv_scratch, B * T_ * 3 * H * d);
    require(w.ndim() == 2 && w.size(0) == 3 * H * d, op, "w " + w.shape_str() + " must be [3*H*d, D]");
    linear_forward(x, w, b, Act::None, Tensor{}, qkv_scratch);
    dispatch(op, x, [&](auto tag) {
      using T = decltype(tag);
      ref::qkv_split<T>(p<T>(qkv_scratch), p<T>(q), p<T>(k), p<T>(v), B, T_, H, d);
    });
  }

  void qkv_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& x,
                    const Tensor& w, const Tensor& dqkv_scratch, const Tensor& dx, const Tensor& dw,
                    const Tensor& db) override {
    const char* op = "qkv_backward";
    require(dq.ndim() == 4, op, "dq must be [B, H, T, d], got " + dq.shape_str());
    const int64_t B = dq.size(0), H = dq.size(1), T_ = dq.size(2), d = dq.size(3);
    numel_is(op, "dqkv_scratch", dqkv_scratch, B * T_ * 3 * H * d);
    dispatch(op, dq, [&](auto tag) {
      using T = decltype(tag);
      ref::qkv_merge<T>(p<T>(dq), p<T>(dk), p<T>(dv), p<T>(dqkv_scratch), B, T_, H, d);
    });
    linear_backward(dqkv_scratch, x, w, Act::None, Tensor{}, dx, dw, db);
  }

  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                         const DropoutSpec& drop, const Tensor& out, const Tensor& lse) override {
    const char* op = "attention_forward";
    require(q.ndim() == 4, op, "q must be [B, H, T, d], got " + q.shape_str());
    const int64_t B = q.size(0), H = q.size(1), N = q.size(2), d = q.size(3);
    numel_is(op, "k", k, B * H * N * d);
    numel_is(op, "v", v, B * H * N * d);
    numel_is(op, "out", out, B * N * H * d);
    numel_is(op, "lse", lse, B * H * N);
    dispatch(op, q, [&](auto tag) {
      using T = decltype(tag);
      ref::attention_forward<T>(p<T>(q), p<T>(k), p<T>(v), scale, drop, p<T>(out), p<T>(lse), B, H, N, d);
    });
  }

  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse, float scale, const DropoutSpec& drop,
                          const Tensor& dq, const Tensor& dk, const Tensor& dv) override {
    const char* op = "attention_backward";
    require(q.ndim() == 4, op, "q must be [B, H, T, d], got " + q.shape_str());
    const int64_t B = q.size(0), H = q.size(1), N = q.size(2), d = q.size(3);
    numel_is(op, "dout", dout, B * N * H * d);
    numel_is(op, "dq", dq, B * H * N * d);
    numel_is(op, "dk", dk, B * H * N * d);
    numel_is(op, "dv", dv, B * H * N * d);
    dispatch(op, q, [&](auto tag) {
      using T = decltype(tag);
      ref::attention_backward<T>(p<T>(dout), p<T>(q), p<T>(k), p<T>(v), p<T>(out), p<T>(lse), scale,
                                 drop, p<T>(dq), p<T>(dk), p<T>(dv), B, H, N, d);
    });
  }

  void dropout(const Tensor& x, const Tensor& y, const DropoutSpec& spec) override {
    numel_is("dropout", "y", y, x.numel());
    dispatch("dropout", x, [&](auto tag) {
      using T = decltype(tag);
      ref::dropout<T>(p<T>(x), p<T>(y), x.numel(), spec);
    });
  }

  void drop_path(const Tensor& x, const Tensor& y, const DropoutSpec& spec) override {
    numel_is("drop_path", "y", y, x.numel());
    const int64_t B = x.size(0);
    dispatch("drop_path", x, [&](auto tag) {
      using T = decltype(tag);
      ref::drop_path<T>(p<T>(x), p<T>(y), B, x.numel() / B, spec);
    });
  }

  void pool_forward(const Tensor& x, Pool pool, int num_prefix, const Tensor& out) override {
    require(x.ndim() == 3, "pool_forward", "x must be [B, T, D], got " + x.shape_str());
    require(pool != Pool::Flatten, "pool_forward", "flatten is a view, not an op");
    require(num_prefix >= 0 && num_prefix < x.size(1), "pool_forward", "num_prefix out of range");
    numel_is("pool_forward", "out", out, x.size(0) * x.size(2));
    dispatch("pool_forward", x, [&](auto tag) {
      using T = decltype(tag);
      ref::pool_forward<T>(p<T>(x), pool, num_prefix, p<T>(out), x.size(0), x.size(1), x.size(2));
    });
  }

  void pool_backward(const Tensor& dout, Pool pool, int num_prefix, const Tensor& dx) override {
    require(dx.ndim() == 3, "pool_backward", "dx must be [B, T, D], got " + dx.shape_str());
    require(num_prefix >= 0 && num_prefix < dx.size(1), "pool_backward", "num_prefix out of range");
    numel_is("pool_backward", "dout", dout, dx.size(0) * dx.size(2));
    dispatch("pool_backward", dout, [&](auto tag) {
      using T = decltype(tag);
      ref::pool_backward<T>(p<T>(dout), pool, num_prefix, p<T>(dx), dx.size(0), dx.size(1), dx.size(2));
    });
  }

  void softmax_xent(const Tensor& logits, const Tensor& labels, float smoothing, float dscale,
                    const Tensor& losses, const Tensor& dlogits, const Tensor& hits) override {
    const char* op = "softmax_xent";
    require(logits.ndim() == 2, op, "logits must be [B, C], got " + logits.shape_str());
    const int64_t B = logits.size(0), C = logits.size(1);
    require(labels.dtype() == DType::I32 && labels.numel() == B, op, "labels must be i32 [B]");
    require(losses.dtype() == DType::F32 && losses.numel() == B, op, "losses must be f32 [B]");
    require(hits.dtype() == DType::I32 && hits.numel() == B, op, "hits must be i32 [B]");
    numel_is(op, "dlogits", dlogits, B * C);
    for (int64_t b = 0; b < B; ++b)
      require(labels.ptr<int32_t>()[b] >= 0 && labels.ptr<int32_t>()[b] < C, op,
              "label " + std::to_string(labels.ptr<int32_t>()[b]) + " out of range [0, " + std::to_string(C) + ")");
    dispatch(op, logits, [&](auto tag) {
      using T = decltype(tag);
      ref::softmax_xent<T>(p<T>(logits), labels.ptr<int32_t>(), smoothing, dscale, losses.ptr<float>(),
                           p<T>(dlogits), hits.ptr<int32_t>(), B, C);
    });
  }

  double sum_squares(const Tensor& t) override {
    double s = 0;
    dispatch("sum_squares", t, [&](auto tag) {
      using T = decltype(tag);
      s = ref::sum_squares<T>(p<T>(t), t.numel());
    });
    return s;
  }

  void adamw_update(const Tensor& master, const Tensor& grads, const Tensor& m, const Tensor& v,
                    const Tensor& params, const AdamWHyper& h, const AdamWSegment* segments,
                    int num_segments) override {
    const char* op = "adamw_update";
    for (auto [name, t] : {std::pair<const char*, const Tensor*>{"master", &master}, {"grads", &grads},
                           {"m", &m}, {"v", &v}}) {
      require(t->dtype() == DType::F32, op, std::string(name) + " must be f32");
      numel_is(op, name, *t, master.numel());
    }
    for (int s = 0; s < num_segments; ++s)
      require(segments[s].offset >= 0 && segments[s].offset + segments[s].count <= master.numel(), op,
              "segment " + std::to_string(s) + " lies outside the parameter arena");
    ref::adamw_update(master.ptr<float>(), grads.ptr<float>(), m.ptr<float>(), v.ptr<float>(), h,
                      segments, num_segments);
    if (params.defined() && params.data() != master.data()) copy(master, params);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

std::unique_ptr<Backend> make_backend(const std::string& name, DType compute) {
  if (name == "cpu") return make_cpu_backend();  // always fp32
  if (name == "cuda") {
#if defined(VITCUDA_WITH_CUDA_BACKEND)
    return make_cuda_backend(compute);
#else
    (void)compute;
    throw Error("backend 'cuda': this build of vitcuda has no CUDA backend (configure with the CUDA toolkit)");
#endif
  }
  if (name == "cuda-emu")
    throw Error("backend 'cuda-emu' is a test device: it is linked into the kernel tests, not into libvitcuda");
  throw Error("unknown backend '" + name + "' (known: cpu, cuda)");
}

std::unique_ptr<Backend> pick_backend(const std::string& device, DType compute, std::string* note) {
  if (device == "cpu") return make_backend("cpu");
  if (device == "cuda") {
    if (!cuda_device_available()) throw Error("--device cuda: no CUDA GPU is available on this machine");
    return make_backend("cuda", compute);
  }
  if (device != "auto") throw Error("--device must be auto, cpu or cuda, got '" + device + "'");
  if (cuda_device_available()) {
    try {
      return make_backend("cuda", compute);
    } catch (const Error& e) {
      if (note) *note = std::string("a GPU is present but ") + e.what() + "; using the CPU";
    }
  }
  return make_backend("cpu");
}

}  // namespace vitcuda
