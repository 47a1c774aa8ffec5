// vitcuda — reading input files (see file_io.h).
#include "host/file_io.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "vitcuda/tensor.h"  // Error

namespace vitcuda {

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

// Inflates every gzip member in turn (gzip allows concatenated members, as `cat a.gz b.gz`).
std::vector<uint8_t> gunzip(const std::vector<uint8_t>& in, const std::string& path) {
  if (in.size() > 0xFFFFFFFFull)  // z_stream counts input in 32 bits
    throw Error("cannot read " + in_quotes(path) + ": compressed file over 4 GiB");
  std::vector<uint8_t> out;
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK)  // 15 + 16: gzip wrapper, largest window
    throw Error("cannot inflate " + in_quotes(path) + ": zlib init failed");
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = uInt(in.size());
  uint8_t buf[1 << 16];
  for (;;) {
    zs.next_out = buf;
    zs.avail_out = sizeof(buf);
    int rc = inflate(&zs, Z_NO_FLUSH);
    out.insert(out.end(), buf, buf + (sizeof(buf) - zs.avail_out));
    if (rc == Z_STREAM_END) {
      // Another member follows only if the gzip magic does; like gzip(1), ignore trailing
      // bytes that are not one (some tools pad archives with zeros).
      if (zs.avail_in < 2 || zs.next_in[0] != 0x1f || zs.next_in[1] != 0x8b) break;
      inflateReset(&zs);
      continue;
    }
    if (rc == Z_OK) continue;
    std::string why = (rc == Z_BUF_ERROR) ? "gzip stream ends early (truncated .gz file)"
                                          : std::string("corrupt gzip stream (") + (zs.msg ? zs.msg : zError(rc)) + ")";
    inflateEnd(&zs);
    throw Error("cannot read " + in_quotes(path) + ": " + why);
  }
  inflateEnd(&zs);
  return out;
}

}  // namespace

std::vector<uint8_t> read_file(const std::string& path, Gzip gzip) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error("cannot open " + in_quotes(path) + ": " + std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) bytes.insert(bytes.end(), buf, buf + n);
  const bool failed = std::ferror(f);
  std::fclose(f);
  if (failed) throw Error("cannot read " + in_quotes(path) + ": I/O error");
  if (gzip == Gzip::Inflate && bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b) bytes = gunzip(bytes, path);
  return bytes;
}

}  // namespace vitcuda
