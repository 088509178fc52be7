// serve/kserve_json and serve/metrics without a server: KServe v2 JSON
// requests are checked against the model (naming the tensor and what was
// expected), responses carry the outputs, and the metrics text passes
// `promtool check metrics`.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <fstream>
#include <optional>
#include <string>

#include "baton/serve/classification.h"
#include "baton/serve/kserve_json.h"
#include "baton/serve/metrics.h"
#include "baton/serve/server.h"
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
           {Request(kGoodX).substr(0, Request(kGoodX).size() - 1) +
                R"(, "outputs": [{"name": "y"}, {"name": "z"}, {"name": "y"}]})",
            "model 'cam' output 'y' is requested twice; name each output once"},
           {R"({"parameters": {"timeout": -1}, "inputs": []})", "'timeout' must be microseconds"},
           {Request(R"({"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5]})"),
            "input 'x': 'data' has 5 elements, but shape [1,3] needs 3"},
           {Request(R"({"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, null, 3]})"),
            "input 'x': element 1 is null, expected a number"},
           {Request(R"({"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, {"a": [2, 3]}, 3]})"),
            "input 'x': element 1 is an object, expected a number"},
           {Request(kGoodX, R"({"name": "ids", "shape": [2], "datatype": "INT64", "data": [1, 9223372036854775808]})"),
            "input 'ids': element 1 (9223372036854775808) does not fit the datatype"},
           {Request(kGoodX).substr(0, 40), "the request body is not valid JSON (at byte "},
           {[] {
              std::string many = R"({"inputs": [)";
              for (int i = 0; i < 300000; ++i) many += "{},";
              return many + "{}]}";
            }(),
            "has more than 262144 arrays and objects outside the inputs' 'data'"},
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

// Each input's 'data' is read straight into a compact list of leaves, not
// into JSON values: the values come out exact, nested or mixed.
TEST(KServeJsonTest, DataLeavesKeepEveryValueExactly) {
  ModelInfo m = Model();
  m.inputs.push_back(TensorInfo{"u", dtype::kUint64, "uint64", {2}, true});
  m.inputs.push_back(TensorInfo{"s", dtype::kString, "string", {2}, true});
  m.inputs.push_back(TensorInfo{"b", dtype::kBool, "bool", {3}, true});
  const std::string body = R"({"inputs": [
      {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2.5, true], [-4, 0.125, false]]},
      {"name": "ids", "shape": [2], "datatype": "INT64", "data": [9007199254740993, -9223372036854775808]},
      {"name": "u", "shape": [2], "datatype": "UINT64", "data": [18446744073709551615, 0]},
      {"name": "s", "shape": [2], "datatype": "BYTES", "data": ["a\"b", ""]},
      {"name": "b", "shape": [3], "datatype": "BOOL", "data": [true, 0, 1]}]})";
  absl::StatusOr<ParsedRequest> r = ParseInferRequest(body, m, 1 << 20);
  ASSERT_TRUE(r.ok()) << r.status();
  const Tensor& x = r->inputs.at("x");
  EXPECT_EQ(std::vector<float>(x.data<float>().begin(), x.data<float>().end()),
            (std::vector<float>{1, 2.5f, 1, -4, 0.125f, 0}));
  EXPECT_EQ(r->inputs.at("ids").data<int64_t>()[0], int64_t{9007199254740993});
  EXPECT_EQ(r->inputs.at("ids").data<int64_t>()[1], std::numeric_limits<int64_t>::min());
  EXPECT_EQ(r->inputs.at("u").data<uint64_t>()[0], std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(r->inputs.at("s").strings(), (std::vector<std::string>{"a\"b", ""}));
  const Tensor& b = r->inputs.at("b");
  EXPECT_EQ(std::vector<uint8_t>(b.data<uint8_t>().begin(), b.data<uint8_t>().end()), (std::vector<uint8_t>{1, 0, 1}));

  // A repeated key counts once, the last one, as in any JSON object: 'data',
  // then 'inputs'.
  const std::string twice = R"({"inputs": [{"name": "x"}], "inputs": [
      {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [9, 9, 9, 9], "data": [7, 8, 9]},
      {"name": "ids", "shape": [2], "datatype": "INT64", "data": [1, 2]}]})";
  r = ParseInferRequest(twice, Model(), 1 << 20);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->inputs.at("x").data<float>()[0], 7.0f);
  // 'data' elsewhere (here in the parameters) is an ordinary value.
  const std::string elsewhere = R"({"parameters": {"data": [1]}, "inputs": [
      {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3], "parameters": {"data": {"y": 1}}},
      {"name": "ids", "shape": [2], "datatype": "INT64", "data": [1, 2]}]})";
  EXPECT_TRUE(ParseInferRequest(elsewhere, Model(), 1 << 20).ok());

  // With every input's shape fixed, no more leaves are kept than the largest
  // input takes; the rest are still counted for the message.
  ModelInfo fixed;
  fixed.name = "ids_only";
  fixed.inputs = {TensorInfo{"ids", dtype::kInt64, "int64", {2}, true}};
  r = ParseInferRequest(R"({"inputs": [{"name": "ids", "shape": [2], "datatype": "INT64",
                                        "data": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}]})",
                        fixed, 1 << 20);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("input 'ids': 'data' has 10 elements, but shape [2] needs 2"));
}

