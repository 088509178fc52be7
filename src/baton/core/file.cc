#include "baton/core/file.h"

#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace baton {

namespace fs = std::filesystem;

absl::StatusOr<std::string> ReadRegularFile(const std::string& path, size_t max_bytes, const char* what) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    return absl::NotFoundError(
        absl::StrCat(what, " '", path, "' not found or not readable; check the path and its permissions"));
  }
  if (fs::is_directory(st)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", path, "' is a folder; give the path of a file"));
  }
  if (!fs::is_regular_file(st)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " '", path, "' is not a regular file (a pipe, socket or device); give the path of a file"));
  }
  const uintmax_t size = fs::file_size(path, ec);
  if (!ec && size > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", path, "' is ", size, " bytes, more than the limit of ",
                                                   max_bytes, " bytes; is it the right file?"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(what, " '", path, "' not found or not readable; check the path and its permissions"));
  }
  // In chunks, stopping one byte past the limit, in case the file grows while it is read.
  std::string text;
  char chunk[1 << 16];
  while (text.size() <= max_bytes && in.read(chunk, sizeof(chunk)).gcount() > 0) {
    text.append(chunk, static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) return absl::NotFoundError(absl::StrCat(what, " '", path, "' could not be read; check the file"));
  if (text.size() > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " '", path, "' is larger than the limit of ", max_bytes, " bytes; is it the right file?"));
  }
  return text;
}

}  // namespace baton
