// `baton serve` as a real process on loopback, reached over gRPC with a
// client generated from the KServe v2 protocol file (proto/inference/):
// health, metadata, ModelInfer (raw and typed contents) equal to whole-model
// ONNX Runtime, every kind of bad request answered INVALID_ARGUMENT without
// affecting other calls, ModelStreamInfer, ModelStatistics, two client
// processes with different priorities, overload answered RESOURCE_EXHAUSTED,
// the token, and SIGTERM while a stream has requests in flight.
// GCC 12 at -O3 warns about a memcpy bound inside protobuf's inlined string
// setters that cannot happen (known false positives of -Wstringop-overflow and -Wrestrict).
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#pragma GCC diagnostic ignored "-Wrestrict"
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <functional>
#include <set>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "agent_test_util.h"
#include "baton/backend/ort/ort_runner.h"
#include "baton/core/file.h"
#include "baton/core/version.h"
#include "baton/graph/model.h"
#include "baton/verify/verify.h"
#include "cli_test_util.h"
#include "serve_test_util.h"
#include "test_certs.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "inference/grpc_service.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace baton {
namespace {

namespace fs = std::filesystem;
using inference::GRPCInferenceService;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using ::testing::HasSubstr;
using testing::BatonProcess;

std::unique_ptr<GRPCInferenceService::Stub> Connect(int port) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return GRPCInferenceService::NewStub(grpc::CreateCustomChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials(), args));
}

void Prepare(grpc::ClientContext& ctx, const std::string& token = "") {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
}

class CliServeGrpcTest : public baton::testing::ZooDirTest<CliServeGrpcTest> {
 public:
  static constexpr const char* kDir = "baton_cli_serve_grpc_test_";

 protected:
  std::string Config(const std::string& extra_run = "") {
    return testing::WriteServeConfig(dir_, Zoo("squeezenet"), extra_run);
  }

  // A raw request for the model's sample `seed`, and whole-model ORT's outputs for it.
  struct Sample {
    ModelInferRequest request;
    std::vector<float> input;
    std::vector<float> want;
  };
  Sample MakeSample(uint64_t seed, const std::string& id = "") {
    auto model = graph::Model::LoadFile(Zoo("squeezenet"));
    EXPECT_TRUE(model.ok()) << model.status();
    auto inputs = verify::RandomInputs(**model, seed);
    EXPECT_TRUE(inputs.ok());
    const Tensor& x = (*inputs)[0].second;
    Sample s;
    s.request.set_model_name("cam");
    s.request.set_id(id);
    ModelInferRequest::InferInputTensor* in = s.request.add_inputs();
    in->set_name((*inputs)[0].first);
    in->set_datatype("FP32");
    for (int64_t d : x.shape()) in->add_shape(d);
    s.input.assign(x.data<float>().begin(), x.data<float>().end());
    s.request.add_raw_input_contents(std::string(reinterpret_cast<const char*>(s.input.data()), x.byte_size()));
    auto runner = ort::OrtRunner::Create((*model)->SerializeToString(), {}, "whole");
    EXPECT_TRUE(runner.ok());
    std::vector<std::pair<std::string, const Tensor*>> feeds = {{(*inputs)[0].first, &x}};
    auto outs = (*runner)->Run(feeds);
    EXPECT_TRUE(outs.ok());
    s.want.assign((*outs)[0].data<float>().begin(), (*outs)[0].data<float>().end());
    return s;
  }

  // The name of `cam`'s output, from ModelMetadata ("" when the call fails).
  static std::string OutputName(GRPCInferenceService::Stub& stub) {
    grpc::ClientContext ctx;
    Prepare(ctx);
    inference::ModelMetadataRequest req;
    req.set_name("cam");
    inference::ModelMetadataResponse meta;
    if (!stub.ModelMetadata(&ctx, req, &meta).ok() || meta.outputs_size() == 0) return "";
    return meta.outputs(0).name();
  }

  // ModelStatistics of `cam` (one entry) into `stats`.
  static void CamStatistics(GRPCInferenceService::Stub& stub, inference::ModelStatisticsResponse& stats) {
    grpc::ClientContext ctx;
    Prepare(ctx);
    inference::ModelStatisticsRequest req;
    req.set_name("cam");
    ASSERT_TRUE(stub.ModelStatistics(&ctx, req, &stats).ok());
    ASSERT_EQ(stats.model_stats_size(), 1);
  }

  static void ExpectOutputs(const ModelInferResponse& r, const std::vector<float>& want) {
    ASSERT_EQ(r.outputs_size(), 1);
    ASSERT_EQ(r.raw_output_contents_size(), 1);
    EXPECT_EQ(r.outputs(0).datatype(), "FP32");
    const std::string& raw = r.raw_output_contents(0);
    ASSERT_EQ(raw.size(), want.size() * sizeof(float));
    std::vector<float> got(want.size());
    std::memcpy(got.data(), raw.data(), raw.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4) << i;
  }
};

