// Internal to the zoo: a layer-level helper over graph::GraphBuilder that
// tracks static shapes, names nodes and weights, draws deterministic weights
// and counts parameters and multiply-accumulates.
//
// Naming: a layer called "layer1.0.conv1" is a node of that name whose (first)
// output value has the same name; its initializers are "<name>.weight",
// "<name>.bias", ... Names must be unique within a model (the builder reports
// duplicates).
//
// Counting mode (materialize = false) builds the same graph but draws no
// weights and adds no initializers; only the statistics are meaningful.
//
// Thread-safety: none; one Net per generated model.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "baton/core/dtype.h"
#include "baton/graph/builder.h"
#include "baton/zoo/zoo.h"

namespace baton::zoo::internal {

// A value of the graph under construction with its static shape.
struct Val {
  std::string name;
  std::vector<int64_t> shape;
  ElemType type = dtype::kFloat;

  int64_t NumElements() const;
  int64_t dim(int i) const { return shape.at(i < 0 ? shape.size() + i : i); }
};

// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, identical everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next();
  // A uniform integer in [-2^23, 2^23) as a float (exactly representable).
  // Weights are NextInt24() * (bound / 2^23): one exactly rounded product, or
  // one fused multiply-add to add a centre, so the result is the same on every
  // IEEE-754 machine whatever the compiler's floating-point contraction.
  float NextInt24();

 private:
  uint64_t state_;
};

class Net {
 public:
  // A model-level net. `seed` fixes every weight it draws.
  Net(std::string graph_name, uint64_t seed, bool materialize);
  // A subgraph (If branch, Loop body) sharing the parent's generator and
  // counters (its SharedConstants are its own, prefixed with `graph_name`);
  // attach it with graph::Attr::Graph(attr, child.builder()).
  Net Subgraph(std::string graph_name) const;

  graph::GraphBuilder& builder() { return builder_; }
  const ZooStats& stats() const { return shared_->stats; }
  void AddMacs(int64_t macs) { shared_->stats.macs += macs; }
  bool materialize() const { return shared_->materialize; }

  // ---- graph interface ----
  Val Input(const std::string& name, ElemType type, std::vector<int64_t> shape);
  void Output(const Val& v);
  // Declares v's static shape as value_info (for values inference leaves unshaped).
  void DeclareShape(const Val& v);
  // Adds a node whose outputs have the given (already known) types/shapes.
  std::vector<Val> Node(const std::string& op_type, const std::string& name, const std::vector<std::string>& inputs,
                        std::vector<Val> outputs, std::vector<graph::Attr> attrs = {});

  // ---- initializers (float ones count as parameters) ----
  // center + U(-half, half); `center` 0 gives a symmetric weight.
  Val Param(const std::string& name, std::vector<int64_t> shape, float half, float center = 0.0f);
  Val Constant(const std::string& name, std::vector<int64_t> shape, std::vector<float> data);
  Val ConstantI64(const std::string& name, std::vector<int64_t> shape, std::vector<int64_t> data);
  // A float constant shared by every reader of this (sub)graph, created on first use.
  Val SharedConstant(const std::string& name, std::vector<int64_t> shape, std::vector<float> data);
  Val SharedScalar(const std::string& name, float value) { return SharedConstant(name, {}, {value}); }

  // ---- layers ----
  // Weight scale: U(-a, a) with a = sqrt(3 * gain / fan_in); gain 2 (He) before
  // ReLU-like activations, 1 (Xavier/LeCun) before linear or saturating ones.
  // `pad` < 0 means "same" padding k/2.
  Val Conv(const std::string& name, const Val& x, int64_t out_channels, int64_t kernel, int64_t stride = 1,
           int64_t group = 1, bool bias = true, float gain = 2.0f, int64_t pad = -1);
  // Kernel `k`, stride `k`: upsamples by k.
  Val ConvTranspose(const std::string& name, const Val& x, int64_t out_channels, int64_t k);
  // Inference-mode batch norm with plausible statistics; `gamma` scales the
  // learned scale (use < 1 on the last norm of a residual branch so that the
  // variance of a deep residual stack stays bounded).
  Val BatchNorm(const std::string& name, const Val& x, float gamma = 1.0f);
  Val Unary(const std::string& op_type, const std::string& name, const Val& x, std::vector<graph::Attr> attrs = {});
  Val Relu(const std::string& name, const Val& x) { return Unary("Relu", name, x); }
  Val Relu6(const std::string& name, const Val& x);  // Clip(x, 0, 6)
  Val LeakyRelu(const std::string& name, const Val& x, float alpha);
  Val Gelu(const std::string& name, const Val& x);  // 0.5·x·(1 + erf(x/√2)), opset-17 spelling
  Val Binary(const std::string& op_type, const std::string& name, const Val& a, const Val& b);
  Val Add(const std::string& name, const Val& a, const Val& b) { return Binary("Add", name, a, b); }
  Val Mul(const std::string& name, const Val& a, const Val& b) { return Binary("Mul", name, a, b); }
  Val MaxPool(const std::string& name, const Val& x, int64_t kernel, int64_t stride, int64_t pad = 0);
  Val GlobalAveragePool(const std::string& name, const Val& x);
  Val Flatten(const std::string& name, const Val& x);
  // y = x·Wᵀ + b with W [n, in] (Gemm transB=1); x is [batch, in].
  Val Gemm(const std::string& name, const Val& x, int64_t n, float gain = 1.0f);
  Val Concat(const std::string& name, const std::vector<Val>& xs, int64_t axis);
  // Nearest-neighbour 2x upsampling of an NCHW tensor.
  Val Upsample2x(const std::string& name, const Val& x);
  Val MatMul(const std::string& name, const Val& a, const Val& b);
  // y = x·W + b with W [in, n] (MatMul + Add), for [..., in] inputs.
  Val Linear(const std::string& name, const Val& x, int64_t n, float gain = 1.0f);
  Val Reshape(const std::string& name, const Val& x, std::vector<int64_t> shape);
  Val Transpose(const std::string& name, const Val& x, std::vector<int64_t> perm);
  Val Softmax(const std::string& name, const Val& x, int64_t axis = -1);
  Val LayerNorm(const std::string& name, const Val& x, float epsilon = 1e-5f);
  Val ReduceMean(const std::string& name, const Val& x, std::vector<int64_t> axes, bool keepdims);

 private:
  struct Shared {
    Rng rng;
    ZooStats stats;
    bool materialize;
  };
  Net(std::shared_ptr<Shared> shared, std::string graph_name);

  std::shared_ptr<Shared> shared_;
  graph::GraphBuilder builder_;
  std::string scalar_prefix_;  // "" for the model, "<graph name>." for subgraphs (no shadowing)
  std::set<std::string> shared_scalars_;
};

}  // namespace baton::zoo::internal
