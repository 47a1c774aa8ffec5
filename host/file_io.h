// vitcuda — reading input files for the dataset, image and checkpoint readers (host/data.cpp,
// host/data_formats.cpp, host/image.cpp, host/checkpoint.cpp): regular files only (a FIFO,
// folder or device is refused without blocking), whole or streamed, inflated when
// gzip-compressed, never more bytes than the caller allows, with the error messages users and
// tests see. Internal to libvitcuda (not installed).
#pragma once
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace vitcuda {

// ---- input limits (docs/DESIGN.md, "Input limits") -------------------------------------------
// Bytes of dataset images held in memory (one split), and of any data file read whole (CIFAR,
// CSV, an inflated IDX file). Further bounded by the host's physical memory.
constexpr uint64_t kMaxDatasetBytes = uint64_t(32) << 30;
// Pixels of one decoded image (stb_image decodes the whole image before it is resized).
constexpr int64_t kMaxImagePixels = int64_t(1) << 26;  // 64 Mpixel, e.g. 8192 x 8192
constexpr int kMaxImageSide = 1 << 16;

// The host's physical memory in bytes (sysconf), or UINT64_MAX when unknown.
uint64_t physical_memory_bytes();
// min(kMaxDatasetBytes, physical memory): what one dataset or one whole-file read may take.
uint64_t input_byte_limit();

// 'path', as error messages name files and folders (not `quoted`: std::quoted, found by
// argument-dependent lookup on std::string, would compete with it).
std::string in_quotes(const std::string& path);

// Whether path names a regular file (a folder), following symlinks.
bool is_file(const std::string& path);
bool is_dir(const std::string& path);

// Empty when `path` is a regular file (following symlinks) or does not exist (the open then
// names the error); else what it is: "a FIFO", "a directory", "a character device", ...
std::string special_file_kind(const std::string& path);
// Throws Error "cannot read 'path': is a FIFO, not a regular file" (and the like) when path
// exists and is not a regular file. Never opens it, so never blocks: for readers that open the
// file themselves (stb_image).
void require_regular_file(const std::string& path);

// Opens a regular file for reading: stat first, then open with O_NONBLOCK and fstat the
// descriptor (a file swapped for a FIFO in between is still refused, and never blocks the
// open), then blocking reads. Throws Error "cannot open 'path': <reason>" or
// "cannot read 'path': is a FIFO, not a regular file"; with `what` (e.g. "cannot load
// checkpoint") every message reads "<what> 'path': <reason>". *size: the file's size in bytes.
FILE* open_regular_file(const std::string& path, uint64_t* size, const char* what = nullptr);

enum class Gzip : uint8_t {
  Keep,     // the bytes as stored
  Inflate,  // a file that starts with the gzip magic 1f 8b is inflated (every member, as gzip -d)
};

// A regular file read front to back, inflated on the fly when Gzip::Inflate and it starts with
// the gzip magic: readers take the header first, check the sizes it claims, and then read (and
// inflate) no more than that.
class InputStream {
 public:
  InputStream(const std::string& path, Gzip gzip);
  ~InputStream();
  InputStream(const InputStream&) = delete;
  InputStream& operator=(const InputStream&) = delete;
  // Up to n bytes into dst; fewer only at the end of the (inflated) data. Throws Error
  // "cannot read 'path': I/O error" or "...: <what is wrong with the gzip stream>".
  size_t read(void* dst, size_t n);
  // Whether at least one more byte follows (reads at most one byte ahead).
  bool more();
  bool compressed() const { return gz_; }
  uint64_t file_size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  bool fill(size_t want);  // ensures `want` input bytes are buffered unless the file ends
  std::string path_;
  FILE* f_ = nullptr;
  uint64_t size_ = 0;
  bool gz_ = false, file_eof_ = false, done_ = false, have_peek_ = false;
  uint8_t peek_ = 0;
  z_stream zs_{};
  std::vector<uint8_t> buf_;  // input not yet consumed: buf_[pos_, end_)
  size_t pos_ = 0, end_ = 0;
};

// The whole file, at most max_bytes of it (after inflating): a larger file is refused before
// it is read, a gzip stream that inflates to more is stopped there. Throws Error
// "cannot open 'path': <reason>", "cannot read 'path': I/O error", "'path' is N bytes, more
// than the limit of M bytes" and the gzip errors of InputStream::read.
std::vector<uint8_t> read_file(const std::string& path, Gzip gzip = Gzip::Keep,
                               uint64_t max_bytes = input_byte_limit());

}  // namespace vitcuda
