// `baton serve` as a real process on loopback, reached over HTTP: health,
// metadata, inference equal to whole-model ONNX Runtime, every kind of bad
// request answered 400 without affecting other clients, `curl` against the
// REST endpoints, many clients at once with different priorities, a full
// queue answered 429, the token, HTTPS and gRPC over TLS, metrics that
// promtool accepts, tensors through client shared memory, the work of a
// killed gRPC client cancelled, and SIGTERM exiting 0 (checked by the
// process helper).
#include <arpa/inet.h>
#include <brotli/encode.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent_test_util.h"
#include "baton/backend/ort/ort_runner.h"
#include "baton/graph/model.h"
#include "baton/verify/verify.h"
#include "cli_test_util.h"
#include "serve_test_util.h"
#include "spin_model.h"
#include "test_certs.h"
#include "thread_stat.h"
#include "wait_until.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace baton {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using nlohmann::json;
using testing::BatonProcess;
using testing::WaitUntil;  // a gate on the server's state, not a sleep

class CliServeTest : public baton::testing::ZooDirTest<CliServeTest> {
 public:
  static constexpr const char* kDir = "baton_cli_serve_test_";

 protected:
  std::string Config(const std::string& extra_run = "") {
    return testing::WriteServeConfig(dir_, Zoo("squeezenet"), extra_run);
  }

  // A config whose one PU a `spin` request holds for up to ten minutes
  // (tests/spin_model.h), in a closed loop of `spins`; with `cam` beside it,
  // in a closed loop of one.
  std::string SpinConfig(int spins = 1, bool cam = true) {
    absl::StatusOr<std::string> spin = testing::SpinModelBytes();
    EXPECT_TRUE(spin.ok()) << spin.status();
    std::ofstream(dir_ / "spin.onnx", std::ios::binary) << spin.value_or("");
    const std::string config = (dir_ / "spin.yaml").string();
    std::ofstream out(config);
    out << "devices: [{name: local, pus: [{name: cpu0, kind: cpu}]}]\n"
        << "models:\n"
        << "  - {name: spin, path: spin.onnx, execution_timeout_ms: 600000,"
        << " arrival: {mode: closed, concurrency: " << spins << "}}\n";
    if (cam) out << "  - {name: cam, path: " << Zoo("squeezenet") << ", arrival: {mode: closed, concurrency: 1}}\n";
    out << "policy: {high_level: whole}\n";
    return config;
  }

  // Sends `model` a float32[1] input "x" over REST from a thread of its own
  // (the answer may take minutes); `check` gets what came back.
  static std::thread PostXInBackground(int port, const std::string& model,
                                       std::function<void(const httplib::Result&)> check) {
    return std::thread([port, model, check = std::move(check)] {
      httplib::Client rc("127.0.0.1", port);
      rc.set_read_timeout(120, 0);
      const json body = {{"inputs", json::array({{{"name", "x"}, {"shape", {1}}, {"datatype", "FP32"}, {"data", {1}}}})}};
      check(rc.Post("/v2/models/" + model + "/infer", body.dump(), "application/json"));
    });
  }

  // A sample's value in the server's /metrics (-1 when absent or unreadable).
  static double Metric(httplib::Client& c, const std::string& sample) {
    auto m = c.Get("/metrics");
    if (!m || m->status != 200) return -1;
    const size_t at = m->body.find("\n" + sample + " ");
    return at == std::string::npos ? -1 : std::strtod(m->body.c_str() + at + sample.size() + 2, nullptr);
  }
  static std::string Requests(const std::string& model, const std::string& status) {
    return "baton_inference_requests_total{model=\"" + model + "\",status=\"" + status + "\"}";
  }

  // A request body for the model's sample `seed`, and whole-model ORT's outputs for it.
  struct Sample {
    std::string body;
    std::vector<float> want;
    json input;            // the input's JSON without its data
    std::vector<float> x;  // the input's data
  };
  Sample MakeSample(uint64_t seed, const std::string& id = "") {
    auto model = graph::Model::LoadFile(Zoo("squeezenet"));
    EXPECT_TRUE(model.ok()) << model.status();
    auto inputs = verify::RandomInputs(**model, seed);
    EXPECT_TRUE(inputs.ok());
    const Tensor& x = (*inputs)[0].second;
    const json head = {{"name", (*inputs)[0].first}, {"datatype", "FP32"}, {"shape", x.shape()}};
    json in = head;
    in["data"] = std::vector<float>(x.data<float>().begin(), x.data<float>().end());
    json body = {{"inputs", json::array({in})}};
    if (!id.empty()) body["id"] = id;
    auto runner = ort::OrtRunner::Create((*model)->SerializeToString(), {}, "whole");
    EXPECT_TRUE(runner.ok());
    std::vector<std::pair<std::string, const Tensor*>> feeds = {{(*inputs)[0].first, &x}};
    auto outs = (*runner)->Run(feeds);
    EXPECT_TRUE(outs.ok());
    return Sample{body.dump(), std::vector<float>((*outs)[0].data<float>().begin(), (*outs)[0].data<float>().end()),
                  head, std::vector<float>(x.data<float>().begin(), x.data<float>().end())};
  }

  static void ExpectOutputs(const httplib::Result& r, const std::vector<float>& want) {
    ASSERT_TRUE(r) << "no answer";
    ASSERT_EQ(r->status, 200) << r->body;
    const json j = json::parse(r->body);
    const std::vector<float> got = j["outputs"][0]["data"].get<std::vector<float>>();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4) << i;
  }
};

