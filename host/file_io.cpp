// vitcuda — reading input files (see file_io.h).
#include "host/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "vitcuda/tensor.h"  // Error

namespace vitcuda {

uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return UINT64_MAX;
  uint64_t bytes;
  if (__builtin_mul_overflow(uint64_t(pages), uint64_t(page), &bytes)) return UINT64_MAX;
  return bytes;
}

uint64_t input_byte_limit() { return std::min(kMaxDatasetBytes, physical_memory_bytes()); }

std::string in_quotes(const std::string& path) { return "'" + path + "'"; }

bool is_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool is_dir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

namespace {

std::string kind_of(mode_t m) {
  if (S_ISREG(m)) return std::string();
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISDIR(m)) return "a directory";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "a special file";
}

[[noreturn]] void not_regular(const std::string& path, const std::string& kind) {
  throw Error("cannot read " + in_quotes(path) + ": is " + kind + ", not a regular file");
}

}  // namespace

std::string special_file_kind(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return std::string();
  return kind_of(st.st_mode);
}

void require_regular_file(const std::string& path) {
  const std::string kind = special_file_kind(path);
  if (!kind.empty()) not_regular(path, kind);
}

FILE* open_regular_file(const std::string& path, uint64_t* size, const char* what) {
  auto fail = [&](const char* verb, const std::string& reason) {
    throw Error(std::string(what ? what : verb) + " " + in_quotes(path) + ": " + reason);
  };
  // Checked without opening first: opening a device can have effects.
  if (const std::string kind = special_file_kind(path); !kind.empty())
    fail("cannot read", "is " + kind + ", not a regular file");
  // O_NONBLOCK: should the path have become a FIFO since the stat, the open does not wait for
  // a writer; fstat of the descriptor then refuses it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail("cannot open", std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail("cannot open", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("cannot read", "is " + kind_of(st.st_mode) + ", not a regular file");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  FILE* f = ::fdopen(fd, "rb");
  if (!f) {
    const int err = errno;
    ::close(fd);
    fail("cannot open", std::strerror(err));
  }
  if (size) *size = uint64_t(st.st_size);
  return f;
}

// ---- InputStream ------------------------------------------------------------------------------

InputStream::InputStream(const std::string& path, Gzip gzip) : path_(path), buf_(size_t(1) << 16) {
  f_ = open_regular_file(path, &size_);
  fill(2);
  gz_ = gzip == Gzip::Inflate && end_ - pos_ >= 2 && buf_[pos_] == 0x1f && buf_[pos_ + 1] == 0x8b;
  if (gz_ && inflateInit2(&zs_, 15 + 16) != Z_OK) {  // 15 + 16: gzip wrapper, largest window
    std::fclose(f_);
    throw Error("cannot inflate " + in_quotes(path) + ": zlib init failed");
  }
}

InputStream::~InputStream() {
  if (gz_) inflateEnd(&zs_);
  if (f_) std::fclose(f_);
}

bool InputStream::fill(size_t want) {
  if (end_ - pos_ >= want) return true;
  if (pos_ > 0) {
    std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
    end_ -= pos_;
    pos_ = 0;
  }
  while (!file_eof_ && end_ < want) {
    const size_t n = std::fread(buf_.data() + end_, 1, buf_.size() - end_, f_);
    end_ += n;
    if (n == 0) {
      if (std::ferror(f_)) throw Error("cannot read " + in_quotes(path_) + ": I/O error");
      file_eof_ = true;
    }
  }
  return end_ - pos_ >= want;
}

size_t InputStream::read(void* dst, size_t n) {
  uint8_t* out = static_cast<uint8_t*>(dst);
  size_t got = 0;
  if (have_peek_ && n > 0) {
    out[got++] = peek_;
    have_peek_ = false;
  }
  while (got < n && !done_) {
    if (pos_ == end_ && !fill(1)) {
      if (!gz_) {
        done_ = true;
        break;
      }
    }
    if (!gz_) {
      const size_t k = std::min(n - got, end_ - pos_);
      std::memcpy(out + got, buf_.data() + pos_, k);
      pos_ += k;
      got += k;
      continue;
    }
    zs_.next_in = buf_.data() + pos_;
    zs_.avail_in = uInt(end_ - pos_);
    zs_.next_out = out + got;
    zs_.avail_out = uInt(std::min<size_t>(n - got, size_t(1) << 30));
    const uInt out_before = zs_.avail_out;
    const int rc = inflate(&zs_, Z_NO_FLUSH);
    got += out_before - zs_.avail_out;
    pos_ = end_ - zs_.avail_in;
    if (rc == Z_STREAM_END) {
      // Another member follows only if the gzip magic does; like gzip(1), ignore trailing
      // bytes that are not one (some tools pad archives with zeros).
      if (fill(2) && buf_[pos_] == 0x1f && buf_[pos_ + 1] == 0x8b) {
        inflateReset(&zs_);
        continue;
      }
      done_ = true;
      break;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR && pos_ == end_ && !file_eof_) continue;  // needs more input: read on
    const std::string why = rc == Z_BUF_ERROR && pos_ == end_
                                ? "gzip stream ends early (truncated .gz file)"
                                : std::string("corrupt gzip stream (") + (zs_.msg ? zs_.msg : zError(rc)) + ")";
    throw Error("cannot read " + in_quotes(path_) + ": " + why);
  }
  return got;
}

bool InputStream::more() {
  if (have_peek_) return true;
  have_peek_ = read(&peek_, 1) == 1;
  return have_peek_;
}

std::vector<uint8_t> read_file(const std::string& path, Gzip gzip, uint64_t max_bytes) {
  InputStream in(path, gzip);
  auto too_big = [&](const std::string& size) {
    return Error(in_quotes(path) + " is " + size + " bytes" + (in.compressed() ? " inflated" : "") +
                 ", more than the limit of " + std::to_string(max_bytes) + " bytes for an input file");
  };
  std::vector<uint8_t> bytes;
  if (!in.compressed()) {
    if (in.file_size() > max_bytes) throw too_big(std::to_string(in.file_size()));
    bytes.resize(size_t(in.file_size()));
    bytes.resize(in.read(bytes.data(), bytes.size()));
    if (bytes.size() < in.file_size()) return bytes;  // shrank while read
    // grew while read: take what follows too, within the limit
  }
  const size_t chunk = size_t(1) << 20;
  for (;;) {
    const size_t have = bytes.size();
    const size_t room = size_t(std::min<uint64_t>(chunk, max_bytes - std::min<uint64_t>(max_bytes, have)));
    if (room == 0) {
      if (in.more()) throw too_big("over " + std::to_string(max_bytes));
      return bytes;
    }
    bytes.resize(have + room);
    const size_t n = in.read(bytes.data() + have, room);
    bytes.resize(have + n);
    if (n < room) return bytes;
  }
}

}  // namespace vitcuda
