// vitcuda — checkpoints (include/vitcuda/checkpoint.h): safetensors read/write with atomic
// file replacement, the training state (weights + AdamW moments) and weight loading for
// fine-tuning and inference (dtype conversion, position-embedding resizing).
//
// Layout: u64 little-endian header length N, N bytes of JSON, then the data section.
// Each tensor entry is {"dtype", "shape", "data_offsets": [begin, end]} with offsets
// relative to the start of the data section. We write what the Python/Rust library writes:
// the JSON padded with spaces to a multiple of 8 bytes (so the data starts 8-aligned),
// "__metadata__" only when there is some, and tensors laid out back to back. We lay them
// out in name order (the Rust library sorts by alignment first; readers do not care).
#include "vitcuda/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "host/file_io.h"

namespace vitcuda {

// Tensor bytes are copied as they sit in memory, and the format is little-endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

using json = nlohmann::json;

int64_t SafeTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

static const char* safetensors_dtype(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::U8: return "U8";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
  }
  return "?";
}

static bool parse_safetensors_dtype(const std::string& s, DType* t) {
  static const std::pair<const char*, DType> table[] = {{"F32", DType::F32}, {"F64", DType::F64}, {"BF16", DType::BF16},
                                                        {"F16", DType::F16}, {"U8", DType::U8},   {"I32", DType::I32},
                                                        {"I64", DType::I64}};
  for (const auto& [name, dtype] : table)
    if (s == name) {
      *t = dtype;
      return true;
    }
  return false;
}

// ---- atomic replacement --------------------------------------------------------------------

struct Chunk {
  const void* data;
  size_t size;
};

static std::string parent_dir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// A writer killed mid-save leaves `<path>.tmp.<pid>` behind (never at `path` itself).
// Remove those of processes that no longer exist, so repeated kills do not pile up
// checkpoint-sized files; a live writer's temporary file is left alone.
static void remove_stale_temporaries(const std::string& path) {
  const std::string dir = parent_dir(path);
  const size_t slash = path.find_last_of('/');
  const std::string prefix = (slash == std::string::npos ? path : path.substr(slash + 1)) + ".tmp.";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0 || name.size() == prefix.size()) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 9) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(digits));
    if (pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH) ::unlink((dir + "/" + name).c_str());
  }
  ::closedir(d);
}

// Writes `chunks` to a temporary file beside `path`, makes it durable, then renames it over
// `path`: rename within one directory is atomic, so readers (and a crash) see either the old
// file or the complete new one, never a partial write. `what` names the file in messages.
static void write_chunks_atomic(const std::string& path, const std::vector<Chunk>& chunks, const char* what) {
  remove_stale_temporaries(path);
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  auto fail = [&](int err, FILE* f) {
    if (f) std::fclose(f);
    ::unlink(tmp.c_str());
    throw Error(std::string("cannot write ") + what + "'" + path + "': " + (err ? std::strerror(err) : "short write"));
  };

  errno = 0;
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail(errno, nullptr);
  for (const Chunk& c : chunks) {
    errno = 0;
    if (c.size && std::fwrite(c.data, 1, c.size, f) != c.size) fail(errno, f);
  }
  if (std::fflush(f) != 0) fail(errno, f);
  if (::fsync(::fileno(f)) != 0) fail(errno, f);
  // fclose can report a deferred write error; the FILE is gone either way.
  if (std::fclose(f) != 0) fail(errno, nullptr);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail(errno, nullptr);

  // The rename itself lives in the directory: fsync it so the new name survives a crash.
  // Some filesystems cannot fsync a directory (EINVAL); the file is in place regardless.
  int dir = ::open(parent_dir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) {
    throw Error(std::string("wrote ") + what + "'" + path +
                "' but cannot open its directory to fsync: " + std::strerror(errno));
  }
  if (::fsync(dir) != 0 && errno != EINVAL && errno != ENOTSUP) {
    int err = errno;
    ::close(dir);
    throw Error(std::string("wrote ") + what + "'" + path +
                "' but fsync of its directory failed: " + std::strerror(err));
  }
  ::close(dir);
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  write_chunks_atomic(path, {{contents.data(), contents.size()}}, "");
}

