// Access rules shared by `baton serve`'s front-ends (HTTP and gRPC): which
// hosts count as loopback, and the bearer-token check.
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

namespace baton::serve {

// True for "localhost", a literal IPv4 address in 127.0.0.0/8 and "::1"
// (with or without brackets). Names are not resolved.
bool IsLoopbackLiteral(const std::string& host);

// True when `header` is "Bearer <token>" for a non-empty `token`. The
// comparison takes the same time wherever the first difference is, so the
// token cannot be guessed byte by byte.
bool BearerTokenMatches(std::string_view header, const std::string& token);

}  // namespace baton::serve
