#include "baton/net/grpc_library.h"

#include <grpc/grpc.h>

#include "absl/time/clock.h"

namespace baton::net {

bool AwaitGrpcShutdown(absl::Duration bound) {
  // grpc_is_initialized takes the lock the clean-up thread holds for the
  // whole shutdown, so a false answer means the clean-up has finished too.
  const absl::Time deadline = absl::Now() + bound;
  while (grpc_is_initialized() != 0) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

}  // namespace baton::net
