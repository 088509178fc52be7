#include "baton/dispatch/workload.h"

#include <cassert>
#include <cmath>

namespace baton::dispatch {

uint64_t Rng::Next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double Rng::Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

uint64_t Rng::Below(uint64_t n) {
  assert(n > 0);
  // Rejection sampling: no modulo bias.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do {
    x = Next();
  } while (x >= limit);
  return x % n;
}

int64_t Rng::Between(int64_t lo, int64_t hi) {
  assert(lo <= hi);
  return lo + static_cast<int64_t>(Below(static_cast<uint64_t>(hi - lo) + 1));
}

Duration Rng::Exponential(Duration mean) {
  const double u = Uniform();  // in [0, 1), so 1 - u is in (0, 1]
  return Duration(static_cast<Duration::rep>(std::llround(-std::log1p(-u) * static_cast<double>(mean.count()))));
}

}  // namespace baton::dispatch
