// The built-in model zoo: deterministic generators for a set of well-known
// network shapes (CNNs, a segmentation net, a detector, a transformer encoder,
// a recurrent net and a control-flow model), so that benchmarks and tests need
// no downloads.
//
// Contract:
//  * Generate returns a serialized ONNX ModelProto (ir_version 8, ai.onnx opset
//    17, batch 1, every shape fixed) that passes the ONNX checker and strict
//    shape inference and runs in ONNX Runtime.
//  * The bytes depend only on (name, small): weights come from a fixed-seed
//    splitmix64 generator and are made with exactly rounded integer-to-float
//    arithmetic, so every machine produces the same file.
//  * Weights are scaled He/Xavier-style so that activations stay O(1) for
//    inputs of O(1) magnitude and numeric comparisons between runs are
//    meaningful.
//  * `small` selects a reduced variant with the same topology (same op types,
//    same kinds of connections, fewer channels/layers/pixels) that runs in a
//    few milliseconds; the full variant has realistic size.
//
// Thread-safety: all functions are pure and may be called concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "baton/core/status.h"

namespace baton::zoo {

struct ZooEntry {
  std::string name;         // what Generate accepts, e.g. "resnet"
  std::string description;  // one line: architecture, inputs, outputs
};

// Size of one variant, counted while building it (no weights are generated).
struct ZooStats {
  int64_t parameters = 0;  // elements of all float initializers (weights, biases, norm statistics)
  // Multiply-accumulates of one inference, counting Conv, ConvTranspose, Gemm,
  // MatMul and recurrent cells (Loop bodies times their trip count); 1 MAC = 2 FLOPs.
  int64_t macs = 0;
  int64_t nodes = 0;  // top-level nodes
};

// Every model, in a fixed order.
std::vector<ZooEntry> List();

// The serialized model, or NotFound listing the valid names.
absl::StatusOr<std::string> Generate(std::string_view name, bool small);

// Parameter and MAC counts of a model without materialising its weights (cheap
// even for the full variants), or NotFound listing the valid names.
absl::StatusOr<ZooStats> Stats(std::string_view name, bool small);

// Not in List(): a model whose runs practically never end, for testing
// execution timeouts, cancellation and interruption. y = x + 2^40, computed
// one Loop iteration at a time (float x[1] -> float y[1]); ONNX Runtime
// checks its terminate flag between iterations, so a timeout stops it.
absl::StatusOr<std::string> SpinModel();

}  // namespace baton::zoo
