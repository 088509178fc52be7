// What several benchmarks share: a small model, and the median of rounds.
#pragma once

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "onnx/onnx_pb.h"

namespace baton::bench {

// y = x * 2 + 1 over float[1, n], as ONNX bytes.
inline std::string AffineModel(int n) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("engine_bench");
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("affine");
  auto typed = [n](onnx::ValueInfoProto* v, const char* name) {
    v->set_name(name);
    auto* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    t->mutable_shape()->add_dim()->set_dim_value(1);
    t->mutable_shape()->add_dim()->set_dim_value(n);
  };
  typed(g->add_input(), "x");
  typed(g->add_output(), "y");
  for (auto [name, value] : {std::pair{"two", 2.0f}, std::pair{"one", 1.0f}}) {
    auto* init = g->add_initializer();
    init->set_name(name);
    init->set_data_type(onnx::TensorProto::FLOAT);
    init->add_float_data(value);
  }
  auto node = [&](const char* type, const char* a, const char* b, const char* out) {
    auto* nd = g->add_node();
    nd->set_op_type(type);
    nd->set_name(std::string(type) + "_" + out);
    nd->add_input(a);
    nd->add_input(b);
    nd->add_output(out);
  };
  node("Mul", "x", "two", "t");
  node("Add", "t", "one", "y");
  return m.SerializeAsString();
}

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace baton::bench
