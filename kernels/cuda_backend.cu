// vitcuda — the CUDA backend (see cuda_backend.h): the checks specific to it (dtypes of
// gradients and statistics, sizes that fit the kernels' int; the shape checks common to all
// backends are in host/backend.cpp), dtype dispatch
// (bf16 or fp32 storage; fp32 parameter gradients, statistics and optimizer state), scratch
// workspaces, and one launcher call per op. Host code only: no kernels here.
#include "kernels/cuda_backend.h"

#include <cuda_bf16.h>

#include <string>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/distill.h"
#include "kernels/dropout.h"
#include "kernels/elementwise.h"
#include "kernels/layernorm.h"
#include "kernels/linear.h"
#include "kernels/patch_embed.h"
#include "kernels/pool.h"
#include "kernels/softmax_xent.h"
#include "kernels/tokens.h"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN
namespace {

using bf16 = __nv_bfloat16;

template <typename T>
T* p(const Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data()) : nullptr;
}

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string(op) + ": " + what);
}

void dtype_is(const char* op, const char* name, const Tensor& t, DType want) {
  if (t.defined())
    require(t.dtype() == want, op,
            std::string(name) + " is " + dtype_name(t.dtype()) + ", expected " + dtype_name(want));
}

int narrow(const char* op, const char* what, int64_t v) {
  require(v >= 0 && v <= INT32_MAX, op,
          std::string(what) + " = " + std::to_string(v) + " does not fit the kernels' int");
  return int(v);
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(DType compute) : compute_(compute) {
    if (compute != DType::BF16 && compute != DType::F32)
      throw Error(std::string(rt::backend_name()) + ": compute dtype must be bf16 or f32, got " + dtype_name(compute));
    if (rt::device_count() == 0) throw Error(std::string(rt::backend_name()) + ": no CUDA device is available");
    sumsq_scratch_ = rt::DeviceBuffer<double>(sum_squares_scratch_doubles());
    stream_ = rt::stream_create();  // its own stream: capturable, unlike the default stream
    copy_stream_ = rt::stream_create();
  }
  ~CudaBackend() override {
    for (rt::Event e : markers_) rt::event_destroy(e);
    for (rt::Event e : uploaded_) rt::event_destroy(e);
    rt::stream_destroy(copy_stream_);
    rt::device_free(workspace_);
    rt::stream_destroy(stream_);
  }

  std::string name() const override { return rt::backend_name(); }
  uint64_t memory_capacity() const override {
    const uint64_t device = rt::device_info().total_memory;
    return device ? device : Backend::memory_capacity();  // 0: the emulator's host memory
  }
  Device device() const override { return Device::CUDA; }
  DType compute_dtype() const override { return compute_; }

  void* alloc(size_t bytes) override {
    void* ptr = rt::device_malloc(bytes);
    rt::memset_device(ptr, 0, bytes, stream_);
    return ptr;
  }
  void release(void* ptr) override { rt::device_free(ptr); }
  void copy_to_device(void* dst, const void* src, size_t n) override { rt::copy_to_device(dst, src, n, stream_); }
  void copy_to_host(void* dst, const void* src, size_t n) override {
    rt::copy_to_host(dst, src, n, stream_);
    rt::stream_synchronize(stream_);
  }
  void zero(const Tensor& t) override { rt::memset_device(t.data(), 0, t.nbytes(), stream_); }
  void synchronize() override { rt::stream_synchronize(stream_); }
  // The stream every op is ordered on (the NCCL communicator orders its own stream against it).
  void* native_stream() const override { return stream_; }
  void* alloc_host(size_t bytes) override { return rt::host_alloc_pinned(bytes); }
  void release_host(void* ptr) override { rt::host_free_pinned(ptr); }
  // A ring of events: a marker that has been reused makes wait_mark wait for later work, never less.
  int mark() override {
    if (markers_.size() < kMarkers) markers_.push_back(rt::event_create());
    const int m = next_marker_;
    next_marker_ = (next_marker_ + 1) % int(kMarkers);
    rt::event_record(markers_[m], stream_);
    return m;
  }
  void wait_mark(int marker) override {
    require(marker >= 0 && marker < int(markers_.size()), "wait_mark", "unknown marker " + std::to_string(marker));
    rt::event_synchronize(markers_[marker]);
  }
  void upload(void* dst, const void* src, size_t bytes, int channel) override {
    require(channel >= 0 && channel < int(kChannels), "upload",
            "channel " + std::to_string(channel) + " is not in [0, 8)");
    while (uploaded_.size() <= size_t(channel)) uploaded_.push_back(rt::event_create());
    rt::copy_to_device(dst, src, bytes, copy_stream_);
    rt::event_record(uploaded_[channel], copy_stream_);
  }
  void wait_upload(int channel) override {
    require(channel >= 0 && channel < int(uploaded_.size()), "wait_upload",
            "channel " + std::to_string(channel) + " has had no upload");
    rt::stream_wait_event(stream_, uploaded_[channel]);
  }
  bool graphs_supported() const override { return true; }
  void begin_capture() override { rt::stream_begin_capture(stream_); }
  void* end_capture() override { return rt::stream_end_capture(stream_); }
  void replay(void* graph) override { rt::graph_launch(static_cast<rt::Graph>(graph), stream_); }
  void destroy_graph(void* graph) override { rt::graph_destroy(static_cast<rt::Graph>(graph)); }
  RuntimeCounters runtime_counters() const override { return rt::counters(); }
  void reset_runtime_counters() override { rt::reset_counters(); }

 protected:
  void record_launches(bool on) override { rt::launch_log().recording = on; }
  std::vector<LaunchRecord> take_launches() override { return rt::take_launch_records(); }
  void copy_impl(const Tensor& src, const Tensor& dst) override {
    if (src.dtype() == dst.dtype()) {
      rt::copy_device_to_device(dst.data(), src.data(), src.nbytes(), stream_);
    } else if (src.dtype() == DType::F32 && dst.dtype() == DType::BF16) {
      convert_dtype<float, bf16>(p<float>(src), p<bf16>(dst), src.numel(), stream_);
    } else if (src.dtype() == DType::BF16 && dst.dtype() == DType::F32) {
      convert_dtype<bf16, float>(p<bf16>(src), p<float>(dst), src.numel(), stream_);
    } else {
      require(false, "copy",
              std::string("no conversion from ") + dtype_name(src.dtype()) + " to " + dtype_name(dst.dtype()));
    }
  }

  void add_impl(const Tensor& a, const Tensor& b, const Tensor& out, float scale) override {
    dispatch("add", a, [&](auto tag) {
      using T = decltype(tag);
      vitcuda::add<T>(p<T>(a), p<T>(b), p<T>(out), a.numel(), stream_, scale);
    });
  }

  void patch_extract_impl(const Tensor& images, ImageLayout layout, int patch, const float* mean, const float* stdev,
                          const Tensor& cols) override {
    const char* op = "patch_extract";
    const bool nchw = layout == ImageLayout::NCHW;
    const int64_t B = images.size(0), C = images.size(nchw ? 1 : 3), H = images.size(nchw ? 2 : 1),
                  W = images.size(nchw ? 3 : 2);
    dispatch(op, cols, [&](auto tag) {
      using T = decltype(tag);
      vitcuda::patch_extract<T>(images.data(), images.dtype() == DType::U8, layout, int(B), int(C), int(H), int(W),
                                patch, mean, stdev, p<T>(cols), stream_);
    });
  }

  void linear_forward_impl(const Tensor& x, const Tensor& w, const Tensor& b, Act act, const Tensor& pre,
                           const Tensor& y, const DropoutSpec& drop) override {
    const char* op = "linear_forward";
    const int64_t N = w.size(0), K = w.size(1), R = x.numel() / K;
    dispatch(op, x, [&](auto tag) {
      using T = decltype(tag);
      const int r = narrow(op, "rows", R), k = narrow(op, "K", K), n = narrow(op, "N", N);
      const size_t ws = linear_workspace_bytes(r, k, n);
      vitcuda::linear_forward<T>(p<T>(x), p<T>(w), p<T>(b), act, p<T>(pre), p<T>(y), r, k, n, workspace(ws), ws,
                                 stream_, drop);
    });
  }

  void linear_backward_impl(const Tensor& dy, const Tensor& x, const Tensor& w, Act act, const Tensor& pre,
                            const Tensor& dx, const Tensor& dw, const Tensor& db, const DropoutSpec& drop) override {
    const char* op = "linear_backward";
    const int64_t N = w.size(0), K = w.size(1), R = dy.numel() / N;
    dtype_is(op, "dw", dw, DType::F32);
    dtype_is(op, "db", db, DType::F32);
    dispatch(op, dy, [&](auto tag) {
      using T = decltype(tag);
      const int r = narrow(op, "rows", R), k = narrow(op, "K", K), n = narrow(op, "N", N);
      const size_t ws = linear_workspace_bytes(r, k, n);
      vitcuda::linear_backward<T, float>(p<T>(dy), p<T>(x), p<T>(w), act, p<T>(pre), p<T>(dx), p<float>(dw),
                                         p<float>(db), r, k, n, workspace(ws), ws, stream_, drop);
    });
  }

  void tokens_forward_impl(const Tensor& patches, const Tensor& cls, const Tensor& dist, const Tensor& pos,
                           const Tensor& out) override {
    const char* op = "tokens_forward";
    const int64_t B = patches.size(0), Np = patches.size(1), D = patches.size(2);
    dispatch(op, patches, [&](auto tag) {
      using T = decltype(tag);
      vitcuda::tokens_forward<T>(p<T>(patches), p<T>(cls), p<T>(dist), p<T>(pos), p<T>(out), int(B), int(Np), int(D),
                                 stream_);
    });
  }

  void tokens_backward_impl(const Tensor& dout, const Tensor& dpatches, const Tensor& dcls, const Tensor& ddist,
                            const Tensor& dpos) override {
    const char* op = "tokens_backward";
    const int num_prefix = (dcls.defined() ? 1 : 0) + (ddist.defined() ? 1 : 0);
    const int64_t B = dout.size(0), T_ = dout.size(1), D = dout.size(2), Np = T_ - num_prefix;
    dtype_is(op, "dcls", dcls, DType::F32);
    dtype_is(op, "ddist", ddist, DType::F32);
    dtype_is(op, "dpos", dpos, DType::F32);
    dispatch(op, dout, [&](auto tag) {
      using T = decltype(tag);
      vitcuda::tokens_backward<T, float>(p<T>(dout), p<T>(dpatches), p<float>(dcls), p<float>(ddist), p<float>(dpos),
                                         num_prefix, int(B), int(Np), int(D), stream_);
    });
  }

  void layernorm_forward_impl(const Tensor& x, const Tensor& residual, const Tensor& sum_out, const Tensor& gamma,
                              const Tensor& beta, float eps, const Tensor& y, const Tensor& mean,
                              const Tensor& rstd) override {
    const char* op = "layernorm_forward";
    const int64_t C = gamma.numel(), R = x.numel() / C;
    dtype_is(op, "mean", mean, DType::F32);
    dtype_is(op, "rstd", rstd, DType::F32);
    dispatch(op, x, [&](auto tag) {
      using T = decltype(tag);
      vitcuda::layernorm_forward<T>(p<T>(x), p<T>(residual), p<T>(sum_out), p<T>(gamma), p<T>(beta), eps, p<T>(y),
                                    p<float>(mean), p<float>(rstd), narrow(op, "rows", R), int(C), stream_);
    });
  }

  void layernorm_backward_impl(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                               const Tensor& rstd, const Tensor& dx, const Tensor& dgamma,
                               const Tensor& dbeta) override {
    const char* op = "layernorm_backward";
    const int64_t C = gamma.numel(), R = x.numel() / C;
    dtype_is(op, "dgamma", dgamma, DType::F32);
    dtype_is(op, "dbeta", dbeta, DType::F32);
    dispatch(op, dy, [&](auto tag) {
      using T = decltype(tag);
      const int r = narrow(op, "rows", R);
      const size_t ws = layernorm_backward_scratch_floats(r, int(C)) * sizeof(float);
      vitcuda::layernorm_backward<T, float>(p<T>(dy), p<T>(x), p<T>(gamma), p<float>(mean), p<float>(rstd), p<T>(dx),
                                            p<float>(dgamma), p<float>(dbeta), static_cast<float*>(workspace(ws)), r,
                                            int(C), stream_);
    });
  }

  void attention_forward_impl(const Tensor& qkv, int num_heads, float scale, const DropoutSpec& drop, const Tensor& out,
                              const Tensor& lse) override {
    const char* op = "attention_forward";
    const int64_t B = qkv.size(0), N = qkv.size(1), H = num_heads, d = qkv.size(2) / (3 * H);
    dtype_is(op, "lse", lse, DType::F32);
    dispatch(op, qkv, [&](auto tag) {
      using T = decltype(tag);
      vitcuda::attention_forward<T>(p<T>(qkv), scale, drop, p<T>(out), p<float>(lse), int(B), int(H), int(N), int(d),
                                    stream_);
    });
  }

  void attention_backward_impl(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                               int num_heads, float scale, const DropoutSpec& drop, const Tensor& dqkv) override {
    const char* op = "attention_backward";
    const int64_t B = qkv.size(0), N = qkv.size(1), H = num_heads, d = qkv.size(2) / (3 * H);
    dtype_is(op, "lse", lse, DType::F32);
    dispatch(op, qkv, [&](auto tag) {
      using T = decltype(tag);
      const size_t ws = attention_backward_workspace_bytes(int(B), int(H), int(N), int(d));
      vitcuda::attention_backward<T>(p<T>(dout), p<T>(qkv), p<T>(out), p<float>(lse), scale, drop, p<T>(dqkv),
                                     workspace(ws), ws, int(B), int(H), int(N), int(d), stream_);
    });
  }

  void dropout_impl(const Tensor& x, const Tensor& y, const DropoutSpec& spec) override {
    dispatch("dropout", x, [&](auto tag) {
      using T = decltype(tag);
      vitcuda::dropout<T>(p<T>(x), p<T>(y), x.numel(), spec, stream_);
    });
  }

  void drop_path_impl(const Tensor& x, const Tensor& y, const DropoutSpec& spec) override {
    const int64_t B = x.size(0);
    dispatch("drop_path", x, [&](auto tag) {
      using T = decltype(tag);
      vitcuda::drop_path<T>(p<T>(x), p<T>(y), B, x.numel() / B, spec, stream_);
    });
  }

  void pool_forward_impl(const Tensor& x, Pool pool, int num_prefix, const Tensor& out) override {
    dispatch("pool_forward", x, [&](auto tag) {
      using T = decltype(tag);
      vitcuda::pool_forward<T>(p<T>(x), pool, num_prefix, p<T>(out), x.size(0), x.size(1), x.size(2), stream_);
    });
  }

  void pool_backward_impl(const Tensor& dout, Pool pool, int num_prefix, const Tensor& dx) override {
    dispatch("pool_backward", dout, [&](auto tag) {
      using T = decltype(tag);
      vitcuda::pool_backward<T>(p<T>(dout), pool, num_prefix, p<T>(dx), dx.size(0), dx.size(1), dx.size(2), stream_);
    });
  }

  void softmax_xent_impl(const Tensor& logits, const Tensor& labels, float smoothing, float dscale,
                         const Tensor& losses, const Tensor& dlogits, const Tensor& hits) override {
    const char* op = "softmax_xent";
    const int64_t B = logits.size(0), C = logits.size(1);
    dispatch(op, logits, [&](auto tag) {
      using T = decltype(tag);
      vitcuda::softmax_xent<T>(p<T>(logits), p<int32_t>(labels), smoothing, dscale, p<float>(losses), p<T>(dlogits),
                               p<int32_t>(hits), B, C, stream_);
    });
  }

  void distill_loss_impl(const Tensor& student, const Tensor& teacher, Distill kind, float tau, float alpha,
                         float dscale, const Tensor& losses, const Tensor& dlogits, bool accumulate) override {
    const char* op = "distill_loss";
    const int64_t B = student.size(0), C = student.size(1);
    dispatch(op, student, [&](auto tag) {
      using T = decltype(tag);
      vitcuda::distill_loss<T>(p<T>(student), p<T>(teacher), kind, tau, alpha, dscale, p<float>(losses), p<T>(dlogits),
                               accumulate, B, C, stream_);
    });
  }

  double sum_squares_impl(const Tensor& t) override {
    double s = 0;
    if (t.dtype() == DType::F32)
      s = vitcuda::sum_squares<float>(p<float>(t), t.numel(), sumsq_scratch_.get(), stream_);
    else if (t.dtype() == DType::BF16)
      s = vitcuda::sum_squares<bf16>(p<bf16>(t), t.numel(), sumsq_scratch_.get(), stream_);
    else
      require(false, "sum_squares", std::string("unsupported dtype ") + dtype_name(t.dtype()));
    return s;
  }

  void step_metrics_impl(const Tensor& losses, const Tensor& hits, StepState* state, bool commit,
                         bool accumulate) override {
    vitcuda::step_metrics(p<float>(losses), p<int32_t>(hits), losses.numel(), state, commit, accumulate, stream_);
  }

  void grad_sumsq_impl(const Tensor& grads, StepState* state) override {
    require(grads.dtype() == DType::F32, "grad_sumsq", "grads must be f32 on this backend");
    vitcuda::grad_sumsq<float>(p<float>(grads), grads.numel(), state, sumsq_scratch_.get(), stream_);
  }

  void grad_norm_finish_impl(float max_norm, StepState* state) override {
    vitcuda::grad_norm_finish(max_norm, state, stream_);
  }

  void adamw_update_impl(const Tensor& master, const Tensor& grads, const Tensor& m, const Tensor& v,
                         const Tensor& params, const AdamWHyper& h, const AdamWSegment* segments,
                         int num_segments) override {
    const bool separate = params.defined() && params.data() != master.data();
    if (separate && params.dtype() == DType::BF16)
      vitcuda::adamw_update<bf16>(p<float>(master), p<float>(grads), p<float>(m), p<float>(v), p<bf16>(params),
                                  master.numel(), h, segments, num_segments, stream_);
    else
      vitcuda::adamw_update<float>(p<float>(master), p<float>(grads), p<float>(m), p<float>(v),
                                   separate ? p<float>(params) : nullptr, master.numel(), h, segments, num_segments,
                                   stream_);
  }

 private:
  // Calls f(T{}) with T = float or bf16 by the dtype of `t`.
  template <typename F>
  void dispatch(const char* op, const Tensor& t, F&& f) {
    require(t.defined(), op, "input tensor is null");
    require(t.device() == Device::CUDA, op, "tensor is not in device memory");
    if (t.dtype() == DType::F32)
      f(float{});
    else if (t.dtype() == DType::BF16)
      f(bf16{});
    else
      require(false, op, std::string("the cuda backend computes in bf16 or f32, got ") + dtype_name(t.dtype()));
  }

  // One scratch buffer for every op's workspace, grown (rarely: the first step) to the largest
  // request; ops on one stream never overlap.
  void* workspace(size_t bytes) {
    if (bytes > workspace_bytes_) {
      rt::stream_synchronize(stream_);
      rt::device_free(workspace_);
      workspace_ = rt::device_malloc(bytes);
      workspace_bytes_ = bytes;
    }
    return workspace_;
  }

  static constexpr size_t kMarkers = 8, kChannels = 8;
  DType compute_;
  rt::Stream stream_ = nullptr;
  rt::Stream copy_stream_ = nullptr;  // upload()
  std::vector<rt::Event> uploaded_;   // per upload channel
  std::vector<rt::Event> markers_;
  int next_marker_ = 0;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  rt::DeviceBuffer<double> sumsq_scratch_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(DType compute) { return std::make_unique<CudaBackend>(compute); }

VITCUDA_KERNELS_END
}  // namespace vitcuda