// ---- save ------------------------------------------------------------------------------------

void save_safetensors(const std::string& path, const SafeTensorsFile& file) {
  auto bad = [&](const std::string& why) { return Error("cannot write checkpoint '" + path + "': " + why); };
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {  // std::map: name order
    if (name.empty() || name == "__metadata__") throw bad("invalid tensor name '" + name + "'");
    for (int64_t d : t.shape)
      if (d < 0) throw bad("tensor '" + name + "' has negative shape " + shape_string(t.shape));
    uint64_t need = uint64_t(t.numel()) * dtype_size(t.dtype);
    if (t.bytes.size() != need)
      throw bad("tensor '" + name + "' holds " + std::to_string(t.bytes.size()) + " bytes, shape " +
                shape_string(t.shape) + " " + safetensors_dtype(t.dtype) + " needs " + std::to_string(need));
    header[name] = {
        {"dtype", safetensors_dtype(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + need}}};
    offset += need;
  }
  if (!file.metadata.empty()) header["__metadata__"] = file.metadata;

  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; i++) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));

  std::vector<Chunk> chunks = {{len, 8}, {text.data(), text.size()}};
  for (const auto& [name, t] : file.tensors) chunks.push_back({t.bytes.data(), t.bytes.size()});
  write_chunks_atomic(path, chunks, "checkpoint ");
}

// ---- load ------------------------------------------------------------------------------------