// Nested 'data' arrays are not kept, so they do not count against the bound
// on arrays and objects: a tensor of 300,000 rows may be sent row by row.
TEST(KServeJsonTest, NestedDataMayHoldManyRows) {
  std::string rows;
  for (int i = 0; i < 300000; ++i) rows += i == 0 ? "[1, 2, 3]" : ",[1, 2, 3]";
  const std::string body =
      Request(R"({"name": "x", "shape": [300000, 3], "datatype": "FP32", "data": [)" + rows + "]}");
  absl::StatusOr<ParsedRequest> r = ParseInferRequest(body, Model(), 1 << 20);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->inputs.at("x").data<float>()[899999], 3.0f);
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
  const nlohmann::json config = ModelConfigJson(m);
  EXPECT_EQ(config["name"], "cam");
  EXPECT_EQ(config["max_batch_size"], 0);
  EXPECT_EQ(config["input"][0]["data_type"], "TYPE_FP32");
  EXPECT_EQ(config["input"][0]["dims"], nlohmann::json({-1, 3}));
  EXPECT_EQ(config["input"][0]["format"], "FORMAT_NONE");
  EXPECT_EQ(config["input"][1]["data_type"], "TYPE_INT64");
  EXPECT_EQ(config["output"][1]["data_type"], "TYPE_INT32");
  EXPECT_FALSE(config["output"][0].contains("format"));
  EXPECT_EQ(ConfigDatatype(dtype::kString), "TYPE_STRING");
  EXPECT_EQ(ConfigDatatype(dtype::kBool), "TYPE_BOOL");
  EXPECT_EQ(ConfigDatatype(dtype::kFloat16), "TYPE_FP16");
  EXPECT_EQ(HttpStatusOf(StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusOf(StatusCode::kInvalidArgument), 400);
}

std::string Bytes(const void* p, size_t n) { return std::string(static_cast<const char*>(p), n); }

