// verify: Compare tolerance rules, 16-bit float conversions, RandomInputs and
// VerifyPlan on built and zoo models; tensor_proto reading.
#include "baton/verify/verify.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "baton/graph/batch.h"
#include "baton/graph/builder.h"
#include "baton/graph/tensor_proto.h"
#include "baton/zoo/zoo.h"
#include "layernorm_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"

namespace baton::verify {
namespace {

using ::testing::HasSubstr;
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Tensor Doubles(std::vector<double> v, std::vector<int64_t> shape = {}) {
  if (shape.empty()) shape = {static_cast<int64_t>(v.size())};
  Tensor t(dtype::kDouble, shape);
  std::memcpy(t.bytes().data(), v.data(), t.byte_size());
  return t;
}

Tensor Floats(std::vector<float> v) {
  Tensor t(dtype::kFloat, {static_cast<int64_t>(v.size())});
  std::memcpy(t.bytes().data(), v.data(), t.byte_size());
  return t;
}

Tensor Int64s(std::vector<int64_t> v) {
  Tensor t(dtype::kInt64, {static_cast<int64_t>(v.size())});
  std::memcpy(t.bytes().data(), v.data(), t.byte_size());
  return t;
}

Tensor Halves(std::vector<uint16_t> v) {
  Tensor t(dtype::kFloat16, {static_cast<int64_t>(v.size())});
  std::memcpy(t.bytes().data(), v.data(), t.byte_size());
  return t;
}

// ---------------------------------------------------------------------------
// Compare

TEST(CompareTest, EqualTensorsAreOkWithZeroDiff) {
  Comparison c = Compare(Floats({1, 2, 3}), Floats({1, 2, 3}));
  EXPECT_TRUE(c.ok);
  EXPECT_EQ(c.max_abs, 0);
  EXPECT_EQ(c.max_rel, 0);
  EXPECT_EQ(c.message, "");
}

TEST(CompareTest, AbsoluteAndRelativeEdgesAreInclusive) {
  // Binary-exact values so that the edges are exact: abs 0.5, rel 0.25.
  const Tolerance tol{.abs = 0.5, .rel = 0.25};
  EXPECT_TRUE(Compare(Doubles({0.5}), Doubles({1.0}), tol).ok);      // diff 0.5 == abs
  EXPECT_FALSE(Compare(Doubles({0.5}), Doubles({1.0625}), tol).ok);  // diff 0.5625 > abs, > 0.125
  EXPECT_TRUE(Compare(Doubles({4.0}), Doubles({5.0}), tol).ok);      // diff 1 == 0.25 * 4
  EXPECT_TRUE(Compare(Doubles({-4.0}), Doubles({-5.0}), tol).ok);    // |a| is used
  EXPECT_FALSE(Compare(Doubles({4.0}), Doubles({5.0625}), tol).ok);
  // The relative part is relative to the expected value, not the actual one.
  EXPECT_FALSE(Compare(Doubles({3.0}), Doubles({4.0}), tol).ok);  // 1 > 0.75 (but 1 == 0.25 * 4)
}

TEST(CompareTest, DefaultTolerance) {
  EXPECT_TRUE(Compare(Doubles({0.0}), Doubles({1e-6})).ok);         // abs
  EXPECT_TRUE(Compare(Doubles({1.0}), Doubles({1.0 + 5e-5})).ok);   // rel 5e-5 <= 1e-4
  EXPECT_FALSE(Compare(Doubles({1.0}), Doubles({1.0 + 2e-4})).ok);  // rel 2e-4
  EXPECT_FALSE(Compare(Doubles({0.01}), Doubles({0.01 + 2e-5})).ok);
  EXPECT_TRUE(Compare(Doubles({1000.0}), Doubles({1000.05})).ok);
}

TEST(CompareTest, ReportsMaxDiffsAndFirstMismatch) {
  Comparison c = Compare(Doubles({1.0, 0.0, 2.0, 8.0}), Doubles({1.0, 1e-6, 3.0, 8.5}));
  EXPECT_FALSE(c.ok);
  EXPECT_EQ(c.mismatches, 2);
  EXPECT_DOUBLE_EQ(c.max_abs, 1.0);
  EXPECT_DOUBLE_EQ(c.max_rel, 0.5);  // 1/2; the 0 expected element is left out of max_rel
  EXPECT_THAT(c.message, HasSubstr("2 of 4 elements"));
  EXPECT_THAT(c.message, HasSubstr("first at flat index 2: expected 2, got 3"));
}

TEST(CompareTest, NanAndInfinity) {
  EXPECT_TRUE(Compare(Doubles({kNaN, kInf, -kInf}), Doubles({kNaN, kInf, -kInf})).ok);
  EXPECT_TRUE(Compare(Floats({NAN}), Floats({-NAN})).ok);  // any NaN matches any NaN
  Comparison nan_vs_number = Compare(Doubles({kNaN}), Doubles({1.0}));
  EXPECT_FALSE(nan_vs_number.ok);
  EXPECT_EQ(nan_vs_number.max_abs, kInf);
  EXPECT_FALSE(Compare(Doubles({1.0}), Doubles({kNaN})).ok);
  EXPECT_FALSE(Compare(Doubles({kInf}), Doubles({-kInf})).ok);
  EXPECT_FALSE(Compare(Doubles({kInf}), Doubles({1e308})).ok);
  EXPECT_FALSE(Compare(Doubles({1e308}), Doubles({kInf})).ok);
}

TEST(CompareTest, IntegersBoolsAndStringsAreExact) {
  EXPECT_TRUE(Compare(Int64s({INT64_MAX, -3, 0}), Int64s({INT64_MAX, -3, 0})).ok);
  Comparison c = Compare(Int64s({100000, 5}), Int64s({100001, 5}), Tolerance{.abs = 10, .rel = 1});
  EXPECT_FALSE(c.ok);  // integers ignore the tolerance
  EXPECT_EQ(c.max_abs, 1);
  EXPECT_THAT(c.message, HasSubstr("expected 100000, got 100001"));
  EXPECT_FALSE(Compare(Int64s({INT64_MAX}), Int64s({INT64_MAX - 1})).ok);

  Tensor u64a(dtype::kUint64, {1}), u64b(dtype::kUint64, {1});
  u64a.data<uint64_t>()[0] = UINT64_MAX;
  u64b.data<uint64_t>()[0] = UINT64_MAX - 1;
  EXPECT_FALSE(Compare(u64a, u64b).ok);

  Tensor b1(dtype::kBool, {2}), b2(dtype::kBool, {2});
  b1.data<uint8_t>()[0] = 1;
  EXPECT_FALSE(Compare(b1, b2).ok);
  b2.data<uint8_t>()[0] = 1;
  EXPECT_TRUE(Compare(b1, b2).ok);

  EXPECT_TRUE(Compare(Tensor::Strings({2}, {"a", "b"}), Tensor::Strings({2}, {"a", "b"})).ok);
  Comparison s = Compare(Tensor::Strings({2}, {"a", "b"}), Tensor::Strings({2}, {"a", "c"}));
  EXPECT_FALSE(s.ok);
  EXPECT_THAT(s.message, HasSubstr("expected \"b\", got \"c\""));
}

TEST(CompareTest, ShapeAndTypeMismatch) {
  Comparison shape = Compare(Doubles({1, 2, 3, 4}, {2, 2}), Doubles({1, 2, 3, 4}, {4}));
  EXPECT_FALSE(shape.ok);
  EXPECT_THAT(shape.message, HasSubstr("expected float64[2,2], got float64[4]"));
  Comparison type = Compare(Floats({1}), Doubles({1}));
  EXPECT_FALSE(type.ok);
  EXPECT_THAT(type.message, HasSubstr("expected float32[1], got float64[1]"));
  EXPECT_TRUE(Compare(Tensor(dtype::kFloat, {0, 3}), Tensor(dtype::kFloat, {0, 3})).ok);
  EXPECT_FALSE(Compare(Tensor(dtype::kFloat, {0, 3}), Tensor(dtype::kFloat, {3, 0})).ok);
}

TEST(CompareTest, Float16UsesItsValues) {
  // 1.0 (0x3c00) vs the next half up, 1.0009765625 (0x3c01).
  EXPECT_FALSE(Compare(Halves({0x3c00}), Halves({0x3c01})).ok);
  EXPECT_TRUE(Compare(Halves({0x3c00}), Halves({0x3c01}), Tolerance{.abs = 0, .rel = 1e-3}).ok);
  EXPECT_TRUE(Compare(Halves({0x7e00}), Halves({0x7e01})).ok);   // NaN payloads
  EXPECT_FALSE(Compare(Halves({0x7c00}), Halves({0xfc00})).ok);  // +inf vs -inf
}

TEST(HalfTest, EveryHalfRoundTripsThroughFloat) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f))));
      continue;
    }
    ASSERT_EQ(FloatToHalf(f), h) << "half 0x" << std::hex << h;
  }
}