// The header of an open safetensors file, checked whole (lengths, JSON, dtypes, shapes,
// offsets within the data section and not overlapping) before any tensor byte is read. Memory
// stays bounded by the limits in checkpoint.h: the header length is capped before the header
// is read, and the parse stops at the first value (tensor) over the cap.
static SafeTensorsHeader parse_safetensors_header(FILE* f, uint64_t file_size, const std::string& path) {
  auto bad = [&](const std::string& why) { return Error("cannot load checkpoint '" + path + "': " + why); };
  if (file_size < 8)
    throw bad("file is " + std::to_string(file_size) +
              " bytes, shorter than the 8-byte header length (not a safetensors file)");

  uint8_t len[8];
  if (std::fread(len, 1, 8, f) != 8) throw bad("cannot read the header length");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; i++) header_len |= uint64_t(len[i]) << (8 * i);
  if (header_len > file_size - 8)
    throw bad("header length " + std::to_string(header_len) + " is larger than the file (" + std::to_string(file_size) +
              " bytes): not a safetensors file, or a truncated one");
  if (header_len > kMaxSafetensorsHeaderBytes)
    throw bad("header length " + std::to_string(header_len) + " is more than the limit of " +
              std::to_string(kMaxSafetensorsHeaderBytes) + " bytes");
  std::string text(size_t(header_len), '\0');
  if (header_len && std::fread(text.data(), 1, text.size(), f) != text.size())
    throw bad("cannot read the " + std::to_string(header_len) + "-byte header");
  SafeTensorsHeader out;
  out.file_size = file_size;
  out.data_start = 8 + header_len;
  const uint64_t data_size = file_size - out.data_start;

  // Counted first by a SAX pass that builds nothing: the document (many times the text's
  // memory) is built only for a header within the entry and value caps.
  struct Counter {
    size_t depth = 0, entries = 0, values = 0;
    std::string error;
    bool value() {
      if (++values <= kMaxSafetensorsJsonValues) return true;
      error = "header has more than " + std::to_string(kMaxSafetensorsJsonValues) + " JSON values (the limit)";
      return false;
    }
    bool null() { return value(); }
    bool boolean(bool) { return value(); }
    bool number_integer(json::number_integer_t) { return value(); }
    bool number_unsigned(json::number_unsigned_t) { return value(); }
    bool number_float(json::number_float_t, const std::string&) { return value(); }
    bool string(std::string&) { return value(); }
    bool binary(json::binary_t&) { return value(); }
    bool start_object(size_t) {
      ++depth;
      return value();
    }
    bool end_object() {
      --depth;
      return true;
    }
    bool start_array(size_t) {
      ++depth;
      return value();
    }
    bool end_array() {
      --depth;
      return true;
    }
    bool key(std::string&) {
      if (depth != 1 || ++entries <= kMaxSafetensorsTensors + 1) return true;  // + 1: __metadata__
      error = "header has more than " + std::to_string(kMaxSafetensorsTensors) + " tensors (the limit)";
      return false;
    }
    bool parse_error(size_t, const std::string&, const nlohmann::detail::exception& e) {
      error = std::string("invalid JSON header: ") + e.what();
      return false;
    }
  } counter;
  if (!json::sax_parse(text, &counter)) throw bad(counter.error);
  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {
    throw bad(std::string("invalid JSON header: ") + e.what());
  }
  std::string().swap(text);
  if (!header.is_object()) throw bad("JSON header is not an object");

  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) throw bad("__metadata__ is not an object");
      for (const auto& [k, mv] : v.items()) {
        if (!mv.is_string()) throw bad("__metadata__ value '" + k + "' is not a string");
        out.metadata[k] = mv.get<std::string>();
      }
      continue;
    }
    if (out.tensors.size() >= kMaxSafetensorsTensors)
      throw bad("header has more than " + std::to_string(kMaxSafetensorsTensors) + " tensors (the limit)");
    std::string where = "tensor '" + name + "'";
    if (!v.is_object()) throw bad(where + " is not an object");
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!v.contains(key)) throw bad(where + " has no " + key);

    SafeTensorsEntry t;
    t.name = name;
    if (!v["dtype"].is_string()) throw bad(where + " dtype is not a string");
    std::string dtype = v["dtype"].get<std::string>();
    if (!parse_safetensors_dtype(dtype, &t.dtype)) throw bad(where + " has unknown dtype '" + dtype + "'");

    const json& shape = v["shape"];
    if (!shape.is_array()) throw bad(where + " shape is not an array");
    // Every prefix product must fit int64, so SafeTensor::numel() cannot overflow later.
    int64_t numel = 1;
    for (const json& d : shape) {
      if (!d.is_number_integer()) throw bad(where + " shape has a non-integer entry: " + shape.dump());
      if (!d.is_number_unsigned()) throw bad(where + " has negative shape " + shape.dump());
      uint64_t du = d.get<uint64_t>();
      if (du > uint64_t(std::numeric_limits<int64_t>::max()) || __builtin_mul_overflow(numel, int64_t(du), &numel))
        throw bad(where + " shape " + shape.dump() + " is too large");
      t.shape.push_back(int64_t(du));
    }

    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw bad(where + " data_offsets is not two non-negative integers: " + off.dump());
    uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (end < begin) throw bad(where + " data_offsets " + off.dump() + " end before begin");
    if (end > data_size)
      throw bad(where + " data_offsets " + off.dump() + " are not within the data section (" +
                std::to_string(data_size) + " bytes)");
    uint64_t need;
    if (__builtin_mul_overflow(uint64_t(numel), uint64_t(dtype_size(t.dtype)), &need))
      throw bad(where + " shape " + shape.dump() + " is too large");
    if (end - begin != need)
      throw bad(where + " data_offsets " + off.dump() + " span " + std::to_string(end - begin) + " bytes, shape " +
                shape.dump() + " " + dtype + " needs " + std::to_string(need));
    t.begin = begin;
    t.end = end;
    out.tensors.push_back(std::move(t));
  }

  // Overlap: after sorting by begin, every non-empty range must start at or after the
  // furthest end seen so far. So the tensors' bytes add up to at most the data section.
  std::sort(out.tensors.begin(), out.tensors.end(), [](const SafeTensorsEntry& a, const SafeTensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t max_end = 0;
  const SafeTensorsEntry* max_owner = nullptr;
  for (const SafeTensorsEntry& e : out.tensors) {
    if (e.end == e.begin) continue;
    if (max_owner && e.begin < max_end)
      throw bad("tensors '" + max_owner->name + "' and '" + e.name + "' overlap in the data section");
    max_end = e.end;
    max_owner = &e;
    out.data_bytes += e.end - e.begin;
  }
  return out;
}

// A checkpoint opened for reading: regular files only (a FIFO, folder or device is refused
// without blocking), closed on every exit; errors read "cannot load checkpoint 'path': ...".
using FileCloser = std::unique_ptr<FILE, int (*)(FILE*)>;
static FileCloser open_checkpoint(const std::string& path, uint64_t* size) {
  return FileCloser(open_regular_file(path, size, "cannot load checkpoint"), std::fclose);
}

SafeTensorsHeader read_safetensors_header(const std::string& path) {
  uint64_t size = 0;
  const FileCloser f = open_checkpoint(path, &size);
  return parse_safetensors_header(f.get(), size, path);
}

SafeTensorsFile load_safetensors(const std::string& path) {
  auto bad = [&](const std::string& why) { return Error("cannot load checkpoint '" + path + "': " + why); };
  uint64_t file_size = 0;
  const FileCloser closer = open_checkpoint(path, &file_size);
  FILE* f = closer.get();
  const SafeTensorsHeader h = parse_safetensors_header(f, file_size, path);
  // The tensors' bytes fit in the file (the offsets checks); a sparse file can claim more
  // than memory holds, so they must fit there too.
  if (h.data_bytes > physical_memory_bytes())
    throw bad("its tensors hold " + std::to_string(h.data_bytes) + " bytes, more than this host's memory (" +
              std::to_string(physical_memory_bytes()) + " bytes)");

  SafeTensorsFile out;
  out.metadata = h.metadata;
  // Read each tensor straight into its buffer: checkpoints can be gigabytes, so no
  // second copy of the whole file is made.
  for (const SafeTensorsEntry& e : h.tensors) {
    SafeTensor& t = out.tensors[e.name];
    t.dtype = e.dtype;
    t.shape = e.shape;
    t.bytes.resize(size_t(e.end - e.begin));
    if (t.bytes.empty()) continue;
    if (::fseeko(f, off_t(h.data_start + e.begin), SEEK_SET) != 0 ||
        std::fread(t.bytes.data(), 1, t.bytes.size(), f) != t.bytes.size())
      throw bad("cannot read tensor '" + e.name + "'");
  }
  return out;
}

namespace {
SafeTensor f32_tensor(const std::vector<int64_t>& shape, const float* data, int64_t n) {
  SafeTensor t;
  t.dtype = DType::F32;
  t.shape = shape;
  t.bytes.resize(size_t(n) * sizeof(float));
  std::memcpy(t.bytes.data(), data, t.bytes.size());
  return t;
}

// Refuses a loaded tensor holding NaN or an infinity, naming the file, the tensor and the first
// bad element (one pass; a finite check is far cheaper than reading the file).
void check_finite(const char* kind, const std::string& path, const std::string& name, const float* v, int64_t n) {
  int64_t bad = -1;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) {
      bad = i;
      break;
    }
  if (bad < 0) return;
  char value[32];
  std::snprintf(value, sizeof value, "%g", double(v[bad]));
  throw Error(std::string(kind) + " '" + path + "': tensor '" + name + "' holds a non-finite value (" + value +
              " at index " + std::to_string(bad) + ")");
}

}  // namespace

