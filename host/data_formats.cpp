// vitcuda — the dataset readers: IDX (MNIST, Fashion-MNIST), CIFAR-10/100 binary, MNIST-style CSV
// and image folders (PNG/JPEG/... through image.h's load_image, i.e. stb_image), the standard
// class names, and load_dataset() for the tools.
//
// IDX: a big-endian header, magic 0x00 0x00 <type> <ndims>, then ndims u32 dims, then the
// payload. Images are type 0x08 (u8) with 3 dims [N, H, W]; labels are u8 with 1 dim [N].
// The header is read first (inflated on the fly when the file starts with the gzip magic
// 1f 8b); the payload it promises is checked against the input limit (file_io.h) and, for a
// raw file, against the file size before anything is allocated, and no more than that payload
// (and one byte, to detect trailing data) is read or inflated: a small .gz that inflates to
// gigabytes costs no more memory than its header claims.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "host/file_io.h"
#include "vitcuda/augment.h"
#include "vitcuda/data.h"
#include "vitcuda/image.h"  // load_image (stb_image), convert_channels, image_to_chw

namespace fs = std::filesystem;

namespace vitcuda {

// ---- reading IDX files -----------------------------------------------------------------

static uint32_t read_be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

struct IdxFile {
  std::vector<int64_t> dims;
  std::vector<uint8_t> payload;
};

// Reads an IDX file of u8 elements with `ndims` dimensions; `kind` names it in messages. The
// header is read (inflated) first; the payload it claims is checked against the limit and,
// for a raw file, the file size before anything is allocated, and no more than the claimed
// payload and one byte (trailing data) is ever read or inflated.
static IdxFile read_idx(const std::string& path, int ndims, const char* kind) {
  require_regular_file(path);
  if (!is_file(path)) throw Error("missing IDX " + std::string(kind) + " file " + in_quotes(path));
  IdxFile idx;
  InputStream in(path, Gzip::Inflate);

  uint8_t b[4 + 4 * 3];
  const size_t header = 4 + 4 * size_t(ndims);
  size_t got = in.read(b, 4);
  uint32_t expected_magic = 0x00000800u | uint32_t(ndims);
  if (got < 4)
    throw Error("truncated IDX file " + in_quotes(path) + ": " + std::to_string(got) +
                " bytes, not even the 4-byte magic number");
  uint32_t magic = read_be32(b);
  if (magic != expected_magic) {
    char msg[160];
    std::snprintf(msg, sizeof(msg), "bad magic number 0x%08x (expected 0x%08x for an IDX %s file)", magic,
                  expected_magic, kind);
    throw Error("cannot read " + in_quotes(path) + ": " + msg);
  }
  got += in.read(b + 4, header - 4);
  if (got < header)
    throw Error("truncated IDX file " + in_quotes(path) + ": " + std::to_string(got) +
                " bytes, the header alone needs " + std::to_string(header));
  // Caps well past any real dataset: they catch garbage headers before the size arithmetic.
  const int64_t kMaxCount = int64_t(1) << 31, kMaxSide = 1 << 14;  // product < 2^63
  int64_t payload = 1;
  std::string shape;
  for (int i = 0; i < ndims; i++) {
    int64_t d = read_be32(b + 4 + 4 * i);
    int64_t cap = i == 0 ? kMaxCount : kMaxSide;
    if (d == 0 || d > cap)
      throw Error("cannot read " + in_quotes(path) + ": dimension " + std::to_string(i) + " is " + std::to_string(d) +
                  " (must be 1.." + std::to_string(cap) + ")");
    idx.dims.push_back(d);
    shape += (i ? " x " : "") + std::to_string(d);
    if (__builtin_mul_overflow(payload, d, &payload))
      throw Error("cannot read " + in_quotes(path) + ": dimensions " + shape + " overflow");
  }
  const uint64_t limit = input_byte_limit();
  if (uint64_t(payload) > limit)
    throw Error("cannot read " + in_quotes(path) + ": header claims " + shape + " = " + std::to_string(payload) +
                " data bytes, more than the limit of " + std::to_string(limit) + " bytes for a dataset");
  if (!in.compressed()) {
    const uint64_t have = in.file_size() - header;
    if (have < uint64_t(payload))
      throw Error("truncated IDX file " + in_quotes(path) + ": header promises " + std::to_string(payload) +
                  " data bytes, file has " + std::to_string(have));
    if (have > uint64_t(payload))
      throw Error("cannot read " + in_quotes(path) + ": " + std::to_string(have - uint64_t(payload)) +
                  " bytes after the " + std::to_string(payload) + " data bytes the header promises");
  }
  // Grown a chunk at a time: a short (compressed) file costs only what it holds.
  const size_t chunk = size_t(64) << 20;
  size_t have = 0;
  while (have < size_t(payload)) {
    const size_t want = std::min(size_t(payload) - have, chunk);
    idx.payload.resize(have + want);
    const size_t n = in.read(idx.payload.data() + have, want);
    have += n;
    if (n < want)
      throw Error("truncated IDX file " + in_quotes(path) + ": header promises " + std::to_string(payload) +
                  " data bytes, file has " + std::to_string(have));
  }
  if (in.more())
    throw Error("cannot read " + in_quotes(path) + ": bytes after the " + std::to_string(payload) +
                " data bytes the header promises");
  return idx;
}

Dataset load_idx(const std::string& images_path, const std::string& labels_path, int num_classes) {
  if (num_classes < 1 || num_classes > 256)
    throw Error("load_idx: num_classes is " + std::to_string(num_classes) + " (IDX labels are bytes: 1..256)");
  IdxFile im = read_idx(images_path, 3, "image");
  IdxFile lb = read_idx(labels_path, 1, "label");
  if (im.dims[0] != lb.dims[0])
    throw Error("image and label counts disagree: " + in_quotes(images_path) + " has " + std::to_string(im.dims[0]) +
                " images, " + in_quotes(labels_path) + " has " + std::to_string(lb.dims[0]) + " labels");

  Dataset ds;
  ds.name = images_path;
  ds.channels = 1;
  ds.height = int(im.dims[1]);
  ds.width = int(im.dims[2]);
  ds.num_classes = num_classes;
  for (int c = 0; c < num_classes; c++) ds.class_names.push_back(std::to_string(c));
  ds.images = std::move(im.payload);
  ds.labels.resize(size_t(lb.dims[0]));
  const uint8_t* l = lb.payload.data();
  for (size_t i = 0; i < ds.labels.size(); i++) {
    if (l[i] >= num_classes)
      throw Error("bad label in " + in_quotes(labels_path) + ": label " + std::to_string(l[i]) + " of example " +
                  std::to_string(i) + " is >= num_classes " + std::to_string(num_classes));
    ds.labels[i] = l[i];
  }
  return ds;
}

// The raw file when present, else its .gz; a missing file is named with both spellings.
static std::string find_idx(const std::string& dir, const std::string& base) {
  std::string raw = dir + "/" + base;
  if (is_file(raw) || !special_file_kind(raw).empty()) return raw;  // read_idx refuses a FIFO, folder, ...
  if (is_file(raw + ".gz")) return raw + ".gz";
  throw Error("missing IDX file " + in_quotes(raw) + " (nor " + in_quotes(raw + ".gz") + ")");
}

Dataset load_mnist_dir(const std::string& dir, const std::string& split) {
  std::string prefix;
  if (split == "train")
    prefix = "train";
  else if (split == "test")
    prefix = "t10k";
  else
    throw Error("load_mnist_dir: split is '" + split + "', must be 'train' or 'test'");
  std::string images = find_idx(dir, prefix + "-images-idx3-ubyte");
  std::string labels = find_idx(dir, prefix + "-labels-idx1-ubyte");
  return load_idx(images, labels, 10);
}

namespace {

std::vector<std::string> numbered_names(int n) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i) v.push_back(std::to_string(i));
  return v;
}