TEST(KServeJsonTest, BinaryTensorDataInAndOut) {
  const float x[6] = {1, 2, 3, 4, 5, 6};
  const int64_t ids[2] = {7, -8};
  const std::string head =
      R"({"id": "b1", "parameters": {"binary_data_output": true}, "inputs": [)"
      R"({"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}},)"
      R"({"name": "ids", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}}],)"
      R"("outputs": [{"name": "z", "parameters": {"binary_data": false}}, {"name": "y"}]})";
  absl::StatusOr<ParsedRequest> r =
      ParseInferRequest(head + Bytes(x, sizeof x) + Bytes(ids, sizeof ids), Model(), 1 << 20, nullptr,
                        std::to_string(head.size()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->id, "b1");
  const Tensor& tx = r->inputs.at("x");
  EXPECT_EQ(tx.shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::vector<float>(tx.data<float>().begin(), tx.data<float>().end()), std::vector<float>(x, x + 6));
  EXPECT_EQ(r->inputs.at("ids").data<int64_t>()[1], -8);
  EXPECT_TRUE(r->binary_data_output);
  EXPECT_EQ(r->binary_data.at("z"), false);
  EXPECT_EQ(r->outputs, (std::vector<std::string>{"z", "y"}));

  // The answer: z as JSON (its own choice), y in binary after the JSON (the request's default).
  Tensors out;
  const float y[3] = {0.5f, -1.0f, 2.5f};
  Tensor ty(dtype::kFloat, {1, 3});
  std::copy(y, y + 3, ty.data<float>().begin());
  out.emplace("y", std::move(ty));
  Tensor tz(dtype::kInt32, {1});
  tz.data<int32_t>()[0] = -4;
  out.emplace("z", std::move(tz));
  absl::StatusOr<InferResponseBody> resp = InferResponseBodyOf(Model(), *r, out);
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_TRUE(resp->binary);
  const nlohmann::json j = nlohmann::json::parse(resp->body.substr(0, resp->json_length));
  EXPECT_EQ(j["id"], "b1");
  EXPECT_EQ(j["outputs"][0]["name"], "z");
  EXPECT_EQ(j["outputs"][0]["data"], nlohmann::json({-4}));
  EXPECT_EQ(j["outputs"][1]["name"], "y");
  EXPECT_EQ(j["outputs"][1]["parameters"]["binary_data_size"], 12);
  EXPECT_FALSE(j["outputs"][1].contains("data"));
  EXPECT_EQ(resp->body.substr(resp->json_length), Bytes(y, sizeof y));

  // No binary asked for: the whole body is JSON.
  ParsedRequest plain;
  absl::StatusOr<InferResponseBody> json_only = InferResponseBodyOf(Model(), plain, out);
  ASSERT_TRUE(json_only.ok());
  EXPECT_FALSE(json_only->binary);
  EXPECT_EQ(json_only->json_length, json_only->body.size());
  EXPECT_EQ(nlohmann::json::parse(json_only->body)["outputs"][0]["data"][2], 2.5);

  // One output asks for binary without the request default; a JSON input and
  // the header with nothing after the JSON are fine together.
  const std::string one = Request(kGoodX).substr(0, Request(kGoodX).size() - 1) +
                          R"(, "outputs": [{"name": "y", "parameters": {"binary_data": true}}]})";
  absl::StatusOr<ParsedRequest> r1 = ParseInferRequest(one, Model(), 1 << 20, nullptr, std::to_string(one.size()));
  ASSERT_TRUE(r1.ok()) << r1.status();
  absl::StatusOr<InferResponseBody> resp1 = InferResponseBodyOf(Model(), *r1, out);
  ASSERT_TRUE(resp1.ok());
  EXPECT_TRUE(resp1->binary);
  EXPECT_EQ(resp1->body.size(), resp1->json_length + 12);
}

TEST(KServeJsonTest, BinaryBytesTensorsAreLengthPrefixed) {
  ModelInfo m;
  m.name = "tok";
  m.inputs = {TensorInfo{"s", dtype::kString, "string", {2}, true}};
  m.outputs = {TensorInfo{"t", dtype::kString, "string", {2}, true}};
  const std::string raw = std::string("\x02\0\0\0ab\0\0\0\0", 10);
  const std::string head = R"({"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES", "parameters": )"
                           R"({"binary_data_size": 10}}], "parameters": {"binary_data_output": true}})";
  absl::StatusOr<ParsedRequest> r = ParseInferRequest(head + raw, m, 1 << 20, nullptr, std::to_string(head.size()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->inputs.at("s").strings(), (std::vector<std::string>{"ab", ""}));
  Tensors out;
  out.emplace("t", Tensor::Strings({2}, {"ab", ""}));
  absl::StatusOr<InferResponseBody> resp = InferResponseBodyOf(m, *r, out);
  ASSERT_TRUE(resp.ok());
  EXPECT_EQ(resp->body.substr(resp->json_length), raw);
}

TEST(KServeJsonTest, BadBinaryRequestsSayWhatIsWrong) {
  const float x[6] = {1, 2, 3, 4, 5, 6};
  const std::string ids = R"({"name": "ids", "shape": [2], "datatype": "INT64", "data": [7, -8]})";
  auto head = [&](const std::string& x_params) {
    return R"({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", )" + x_params + "}, " + ids + "]}";
  };
  const std::string h24 = head(R"("parameters": {"binary_data_size": 24})");
  struct Case {
    std::string body;
    std::optional<std::string> header;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {h24 + Bytes(x, 24), std::nullopt, "no Inference-Header-Content-Length header"},
           {h24 + Bytes(x, 24), "12a", "must be the length in bytes of the body's JSON part, got '12a'"},
           {h24 + Bytes(x, 24), "-5", "got '-5'"},
           {h24 + Bytes(x, 24), "100000", "says the JSON part has 100000 bytes, but the whole body has"},
           {h24 + Bytes(x, 10), std::to_string(h24.size()), "only 10 bytes of binary data are left"},
           {h24 + Bytes(x, 24) + "extra", std::to_string(h24.size()),
            "the body has 29 bytes after its JSON part (Inference-Header-Content-Length), but the inputs' "
            "'binary_data_size' add up to 24"},
           {head(R"("parameters": {"binary_data_size": 20})") + Bytes(x, 20),
            std::to_string(head(R"("parameters": {"binary_data_size": 20})").size()),
            "input 'x': raw content holds 20 bytes, but float32 [2,3] needs 24"},
           {head(R"("data": [1, 2, 3, 4, 5, 6], "parameters": {"binary_data_size": 24})") + Bytes(x, 24),
            std::to_string(head(R"("data": [1, 2, 3, 4, 5, 6], "parameters": {"binary_data_size": 24})").size()),
            "has 'data' and 'binary_data_size'; use one"},
           {head(R"("parameters": {"binary_data_size": -1})"), std::nullopt, "'binary_data_size' must be an integer"},
           {Request(kGoodX).substr(0, Request(kGoodX).size() - 1) +
                R"(, "outputs": [{"name": "y", "parameters": {"binary_data": 1}}]})",
            std::nullopt, "output 'y': parameter 'binary_data' must be true or false"},
           {Request(kGoodX).substr(0, Request(kGoodX).size() - 1) +
                R"(, "outputs": [{"name": "y", "parameters": {"classification": -3}}]})",
            std::nullopt, "output 'y': 'classification' must be an integer in 0..1048576"},
           {Request(kGoodX).substr(0, Request(kGoodX).size() - 1) +
                R"(, "outputs": [{"name": "y", "parameters": {"classification": "3"}}]})",
            std::nullopt, "output 'y': 'classification' must be an integer"},
           {R"({"parameters": {"binary_data_output": "yes"}, "inputs": []})", std::nullopt,
            "parameter 'binary_data_output' must be true or false"},
       }) {
    absl::StatusOr<ParsedRequest> r = ParseInferRequest(c.body, Model(), 1 << 20, nullptr, c.header);
    ASSERT_FALSE(r.ok()) << c.body.substr(0, 200);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(c.says)) << c.body.substr(0, 200);
  }
}