TEST_F(CliServeTest, ServesKServeV2RestAndMetrics) {
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--max-request-mb", "1"});
  ASSERT_TRUE(server.ok()) << server.banner();
  EXPECT_THAT(server.banner(), HasSubstr("models: cam"));
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);

  auto live = c.Get("/v2/health/live");
  ASSERT_TRUE(live);
  EXPECT_EQ(live->status, 200);
  EXPECT_EQ(json::parse(c.Get("/v2/health/ready")->body)["ready"], true);
  EXPECT_EQ(json::parse(c.Get("/v2")->body)["name"], "baton");
  const json meta = json::parse(c.Get("/v2/models/cam")->body);
  EXPECT_EQ(meta["inputs"][0]["datatype"], "FP32");
  EXPECT_EQ(meta["inputs"][0]["shape"], json({1, 3, 64, 64}));
  EXPECT_EQ(c.Get("/v2/models/cam/ready")->status, 200);
  const json config = json::parse(c.Get("/v2/models/cam/config")->body);
  EXPECT_EQ(config["max_batch_size"], 0);
  EXPECT_EQ(config["input"][0]["data_type"], "TYPE_FP32");
  EXPECT_EQ(config["input"][0]["dims"], json({1, 3, 64, 64}));
  EXPECT_EQ(config["output"][0]["data_type"], "TYPE_FP32");
  EXPECT_EQ(c.Get("/v2/models/nope/config")->status, 400);
  // Triton's versioned paths: version 1 is the model; any other is 400 saying so.
  EXPECT_EQ(json::parse(c.Get("/v2/models/cam/versions/1")->body)["name"], "cam");
  EXPECT_EQ(c.Get("/v2/models/cam/versions/1/ready")->status, 200);
  auto v2 = c.Get("/v2/models/cam/versions/2/config");
  EXPECT_EQ(v2->status, 400);
  EXPECT_THAT(v2->body, HasSubstr("model 'cam' has no version '2'; its only version is 1"));

  const Sample s = MakeSample(1, "req-7");
  auto r = c.Post("/v2/models/cam/versions/1/infer", s.body, "application/json");
  ExpectOutputs(r, s.want);
  EXPECT_EQ(json::parse(r->body)["id"], "req-7");

  // Bad requests: 400 naming what was wrong; the server keeps serving.
  const json good = json::parse(s.body);
  auto with = [&](const std::function<void(json&)>& change) {
    json b = good;
    change(b);
    return b.dump();
  };
  struct Case {
    std::string path;
    std::string body;
    std::string says;
  };
  for (const Case& bad : std::vector<Case>{
           {"/v2/models/nope/infer", s.body, "unknown model 'nope'"},
           {"/v2/models/cam/infer", "{\"inputs\": [", "not valid JSON"},
           {"/v2/models/cam/infer", with([](json& b) { b["inputs"][0]["name"] = "img"; }), "has no input 'img'"},
           {"/v2/models/cam/infer", with([](json& b) { b["inputs"][0]["datatype"] = "INT64"; }), "expected FP32"},
           {"/v2/models/cam/infer", with([](json& b) { b["inputs"][0]["shape"] = {1, 3, 32, 32}; }),
            "expected [1,3,64,64]"},
           {"/v2/models/cam/infer", with([](json& b) { b["inputs"][0]["data"] = {1, 2, 3}; }), "'data' has 3 elements"},
           {"/v2/models/cam/infer", R"({"inputs": []})", "is missing"},
       }) {
    auto res = c.Post(bad.path, bad.body, "application/json");
    ASSERT_TRUE(res) << bad.path;
    EXPECT_EQ(res->status, 400) << bad.body.substr(0, 200);
    EXPECT_THAT(res->body, HasSubstr(bad.says));
  }
  ExpectOutputs(c.Post("/v2/models/cam/infer", s.body, "application/json"), s.want);

  // A body sent as form data (curl -d's default Content-Type) is read whole,
  // not capped at httplib's 8 KiB for forms; one over --max-request-mb is
  // 413, and the connection closes.
  ASSERT_GT(s.body.size(), size_t{8} << 10);
  ExpectOutputs(c.Post("/v2/models/cam/infer", s.body, "application/x-www-form-urlencoded"), s.want);
  auto huge = c.Post("/v2/models/cam/infer", std::string(size_t{2} << 20, ' '), "application/json");
  ASSERT_TRUE(huge);
  EXPECT_EQ(huge->status, 413);
  EXPECT_THAT(huge->body, HasSubstr("request body too large; raise --max-request-mb"));

  // Data nested 400 000 arrays deep (this once overflowed a worker's stack
  // and killed the server): 400, and the server goes on.
  auto deep = c.Post("/v2/models/cam/infer",
                     R"({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": )" +
                         std::string(400000, '[') + "1" + std::string(400000, ']') + "}]}",
                     "application/json");
  ASSERT_TRUE(deep);
  EXPECT_EQ(deep->status, 400);
  EXPECT_THAT(deep->body, HasSubstr("nest more than 80 deep"));
  ExpectOutputs(c.Post("/v2/models/cam/infer", s.body, "application/json"), s.want);

  // A body in an encoding the server does not inflate is refused before it
  // is read; the answer closes the connection, and the next request is
  // served. (gzip, deflate and br: CompressedBodiesAreInflatedWithinTheBound.)
  auto zstd = c.Post("/v2/models/cam/infer", httplib::Headers{{"Content-Encoding", "zstd"}}, std::string(4096, 'z'),
                     "application/json");
  ASSERT_TRUE(zstd);
  EXPECT_EQ(zstd->status, 415);
  EXPECT_THAT(zstd->body, HasSubstr("Content-Encoding 'zstd' is not accepted: send gzip, deflate or br"));
  EXPECT_EQ(zstd->get_header_value("Connection"), "close");
  ExpectOutputs(c.Post("/v2/models/cam/infer", s.body, "application/json"), s.want);

  // The statistics extension counts the same five.
  const json stats = json::parse(c.Get("/v2/models/cam/stats")->body);
  ASSERT_EQ(stats["model_stats"].size(), 1u);
  EXPECT_EQ(stats["model_stats"][0]["name"], "cam");
  EXPECT_EQ(stats["model_stats"][0]["inference_count"], 5);
  EXPECT_EQ(stats["model_stats"][0]["inference_stats"]["success"]["count"], 5);
  EXPECT_GT(stats["model_stats"][0]["inference_stats"]["success"]["ns"].get<uint64_t>(), 0u);
  EXPECT_EQ(json::parse(c.Get("/v2/models/stats")->body)["model_stats"].size(), 1u);
  EXPECT_EQ(c.Get("/v2/models/nope/stats")->status, 400);

  // Metrics: the five good requests, and promtool accepts the text.
  auto m = c.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_THAT(m->body, HasSubstr("baton_inference_requests_total{model=\"cam\",status=\"success\"} 5"));
  EXPECT_THAT(m->body, HasSubstr("baton_pu_runs_total{pu=\"cpu0\""));
  // CPU: the PUs' runs took some, and the process at least that much.
  double runs_cpu = 0, process_cpu = 0;
  std::istringstream lines(m->body);
  for (std::string line; std::getline(lines, line);) {
    const std::string value = line.substr(line.rfind(' ') + 1);
    if (line.rfind("baton_pu_run_cpu_seconds_total{", 0) == 0) runs_cpu += std::stod(value);
    if (line.rfind("process_cpu_seconds_total ", 0) == 0) process_cpu = std::stod(value);
  }
  EXPECT_GT(runs_cpu, 0);
  EXPECT_GE(process_cpu, runs_cpu);
  EXPECT_THAT(m->body, HasSubstr("baton_policy_violations_total{device=\"local\"} 0"));
  if (fs::exists("/usr/bin/promtool")) {
    const std::string path = (dir_ / "metrics.txt").string();
    std::ofstream(path) << m->body;
    EXPECT_EQ(std::system(("/usr/bin/promtool check metrics < " + path + " >/dev/null 2>&1").c_str()), 0);
  }

  // The model repository extension, read-only: the index, a load of a served
  // model (a no-op), and what cannot be done said as such; the model still serves.
  auto index = c.Post("/v2/repository/index", "", "application/json");
  ASSERT_TRUE(index);
  EXPECT_EQ(index->status, 200) << index->body;
  EXPECT_EQ(json::parse(index->body), json::parse(R"([{"name": "cam", "version": "1", "state": "READY", "reason": ""}])"));
  EXPECT_EQ(c.Post("/v2/repository/index", R"({"ready": true})", "application/json")->status, 200);
  auto other_repo = c.Post("/v2/repository/elsewhere/index", "", "application/json");
  EXPECT_EQ(other_repo->status, 400);
  EXPECT_THAT(other_repo->body, HasSubstr("no repository 'elsewhere'"));
  EXPECT_EQ(c.Post("/v2/repository/index", "{", "application/json")->status, 400);
  EXPECT_EQ(c.Post("/v2/repository/models/cam/load", "", "application/json")->status, 200);
  auto reload = c.Post("/v2/repository/models/cam/load", R"({"parameters": {"config": "{}"}})", "application/json");
  EXPECT_EQ(reload->status, 501);
  EXPECT_THAT(reload->body, HasSubstr("change the config and restart"));
  auto load_new = c.Post("/v2/repository/models/det/load", "", "application/json");
  EXPECT_EQ(load_new->status, 501);
  EXPECT_THAT(load_new->body, HasSubstr("cannot load model 'det'"));
  auto unload = c.Post("/v2/repository/models/cam/unload", "", "application/json");
  EXPECT_EQ(unload->status, 501);
  EXPECT_THAT(unload->body, HasSubstr("cannot unload model 'cam'"));
  EXPECT_EQ(c.Post("/v2/repository/models/nope/unload", "", "application/json")->status, 400);
  ExpectOutputs(c.Post("/v2/models/cam/infer", s.body, "application/json"), s.want);
}

