// vitcuda — reading input files for the dataset loaders (host/data.cpp, host/data_formats.cpp):
// whole files, inflated when gzip-compressed, with the error messages users and tests see.
// Internal to libvitcuda (not installed).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace vitcuda {

// 'path', as error messages name files and folders (not `quoted`: std::quoted, found by
// argument-dependent lookup on std::string, would compete with it).
std::string in_quotes(const std::string& path);

// Whether path names a regular file (a folder), following symlinks.
bool is_file(const std::string& path);
bool is_dir(const std::string& path);

enum class Gzip : uint8_t {
  Keep,     // the bytes as stored
  Inflate,  // a file that starts with the gzip magic 1f 8b is inflated (every member, as gzip -d)
};

// The whole file. Throws Error "cannot open 'path': <reason>", "cannot read 'path': I/O error";
// with Gzip::Inflate also "cannot read 'path': <what is wrong with the gzip stream>".
std::vector<uint8_t> read_file(const std::string& path, Gzip gzip = Gzip::Keep);

}  // namespace vitcuda
