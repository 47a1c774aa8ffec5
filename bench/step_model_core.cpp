// vitcuda — the step model's arithmetic (bench/step_model.h): GPU descriptions, the roofline of
// each traced op, the step's totals. Pure functions of a StepTrace and a Gpu.
#include "bench/step_model.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

namespace vitcuda::step_model {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

double positive(const nlohmann::json& g, const char* key, const std::string& who) {
  if (!g.contains(key) || !g.at(key).is_number())
    throw Error("gpus.json: " + who + ": \"" + key + "\" missing or not a number");
  const double v = g.at(key).get<double>();
  if (!(v > 0)) throw Error("gpus.json: " + who + ": \"" + key + "\" must be positive");
  return v;
}

// Copies and memsets are runtime calls without a launch record: named after the kernels.
void add_copy_names(Row& r) {
  if (r.runtime.h2d) r.kernels.push_back("memcpy H2D");
  if (r.runtime.d2h) r.kernels.push_back("memcpy D2H");
  if (r.runtime.d2d) r.kernels.push_back("memcpy D2D");
  if (r.runtime.memsets) r.kernels.push_back("memset");
}

Row op_row(const OpTrace& t, const Gpu& gpu, Precision precision) {
  Row r;
  r.op = t.op;
  r.count = 1;
  r.cost = t.cost;
  r.runtime = t.runtime;
  const double peak = op_peak(r.op, precision, gpu);
  const double host = double(t.runtime.h2d_bytes + t.runtime.d2h_bytes);
  const int64_t calls = runtime_calls(t.runtime);
  r.eager = roofline(t.cost.flops, peak, t.cost.bytes, gpu.hbm_bytes_per_s, host, gpu.host_link_bytes_per_s, calls,
                     gpu.launch_s);
  r.graph = roofline(t.cost.flops, peak, t.cost.bytes, gpu.hbm_bytes_per_s, host, gpu.host_link_bytes_per_s, calls,
                     gpu.graph_launch_s);
  r.time_s = r.eager.time_s();
  r.graph_time_s = r.graph.time_s();
  r.compute_bound = r.eager.compute_bound() ? 1 : 0;
  for (const LaunchRecord& l : t.launches) {
    const std::string name = display_kernel_name(l.kernel);
    if (std::find(r.kernels.begin(), r.kernels.end(), name) == r.kernels.end()) r.kernels.push_back(name);
    if (l.kernel == "cublasLtMatmul") r.matmul_flops += 2.0 * double(l.m) * double(l.n) * double(l.k) * double(l.batch);
  }
  add_copy_names(r);
  return r;
}

void add_into(Row& into, const Row& r) {
  into.count += r.count;
  into.cost.flops += r.cost.flops;
  into.cost.bytes += r.cost.bytes;
  into.runtime = into.runtime + r.runtime;
  for (Roofline* dst : {&into.eager, &into.graph}) {
    const Roofline& src = dst == &into.eager ? r.eager : r.graph;
    // Summed rows keep each op's own max(compute, memory): the sum of the parts' compute and
    // memory times would lose which one bound each call.
    dst->compute_s += src.compute_s;
    dst->memory_s += src.memory_s;
    dst->host_s += src.host_s;
    dst->launch_s += src.launch_s;
  }
  into.time_s += r.time_s;
  into.graph_time_s += r.graph_time_s;
  into.compute_bound += r.compute_bound;
  for (const std::string& k : r.kernels)
    if (std::find(into.kernels.begin(), into.kernels.end(), k) == into.kernels.end()) into.kernels.push_back(k);
  into.matmul_flops += r.matmul_flops;
}

}  // namespace

