// Verification that a partition plan computes what the whole model computes.
//
// VerifyPlan runs the model once as a whole in ONNX Runtime, then runs every
// partition of the plan as its own standalone ONNX model (graph::ExtractSubmodel)
// in plan order, handing each partition the model inputs and the outputs of
// earlier partitions by name, exactly as the runtime does; finally it compares
// every model output of the partitioned run with the whole-model run.
//
// Example:
//   BATON_ASSIGN_OR_RETURN(auto model, graph::Model::LoadFile("net.onnx"));
//   BATON_ASSIGN_OR_RETURN(auto plan, partition::CutBalanced(*model, 3));
//   BATON_ASSIGN_OR_RETURN(auto inputs, verify::RandomInputs(*model, /*seed=*/1));
//   BATON_ASSIGN_OR_RETURN(auto report, verify::VerifyPlan(*model, plan, inputs));
//   if (!report.ok) std::cerr << report.message;  // names the output and partition
//
// Thread-safety: pure functions; each call creates its own ONNX Runtime sessions.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "baton/backend/ort/ort_runner.h"
#include "baton/core/status.h"
#include "baton/core/tensor.h"
#include "baton/graph/model.h"
#include "baton/partition/plan.h"

namespace baton::verify {

// Tensors by value name, in a meaningful order (model input or output order).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// How RandomInputs fills and shapes the model inputs.
//
// Shapes: `shapes[input]` gives an input's whole shape (it must agree with the
// declared rank and known dims; it is the only way to feed an input of unknown
// rank). Otherwise a dim with a known size keeps it. A symbolic dim ("batch", "seq")
// takes `dims[param]` when given; otherwise the first time a param is met
// decides its size for every input: `batch_dim` (1) when it is the first dim of
// its input, else `default_dim` (64: large enough for the convolutions, pooling
// windows and strides of image models to leave a non-empty output). A dim with
// neither size nor name is resolved the same way but independently each time.
// Other inputs of unknown rank are an error (their shape cannot be guessed).
//
// Values: floating-point inputs (float32/64, float16, bfloat16) are uniform in
// [float_low, float_high]; integer inputs are uniform in [int_low, int_high)
// (default [0, 10): small non-negative values stay inside embedding tables,
// gather ranges and one-hot depths); bool inputs are fair coin flips; string
// inputs are short random lowercase words. `fixed_values` fills every element
// of the named input with one value (e.g. {"sr", 16000} for a sample rate).
struct InputOptions {
  std::map<std::string, std::vector<int64_t>> shapes;
  std::map<std::string, int64_t> dims;
  int64_t batch_dim = 1;
  int64_t default_dim = 64;
  double float_low = -1.0;
  double float_high = 1.0;
  int64_t int_low = 0;
  int64_t int_high = 10;
  std::map<std::string, double> fixed_values;
  // Refuse to create any single input with more elements than this (a guard
  // against defaults that explode, e.g. a rank-6 input of 64s).
  int64_t max_elements = int64_t{1} << 26;
};

// One tensor per model input, in model.inputs() order; deterministic for a
// given seed (and standard library). Errors name the input: unknown element
// type or rank, non-tensor inputs, shapes or fixed_values naming no input,
// a shape that contradicts the declared one, a fixed value not representable in
// the input's type, an invalid range, too many elements.
absl::StatusOr<NamedTensors> RandomInputs(const graph::Model& model, uint64_t seed, const InputOptions& options = {});

// Element-wise tolerance: a floating-point element passes when
// |a - b| <= abs  OR  |a - b| <= rel * |a|   (a = expected, b = actual).
struct Tolerance {
  double abs = 1e-5;
  double rel = 1e-4;
};

struct Comparison {
  double max_abs = 0;      // max |a - b| (+inf when a NaN/inf is matched by something else)
  double max_rel = 0;      // max |a - b| / |a| over elements with a != 0
  int64_t mismatches = 0;  // elements outside tolerance
  bool ok = false;
  std::string message;  // "" when ok; else what differs and the first bad element
};

// Compares `actual` with `expected`. ok iff element types and shapes are equal
// and every element passes: floating-point types (float32/64, float16,
// bfloat16, complex parts) within `tolerance`, with NaN equal to NaN and an
// infinity equal only to the same-signed infinity; integers, bools and strings
// must be exactly equal.
Comparison Compare(const Tensor& expected, const Tensor& actual, const Tolerance& tolerance = {});

// Runs the whole model once in ONNX Runtime; returns model.outputs() in order.
absl::StatusOr<NamedTensors> RunWholeModel(const graph::Model& model,
                                           std::span<const std::pair<std::string, Tensor>> inputs,
                                           const ort::SessionOptions& options = {});

// Dynamic batching's safety check: `batched` (graph::WithFreeBatchDim of the
// model) fed the samples stacked along dimension 0 must answer, row block by
// row block, what it answers for each sample alone (within `tolerance`). At
// least two samples are needed. Errors name the output and sample that
// differ, or the failure that stacking or running caused (not the model:
// the caller says which one it checked).
absl::Status CheckBatchable(const graph::Model& batched, std::span<const NamedTensors> samples,
                            const Tolerance& tolerance = {});

struct OutputReport {
  std::string name;
  // Partition that produced the output ("model input" for a model input passed
  // through; empty when nothing produced it).
  std::string produced_by;
  Comparison comparison;
};

struct PartitionReport {
  std::string name;
  size_t num_nodes = 0;
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  bool ran = false;  // false when extraction or ORT failed (see error)
  std::string error;
};

struct VerifyReport {
  std::vector<OutputReport> outputs;        // model.outputs() order
  std::vector<PartitionReport> partitions;  // plan order; stops after the first failing partition
  bool ok = false;
  // One line per problem: the failing output and the partition that produced
  // it, or the partition that could not be extracted or run.
  std::string message;
};

// Verifies `plan` against the whole model on `inputs` (one per model input).
// Returns an error only when verification cannot start: inputs that do not
// match the model, or the whole model failing in ONNX Runtime. A partition that
// cannot be extracted or run, an output that no partition produces, and outputs
// outside `tolerance` are reported in the VerifyReport (ok = false). Tensors
// flow between partitions by move; inputs are never copied.
absl::StatusOr<VerifyReport> VerifyPlan(const graph::Model& model, const partition::PartitionPlan& plan,
                                        std::span<const std::pair<std::string, Tensor>> inputs,
                                        const ort::SessionOptions& options = {}, const Tolerance& tolerance = {});

// IEEE half / bfloat16 conversions used by RandomInputs and Compare.
float HalfToFloat(uint16_t bits);
uint16_t FloatToHalf(float value);  // round to nearest even; overflow to inf
float Bfloat16ToFloat(uint16_t bits);
uint16_t FloatToBfloat16(float value);  // round to nearest even

}  // namespace baton::verify