TEST(HalfTest, RoundingAndRange) {
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // rounds to inf
  EXPECT_EQ(FloatToHalf(-1e10f), 0xfc00);
  EXPECT_EQ(FloatToHalf(1e-9f), 0x0000);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);         // tie to even (0)
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);         // tie to even (2)
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie to even
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie to even
  EXPECT_EQ(FloatToBfloat16(1.0f), 0x3f80);
  EXPECT_EQ(Bfloat16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(FloatToBfloat16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);  // tie to even
  EXPECT_TRUE(std::isnan(Bfloat16ToFloat(FloatToBfloat16(NAN))));
}

// ---------------------------------------------------------------------------
// RandomInputs

std::shared_ptr<const graph::Model> Load(const graph::GraphBuilder& b, const std::string& name = "test") {
  auto bytes = b.Serialize();
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  auto model = graph::Model::LoadBytes(*bytes, name);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : nullptr;
}

// Inputs of many kinds, each passed through an Identity to an output.
std::shared_ptr<const graph::Model> ManyInputsModel() {
  graph::GraphBuilder b;
  struct In {
    std::string name;
    ElemType type;
    std::vector<graph::DimSpec> dims;
  };
  std::vector<In> ins = {
      {"image", dtype::kFloat, {std::string("batch"), int64_t{3}, std::string("H"), std::string("W")}},
      {"ids", dtype::kInt64, {std::string("batch"), std::string("seq")}},
      {"mask", dtype::kBool, {int64_t{4}, std::string("seq")}},
      {"sr", dtype::kInt64, {}},
      {"half", dtype::kFloat16, {std::string("")}},
      {"bytes", dtype::kUint8, {int64_t{5}}},
      {"d", dtype::kDouble, {int64_t{2}}},
      {"words", dtype::kString, {int64_t{3}}},
  };
  for (const In& in : ins) {
    b.AddInput(in.name, in.type, in.dims);
    b.AddNode("Identity", {in.name}, {in.name + "_out"});
    b.AddOutput(in.name + "_out", in.type, in.dims);
  }
  return Load(b, "many_inputs");
}

