// The tests' gate on a system's state: waits until a condition holds, with a
// bound, instead of sleeping for a guessed time.
#pragma once

#include <chrono>
#include <thread>

namespace baton::testing {

// Waits until `ready()` holds, at most `limit`; returns whether it was seen to
// hold. `ready` is called again and again, so it should be cheap or bounded
// itself. The answer is the call that ended the wait, not a call after it: a
// state that holds only for a while (one request running, another queued)
// may be gone by the next call.
template <typename Ready>
bool WaitUntil(Ready ready, std::chrono::seconds limit = std::chrono::seconds(60)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (true) {
    const bool past = std::chrono::steady_clock::now() >= give_up;  // read first: ready() gets a last look
    if (ready()) return true;
    if (past) return false;
    std::this_thread::yield();
  }
}

}  // namespace baton::testing