// ---- training state ------------------------------------------------------------------------------
void save_checkpoint(const std::string& path, const Model& model, const AdamW* opt,
                     const std::map<std::string, std::string>& metadata) {
  SafeTensorsFile f;
  f.metadata = metadata;
  f.metadata["format"] = "vitcuda";
  f.metadata["config"] = model.config().to_json();
  const std::vector<float> w = model.get_master();
  std::vector<float> m, v;
  if (opt) {
    m = opt->exp_avg();
    v = opt->exp_avg_sq();
    f.metadata["optimizer.steps"] = std::to_string(opt->steps_taken());
  }
  for (const ParamSpec& s : model.params()) {
    f.tensors[s.name] = f32_tensor(s.shape, w.data() + s.offset, s.numel);
    if (opt) {
      f.tensors["optimizer.exp_avg." + s.name] = f32_tensor(s.shape, m.data() + s.offset, s.numel);
      f.tensors["optimizer.exp_avg_sq." + s.name] = f32_tensor(s.shape, v.data() + s.offset, s.numel);
    }
  }
  save_safetensors(path, f);
}

std::map<std::string, std::string> load_checkpoint(const std::string& path, Model& model, AdamW* opt) {
  const SafeTensorsFile f = load_safetensors(path);
  const int64_t n = model.arena_size();
  std::vector<float> w(n), m(opt ? n : 0), v(opt ? n : 0);
  auto take = [&](const std::string& name, const ParamSpec& s, std::vector<float>& dst) {
    auto it = f.tensors.find(name);
    if (it == f.tensors.end())
      throw Error("checkpoint '" + path + "' has no tensor '" + name + "' (model " + model.config().name + ")");
    const SafeTensor& t = it->second;
    if (t.dtype != DType::F32)
      throw Error("checkpoint '" + path + "': tensor '" + name + "' is " + dtype_name(t.dtype) + ", expected F32");
    if (t.shape != s.shape)
      throw Error("checkpoint '" + path + "': tensor '" + name + "' has shape " + shape_string(t.shape) +
                  ", the model expects " + shape_string(s.shape));
    std::memcpy(dst.data() + s.offset, t.bytes.data(), t.bytes.size());
    check_finite("checkpoint", path, name, dst.data() + s.offset, s.numel);
  };
  std::map<std::string, bool> known;  // the tensors a checkpoint of this model holds
  for (const ParamSpec& s : model.params()) {
    take(s.name, s, w);
    if (opt) {
      take("optimizer.exp_avg." + s.name, s, m);
      take("optimizer.exp_avg_sq." + s.name, s, v);
    }
    for (const std::string& k : {s.name, "optimizer.exp_avg." + s.name, "optimizer.exp_avg_sq." + s.name})
      known[k] = true;
  }
  // A tensor the model does not have means another model (or a damaged file): refused, as
  // vit_infer's load_weights refuses it, rather than silently dropped.
  for (const auto& kv : f.tensors)
    if (!known.count(kv.first))
      throw Error("checkpoint '" + path + "' has a tensor '" + kv.first + "' that model " + model.config().name +
                  " does not (neither a parameter nor its optimizer state)");
  model.set_master(w);
  if (opt) {
    // All of the text, a non-negative integer ("12abc", "-3" and "1e300" are not).
    opt->set_state(m, v, checkpoint_metadata_int(f.metadata, "optimizer.steps", path, 0, int64_t(1) << 62));
  }
  return f.metadata;
}