// Runs `curl ARGS` with -sS and prints the HTTP status after the body
// (`-w '\n%{http_code}'`); the body and the status.
struct Curled {
  std::string body;
  int status = 0;
};
Curled Curl(const std::string& args) {
  Curled c;
  FILE* pipe = popen(("curl -sS --max-time 60 -w '\n%{http_code}' " + args + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return c;
  std::array<char, 4096> buf;
  size_t n;
  std::string out;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  pclose(pipe);
  const size_t nl = out.rfind('\n');
  c.body = nl == std::string::npos ? out : out.substr(0, nl);
  c.status = nl == std::string::npos ? 0 : std::atoi(out.c_str() + nl + 1);
  return c;
}

TEST_F(CliServeTest, CurlAgainstTheRestEndpoints) {
  // The plain HTTP client every user has (scripts/install_deps.sh installs it).
  ASSERT_EQ(std::system("curl --version >/dev/null 2>&1"), 0) << "curl is missing: run scripts/install_deps.sh";
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--no-grpc"});
  ASSERT_TRUE(server.ok()) << server.banner();
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port());

  const Curled live = Curl(url + "/v2/health/live");
  EXPECT_EQ(live.status, 200) << live.body;
  EXPECT_EQ(json::parse(live.body)["live"], true);
  EXPECT_EQ(Curl(url + "/v2/health/ready").status, 200);
  const Curled meta = Curl(url + "/v2/models/cam");
  ASSERT_EQ(meta.status, 200) << meta.body;
  EXPECT_EQ(json::parse(meta.body)["inputs"][0]["shape"], json({1, 3, 64, 64}));

  const Sample s = MakeSample(5, "curl-1");
  const std::string body_path = (dir_ / "curl_body.json").string();
  std::ofstream(body_path) << s.body;
  const Curled infer = Curl("-X POST -H 'Content-Type: application/json' --data-binary @" + body_path + " " + url +
                            "/v2/models/cam/infer");
  ASSERT_EQ(infer.status, 200) << infer.body.substr(0, 300);
  const json answer = json::parse(infer.body);
  EXPECT_EQ(answer["id"], "curl-1");
  const std::vector<float> got = answer["outputs"][0]["data"].get<std::vector<float>>();
  ASSERT_EQ(got.size(), s.want.size());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], s.want[i], 1e-4) << i;

  // The classification extension: the top 2 classes, as BYTES "value:index",
  // the best first, as whole-model ORT ranks them.
  {
    json body = json::parse(s.body);
    body["outputs"] = json::array({{{"name", answer["outputs"][0]["name"]}, {"parameters", {{"classification", 2}}}}});
    const std::string top_path = (dir_ / "curl_top.json").string();
    std::ofstream(top_path) << body.dump();
    const Curled top = Curl("-X POST --data-binary @" + top_path + " " + url + "/v2/models/cam/infer");
    ASSERT_EQ(top.status, 200) << top.body.substr(0, 300);
    const json out = json::parse(top.body)["outputs"][0];
    EXPECT_EQ(out["datatype"], "BYTES");
    ASSERT_EQ(out["data"].size(), 2u);
    const size_t best = static_cast<size_t>(std::max_element(s.want.begin(), s.want.end()) - s.want.begin());
    EXPECT_THAT(out["data"][0].get<std::string>(), ::testing::EndsWith(":" + std::to_string(best)));
  }
  // A bodiless POST (`curl -X POST`, no Content-Length) reaches the endpoints that need no body.
  const Curled index = Curl("-X POST " + url + "/v2/repository/index");
  EXPECT_EQ(index.status, 200) << index.body;
  EXPECT_EQ(json::parse(index.body)[0]["state"], "READY");
  const Curled unregister = Curl("-X POST " + url + "/v2/systemsharedmemory/unregister");
  EXPECT_EQ(unregister.status, 400);
  EXPECT_THAT(unregister.body, HasSubstr("--allow-client-shm"));
  const Curled no_body = Curl("-X POST " + url + "/v2/systemsharedmemory/region/r/register");
  EXPECT_EQ(no_body.status, 400) << "a request without Content-Length has no body (HTTP/1.1), answered at once";
  EXPECT_THAT(no_body.body, HasSubstr("--allow-client-shm")) << "the endpoint's own answer";
  const Curled elsewhere = Curl("-X POST " + url + "/v2/no/such/endpoint");
  EXPECT_EQ(elsewhere.status, 404) << elsewhere.body;
  EXPECT_THAT(elsewhere.body, HasSubstr("no endpoint POST /v2/no/such/endpoint"));

  // The binary tensor data extension, as Triton's HTTP client sends it by
  // default: the input's bytes after the JSON, and the outputs asked for in binary.
  {
    json in = s.input;
    in["parameters"] = {{"binary_data_size", s.x.size() * sizeof(float)}};
    const std::string head = json({{"id", "bin-1"},
                                   {"inputs", json::array({in})},
                                   {"parameters", {{"binary_data_output", true}}}})
                                 .dump();
    const std::string bin_path = (dir_ / "curl_body.bin").string();
    std::ofstream(bin_path, std::ios::binary) << head
                                              << std::string(reinterpret_cast<const char*>(s.x.data()),
                                                             s.x.size() * sizeof(float));
    const std::string headers_path = (dir_ / "curl_headers.txt").string();
    const Curled bin = Curl("-X POST -H 'Content-Type: application/octet-stream' -H "
                            "'Inference-Header-Content-Length: " +
                            std::to_string(head.size()) + "' -D " + headers_path + " --data-binary @" + bin_path +
                            " " + url + "/v2/models/cam/infer");
    ASSERT_EQ(bin.status, 200) << bin.body.substr(0, 300);
    std::ifstream headers_in(headers_path);
    const std::string headers((std::istreambuf_iterator<char>(headers_in)), std::istreambuf_iterator<char>());
    const std::string key = "inference-header-content-length: ";
    std::string lower = headers;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return std::tolower(ch); });
    const size_t at = lower.find(key);
    ASSERT_NE(at, std::string::npos) << headers;
    const size_t json_length = std::stoul(headers.substr(at + key.size()));
    EXPECT_THAT(lower, HasSubstr("content-type: application/octet-stream"));
    ASSERT_LE(json_length, bin.body.size());
    const json bin_answer = json::parse(bin.body.substr(0, json_length));
    EXPECT_EQ(bin_answer["id"], "bin-1");
    const size_t n = s.want.size() * sizeof(float);
    EXPECT_EQ(bin_answer["outputs"][0]["parameters"]["binary_data_size"], n);
    ASSERT_EQ(bin.body.size() - json_length, n);
    std::vector<float> bin_got(s.want.size());
    std::memcpy(bin_got.data(), bin.body.data() + json_length, n);
    for (size_t i = 0; i < bin_got.size(); ++i) ASSERT_NEAR(bin_got[i], s.want[i], 1e-4) << i;

    // A binary part shorter than the input needs: 400 naming the input, and the server goes on.
    std::ofstream(bin_path, std::ios::binary) << head << "short";
    const Curled truncated = Curl("-X POST -H 'Inference-Header-Content-Length: " + std::to_string(head.size()) +
                                  "' --data-binary @" + bin_path + " " + url + "/v2/models/cam/infer");
    EXPECT_EQ(truncated.status, 400);
    EXPECT_THAT(truncated.body, HasSubstr("only 5 bytes of binary data are left"));
  }

  const Curled bad = Curl("-X POST --data-binary '{\"inputs\": [' " + url + "/v2/models/cam/infer");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("not valid JSON"));
  const Curled unknown = Curl(url + "/v2/models/nope");
  EXPECT_EQ(unknown.status, 400);
  EXPECT_THAT(unknown.body, HasSubstr("unknown model 'nope'"));
  const Curled metrics = Curl(url + "/metrics");
  EXPECT_EQ(metrics.status, 200);
  // The JSON, classified and binary requests.
  EXPECT_THAT(metrics.body, HasSubstr("baton_inference_requests_total{model=\"cam\",status=\"success\"} 3"));
}

TEST_F(CliServeTest, TensorsThroughSharedMemoryOverRest) {
  // The system shared memory extension over REST: register, an input and an
  // output in the region, status, unregister; and 400 while it is off.
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--no-grpc", "--allow-client-shm"});
  ASSERT_TRUE(server.ok()) << server.banner();
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  EXPECT_EQ(json::parse(c.Get("/v2")->body)["extensions"], json({"binary_tensor_data", "classification", "statistics", "system_shared_memory"}));

  const Sample s = MakeSample(3);
  json body = json::parse(s.body);
  const std::vector<float> input = body["inputs"][0]["data"].get<std::vector<float>>();
  const size_t in_bytes = input.size() * sizeof(float), out_at = (in_bytes + 4095) / 4096 * 4096;
  const size_t size = out_at + s.want.size() * sizeof(float);
  const std::string key = "/baton_cli_serve_test_" + std::to_string(getpid());
  const int fd = shm_open(key.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
  auto* mem = static_cast<char*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(mem, MAP_FAILED);
  close(fd);
  std::memcpy(mem, input.data(), in_bytes);
  auto reg = c.Post("/v2/systemsharedmemory/region/cam_io/register",
                    json({{"key", key}, {"offset", 0}, {"byte_size", size}}).dump(), "application/json");
  ASSERT_TRUE(reg);
  ASSERT_EQ(reg->status, 200) << reg->body;
  shm_unlink(key.c_str());
  EXPECT_EQ(c.Post("/v2/systemsharedmemory/region/cam_io/register",
                   json({{"key", key}, {"byte_size", size}}).dump(), "application/json")->status, 400);

  body["inputs"][0].erase("data");
  body["inputs"][0]["parameters"] = {{"shared_memory_region", "cam_io"}, {"shared_memory_byte_size", in_bytes}};
  const std::string output = json::parse(c.Get("/v2/models/cam")->body)["outputs"][0]["name"];
  body["outputs"] = json::array({{{"name", output},
                                  {"parameters",
                                   {{"shared_memory_region", "cam_io"},
                                    {"shared_memory_offset", out_at},
                                    {"shared_memory_byte_size", s.want.size() * sizeof(float)}}}}});
  auto r = c.Post("/v2/models/cam/infer", body.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json answer = json::parse(r->body);
  EXPECT_FALSE(answer["outputs"][0].contains("data"));
  EXPECT_EQ(answer["outputs"][0]["parameters"]["shared_memory_region"], "cam_io");
  std::vector<float> got(s.want.size());
  std::memcpy(got.data(), mem + out_at, got.size() * sizeof(float));
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], s.want[i], 1e-4) << i;

  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_THAT(metrics->body, HasSubstr("baton_shared_memory_regions 1\n"));
  EXPECT_THAT(metrics->body, HasSubstr("baton_shared_memory_bytes " + std::to_string(size) + "\n"));
  if (fs::exists("/usr/bin/promtool")) {
    const std::string path = (dir_ / "shm_metrics.txt").string();
    std::ofstream(path) << metrics->body;
    EXPECT_EQ(std::system(("/usr/bin/promtool check metrics < " + path + " >/dev/null 2>&1").c_str()), 0);
  }
  const json status = json::parse(c.Get("/v2/systemsharedmemory/region/cam_io/status")->body);
  ASSERT_EQ(status.size(), 1u);
  EXPECT_EQ(status[0]["key"], key);
  EXPECT_EQ(status[0]["byte_size"], size);
  EXPECT_EQ(c.Post("/v2/systemsharedmemory/region/cam_io/unregister", "", "text/plain")->status, 200);
  auto gone = c.Post("/v2/models/cam/infer", body.dump(), "application/json");
  EXPECT_EQ(gone->status, 400);
  EXPECT_THAT(gone->body, HasSubstr("no shared memory region 'cam_io' is registered"));
  EXPECT_EQ(json::parse(c.Get("/v2/systemsharedmemory/status")->body), json::array());
  munmap(mem, size);

  BatonProcess plain("serve", {Config(), "--no-profile", "-q", "--no-grpc"});
  ASSERT_TRUE(plain.ok()) << plain.banner();
  httplib::Client p("127.0.0.1", plain.port());
  auto off = p.Post("/v2/systemsharedmemory/region/x/register", json({{"key", key}, {"byte_size", 8}}).dump(),
                    "application/json");
  ASSERT_TRUE(off);
  EXPECT_EQ(off->status, 400);
  EXPECT_THAT(off->body, HasSubstr("--allow-client-shm"));
  auto refused = p.Post("/v2/models/cam/infer", body.dump(), "application/json");
  EXPECT_EQ(refused->status, 400);
  EXPECT_THAT(refused->body, HasSubstr("takes no client shared memory"));
}