// The classification extension: the top k of the last dimension per leading
// index, as "value:index" BYTES, largest first, lower index on ties, NaN last.
TEST(KServeJsonTest, ClassificationAnswersTheTopClasses) {
  Tensor y(dtype::kFloat, {2, 4});
  const float values[8] = {0.5f, 2.0f, 2.0f, -1.0f, std::nanf(""), 3.0f, 1.0f, 7.5f};
  std::memcpy(y.data<float>().data(), values, sizeof(values));
  absl::StatusOr<Tensor> top = Classify(y, 3, "y");
  ASSERT_TRUE(top.ok()) << top.status();
  EXPECT_EQ(top->elem_type(), dtype::kString);
  EXPECT_EQ(top->shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_THAT(top->strings(), ::testing::ElementsAre("2.000000:1", "2.000000:2", "0.500000:0", "7.500000:3",
                                                     "3.000000:1", "1.000000:2"));
  absl::StatusOr<Tensor> all = Classify(y, 100, "y");  // more than there are: all of them
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->shape(), (std::vector<int64_t>{2, 4}));
  EXPECT_THAT(all->strings()[7], HasSubstr("nan:0"));
  Tensor ids(dtype::kInt64, {3});
  ids.data<int64_t>()[1] = int64_t{1} << 40;
  ids.data<int64_t>()[2] = -2;
  EXPECT_THAT(Classify(ids, 2, "ids")->strings(), ::testing::ElementsAre("1099511627776:1", "0:0"));
  EXPECT_THAT(Classify(Tensor::Strings({2}, {"a", "b"}), 1, "s").status().message(), HasSubstr("needs numbers"));
  EXPECT_THAT(Classify(Tensor(dtype::kFloat, {}), 1, "s").status().message(), HasSubstr("is a scalar"));
  EXPECT_THAT(Classify(y, 0, "y").status().message(), HasSubstr("at least 1"));

  // Over REST: asked per output, answered as BYTES; checked against the declared output first.
  const std::string body = Request(kGoodX).substr(0, Request(kGoodX).size() - 1) +
                           R"(, "outputs": [{"name": "y", "parameters": {"classification": 2}}, {"name": "z"}]})";
  absl::StatusOr<ParsedRequest> r = ParseInferRequest(body, Model(), 1 << 20);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->classification, (std::map<std::string, int64_t>{{"y", 2}}));
  Tensors out;
  out.emplace("y", std::move(y));
  Tensor z(dtype::kInt32, {1});
  out.emplace("z", std::move(z));
  absl::StatusOr<InferResponseBody> resp = InferResponseBodyOf(Model(), *r, out);
  ASSERT_TRUE(resp.ok()) << resp.status();
  const nlohmann::json j = nlohmann::json::parse(resp->body);
  EXPECT_EQ(j["outputs"][0]["datatype"], "BYTES");
  EXPECT_EQ(j["outputs"][0]["shape"], nlohmann::json({2, 2}));
  EXPECT_EQ(j["outputs"][0]["data"], nlohmann::json({"2.000000:1", "2.000000:2", "7.500000:3", "3.000000:1"}));
  EXPECT_EQ(j["outputs"][1]["datatype"], "INT32");
  ModelInfo strings_out = Model();
  strings_out.outputs[0] = TensorInfo{"y", dtype::kString, "string", {2}, true};
  absl::StatusOr<ParsedRequest> bad = ParseInferRequest(body, strings_out, 1 << 20);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("model 'cam' output 'y': classification needs numbers"));
  EXPECT_TRUE(CheckClassification(strings_out.outputs[0], 0, "y").ok()) << "0 asks for the output itself";

  // Asked for in binary: the classes as BYTES in raw form (each a 4-byte
  // little-endian length, then the text) after the JSON.
  r->binary_data_output = true;
  absl::StatusOr<InferResponseBody> raw = InferResponseBodyOf(Model(), *r, out);
  r->binary_data_output = false;
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_TRUE(raw->binary);
  const nlohmann::json head = nlohmann::json::parse(raw->body.substr(0, raw->json_length));
  EXPECT_EQ(head["outputs"][0]["datatype"], "BYTES");
  std::string want_raw;
  for (const char* e : {"2.000000:1", "2.000000:2", "7.500000:3", "3.000000:1"}) {
    const uint32_t n = static_cast<uint32_t>(std::strlen(e));
    want_raw.append(reinterpret_cast<const char*>(&n), 4).append(e);
  }
  EXPECT_EQ(head["outputs"][0]["parameters"]["binary_data_size"], want_raw.size());
  EXPECT_EQ(raw->body.substr(raw->json_length, want_raw.size()), want_raw);

  // With the model's class labels (its config's `labels`): "value:index:label";
  // an index past the labels keeps "value:index".
  ModelInfo labelled = Model();
  labelled.labels = {"cat", "dog", "emu"};
  resp = InferResponseBodyOf(labelled, *r, out);
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_EQ(nlohmann::json::parse(resp->body)["outputs"][0]["data"],
            nlohmann::json({"2.000000:1:dog", "2.000000:2:emu", "7.500000:3", "3.000000:1:dog"}));
}