TEST_F(CliServeGrpcTest, ServesKServeV2Grpc) {
  BatonProcess server("serve", {Config(), "--no-profile", "-q"});
  ASSERT_TRUE(server.ok()) << server.banner();
  ASSERT_GT(server.grpc_port(), 0) << server.banner();
  auto stub = Connect(server.grpc_port());

  {
    grpc::ClientContext ctx;
    Prepare(ctx);
    inference::ServerLiveResponse live;
    ASSERT_TRUE(stub->ServerLive(&ctx, {}, &live).ok());
    EXPECT_TRUE(live.live());
  }
  {
    grpc::ClientContext ctx;
    Prepare(ctx);
    inference::ServerReadyResponse ready;
    ASSERT_TRUE(stub->ServerReady(&ctx, {}, &ready).ok());
    EXPECT_TRUE(ready.ready());
  }
  {
    grpc::ClientContext ctx;
    Prepare(ctx);
    inference::ServerMetadataResponse meta;
    ASSERT_TRUE(stub->ServerMetadata(&ctx, {}, &meta).ok());
    EXPECT_EQ(meta.name(), "baton");
    EXPECT_EQ(meta.version(), baton::kVersion);
  }
  {
    grpc::ClientContext ctx;
    Prepare(ctx);
    inference::ModelMetadataRequest req;
    req.set_name("cam");
    inference::ModelMetadataResponse meta;
    ASSERT_TRUE(stub->ModelMetadata(&ctx, req, &meta).ok());
    ASSERT_EQ(meta.inputs_size(), 1);
    EXPECT_EQ(meta.inputs(0).datatype(), "FP32");
    EXPECT_THAT(std::vector<int64_t>(meta.inputs(0).shape().begin(), meta.inputs(0).shape().end()),
                ::testing::ElementsAre(1, 3, 64, 64));
  }
  {
    // The model configuration, as Triton's clients read it (perf_analyzer,
    // get_model_config); the enum's numbers are those of model_config.proto.
    grpc::ClientContext ctx;
    Prepare(ctx);
    inference::ModelConfigRequest req;
    req.set_name("cam");
    inference::ModelConfigResponse resp;
    ASSERT_TRUE(stub->ModelConfig(&ctx, req, &resp).ok());
    const inference::ModelConfig& c = resp.config();
    EXPECT_EQ(c.name(), "cam");
    EXPECT_EQ(c.platform(), "onnxruntime_onnx");
    EXPECT_EQ(c.max_batch_size(), 0);
    ASSERT_EQ(c.input_size(), 1);
    EXPECT_EQ(static_cast<int>(c.input(0).data_type()), 11);  // TYPE_FP32
    EXPECT_THAT(std::vector<int64_t>(c.input(0).dims().begin(), c.input(0).dims().end()),
                ::testing::ElementsAre(1, 3, 64, 64));
    ASSERT_EQ(c.output_size(), 1);
    EXPECT_EQ(c.output(0).data_type(), inference::TYPE_FP32);
    grpc::ClientContext bad_ctx;
    Prepare(bad_ctx);
    req.set_name("nope");
    grpc::Status bad = stub->ModelConfig(&bad_ctx, req, &resp);
    EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(bad.error_message(), HasSubstr("unknown model 'nope'"));
    // A model has one version, 1 ("" too); another is refused, not served as 1.
    grpc::ClientContext v_ctx;
    Prepare(v_ctx);
    req.set_name("cam");
    req.set_version("3");
    grpc::Status v3 = stub->ModelConfig(&v_ctx, req, &resp);
    EXPECT_EQ(v3.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(v3.error_message(), HasSubstr("model 'cam' has no version '3'"));
  }
  {
    grpc::ClientContext ctx;
    Prepare(ctx);
    inference::ModelReadyRequest req;
    req.set_name("nope");
    inference::ModelReadyResponse ready;
    grpc::Status s = stub->ModelReady(&ctx, req, &ready);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("unknown model 'nope'"));
  }

  // The model repository extension, read-only.
  {
    grpc::ClientContext ctx;
    Prepare(ctx);
    inference::RepositoryIndexRequest req;
    req.set_ready(true);
    inference::RepositoryIndexResponse index;
    ASSERT_TRUE(stub->RepositoryIndex(&ctx, req, &index).ok());
    ASSERT_EQ(index.models_size(), 1);
    EXPECT_EQ(index.models(0).name(), "cam");
    EXPECT_EQ(index.models(0).version(), "1");
    EXPECT_EQ(index.models(0).state(), "READY");
  }
  {
    grpc::ClientContext ctx;
    Prepare(ctx);
    inference::RepositoryModelLoadRequest req;
    req.set_model_name("cam");
    inference::RepositoryModelLoadResponse resp;
    EXPECT_TRUE(stub->RepositoryModelLoad(&ctx, req, &resp).ok()) << "a served model is loaded";
    grpc::ClientContext again;
    Prepare(again);
    (*req.mutable_parameters())["config"].set_string_param("{}");
    grpc::Status reload = stub->RepositoryModelLoad(&again, req, &resp);
    EXPECT_EQ(reload.error_code(), grpc::StatusCode::UNIMPLEMENTED);
    EXPECT_THAT(reload.error_message(), HasSubstr("change the config and restart"));
  }
  {
    grpc::ClientContext ctx;
    Prepare(ctx);
    inference::RepositoryModelUnloadRequest req;
    req.set_model_name("cam");
    inference::RepositoryModelUnloadResponse resp;
    grpc::Status unload = stub->RepositoryModelUnload(&ctx, req, &resp);
    EXPECT_EQ(unload.error_code(), grpc::StatusCode::UNIMPLEMENTED);
    EXPECT_THAT(unload.error_message(), HasSubstr("cannot unload model 'cam'"));
  }

  // Raw contents, the id echoed, and the output equal to whole-model ORT.
  const Sample s = MakeSample(1, "req-7");
  {
    grpc::ClientContext ctx;
    Prepare(ctx);
    ModelInferResponse r;
    ModelInferRequest v1 = s.request;
    v1.set_model_version("1");
    grpc::Status st = stub->ModelInfer(&ctx, v1, &r);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(r.id(), "req-7");
    EXPECT_EQ(r.model_name(), "cam");
    ExpectOutputs(r, s.want);
  }
  // Typed contents and a requested output.
  {
    ModelInferRequest typed = s.request;
    typed.clear_raw_input_contents();
    for (float v : s.input) typed.mutable_inputs(0)->mutable_contents()->add_fp32_contents(v);
    const std::string output = OutputName(*stub);
    typed.add_outputs()->set_name(output);
    grpc::ClientContext ctx;
    Prepare(ctx);
    ModelInferResponse r;
    grpc::Status st = stub->ModelInfer(&ctx, typed, &r);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(r.outputs(0).name(), output);
    ExpectOutputs(r, s.want);
  }

  // The classification extension: the top 3 classes of whole-model ORT's output, as BYTES "value:index".
  {
    ModelInferRequest top = s.request;
    auto* o = top.add_outputs();
    o->set_name(OutputName(*stub));
    (*o->mutable_parameters())["classification"].set_int64_param(3);
    grpc::ClientContext ctx;
    Prepare(ctx);
    ModelInferResponse r;
    grpc::Status st = stub->ModelInfer(&ctx, top, &r);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_EQ(r.outputs_size(), 1);
    EXPECT_EQ(r.outputs(0).datatype(), "BYTES");
    EXPECT_EQ(r.outputs(0).shape(r.outputs(0).shape_size() - 1), 3);
    std::vector<size_t> order(s.want.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return s.want[a] > s.want[b]; });
    const std::string& raw = r.raw_output_contents(0);
    size_t at = 0;
    for (int i = 0; i < 3; ++i) {
      ASSERT_LE(at + 4, raw.size());
      uint32_t n = 0;
      std::memcpy(&n, raw.data() + at, 4);
      const std::string entry = raw.substr(at + 4, n);
      at += 4 + n;
      EXPECT_THAT(entry, ::testing::EndsWith(":" + std::to_string(order[i]))) << entry;
    }
    EXPECT_EQ(at, raw.size());
    grpc::ClientContext bad_ctx;
    Prepare(bad_ctx);
    (*o->mutable_parameters())["classification"].set_string_param("3");
    grpc::Status bad = stub->ModelInfer(&bad_ctx, top, &r);
    EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(bad.error_message(), HasSubstr("'classification' must be an int64_param"));
  }

  // Bad requests: INVALID_ARGUMENT naming what was wrong; the server keeps serving.
  struct Case {
    std::function<void(ModelInferRequest&)> change;
    std::string says;
  };
  for (const Case& bad : std::vector<Case>{
           {[](ModelInferRequest& r) { r.set_model_name("nope"); }, "unknown model 'nope'"},
           {[](ModelInferRequest& r) { r.set_model_version("2"); }, "model 'cam' has no version '2'"},
           {[](ModelInferRequest& r) { r.mutable_inputs(0)->set_name("img"); }, "has no input 'img'"},
           {[](ModelInferRequest& r) { r.mutable_inputs(0)->set_datatype("INT64"); }, "expected FP32"},
           {[](ModelInferRequest& r) { r.mutable_inputs(0)->set_shape(2, 32); }, "expected [1,3,64,64]"},
           {[](ModelInferRequest& r) { r.set_raw_input_contents(0, std::string(12, '\0')); }, "holds 12 bytes"},
           {[](ModelInferRequest& r) {
              r.clear_inputs();
              r.clear_raw_input_contents();
            },
            "is missing"},
           {[](ModelInferRequest& r) { *r.add_raw_input_contents() = std::string(1, 'x'); }, "2 raw_input_contents for 1 inputs"},
           {[](ModelInferRequest& r) { r.add_outputs()->set_name("nope"); }, "has no output 'nope'"},
           {[](ModelInferRequest& r) {
              r.add_outputs()->set_name("logits");
              r.add_outputs()->set_name("logits");
            },
            "output 'logits' is requested twice"},
           {[](ModelInferRequest& r) {
              r.clear_raw_input_contents();
              r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1);
            },
            "fp32_contents has 1 elements"},
       }) {
    ModelInferRequest req = s.request;
    bad.change(req);
    grpc::ClientContext ctx;
    Prepare(ctx);
    ModelInferResponse r;
    grpc::Status st = stub->ModelInfer(&ctx, req, &r);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad.says << ": " << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(bad.says));
  }
  {
    grpc::ClientContext ctx;
    Prepare(ctx);
    ModelInferResponse r;
    ASSERT_TRUE(stub->ModelInfer(&ctx, s.request, &r).ok());
    ExpectOutputs(r, s.want);
  }

  // Statistics: the four good requests (one of them classified), with queue and compute time.
  {
    inference::ModelStatisticsResponse stats;
    ASSERT_NO_FATAL_FAILURE(CamStatistics(*stub, stats));
    const inference::InferStatistics& is = stats.model_stats(0).inference_stats();
    EXPECT_EQ(is.success().count(), 4u);
    EXPECT_GT(is.success().ns(), 0u);
    EXPECT_EQ(is.compute_infer().count(), 4u);
    EXPECT_GT(is.compute_infer().ns(), 0u);
    EXPECT_LE(is.compute_infer().ns() + is.queue().ns(), is.success().ns() + 1000);
    EXPECT_GT(stats.model_stats(0).last_inference(), 0u);
    // No batching: each request was an execution of its own, all of size 1.
    EXPECT_EQ(stats.model_stats(0).execution_count(), 4u);
    ASSERT_EQ(stats.model_stats(0).batch_stats_size(), 1);
    EXPECT_EQ(stats.model_stats(0).batch_stats(0).batch_size(), 1u);
    EXPECT_EQ(stats.model_stats(0).batch_stats(0).compute_infer().count(), 4u);
    EXPECT_EQ(stats.model_stats(0).batch_stats(0).compute_infer().ns(), is.compute_infer().ns());
  }

  // The standard health service: SERVING, for the server and for the KServe service.
  grpc::GenericStub generic(grpc::CreateChannel("127.0.0.1:" + std::to_string(server.grpc_port()),
                                                grpc::InsecureChannelCredentials()));
  for (const std::string& service : {std::string(), std::string("inference.GRPCInferenceService")}) {
    SCOPED_TRACE(service);
    std::string request;  // HealthCheckRequest{service}: field 1, length-delimited
    if (!service.empty()) {
      request.push_back(0x0a);
      request.push_back(static_cast<char>(service.size()));
      request.append(service);
    }
    grpc::Slice slice(request);
    grpc::ByteBuffer request_buffer(&slice, 1);
    grpc::ByteBuffer response_buffer;
    grpc::ClientContext ctx;
    Prepare(ctx);
    std::promise<grpc::Status> result;
    generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request_buffer, &response_buffer,
                      [&](grpc::Status st) { result.set_value(std::move(st)); });
    grpc::Status st = result.get_future().get();
    ASSERT_TRUE(st.ok()) << st.error_message();
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(response_buffer.Dump(&slices).ok());
    std::string response;
    for (const grpc::Slice& sl : slices) response.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    EXPECT_EQ(response, std::string("\x08\x01", 2));  // HealthCheckResponse{status: SERVING}
  }
}