const Tensor& Find(const NamedTensors& ts, const std::string& name) {
  for (const auto& [n, t] : ts) {
    if (n == name) return t;
  }
  static const Tensor kNone;
  ADD_FAILURE() << "no tensor " << name;
  return kNone;
}

TEST(RandomInputsTest, ShapesFollowDimsBatchAndDefault) {
  auto model = ManyInputsModel();
  ASSERT_NE(model, nullptr);
  InputOptions options;
  options.dims = {{"H", 8}};
  auto inputs = RandomInputs(*model, 7, options);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  ASSERT_EQ(inputs->size(), 8u);
  EXPECT_EQ((*inputs)[0].first, "image");  // model input order
  EXPECT_EQ(Find(*inputs, "image").shape(), (std::vector<int64_t>{1, 3, 8, 64}));
  // "batch" was decided as 1 by `image`; "seq" is first met at dim 1 -> 64,
  // and keeps that size when it later appears elsewhere.
  EXPECT_EQ(Find(*inputs, "ids").shape(), (std::vector<int64_t>{1, 64}));
  EXPECT_EQ(Find(*inputs, "mask").shape(), (std::vector<int64_t>{4, 64}));
  EXPECT_EQ(Find(*inputs, "sr").shape(), std::vector<int64_t>{});
  EXPECT_EQ(Find(*inputs, "half").shape(), std::vector<int64_t>{1});  // unnamed first dim -> batch_dim
  EXPECT_EQ(Find(*inputs, "words").strings().size(), 3u);
}

TEST(RandomInputsTest, ValueRanges) {
  auto model = ManyInputsModel();
  ASSERT_NE(model, nullptr);
  auto inputs = RandomInputs(*model, 1, {});
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  std::set<float> distinct;
  for (float v : Find(*inputs, "image").data<float>()) {
    ASSERT_GE(v, -1.0f);
    ASSERT_LE(v, 1.0f);
    distinct.insert(v);
  }
  EXPECT_GT(distinct.size(), 1000u);
  std::set<int64_t> ids;
  for (int64_t v : Find(*inputs, "ids").data<int64_t>()) ids.insert(v);
  EXPECT_GE(*ids.begin(), 0);
  EXPECT_LT(*ids.rbegin(), 10);
  EXPECT_GT(ids.size(), 5u);
  std::set<uint8_t> bools;
  for (uint8_t v : Find(*inputs, "mask").data<uint8_t>()) bools.insert(v);
  EXPECT_EQ(bools, (std::set<uint8_t>{0, 1}));
  for (uint16_t h : Find(*inputs, "half").data<uint16_t>()) {
    EXPECT_LE(std::fabs(HalfToFloat(h)), 1.0f);
  }
  for (const std::string& w : Find(*inputs, "words").strings()) EXPECT_FALSE(w.empty());
}

