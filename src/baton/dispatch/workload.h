// Workloads for the virtual-time shell: request streams with periodic, Poisson
// or closed-loop arrivals, driven by a seeded generator so that the same seed
// always produces the same requests at the same instants.
//
// Thread-safety: value types; Rng is not synchronised.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <variant>

#include "baton/core/ids.h"
#include "baton/core/time.h"
#include "baton/dispatch/messages.h"

namespace baton::dispatch {

// SplitMix64: small, fast, and the same integers on every platform and standard
// library (std:: distributions are implementation-defined). Exponential goes
// through std::log1p, so it is reproducible on one platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next();
  double Uniform();                          // [0, 1)
  uint64_t Below(uint64_t n);                // [0, n); n > 0
  int64_t Between(int64_t lo, int64_t hi);   // [lo, hi]; lo <= hi
  Duration Exponential(Duration mean);       // exponentially distributed, >= 0

 private:
  uint64_t state_;
};

// Requests every `period`, starting at the stream's start.
struct Periodic {
  Duration period{0};
};
// Poisson arrivals: exponential gaps with mean 1 / per_second; the first at start.
struct Poisson {
  double per_second = 1.0;
};
// `concurrency` requests in flight; each answer triggers the next one `think` later.
struct ClosedLoop {
  int concurrency = 1;
  Duration think{0};
};
using Arrival = std::variant<Periodic, Poisson, ClosedLoop>;

struct RequestTemplate {
  NamedTensors inputs;
  std::optional<Duration> deadline;  // relative to the arrival instant
  int priority = 0;
};
// Makes the `index`-th request of a stream (0-based); `rng` is the stream's own.
using RequestMaker = std::function<RequestTemplate(uint64_t index, Rng& rng)>;

struct StreamSpec {
  ModelId model;
  Arrival arrival;
  uint64_t count = 0;  // requests to issue
  Time start{};
  RequestMaker make;
};

}  // namespace baton::dispatch
