// serve/kserve_json and serve/metrics without a server: KServe v2 JSON
// requests are checked against the model (naming the tensor and what was
// expected), responses carry the outputs, and the metrics text passes
// `promtool check metrics`.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "baton/serve/kserve_json.h"
#include "baton/serve/metrics.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace baton::serve {
namespace {

using ::testing::HasSubstr;

ModelInfo Model() {
  ModelInfo m;
  m.name = "cam";
  m.inputs = {TensorInfo{"x", dtype::kFloat, "float32", {-1, 3}, true},
              TensorInfo{"ids", dtype::kInt64, "int64", {2}, true}};
  m.outputs = {TensorInfo{"y", dtype::kFloat, "float32", {-1, 3}, true},
               TensorInfo{"z", dtype::kInt32, "int32", {1}, true}};
  return m;
}

std::string Request(const std::string& x, const std::string& ids = R"({"name": "ids", "shape": [2], "datatype": "INT64", "data": [7, -8]})") {
  return R"({"id": "r1", "parameters": {"priority": 3, "timeout": 50000}, "inputs": [)" + x + ", " + ids + "]}";
}

const std::string kGoodX = R"({"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]})";

TEST(KServeJsonTest, ParsesAGoodRequest) {
  absl::StatusOr<ParsedRequest> r = ParseInferRequest(Request(kGoodX), Model(), 1 << 20);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->id, "r1");
  EXPECT_EQ(r->options.priority, 3);
  ASSERT_TRUE(r->options.deadline.has_value());
  EXPECT_EQ(*r->options.deadline, std::chrono::milliseconds(50));
  const Tensor& x = r->inputs.at("x");
  EXPECT_EQ(x.shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::vector<float>(x.data<float>().begin(), x.data<float>().end()), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(r->inputs.at("ids").data<int64_t>()[1], -8);
}

TEST(KServeJsonTest, BadRequestsNameTheTensorAndWhatWasExpected) {
  const ModelInfo m = Model();
  struct Case {
    std::string body;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {"{not json", "not valid JSON"},
           {"[1, 2]", "must be a JSON object"},
           {"{}", "no 'inputs' array"},
           {Request(R"({"name": "q", "shape": [1], "datatype": "FP32", "data": [1]})"), "has no input 'q'; its inputs: [x, ids]"},
           {Request(R"({"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]})"),
            "input 'x' is FP64, expected FP32"},
           {Request(R"({"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6, 7, 8]})"),
            "input 'x' has shape [2,4], expected [-1,3]"},
           {Request(R"({"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3]})"),
            "input 'x': 'data' has 3 elements, but shape [2,3] needs 6"},
           {Request(R"({"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, "a", 3]})"),
            "element 1 is \"a\", expected a number"},
           {Request(kGoodX, R"({"name": "ids", "shape": [2], "datatype": "INT64", "data": [1.5, 2]})"),
            "input 'ids': element 0 is 1.5, expected an integer"},
           {R"({"inputs": [)" + kGoodX + "]}", "input 'ids' (INT64 [2]) is missing"},
           {Request(kGoodX).substr(0, Request(kGoodX).size() - 1) + R"(, "outputs": [{"name": "w"}]})",
            "has no output 'w'"},
           {R"({"parameters": {"timeout": -1}, "inputs": []})", "'timeout' must be microseconds"},
       }) {
    absl::StatusOr<ParsedRequest> r = ParseInferRequest(c.body, m, 1 << 20);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(c.says)) << c.body;
  }
  // A tensor over the element limit is refused before anything is allocated.
  absl::StatusOr<ParsedRequest> big = ParseInferRequest(
      Request(R"({"name": "x", "shape": [1000000000, 3], "datatype": "FP32", "data": []})"), m, 1 << 20);
  EXPECT_THAT(big.status().message(), HasSubstr("more than 1048576 elements"));
}