TEST(RandomInputsTest, DeterministicPerSeedAndFixedValuesAreIsolated) {
  auto model = ManyInputsModel();
  ASSERT_NE(model, nullptr);
  auto a = RandomInputs(*model, 42, {});
  auto b = RandomInputs(*model, 42, {});
  auto c = RandomInputs(*model, 43, {});
  InputOptions fixed;
  fixed.fixed_values = {{"sr", 16000}, {"d", 0.5}};
  auto f = RandomInputs(*model, 42, fixed);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && f.ok());
  auto bytes = [](const Tensor& t) { return std::vector<std::byte>(t.bytes().begin(), t.bytes().end()); };
  EXPECT_EQ(bytes(Find(*a, "image")), bytes(Find(*b, "image")));
  EXPECT_NE(bytes(Find(*a, "image")), bytes(Find(*c, "image")));
  EXPECT_EQ(bytes(Find(*a, "image")), bytes(Find(*f, "image")));
  EXPECT_EQ(Find(*f, "sr").data<int64_t>()[0], 16000);
  EXPECT_EQ(Find(*f, "d").data<double>()[1], 0.5);
}

TEST(RandomInputsTest, IntegerRangeOverrideAndErrors) {
  auto model = ManyInputsModel();
  ASSERT_NE(model, nullptr);
  InputOptions wide;
  wide.int_low = 250;
  wide.int_high = 1000;  // clipped to uint8's 255 for "bytes"
  auto inputs = RandomInputs(*model, 3, wide);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  for (uint8_t v : Find(*inputs, "bytes").data<uint8_t>()) EXPECT_GE(v, 250);
  for (int64_t v : Find(*inputs, "ids").data<int64_t>()) {
    EXPECT_GE(v, 250);
    EXPECT_LT(v, 1000);
  }

  InputOptions empty_range;
  empty_range.int_low = 5;
  empty_range.int_high = 5;
  EXPECT_FALSE(RandomInputs(*model, 1, empty_range).ok());

  InputOptions typo;
  typo.fixed_values = {{"sample_rate", 16000}};
  auto t = RandomInputs(*model, 1, typo);
  EXPECT_THAT(t.status().message(), HasSubstr("'sample_rate' which is not an input"));

  InputOptions not_representable;
  not_representable.fixed_values = {{"bytes", 300}};
  EXPECT_THAT(RandomInputs(*model, 1, not_representable).status().message(), HasSubstr("not representable"));

  InputOptions huge;
  huge.dims = {{"H", 100000}, {"W", 100000}};
  auto h = RandomInputs(*model, 1, huge);
  EXPECT_THAT(h.status().message(), HasSubstr("--dim"));
}

TEST(RandomInputsTest, ExplicitShapesOverrideAndAreChecked) {
  graph::GraphBuilder b;
  // Unnamed dims (as Silero VAD declares them): only an explicit shape can tie
  // the state's batch to the input's.
  b.AddInput("input", dtype::kFloat, {std::string(""), std::string("")});
  b.AddInput("state", dtype::kFloat, {int64_t{2}, std::string(""), int64_t{4}});
  b.AddNode("Identity", {"input"}, {"a"});
  b.AddNode("Identity", {"state"}, {"s"});
  b.AddOutput("a", dtype::kFloat, {std::string(""), std::string("")});
  b.AddOutput("s", dtype::kFloat, {int64_t{2}, std::string(""), int64_t{4}});
  auto model = Load(b, "unnamed_dims");
  ASSERT_NE(model, nullptr);

  auto defaults = RandomInputs(*model, 1, {});
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(Find(*defaults, "input").shape(), (std::vector<int64_t>{1, 64}));
  EXPECT_EQ(Find(*defaults, "state").shape(), (std::vector<int64_t>{2, 64, 4}));  // unnamed: independent

  InputOptions options;
  options.shapes = {{"input", {1, 576}}, {"state", {2, 1, 4}}};
  auto given = RandomInputs(*model, 1, options);
  ASSERT_TRUE(given.ok()) << given.status();
  EXPECT_EQ(Find(*given, "input").shape(), (std::vector<int64_t>{1, 576}));
  EXPECT_EQ(Find(*given, "state").shape(), (std::vector<int64_t>{2, 1, 4}));

  InputOptions wrong_known_dim;
  wrong_known_dim.shapes = {{"state", {3, 1, 4}}};
  EXPECT_THAT(RandomInputs(*model, 1, wrong_known_dim).status().message(), HasSubstr("does not fit"));
  InputOptions wrong_rank;
  wrong_rank.shapes = {{"input", {576}}};
  EXPECT_THAT(RandomInputs(*model, 1, wrong_rank).status().message(), HasSubstr("does not fit"));
  InputOptions typo;
  typo.shapes = {{"inptu", {1}}};
  EXPECT_THAT(RandomInputs(*model, 1, typo).status().message(), HasSubstr("not an input"));
}

// ---------------------------------------------------------------------------
// VerifyPlan

