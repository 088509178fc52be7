// Fuzz target: ONNX model bytes (graph::Model::LoadBytes: parsing, the ONNX
// checker, shape inference, baton's own validation), from small seeds: a
// few-node model written here and the smallest zoo model.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "baton/graph/model.h"
#include "baton/zoo/zoo.h"
#include "fuzz_target.h"
#include "onnx/onnx_pb.h"

namespace baton::fuzz {

namespace {

// y = relu(x * w + b) over float[1, 4], with an initializer and an attribute.
std::string TinyModel() {
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("tiny");
  auto typed = [](onnx::ValueInfoProto* v, const char* name) {
    v->set_name(name);
    auto* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    t->mutable_shape()->add_dim()->set_dim_value(1);
    t->mutable_shape()->add_dim()->set_dim_param("n");
  };
  typed(g->add_input(), "x");
  typed(g->add_output(), "y");
  for (const char* name : {"w", "b"}) {
    auto* init = g->add_initializer();
    init->set_name(name);
    init->set_data_type(onnx::TensorProto::FLOAT);
    init->add_float_data(0.5f);
  }
  auto node = [&](const char* type, std::vector<const char*> in, const char* out) {
    auto* n = g->add_node();
    n->set_op_type(type);
    n->set_name(std::string(type) + "_" + out);
    for (const char* i : in) n->add_input(i);
    n->add_output(out);
    return n;
  };
  node("Mul", {"x", "w"}, "t");
  node("Add", {"t", "b"}, "u");
  auto* leaky = node("LeakyRelu", {"u"}, "y");
  auto* alpha = leaky->add_attribute();
  alpha->set_name("alpha");
  alpha->set_type(onnx::AttributeProto::FLOAT);
  alpha->set_f(0.1f);
  return m.SerializeAsString();
}

}  // namespace

std::vector<std::string> Seeds() {
  std::vector<std::string> seeds = {TinyModel()};
  absl::StatusOr<std::string> zoo = zoo::Generate("squeezenet", /*small=*/true);
  if (zoo.ok()) seeds.push_back(*std::move(zoo));
  return seeds;
}

}  // namespace baton::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)baton::graph::Model::LoadBytes(std::string_view(reinterpret_cast<const char*>(data), size), "(fuzz)");
  return 0;
}