std::vector<Gpu> parse_gpus(const std::string& json_text) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("gpus.json: not valid JSON: ") + e.what());
  }
  if (!doc.is_object() || !doc.contains("gpus") || !doc.at("gpus").is_array())
    throw Error("gpus.json: expected an object with a \"gpus\" array");
  std::vector<Gpu> out;
  for (const nlohmann::json& g : doc.at("gpus")) {
    if (!g.is_object() || !g.contains("id") || !g.at("id").is_string())
      throw Error("gpus.json: every entry of \"gpus\" needs a string \"id\"");
    Gpu d;
    d.id = g.at("id").get<std::string>();
    d.name = g.value("name", d.id);
    d.source = g.value("source", "");
    d.bf16_tensor_flops = positive(g, "bf16_tensor_dense_tflops", d.id) * 1e12;
    d.tf32_tensor_flops = positive(g, "tf32_tensor_dense_tflops", d.id) * 1e12;
    d.fp32_flops = positive(g, "fp32_tflops", d.id) * 1e12;
    d.hbm_bytes_per_s = positive(g, "hbm_tb_per_s", d.id) * 1e12;
    d.host_link_bytes_per_s = positive(g, "host_link_gb_per_s", d.id) * 1e9;
    d.sm_count = int(positive(g, "sm_count", d.id));
    d.launch_s = positive(g, "launch_us", d.id) * 1e-6;
    d.graph_launch_s = positive(g, "graph_launch_us", d.id) * 1e-6;
    d.sync_s = positive(g, "sync_us", d.id) * 1e-6;
    if (g.contains("interconnect")) {
      const nlohmann::json& ic = g.at("interconnect");
      const std::string who = d.id + ": interconnect";
      if (!ic.is_object()) throw Error("gpus.json: " + who + " must be an object");
      d.interconnect.name = ic.value("name", "");
      d.interconnect.source = ic.value("source", "");
      d.interconnect.link_bytes_per_s = positive(ic, "link_gb_per_s_bidirectional", who) * 1e9;
      d.interconnect.allreduce_busbw = positive(ic, "allreduce_busbw_gb_per_s", who) * 1e9;
      d.interconnect.latency_s = positive(ic, "latency_us", who) * 1e-6;
      d.interconnect.max_gpus = int(positive(ic, "max_gpus", who));
    }
    for (const Gpu& seen : out)
      if (lower(seen.id) == lower(d.id)) throw Error("gpus.json: id \"" + d.id + "\" appears twice");
    out.push_back(d);
  }
  if (out.empty()) throw Error("gpus.json: the \"gpus\" array is empty");
  return out;
}

std::vector<Gpu> load_gpus(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read GPU descriptions " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_gpus(ss.str());
}

const Gpu& find_gpu(const std::vector<Gpu>& gpus, const std::string& id) {
  std::string ids;
  for (const Gpu& g : gpus) {
    if (lower(g.id) == lower(id)) return g;
    ids += (ids.empty() ? "" : ", ") + g.id;
  }
  throw Error("unknown GPU \"" + id + "\" (described: " + ids + ")");
}

const char* precision_name(Precision p) { return p == Precision::BF16 ? "bf16" : "fp32"; }

bool is_gemm_op(const std::string& op) {
  for (const char* prefix : {"linear_", "attention_"})
    if (op.rfind(prefix, 0) == 0) return true;
  return false;
}

double op_peak(const std::string& op, Precision precision, const Gpu& gpu) {
  return precision == Precision::BF16 && is_gemm_op(op) ? gpu.bf16_tensor_flops : gpu.fp32_flops;
}

double headline_peak(Precision precision, const Gpu& gpu) {
  return precision == Precision::BF16 ? gpu.bf16_tensor_flops : gpu.fp32_flops;
}

int64_t runtime_calls(const RuntimeCounters& c) { return c.launches + c.gemms + c.h2d + c.d2h + c.d2d + c.memsets; }

RuntimeCounters operator+(const RuntimeCounters& a, const RuntimeCounters& b) {
  RuntimeCounters s;
  s.launches = a.launches + b.launches;
  s.gemms = a.gemms + b.gemms;
  s.h2d = a.h2d + b.h2d;
  s.d2h = a.d2h + b.d2h;
  s.d2d = a.d2d + b.d2d;
  s.memsets = a.memsets + b.memsets;
  s.h2d_bytes = a.h2d_bytes + b.h2d_bytes;
  s.d2h_bytes = a.d2h_bytes + b.d2h_bytes;
  s.syncs = a.syncs + b.syncs;
  return s;
}

double Roofline::time_s() const { return std::max(compute_s, memory_s) + host_s + launch_s; }

Roofline roofline(double flops, double peak_flops, double dram_bytes, double dram_bytes_per_s, double host_bytes,
                  double host_bytes_per_s, int64_t calls, double launch_s) {
  Roofline r;
  r.compute_s = flops > 0 ? flops / peak_flops : 0.0;
  r.memory_s = dram_bytes > 0 ? dram_bytes / dram_bytes_per_s : 0.0;
  r.host_s = host_bytes > 0 ? host_bytes / host_bytes_per_s : 0.0;
  r.launch_s = double(calls) * launch_s;
  return r;
}