// x -> Relu -> Mul(2) -> Add(x) -> Sigmoid -> y ; also outputs the input x itself.
std::shared_ptr<const graph::Model> ChainModel() {
  graph::GraphBuilder b;
  b.AddInput("x", dtype::kFloat, {std::string("batch"), int64_t{16}});
  b.AddInitializer("two", dtype::kFloat, {}, std::vector<float>{2.0f});
  b.AddNode("Relu", {"x"}, {"r"});
  b.AddNode("Mul", {"r", "two"}, {"m"});
  b.AddNode("Add", {"m", "x"}, {"a"});
  b.AddNode("Sigmoid", {"a"}, {"y"});
  b.AddNode("Tanh", {"m"}, {"t"});
  b.AddOutput("y", dtype::kFloat, {std::string("batch"), int64_t{16}});
  b.AddOutput("t", dtype::kFloat, {std::string("batch"), int64_t{16}});
  b.AddOutput("x", dtype::kFloat, {std::string("batch"), int64_t{16}});
  return Load(b, "chain");
}

TEST(VerifyPlanTest, BalancedCutsOfAChainMatchIncludingPassThroughOutput) {
  auto model = ChainModel();
  ASSERT_NE(model, nullptr);
  InputOptions options;
  options.dims = {{"batch", 3}};
  auto inputs = RandomInputs(*model, 5, options);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  for (int k : {1, 2, 3, 5}) {
    SCOPED_TRACE(k);
    auto plan = partition::CutBalanced(*model, k);
    ASSERT_TRUE(plan.ok()) << plan.status();
    auto report = VerifyPlan(*model, *plan, *inputs);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_TRUE(report->ok) << report->message;
    ASSERT_EQ(report->outputs.size(), 3u);
    EXPECT_EQ(report->outputs[2].name, "x");
    EXPECT_EQ(report->outputs[2].produced_by, "model input");
    EXPECT_EQ(report->partitions.size(), plan->partitions.size());
    size_t nodes = 0;
    for (const auto& p : report->partitions) {
      EXPECT_TRUE(p.ran) << p.error;
      nodes += p.num_nodes;
    }
    EXPECT_EQ(nodes, model->nodes().size());
  }
}

TEST(VerifyPlanTest, PartitionsOutOfDependencyOrderAreReported) {
  auto model = ChainModel();
  ASSERT_NE(model, nullptr);
  auto plan = partition::CutBalanced(*model, 2);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->partitions.size(), 2u);
  std::swap(plan->partitions[0], plan->partitions[1]);
  auto inputs = RandomInputs(*model, 1, {});
  ASSERT_TRUE(inputs.ok());
  auto report = VerifyPlan(*model, *plan, *inputs);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(report->ok);
  EXPECT_THAT(report->message, HasSubstr("neither a model input nor an earlier partition provides"));
  EXPECT_THAT(report->message, HasSubstr(plan->partitions[0].name));
  ASSERT_EQ(report->partitions.size(), 1u);
  EXPECT_FALSE(report->partitions[0].ran);
}

TEST(VerifyPlanTest, MismatchNamesOutputAndPartition) {
  // See LayerNormModel: a zero tolerance must report the output and the
  // partition producing it.
  auto model = Load(baton::testing::LayerNormModel(), "layernorm");
  ASSERT_NE(model, nullptr);
  std::vector<std::string> cut = {"mean"};
  auto plan = partition::CutAtTensors(*model, cut);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->partitions.size(), 2u);
  auto inputs = RandomInputs(*model, 1, {});
  ASSERT_TRUE(inputs.ok());

  auto loose = VerifyPlan(*model, *plan, *inputs);  // default tolerance
  ASSERT_TRUE(loose.ok()) << loose.status();
  EXPECT_TRUE(loose->ok) << loose->message;

  auto strict = VerifyPlan(*model, *plan, *inputs, {}, Tolerance{.abs = 0, .rel = 0});
  ASSERT_TRUE(strict.ok()) << strict.status();
  EXPECT_FALSE(strict->ok);
  ASSERT_EQ(strict->outputs.size(), 1u);
  EXPECT_FALSE(strict->outputs[0].comparison.ok);
  EXPECT_GT(strict->outputs[0].comparison.max_abs, 0);
  EXPECT_EQ(strict->outputs[0].produced_by, plan->partitions[1].name);
  EXPECT_THAT(strict->message, HasSubstr("output 'y' (produced by partition '" + plan->partitions[1].name + "')"));
}

