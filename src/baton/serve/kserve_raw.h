// Tensor contents in the KServe v2 protocol's raw form (gRPC
// raw_input_contents / raw_output_contents): the elements row-major without
// padding, in the machine's (little-endian) byte order; a BYTES element as a
// 4-byte little-endian length followed by its bytes. Shared by the server
// and the client. Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "baton/baton.h"
#include "baton/core/status.h"

namespace baton::serve {

// A tensor of `type` and `shape` over `bytes`, which it takes (no copy).
// InvalidArgument, naming `where`, when the size does not match the shape.
absl::StatusOr<Tensor> TensorFromRaw(std::string bytes, ElemType type, std::vector<int64_t> shape,
                                     const std::string& where);

// Appends `t`'s contents in raw form to `out`.
void AppendRaw(const Tensor& t, std::string& out);

}  // namespace baton::serve
