// Dynamic batching at the graph level: a copy of a model whose leading
// (batch) dimension is free, so that requests stacked along it run in one
// call.
//
// WithFreeBatchDim: every graph input that a caller feeds and every graph
// output gets the symbolic leading dimension "batch" (whatever it was), the
// intermediate shapes are dropped and inferred again, and the result is loaded
// and validated like any model (display name `<name>+batch`). This is only a
// claim about shapes: ops that tie the batch to a fixed size (a Reshape to a
// constant [1, ...], a Slice over dim 0) make the copy compute something else
// or fail for batches > 1, so callers check it on real inputs
// (verify::CheckBatchable) before using it.
// Errors: a model without inputs; an input or output of unknown or zero rank
// (naming it); the loader's errors for the copy.
//
// Thread-safety: a pure function.
#pragma once

#include <memory>

#include "baton/core/status.h"
#include "baton/graph/model.h"

namespace baton::graph {

inline constexpr const char* kBatchDimParam = "batch";

absl::StatusOr<std::shared_ptr<const Model>> WithFreeBatchDim(const Model& model);

}  // namespace baton::graph
