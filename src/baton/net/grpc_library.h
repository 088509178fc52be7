// gRPC's library lifetime as a process sees it at exit.
//
// gRPC (1.51) shuts its core down when its last user (a channel, a server)
// goes away. When that last release happens on one of gRPC's own threads, the
// clean-up runs on a detached thread instead, and a process that returns from
// main meanwhile exits with gRPC's executor threads finished but not joined:
// ThreadSanitizer reports a thread leak, and the clean-up is cut short.
//
// Thread-safety: may be called from any thread.
#pragma once

#include "absl/time/time.h"

namespace baton::net {

// Waits until gRPC's core is no longer initialised in this process (at once
// when nothing used it, or its last user already shut it down), at most
// `bound`. True when it is shut down; false when something still holds it
// after `bound` (e.g. an object that outlives the caller).
bool AwaitGrpcShutdown(absl::Duration bound);

}  // namespace baton::net