// ---- CIFAR -----------------------------------------------------------------------------------
constexpr int kCifarPixels = 3 * 32 * 32;

// dir itself when it holds `probe`, else dir/sub when that does (the archives unpack into it).
std::string cifar_root(const std::string& dir, const std::string& sub, const std::string& probe, const char* what) {
  if (!is_dir(dir)) throw Error(std::string("missing ") + what + " folder " + in_quotes(dir));
  if (!is_file(dir + "/" + probe) && is_file(dir + "/" + sub + "/" + probe)) return dir + "/" + sub;
  return dir;
}

std::string need_file(const std::string& path, const char* what) {
  require_regular_file(path);
  if (!is_file(path)) throw Error(std::string("missing ") + what + " file " + in_quotes(path));
  return path;
}

}  // namespace

Dataset load_cifar_files(const std::vector<std::string>& files, int label_bytes, int label_index, int num_classes) {
  if (files.empty()) throw Error("load_cifar_files: no files given");
  if (label_bytes < 1 || label_index < 0 || label_index >= label_bytes || num_classes < 1 || num_classes > 256)
    throw Error("load_cifar_files: bad record layout (label bytes " + std::to_string(label_bytes) + ", label index " +
                std::to_string(label_index) + ", classes " + std::to_string(num_classes) + ")");
  const size_t record = size_t(label_bytes) + kCifarPixels;
  const std::string layout = label_bytes == 1 ? "1 label byte + 3072 pixel bytes"
                                              : std::to_string(label_bytes) + " label bytes + 3072 pixel bytes";
  Dataset ds;
  ds.name = files.front();
  ds.channels = 3;
  ds.height = ds.width = 32;
  ds.num_classes = num_classes;
  // The whole dataset's size from the file sizes, before anything is read.
  uint64_t total = 0;
  for (const std::string& path : files) {
    require_regular_file(path);
    if (!is_file(path)) throw Error("missing CIFAR file " + in_quotes(path));
    uint64_t size = 0;
    std::fclose(open_regular_file(path, &size));
    total += size;
    if (total > input_byte_limit())
      throw Error("CIFAR file " + in_quotes(path) + ": the dataset's files add up to " + std::to_string(total) +
                  " bytes, more than the limit of " + std::to_string(input_byte_limit()) + " bytes for a dataset");
  }
  for (const std::string& path : files) {
    const std::vector<uint8_t> b = read_file(path);
    if (b.empty()) throw Error("CIFAR file " + in_quotes(path) + " is empty");
    if (b.size() % record != 0)
      throw Error("CIFAR file " + in_quotes(path) + ": size " + std::to_string(b.size()) +
                  " bytes is not a multiple of the " + std::to_string(record) + "-byte record (" + layout +
                  "); truncated or not this format");
    const size_t n = b.size() / record;
    ds.images.reserve(ds.images.size() + n * kCifarPixels);
    for (size_t r = 0; r < n; ++r) {
      const uint8_t* rec = b.data() + r * record;
      const int label = rec[label_index];
      if (label >= num_classes)
        throw Error("bad label in CIFAR file " + in_quotes(path) + ": record " + std::to_string(r) + " has label " +
                    std::to_string(label) + ", must be < " + std::to_string(num_classes));
      ds.labels.push_back(label);
      ds.images.insert(ds.images.end(), rec + label_bytes, rec + record);
    }
  }
  ds.class_names = numbered_names(num_classes);
  return ds;
}

