// Access rules shared by `baton serve`'s front-ends (HTTP and gRPC): which
// hosts count as loopback, and the bearer-token check.
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "baton/core/status.h"

namespace baton::serve {

// True for "localhost", a literal IPv4 address in 127.0.0.0/8 and "::1"
// (with or without brackets). Names are not resolved.
bool IsLoopbackLiteral(const std::string& host);

// True when `header` is "Bearer <token>" for a non-empty `token`. The
// comparison takes the same time wherever the first difference is, so the
// token cannot be guessed byte by byte.
bool BearerTokenMatches(std::string_view header, const std::string& token);

// The rule both front-ends follow: TLS files come in pairs, and a server
// without TLS and a token only listens on loopback. InvalidArgument naming
// `what` ("HTTP", "gRPC"), the host and the fix otherwise.
absl::Status CheckExposure(const std::string& what, const std::string& host, const std::string& tls_cert,
                           const std::string& tls_key, const std::string& token);

// A bearer token from `path` (a regular file of at most 4 KiB; surrounding
// whitespace dropped). InvalidArgument when it is empty, and the file
// errors of ReadRegularFile.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace baton::serve
