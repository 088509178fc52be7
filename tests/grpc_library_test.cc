// net::AwaitGrpcShutdown: what `baton` waits for at exit. Its own process:
// the first test relies on nothing in it having used gRPC yet.
#include "baton/net/grpc_library.h"

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include <memory>

#include <gtest/gtest.h>

#include "absl/synchronization/notification.h"

namespace baton::net {
namespace {

TEST(GrpcLibraryTest, NothingToWaitForWhenNothingUsedGrpc) { EXPECT_TRUE(AwaitGrpcShutdown(absl::ZeroDuration())); }

TEST(GrpcLibraryTest, WaitsAtMostItsBoundWhileAChannelIsHeld) {
  std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials());
  EXPECT_FALSE(AwaitGrpcShutdown(absl::Milliseconds(20)));
  channel.reset();
  EXPECT_TRUE(AwaitGrpcShutdown(absl::Seconds(60)));
}

// The case `baton` exits on: the last user of gRPC goes away on one of gRPC's
// own threads (here an alarm's callback), so gRPC cleans up on a detached
// thread. The wait covers that clean-up too.
TEST(GrpcLibraryTest, CoversACleanUpHandedToGrpcsOwnThread) {
  absl::Notification fired;
  auto* alarm = new grpc::Alarm;  // the process's only user of gRPC
  alarm->Set(std::chrono::system_clock::now() + std::chrono::milliseconds(10), [alarm, &fired](bool) {
    delete alarm;
    fired.Notify();
  });
  ASSERT_TRUE(fired.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_TRUE(AwaitGrpcShutdown(absl::Seconds(60)));
}

}  // namespace
}  // namespace baton::net