TEST(VerifyPlanTest, BadInputsAreErrors) {
  auto model = ChainModel();
  ASSERT_NE(model, nullptr);
  auto plan = partition::CutBalanced(*model, 2);
  ASSERT_TRUE(plan.ok());
  NamedTensors none;
  EXPECT_THAT(VerifyPlan(*model, *plan, none).status().message(), HasSubstr("no tensor given for input 'x'"));
  NamedTensors wrong;
  wrong.emplace_back("nope", Tensor(dtype::kFloat, {1, 16}));
  EXPECT_THAT(VerifyPlan(*model, *plan, wrong).status().message(), HasSubstr("has no input 'nope'"));
  NamedTensors bad_shape;
  bad_shape.emplace_back("x", Tensor(dtype::kFloat, {1, 15}));
  EXPECT_EQ(VerifyPlan(*model, *plan, bad_shape).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(VerifyPlanTest, EveryZooModelVerifiesUnderBalancedAndRandomCuts) {
  ort::SessionOptions options;
  for (const zoo::ZooEntry& entry : zoo::List()) {
    SCOPED_TRACE(entry.name);
    auto bytes = zoo::Generate(entry.name, /*small=*/true);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    auto model = graph::Model::LoadBytes(*bytes, entry.name);
    ASSERT_TRUE(model.ok()) << model.status();
    auto inputs = RandomInputs(**model, 11, {});
    ASSERT_TRUE(inputs.ok()) << inputs.status();
    std::vector<absl::StatusOr<partition::PartitionPlan>> plans;
    plans.push_back(partition::CutBalanced(**model, 3));
    plans.push_back(partition::CutRandom(**model, 4, /*seed=*/entry.name.size()));
    for (auto& plan : plans) {
      ASSERT_TRUE(plan.ok()) << plan.status();
      auto report = VerifyPlan(**model, *plan, *inputs, options);
      ASSERT_TRUE(report.ok()) << report.status();
      EXPECT_TRUE(report->ok) << report->message;
    }
  }
}

TEST(RunWholeModelTest, ReturnsOutputsInModelOrder) {
  auto model = ChainModel();
  ASSERT_NE(model, nullptr);
  NamedTensors inputs;
  Tensor x(dtype::kFloat, {1, 16});
  for (int i = 0; i < 16; ++i) x.data<float>()[i] = static_cast<float>(i - 8);
  inputs.emplace_back("x", std::move(x));
  auto outs = RunWholeModel(*model, inputs);
  ASSERT_TRUE(outs.ok()) << outs.status();
  ASSERT_EQ(outs->size(), 3u);
  EXPECT_EQ((*outs)[0].first, "y");
  EXPECT_EQ((*outs)[1].first, "t");
  EXPECT_EQ((*outs)[2].first, "x");
  // x = 3: relu 3, m = 6, a = 9, y = sigmoid(9), t = tanh(6).
  EXPECT_FLOAT_EQ((*outs)[0].second.data<float>()[11], 1.0f / (1.0f + std::exp(-9.0f)));
  EXPECT_FLOAT_EQ((*outs)[1].second.data<float>()[11], std::tanh(6.0f));
  EXPECT_EQ((*outs)[2].second.data<float>()[0], -8.0f);
}

// ---------------------------------------------------------------------------
// graph/tensor_proto

TEST(TensorProtoTest, RawDataOfEveryFixedSizeType) {
  for (ElemType type : {dtype::kFloat, dtype::kDouble, dtype::kFloat16, dtype::kBfloat16, dtype::kInt8, dtype::kUint8,
                        dtype::kInt16, dtype::kUint16, dtype::kInt32, dtype::kUint32, dtype::kInt64, dtype::kUint64,
                        dtype::kBool, dtype::kComplex64, dtype::kComplex128}) {
    SCOPED_TRACE(ElemTypeName(type));
    const int64_t size = *ElemTypeSize(type);
    onnx::TensorProto p;
    p.set_name("t");
    p.set_data_type(type);
    p.add_dims(2);
    p.add_dims(3);
    std::string raw(static_cast<size_t>(6 * size), '\0');
    for (size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<char>(type == dtype::kBool ? i % 2 : i * 7);
    p.set_raw_data(raw);
    auto t = graph::TensorFromProtoBytes(p.SerializeAsString());
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->elem_type(), type);
    EXPECT_EQ(t->shape(), (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(t->bytes().data()), t->byte_size()), raw);
  }
}

TEST(TensorProtoTest, TypedFields) {
  {
    onnx::TensorProto p;
    p.set_data_type(dtype::kFloat);
    p.add_dims(2);
    p.add_float_data(1.5f);
    p.add_float_data(-2.0f);
    auto t = graph::TensorFromProtoBytes(p.SerializeAsString());
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->data<float>()[1], -2.0f);
  }
  struct IntCase {
    ElemType type;
    std::vector<int32_t> values;
  };
  for (const IntCase& c : std::vector<IntCase>{{dtype::kInt8, {-128, 127}},
                                               {dtype::kUint8, {0, 255}},
                                               {dtype::kInt16, {-32768, 7}},
                                               {dtype::kUint16, {65535, 1}},
                                               {dtype::kInt32, {INT32_MIN, INT32_MAX}},
                                               {dtype::kBool, {1, 0}},
                                               {dtype::kFloat16, {0x3c00, 0xc000}}}) {
    SCOPED_TRACE(ElemTypeName(c.type));
    onnx::TensorProto p;
    p.set_data_type(c.type);
    p.add_dims(2);
    for (int32_t v : c.values) p.add_int32_data(v);
    auto t = graph::TensorFromProtoBytes(p.SerializeAsString());
    ASSERT_TRUE(t.ok()) << t.status();
    Tensor expected(c.type, {2});
    for (int i = 0; i < 2; ++i) {
      const int64_t v = c.values[i];
      switch (c.type) {
        case dtype::kInt8: expected.data<int8_t>()[i] = static_cast<int8_t>(v); break;
        case dtype::kUint8:
        case dtype::kBool: expected.data<uint8_t>()[i] = static_cast<uint8_t>(v); break;
        case dtype::kInt16: expected.data<int16_t>()[i] = static_cast<int16_t>(v); break;
        case dtype::kUint16:
        case dtype::kFloat16: expected.data<uint16_t>()[i] = static_cast<uint16_t>(v); break;
        default: expected.data<int32_t>()[i] = static_cast<int32_t>(v); break;
      }
    }
    EXPECT_TRUE(Compare(expected, *t).ok) << Compare(expected, *t).message;
  }
  {
    onnx::TensorProto p;
    p.set_data_type(dtype::kInt64);
    p.add_int64_data(INT64_MIN);  // no dims: a scalar
    auto t = graph::TensorFromProtoBytes(p.SerializeAsString());
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_TRUE(t->shape().empty());
    EXPECT_EQ(t->data<int64_t>()[0], INT64_MIN);
  }
  {
    onnx::TensorProto p;
    p.set_data_type(dtype::kDouble);
    p.add_dims(1);
    p.add_double_data(0.1);
    auto t = graph::TensorFromProtoBytes(p.SerializeAsString());
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->data<double>()[0], 0.1);
  }
  for (ElemType type : {dtype::kUint32, dtype::kUint64}) {
    onnx::TensorProto p;
    p.set_data_type(type);
    p.add_dims(1);
    p.add_uint64_data(type == dtype::kUint32 ? UINT32_MAX : UINT64_MAX);
    auto t = graph::TensorFromProtoBytes(p.SerializeAsString());
    ASSERT_TRUE(t.ok()) << t.status();
    if (type == dtype::kUint32) {
      EXPECT_EQ(t->data<uint32_t>()[0], UINT32_MAX);
    } else {
      EXPECT_EQ(t->data<uint64_t>()[0], UINT64_MAX);
    }
  }
  {
    onnx::TensorProto p;
    p.set_data_type(dtype::kString);
    p.add_dims(2);
    p.add_string_data("abc");
    p.add_string_data(std::string("x\0y", 3));
    auto t = graph::TensorFromProtoBytes(p.SerializeAsString());
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->strings(), (std::vector<std::string>{"abc", std::string("x\0y", 3)}));
  }
  {
    onnx::TensorProto p;  // empty tensor, no data at all
    p.set_data_type(dtype::kFloat);
    p.add_dims(0);
    p.add_dims(4);
    auto t = graph::TensorFromProtoBytes(p.SerializeAsString());
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->shape(), (std::vector<int64_t>{0, 4}));
  }
}