Prediction predict(const StepTrace& trace, const Gpu& gpu, Precision precision) {
  Prediction p;
  p.gpu = gpu.id;
  p.precision = precision;
  p.batch = trace.batch;
  p.total = trace.total;
  RuntimeCounters in_ops;
  for (const OpTrace& t : trace.ops) {
    Row r = op_row(t, gpu, precision);
    in_ops = in_ops + t.runtime;
    p.flops += r.cost.flops;
    p.bytes += r.cost.bytes;
    p.compute_floor_s += r.eager.compute_s;
    p.roofline_s += std::max(r.eager.compute_s, r.eager.memory_s);
    p.serial_s += r.eager.compute_s + r.eager.memory_s;
    p.matmul_flops += r.matmul_flops;
    for (const LaunchRecord& l : t.launches) {
      if (l.kernel == "cublasLtMatmul") continue;
      ++p.kernel_launches;
      if (double(l.grid[0]) * l.grid[1] * l.grid[2] < double(gpu.sm_count)) ++p.underfilled;
    }
    p.ops.push_back(std::move(r));
  }
  // Outside any op: what the runtime did between the ops (uploads, memsets, read-backs).
  Row& o = p.outside;
  o.op = "(outside ops)";
  o.runtime = trace.total - in_ops;
  add_copy_names(o);
  const double host = double(o.runtime.h2d_bytes + o.runtime.d2h_bytes);
  const int64_t calls = runtime_calls(o.runtime);
  o.eager = roofline(0, 1, 0, 1, host, gpu.host_link_bytes_per_s, calls, gpu.launch_s);
  o.graph = roofline(0, 1, 0, 1, host, gpu.host_link_bytes_per_s, calls, gpu.graph_launch_s);
  o.time_s = o.eager.time_s();
  o.graph_time_s = o.graph.time_s();

  p.sync_s = double(trace.total.syncs) * gpu.sync_s;
  p.time_s = o.time_s + p.sync_s;
  p.graph_time_s = o.graph_time_s + p.sync_s;
  p.launch_s = o.eager.launch_s;
  p.host_s = o.eager.host_s;
  for (const Row& r : p.ops) {
    p.time_s += r.time_s;
    p.graph_time_s += r.graph_time_s;
    p.launch_s += r.eager.launch_s;
    p.host_s += r.eager.host_s;
  }
  p.serial_s += p.launch_s + p.host_s + p.sync_s;
  p.ideal_s = p.flops / headline_peak(precision, gpu);
  p.memory_floor_s = p.bytes / gpu.hbm_bytes_per_s;
  return p;
}

std::vector<Row> group_by_op(const std::vector<Row>& rows) {
  std::vector<Row> out;
  std::map<std::string, size_t> at;
  for (const Row& r : rows) {
    auto it = at.find(r.op);
    if (it == at.end()) {
      at.emplace(r.op, out.size());
      out.push_back(r);
    } else {
      add_into(out[it->second], r);
    }
  }
  return out;
}

std::string bound(const Row& row) {
  const Roofline& e = row.eager;
  const double work = std::max(e.compute_s, e.memory_s);
  if (e.launch_s > work && e.launch_s >= e.host_s) return "launch";
  if (e.host_s > work) return "host";
  if (work == 0) return "-";
  if (row.compute_bound == row.count) return "compute";
  if (row.compute_bound == 0) return "memory";
  return "mixed";
}

std::string display_kernel_name(const std::string& kernel) {
  std::string s = kernel;
  for (const char* drop : {"(anonymous namespace)::", "vitcuda::"})
    for (size_t at; (at = s.find(drop)) != std::string::npos;) s.erase(at, std::string(drop).size());
  return s;
}

// ---- data parallelism --------------------------------------------------------------------------

namespace {
double ring_s(double factor, double bytes, int n, const Interconnect& ic, int64_t calls) {
  if (n <= 1) return 0.0;
  if (!(ic.allreduce_busbw > 0)) throw Error("data parallel: the GPU has no interconnect figures (gpus.json)");
  return factor * bytes / ic.allreduce_busbw + double(calls) * ic.latency_s;
}

bool ends_with(const std::string& s, const char* tail) {
  const size_t n = std::char_traits<char>::length(tail);
  return s.size() >= n && s.compare(s.size() - n, n, tail) == 0;
}
}  // namespace

double allreduce_s(double bytes, int n, const Interconnect& ic, int64_t calls) {
  return ring_s(2.0 * (n - 1) / n, bytes, n, ic, calls);
}
double reduce_scatter_s(double bytes, int n, const Interconnect& ic, int64_t calls) {
  return ring_s(double(n - 1) / n, bytes, n, ic, calls);
}
double all_gather_s(double bytes, int n, const Interconnect& ic, int64_t calls) {
  return ring_s(double(n - 1) / n, bytes, n, ic, calls);
}