TEST_F(CliServeTest, RegionsOfAKilledSharedMemoryClientAreDropped) {
  // `baton run --server ... --shared-memory system` killed (SIGKILL) mid-run
  // cannot unregister its regions; it held their objects' locks, so the
  // server drops them the next time it looks (here: /metrics).
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--grpc", "127.0.0.1:0", "--allow-client-shm"});
  ASSERT_TRUE(server.ok()) << server.banner();
  ASSERT_GT(server.grpc_port(), 0);
  const testing::SignalledRun killed = testing::SignalWhenPrinted(
      {"run", Config(), "--server", "127.0.0.1:" + std::to_string(server.grpc_port()), "--shared-memory", "system",
       "--duration", "60", "--slices", "60", "--warmup", "0"},
      "slice 1/", SIGKILL);
  ASSERT_TRUE(killed.signalled) << killed.output;
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_THAT(metrics->body, HasSubstr("baton_shared_memory_regions 0\n"));
  EXPECT_THAT(metrics->body, ::testing::Not(HasSubstr("baton_shared_memory_regions_reclaimed_total 0\n")));
  EXPECT_THAT(metrics->body, HasSubstr("baton_shared_memory_regions_reclaimed_total "));
  EXPECT_EQ(json::parse(c.Get("/v2/systemsharedmemory/status")->body), json::array());
  // The server goes on: a new client registers and is answered.
  testing::CliResult run = testing::Baton("run " + Config() + " --server 127.0.0.1:" +
                                          std::to_string(server.grpc_port()) +
                                          " --shared-memory system --duration 1 --warmup 0.2 --slices 2 --verify --quiet");
  EXPECT_EQ(run.exit_code, 0) << run.output;
}

