// Small helpers shared by the dispatcher tests: int64 scalar tensors as the
// data that flows between fake partitions, and times in milliseconds.
#pragma once

#include <cstdint>

#include "baton/core/dtype.h"
#include "baton/core/tensor.h"
#include "baton/core/time.h"

namespace baton::dispatch::testing {

inline Tensor Scalar(int64_t v) {
  Tensor t(dtype::kInt64, {1});
  t.data<int64_t>()[0] = v;
  return t;
}
inline int64_t ValueOf(const Tensor& t) { return t.data<int64_t>()[0]; }
inline Time Ms(double ms) { return kTimeZero + FromMillis(ms); }

}  // namespace baton::dispatch::testing