double grad_arena_bytes(int64_t arena_elements) { return 4.0 * double(arena_elements); }

int64_t zero_padded_elements(int64_t arena_elements, int n) {
  const int64_t unit = 64 * int64_t(std::max(n, 1));
  return (arena_elements + unit - 1) / unit * unit;
}

std::vector<double> bucket_sizes(double bytes, double bucket_bytes) {
  if (!(bytes > 0)) return {};
  if (!(bucket_bytes > 0) || bucket_bytes >= bytes) return {bytes};
  std::vector<double> out;
  double left = bytes;
  while (left > bucket_bytes) {
    out.push_back(bucket_bytes);
    left -= bucket_bytes;
  }
  out.push_back(left);
  return out;
}

double exposed_comm_s(const std::vector<double>& buckets, double backward, int n, const Interconnect& ic) {
  double total = 0;
  for (double b : buckets) total += b;
  if (n <= 1 || !(total > 0)) return 0.0;
  double done = 0, channel = 0;  // bytes made final so far; when the channel is free
  for (double b : buckets) {
    done += b;
    const double ready = backward * std::min(1.0, done / total);
    channel = std::max(ready, channel) + allreduce_s(b, n, ic, 1);
  }
  return std::max(0.0, channel - backward);
}

double backward_s(const Prediction& p, bool graph) {
  size_t first = p.ops.size(), last = 0;
  for (size_t i = 0; i < p.ops.size(); ++i) {
    if (!ends_with(p.ops[i].op, "_backward")) continue;
    first = std::min(first, i);
    last = i;
  }
  double s = 0;
  for (size_t i = first; i <= last && i < p.ops.size(); ++i) s += graph ? p.ops[i].graph_time_s : p.ops[i].time_s;
  return s;
}

double optimizer_s(const Prediction& p, bool graph) {
  double s = 0;
  for (const Row& r : p.ops)
    if (r.op == "adamw_update") s += graph ? r.graph_time_s : r.time_s;
  return s;
}

DataParallel predict_data_parallel(const Prediction& single, const Gpu& gpu, int64_t arena_elements,
                                   const DataParallelOptions& o) {
  const int n = o.gpus;
  if (n < 1) throw Error("data parallel: the number of GPUs must be positive, got " + std::to_string(n));
  if (o.zero != 0 && o.zero != 1) throw Error("data parallel: --zero is 0 or 1, got " + std::to_string(o.zero));
  const Interconnect& ic = gpu.interconnect;
  if (n > 1 && !(ic.allreduce_busbw > 0))
    throw Error("data parallel: GPU \"" + gpu.id + "\" has no \"interconnect\" figures in the descriptions");
  if (n > 1 && n > ic.max_gpus)
    throw Error("data parallel: " + std::to_string(n) + " GPUs exceed the " + std::to_string(ic.max_gpus) + " one " +
                gpu.id + " machine joins (several machines are not modelled)");
  DataParallel d;
  d.gpus = n;
  d.zero = o.zero;
  d.overlap = o.zero == 0 && o.overlap;
  d.batch_per_gpu = single.batch;
  d.single_step_s = o.graph ? single.graph_time_s : single.time_s;
  d.backward_s = backward_s(single, o.graph);
  if (o.zero == 1) {
    const double padded = grad_arena_bytes(zero_padded_elements(arena_elements, n));
    d.grad_bytes = padded;
    d.buckets = 0;
    d.comm_s = reduce_scatter_s(padded, n, ic) + all_gather_s(padded, n, ic);
    d.exposed_s = d.comm_s;
    d.optimizer_saved_s = optimizer_s(single, o.graph) * (1.0 - 1.0 / n);
    d.moments_bytes_per_gpu = 8.0 * double(zero_padded_elements(arena_elements, n)) / n;
  } else {
    d.grad_bytes = grad_arena_bytes(arena_elements);
    const std::vector<double> buckets =
        d.overlap ? bucket_sizes(d.grad_bytes, o.bucket_bytes) : std::vector<double>{d.grad_bytes};
    d.buckets = int64_t(buckets.size());
    d.comm_s = allreduce_s(d.grad_bytes, n, ic, d.buckets);
    d.exposed_s = d.overlap ? exposed_comm_s(buckets, d.backward_s, n, ic) : d.comm_s;
    d.moments_bytes_per_gpu = 8.0 * double(arena_elements);
  }
  d.step_s = d.single_step_s + d.exposed_s - d.optimizer_saved_s;
  return d;
}

}  // namespace vitcuda::step_model