TEST(TensorProtoTest, Errors) {
  EXPECT_FALSE(graph::TensorFromProtoBytes("\xff\xff\xff garbage").ok());
  {
    onnx::TensorProto p;
    p.set_name("w");
    p.set_data_type(dtype::kFloat);
    p.add_dims(4);
    p.set_raw_data(std::string(12, '\0'));
    auto t = graph::TensorFromProtoBytes(p.SerializeAsString());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(t.status().message(), HasSubstr("tensor 'w' has 12 bytes of raw_data"));
  }
  {
    onnx::TensorProto p;
    p.set_data_type(dtype::kFloat);
    p.add_dims(1000000000);
    p.add_dims(1000000000);  // no data: must not allocate
    EXPECT_EQ(graph::TensorFromProtoBytes(p.SerializeAsString()).status().code(), absl::StatusCode::kInvalidArgument);
  }
  {
    onnx::TensorProto p;
    p.set_data_type(dtype::kInt32);
    p.add_dims(3);
    p.add_int32_data(1);
    EXPECT_THAT(graph::TensorFromProtoBytes(p.SerializeAsString()).status().message(), HasSubstr("int32_data"));
  }
  {
    onnx::TensorProto p;
    p.set_data_type(dtype::kFloat);
    p.add_dims(-1);
    EXPECT_THAT(graph::TensorFromProtoBytes(p.SerializeAsString()).status().message(), HasSubstr("negative"));
  }
  {
    onnx::TensorProto p;
    p.set_name("big");
    p.set_data_type(dtype::kFloat);
    p.add_dims(1);
    p.set_data_location(onnx::TensorProto::EXTERNAL);
    auto* e = p.add_external_data();
    e->set_key("location");
    e->set_value("weights.bin");
    auto t = graph::TensorFromProtoBytes(p.SerializeAsString());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(t.status().message(), HasSubstr("external"));
  }
  {
    onnx::TensorProto p;
    p.set_data_type(17);  // float8e4m3fn in later ONNX versions
    p.add_dims(1);
    p.set_raw_data(std::string(1, '\0'));
    EXPECT_EQ(graph::TensorFromProtoBytes(p.SerializeAsString()).status().code(), absl::StatusCode::kUnimplemented);
  }
  {
    onnx::TensorProto p;
    p.set_data_type(dtype::kString);
    p.add_dims(2);
    p.add_string_data("only one");
    EXPECT_FALSE(graph::TensorFromProtoBytes(p.SerializeAsString()).ok());
  }
  auto missing = graph::ReadTensorProtoFile("/nonexistent/dir/input_0.pb");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/dir/input_0.pb"));
}