// A client process that dies with its calls in flight leaves no work behind:
// of its two requests that would each hold the one PU for minutes
// (tests/spin_model.h), the running one is stopped and the waiting one
// withdrawn. Neither can finish, so the state the client is killed in (one
// running, one queued) holds until it is killed.
TEST_F(CliServeTest, TheWorkOfAKilledClientIsCancelled) {
  const std::string config = SpinConfig(/*spins=*/2, /*cam=*/false);
  BatonProcess server("serve", {config, "--no-profile", "-q", "--grpc", "127.0.0.1:0"});
  ASSERT_TRUE(server.ok()) << server.banner();
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  const std::string running = "baton_device_running{device=\"local\"}";
  const std::string queued = "baton_device_queue_depth{device=\"local\"}";
  const std::vector<std::string> statuses = {"success",  "failed",  "deadline_exceeded",
                                             "rejected", "invalid", "cancelled"};
  bool busy = false;
  const testing::SignalledRun killed = testing::ActWhenPrinted(
      {"run", config, "--server", "127.0.0.1:" + std::to_string(server.grpc_port()), "--duration", "600", "--warmup",
       "0"},
      "planning", [&](pid_t pid) {  // a line of its start-up, on stderr
        busy = WaitUntil([&] { return Metric(c, running) == 1 && Metric(c, queued) == 1; });
        ::kill(pid, SIGKILL);
      });
  ASSERT_TRUE(killed.signalled) << killed.output;
  ASSERT_TRUE(busy) << "the client's requests never reached the PU and its queue";
  // The server finds the connection gone and cancels both: the PU is free and
  // nothing is left queued, where each would otherwise hold the PU for
  // minutes. No request ends any other way.
  EXPECT_TRUE(WaitUntil([&] { return Metric(c, running) == 0; }));
  EXPECT_TRUE(WaitUntil([&] { return Metric(c, queued) == 0; }));
  EXPECT_TRUE(WaitUntil([&] { return Metric(c, Requests("spin", "cancelled")) == 2; }));
  for (const std::string& status : statuses) {
    EXPECT_EQ(Metric(c, Requests("spin", status)), status == "cancelled" ? 2 : 0) << status;
  }
  // The server goes on.
  auto ready = c.Get("/v2/health/ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
}

// SIGTERM stops both front-ends accepting at once. While gRPC waits for a call
// in flight (here one that would run for minutes, within its 30 s grace),
// HTTP takes no new request; before, HTTP stopped only after gRPC had
// drained. The server exits 0 once the call ends (its client is killed).
TEST_F(CliServeTest, SigtermStopsHttpAcceptingWhileGrpcAnswersWhatIsInFlight) {
  const std::string config = SpinConfig(/*spins=*/1, /*cam=*/false);
  BatonProcess server("serve", {config, "--no-profile", "-q", "--grpc", "127.0.0.1:0"});
  ASSERT_TRUE(server.ok()) << server.banner();
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  const std::string running = "baton_device_running{device=\"local\"}";
  bool busy = false;
  bool refused = false;
  const testing::SignalledRun client = testing::ActWhenPrinted(
      {"run", config, "--server", "127.0.0.1:" + std::to_string(server.grpc_port()), "--duration", "600", "--warmup",
       "0"},
      "planning", [&](pid_t pid) {
        busy = WaitUntil([&] { return Metric(c, running) == 1; });
        if (busy) {
          server.Signal(SIGTERM);
          refused = WaitUntil(
              [&] {
                httplib::Client probe("127.0.0.1", server.port());
                probe.set_connection_timeout(2, 0);
                probe.set_read_timeout(2, 0);
                return !probe.Get("/v2/health/live");
              },
              std::chrono::seconds(15));
        }
        ::kill(pid, SIGKILL);
      });
  ASSERT_TRUE(client.signalled) << client.output;
  ASSERT_TRUE(busy) << "the client's request never reached the PU";
  EXPECT_TRUE(refused) << "HTTP still answered while gRPC waited for its call in flight";
  server.Stop();  // exit status 0, once the killed client's call is cancelled
}

// `data` compressed for Content-Encoding `encoding`: gzip, deflate (zlib's
// format, as HTTP defines it) or br.
static std::string Compress(const std::string& data, const std::string& encoding) {
  if (encoding == "br") {
    std::string out(BrotliEncoderMaxCompressedSize(data.size()), '\0');
    size_t size = out.size();
    EXPECT_TRUE(BrotliEncoderCompress(1, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_GENERIC, data.size(),
                                      reinterpret_cast<const uint8_t*>(data.data()), &size,
                                      reinterpret_cast<uint8_t*>(out.data())));
    out.resize(size);
    return out;
  }
  const bool gzip = encoding == "gzip";
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, gzip ? 31 : 15, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, data.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// The peak resident memory of process `pid` (VmHWM), in KiB; -1 when unreadable.
static long PeakRssKib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

// Bodies compressed as Triton's HTTP client sends them
// (request_compression_algorithm "gzip" or "deflate"), or with br, are
// inflated and served. --max-request-mb bounds the inflated body: 64 MiB that
// inflate from under 1 MiB are answered 413 without the server holding them. A body that
// is not what its Content-Encoding says is 400. Each refusal closes its
// connection; the next request is served.
TEST_F(CliServeTest, CompressedBodiesAreInflatedWithinTheBound) {
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--no-grpc", "--max-request-mb", "1"});
  ASSERT_TRUE(server.ok()) << server.banner();
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  const Sample s = MakeSample(3);
  ExpectOutputs(c.Post("/v2/models/cam/infer", s.body, "application/json"), s.want);
  const long peak_before = PeakRssKib(server.pid());
  for (const std::string encoding : {"gzip", "deflate", "br"}) {
    SCOPED_TRACE(encoding);
    const std::string body = Compress(s.body, encoding);
    ASSERT_LT(body.size(), s.body.size());
    ExpectOutputs(c.Post("/v2/models/cam/infer", httplib::Headers{{"Content-Encoding", encoding}}, body,
                         "application/json"),
                  s.want);

    const std::string bomb = Compress(std::string(size_t{64} << 20, ' '), encoding);
    ASSERT_LT(bomb.size(), size_t{1} << 20);
    auto big = c.Post("/v2/models/cam/infer", httplib::Headers{{"Content-Encoding", encoding}}, bomb,
                      "application/json");
    ASSERT_TRUE(big);
    EXPECT_EQ(big->status, 413);
    EXPECT_THAT(big->body, HasSubstr("request body too large once inflated (Content-Encoding); raise --max-request-mb"));
    EXPECT_EQ(big->get_header_value("Connection"), "close");

    auto corrupt = c.Post("/v2/models/cam/infer", httplib::Headers{{"Content-Encoding", encoding}},
                          std::string(4096, 'z'), "application/json");
    ASSERT_TRUE(corrupt);
    EXPECT_EQ(corrupt->status, 400);
    EXPECT_THAT(corrupt->body, HasSubstr("could not be read or inflated: it is not valid '" + encoding + "' data"));
    ExpectOutputs(c.Post("/v2/models/cam/infer", s.body, "application/json"), s.want);
  }
  // The binary tensor data extension compressed, as Triton's HTTP client
  // sends it with request_compression_algorithm: Inference-Header-Content-Length
  // counts the JSON of the inflated body.
  {
    json in = s.input;
    in["parameters"] = {{"binary_data_size", s.x.size() * sizeof(float)}};
    const std::string head = json({{"inputs", json::array({in})}}).dump();
    const std::string body =
        head + std::string(reinterpret_cast<const char*>(s.x.data()), s.x.size() * sizeof(float));
    ExpectOutputs(c.Post("/v2/models/cam/infer",
                         httplib::Headers{{"Content-Encoding", "gzip"},
                                          {"Inference-Header-Content-Length", std::to_string(head.size())}},
                         Compress(body, "gzip"), "application/octet-stream"),
                  s.want);
  }
  // Only a POST's body is inflated (every POST route reads its own, bounded);
  // any other request with a Content-Encoding is refused before its body.
  auto get = c.Get("/v2/models/cam", httplib::Headers{{"Content-Encoding", "gzip"}});
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 415);
  EXPECT_THAT(get->body, HasSubstr("Content-Encoding 'gzip' is not accepted on a GET: send the body uncompressed"));
  // The server never held an inflated 64 MiB: its peak resident memory grew
  // by far less over the three bombs.
  const long peak_after = PeakRssKib(server.pid());
  ASSERT_GT(peak_after, 0);
  EXPECT_LT(peak_after - peak_before, 32 * 1024) << "peak resident memory " << peak_before << " -> " << peak_after
                                                 << " KiB";
}

// `--exit-timeout-secs` (Triton's flag) bounds how long SIGTERM waits for
// what is in flight: here a gRPC call (from `baton run --server`) and a REST
// request, each of which would hold the one PU for minutes, are cancelled
// after 1 s and the server exits 0, long before the default 30 s grace.
TEST_F(CliServeTest, ExitTimeoutCancelsWhatIsStillInFlight) {
  const std::string config = SpinConfig(/*spins=*/1, /*cam=*/false);
  BatonProcess server("serve",
                      {config, "--no-profile", "-q", "--grpc", "127.0.0.1:0", "--exit-timeout-secs", "1"});
  ASSERT_TRUE(server.ok()) << server.banner();
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  const std::string running = "baton_device_running{device=\"local\"}";
  const std::string queued = "baton_device_queue_depth{device=\"local\"}";
  // The REST request, on a thread of its own: it waits for its answer.
  std::atomic<bool> rest_returned{false};
  std::thread rest = PostXInBackground(server.port(), "spin", [&](const httplib::Result& r) {
    rest_returned = true;
    EXPECT_FALSE(r && r->status == 200) << "the spin request was answered OK";
  });
  bool busy = false;
  const testing::SignalledRun client = testing::ActWhenPrinted(
      {"run", config, "--server", "127.0.0.1:" + std::to_string(server.grpc_port()), "--duration", "600", "--warmup",
       "0"},
      "planning", [&](pid_t pid) {
        busy = WaitUntil([&] { return Metric(c, running) == 1 && Metric(c, queued) == 1; });
        // SIGTERM, then exit status 0 within 20 s: the two requests are
        // cancelled after 1 s instead of waiting the default 30 s.
        if (busy) server.Stop(std::chrono::seconds(20));
        ::kill(pid, SIGKILL);
      });
  rest.join();
  ASSERT_TRUE(client.signalled) << client.output;
  ASSERT_TRUE(busy) << "the two requests never reached the PU and its queue";
  EXPECT_TRUE(rest_returned);
}

// A request whose run is inside one operator that takes tens of seconds
// cannot be stopped when it is cancelled (ONNX Runtime checks between
// operators): the server then exits 5 s past --exit-timeout-secs anyway,
// with status 1 and the reason, instead of waiting for the operator.
TEST_F(CliServeTest, ARunThatCannotBeStoppedDoesNotHoldTheExit) {
  absl::StatusOr<std::string> model = testing::OneLongOperatorModelBytes();
  ASSERT_TRUE(model.ok()) << model.status();
  std::ofstream(dir_ / "long.onnx", std::ios::binary) << *model;
  const std::string config = (dir_ / "long.yaml").string();
  std::ofstream(config) << "devices: [{name: local, pus: [{name: cpu0, kind: cpu}]}]\n"
                        << "models:\n  - {name: long, path: long.onnx, execution_timeout_ms: 600000}\n"
                        << "policy: {high_level: whole}\n";
  BatonProcess server("serve", {config, "--no-profile", "-q", "--no-grpc", "--exit-timeout-secs", "0"});
  ASSERT_TRUE(server.ok()) << server.banner();
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  std::thread rest = PostXInBackground(server.port(), "long", [](const httplib::Result& r) {
    EXPECT_FALSE(r && r->status == 200) << "the long request was answered OK";
  });
  ASSERT_TRUE(WaitUntil([&] { return Metric(c, "baton_device_running{device=\"local\"}") == 1; }));
  // Once the PU's worker has computed for 2 s, the run is inside the
  // multiplication (the expansion before it takes a fraction of that; a
  // cancel that came then would stop the run at once, between operators).
  // User time, not system time: under a sanitizer the page faults of the
  // expansion's allocation take seconds of the latter.
  const long ticks_per_s = ::sysconf(_SC_CLK_TCK);
  ASSERT_TRUE(WaitUntil([&] {
    return testing::ThreadStatField("pu:cpu0", testing::kStatUserTicks, std::to_string(server.pid())).value_or(0) >=
           2 * ticks_per_s;
  }));
  server.Signal(SIGTERM);
  std::string err;
  const int status = server.AwaitExit(std::chrono::seconds(30), &err);
  rest.join();
  ASSERT_TRUE(WIFEXITED(status)) << status << "\n" << err;
  EXPECT_EQ(WEXITSTATUS(status), 1) << err;
  EXPECT_THAT(err, HasSubstr("still stopping 5 s after the signal: a cancelled run has not ended")) << err;
}

// A remote device in the server's metrics: reachable, then lost once (and
// counted) when its agent is killed, and reachable again once the agent is
// back on its port.
TEST_F(CliServeTest, MetricsSayWhenARemoteDeviceIsLostAndBack) {
  testing::AgentProcess agent({"--name", "edge1", "--config", std::string(BATON_SOURCE_DIR) + "/tests/data/agent_1cpu.yaml"});
  ASSERT_TRUE(agent.ok()) << agent.banner();
  const std::string config = (dir_ / "remote.yaml").string();
  std::ofstream(config) << "devices:\n  - {name: local, pus: [{name: cpu0, kind: cpu, threads: 1}]}\n"
                        << "  - {name: edge1, address: '" << agent.address() << "'}\n"
                        << "models:\n  - {name: cam, path: " << Zoo("squeezenet") << "}\n"
                        << "policy: {high_level: whole}\n";
  BatonProcess server("serve", {config, "-q", "--no-grpc"});
  ASSERT_TRUE(server.ok()) << server.banner();
  httplib::Client c("127.0.0.1", server.port());
  const std::string reachable = "baton_device_reachable{device=\"edge1\"}";
  const std::string lost = "baton_device_lost_total{device=\"edge1\"}";
  EXPECT_EQ(Metric(c, reachable), 1);
  EXPECT_EQ(Metric(c, lost), 0);
  EXPECT_EQ(Metric(c, "baton_device_lost_total{device=\"local\"}"), 0);
  agent.Kill(SIGKILL);
  EXPECT_TRUE(WaitUntil([&] { return Metric(c, reachable) == 0; })) << server.Stderr();
  EXPECT_EQ(Metric(c, lost), 1);
  agent.Restart();
  ASSERT_TRUE(agent.ok()) << agent.banner();
  EXPECT_TRUE(WaitUntil([&] { return Metric(c, reachable) == 1; })) << server.Stderr();
  EXPECT_EQ(Metric(c, lost), 1);
}

// SIGTERM while the server starts (here: profiling the default models into a
// fresh cache) ends the start-up within one measurement and exits 0 without
// serving.
TEST_F(CliServeTest, ASignalWhileStartingStopsTheStartUp) {
  const testing::SignalledRun r = testing::SignalWhenPrinted(
      {"serve", "--cache-dir", (dir_ / "start_cache").string(), "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"},
      "profiling into", SIGTERM);
  const std::string& printed = r.output;
  ASSERT_TRUE(r.signalled) << printed;
  EXPECT_EQ(r.exit_code, 0) << printed;
  EXPECT_THAT(printed, HasSubstr("baton serve: SIGTERM: stopping the start-up at its next step"));
  EXPECT_THAT(printed, HasSubstr("baton serve: stopped while starting, before serving anything: profiling into " +
                                 (dir_ / "start_cache" / "profiles").string()));
  EXPECT_THAT(printed, HasSubstr("stopped: interrupted after"));
  EXPECT_THAT(printed, Not(HasSubstr("listening on")));
}

// A second SIGTERM while the server waits for what is in flight exits at
// once, with 128 + the signal, as `baton run` does.
TEST_F(CliServeTest, ASecondSignalExitsAtOnce) {
  const std::string config = SpinConfig(/*spins=*/1, /*cam=*/false);
  BatonProcess server("serve", {config, "--no-profile", "-q", "--no-grpc"});
  ASSERT_TRUE(server.ok()) << server.banner();
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  std::thread rest = PostXInBackground(server.port(), "spin", [](const httplib::Result& r) {
    EXPECT_FALSE(r) << "the spin request was answered: " << r->status;
  });
  ASSERT_TRUE(WaitUntil([&] { return Metric(c, "baton_device_running{device=\"local\"}") == 1; }));
  server.Signal(SIGTERM);
  // Once the first signal's line is out, the second one is counted as such.
  const bool stopping = WaitUntil([&] { return server.Stderr().find("again to stop at once") != std::string::npos; });
  EXPECT_TRUE(stopping) << server.Stderr();
  server.Signal(SIGTERM);
  std::string err;
  const int status = server.AwaitExit(std::chrono::seconds(20), &err);
  rest.join();
  ASSERT_TRUE(WIFEXITED(status)) << status << "\n" << err;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM) << err;
  EXPECT_THAT(err, HasSubstr("SIGTERM: no new connections; answering what is in flight (for up to 30 s"));
  EXPECT_THAT(err, HasSubstr("second signal: stopping now, leaving what is in flight unanswered"));
}