Dataset load_cifar10_dir(const std::string& dir, const std::string& split) {
  const std::string root =
      cifar_root(dir, "cifar-10-batches-bin", split == "test" ? "test_batch.bin" : "data_batch_1.bin", "CIFAR-10");
  std::vector<std::string> files;
  if (split == "train") {
    for (int i = 1; i <= 5; ++i)
      files.push_back(need_file(root + "/data_batch_" + std::to_string(i) + ".bin", "CIFAR-10"));
  } else if (split == "test") {
    files.push_back(need_file(root + "/test_batch.bin", "CIFAR-10"));
  } else {
    throw Error("load_cifar10_dir: split is '" + split + "', must be 'train' or 'test'");
  }
  Dataset ds = load_cifar_files(files, 1, 0, 10);
  ds.class_names = standard_class_names("cifar10");
  return ds;
}

Dataset load_cifar100_dir(const std::string& dir, const std::string& split, bool fine) {
  if (split != "train" && split != "test")
    throw Error("load_cifar100_dir: split is '" + split + "', must be 'train' or 'test'");
  const std::string file = split + ".bin";
  const std::string root = cifar_root(dir, "cifar-100-binary", file, "CIFAR-100");
  Dataset ds = load_cifar_files({need_file(root + "/" + file, "CIFAR-100")}, 2, fine ? 1 : 0, fine ? 100 : 20);
  ds.class_names = standard_class_names(fine ? "cifar100" : "cifar100_coarse");
  return ds;
}

