// A small zoo model with random inputs and whole-model ONNX Runtime outputs:
// the reference that partitioned and remote execution is compared against.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "baton/dispatch/messages.h"
#include "baton/graph/model.h"
#include "baton/verify/verify.h"
#include "baton/zoo/zoo.h"

namespace baton::testing {

struct ZooCase {
  std::shared_ptr<const graph::Model> model;
  std::vector<dispatch::NamedTensors> inputs;
  std::vector<dispatch::NamedTensors> expected;
};

inline ZooCase LoadZoo(const std::string& name, int samples) {
  ZooCase c;
  auto bytes = zoo::Generate(name, /*small=*/true);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  auto model = graph::Model::LoadBytes(*bytes, name);
  EXPECT_TRUE(model.ok()) << model.status();
  c.model = *model;
  for (int s = 0; s < samples; ++s) {
    auto in = verify::RandomInputs(*c.model, 100 + s);
    EXPECT_TRUE(in.ok()) << in.status();
    auto out = verify::RunWholeModel(*c.model, *in);
    EXPECT_TRUE(out.ok()) << out.status();
    c.inputs.push_back(std::move(*in));
    c.expected.push_back(std::move(*out));
  }
  return c;
}

inline dispatch::NamedTensors CloneAll(const dispatch::NamedTensors& in) {
  dispatch::NamedTensors out;
  for (const auto& [n, t] : in) out.emplace_back(n, t.Clone());
  return out;
}

}  // namespace baton::testing