// What is still in flight a while after a measured window does not hold the
// run: `baton run --server` cancels it (the server cancels its requests) and
// counts it as abandoned, as the in-process run does, instead of waiting for
// each call's deadline plus a minute of slack.
TEST_F(CliServeTest, ARunGivesUpOnWhatIsStillInFlightAfterItsWindow) {
  const std::string config = SpinConfig();
  BatonProcess server("serve", {config, "--no-profile", "-q", "--grpc", "127.0.0.1:0"});
  ASSERT_TRUE(server.ok()) << server.banner();
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  int runs = 0;
  for (const std::string mode : {"", " --streaming"}) {
    SCOPED_TRACE(mode);
    const std::string report = (dir_ / "abandoned.json").string();
    testing::CliResult run = testing::Baton("run " + config + " --server 127.0.0.1:" +
                                            std::to_string(server.grpc_port()) + mode +
                                            " --duration 1 --slices 1 --warmup 0 --quiet --json " + report);
    EXPECT_EQ(run.exit_code, 0) << run.output;
    std::ifstream in(report);
    const json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << run.output;
    // The spin request, and the cam request queued behind it on the one PU.
    EXPECT_EQ(j["abandoned"], 2) << run.output;
    if (mode.empty()) {
      EXPECT_TRUE(j["server_stream_calls"].is_null());
      EXPECT_TRUE(j["server_unary_calls"].is_null());
    } else {
      EXPECT_EQ(j["server_stream_calls"], 2) << "both went on the stream";
      EXPECT_EQ(j["server_unary_calls"], 0);
    }
    ++runs;
    EXPECT_TRUE(WaitUntil([&] { return Metric(c, Requests("spin", "cancelled")) == runs; }));
    EXPECT_TRUE(WaitUntil([&] { return Metric(c, "baton_device_running{device=\"local\"}") == 0; }));
    EXPECT_EQ(Metric(c, Requests("spin", "success")), 0);
  }
}

// The sockets process `pid` holds.
static int SocketsOf(pid_t pid) {
  int n = 0;
  std::error_code ec;
  for (const auto& fd : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::error_code link_ec;
    if (std::filesystem::read_symlink(fd.path(), link_ec).string().rfind("socket:", 0) == 0) ++n;
  }
  return n;
}

// Connections beyond the REST workers and the 64 that may wait for one are
// not accepted: they stay in the kernel's listen backlog instead of each
// holding a descriptor in the server. Once they close, the server answers.
// The first 66 (one with the worker, 64 waiting, one in the accepting
// thread's hand) are opened one at a time, each once the last is accepted:
// opened at once, they can overflow the listen backlog, and the kernel
// retries their handshakes only seconds later. The first sends half a
// request, so the one worker waits for the rest (--timeout-s 600) instead of
// closing an idle connection after httplib's 5 s keep-alive wait.
TEST_F(CliServeTest, RestConnectionsBeyondTheWaitingBoundAreLeftToTheKernel) {
  BatonProcess server("serve",
                      {Config(), "--no-profile", "-q", "--no-grpc", "--threads", "1", "--timeout-s", "600"});
  ASSERT_TRUE(server.ok()) << server.banner();
  const int before = SocketsOf(server.pid());
  ASSERT_GT(before, 0);
  std::vector<int> idle;  // connections that send nothing after the first's half request
  auto open = [&] {
    const bool first = idle.empty();
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (first ? 0 : SOCK_NONBLOCK), 0);
    if (fd < 0) return false;
    idle.push_back(fd);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(server.port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const int rc = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    if (first) {
      const std::string half = "GET /v2/health/live HTTP/1.1\r\nHost: baton\r\n";
      return rc == 0 && ::send(fd, half.data(), half.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(half.size());
    }
    return rc == 0 || errno == EINPROGRESS;
  };
  constexpr int kAccepted = 66;
  for (int i = 1; i <= kAccepted; ++i) {
    ASSERT_TRUE(open()) << std::strerror(errno);
    ASSERT_TRUE(WaitUntil([&] { return SocketsOf(server.pid()) >= before + i; }))
        << "connection " << i << " was not accepted; " << SocketsOf(server.pid()) - before << " were";
  }
  for (int i = 0; i < 84; ++i) ASSERT_TRUE(open()) << std::strerror(errno);
  EXPECT_FALSE(WaitUntil([&] { return SocketsOf(server.pid()) > before + kAccepted; }, std::chrono::seconds(2)))
      << SocketsOf(server.pid()) - before << " of 150 idle connections accepted; at most " << kAccepted
      << " should be";
  for (int fd : idle) ::close(fd);
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  EXPECT_TRUE(WaitUntil([&] {
    auto live = c.Get("/v2/health/live");
    return live && live->status == 200;
  }));
}

// Sends `body` as a POST to `path` on a connection of its own and returns the
// connection's descriptor without reading the answer (-1 on failure).
static int PostAndHold(int port, const std::string& path, const std::string& body) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const std::string request = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                              "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  bool sent = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  for (size_t at = 0; sent && at < request.size();) {
    const ssize_t n = send(fd, request.data() + at, request.size() - at, MSG_NOSIGNAL);
    sent = n > 0;
    at += sent ? static_cast<size_t>(n) : 0;
  }
  if (!sent) {
    close(fd);
    return -1;
  }
  return fd;
}

// A REST client that gives up (closes its connection) while its request
// waits or runs cancels it: the waiting one never runs, the running one is
// stopped, and the PU serves the next request. (Before, both stayed: the
// spin request would have held the PU for ten minutes.) The waiting one is
// let go first: were the running one stopped first, the other could start.
TEST_F(CliServeTest, ARestClientThatHangsUpCancelsItsRequest) {
  const std::string config = SpinConfig();
  BatonProcess server("serve", {config, "--no-profile", "-q", "--no-grpc"});
  ASSERT_TRUE(server.ok()) << server.banner();
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  const std::string running = "baton_device_running{device=\"local\"}";
  const std::string queued = "baton_device_queue_depth{device=\"local\"}";
  const int spin = PostAndHold(server.port(), "/v2/models/spin/infer",
                               R"({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]})");
  ASSERT_GE(spin, 0);
  ASSERT_TRUE(WaitUntil([&] { return Metric(c, running) == 1; }));
  const Sample s = MakeSample(8);
  const int cam = PostAndHold(server.port(), "/v2/models/cam/infer", s.body);
  ASSERT_GE(cam, 0);
  ASSERT_TRUE(WaitUntil([&] { return Metric(c, queued) == 1; }));
  close(cam);
  EXPECT_TRUE(WaitUntil([&] { return Metric(c, Requests("cam", "cancelled")) == 1; }));
  close(spin);
  EXPECT_TRUE(WaitUntil([&] { return Metric(c, Requests("spin", "cancelled")) == 1 && Metric(c, running) == 0; }));
  EXPECT_EQ(Metric(c, queued), 0);
  EXPECT_EQ(Metric(c, Requests("cam", "success")), 0) << "the cancelled request never ran";
  ExpectOutputs(c.Post("/v2/models/cam/infer", s.body, "application/json"), s.want);
}