// ---- CSV -------------------------------------------------------------------------------------
namespace {

// Parses a whole field as a number; false when it is not one.
bool parse_number(const char* b, const char* e, double& v) {
  while (b < e && (*b == ' ' || *b == '\t')) ++b;
  while (e > b && (e[-1] == ' ' || e[-1] == '\t')) --e;
  if (b == e) return false;
  // Fast path: plain digits (every field of a real MNIST CSV).
  if (e - b <= 9) {
    int64_t x = 0;
    const char* p = b;
    while (p < e && *p >= '0' && *p <= '9') x = x * 10 + (*p++ - '0');
    if (p == e) {
      v = double(x);
      return true;
    }
  }
  std::string s(b, e);
  char* end = nullptr;
  v = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(v);
}

std::string field_text(const char* b, const char* e) {
  std::string s(b, e);
  if (s.size() > 20) s = s.substr(0, 20) + "...";
  return s;
}

}  // namespace

Dataset load_csv(const std::string& path, int num_classes) {
  require_regular_file(path);
  if (!is_file(path)) throw Error("missing CSV file " + in_quotes(path));
  if (num_classes < 0) throw Error("load_csv: num_classes is " + std::to_string(num_classes) + ", must be >= 0");
  const std::vector<uint8_t> text = read_file(path);
  const char* p = reinterpret_cast<const char*>(text.data());
  const char* end = p + text.size();
  Dataset ds;
  ds.name = path;
  ds.channels = 1;
  size_t fields_per_row = 0;  // set by the first row (header or data)
  int max_label = -1;
  std::vector<std::pair<const char*, const char*>> fields;
  for (int64_t line = 1; p < end; ++line) {
    const char* eol = static_cast<const char*>(std::memchr(p, '\n', size_t(end - p)));
    if (!eol) eol = end;
    const char* le = eol;
    if (le > p && le[-1] == '\r') --le;
    const char* lb = p;
    p = eol < end ? eol + 1 : end;
    if (line == 1 && le - lb >= 3 && uint8_t(lb[0]) == 0xEF && uint8_t(lb[1]) == 0xBB && uint8_t(lb[2]) == 0xBF)
      lb += 3;  // UTF-8 byte order mark
    bool blank = true;
    for (const char* q = lb; q < le; ++q) blank = blank && (*q == ' ' || *q == '\t');
    if (blank) continue;
    fields.clear();
    for (const char* f = lb;;) {
      const char* comma = static_cast<const char*>(std::memchr(f, ',', size_t(le - f)));
      if (!comma) {
        fields.emplace_back(f, le);
        break;
      }
      fields.emplace_back(f, comma);
      f = comma + 1;
    }
    const std::string where = in_quotes(path) + " line " + std::to_string(line);
    if (fields_per_row == 0) {
      fields_per_row = fields.size();
      if (fields_per_row < 2)
        throw Error("CSV file " + where + ": " + std::to_string(fields_per_row) +
                    " field; expected a label then the pixels (label,p0,p1,...)");
      const size_t pixels = fields_per_row - 1;
      const int side = int(std::lround(std::sqrt(double(pixels))));
      if (size_t(side) * size_t(side) != pixels)
        throw Error("CSV file " + where + ": " + std::to_string(pixels) +
                    " pixels per row is not a square image (side = sqrt(#pixels))");
      ds.height = ds.width = side;
      double v;
      bool header = false;
      for (auto& f : fields) header = header || !parse_number(f.first, f.second, v);
      if (header) continue;
    }
    if (fields.size() != fields_per_row)
      throw Error("CSV file " + where + ": " + std::to_string(fields.size()) + " fields, expected " +
                  std::to_string(fields_per_row) + " (a label and " + std::to_string(fields_per_row - 1) + " pixels)");
    double v;
    if (!parse_number(fields[0].first, fields[0].second, v))
      throw Error("CSV file " + where + ": label '" + field_text(fields[0].first, fields[0].second) +
                  "' is not a number");
    if (v < 0 || v != std::floor(v) || v > 65535)
      throw Error("CSV file " + where + ": label " + field_text(fields[0].first, fields[0].second) +
                  " is not a class index (an integer 0..65535)");
    const int label = int(v);
    if (num_classes > 0 && label >= num_classes)
      throw Error("CSV file " + where + ": label " + std::to_string(label) + " is >= the number of classes " +
                  std::to_string(num_classes));
    max_label = std::max(max_label, label);
    ds.labels.push_back(label);
    for (size_t k = 1; k < fields.size(); ++k) {
      if (!parse_number(fields[k].first, fields[k].second, v))
        throw Error("CSV file " + where + ", field " + std::to_string(k + 1) + ": '" +
                    field_text(fields[k].first, fields[k].second) + "' is not a number");
      if (v < 0 || v > 255 || v != std::floor(v))
        throw Error("CSV file " + where + ", field " + std::to_string(k + 1) + ": pixel value " +
                    field_text(fields[k].first, fields[k].second) + " is not an integer in 0..255");
      ds.images.push_back(uint8_t(v));
    }
  }
  if (ds.labels.empty()) throw Error("CSV file " + in_quotes(path) + " has no data rows");
  ds.num_classes = num_classes > 0 ? num_classes : max_label + 1;
  ds.class_names = numbered_names(ds.num_classes);
  return ds;
}

