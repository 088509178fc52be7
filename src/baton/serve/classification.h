// The KServe / Triton classification extension: a requested output with the
// parameter "classification": k (REST; an int64_param over gRPC) is answered
// with its k largest classes instead of its values. Shared by both
// front-ends. Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "baton/baton.h"
#include "baton/core/status.h"

namespace baton::serve {

// The largest k a request may ask for (more than any output has classes is
// answered with all of them).
inline constexpr int64_t kMaxClasses = int64_t{1} << 20;

// The top `k` elements of `t` along its last dimension (the classes), for
// each index of the leading dimensions, largest first (equal values: lower
// index first), as a BYTES tensor of shape [leading dims..., min(k, classes)]
// whose elements read "value:index" with the value as std::to_string prints
// it, or "value:index:label" when `labels` names that index (the model's
// config `labels`), as Triton answers. InvalidArgument naming `where` for a
// BYTES, complex or bfloat16 tensor, a scalar, no classes, or k < 1.
absl::StatusOr<Tensor> Classify(const Tensor& t, int64_t k, const std::string& where,
                                std::span<const std::string> labels = {});

// Whether a request may ask for `output`'s top classes, from its declared type
// and shape, before anything runs: k in 0..kMaxClasses (0 = the output itself)
// and, for k > 0, what Classify needs. InvalidArgument naming `where`.
absl::Status CheckClassification(const TensorInfo& output, int64_t k, const std::string& where);

}  // namespace baton::serve