// A TLS client that closes cleanly while its request runs (a close_notify
// record, then its FIN: what `openssl s_client` sends at the end of its
// input) cancels the request, as a plain client that closes does. (Before,
// the record waiting unread made the server take the client as there, and
// the spin request held the PU for ten minutes.)
TEST_F(CliServeTest, ATlsClientThatClosesCleanlyCancelsItsRequest) {
  ASSERT_TRUE(testing::MakeTestCertificates(dir_)) << "openssl could not make the test certificates";
  const auto file = [&](const std::string& name) { return (dir_ / name).string(); };
  BatonProcess server("serve", {SpinConfig(), "--no-profile", "-q", "--no-grpc", "--tls-cert", file("server.pem"),
                                "--tls-key", file("server.key")});
  ASSERT_TRUE(server.ok()) << server.banner();
  httplib::Client c("https://127.0.0.1:" + std::to_string(server.port()));
  c.set_ca_cert_path(file("ca.pem"));
  c.enable_server_certificate_verification(true);
  c.set_read_timeout(60, 0);
  const std::string running = "baton_device_running{device=\"local\"}";
  ASSERT_EQ(Metric(c, running), 0) << "metrics over HTTPS";
  const std::string body = R"({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]})";
  const std::string request = "POST /v2/models/spin/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Content-Type: application/json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  // Bounded: were the request never cancelled, s_client would still end.
  const std::string command = "timeout 60 openssl s_client -connect 127.0.0.1:" + std::to_string(server.port()) +
                              " -CAfile " + file("ca.pem") + " -no_ign_eof >" + file("s_client.out") + " 2>&1";
  FILE* client = popen(command.c_str(), "w");
  ASSERT_NE(client, nullptr);
  ASSERT_EQ(std::fwrite(request.data(), 1, request.size(), client), request.size());
  std::fflush(client);
  const bool ran = WaitUntil([&] { return Metric(c, running) == 1; });
  const int status = pclose(client);  // end of input: close_notify, then FIN
  ASSERT_TRUE(ran) << "the spin request never ran";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "openssl s_client: " << status;
  EXPECT_TRUE(WaitUntil([&] { return Metric(c, Requests("spin", "cancelled")) == 1 && Metric(c, running) == 0; }));
  EXPECT_EQ(Metric(c, Requests("spin", "success")), 0);
  const Sample s = MakeSample(9);
  ExpectOutputs(c.Post("/v2/models/cam/infer", s.body, "application/json"), s.want);
}

TEST_F(CliServeTest, TraceIsWrittenAtExit) {
  // `baton serve --trace FILE`: the PU runs of the requests served, as a
  // Chrome/Perfetto trace written when the server stops; a file that cannot
  // be written is a start-up error (exit 2), not a trace lost at the end.
  const Sample s = MakeSample(6);
  // Serves three requests with `extra` options, stops, and counts the runs of `cam` in the trace.
  auto runs_traced = [&](const std::string& path, std::vector<std::string> extra) -> size_t {
    std::vector<std::string> args = {Config(), "--no-profile", "-q", "--no-grpc", "--trace", path};
    args.insert(args.end(), extra.begin(), extra.end());
    {
      BatonProcess server("serve", args);
      EXPECT_TRUE(server.ok()) << server.banner();
      if (!server.ok()) return 0;
      httplib::Client c("127.0.0.1", server.port());
      c.set_read_timeout(60, 0);
      for (int i = 0; i < 3; ++i) {
        auto r = c.Post("/v2/models/cam/infer", s.body, "application/json");
        EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
      }
      server.Stop();  // exit status 0
    }
    std::ifstream in(path);
    EXPECT_TRUE(in) << path;
    if (!in) return 0;
    const json trace = json::parse(in);
    size_t runs = 0;
    for (const json& e : trace["traceEvents"]) {
      if (e["ph"] == "X" && e["args"]["model"] == "cam") ++runs;
    }
    return runs;
  };
  EXPECT_GE(runs_traced((dir_ / "serve.trace.json").string(), {}), 3u);  // each request at least one run
  // Memory is bounded: the first two events (an arrival and an enqueue) hold no run.
  EXPECT_EQ(runs_traced((dir_ / "serve_short.trace.json").string(), {"--trace-max-events", "2"}), 0u);

  testing::CliResult bad = testing::Baton("serve " + Config() + " --no-profile -q --trace " +
                                          (dir_ / "no_such_folder" / "t.json").string());
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_THAT(bad.output, HasSubstr("--trace: cannot write"));
}

