#include "baton/zoo/net.h"

#include <cassert>
#include <cmath>
#include <numbers>
#include <utility>

#include "absl/strings/str_cat.h"

namespace baton::zoo::internal {
namespace {

using graph::Attr;

int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// numpy-style broadcast of two static shapes.
std::vector<int64_t> Broadcast(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  const size_t rank = std::max(a.size(), b.size());
  std::vector<int64_t> out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    assert(da == db || da == 1 || db == 1);
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Bound of U(-a, a) with variance gain / fan_in.
float InitBound(float gain, int64_t fan_in) {
  return static_cast<float>(std::sqrt(3.0 * gain / static_cast<double>(fan_in)));
}

}  // namespace

int64_t Val::NumElements() const { return Product(shape); }

uint64_t Rng::Next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

float Rng::NextInt24() { return static_cast<float>(static_cast<int32_t>(Next() >> 40) - (int32_t{1} << 23)); }

Net::Net(std::string graph_name, uint64_t seed, bool materialize)
    : shared_(std::make_shared<Shared>(Shared{Rng(seed), ZooStats{}, materialize})), builder_(std::move(graph_name)) {}

Net::Net(std::shared_ptr<Shared> shared, std::string graph_name)
    : shared_(std::move(shared)), builder_(graph_name), scalar_prefix_(graph_name + ".") {}

Net Net::Subgraph(std::string graph_name) const { return Net(shared_, std::move(graph_name)); }

Val Net::Input(const std::string& name, ElemType type, std::vector<int64_t> shape) {
  builder_.AddInput(name, type, std::vector<graph::DimSpec>(shape.begin(), shape.end()));
  return Val{name, std::move(shape), type};
}

void Net::Output(const Val& v) {
  builder_.AddOutput(v.name, v.type, std::vector<graph::DimSpec>(v.shape.begin(), v.shape.end()));
}

void Net::DeclareShape(const Val& v) {
  builder_.AddValueInfo(v.name, v.type, std::vector<graph::DimSpec>(v.shape.begin(), v.shape.end()));
}

std::vector<Val> Net::Node(const std::string& op_type, const std::string& name, const std::vector<std::string>& inputs,
                           std::vector<Val> outputs, std::vector<Attr> attrs) {
  std::vector<std::string> output_names;
  for (const Val& v : outputs) output_names.push_back(v.name);
  builder_.AddNode(op_type, inputs, std::move(output_names), std::move(attrs), name);
  return outputs;
}

Val Net::Param(const std::string& name, std::vector<int64_t> shape, float half, float center) {
  const int64_t n = Product(shape);
  shared_->stats.parameters += n;
  if (shared_->materialize) {
    std::vector<float> data(static_cast<size_t>(n));
    Rng& rng = shared_->rng;
    const float step = std::ldexp(half, -23);  // exact: a power-of-two scaling
    if (center == 0.0f) {
      for (float& v : data) v = rng.NextInt24() * step;
    } else {
      for (float& v : data) v = std::fma(rng.NextInt24(), step, center);
    }
    builder_.AddInitializer(name, dtype::kFloat, shape, std::move(data));
  }
  return Val{name, std::move(shape), dtype::kFloat};
}

Val Net::Constant(const std::string& name, std::vector<int64_t> shape, std::vector<float> data) {
  shared_->stats.parameters += Product(shape);
  if (shared_->materialize) builder_.AddInitializer(name, dtype::kFloat, shape, std::move(data));
  return Val{name, std::move(shape), dtype::kFloat};
}

Val Net::ConstantI64(const std::string& name, std::vector<int64_t> shape, std::vector<int64_t> data) {
  if (shared_->materialize) builder_.AddInitializer(name, dtype::kInt64, shape, std::move(data));
  return Val{name, std::move(shape), dtype::kInt64};
}

Val Net::SharedConstant(const std::string& name, std::vector<int64_t> shape, std::vector<float> data) {
  const std::string full_name = scalar_prefix_ + name;
  if (shared_scalars_.insert(full_name).second) return Constant(full_name, std::move(shape), std::move(data));
  return Val{full_name, std::move(shape), dtype::kFloat};
}

Val Net::Conv(const std::string& name, const Val& x, int64_t out_channels, int64_t kernel, int64_t stride,
              int64_t group, bool bias, float gain, int64_t pad) {
  if (pad < 0) pad = kernel / 2;
  const int64_t in_channels = x.dim(1);
  assert(in_channels % group == 0 && out_channels % group == 0);
  const int64_t fan_in = in_channels / group * kernel * kernel;
  std::vector<std::string> inputs = {
      x.name,
      Param(name + ".weight", {out_channels, in_channels / group, kernel, kernel}, InitBound(gain, fan_in)).name};
  if (bias) inputs.push_back(Param(name + ".bias", {out_channels}, 0.05f).name);
  const int64_t h = (x.dim(2) + 2 * pad - kernel) / stride + 1;
  const int64_t w = (x.dim(3) + 2 * pad - kernel) / stride + 1;
  Val y{name, {x.dim(0), out_channels, h, w}};
  shared_->stats.macs += y.NumElements() * fan_in;
  std::vector<Attr> attrs = {Attr::Ints("kernel_shape", {kernel, kernel}), Attr::Ints("strides", {stride, stride}),
                             Attr::Ints("pads", {pad, pad, pad, pad})};
  if (group != 1) attrs.push_back(Attr::Int("group", group));
  return Node("Conv", name, inputs, {y}, std::move(attrs))[0];
}

Val Net::ConvTranspose(const std::string& name, const Val& x, int64_t out_channels, int64_t k) {
  const int64_t in_channels = x.dim(1);
  // Each output pixel receives exactly one tap per input channel (stride == kernel).
  const Val w = Param(name + ".weight", {in_channels, out_channels, k, k}, InitBound(1.0f, in_channels));
  const Val b = Param(name + ".bias", {out_channels}, 0.05f);
  Val y{name, {x.dim(0), out_channels, x.dim(2) * k, x.dim(3) * k}};
  shared_->stats.macs += x.NumElements() * out_channels * k * k;
  return Node("ConvTranspose", name, {x.name, w.name, b.name}, {y},
              {Attr::Ints("kernel_shape", {k, k}), Attr::Ints("strides", {k, k})})[0];
}

Val Net::BatchNorm(const std::string& name, const Val& x, float gamma) {
  const int64_t c = x.dim(1);
  const Val scale = Param(name + ".weight", {c}, 0.1f * gamma, gamma);
  const Val shift = Param(name + ".bias", {c}, 0.05f);
  const Val mean = Param(name + ".running_mean", {c}, 0.05f);
  const Val var = Param(name + ".running_var", {c}, 0.2f, 1.0f);
  return Node("BatchNormalization", name, {x.name, scale.name, shift.name, mean.name, var.name}, {Val{name, x.shape}},
              {Attr::Float("epsilon", 1e-5f)})[0];
}

Val Net::Unary(const std::string& op_type, const std::string& name, const Val& x, std::vector<Attr> attrs) {
  return Node(op_type, name, {x.name}, {Val{name, x.shape, x.type}}, std::move(attrs))[0];
}

Val Net::Relu6(const std::string& name, const Val& x) {
  const Val lo = SharedScalar("relu6.min", 0.0f);
  const Val hi = SharedScalar("relu6.max", 6.0f);
  return Node("Clip", name, {x.name, lo.name, hi.name}, {Val{name, x.shape}})[0];
}

Val Net::LeakyRelu(const std::string& name, const Val& x, float alpha) {
  return Unary("LeakyRelu", name, x, {Attr::Float("alpha", alpha)});
}

Val Net::Gelu(const std::string& name, const Val& x) {
  const Val scaled =
      Mul(name + ".scaled", x, SharedScalar("gelu.inv_sqrt2", static_cast<float>(1.0 / std::numbers::sqrt2)));
  const Val erf = Unary("Erf", name + ".erf", scaled);
  const Val plus_one = Add(name + ".plus_one", erf, SharedScalar("gelu.one", 1.0f));
  const Val half_x = Mul(name + ".half_x", x, SharedScalar("gelu.half", 0.5f));
  return Mul(name, half_x, plus_one);
}

Val Net::Binary(const std::string& op_type, const std::string& name, const Val& a, const Val& b) {
  return Node(op_type, name, {a.name, b.name}, {Val{name, Broadcast(a.shape, b.shape), a.type}})[0];
}

Val Net::MaxPool(const std::string& name, const Val& x, int64_t kernel, int64_t stride, int64_t pad) {
  const int64_t h = (x.dim(2) + 2 * pad - kernel) / stride + 1;
  const int64_t w = (x.dim(3) + 2 * pad - kernel) / stride + 1;
  return Node("MaxPool", name, {x.name}, {Val{name, {x.dim(0), x.dim(1), h, w}}},
              {Attr::Ints("kernel_shape", {kernel, kernel}), Attr::Ints("strides", {stride, stride}),
               Attr::Ints("pads", {pad, pad, pad, pad})})[0];
}

Val Net::GlobalAveragePool(const std::string& name, const Val& x) {
  return Node("GlobalAveragePool", name, {x.name}, {Val{name, {x.dim(0), x.dim(1), 1, 1}}})[0];
}

Val Net::Flatten(const std::string& name, const Val& x) {
  return Node("Flatten", name, {x.name}, {Val{name, {x.dim(0), x.NumElements() / x.dim(0)}}},
              {Attr::Int("axis", 1)})[0];
}

Val Net::Gemm(const std::string& name, const Val& x, int64_t n, float gain) {
  const int64_t in = x.dim(1);
  const Val w = Param(name + ".weight", {n, in}, InitBound(gain, in));
  const Val b = Param(name + ".bias", {n}, 0.05f);
  shared_->stats.macs += x.dim(0) * in * n;
  return Node("Gemm", name, {x.name, w.name, b.name}, {Val{name, {x.dim(0), n}}}, {Attr::Int("transB", 1)})[0];
}

Val Net::Concat(const std::string& name, const std::vector<Val>& xs, int64_t axis) {
  std::vector<int64_t> shape = xs.at(0).shape;
  const size_t a = axis < 0 ? shape.size() + axis : axis;
  shape[a] = 0;
  std::vector<std::string> inputs;
  for (const Val& x : xs) {
    shape[a] += x.shape.at(a);
    inputs.push_back(x.name);
  }
  return Node("Concat", name, inputs, {Val{name, shape}}, {Attr::Int("axis", axis)})[0];
}

Val Net::Upsample2x(const std::string& name, const Val& x) {
  const Val scales = SharedConstant("resize.scales_2x", {4}, {1.0f, 1.0f, 2.0f, 2.0f});
  return Node("Resize", name, {x.name, "", scales.name}, {Val{name, {x.dim(0), x.dim(1), x.dim(2) * 2, x.dim(3) * 2}}},
              {Attr::String("mode", "nearest")})[0];
}

Val Net::MatMul(const std::string& name, const Val& a, const Val& b) {
  assert(a.shape.size() >= 2 && b.shape.size() >= 2 && a.dim(-1) == b.dim(-2));
  std::vector<int64_t> batch_a(a.shape.begin(), a.shape.end() - 2);
  std::vector<int64_t> batch_b(b.shape.begin(), b.shape.end() - 2);
  std::vector<int64_t> shape = Broadcast(batch_a, batch_b);
  const int64_t m = a.dim(-2), k = a.dim(-1), n = b.dim(-1);
  shared_->stats.macs += Product(shape) * m * k * n;
  shape.push_back(m);
  shape.push_back(n);
  return Node("MatMul", name, {a.name, b.name}, {Val{name, shape}})[0];
}

Val Net::Linear(const std::string& name, const Val& x, int64_t n, float gain) {
  const int64_t in = x.dim(-1);
  const Val w = Param(name + ".weight", {in, n}, InitBound(gain, in));
  const Val b = Param(name + ".bias", {n}, 0.05f);
  return Add(name, MatMul(name + ".matmul", x, w), b);
}

Val Net::Reshape(const std::string& name, const Val& x, std::vector<int64_t> shape) {
  assert(Product(shape) == x.NumElements());
  const Val target = ConstantI64(name + ".shape", {static_cast<int64_t>(shape.size())}, shape);
  return Node("Reshape", name, {x.name, target.name}, {Val{name, std::move(shape), x.type}})[0];
}

Val Net::Transpose(const std::string& name, const Val& x, std::vector<int64_t> perm) {
  std::vector<int64_t> shape;
  for (int64_t p : perm) shape.push_back(x.shape.at(p));
  return Node("Transpose", name, {x.name}, {Val{name, shape, x.type}}, {Attr::Ints("perm", std::move(perm))})[0];
}

Val Net::Softmax(const std::string& name, const Val& x, int64_t axis) {
  return Unary("Softmax", name, x, {Attr::Int("axis", axis)});
}

Val Net::LayerNorm(const std::string& name, const Val& x, float epsilon) {
  const int64_t d = x.dim(-1);
  const Val scale = Param(name + ".weight", {d}, 0.1f, 1.0f);
  const Val shift = Param(name + ".bias", {d}, 0.05f);
  return Node("LayerNormalization", name, {x.name, scale.name, shift.name}, {Val{name, x.shape}},
              {Attr::Int("axis", -1), Attr::Float("epsilon", epsilon)})[0];
}

Val Net::ReduceMean(const std::string& name, const Val& x, std::vector<int64_t> axes, bool keepdims) {
  std::vector<int64_t> shape;
  for (size_t i = 0; i < x.shape.size(); ++i) {
    bool reduced = false;
    for (int64_t a : axes) reduced |= static_cast<size_t>(a < 0 ? a + x.shape.size() : a) == i;
    if (!reduced) {
      shape.push_back(x.shape[i]);
    } else if (keepdims) {
      shape.push_back(1);
    }
  }
  return Node("ReduceMean", name, {x.name}, {Val{name, shape}},
              {Attr::Ints("axes", std::move(axes)), Attr::Int("keepdims", keepdims ? 1 : 0)})[0];
}

}  // namespace baton::zoo::internal