// ---- image folders ---------------------------------------------------------------------------
bool image_folder_supported() { return png_supported(); }

namespace {

bool image_extension(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  for (const char* ok : {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".gif", ".tga"})
    if (e == ok) return true;
  return false;
}

bool hidden(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

// Decodes one image, converts it to `channels`, CHW, resized to h x w into dst. Empty string or
// the error (one line naming the file).
std::string decode_image(const std::string& path, int channels, int h, int w, uint8_t* dst) {
  try {
    const Image img = convert_channels(load_image(path), channels);
    const std::vector<uint8_t> chw = image_to_chw(img);
    if (img.height == h && img.width == w)
      std::memcpy(dst, chw.data(), chw.size());
    else
      resize_bilinear(chw.data(), channels, img.height, img.width, dst, h, w);
    return std::string();
  } catch (const std::exception& e) {
    return e.what();
  }
}

}  // namespace

Dataset load_image_folder(const std::string& dir, int height, int width, int channels,
                          const std::vector<std::string>& classes) {
  if (!image_folder_supported())
    throw Error("cannot load image folder " + in_quotes(dir) +
                ": vitcuda was built without stb_image (install libstb-dev and rebuild)");
  if (height < 1 || width < 1)
    throw Error("load_image_folder: image size " + std::to_string(height) + "x" + std::to_string(width) +
                " must be positive");
  if (channels != 1 && channels != 3)
    throw Error("load_image_folder: channels is " + std::to_string(channels) + ", must be 1 or 3");
  if (!is_dir(dir)) throw Error("missing image folder " + in_quotes(dir));
  std::vector<std::string> found;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec))
    if (!hidden(e.path()) && e.is_directory()) found.push_back(e.path().filename().string());
  if (ec) throw Error("cannot list image folder " + in_quotes(dir) + ": " + ec.message());
  std::sort(found.begin(), found.end());
  if (found.empty())
    throw Error("image folder " + in_quotes(dir) + " has no class subfolders (expected dir/<class>/<image>)");

  Dataset ds;
  ds.name = dir;
  ds.channels = channels;
  ds.height = height;
  ds.width = width;
  ds.class_names = classes.empty() ? found : classes;
  ds.num_classes = int(ds.class_names.size());
  std::vector<std::string> paths;
  for (const std::string& cls : found) {
    const auto it = std::find(ds.class_names.begin(), ds.class_names.end(), cls);
    if (it == ds.class_names.end())
      throw Error("class folder " + in_quotes(dir + "/" + cls) + " is not one of the " +
                  std::to_string(ds.num_classes) + " training classes");
    std::vector<std::string> files;
    for (const fs::directory_entry& e : fs::directory_iterator(dir + "/" + cls, ec))
      if (!hidden(e.path()) && !e.is_directory() && image_extension(e.path())) files.push_back(e.path().string());
    if (ec) throw Error("cannot list class folder " + in_quotes(dir + "/" + cls) + ": " + ec.message());
    if (files.empty())
      throw Error("class folder " + in_quotes(dir + "/" + cls) +
                  " has no images (.png, .jpg, .jpeg, .bmp, .ppm, .pgm, .gif, .tga)");
    std::sort(files.begin(), files.end());
    for (std::string& f : files) {
      paths.push_back(std::move(f));
      ds.labels.push_back(int32_t(it - ds.class_names.begin()));
    }
  }
  // The decoded dataset's size, before it is allocated (each image's own size is checked from
  // its header by load_image before it is decoded).
  const uint64_t bytes = uint64_t(channels) * uint64_t(height) * uint64_t(width);
  uint64_t total = 0;
  if (height > kMaxImageSide || width > kMaxImageSide ||
      __builtin_mul_overflow(bytes, uint64_t(paths.size()), &total) || total > input_byte_limit())
    throw Error("image folder " + in_quotes(dir) + ": " + std::to_string(paths.size()) + " images of " +
                std::to_string(channels) + "x" + std::to_string(height) + "x" + std::to_string(width) +
                " bytes are more than the limit of " + std::to_string(input_byte_limit()) + " bytes for a dataset");
  ds.images.resize(size_t(total));
  std::vector<std::string> errors(paths.size());
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t i = 0; i < int64_t(paths.size()); ++i)
    errors[size_t(i)] =
        decode_image(paths[size_t(i)], channels, height, width, ds.images.data() + size_t(i) * size_t(bytes));
  for (const std::string& e : errors)
    if (!e.empty()) throw Error(e);  // the first failing file in sorted order
  return ds;
}