TEST_F(CliServeTest, ManyClientsWithPrioritiesAndAFullQueueIsAnsweredAtOnce) {
  // max_in_flight 2: with 6 clients at once some requests find the model full.
  BatonProcess server("serve", {Config("max_in_flight: 2"), "--no-profile", "-q", "--threads", "8"});
  ASSERT_TRUE(server.ok()) << server.banner();
  const Sample s = MakeSample(2);
  std::atomic<int> ok{0}, full{0}, other{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 6; ++t) {
    clients.emplace_back([&, t] {
      httplib::Client c("127.0.0.1", server.port());
      c.set_read_timeout(60, 0);
      json body = json::parse(s.body);
      body["parameters"] = {{"priority", t % 2}};
      for (int i = 0; i < 5; ++i) {
        auto r = c.Post("/v2/models/cam/infer", body.dump(), "application/json");
        if (r && r->status == 200) {
          ++ok;
        } else if (r && r->status == 429) {
          ++full;
          EXPECT_THAT(r->body, HasSubstr("error"));
        } else {
          ++other;
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(ok + full, 30);
  EXPECT_EQ(other, 0);
  EXPECT_GT(ok, 0);
}

TEST_F(CliServeTest, TokenAndStartUpErrors) {
  const std::string token = (dir_ / "token").string();
  std::ofstream(token) << "s3cret\n";
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--token-file", token});
  ASSERT_TRUE(server.ok()) << server.banner();
  httplib::Client c("127.0.0.1", server.port());
  EXPECT_EQ(c.Get("/v2/health/live")->status, 200) << "health stays open on loopback";
  EXPECT_EQ(c.Get("/v2/models/cam")->status, 401);
  httplib::Headers wrong = {{"Authorization", "Bearer nope"}};
  EXPECT_EQ(c.Get("/v2/models/cam", wrong)->status, 401);
  httplib::Headers right = {{"Authorization", "Bearer s3cret"}};
  EXPECT_EQ(c.Get("/v2/models/cam", right)->status, 200);

  testing::CliResult open = testing::Baton("serve " + Config() + " --no-profile -q --http 0.0.0.0:0");
  EXPECT_EQ(open.exit_code, 2) << open.output;
  EXPECT_THAT(open.output, HasSubstr("without TLS and a token"));
  testing::CliResult port = testing::Baton("serve " + Config() + " --http 127.0.0.1:99999");
  EXPECT_EQ(port.exit_code, 2);
  EXPECT_THAT(port.output, HasSubstr("0..65535"));
}

// --model-control-mode explicit: the config's models are loaded and unloaded
// while the server serves (each change plans the PUs for the models then
// loaded), requests for a loaded model are answered through every change,
// and a model that is not loaded is refused by name.
TEST_F(CliServeTest, ExplicitModelControlLoadsAndUnloadsModelsWhileServing) {
  const std::string config = (dir_ / "explicit.yaml").string();
  std::ofstream(config) << "devices: [{name: local, pus: [{name: cpu0, kind: cpu}]}]\n"
                        << "models:\n  - {name: cam, path: " << Zoo("squeezenet") << "}\n"
                        << "  - {name: det, path: " << Zoo("mobilenetv2") << "}\n"
                        << "policy: {high_level: whole}\n";
  BatonProcess server("serve", {config, "--no-profile", "--model-control-mode", "explicit", "--load-model", "cam"});
  ASSERT_TRUE(server.ok()) << server.banner();
  EXPECT_THAT(server.banner(), HasSubstr("(models: cam)"));
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(120, 0);
  auto index = [&] { return json::parse(c.Post("/v2/repository/index", "", "application/json")->body); };
  EXPECT_EQ(index(), json::parse(R"([{"name": "cam", "version": "1", "state": "READY", "reason": ""},
                                     {"name": "det", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}])"));
  EXPECT_EQ(json::parse(c.Post("/v2/repository/index", R"({"ready": true})", "application/json")->body),
            json::parse(R"([{"name": "cam", "version": "1", "state": "READY", "reason": ""}])"));
  EXPECT_EQ(json::parse(c.Get("/v2/models/det/ready")->body)["ready"], false);
  auto meta = c.Get("/v2/models/det");
  EXPECT_EQ(meta->status, 400);
  EXPECT_THAT(meta->body, HasSubstr("model 'det' is not loaded; load it first"));
  const Sample s = MakeSample(3);
  ExpectOutputs(c.Post("/v2/models/cam/infer", s.body, "application/json"), s.want);
  auto refused = c.Post("/v2/models/det/infer", s.body, "application/json");
  EXPECT_EQ(refused->status, 400);
  EXPECT_THAT(refused->body, HasSubstr("model 'det' is not loaded"));

  // Loading det while another client keeps sending cam requests: every one
  // of those is answered, with the right outputs.
  std::atomic<bool> loading{true};
  std::atomic<int> answered{0};
  std::thread client([&] {
    httplib::Client other("127.0.0.1", server.port());
    other.set_read_timeout(120, 0);
    while (loading || answered < 3) {
      ExpectOutputs(other.Post("/v2/models/cam/infer", s.body, "application/json"), s.want);
      ++answered;
    }
  });
  auto load = c.Post("/v2/repository/models/det/load", "", "application/json");
  loading = false;
  client.join();
  ASSERT_EQ(load->status, 200) << load->body;
  EXPECT_EQ(json::parse(c.Get("/v2/models/det/ready")->body)["ready"], true);
  const json det = json::parse(c.Get("/v2/models/det")->body);
  const std::vector<int64_t> shape = det["inputs"][0]["shape"].get<std::vector<int64_t>>();
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const json det_body = {{"inputs", json::array({{{"name", det["inputs"][0]["name"]}, {"datatype", "FP32"},
                                                  {"shape", shape}, {"data", std::vector<float>(n, 0.5f)}}})}};
  EXPECT_EQ(c.Post("/v2/models/det/infer", det_body.dump(), "application/json")->status, 200);
  ExpectOutputs(c.Post("/v2/models/cam/infer", s.body, "application/json"), s.want);
  // The counts add up over the change: cam's requests on both engines.
  const int cam_answered = 2 + answered;
  EXPECT_EQ(json::parse(c.Get("/v2/models/cam/stats")->body)["model_stats"][0]["inference_count"], cam_answered);
  EXPECT_EQ(Metric(c, Requests("cam", "success")), cam_answered);

  // Unloading cam: refused by name from then on; det goes on.
  EXPECT_EQ(c.Post("/v2/repository/models/cam/unload", "", "application/json")->status, 200);
  EXPECT_EQ(index()[0]["state"], "UNAVAILABLE");
  EXPECT_EQ(c.Post("/v2/models/cam/infer", s.body, "application/json")->status, 400);
  EXPECT_EQ(c.Post("/v2/models/det/infer", det_body.dump(), "application/json")->status, 200);
  EXPECT_EQ(Metric(c, Requests("cam", "success")), cam_answered);  // kept while unloaded
  auto unknown = c.Post("/v2/repository/models/nope/load", "", "application/json");
  EXPECT_EQ(unknown->status, 501);
  EXPECT_THAT(unknown->body, HasSubstr("cannot load model 'nope': baton serve loads the models of its config only"));
  EXPECT_EQ(c.Post("/v2/repository/models/nope/unload", "", "application/json")->status, 400);
  const std::string printed = server.Stderr();
  EXPECT_THAT(printed, HasSubstr("baton serve: serving [cam, det]"));
  EXPECT_THAT(printed, HasSubstr("baton serve: serving [det]"));

  // What does not go with it is refused at start.
  for (const auto& [args, says] : std::vector<std::pair<std::string, std::string>>{
           {" --load-model cam", "--load-model applies with --model-control-mode explicit only"},
           {" --model-control-mode explicit --load-model nope", "--load-model 'nope': the config has no such model"},
           {" --model-control-mode explicit --plan plan.json", "--plan (a plan of a fixed set of models)"},
           {" --model-control-mode sometimes", "--model-control-mode"}}) {
    testing::CliResult r = testing::Baton("serve " + config + " --no-profile -q --grpc 127.0.0.1:0 --http 127.0.0.1:0" + args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.output;
    EXPECT_THAT(r.output, HasSubstr(says)) << args;
  }
}

// With TLS and a token, `baton serve` may listen on every address: HTTPS and
// gRPC over TLS, the token checked on both (health too: it is open only on a
// server that listens on loopback), outputs equal to whole-model ONNX
// Runtime, and a client that does not trust the server's certificate, speaks
// plain HTTP or lacks the token refused.
TEST_F(CliServeTest, ServesHttpsAndGrpcOverTlsWithAToken) {
  ASSERT_TRUE(testing::MakeTestCertificates(dir_)) << "openssl could not make the test certificates";
  // An HTTPS client writes through OpenSSL, which does not spare its process
  // SIGPIPE when the server has closed the connection (as after a 401). The
  // server ignores SIGPIPE; this client process must too.
  std::signal(SIGPIPE, SIG_IGN);
  const auto file = [&](const std::string& name) { return (dir_ / name).string(); };
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--http", "0.0.0.0:0", "--grpc", "0.0.0.0:0",
                                "--tls-cert", file("server.pem"), "--tls-key", file("server.key"), "--token-file",
                                file("good.token")});
  ASSERT_TRUE(server.ok()) << server.banner();
  const std::string https = "https://127.0.0.1:" + std::to_string(server.port());
  httplib::Client c(https);
  c.set_ca_cert_path(file("ca.pem"));
  c.enable_server_certificate_verification(true);
  c.set_read_timeout(60, 0);
  auto live = c.Get("/v2/health/live");
  ASSERT_TRUE(live) << "no HTTPS answer: " << httplib::to_string(live.error());
  // Health is open only on a server that listens on loopback; this one does not.
  EXPECT_EQ(live->status, 401);
  EXPECT_EQ(c.Get("/v2/models/cam")->status, 401);
  const httplib::Headers token = {{"Authorization", "Bearer s3cret-token"}};
  EXPECT_EQ(c.Get("/v2/health/live", token)->status, 200);
  EXPECT_EQ(c.Get("/v2/models/cam", token)->status, 200);
  const Sample s = MakeSample(4);
  // A small body: the server refuses before it reads one, so a large one may meet a closed connection.
  auto refused = c.Post("/v2/models/cam/infer", "{}", "application/json");
  ASSERT_TRUE(refused) << httplib::to_string(refused.error());
  EXPECT_EQ(refused->status, 401);
  ExpectOutputs(c.Post("/v2/models/cam/infer", token, s.body, "application/json"), s.want);

  httplib::Client untrusting(https);  // the system's CAs, which did not sign the server's certificate
  untrusting.enable_server_certificate_verification(true);
  EXPECT_FALSE(untrusting.Get("/v2/health/live")) << "an untrusted certificate must fail the handshake";
  httplib::Client plain("127.0.0.1", server.port());
  plain.set_read_timeout(10, 0);
  auto cleartext = plain.Get("/v2/health/live");
  EXPECT_TRUE(!cleartext || cleartext->status != 200) << "plain HTTP on the HTTPS port";

  // gRPC over TLS: `baton run --server` with the CA and the token; its
  // outputs are checked against whole-model ONNX Runtime (--verify).
  const std::string grpc = " --server 127.0.0.1:" + std::to_string(server.grpc_port());
  const std::string report = file("tls_run.json");
  testing::CliResult run = testing::Baton("run " + Config() + grpc + " --tls-ca " + file("ca.pem") + " --token-file " +
                                          file("good.token") + " --duration 1 --warmup 0.2 --slices 1 --verify" +
                                          " --quiet --json " + report);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const json j = ReadJson(report);
  ASSERT_TRUE(j["verify"].is_object()) << j.dump();
  EXPECT_GT(j["verify"]["checked"].get<int>(), 0) << j.dump();
  EXPECT_EQ(j["verify"]["mismatches"], 0) << j.dump();
  testing::CliResult no_ca = testing::Baton("run " + Config() + grpc + " --token-file " + file("good.token") +
                                            " --duration 1 --quiet");
  EXPECT_NE(no_ca.exit_code, 0) << "a plaintext client against the TLS port: " << no_ca.output;
  EXPECT_THAT(no_ca.output, HasSubstr("give --tls-ca")) << "the refusal says what to add";
  testing::CliResult bad_token = testing::Baton("run " + Config() + grpc + " --tls-ca " + file("ca.pem") +
                                                " --token-file " + file("bad.token") + " --duration 1 --quiet");
  EXPECT_NE(bad_token.exit_code, 0) << bad_token.output;
  EXPECT_THAT(bad_token.output, HasSubstr("token")) << "the refusal names the token";
}

// The setup most edge boxes use: one self-signed certificate, given to the
// clients as their CA (`--tls-ca`, curl's `--cacert`), as docs/serve.md says.
TEST_F(CliServeTest, ASelfSignedCertificateServesAsItsOwnCa) {
  ASSERT_TRUE(testing::MakeSelfSignedCertificate(dir_)) << "openssl could not make the certificate";
  std::signal(SIGPIPE, SIG_IGN);  // an HTTPS client (see above)
  const auto file = [&](const std::string& name) { return (dir_ / name).string(); };
  std::ofstream(file("token")) << "s3cret-token\n";
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0",
                                "--tls-cert", file("self.pem"), "--tls-key", file("self.key"), "--token-file",
                                file("token")});
  ASSERT_TRUE(server.ok()) << server.banner();
  httplib::Client c("https://127.0.0.1:" + std::to_string(server.port()));
  c.set_ca_cert_path(file("self.pem"));
  c.enable_server_certificate_verification(true);
  c.set_read_timeout(60, 0);
  auto live = c.Get("/v2/health/live");
  ASSERT_TRUE(live) << "no HTTPS answer: " << httplib::to_string(live.error());
  EXPECT_EQ(live->status, 200);  // open on loopback
  const Sample s = MakeSample(5);
  ExpectOutputs(c.Post("/v2/models/cam/infer", {{"Authorization", "Bearer s3cret-token"}}, s.body, "application/json"),
                s.want);
  const std::string report = file("self_run.json");
  testing::CliResult run = testing::Baton("run " + Config() + " --server 127.0.0.1:" +
                                          std::to_string(server.grpc_port()) + " --tls-ca " + file("self.pem") +
                                          " --token-file " + file("token") +
                                          " --duration 0.5 --warmup 0.1 --slices 1 --verify --quiet --json " + report);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const json j = ReadJson(report);
  EXPECT_GT(j["verify"]["checked"].get<int>(), 0) << j.dump();
  EXPECT_EQ(j["verify"]["mismatches"], 0) << j.dump();
}

}  // namespace
}  // namespace baton