TEST(TensorProtoTest, ReadsAFile) {
  onnx::TensorProto p;
  p.set_data_type(dtype::kInt64);
  p.add_dims(3);
  for (int64_t v : {4, 5, 6}) p.add_int64_data(v);
  const std::filesystem::path path = std::filesystem::path(::testing::TempDir()) / "tensor_proto_test_input.pb";
  {
    std::ofstream out(path, std::ios::binary);
    out << p.SerializeAsString();
  }
  auto t = graph::ReadTensorProtoFile(path);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->data<int64_t>()[2], 6);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace baton::verify

namespace baton::verify {
namespace {

// Dynamic batching's checks: a free leading dimension, and the proof on real
// inputs that the model computes row by row.
TEST(BatchableTest, ZooCnnGetsAFreeBatchDimAndStaysRowByRow) {
  auto bytes = zoo::Generate("mobilenetv2", /*small=*/true);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto model = graph::Model::LoadBytes(*bytes, "mnv2");
  ASSERT_TRUE(model.ok()) << model.status();
  auto batched = graph::WithFreeBatchDim(**model);
  ASSERT_TRUE(batched.ok()) << batched.status();
  EXPECT_EQ((*batched)->display_name(), "mnv2+batch");
  const graph::Value* in = (*batched)->FindValue((*batched)->inputs()[0]);
  ASSERT_NE(in, nullptr);
  ASSERT_TRUE(in->type.shape.has_value());
  ASSERT_FALSE(in->type.shape->empty());
  EXPECT_EQ((*in->type.shape)[0].param, graph::kBatchDimParam);
  EXPECT_FALSE((*in->type.shape)[0].size.has_value());
  std::vector<NamedTensors> samples;
  for (uint64_t seed : {1u, 2u, 3u}) {
    auto s = RandomInputs(**model, seed);
    ASSERT_TRUE(s.ok()) << s.status();
    samples.push_back(*std::move(s));
  }
  EXPECT_TRUE(CheckBatchable(**batched, samples).ok()) << CheckBatchable(**batched, samples);
  EXPECT_THAT(CheckBatchable(**batched, std::span(samples).first(1)).message(), ::testing::HasSubstr("at least 2"));
}

TEST(BatchableTest, AModelThatMixesRowsIsRefused) {
  // y = x - mean over the batch axis: each row depends on the others.
  graph::GraphBuilder b;
  b.AddInput("x", dtype::kFloat, {int64_t{1}, int64_t{4}});
  b.AddNode("ReduceMean", {"x"}, {"m"}, {graph::Attr::Ints("axes", {0})});
  b.AddNode("Sub", {"x", "m"}, {"y"});
  b.AddOutput("y", dtype::kFloat, {int64_t{1}, int64_t{4}});
  auto bytes = b.Serialize();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto model = graph::Model::LoadBytes(*bytes, "mix");
  ASSERT_TRUE(model.ok()) << model.status();
  auto batched = graph::WithFreeBatchDim(**model);
  ASSERT_TRUE(batched.ok()) << batched.status();
  std::vector<NamedTensors> samples;
  for (uint64_t seed : {1u, 2u}) samples.push_back(*RandomInputs(**model, seed));
  absl::Status s = CheckBatchable(**batched, samples);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), ::testing::HasSubstr("differs when batched"));
  EXPECT_THAT(s.message(), ::testing::HasSubstr("leave max_batch at 1"));
}

TEST(BatchableTest, AScalarInputCannotBeBatched) {
  graph::GraphBuilder b;
  b.AddInput("x", dtype::kFloat, {});
  b.AddNode("Neg", {"x"}, {"y"});
  b.AddOutput("y", dtype::kFloat, {});
  auto model = graph::Model::LoadBytes(*b.Serialize(), "scalar");
  ASSERT_TRUE(model.ok()) << model.status();
  auto batched = graph::WithFreeBatchDim(**model);
  ASSERT_FALSE(batched.ok());
  EXPECT_THAT(batched.status().message(), ::testing::HasSubstr("input 'x' has no leading dimension"));
}

}  // namespace
}  // namespace baton::verify