// ---- names and the tools' entry point --------------------------------------------------------
std::vector<std::string> standard_class_names(const std::string& dataset) {
  if (dataset == "fashion_mnist")
    return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
  if (dataset == "mnist") return numbered_names(10);
  if (dataset == "cifar10")
    return {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  if (dataset == "cifar100")
    return {"apple",      "aquarium_fish", "baby",         "bear",       "beaver",      "bed",         "bee",
            "beetle",     "bicycle",       "bottle",       "bowl",       "boy",         "bridge",      "bus",
            "butterfly",  "camel",         "can",          "castle",     "caterpillar", "cattle",      "chair",
            "chimpanzee", "clock",         "cloud",        "cockroach",  "couch",       "crab",        "crocodile",
            "cup",        "dinosaur",      "dolphin",      "elephant",   "flatfish",    "forest",      "fox",
            "girl",       "hamster",       "house",        "kangaroo",   "keyboard",    "lamp",        "lawn_mower",
            "leopard",    "lion",          "lizard",       "lobster",    "man",         "maple_tree",  "motorcycle",
            "mountain",   "mouse",         "mushroom",     "oak_tree",   "orange",      "orchid",      "otter",
            "palm_tree",  "pear",          "pickup_truck", "pine_tree",  "plain",       "plate",       "poppy",
            "porcupine",  "possum",        "rabbit",       "raccoon",    "ray",         "road",        "rocket",
            "rose",       "sea",           "seal",         "shark",      "shrew",       "skunk",       "skyscraper",
            "snail",      "snake",         "spider",       "squirrel",   "streetcar",   "sunflower",   "sweet_pepper",
            "table",      "tank",          "telephone",    "television", "tiger",       "tractor",     "train",
            "trout",      "tulip",         "turtle",       "wardrobe",   "whale",       "willow_tree", "wolf",
            "woman",      "worm"};
  if (dataset == "cifar100_coarse")
    return {"aquatic_mammals",
            "fish",
            "flowers",
            "food_containers",
            "fruit_and_vegetables",
            "household_electrical_devices",
            "household_furniture",
            "insects",
            "large_carnivores",
            "large_man-made_outdoor_things",
            "large_natural_outdoor_scenes",
            "large_omnivores_and_herbivores",
            "medium_mammals",
            "non-insect_invertebrates",
            "people",
            "reptiles",
            "small_mammals",
            "trees",
            "vehicles_1",
            "vehicles_2"};
  throw Error("standard_class_names: unknown dataset '" + dataset +
              "' (fashion_mnist, mnist, cifar10, cifar100, cifar100_coarse)");
}

std::string dataset_dir(const DatasetSpec& spec) {
  if (spec.dir.empty() && spec.kind == "fashion_mnist") return "/usr/share/datasets/fashion-mnist";
  return spec.dir;
}

Dataset load_dataset(const DatasetSpec& spec, const std::string& split, const Dataset* train) {
  if (split != "train" && split != "test")
    throw Error("load_dataset: split is '" + split + "', must be 'train' or 'test'");
  const std::string& k = spec.kind;
  const std::string dir = dataset_dir(spec);
  if (dir.empty() && !(k == "csv" && !spec.train_csv.empty() && !spec.test_csv.empty()))
    throw Error("no data folder given for dataset '" + k + "' (--data-dir)");
  if (k == "fashion_mnist" || k == "mnist") {
    Dataset d = load_mnist_dir(dir, split);
    d.class_names = standard_class_names(k);
    return d;
  }
  if (k == "cifar10") return load_cifar10_dir(dir, split);
  if (k == "cifar100") return load_cifar100_dir(dir, split, spec.cifar100_fine);
  if (k == "csv") {
    std::string path = split == "train" ? spec.train_csv : spec.test_csv;
    if (path.empty()) {
      path = dir + "/" + split + ".csv";
      if (!is_file(path) && is_file(dir + "/mnist_" + split + ".csv")) path = dir + "/mnist_" + split + ".csv";
    }
    Dataset d = load_csv(path, train ? train->num_classes : 0);
    if (train && !train->class_names.empty()) d.class_names = train->class_names;
    return d;
  }
  if (k == "folder") {
    if (spec.image_size < 1) throw Error("load_dataset: folder datasets need an image size");
    std::string sub = dir + "/" + split;
    if (split == "test" && !is_dir(sub) && is_dir(dir + "/val")) sub = dir + "/val";
    if (!is_dir(sub))
      throw Error("missing image folder " + in_quotes(sub) +
                  (split == "test" ? " (nor " + in_quotes(dir + "/val") + ")" : ""));
    return load_image_folder(sub, spec.image_size, spec.image_size, spec.channels,
                             train ? train->class_names : std::vector<std::string>());
  }
  throw Error("unknown dataset '" + k + "' (fashion_mnist, mnist, cifar10, cifar100, csv, folder)");
}

}  // namespace vitcuda