TEST(KServeJsonTest, ResponsesAndMetadata) {
  const ModelInfo m = Model();
  Tensors out;
  Tensor y(dtype::kFloat, {1, 3});
  y.data<float>()[2] = 2.5f;
  out.emplace("y", std::move(y));
  Tensor z(dtype::kInt32, {1});
  z.data<int32_t>()[0] = -4;
  out.emplace("z", std::move(z));
  absl::StatusOr<nlohmann::json> all = InferResponseJson(m, "r1", out, {});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ((*all)["id"], "r1");
  EXPECT_EQ((*all)["model_name"], "cam");
  ASSERT_EQ((*all)["outputs"].size(), 2u);
  EXPECT_EQ((*all)["outputs"][0]["datatype"], "FP32");
  EXPECT_EQ((*all)["outputs"][0]["data"][2], 2.5);
  EXPECT_EQ((*all)["outputs"][1]["data"][0], -4);
  absl::StatusOr<nlohmann::json> one = InferResponseJson(m, "", out, {"z"});
  ASSERT_EQ((*one)["outputs"].size(), 1u);
  EXPECT_FALSE(one->contains("id"));

  const nlohmann::json meta = ModelMetadataJson(m);
  EXPECT_EQ(meta["inputs"][0]["shape"], nlohmann::json({-1, 3}));
  EXPECT_EQ(meta["inputs"][1]["datatype"], "INT64");
  for (ElemType t : {dtype::kFloat, dtype::kInt64, dtype::kUint8, dtype::kBool, dtype::kFloat16, dtype::kString}) {
    ASSERT_TRUE(KServeDatatype(t).has_value()) << t;
    EXPECT_EQ(ElemTypeOfKServe(*KServeDatatype(t)), t);
  }
  EXPECT_EQ(HttpStatusOf(StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusOf(StatusCode::kInvalidArgument), 400);
}

TEST(MetricsTest, PrometheusTextPassesPromtool) {
  EngineStats s;
  s.uptime_s = 12.5;
  s.in_flight = 2;
  ModelStats m;
  m.name = "cam \"front\"";
  m.completed = 3;
  m.failed = 1;
  m.latency_bucket_counts = std::vector<uint64_t>(std::size(kLatencyBucketsS), 0);
  for (size_t b = 5; b < m.latency_bucket_counts.size(); ++b) m.latency_bucket_counts[b] = 3;
  m.latency_sum_s = 0.09;
  s.models.push_back(m);
  s.pus.push_back(PuStatsView{"cpu0", "cpu", "local", 10, 0.5, 0.04});
  s.devices.push_back(DeviceStatsView{"local", false, true, 1, 1});
  const std::string text = PrometheusText(s);
  EXPECT_THAT(text, HasSubstr("baton_inference_requests_total{model=\"cam \\\"front\\\"\",status=\"success\"} 3"));
  EXPECT_THAT(text, HasSubstr("baton_inference_request_duration_seconds_bucket{model=\"cam \\\"front\\\"\",le=\"+Inf\"} 3"));
  EXPECT_THAT(text, HasSubstr("baton_pu_busy_seconds_total{pu=\"cpu0\",kind=\"cpu\",device=\"local\"} 0.5"));

  const std::string promtool = "/usr/bin/promtool";
  if (!std::filesystem::exists(promtool)) GTEST_SKIP() << "promtool is not installed (scripts/install_deps.sh installs it)";
  const std::string path = ::testing::TempDir() + "baton_metrics.txt";
  std::ofstream(path) << text;
  const std::string out_path = path + ".out";
  const int rc = std::system((promtool + " check metrics < " + path + " > " + out_path + " 2>&1").c_str());
  std::ifstream in(out_path);
  const std::string report((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(rc, 0) << report;
  EXPECT_EQ(report, "") << "promtool found problems:\n" << report;
  std::remove(path.c_str());
  std::remove(out_path.c_str());
}

}  // namespace
}  // namespace baton::serve