TEST(KServeJsonTest, DeepNestingIsRefusedBeforeParsing) {
  // A million nested arrays: refused by the pre-scan (parsing them would take
  // gigabytes, and walking them recursively would overflow the stack).
  const std::string deep = R"({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": )" +
                           std::string(1000000, '[') + "1" + std::string(1000000, ']') + "}]}";
  absl::StatusOr<ParsedRequest> r = ParseInferRequest(deep, Model(), 1 << 20);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("nest more than 80 deep"));
  // Nesting the pre-scan lets through is still bounded by the walk over 'data'.
  const std::string seventy = R"({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": )" +
                              std::string(70, '[') + "1" + std::string(70, ']') + "}]}";
  r = ParseInferRequest(seventy, Model(), 1 << 20);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("input 'x': 'data' is nested more than 64 arrays deep"));
  // Brackets inside strings, escaped quotes included, do not count.
  const std::string in_string = R"({"id": ")" + std::string(200, '[') + R"(\"[{", "inputs": [)" + kGoodX + ", " +
                                R"({"name": "ids", "shape": [2], "datatype": "INT64", "data": [7, -8]}]})";
  r = ParseInferRequest(in_string, Model(), 1 << 20);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->id, std::string(200, '[') + "\"[{");
  // Nested data within the bound is flattened row-major.
  EXPECT_EQ(r->inputs.at("x").data<float>()[4], 5.0f);
}

