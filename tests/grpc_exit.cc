// Linked into every test that uses gRPC (tests/CMakeLists.txt): once the last
// test has run, wait for gRPC's own clean-up before the process exits, as the
// `baton` binary does (net/grpc_library.h). A channel whose last reference goes
// away on one of gRPC's threads is cleaned up on a detached thread; exiting
// during that clean-up leaves gRPC's threads unjoined, which ThreadSanitizer
// reports as a thread leak.
#include <gtest/gtest.h>

#include "baton/net/grpc_library.h"

namespace {

class AwaitGrpcAtExit : public ::testing::Environment {
 public:
  void TearDown() override { baton::net::AwaitGrpcShutdown(absl::Seconds(5)); }
};

[[maybe_unused]] ::testing::Environment* const kAwaitGrpcAtExit =
    ::testing::AddGlobalTestEnvironment(new AwaitGrpcAtExit);

}  // namespace