std::string checkpoint_metadata(const std::map<std::string, std::string>& metadata, const std::string& key,
                                const std::string& path) {
  auto it = metadata.find(key);
  if (it == metadata.end())
    throw Error("checkpoint '" + path + "' has no '" + key + "' metadata: not a vitcuda training checkpoint");
  return it->second;
}

static std::string number_text(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

int64_t checkpoint_metadata_int(const std::map<std::string, std::string>& metadata, const std::string& key,
                                const std::string& path, int64_t lo, int64_t hi) {
  const std::string text = checkpoint_metadata(metadata, key, path);
  // Digits only (std::stoll would take "12abc" as 12 and skip leading spaces), at most 18 of
  // them so the value fits int64 before the range check.
  bool ok = !text.empty() && text.size() <= 18;
  for (char c : text) ok = ok && c >= '0' && c <= '9';
  int64_t v = 0;
  if (ok)
    for (char c : text) v = v * 10 + (c - '0');
  if (!ok || v < lo || v > hi)
    throw Error("checkpoint '" + path + "': metadata '" + key + "' is '" + text + "', not an integer in [" +
                std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

double checkpoint_metadata_number(const std::map<std::string, std::string>& metadata, const std::string& key,
                                  const std::string& path, double lo, double hi) {
  const std::string text = checkpoint_metadata(metadata, key, path);
  char* end = nullptr;
  errno = 0;
  const double v =
      text.empty() || std::isspace(static_cast<unsigned char>(text[0])) ? 0.0 : std::strtod(text.c_str(), &end);
  if (!end || *end != '\0' || errno == ERANGE || !(lo <= v && v <= hi))
    throw Error("checkpoint '" + path + "': metadata '" + key + "' is '" + text + "', not a number in [" +
                number_text(lo) + ", " + number_text(hi) + "]");
  return v;
}

// ---- weights (vitcuda or timm) ------------------------------------------------------------------
namespace {

// timm resizes with F.interpolate(mode='bicubic', antialias=True): PyTorch's separable
// anti-aliased kernel (PIL's algorithm), a cubic with a = -0.5 whose support widens by the
// downscale factor, sampled at half-pixel centres, with the taps that fall outside the image
// dropped and the rest renormalised (no border clamping).
double cubic_aa(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

// Taps for output index o of a resize in -> out: first source index and normalised weights.
int cubic_taps(int o, int in, int out, std::vector<double>& w) {
  const double scale = double(in) / out, support = 2 * std::max(scale, 1.0), inv = 1 / std::max(scale, 1.0);
  const double center = scale * (o + 0.5);
  const int lo = std::max(int(center - support + 0.5), 0), hi = std::min(int(center + support + 0.5), in);
  w.assign(hi - lo, 0.0);
  double sum = 0;
  for (int j = lo; j < hi; ++j) sum += (w[j - lo] = cubic_aa((j - center + 0.5) * inv));
  for (double& v : w) v /= sum;
  return lo;
}

// A floating-point tensor of a weights file, converted to fp32.
std::vector<float> weights_f32(const SafeTensor& t, const std::string& path, const std::string& name) {
  if (t.dtype != DType::F32 && t.dtype != DType::F64 && t.dtype != DType::BF16 && t.dtype != DType::F16)
    throw Error("weights '" + path + "': tensor '" + name + "' has dtype " + dtype_name(t.dtype) +
                ", expected a floating-point dtype");
  return to_f32(t.bytes.data(), t.dtype, t.numel());
}

}  // namespace

std::vector<float> resize_pos_embed(const std::vector<float>& pos, int num_prefix, int old_h, int old_w, int new_h,
                                    int new_w, int dim) {
  if (int64_t(pos.size()) != int64_t(num_prefix + old_h * old_w) * dim)
    throw Error("resize_pos_embed: " + std::to_string(pos.size()) + " values do not form [" +
                std::to_string(num_prefix) + " + " + std::to_string(old_h) + "x" + std::to_string(old_w) + ", " +
                std::to_string(dim) + "]");
  std::vector<float> out(size_t(num_prefix + new_h * new_w) * dim);
  std::copy(pos.begin(), pos.begin() + size_t(num_prefix) * dim, out.begin());
  const float* grid = pos.data() + size_t(num_prefix) * dim;
  float* dst = out.data() + size_t(num_prefix) * dim;
  std::vector<double> wy, wx;
  for (int oy = 0; oy < new_h; ++oy) {
    const int y0 = cubic_taps(oy, old_h, new_h, wy);
    for (int ox = 0; ox < new_w; ++ox) {
      const int x0 = cubic_taps(ox, old_w, new_w, wx);
      for (int c = 0; c < dim; ++c) {
        double acc = 0;
        for (size_t a = 0; a < wy.size(); ++a)
          for (size_t b = 0; b < wx.size(); ++b) acc += wy[a] * wx[b] * grid[((y0 + a) * old_w + x0 + b) * dim + c];
        dst[(size_t(oy) * new_w + ox) * dim + c] = float(acc);
      }
    }
  }
  return out;
}

std::map<std::string, std::string> load_weights(const std::string& path, Model& model) {
  const SafeTensorsFile f = load_safetensors(path);
  const ViTConfig& cfg = model.config();
  // Tensors the model does not have first: they name the architecture difference (dist_token: a
  // DeiT distilled file) better than the shape mismatch it also causes (pos_embed).
  for (const auto& kv : f.tensors) {
    if (kv.first.rfind("optimizer.", 0) == 0) continue;
    bool known = false;
    for (const ParamSpec& s : model.params()) known = known || s.name == kv.first;
    if (!known)
      throw Error("weights '" + path + "' have a tensor '" + kv.first + "' that model " + cfg.name +
                  " does not (check --model, --global-pool, --pre-logits)");
  }
  std::vector<float> w(model.arena_size());
  for (const ParamSpec& s : model.params()) {
    auto it = f.tensors.find(s.name);
    if (it == f.tensors.end())
      throw Error("weights '" + path + "' have no tensor '" + s.name + "' (model " + cfg.name + ")");
    const SafeTensor& t = it->second;
    std::vector<float> v = weights_f32(t, path, s.name);
    check_finite("weights", path, s.name, v.data(), int64_t(v.size()));
    if (t.shape != s.shape) {
      const int prefix = cfg.num_prefix_tokens();  // cls and DeiT's distillation token keep their rows
      const int64_t old_grid =
          t.shape.size() == 3 && t.shape[0] == 1 && t.shape[2] == s.shape[2] ? t.shape[1] - prefix : -1;
      const int old_side = old_grid > 0 ? int(std::lround(std::sqrt(double(old_grid)))) : -1;
      if (s.name == "pos_embed" && old_side > 0 && int64_t(old_side) * old_side == old_grid) {
        v = resize_pos_embed(v, prefix, old_side, old_side, cfg.grid(), cfg.grid(), cfg.embed_dim);
      } else {
        throw Error("weights '" + path + "': tensor '" + s.name + "' has shape " + shape_string(t.shape) +
                    ", the model expects " + shape_string(s.shape));
      }
    }
    std::memcpy(w.data() + s.offset, v.data(), size_t(s.numel) * 4);
  }
  model.set_master(w);
  return f.metadata;
}

ViTConfig weights_config(const std::string& path, const std::string& preset_name, const std::string& global_pool,
                         const std::string& flag) {
  const std::map<std::string, std::string> md = read_safetensors_header(path).metadata;
  ViTConfig cfg;
  if (md.count("config")) {
    try {
      cfg = ViTConfig::from_json(md.at("config"));
    } catch (const Error& e) {
      throw Error("checkpoint '" + path + "': metadata 'config' is invalid: " + e.what());
    }
    return cfg;
  }
  if (preset_name.empty())
    throw Error("checkpoint '" + path + "' has no 'config' metadata; name the architecture with " + flag + " PRESET");
  cfg = preset(preset_name);
  if (global_pool == "avg") cfg.pool = Pool::Avg;
  if (global_pool == "token") cfg.pool = Pool::Token, cfg.class_token = true;
  if (!global_pool.empty() && global_pool != "avg" && global_pool != "token")
    throw Error("global_pool must be token or avg, got '" + global_pool + "'");
  cfg.validate();
  return cfg;
}

void save_weights(const std::string& path, const Model& model, const std::map<std::string, std::string>& metadata) {
  save_checkpoint(path, model, nullptr, metadata);
}

}  // namespace vitcuda