TEST(KServeJsonTest, StatisticsFromTheEngineCounters) {
  EngineStats s;
  for (const char* name : {"a", "b"}) {
    ModelStats& m = s.models.emplace_back();
    m.name = name;
  }
  ModelStats& a = s.models[0];
  a.completed = 3;
  a.failed = 1;
  a.rejected = 2;
  a.deadline_exceeded = 1;
  a.invalid = 1;
  a.latency_sum_s = 0.25;
  a.queue_sum_s = 0.05;
  a.compute_sum_s = 0.2;
  a.failed_sum_s = 0.5;
  a.last_answer_unix_ms = 1700000000000;
  a.executions = 2;  // a batch of two and a request alone
  a.batch_sizes = {{1, 1, 0.05}, {2, 1, 0.075}};
  const std::vector<KServeModelStatistics> only_a = KServeStatistics(s, "a");
  ASSERT_EQ(only_a.size(), 1u);
  EXPECT_EQ(only_a[0].fail.count, 5u);
  EXPECT_EQ(only_a[0].fail.ns, 500000000u);
  EXPECT_EQ(KServeStatistics(s).size(), 2u);
  const nlohmann::json j = StatisticsJson(only_a);
  const nlohmann::json& m = j["model_stats"][0];
  EXPECT_EQ(m["name"], "a");
  EXPECT_EQ(m["version"], "1");
  EXPECT_EQ(m["last_inference"], 1700000000000u);
  EXPECT_EQ(m["inference_count"], 3);
  EXPECT_EQ(m["execution_count"], 2);
  EXPECT_EQ(m["batch_stats"],
            nlohmann::json::parse(R"([{"batch_size": 1, "compute_input": {"count": 0, "ns": 0},
                                       "compute_infer": {"count": 1, "ns": 50000000},
                                       "compute_output": {"count": 0, "ns": 0}},
                                      {"batch_size": 2, "compute_input": {"count": 0, "ns": 0},
                                       "compute_infer": {"count": 1, "ns": 75000000},
                                       "compute_output": {"count": 0, "ns": 0}}])"));
  EXPECT_EQ(m["inference_stats"]["success"], nlohmann::json({{"count", 3}, {"ns", 250000000}}));
  EXPECT_EQ(m["inference_stats"]["queue"]["ns"], 50000000);
  EXPECT_EQ(m["inference_stats"]["compute_infer"]["ns"], 200000000);
  EXPECT_EQ(m["inference_stats"]["compute_input"]["count"], 0);
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
  s.pus.push_back(PuStatsView{"cpu0", "cpu", "local", 10, 0.5, 0.04, 0.25});
  s.devices.push_back(DeviceStatsView{"local", false, true, 1, 1});
  DeviceStatsView edge{"edge", true, false};
  edge.lost = 2;
  edge.returned = 3;
  s.devices.push_back(edge);
  const std::string text = PrometheusText(s);
  EXPECT_THAT(text, HasSubstr("baton_device_reachable{device=\"edge\"} 0"));
  EXPECT_THAT(text, HasSubstr("baton_device_lost_total{device=\"edge\"} 2"));
  EXPECT_THAT(text, HasSubstr("baton_device_returned_assignments_total{device=\"edge\"} 3"));
  EXPECT_THAT(text, HasSubstr("baton_device_lost_total{device=\"local\"} 0"));
  EXPECT_THAT(text, HasSubstr("baton_inference_requests_total{model=\"cam \\\"front\\\"\",status=\"success\"} 3"));
  EXPECT_THAT(text, HasSubstr("baton_inference_request_duration_seconds_bucket{model=\"cam \\\"front\\\"\",le=\"+Inf\"} 3"));
  EXPECT_THAT(text, HasSubstr("baton_pu_busy_seconds_total{pu=\"cpu0\",kind=\"cpu\",device=\"local\"} 0.5"));
  EXPECT_THAT(text, HasSubstr("baton_pu_run_cpu_seconds_total{pu=\"cpu0\",kind=\"cpu\",device=\"local\"} 0.25"));
  EXPECT_THAT(text, HasSubstr("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total "));

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

namespace baton::serve {
namespace {

TEST(ParseHostPortTest, SplitsHostAndPortAndNamesTheFlagOnBadInput) {
  std::string host;
  int port = -1;
  ASSERT_TRUE(ParseHostPort("127.0.0.1:8001", "--grpc", host, port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 8001);
  ASSERT_TRUE(ParseHostPort("[::1]:0", "--http", host, port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 0);
  ASSERT_TRUE(ParseHostPort("localhost:65535", "--http", host, port).ok());
  EXPECT_EQ(host, "localhost");
  for (const char* bad : {"8001", ":8001", "host:", "host:65536", "host:-1", "host:+80", "host:8o", "host: 80"}) {
    const absl::Status s = ParseHostPort(bad, "--grpc", host, port);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("--grpc wants HOST:PORT with a port in 0..65535"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(std::string("got '") + bad + "'"), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace baton::serve
