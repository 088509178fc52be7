// The tests' gate on a system's state: waits until a condition holds, with a
// bound, instead of sleeping for a guessed time.
#pragma once

#include <chrono>
#include <thread>

namespace baton::testing {

// Waits until `ready()` holds, at most `limit`; returns ready(). `ready` is
// called again and again, so it should be cheap or bounded itself.
template <typename Ready>
bool WaitUntil(Ready ready, std::chrono::seconds limit = std::chrono::seconds(60)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (!ready() && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
  return ready();
}

}  // namespace baton::testing