// --model-control-mode explicit over gRPC, from no model loaded: the
// repository extension loads and unloads models of the config, ModelReady
// says which are loaded, and requests for the others are refused by name.
TEST_F(CliServeGrpcTest, ExplicitModelControlLoadsAndUnloadsOverGrpc) {
  const std::string config = (dir_ / "explicit.yaml").string();
  std::ofstream(config) << "devices: [{name: local, pus: [{name: cpu0, kind: cpu}]}]\n"
                        << "models:\n  - {name: cam, path: " << Zoo("squeezenet") << "}\n"
                        << "  - {name: det, path: " << Zoo("mobilenetv2") << "}\n"
                        << "policy: {high_level: whole}\n";
  BatonProcess server("serve", {config, "--no-profile", "-q", "--model-control-mode", "explicit"});
  ASSERT_TRUE(server.ok()) << server.banner();
  EXPECT_THAT(server.banner(), HasSubstr("(models: none loaded)"));
  auto stub = Connect(server.grpc_port());
  auto ready = [&](const std::string& model) {
    grpc::ClientContext ctx;
    Prepare(ctx);
    inference::ModelReadyRequest req;
    req.set_name(model);
    inference::ModelReadyResponse resp;
    const grpc::Status st = stub->ModelReady(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.ready();
  };
  auto repository = [&](bool load, const std::string& model) {
    grpc::ClientContext ctx;
    Prepare(ctx);
    if (load) {
      inference::RepositoryModelLoadRequest req;
      req.set_model_name(model);
      inference::RepositoryModelLoadResponse resp;
      return stub->RepositoryModelLoad(&ctx, req, &resp);
    }
    inference::RepositoryModelUnloadRequest req;
    req.set_model_name(model);
    inference::RepositoryModelUnloadResponse resp;
    return stub->RepositoryModelUnload(&ctx, req, &resp);
  };
  const Sample s = MakeSample(2);
  auto infer = [&](ModelInferResponse& r) {
    grpc::ClientContext ctx;
    Prepare(ctx);
    return stub->ModelInfer(&ctx, s.request, &r);
  };
  {
    grpc::ClientContext ctx;
    Prepare(ctx);
    inference::ServerReadyResponse server_ready;
    ASSERT_TRUE(stub->ServerReady(&ctx, {}, &server_ready).ok());
    EXPECT_TRUE(server_ready.ready());
  }
  EXPECT_FALSE(ready("cam"));
  ModelInferResponse r;
  grpc::Status refused = infer(r);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(refused.error_message(), HasSubstr("model 'cam' is not loaded; load it first"));

  grpc::Status loaded = repository(true, "cam");
  ASSERT_TRUE(loaded.ok()) << loaded.error_message();
  EXPECT_TRUE(ready("cam"));
  EXPECT_FALSE(ready("det"));
  ASSERT_TRUE(infer(r).ok());
  ExpectOutputs(r, s.want);
  {
    grpc::ClientContext ctx;
    Prepare(ctx);
    inference::RepositoryIndexResponse index;
    ASSERT_TRUE(stub->RepositoryIndex(&ctx, {}, &index).ok());
    ASSERT_EQ(index.models_size(), 2);
    EXPECT_EQ(index.models(0).state(), "READY");
    EXPECT_EQ(index.models(1).state(), "UNAVAILABLE");
    EXPECT_EQ(index.models(1).reason(), "unloaded");
    grpc::ClientContext ready_ctx;
    Prepare(ready_ctx);
    inference::RepositoryIndexRequest ready_only;
    ready_only.set_ready(true);
    ASSERT_TRUE(stub->RepositoryIndex(&ready_ctx, ready_only, &index).ok());
    ASSERT_EQ(index.models_size(), 1);
    EXPECT_EQ(index.models(0).name(), "cam");
  }
  ASSERT_TRUE(repository(false, "cam").ok());
  EXPECT_FALSE(ready("cam"));
  EXPECT_EQ(infer(r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  {
    grpc::ClientContext ctx;  // an unloaded model keeps its counts
    Prepare(ctx);
    inference::ModelStatisticsResponse stats;
    ASSERT_TRUE(stub->ModelStatistics(&ctx, {}, &stats).ok());
    ASSERT_EQ(stats.model_stats_size(), 1);
    EXPECT_EQ(stats.model_stats(0).name(), "cam");
    EXPECT_EQ(stats.model_stats(0).inference_count(), 1u);
  }
  grpc::Status unknown = repository(true, "nope");
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_THAT(unknown.error_message(), HasSubstr("cannot load model 'nope'"));
  EXPECT_EQ(repository(false, "nope").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(CliServeGrpcTest, StreamAnswersEveryRequestAndSigtermAnswersWhatIsInFlight) {
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--no-http"});
  ASSERT_TRUE(server.ok()) << server.banner();
  auto stub = Connect(server.grpc_port());
  const Sample s = MakeSample(3);
  constexpr int kRequests = 12;
  grpc::ClientContext ctx;
  Prepare(ctx);
  auto stream = stub->ModelStreamInfer(&ctx);
  for (int i = 0; i < kRequests; ++i) {
    ModelInferRequest req = s.request;
    req.set_id("s" + std::to_string(i));
    if (i == 4) req.mutable_inputs(0)->set_datatype("INT64");  // one bad request: answered, the stream goes on
    ASSERT_TRUE(stream->Write(req));
  }
  stream->WritesDone();
  std::set<std::string> ids;
  inference::ModelStreamInferResponse resp;
  bool signalled = false;
  while (stream->Read(&resp)) {
    const std::string id = resp.infer_response().id();
    EXPECT_TRUE(ids.insert(id).second) << "answered twice: " << id;
    const bool stopping = resp.error_message().find("the server is stopping") != std::string::npos;
    if (id == "s4" && !stopping) {
      EXPECT_THAT(resp.error_message(), HasSubstr("expected FP32"));
    } else if (!resp.error_message().empty()) {
      // Read by the server after the signal: answered, not dropped.
      EXPECT_TRUE(signalled) << id << ": " << resp.error_message();
      EXPECT_THAT(resp.error_message(), HasSubstr("UNAVAILABLE: the server is stopping")) << id;
    } else {
      ExpectOutputs(resp.infer_response(), s.want);
    }
    if (!signalled && resp.error_message().empty()) {
      server.Signal(SIGTERM);  // the rest are in flight: they are still answered
      signalled = true;
    }
  }
  grpc::Status st = stream->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(ids.size(), static_cast<size_t>(kRequests));
  server.Stop();  // expects exit status 0 and no sanitizer report
}

TEST_F(CliServeGrpcTest, SigtermEndsAStreamItsClientKeepsOpen) {
  // A client that keeps its stream open and idle (it never half-closes) gets
  // the stream ended UNAVAILABLE once the server is told to stop, rather than
  // cancelled after the server's 30 s grace; the server exits 0.
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--no-http"});
  ASSERT_TRUE(server.ok()) << server.banner();
  auto stub = Connect(server.grpc_port());
  const Sample s = MakeSample(5);
  grpc::ClientContext ctx;
  Prepare(ctx);
  auto stream = stub->ModelStreamInfer(&ctx);
  ModelInferRequest req = s.request;
  req.set_id("only");
  ASSERT_TRUE(stream->Write(req));
  inference::ModelStreamInferResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_EQ(resp.error_message(), "");
  ExpectOutputs(resp.infer_response(), s.want);
  server.Signal(SIGTERM);
  EXPECT_FALSE(stream->Read(&resp));  // no answer is due: the stream just ends
  const grpc::Status st = stream->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("the server is stopping"));
  server.Stop();  // expects exit status 0 and no sanitizer report
}

TEST_F(CliServeGrpcTest, TwoClientProcessesWithPrioritiesAndOverload) {
  // max_in_flight 2: with several calls at once some find the model full.
  BatonProcess server("serve", {Config("max_in_flight: 2"), "--no-profile", "-q", "--no-http"});
  ASSERT_TRUE(server.ok()) << server.banner();
  const int port = server.grpc_port();
  const Sample s = MakeSample(4);
  const std::string request_file = (dir_ / "two_clients_request.pb").string();
  {
    std::ofstream out(request_file, std::ios::binary);
    ASSERT_TRUE(s.request.SerializeToOstream(&out));
  }
  // Two client processes (tests/serve_priority_client.cc, started by fork and
  // exec), priorities 0 and 5, each with three threads of five requests. Exit
  // status: 0 when every answer was OK or RESOURCE_EXHAUSTED and at least one
  // was OK; 1 otherwise. What each says goes to a file of its own.
  struct Client {
    pid_t pid = -1;
    std::string out;
  };
  std::vector<Client> clients;
  for (int priority : {0, 5}) {
    Client c;
    c.out = (dir_ / ("client_" + std::to_string(priority) + ".txt")).string();
    // Built before fork: the child of a threaded process only calls exec.
    const std::vector<std::string> args = {testing::kPriorityClientPath, std::to_string(port),
                                           std::to_string(priority), request_file};
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int fd = ::open(c.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << c.out;
    c.pid = ::fork();
    if (c.pid == 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      ::execv(argv[0], argv.data());
      _exit(127);
    }
    ::close(fd);
    ASSERT_GT(c.pid, 0);
    clients.push_back(c);
  }
  for (const Client& c : clients) {
    int status = 0;
    ASSERT_EQ(::waitpid(c.pid, &status, 0), c.pid);
    const std::string said = ReadRegularFile(c.out, 1 << 20, "a client's output").value_or("");
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "client process " << c.pid << " status " << status
                                                               << ":\n" << said;
    EXPECT_THAT(said, HasSubstr(" OK, ")) << said;
  }
  auto stub = Connect(port);
  grpc::ClientContext ctx;
  Prepare(ctx);
  inference::ModelStatisticsResponse stats;
  ASSERT_TRUE(stub->ModelStatistics(&ctx, {}, &stats).ok());
  ASSERT_EQ(stats.model_stats_size(), 1);
  const inference::InferStatistics& is = stats.model_stats(0).inference_stats();
  EXPECT_EQ(is.success().count() + is.fail().count(), 30u);
  EXPECT_GT(is.success().count(), 0u);
}

TEST_F(CliServeGrpcTest, RunSendsItsWorkloadToAServer) {
  const std::string token = (dir_ / "token").string();
  std::ofstream(token) << "s3cret\n";
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--no-http", "--token-file", token});
  ASSERT_TRUE(server.ok()) << server.banner();
  const std::string address = "127.0.0.1:" + std::to_string(server.grpc_port());
  const std::string json_path = (dir_ / "server_run.json").string();
  testing::CliResult run = testing::Baton("run " + Config() + " --server " + address + " --token-file " + token +
                                          " --duration 1 --warmup 0.2 --slices 2 --verify --quiet --json " + json_path);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("sent to the server at " + address));
  std::ifstream in(json_path);
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["server"], address);
  EXPECT_EQ(j["server_shared_memory"], "none");
  EXPECT_GT(j["completed"].get<int>(), 0);
  EXPECT_EQ(j["verify"]["mismatches"], 0);
  EXPECT_GT(j["verify"]["checked"].get<int>(), 0);
  EXPECT_TRUE(j["baselines"].empty());

  // The server's own count agrees that the requests reached it.
  auto stub = Connect(server.grpc_port());
  grpc::ClientContext ctx;
  Prepare(ctx, "s3cret");
  inference::ModelStatisticsResponse stats;
  ASSERT_TRUE(stub->ModelStatistics(&ctx, {}, &stats).ok());
  EXPECT_GE(stats.model_stats(0).inference_stats().success().count(), j["completed"].get<uint64_t>());

  // Without the token: the health service answers (it is open everywhere),
  // ServerLive too (open on loopback), and any other call is refused.
  {
    auto health = grpc::health::v1::Health::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext hctx;
    Prepare(hctx);
    grpc::health::v1::HealthCheckResponse serving;
    const grpc::Status hs = health->Check(&hctx, {}, &serving);
    ASSERT_TRUE(hs.ok()) << hs.error_message();
    EXPECT_EQ(serving.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    grpc::ClientContext live_ctx;
    Prepare(live_ctx);
    inference::ServerLiveResponse live;
    EXPECT_TRUE(stub->ServerLive(&live_ctx, {}, &live).ok());
    grpc::ClientContext meta_ctx;
    Prepare(meta_ctx);
    inference::ModelMetadataRequest meta_req;
    meta_req.set_name("cam");
    inference::ModelMetadataResponse meta;
    EXPECT_EQ(stub->ModelMetadata(&meta_ctx, meta_req, &meta).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }

  testing::CliResult no_token = testing::Baton("run " + Config() + " --server " + address + " --duration 1");
  EXPECT_EQ(no_token.exit_code, 2);
  EXPECT_THAT(no_token.output, HasSubstr("Bearer"));
  const std::string other = (dir_ / "other.yaml").string();
  std::ofstream(other) << "devices: [{name: local, pus: [{name: cpu0, kind: cpu}]}]\n"
                       << "models:\n  - {name: radar, path: " << Zoo("squeezenet") << "}\n";
  testing::CliResult missing =
      testing::Baton("run " + other + " --server " + address + " --token-file " + token + " --duration 1");
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.output, HasSubstr("cannot serve model 'radar'"));
  testing::CliResult nobody = testing::Baton("run " + Config() + " --server 127.0.0.1:1 --duration 1");
  EXPECT_EQ(nobody.exit_code, 2);
  EXPECT_THAT(nobody.output, HasSubstr("no KServe v2 gRPC server answered at 127.0.0.1:1"));
  testing::CliResult stray = testing::Baton("run " + Config() + " --token-file " + token + " --duration 1");
  EXPECT_EQ(stray.exit_code, 2);
  EXPECT_THAT(stray.output, HasSubstr("are for --server"));
}

TEST_F(CliServeGrpcTest, RunSendsItsInputsThroughSharedMemory) {
  // `baton run --server ... --shared-memory system` against `baton serve
  // --allow-client-shm`: answers verified, no object left in /dev/shm, and
  // the regions unregistered when the client exits.
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--no-http", "--allow-client-shm"});
  ASSERT_TRUE(server.ok()) << server.banner();
  const std::string address = "127.0.0.1:" + std::to_string(server.grpc_port());
  const std::string json_path = (dir_ / "shm_run.json").string();
  testing::CliResult run = testing::Baton("run " + Config() + " --server " + address +
                                          " --shared-memory system --duration 1 --warmup 0.2 --slices 2 --verify "
                                          "--quiet --json " + json_path);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::ifstream in(json_path);
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_GT(j["completed"].get<int>(), 0);
  EXPECT_EQ(j["verify"]["mismatches"], 0);
  EXPECT_EQ(j["server_shared_memory"], "system");
  EXPECT_THAT(run.output, HasSubstr("inputs through shared memory"));
  for (const auto& entry : fs::directory_iterator("/dev/shm")) {
    EXPECT_EQ(entry.path().filename().string().find("baton-client-"), std::string::npos) << entry.path();
  }
  auto stub = Connect(server.grpc_port());
  grpc::ClientContext ctx;
  Prepare(ctx);
  inference::SystemSharedMemoryStatusResponse regions;
  ASSERT_TRUE(stub->SystemSharedMemoryStatus(&ctx, {}, &regions).ok());
  EXPECT_EQ(regions.regions().size(), 0);

  // Without --allow-client-shm the client is told how to turn it on.
  BatonProcess plain("serve", {Config(), "--no-profile", "-q", "--no-http"});
  ASSERT_TRUE(plain.ok()) << plain.banner();
  testing::CliResult off = testing::Baton("run " + Config() + " --server 127.0.0.1:" +
                                          std::to_string(plain.grpc_port()) + " --shared-memory system --duration 1");
  EXPECT_EQ(off.exit_code, 2) << off.output;
  EXPECT_THAT(off.output, HasSubstr("start it with --allow-client-shm, or drop --shared-memory"));
  testing::CliResult stray = testing::Baton("run " + Config() + " --shared-memory system --duration 1");
  EXPECT_EQ(stray.exit_code, 2);
  EXPECT_THAT(stray.output, HasSubstr("are for --server"));
}

TEST_F(CliServeGrpcTest, ASharedMemoryClientRegistersAgainWhenTheServerRestarts) {
  // A restarted server knows none of the regions a running `baton run
  // --server --shared-memory system` registered. The client drops them on
  // the first answer that says so and registers new ones, so the new server
  // answers its requests (before, every later request failed).
  auto server = std::make_unique<BatonProcess>(
      "serve", std::vector<std::string>{Config(), "--no-profile", "-q", "--no-http", "--allow-client-shm"});
  ASSERT_TRUE(server->ok()) << server->banner();
  const int port = server->grpc_port();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  auto answered = [](int grpc_port) -> int64_t {
    auto stub = Connect(grpc_port);
    inference::ModelStatisticsResponse stats;
    CamStatistics(*stub, stats);
    return stats.model_stats_size() == 1 ? static_cast<int64_t>(stats.model_stats(0).inference_stats().success().count())
                                         : -1;
  };
  // The restart happens when the client reports its first slice (the first
  // server has answered it); four more slices follow against the new one.
  const std::string json_path = (dir_ / "restart_run.json").string();
  int64_t before_restart = -1;
  bool restarted = false;
  const testing::SignalledRun run = testing::ActWhenPrinted(
      {"run", Config(), "--server", address, "--shared-memory", "system", "--duration", "10", "--warmup", "0.2",
       "--slices", "5", "--json", json_path},
      "slice 1/5", [&](pid_t) {
        before_restart = answered(port);
        server.reset();  // SIGTERM, exit 0 expected
        server = std::make_unique<BatonProcess>(
            "serve", std::vector<std::string>{Config(), "--no-profile", "-q", "--no-http", "--allow-client-shm",
                                              "--grpc", address});
        restarted = server->ok() && server->grpc_port() == port;
      });
  ASSERT_TRUE(run.signalled) << run.output;
  EXPECT_GT(before_restart, 0) << "the client's first slice was not answered by the first server";
  ASSERT_TRUE(restarted) << server->banner();
  // Requests in flight across the restart failed (exit status 1 says so);
  // what the new server answered went through new regions.
  EXPECT_TRUE(run.exit_code == 0 || run.exit_code == 1) << run.output;
  EXPECT_GT(answered(port), 0) << run.output;
  std::ifstream in(json_path);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << run.output;
  EXPECT_EQ(j["server_shared_memory"], "system");
}

TEST_F(CliServeGrpcTest, RunSendsItsRequestsOnOneStream) {
  // `baton run --server ... --streaming`: every request a message on one
  // ModelStreamInfer stream, answers verified against whole-model ORT, with
  // and without shared memory; SIGTERM afterwards exits 0.
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--no-http", "--allow-client-shm"});
  ASSERT_TRUE(server.ok()) << server.banner();
  const std::string address = "127.0.0.1:" + std::to_string(server.grpc_port());
  for (const std::string extra : {"", " --shared-memory system"}) {
    const std::string json_path = (dir_ / "stream_run.json").string();
    testing::CliResult run = testing::Baton("run " + Config() + " --server " + address + " --streaming" + extra +
                                            " --duration 1 --warmup 0.2 --slices 2 --verify --quiet --json " +
                                            json_path);
    ASSERT_EQ(run.exit_code, 0) << run.output;
    std::ifstream in(json_path);
    const nlohmann::json j = nlohmann::json::parse(in);
    EXPECT_GT(j["completed"].get<int>(), 0) << extra;
    for (const auto& m : j["models"]) EXPECT_EQ(m["failed"], 0) << extra << " " << m["name"];
    EXPECT_EQ(j["verify"]["mismatches"], 0) << extra;
    EXPECT_EQ(j["server_streaming"], true) << extra;
    EXPECT_THAT(run.output, HasSubstr("on one stream"));
  }
  const int status = server.Kill(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  testing::CliResult stray = testing::Baton("run " + Config() + " --streaming --duration 1");
  EXPECT_EQ(stray.exit_code, 2);
  EXPECT_THAT(stray.output, HasSubstr("are for --server"));
}

TEST_F(CliServeGrpcTest, ServesOnAUnixSocket) {
  // `--grpc unix:PATH`: a KServe client over the socket, `baton run --server
  // unix:PATH`, and the errors for a path that is taken.
  const std::string path = (dir_ / "baton.sock").string();
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--grpc", "unix:" + path, "--http", "127.0.0.1:0"});
  ASSERT_TRUE(server.ok()) << server.banner();
  EXPECT_THAT(server.banner(), HasSubstr("gRPC listening on unix:" + path));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto stub = GRPCInferenceService::NewStub(
      grpc::CreateCustomChannel("unix:" + path, grpc::InsecureChannelCredentials(), args));
  Sample s = MakeSample(4, "over-a-socket");
  grpc::ClientContext ctx;
  Prepare(ctx);
  ModelInferResponse r;
  const grpc::Status st = stub->ModelInfer(&ctx, s.request, &r);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(r.id(), "over-a-socket");
  ExpectOutputs(r, s.want);

  const std::string json_path = (dir_ / "socket_run.json").string();
  testing::CliResult run = testing::Baton("run " + Config() + " --server unix:" + path +
                                          " --duration 0.5 --warmup 0.1 --slices 1 --verify --quiet --json " + json_path);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::ifstream in(json_path);
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_GT(j["completed"].get<int>(), 0);
  EXPECT_EQ(j["verify"]["mismatches"], 0);

  testing::CliResult taken =
      testing::Baton("serve " + Config() + " --no-profile -q --grpc unix:" + path + " --http 127.0.0.1:0");
  EXPECT_EQ(taken.exit_code, 2) << taken.output;
  EXPECT_THAT(taken.output, HasSubstr("another server listens there"));
  const std::string file = (dir_ / "not_a_socket").string();
  std::ofstream(file) << "keep me\n";
  testing::CliResult not_socket =
      testing::Baton("serve " + Config() + " --no-profile -q --grpc unix:" + file + " --http 127.0.0.1:0");
  EXPECT_EQ(not_socket.exit_code, 2) << not_socket.output;
  EXPECT_THAT(not_socket.output, HasSubstr("is not a socket"));
  EXPECT_TRUE(std::filesystem::exists(file)) << "a file that is not a socket is never removed";
}

// --run-here-up-to-us large enough for every run: after the first answer,
// requests run on gRPC's threads when a PU is free. Answers stay equal to
// whole-model ORT, from one client and from several at once, and the
// statistics count each of them once.
TEST_F(CliServeGrpcTest, RequestsRunOnGrpcsThreadsAnswerTheSame) {
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--run-here-up-to-us", "100000"});
  ASSERT_TRUE(server.ok()) << server.banner();
  auto stub = Connect(server.grpc_port());
  const Sample s = MakeSample(5, "here");
  for (int i = 0; i < 6; ++i) {
    grpc::ClientContext ctx;
    Prepare(ctx);
    ModelInferResponse r;
    grpc::Status st = stub->ModelInfer(&ctx, s.request, &r);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(r.id(), "here");
    ExpectOutputs(r, s.want);
  }
  std::vector<std::thread> clients;
  std::atomic<int> good{0};
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&] {
      auto own = Connect(server.grpc_port());
      for (int i = 0; i < 6; ++i) {
        grpc::ClientContext ctx;
        Prepare(ctx);
        ModelInferResponse r;
        if (!own->ModelInfer(&ctx, s.request, &r).ok() || r.raw_output_contents_size() != 1) continue;
        const std::string& raw = r.raw_output_contents(0);
        if (raw.size() != s.want.size() * sizeof(float)) continue;
        std::vector<float> got(s.want.size());
        std::memcpy(got.data(), raw.data(), raw.size());
        bool same = true;
        for (size_t k = 0; k < got.size(); ++k) same = same && std::abs(got[k] - s.want[k]) <= 1e-4f;
        if (same) ++good;
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(good.load(), 18);
  inference::ModelStatisticsResponse stats;
  ASSERT_NO_FATAL_FAILURE(CamStatistics(*stub, stats));
  EXPECT_EQ(stats.model_stats(0).inference_stats().success().count(), 24u);
  EXPECT_EQ(stats.model_stats(0).inference_stats().fail().count(), 0u);

  testing::CliResult bad = testing::Baton("serve " + Config() + " --run-here-up-to-us -5");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_THAT(bad.output, HasSubstr("--run-here-up-to-us"));
}

TEST_F(CliServeGrpcTest, TokenAndStartUpErrors) {
  const std::string token = (dir_ / "token").string();
  std::ofstream(token) << "s3cret\n";
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--token-file", token});
  ASSERT_TRUE(server.ok()) << server.banner();
  auto stub = Connect(server.grpc_port());
  {
    grpc::ClientContext ctx;
    Prepare(ctx);
    inference::ServerLiveResponse live;
    EXPECT_TRUE(stub->ServerLive(&ctx, {}, &live).ok()) << "liveness stays open on loopback";
  }
  inference::ModelMetadataRequest req;
  req.set_name("cam");
  for (const std::string& given : {std::string(), std::string("nope")}) {
    grpc::ClientContext ctx;
    Prepare(ctx, given);
    inference::ModelMetadataResponse meta;
    grpc::Status st = stub->ModelMetadata(&ctx, req, &meta);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << given;
    EXPECT_THAT(st.error_message(), HasSubstr("Bearer"));
  }
  {
    grpc::ClientContext ctx;
    Prepare(ctx, "s3cret");
    inference::ModelMetadataResponse meta;
    EXPECT_TRUE(stub->ModelMetadata(&ctx, req, &meta).ok());
  }
  {
    grpc::ClientContext ctx;
    Prepare(ctx);
    auto stream = stub->ModelStreamInfer(&ctx);
    inference::ModelStreamInferResponse resp;
    EXPECT_FALSE(stream->Read(&resp));
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }

  testing::CliResult open = testing::Baton("serve " + Config() + " --no-profile -q --grpc 0.0.0.0:0 --http 127.0.0.1:0");
  EXPECT_EQ(open.exit_code, 2) << open.output;
  EXPECT_THAT(open.output, HasSubstr("without TLS and a token"));
  testing::CliResult port = testing::Baton("serve " + Config() + " --grpc 127.0.0.1:99999");
  EXPECT_EQ(port.exit_code, 2);
  EXPECT_THAT(port.output, HasSubstr("--grpc wants HOST:PORT"));
  testing::CliResult none = testing::Baton("serve " + Config() + " --no-grpc --no-http");
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_THAT(none.output, HasSubstr("nothing to serve"));
}

// A server that listens on another address than loopback (TLS and a token)
// asks every caller for the token, on loopback too, except the standard
// health service, which stays open everywhere (docs/serve.md, Security).
TEST_F(CliServeGrpcTest, OffLoopbackOnlyTheHealthServiceIsOpenWithoutTheToken) {
  ASSERT_TRUE(testing::MakeTestCertificates(dir_)) << "openssl could not make the test certificates";
  const auto file = [&](const std::string& name) { return (dir_ / name).string(); };
  BatonProcess server("serve", {Config(), "--no-profile", "-q", "--grpc", "0.0.0.0:0", "--no-http", "--tls-cert",
                                file("server.pem"), "--tls-key", file("server.key"), "--token-file",
                                file("good.token")});
  ASSERT_TRUE(server.ok()) << server.banner();
  absl::StatusOr<std::string> ca = ReadRegularFile(file("ca.pem"), 1 << 20, "CA certificate");
  ASSERT_TRUE(ca.ok()) << ca.status();
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = *std::move(ca);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server.grpc_port()), grpc::SslCredentials(tls));
  auto stub = GRPCInferenceService::NewStub(channel);
  auto health = grpc::health::v1::Health::NewStub(channel);

  for (const std::string& service : {std::string(), std::string("inference.GRPCInferenceService")}) {
    grpc::ClientContext ctx;
    Prepare(ctx);
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    const grpc::Status st = health->Check(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << "'" << service << "': " << st.error_message();
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
  // ServerLive, ServerReady and ModelMetadata of `cam`, with `token` ("": none).
  struct Answers {
    grpc::Status live, ready, metadata;
    bool is_live = false, is_ready = false;
    std::string name;
  };
  const auto call_with = [&](const std::string& token) {
    Answers a;
    grpc::ClientContext live_ctx, ready_ctx, meta_ctx;
    Prepare(live_ctx, token);
    Prepare(ready_ctx, token);
    Prepare(meta_ctx, token);
    inference::ServerLiveResponse live;
    inference::ServerReadyResponse ready;
    inference::ModelMetadataRequest req;
    req.set_name("cam");
    inference::ModelMetadataResponse meta;
    a.live = stub->ServerLive(&live_ctx, {}, &live);
    a.ready = stub->ServerReady(&ready_ctx, {}, &ready);
    a.metadata = stub->ModelMetadata(&meta_ctx, req, &meta);
    a.is_live = live.live();
    a.is_ready = ready.ready();
    a.name = meta.name();
    return a;
  };
  // Without the token (and with a wrong one) every other call is refused.
  for (const std::string& given : {std::string(), std::string("wrong-token")}) {
    const Answers a = call_with(given);
    EXPECT_EQ(a.live.error_code(), grpc::StatusCode::UNAUTHENTICATED) << "ServerLive, token '" << given << "'";
    EXPECT_THAT(a.live.error_message(), HasSubstr("Bearer"));
    EXPECT_EQ(a.ready.error_code(), grpc::StatusCode::UNAUTHENTICATED) << "ServerReady, token '" << given << "'";
    EXPECT_EQ(a.metadata.error_code(), grpc::StatusCode::UNAUTHENTICATED) << "ModelMetadata, token '" << given << "'";
  }
  // With the token they are answered.
  const Answers a = call_with("s3cret-token");
  ASSERT_TRUE(a.live.ok()) << a.live.error_message();
  EXPECT_TRUE(a.is_live);
  ASSERT_TRUE(a.ready.ok()) << a.ready.error_message();
  EXPECT_TRUE(a.is_ready);
  ASSERT_TRUE(a.metadata.ok()) << a.metadata.error_message();
  EXPECT_EQ(a.name, "cam");
}

}  // namespace
}  // namespace baton
