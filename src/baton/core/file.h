// Reading a file a user names (configs, plans, profiles), with the checks
// every such read needs: it must be a regular file (a FIFO would block the
// open forever, /dev/zero would never end) and at most `max_bytes` long.
// Thread-safety: stateless.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "baton/core/status.h"

namespace baton {

// The whole file. Errors name `what` ("config file", "plan", ...) and the
// path: NotFound when it does not exist or cannot be read, InvalidArgument
// when it is not a regular file or is larger than max_bytes (with the limit).
absl::StatusOr<std::string> ReadRegularFile(const std::string& path, size_t max_bytes, const char* what);

}  // namespace baton
