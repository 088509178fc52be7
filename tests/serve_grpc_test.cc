// The KServe v2 gRPC front-end (serve::GrpcServer) and client
// (serve::GrpcClient) in one process, for what a separate process hides from
// ThreadSanitizer: many client threads and a stream at once, answers equal
// to whole-model ONNX Runtime, the server stopping while calls are in
// flight (every call still answered), the client's destructor waiting
// for its calls, tensors through client shared memory (the system shared
// memory extension), the client's calls on one stream, and calls whose
// client gives up (cancelled, or past their gRPC deadline) dropping their
// requests. Run under TSan in CI (scripts/test.sh).
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "baton/backend/ort/ort_runner.h"
#include "baton/baton.h"
#include "baton/graph/builder.h"
#include "baton/graph/model.h"
#include "baton/serve/grpc_client.h"
#include "baton/serve/grpc_server.h"
#include "baton/serve/served_engine.h"
#include "baton/serve/shared_memory.h"
#include "baton/verify/verify.h"
#include "baton/zoo/zoo.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "inference/grpc_service.grpc.pb.h"
#include "spin_model.h"
#include "wait_until.h"

namespace baton {
namespace {

namespace fs = std::filesystem;
using testing::WaitUntil;  // a gate on the engine's state, not a sleep

// Sends one call and the future of its answer. The callback holds the
// promise, so the client's thread, which may still be inside set_value when
// the waiter wakes, never touches a promise the waiter has destroyed.
std::future<Result<Tensors>> Send(serve::GrpcClient& client, const std::string& model, Tensors inputs,
                                  const InferOptions& options = {}) {
  auto answer = std::make_shared<std::promise<Result<Tensors>>>();
  std::future<Result<Tensors>> future = answer->get_future();
  client.InferAsync(model, std::move(inputs), options,
                    [answer](Result<Tensors> r) { answer->set_value(std::move(r)); });
  return future;
}

class ServeGrpcTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("baton_serve_grpc_test_" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    absl::StatusOr<std::string> bytes = zoo::Generate("squeezenet", /*small=*/true);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    std::ofstream(*dir_ / "squeezenet.onnx", std::ios::binary) << *bytes;
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
  }

  void SetUp() override { Start(nullptr); }

  // (Re)starts the engine and the server, with `shm` as its shared memory registry.
  void Start(std::shared_ptr<serve::SharedMemoryRegistry> shm) {
    if (server_) server_->Stop();
    server_.reset();
    if (engine_) engine_->Close();
    EngineOptions options;
    options.no_profile = true;
    options.cache_dir = (*dir_ / "cache").string();
    if (labels_ > 0) {
      std::ofstream out(*dir_ / "labels.txt");
      for (size_t i = 0; i < labels_; ++i) out << "class " << i << "\n";
    }
    Result<std::unique_ptr<Engine>> engine = Engine::OpenText(
        "devices: [{name: local, pus: [{name: cpu0, kind: cpu, threads: 1}, {name: cpu1, kind: cpu, threads: 1}]}]\n"
        "models: [{name: cam, path: squeezenet.onnx" +
            std::string(labels_ > 0 ? ", labels: labels.txt" : "") +
            "}]\n"
            "policy: {high_level: balanced, stages: 2}\n",
        dir_->string(), options);
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    engine_ = std::move(engine).value();
    serve::GrpcOptions go;
    go.port = 0;
    go.shared_memory = std::move(shm);
    go.run_here_up_to = run_here_up_to_;
    go.stop_grace = stop_grace_;
    go.max_stream_in_flight = stream_in_flight_;
    go.threads = threads_;
    // Under ThreadSanitizer this process can stall for seconds: a 10 s
    // keepalive watchdog then closed the connection under calls in flight.
    go.keepalive_time = go.keepalive_timeout = std::chrono::minutes(2);
    auto server = serve::GrpcServer::Start(*engine_, go);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);

    auto model = graph::Model::LoadFile(*dir_ / "squeezenet.onnx");
    ASSERT_TRUE(model.ok());
    auto inputs = verify::RandomInputs(**model, 5);
    ASSERT_TRUE(inputs.ok());
    input_name_ = (*inputs)[0].first;
    input_ = (*inputs)[0].second.Clone();
    auto runner = ort::OrtRunner::Create((*model)->SerializeToString(), {}, "whole");
    ASSERT_TRUE(runner.ok());
    std::vector<std::pair<std::string, const Tensor*>> feeds = {{input_name_, &input_}};
    auto outs = (*runner)->Run(feeds);
    ASSERT_TRUE(outs.ok());
    output_name_ = (*runner)->outputs()[0].name;
    want_.assign((*outs)[0].data<float>().begin(), (*outs)[0].data<float>().end());
  }

  void TearDown() override {
    if (server_) server_->Stop();
    if (engine_) engine_->Close();
  }

  std::string Address() const { return "127.0.0.1:" + std::to_string(server_->port()); }
  // baton's client with every call on one stream, connected to the server (null when it cannot connect).
  std::unique_ptr<serve::GrpcClient> StreamingClient() const {
    serve::GrpcClientOptions streaming;
    streaming.stream = true;
    auto client = serve::GrpcClient::Connect(Address(), streaming);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }
  // A ModelInfer request for `cam` with the input's name, datatype and shape, and no bytes yet.
  inference::ModelInferRequest RequestWithoutBytes() const {
    inference::ModelInferRequest req;
    req.set_model_name("cam");
    auto* in = req.add_inputs();
    in->set_name(input_name_);
    in->set_datatype("FP32");
    for (int64_t d : input_.shape()) in->add_shape(d);
    return req;
  }
  Tensors Inputs() const {
    Tensors t;
    t.emplace(input_name_, input_.Clone());
    return t;
  }
  // Empty when `r` holds the reference outputs; else what differs.
  std::string Check(const Result<Tensors>& r) const {
    if (!r.ok()) return r.status().ToString();
    auto it = r->find(output_name_);
    if (it == r->end()) return "no output " + output_name_;
    std::span<const float> got = it->second.data<float>();
    if (got.size() != want_.size()) return "wrong size";
    for (size_t i = 0; i < got.size(); ++i) {
      if (std::abs(got[i] - want_[i]) > 1e-4) return "element " + std::to_string(i) + " differs";
    }
    return "";
  }

  // `calls` calls of `client` at once, each answered equal to whole-model ORT.
  void ExpectCallsAnswered(serve::GrpcClient& client, int calls) const {
    std::vector<std::future<Result<Tensors>>> answers;
    for (int i = 0; i < calls; ++i) answers.push_back(Send(client, "cam", Inputs()));
    for (auto& a : answers) EXPECT_EQ(Check(a.get()), "");
  }

  // Three client threads' calls (with `client_options`) and a stream at
  // once, all answered equal to whole-model ORT.
  void ManyClientThreadsAndAStream(const serve::GrpcClientOptions& client_options = {});

  static inline fs::path* dir_ = nullptr;
  std::chrono::microseconds run_here_up_to_ = serve::GrpcOptions().run_here_up_to;
  size_t labels_ = 0;  // > 0: Start gives the model a labels file of that many classes
  std::chrono::seconds stop_grace_ = serve::GrpcOptions().stop_grace;
  int stream_in_flight_ = serve::GrpcOptions().max_stream_in_flight;
  int threads_ = serve::GrpcOptions().threads;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<serve::GrpcServer> server_;
  std::string input_name_, output_name_;
  Tensor input_;
  std::vector<float> want_;
};

// A server over models loaded and unloaded while it serves
// (--model-control-mode explicit): loads and unloads answered from the model
// loader's thread, while a stream and unary calls go on; each request is
// answered equal to whole-model ORT, or refused by name while its model is
// not loaded.
TEST_F(ServeGrpcTest, ModelsLoadedAndUnloadedWhileCallsAndAStreamGoOn) {
  const std::string config =
      "devices: [{name: local, pus: [{name: cpu0, kind: cpu, threads: 1}]}]\n"
      "models: [{name: cam, path: squeezenet.onnx}]\npolicy: {high_level: whole}\n";
  auto open = [config](const std::vector<std::string>& models) {
    EngineOptions options;
    options.no_profile = true;
    options.cache_dir = (*dir_ / "cache").string();
    options.models = models;
    return Engine::OpenText(config, dir_->string(), options);
  };
  absl::StatusOr<std::unique_ptr<serve::ServedEngine>> served = serve::ServedEngine::Explicit({"cam"}, {}, open);
  ASSERT_TRUE(served.ok()) << served.status();
  serve::GrpcOptions go;
  go.port = 0;
  go.keepalive_time = go.keepalive_timeout = std::chrono::minutes(2);
  auto server = serve::GrpcServer::Start(**served, go);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = "127.0.0.1:" + std::to_string((*server)->port());
  auto stub = inference::GRPCInferenceService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  auto change = [&](bool load) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(2));
    if (load) {
      inference::RepositoryModelLoadRequest req;
      req.set_model_name("cam");
      inference::RepositoryModelLoadResponse resp;
      return stub->RepositoryModelLoad(&ctx, req, &resp);
    }
    inference::RepositoryModelUnloadRequest req;
    req.set_model_name("cam");
    inference::RepositoryModelUnloadResponse resp;
    return stub->RepositoryModelUnload(&ctx, req, &resp);
  };
  auto unary = serve::GrpcClient::Connect(address, serve::GrpcClientOptions());
  ASSERT_TRUE(unary.ok()) << unary.status();
  serve::GrpcClientOptions streaming;
  streaming.stream = true;
  auto stream = serve::GrpcClient::Connect(address, streaming);
  ASSERT_TRUE(stream.ok()) << stream.status();
  const Result<Tensors> before = Send(**unary, "cam", Inputs()).get();
  ASSERT_FALSE(before.ok());
  EXPECT_THAT(before.status().message(), ::testing::HasSubstr("model 'cam' is not loaded"));
  const grpc::Status loaded = change(true);
  ASSERT_TRUE(loaded.ok()) << loaded.error_message();
  EXPECT_EQ(Check(Send(**unary, "cam", Inputs()).get()), "");
  EXPECT_EQ(Check(Send(**stream, "cam", Inputs()).get()), "");

  std::atomic<bool> done{false};
  std::atomic<int> answered{0}, refused{0};
  std::vector<std::thread> clients;
  for (serve::GrpcClient* client : std::vector<serve::GrpcClient*>{unary->get(), stream->get()}) {
    clients.emplace_back([&, client] {
      while (!done) {
        const Result<Tensors> r = Send(*client, "cam", Inputs()).get();
        if (r.ok()) {
          EXPECT_EQ(Check(r), "");
          ++answered;
        } else {
          EXPECT_THAT(r.status().message(), ::testing::HasSubstr("model 'cam' is not loaded")) << r.status().ToString();
          ++refused;
        }
      }
    });
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(change(false).ok());
    EXPECT_TRUE(change(true).ok());
  }
  EXPECT_TRUE(WaitUntil([&] { return answered >= 4; }));
  done = true;
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(Check(Send(**stream, "cam", Inputs()).get()), "");
  (*server)->Stop();
}

void ServeGrpcTest::ManyClientThreadsAndAStream(const serve::GrpcClientOptions& client_options) {
  auto client = serve::GrpcClient::Connect(Address(), client_options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->CheckModels({"cam"}).ok());
  EXPECT_EQ((*client)->CheckModels({"nope"}).code(), absl::StatusCode::kNotFound);

  constexpr int kThreads = 3, kEach = 3, kStreamed = 3;  // small: it runs under TSan too
  std::atomic<int> good{0};
  std::vector<std::string> problems(kThreads * kEach);
  std::vector<std::promise<void>> answered(kThreads * kEach);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const int k = t * kEach + i;
        InferOptions o;
        o.priority = t % 2;
        (*client)->InferAsync("cam", Inputs(), o, [&, k](Result<Tensors> r) {
          problems[k] = Check(r);
          if (problems[k].empty()) ++good;
          answered[k].set_value();
        });
      }
    });
  }
  // Meanwhile a stream of its own.
  auto stub = inference::GRPCInferenceService::NewStub(grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_wait_for_ready(true);  // slow under sanitizers: wait for the connection
  auto stream = stub->ModelStreamInfer(&ctx);
  inference::ModelInferRequest req = RequestWithoutBytes();
  req.add_raw_input_contents(std::string(reinterpret_cast<const char*>(input_.bytes().data()), input_.byte_size()));
  int written = 0;
  for (int i = 0; i < kStreamed && stream->Write(req); ++i) ++written;
  stream->WritesDone();
  int streamed = 0;
  inference::ModelStreamInferResponse resp;
  while (stream->Read(&resp)) {
    EXPECT_EQ(resp.error_message(), "");
    ++streamed;
  }
  const grpc::Status finished = stream->Finish();
  for (std::thread& t : threads) t.join();
  EXPECT_TRUE(finished.ok()) << finished.error_code() << " " << finished.error_message();
  EXPECT_EQ(written, kStreamed);
  EXPECT_EQ(streamed, kStreamed);
  for (auto& a : answered) a.get_future().wait();
  client->reset();  // joins its thread, which may still be inside the last set_value
  for (const std::string& p : problems) EXPECT_EQ(p, "");
  EXPECT_EQ(good.load(), kThreads * kEach);
}

TEST_F(ServeGrpcTest, ManyClientThreadsAndAStreamAtOnce) { ManyClientThreadsAndAStream(); }

// An engine (no profile) serving the model `b` builds, as `name`, whole on
// one CPU PU of one thread; the model is written to `dir`/`name`.onnx.
Result<std::unique_ptr<Engine>> OpenBuiltModel(const fs::path& dir, const graph::GraphBuilder& b,
                                               const std::string& name) {
  absl::StatusOr<std::string> bytes = b.Serialize();
  EXPECT_TRUE(bytes.ok()) << bytes.status();  // an empty file then fails to open, naming it
  std::ofstream(dir / (name + ".onnx"), std::ios::binary) << bytes.value_or("");
  EngineOptions options;
  options.no_profile = true;
  options.cache_dir = (dir / "cache").string();
  return Engine::OpenText("devices: [{name: local, pus: [{name: cpu0, kind: cpu, threads: 1}]}]\n"
                          "models: [{name: " + name + ", path: " + name + ".onnx}]\n"
                          "policy: {high_level: whole}\n",
                          dir.string(), options);
}

// A stream whose client sends and does not read is not read further once
// --stream-in-flight of its answers are unanswered or unwritten: its answers
// do not pile up in the server. HTTP/2 holds the rest: the client's window
// (64 KiB, BDP probing off) is smaller than one answer of `echo` (80 KiB),
// so the server can have answered only a few of the 12 requests sent. Once
// the client reads, the stream goes on, and every request is answered.
TEST(ServeGrpcStream, AStreamWhoseClientDoesNotReadIsNotReadFurther) {
  const fs::path dir = fs::temp_directory_path() / ("baton_serve_grpc_echo_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  constexpr int64_t kFloats = 20480;  // 80 KiB
  graph::GraphBuilder b;
  b.AddInput("x", dtype::kFloat, {int64_t{1}, kFloats});
  b.AddNode("Identity", {"x"}, {"y"});
  b.AddOutput("y", dtype::kFloat, {int64_t{1}, kFloats});
  Result<std::unique_ptr<Engine>> engine = OpenBuiltModel(dir, b, "echo");
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  serve::GrpcOptions go;
  go.port = 0;
  go.max_stream_in_flight = 1;
  go.keepalive_time = go.keepalive_timeout = std::chrono::minutes(2);  // ThreadSanitizer stalls
  auto server = serve::GrpcServer::Start(**engine, go);
  ASSERT_TRUE(server.ok()) << server.status();

  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);  // the client's receive window stays at 64 KiB
  auto stub = inference::GRPCInferenceService::NewStub(grpc::CreateCustomChannel(
      "127.0.0.1:" + std::to_string((*server)->port()), grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext ctx;
  ctx.set_wait_for_ready(true);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  auto stream = stub->ModelStreamInfer(&ctx);
  inference::ModelInferRequest req;
  req.set_model_name("echo");
  inference::ModelInferRequest::InferInputTensor* in = req.add_inputs();
  in->set_name("x");
  in->set_datatype("FP32");
  in->add_shape(1);
  in->add_shape(kFloats);
  std::vector<float> x(kFloats);
  for (int64_t i = 0; i < kFloats; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i);
  req.add_raw_input_contents(std::string(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float)));
  constexpr int kSent = 12;
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; i < kSent && stream->Write(req); ++i) ++written;
    stream->WritesDone();
  });
  auto answered = [&] { return (*engine)->Stats().models[0].completed; };
  // The server answers a few, then stops reading. (Without the bound it
  // reads and answers all 12 well within the 3 s this waits for that.)
  EXPECT_TRUE(WaitUntil([&] { return answered() > 0; }));
  EXPECT_FALSE(WaitUntil([&] { return answered() >= kSent / 2; }, std::chrono::seconds(3)))
      << answered() << " of " << kSent << " requests were read and answered while the client read none";
  // The client reads: everything is answered, each the same as its input.
  int streamed = 0;
  inference::ModelStreamInferResponse resp;
  while (stream->Read(&resp)) {
    EXPECT_EQ(resp.error_message(), "");
    ASSERT_EQ(resp.infer_response().raw_output_contents_size(), 1);
    EXPECT_EQ(resp.infer_response().raw_output_contents(0), req.raw_input_contents(0));
    ++streamed;
  }
  writer.join();
  const grpc::Status finished = stream->Finish();
  EXPECT_TRUE(finished.ok()) << finished.error_code() << " " << finished.error_message();
  EXPECT_EQ(written.load(), kSent);
  EXPECT_EQ(streamed, kSent);
  (*server)->Stop();
  (*engine)->Close();
  std::error_code ec;
  fs::remove_all(dir, ec);
}

// The same when every run may go on gRPC's threads (GrpcOptions::run_here_up_to
// above any run time, once one request has been measured): callers of the
// engine run models and answer calls on gRPC's threads while PU workers answer
// others.
TEST_F(ServeGrpcTest, ManyClientThreadsAndAStreamWhileRunsGoOnGrpcsThreads) {
  run_here_up_to_ = std::chrono::seconds(1);
  Start(nullptr);
  auto client = serve::GrpcClient::Connect(Address(), {});
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ(Check(Send(**client, "cam", Inputs()).get()), "");
  ManyClientThreadsAndAStream();
}

// The same with four threads polling the server's completion queue
// (GrpcOptions::threads): one call's events (its arrival, its answer from a PU
// worker, its end) and one stream's reads and writes may then be handled on
// different threads at once; fast runs go on those threads too. With unary
// calls and with every call on one stream.
TEST_F(ServeGrpcTest, ManyClientThreadsAndAStreamOnFourPollingThreads) {
  threads_ = 4;
  run_here_up_to_ = std::chrono::seconds(1);
  Start(nullptr);
  ManyClientThreadsAndAStream();
  serve::GrpcClientOptions streaming;
  streaming.stream = true;
  ManyClientThreadsAndAStream(streaming);
}

// The standard health service, served by baton itself: Check answers
// SERVING for the server and the KServe service and NOT_FOUND for another;
// Watch sends the status at once (SERVICE_UNKNOWN for another service), and
// when the server stops, NOT_SERVING and then the end of the call
// (UNAVAILABLE), so a watcher does not hold up the stop for its grace period.
TEST_F(ServeGrpcTest, HealthChecksAndWatchesSeeTheServerStop) {
  namespace health = grpc::health::v1;
  auto stub = health::Health::NewStub(grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials()));
  for (const std::string service : {"", "inference.GRPCInferenceService"}) {
    grpc::ClientContext ctx;
    health::HealthCheckRequest req;
    req.set_service(service);
    health::HealthCheckResponse resp;
    const grpc::Status st = stub->Check(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << service << ": " << st.error_message();
    EXPECT_EQ(resp.status(), health::HealthCheckResponse::SERVING) << service;
  }
  {
    grpc::ClientContext ctx;
    health::HealthCheckRequest req;
    req.set_service("nope");
    health::HealthCheckResponse resp;
    const grpc::Status st = stub->Check(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(st.error_message(), ::testing::HasSubstr("unknown service 'nope'"));
  }
  grpc::ClientContext server_ctx, other_ctx;
  health::HealthCheckRequest server_req, other_req;
  other_req.set_service("nope");
  auto server_watch = stub->Watch(&server_ctx, server_req);
  auto other_watch = stub->Watch(&other_ctx, other_req);
  health::HealthCheckResponse seen;
  ASSERT_TRUE(server_watch->Read(&seen));
  EXPECT_EQ(seen.status(), health::HealthCheckResponse::SERVING);
  ASSERT_TRUE(other_watch->Read(&seen));
  EXPECT_EQ(seen.status(), health::HealthCheckResponse::SERVICE_UNKNOWN);

  std::thread stop([this] { server_->Stop(); });
  ASSERT_TRUE(server_watch->Read(&seen));
  EXPECT_EQ(seen.status(), health::HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(server_watch->Read(&seen));
  const grpc::Status server_end = server_watch->Finish();
  EXPECT_EQ(server_end.error_code(), grpc::StatusCode::UNAVAILABLE) << server_end.error_message();
  EXPECT_THAT(server_end.error_message(), ::testing::HasSubstr("the server is stopping"));
  EXPECT_FALSE(other_watch->Read(&seen)) << "an unknown service gets nothing more";
  const grpc::Status other_end = other_watch->Finish();
  EXPECT_EQ(other_end.error_code(), grpc::StatusCode::UNAVAILABLE) << other_end.error_message();
  stop.join();
}

// A method the server does not implement (Triton's CUDA shared memory and
// trace calls, or any other name) is answered UNIMPLEMENTED at once: on the
// asynchronous API nothing would ever ask gRPC for such a call, so gRPC
// answers it from the server's completion queue.
TEST_F(ServeGrpcTest, AMethodTheServerLacksIsAnsweredUnimplemented) {
  grpc::GenericStub generic(grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials()));
  for (const std::string method :
       {"/inference.GRPCInferenceService/CudaSharedMemoryStatus", "/inference.GRPCInferenceService/TraceSetting",
        "/no.such.Service/Call"}) {
    grpc::Slice empty("");
    grpc::ByteBuffer request(&empty, 1), response;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));  // a bound, not a timing
    std::promise<grpc::Status> result;
    generic.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response,
                      [&](grpc::Status st) { result.set_value(std::move(st)); });
    const grpc::Status st = result.get_future().get();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED) << method << ": " << st.error_message();
  }
}

// A watcher that goes away before the server stops: its call ends and is
// freed (the server's Stop, which waits for every call, returns).
TEST_F(ServeGrpcTest, AWatcherThatCancelsEndsItsCall) {
  namespace health = grpc::health::v1;
  auto stub = health::Health::NewStub(grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  auto watch = stub->Watch(&ctx, health::HealthCheckRequest());
  health::HealthCheckResponse seen;
  ASSERT_TRUE(watch->Read(&seen));
  ctx.TryCancel();
  EXPECT_FALSE(watch->Read(&seen));
  EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::CANCELLED);
  server_->Stop();
}

// baton's client with every call on one ModelStreamInfer stream
// (GrpcClientOptions::stream): calls from several threads matched to their
// answers by id, each equal to whole-model ORT; an answer with an error keeps
// its status code; inputs through shared memory work the same way.
TEST_F(ServeGrpcTest, StreamingClientMatchesAnswersAndKeepsErrorCodes) {
  serve::GrpcClientOptions streaming;
  streaming.stream = true;
  ManyClientThreadsAndAStream(streaming);

  auto client = serve::GrpcClient::Connect(Address(), streaming);
  ASSERT_TRUE(client.ok()) << client.status();
  auto call = [&](const std::string& model, Tensors inputs) { return Send(**client, model, std::move(inputs)).get(); };
  Result<Tensors> unknown = call("nope", Inputs());
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument) << unknown.status().ToString();
  EXPECT_THAT(std::string(unknown.status().message()), ::testing::HasSubstr("nope"));
  Tensors wrong;
  wrong.emplace("not_an_input", input_.Clone());
  Result<Tensors> bad_input = call("cam", std::move(wrong));
  ASSERT_FALSE(bad_input.ok());
  EXPECT_EQ(bad_input.status().code(), StatusCode::kInvalidArgument) << bad_input.status().ToString();
  EXPECT_THAT(std::string(bad_input.status().message()), ::testing::HasSubstr("not_an_input"));
  // The stream goes on after errors.
  EXPECT_EQ(Check(call("cam", Inputs())), "");
  client->reset();  // ends its stream, which the server's Stop would otherwise wait for

  Start(std::make_shared<serve::SharedMemoryRegistry>());
  serve::GrpcClientOptions shm_streaming = streaming;
  shm_streaming.shared_memory = true;
  auto shm_client = serve::GrpcClient::Connect(Address(), shm_streaming);
  ASSERT_TRUE(shm_client.ok()) << shm_client.status();
  ExpectCallsAnswered(**shm_client, 4);
}

// A server stopping under a streaming client: every call is answered (OK,
// or UNAVAILABLE once the server stops reading); the first UNAVAILABLE
// answer makes the client half-close its stream, which lets the server's
// Stop finish (its grace period here is an hour: Stop returns only because
// the stream ended); later calls go as ModelInfer calls, which the stopped
// server refuses; the destructor returns.
TEST_F(ServeGrpcTest, StreamingClientWhenTheServerStops) {
  stop_grace_ = std::chrono::hours(1);
  Start(nullptr);
  std::unique_ptr<serve::GrpcClient> client = StreamingClient();
  ASSERT_NE(client, nullptr);
  auto call = [&] { return Send(*client, "cam", Inputs()).get(); };
  EXPECT_EQ(Check(call()), "");
  std::thread stopper([&] { server_->Stop(); });
  Result<Tensors> refused = call();
  for (int i = 0; i < 10000 && refused.ok(); ++i) refused = call();  // OK until the server stops reading
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable) << refused.status().ToString();
  stopper.join();
  Result<Tensors> late = call();
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), StatusCode::kUnavailable) << late.status().ToString();
  client.reset();
}

// A client that keeps an idle stream open does not hold up the server's
// Stop: the server ends the stream (UNAVAILABLE) once it has been quiet for
// a second. With an hour of grace, Stop returns only because of that; the
// client then sends its next call as a ModelInfer call, which the stopped
// server refuses.
TEST_F(ServeGrpcTest, AnIdleStreamDoesNotHoldUpStop) {
  stop_grace_ = std::chrono::hours(1);
  Start(nullptr);
  std::unique_ptr<serve::GrpcClient> client = StreamingClient();
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(Check(Send(*client, "cam", Inputs()).get()), "");
  server_->Stop();  // the client never half-closes its stream
  Result<Tensors> late = Send(*client, "cam", Inputs()).get();
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), StatusCode::kUnavailable) << late.status().ToString();
  client.reset();
}

// A server that takes stream messages and never answers them: the streaming
// client fails each call once its deadline plus call_slack has passed, and
// its destructor ends the stream.
TEST(ServeGrpcClient, StreamingCallsWithoutAnAnswerFailOnTime) {
  class Silent final : public inference::GRPCInferenceService::CallbackService {
    grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* ctx, const inference::ServerMetadataRequest*,
                                             inference::ServerMetadataResponse* resp) override {
      resp->set_name("silent");
      auto* r = ctx->DefaultReactor();
      r->Finish(grpc::Status::OK);
      return r;
    }
    grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>* ModelStreamInfer(
        grpc::CallbackServerContext*) override {
      // Reads every message, answers none, and ends the stream when the client stops sending.
      class Reader final : public grpc::ServerBidiReactor<inference::ModelInferRequest,
                                                          inference::ModelStreamInferResponse> {
       public:
        Reader() { StartRead(&in_); }
        void OnReadDone(bool ok) override {
          if (ok) {
            StartRead(&in_);
          } else {
            Finish(grpc::Status::OK);
          }
        }
        void OnDone() override { delete this; }

       private:
        inference::ModelInferRequest in_;
      };
      return new Reader;
    }
  };
  Silent service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  serve::GrpcClientOptions streaming;
  streaming.stream = true;
  streaming.call_slack = std::chrono::seconds(1);
  {
    auto client = serve::GrpcClient::Connect("127.0.0.1:" + std::to_string(port), streaming);
    ASSERT_TRUE(client.ok()) << client.status();
    InferOptions o;
    o.deadline = std::chrono::milliseconds(100);
    Tensors in;
    in.emplace("x", Tensor(dtype::kFloat, {1}, std::vector<std::byte>(sizeof(float))));
    const auto sent = std::chrono::steady_clock::now();
    std::future<Result<Tensors>> future = Send(**client, "m", std::move(in), o);
    ASSERT_EQ(future.wait_for(std::chrono::seconds(60)), std::future_status::ready);
    const auto waited = std::chrono::steady_clock::now() - sent;
    Result<Tensors> r = future.get();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
    EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("did not answer on the stream"));
    EXPECT_GE(waited, std::chrono::milliseconds(1100));  // not before the deadline plus the slack
  }
  server->Shutdown();
}

// The classification extension answers "value:index:label" when the model's
// config names a labels file.
TEST_F(ServeGrpcTest, ClassificationAnswersCarryTheConfiguredLabels) {
  labels_ = want_.size();
  Start(nullptr);
  auto stub = inference::GRPCInferenceService::NewStub(grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials()));
  inference::ModelInferRequest req = RequestWithoutBytes();
  req.add_raw_input_contents(std::string(reinterpret_cast<const char*>(input_.bytes().data()), input_.byte_size()));
  auto* o = req.add_outputs();
  o->set_name(output_name_);
  (*o->mutable_parameters())["classification"].set_int64_param(1);
  grpc::ClientContext ctx;
  ctx.set_wait_for_ready(true);
  inference::ModelInferResponse resp;
  const grpc::Status st = stub->ModelInfer(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.outputs_size(), 1);
  EXPECT_EQ(resp.outputs(0).datatype(), "BYTES");
  const std::string& raw = resp.raw_output_contents(0);
  ASSERT_GE(raw.size(), 4u);
  uint32_t n = 0;
  std::memcpy(&n, raw.data(), 4);
  ASSERT_EQ(raw.size(), 4u + n);
  const size_t best = static_cast<size_t>(std::max_element(want_.begin(), want_.end()) - want_.begin());
  EXPECT_THAT(raw.substr(4), ::testing::EndsWith(":" + std::to_string(best) + ":class " + std::to_string(best)));
}

TEST_F(ServeGrpcTest, StopWhileCallsAreInFlightAnswersThemAll) {
  // Stop waits for what it accepted; calls still open after stop_grace are
  // cancelled (that bound has tests of its own). Under ThreadSanitizer the
  // twelve runs once took longer than the default 30 s, and the last two
  // answers were cancelled after the engine had completed them.
  stop_grace_ = std::chrono::hours(1);
  Start(nullptr);
  std::atomic<int> ok{0}, refused{0}, other{0};
  std::mutex mu;
  std::string first_other;
  std::vector<std::string> refusals;
  // A gate, not a sleep: Stop begins when the first answer arrives, so the
  // server has accepted at least one call and the others are in flight or
  // still on their way.
  std::promise<void> first_answer;
  std::once_flag first_once;
  {
    auto client = serve::GrpcClient::Connect(Address(), {});
    ASSERT_TRUE(client.ok()) << client.status();
    for (int i = 0; i < 12; ++i) {
      (*client)->InferAsync("cam", Inputs(), {}, [&](Result<Tensors> r) {
        if (r.ok()) {
          ++ok;
          std::call_once(first_once, [&] { first_answer.set_value(); });
        } else if (r.status().code() == StatusCode::kUnavailable ||
                   r.status().code() == StatusCode::kCancelled) {
          ++refused;  // not accepted before Stop began: gRPC turns it away
          std::lock_guard lock(mu);
          refusals.push_back(r.status().ToString());
        } else {
          ++other;
          std::lock_guard lock(mu);
          if (first_other.empty()) first_other = r.status().ToString();
        }
      });
    }
    // Bounded: every call carries a deadline, so an answer comes whatever happens.
    ASSERT_EQ(first_answer.get_future().wait_for(std::chrono::seconds(120)), std::future_status::ready)
        << "no call was answered";
    server_->Stop();  // waits for the calls it accepted
    // The client's destructor waits for its own calls.
  }
  EXPECT_EQ(ok + refused + other, 12) << first_other;
  EXPECT_EQ(other.load(), 0) << first_other;
  EXPECT_GT(ok.load(), 0);
  // Every call the server accepted reached the engine and was answered OK.
  const EngineStats stats = engine_->Stats();
  EXPECT_EQ(stats.models[0].submitted, static_cast<uint64_t>(ok.load()))
      << (refusals.empty() ? "" : refusals[0]);
  EXPECT_EQ(stats.models[0].completed, static_cast<uint64_t>(ok.load()));
}

TEST(ServeGrpcDeadline, TheEarlierOfTimeoutAndTheCallsDeadline) {
  using std::chrono::milliseconds;
  using std::chrono::nanoseconds;
  const auto now = std::chrono::system_clock::now();
  const auto none = std::chrono::system_clock::time_point::max();
  EXPECT_EQ(serve::RequestDeadline(std::nullopt, none, now), std::nullopt);
  EXPECT_EQ(serve::RequestDeadline(milliseconds(5), none, now), nanoseconds(milliseconds(5)));
  EXPECT_EQ(serve::RequestDeadline(std::nullopt, now + milliseconds(7), now), nanoseconds(milliseconds(7)));
  EXPECT_EQ(serve::RequestDeadline(milliseconds(5), now + milliseconds(7), now), nanoseconds(milliseconds(5)));
  EXPECT_EQ(serve::RequestDeadline(milliseconds(9), now + milliseconds(7), now), nanoseconds(milliseconds(7)));
  // Passed already: dropped at once, never a negative deadline.
  EXPECT_EQ(serve::RequestDeadline(std::nullopt, now - milliseconds(1), now), nanoseconds(0));
  EXPECT_EQ(serve::RequestDeadline(milliseconds(5), now - milliseconds(1), now), nanoseconds(0));
  // A deadline centuries away is bounded as the timeout parameter is (1e15 µs).
  const auto far = now + std::chrono::hours(24 * 365 * 200);
  EXPECT_EQ(serve::RequestDeadline(std::nullopt, far, now), nanoseconds(std::chrono::microseconds(1'000'000'000'000'000)));
}

// One PU taken by a model that runs for minutes (tests/spin_model.h) and
// `cam`, served by a server of their own: what waits behind the spin can
// only be answered by being dropped, however slow the build.
class ServeGrpcSpinTest : public ServeGrpcTest {
 protected:
  void SetUp() override {
    ServeGrpcTest::SetUp();
    absl::StatusOr<std::string> spin = testing::SpinModelBytes();
    ASSERT_TRUE(spin.ok()) << spin.status();
    std::ofstream(*dir_ / "spin.onnx", std::ios::binary) << *spin;
    EngineOptions options;
    options.no_profile = true;
    options.cache_dir = (*dir_ / "cache").string();
    Result<std::unique_ptr<Engine>> engine = Engine::OpenText(
        "devices: [{name: local, pus: [{name: cpu0, kind: cpu, threads: 1}]}]\n"
        "models:\n  - {name: spin, path: spin.onnx, execution_timeout_ms: 600000}\n"
        "  - {name: cam, path: squeezenet.onnx}\n"
        "policy: {high_level: whole}\n",
        dir_->string(), options);
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    spin_engine_ = std::move(engine).value();
    serve::GrpcOptions go;
    go.port = 0;
    go.keepalive_time = go.keepalive_timeout = std::chrono::minutes(2);  // as in Start
    auto server = serve::GrpcServer::Start(*spin_engine_, go);
    ASSERT_TRUE(server.ok()) << server.status();
    spin_server_ = *std::move(server);
    stub_ = inference::GRPCInferenceService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(spin_server_->port()), grpc::InsecureChannelCredentials()));
    spin_req_.set_model_name("spin");
    auto* x = spin_req_.add_inputs();
    x->set_name("x");
    x->set_datatype("FP32");
    x->add_shape(1);
    spin_req_.add_raw_input_contents(std::string(sizeof(float), '\0'));
    cam_req_ = RequestWithoutBytes();
    cam_req_.add_raw_input_contents(
        std::string(reinterpret_cast<const char*>(input_.bytes().data()), input_.byte_size()));
  }
  void TearDown() override {
    if (spin_server_) spin_server_->Stop();
    if (spin_engine_) spin_engine_->Close();
    cq_.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
    }
    ServeGrpcTest::TearDown();
  }

  // A call in flight on cq_ and what gRPC writes into when it ends. The
  // fixture keeps it: a check that fails returns from the test early, and
  // TearDown's drain must not then write into the test's destroyed frame.
  struct AsyncCall {
    grpc::ClientContext ctx;
    inference::ModelInferResponse resp;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<inference::ModelInferResponse>> reader;
  };
  // Starts a call on the completion queue, tagged `tag`.
  AsyncCall& StartCall(const inference::ModelInferRequest& req, std::intptr_t tag, bool wait_for_ready = false) {
    AsyncCall& call = *calls_.emplace_back(std::make_unique<AsyncCall>());
    call.ctx.set_wait_for_ready(wait_for_ready);
    call.reader = stub_->AsyncModelInfer(&call.ctx, req, &cq_);
    call.reader->Finish(&call.resp, &call.status, reinterpret_cast<void*>(tag));
    return call;
  }
  // The next finished call on the queue (false once shut down).
  bool NextFinished() {
    void* tag = nullptr;
    bool ok = false;
    return cq_.Next(&tag, &ok);
  }
  EngineStats SpinStats() const { return spin_engine_->Stats(); }
  // baton's client of the spin server, unary or on a stream.
  std::unique_ptr<serve::GrpcClient> SpinClient(bool stream) const {
    serve::GrpcClientOptions options;
    options.stream = stream;
    auto client = serve::GrpcClient::Connect("127.0.0.1:" + std::to_string(spin_server_->port()), options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }
  // Sends one request through `client`; its answer comes to the future.
  static std::future<Result<Tensors>> Ask(serve::GrpcClient& client, const std::string& model, Tensors in,
                                          const InferOptions& options = {}) {
    auto answer = std::make_shared<std::promise<Result<Tensors>>>();
    std::future<Result<Tensors>> f = answer->get_future();
    client.InferAsync(model, std::move(in), options, [answer](Result<Tensors> r) { answer->set_value(std::move(r)); });
    return f;
  }
  static Tensors SpinInput() {
    Tensors in;
    in.emplace("x", Tensor(dtype::kFloat, {1}));
    return in;
  }
  Tensors CamInput() const {
    Tensors in;
    in.emplace(input_name_, input_.Clone());
    return in;
  }
  // The answer of `f` (waited for at most 60 s): CANCELLED.
  static void ExpectCancelled(std::future<Result<Tensors>>& f) {
    ASSERT_EQ(f.wait_for(std::chrono::seconds(60)), std::future_status::ready);
    Result<Tensors> r = f.get();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kCancelled) << r.status().ToString();
  }

  std::unique_ptr<Engine> spin_engine_;
  std::unique_ptr<serve::GrpcServer> spin_server_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
  inference::ModelInferRequest spin_req_, cam_req_;
  grpc::CompletionQueue cq_;
  std::vector<std::unique_ptr<AsyncCall>> calls_;
};

// A call's gRPC deadline bounds its request: a call whose client has given
// up is dropped, not run once the PU is free (for its deadline, or as
// cancelled when gRPC's own deadline fires first).
TEST_F(ServeGrpcSpinTest, ACallsGrpcDeadlineDropsItsRequest) {
  AsyncCall& spin = StartCall(spin_req_, 1, /*wait_for_ready=*/true);
  ASSERT_TRUE(WaitUntil([&] { return SpinStats().devices[0].running == 1; }));
  // Calls with a short deadline until one has reached the engine: a call may
  // expire in the client before it is sent, so the deadline doubles every
  // ten calls, from 1 ms to at most 4 s (under ThreadSanitizer, 1 ms is
  // often too short to reach the server). Every one of them is far shorter
  // than the spin request that holds the PU.
  for (int i = 0; i < 130 && SpinStats().models[1].submitted == 0; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1 << std::min(i / 10, 12)));
    inference::ModelInferResponse resp;
    const grpc::Status s = stub_->ModelInfer(&ctx, cam_req_, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  }
  ASSERT_GT(SpinStats().models[1].submitted, 0u) << "no call with a short deadline reached the server";
  // Every request that reached the engine is dropped and none waits. (A call
  // its client gave up on may still reach the server after the loop, so the
  // count is read with the rest, not once before.)
  ASSERT_TRUE(WaitUntil([&] {
    const EngineStats stats = SpinStats();
    const ModelStats& cam = stats.models[1];
    return cam.deadline_exceeded + cam.cancelled == cam.submitted && stats.devices[0].queued == 0;
  })) << "a request whose call's deadline passed was not dropped";
  EXPECT_EQ(SpinStats().models[1].completed, 0u);
  spin.ctx.TryCancel();
  ASSERT_TRUE(NextFinished());
  EXPECT_EQ(spin.status.error_code(), grpc::StatusCode::CANCELLED) << spin.status.error_message();
}

// A call its client cancels (or whose connection breaks) cancels its
// request: one waiting is answered at once and never runs, a running one is
// stopped.
TEST_F(ServeGrpcSpinTest, ACancelledCallCancelsItsRequest) {
  AsyncCall& running = StartCall(spin_req_, 1, /*wait_for_ready=*/true);
  ASSERT_TRUE(WaitUntil([&] { return SpinStats().devices[0].running == 1; }));
  AsyncCall& waiting = StartCall(cam_req_, 2);
  ASSERT_TRUE(WaitUntil([&] { return SpinStats().models[1].submitted == 1; }));

  // The waiting call first, and only once the engine has it cancelled the
  // running one: the two cancellations reach the engine on gRPC's threads in
  // no set order, and the waiting request would run if the PU came free first.
  waiting.ctx.TryCancel();
  ASSERT_TRUE(NextFinished());
  ASSERT_TRUE(WaitUntil([&] { return SpinStats().models[1].cancelled == 1; }));
  running.ctx.TryCancel();
  ASSERT_TRUE(NextFinished());
  EXPECT_EQ(waiting.status.error_code(), grpc::StatusCode::CANCELLED) << waiting.status.error_message();
  EXPECT_EQ(running.status.error_code(), grpc::StatusCode::CANCELLED) << running.status.error_message();
  // The engine answered both CANCELLED, and the PU is free again: the run was stopped.
  ASSERT_TRUE(WaitUntil([&] {
    const EngineStats s = SpinStats();
    return s.models[0].cancelled == 1 && s.models[1].cancelled == 1 && s.devices[0].running == 0;
  }));
  grpc::ClientContext ctx;
  inference::ModelInferResponse resp;
  const grpc::Status s = stub_->ModelInfer(&ctx, cam_req_, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  const EngineStats stats = SpinStats();
  EXPECT_EQ(stats.models[1].completed, 1u);
  EXPECT_EQ(stats.pus[0].runs, 2u) << "the cancelled request that waited ran";
}

// GrpcClient::CancelAll gives up on every call in flight, unary or on the
// stream: each is answered CANCELLED at once, and the server cancels its
// request: the running one is stopped and nothing is left queued. (The
// waiting one may start in the moment between the two cancellations
// reaching the server, and then end either way.) The client goes on; with a
// stream, on a new stream once the cancelled one has ended.
TEST_F(ServeGrpcSpinTest, TheClientsCancelAllEndsItsCallsAndTheirRequests) {
  uint64_t cancelled = 0;
  for (bool stream : {false, true}) {
    SCOPED_TRACE(stream ? "stream" : "unary");
    std::unique_ptr<serve::GrpcClient> client = SpinClient(stream);
    ASSERT_NE(client, nullptr);
    const ModelStats cam_before = SpinStats().models[1];
    std::future<Result<Tensors>> running = Ask(*client, "spin", SpinInput());
    ASSERT_TRUE(WaitUntil([&] { return SpinStats().devices[0].running == 1; }));
    std::future<Result<Tensors>> waiting = Ask(*client, "cam", CamInput());
    ASSERT_TRUE(WaitUntil([&] { return SpinStats().devices[0].queued == 1; }));
    client->CancelAll();
    ExpectCancelled(running);
    ExpectCancelled(waiting);
    cancelled += 1;
    ASSERT_TRUE(WaitUntil([&] {
      const EngineStats s = SpinStats();
      const uint64_t cam_ended = s.models[1].cancelled + s.models[1].completed;
      return s.models[0].cancelled == cancelled && cam_ended == cam_before.cancelled + cam_before.completed + 1 &&
             s.devices[0].running == 0 && s.devices[0].queued == 0;
    }));
    // The client goes on: later calls are answered. With a stream, those made
    // before the cancelled stream has wholly ended go as ModelInfer calls;
    // then one opens a new stream (bounded: each call is a chance).
    serve::GrpcClient::Counts counts = client->counts();
    for (int i = 0; i < 200 && (i == 0 || (stream && counts.streams_opened < 2)); ++i) {
      std::future<Result<Tensors>> later = Ask(*client, "cam", CamInput());
      ASSERT_EQ(later.wait_for(std::chrono::seconds(60)), std::future_status::ready);
      Result<Tensors> r = later.get();
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      counts = client->counts();
    }
    if (stream) {
      EXPECT_EQ(counts.streams_opened, 2u);
      EXPECT_EQ(counts.stream_calls, 3u) << "the two cancelled calls and the first after the new stream opened";
    } else {
      EXPECT_EQ(counts.streams_opened, 0u);
      EXPECT_EQ(counts.stream_calls, 0u);
      EXPECT_EQ(counts.unary_calls, 3u);
    }
  }
}

// InferOptions::cancel works through the client as in the engine: a call
// whose token is cancelled is answered CANCELLED at once and the server
// cancels its request. With a stream, a call given a token goes as a
// ModelInfer call (a stream message cannot be cancelled alone). A token
// cancelled before the call sends nothing.
TEST_F(ServeGrpcSpinTest, TheClientCancelsACallWhoseTokenIsCancelled) {
  uint64_t cancelled = 0;
  for (bool stream : {false, true}) {
    SCOPED_TRACE(stream ? "stream" : "unary");
    std::unique_ptr<serve::GrpcClient> client = SpinClient(stream);
    ASSERT_NE(client, nullptr);
    InferOptions o;
    o.cancel = std::make_shared<CancelToken>();
    std::future<Result<Tensors>> running = Ask(*client, "spin", SpinInput(), o);
    ASSERT_TRUE(WaitUntil([&] { return SpinStats().devices[0].running == 1; }));
    o.cancel->Cancel();
    ExpectCancelled(running);
    cancelled += 1;
    ASSERT_TRUE(WaitUntil([&] {
      const EngineStats s = SpinStats();
      return s.models[0].cancelled == cancelled && s.devices[0].running == 0;
    }));
    // Cancelled before: answered here, nothing reaches the server.
    const uint64_t submitted = SpinStats().models[0].submitted;
    std::future<Result<Tensors>> never = Ask(*client, "spin", SpinInput(), o);
    ASSERT_EQ(never.wait_for(std::chrono::seconds(0)), std::future_status::ready);  // answered inside InferAsync
    Result<Tensors> r = never.get();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kCancelled);
    EXPECT_THAT(r.status().message(), ::testing::HasSubstr("before it was sent"));
    EXPECT_EQ(SpinStats().models[0].submitted, submitted);
  }
}

TEST_F(ServeGrpcTest, TensorsThroughClientSharedMemory) {
  // Off by default: the client says how to turn it on, and a request naming a region is refused.
  serve::GrpcClientOptions with_shm;
  with_shm.shared_memory = true;
  auto refused = serve::GrpcClient::Connect(Address(), with_shm);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr("--allow-client-shm"));

  Start(std::make_shared<serve::SharedMemoryRegistry>());
  {
    // baton's own client: inputs through its regions, answers equal to whole-model ORT.
    auto client = serve::GrpcClient::Connect(Address(), with_shm);
    ASSERT_TRUE(client.ok()) << client.status();
    ExpectCallsAnswered(**client, 4);
  }

  // A client of the protocol: its own object, an input and a requested output in it.
  const std::string key = "/baton_serve_grpc_test_" + std::to_string(getpid());
  const int fd = shm_open(key.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  const size_t out_at = (input_.byte_size() + 4095) / 4096 * 4096;
  const size_t size = out_at + want_.size() * sizeof(float);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
  auto* mem = static_cast<std::byte*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(mem, MAP_FAILED);
  close(fd);
  std::memcpy(mem, input_.bytes().data(), input_.byte_size());
  auto stub = inference::GRPCInferenceService::NewStub(grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext ctx;
    inference::SystemSharedMemoryRegisterRequest reg;
    reg.set_name("mine");
    reg.set_key(key);
    reg.set_byte_size(size);
    inference::SystemSharedMemoryRegisterResponse none;
    const grpc::Status st = stub->SystemSharedMemoryRegister(&ctx, reg, &none);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  shm_unlink(key.c_str());  // the server has it mapped
  inference::ModelInferRequest req = RequestWithoutBytes();
  auto* in = req.mutable_inputs(0);
  (*in->mutable_parameters())["shared_memory_region"].set_string_param("mine");
  (*in->mutable_parameters())["shared_memory_byte_size"].set_int64_param(static_cast<int64_t>(input_.byte_size()));
  auto* out = req.add_outputs();
  out->set_name(output_name_);
  (*out->mutable_parameters())["shared_memory_region"].set_string_param("mine");
  (*out->mutable_parameters())["shared_memory_offset"].set_int64_param(static_cast<int64_t>(out_at));
  (*out->mutable_parameters())["shared_memory_byte_size"].set_int64_param(
      static_cast<int64_t>(want_.size() * sizeof(float)));
  {
    grpc::ClientContext ctx;
    inference::ModelInferResponse resp;
    const grpc::Status st = stub->ModelInfer(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_EQ(resp.outputs_size(), 1);
    ASSERT_EQ(resp.raw_output_contents_size(), 1);
    EXPECT_EQ(resp.raw_output_contents(0), "") << "written to the region instead";
    EXPECT_EQ(resp.outputs(0).parameters().at("shared_memory_region").string_param(), "mine");
    std::vector<float> got(want_.size());
    std::memcpy(got.data(), mem + out_at, got.size() * sizeof(float));
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want_[i], 1e-4) << i;
  }
  {
    // A region too small for the input is refused, naming the input.
    inference::ModelInferRequest small = req;
    (*small.mutable_inputs(0)->mutable_parameters())["shared_memory_byte_size"].set_int64_param(12);
    grpc::ClientContext ctx;
    inference::ModelInferResponse resp;
    const grpc::Status st = stub->ModelInfer(&ctx, small, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(st.error_message(), ::testing::HasSubstr("input '" + input_name_ + "'"));
  }
  {
    grpc::ClientContext ctx;
    inference::SystemSharedMemoryStatusRequest q;
    inference::SystemSharedMemoryStatusResponse regions;
    ASSERT_TRUE(stub->SystemSharedMemoryStatus(&ctx, q, &regions).ok());
    EXPECT_EQ(regions.regions().count("mine"), 1u);
    EXPECT_EQ(regions.regions().at("mine").byte_size(), size);
    EXPECT_EQ(regions.regions().size(), 1) << "baton's client unregistered its regions when it closed";
  }
  {
    grpc::ClientContext ctx;
    inference::SystemSharedMemoryUnregisterRequest q;
    q.set_name("mine");
    inference::SystemSharedMemoryUnregisterResponse none;
    ASSERT_TRUE(stub->SystemSharedMemoryUnregister(&ctx, q, &none).ok());
  }
  {
    grpc::ClientContext ctx;
    inference::ModelInferResponse resp;
    const grpc::Status st = stub->ModelInfer(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(st.error_message(), ::testing::HasSubstr("no shared memory region 'mine' is registered"));
  }
  munmap(mem, size);
}

}  // namespace
// Inputs in the message: small ones next to the request's fields, large ones
// as slices over the tensor's bytes, in input order. A borrowed input is
// copied before InferAsync returns, so the caller may reuse its buffer at
// once; an adopted one stays alive with the call. y = b - c + a tells a mixed
// up or misplaced input from the right answer.
TEST_F(ServeGrpcTest, PollingThreadsOutsideTheirBoundsAreRefused) {
  for (int threads : {0, 65}) {
    serve::GrpcOptions go;
    go.port = 0;
    go.threads = threads;
    absl::StatusOr<std::unique_ptr<serve::GrpcServer>> bad = serve::GrpcServer::Start(*engine_, go);
    ASSERT_FALSE(bad.ok());
    EXPECT_THAT(bad.status().message(), ::testing::HasSubstr("--grpc-threads must be in 1..64, got"));
  }
}

TEST_F(ServeGrpcTest, KeepaliveSettingsOutsideTheirBoundsAreRefused) {
  serve::GrpcOptions go;
  go.port = 0;
  go.keepalive_timeout = std::chrono::milliseconds(10);
  absl::StatusOr<std::unique_ptr<serve::GrpcServer>> bad = serve::GrpcServer::Start(*engine_, go);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), ::testing::HasSubstr("gRPC keepalive_timeout must be 1 s..1 h, got 10 ms"));
}

// gRPC's memory for messages has a quota: 4 x the request size by default,
// at least 256 MiB; one smaller than a request is refused at start.
TEST_F(ServeGrpcTest, GrpcsMemoryIsBoundedByAQuota) {
  serve::GrpcOptions go;
  EXPECT_EQ(serve::GrpcMemoryQuota(go), size_t{256} << 20);
  go.max_request_bytes = size_t{512} << 20;
  EXPECT_EQ(serve::GrpcMemoryQuota(go), size_t{2} << 30);
  go.memory_quota_bytes = size_t{100} << 20;
  EXPECT_EQ(serve::GrpcMemoryQuota(go), size_t{100} << 20);
  go.port = 0;
  absl::StatusOr<std::unique_ptr<serve::GrpcServer>> bad = serve::GrpcServer::Start(*engine_, go);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(),
              ::testing::HasSubstr("--grpc-memory-mb must be at least --max-request-mb (512) and at most 1048576, got 100"));
  // A server with a small quota serves requests within it.
  go.max_request_bytes = size_t{1} << 20;
  go.memory_quota_bytes = size_t{4} << 20;
  auto small = serve::GrpcServer::Start(*engine_, go);
  ASSERT_TRUE(small.ok()) << small.status();
  auto stub = inference::GRPCInferenceService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*small)->port()), grpc::InsecureChannelCredentials()));
  inference::ModelInferRequest good = RequestWithoutBytes();
  good.add_raw_input_contents(std::string(reinterpret_cast<const char*>(input_.bytes().data()), input_.byte_size()));
  inference::ModelInferResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status st = stub->ModelInfer(&ctx, good, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  (*small)->Stop();
}

TEST_F(ServeGrpcTest, ACompressedMessageIsBoundedOnceInflated) {
  // 16 MiB of zeros gzip to ~16 KiB: the size limit must apply to the
  // inflated message, or one small message could take all the memory.
  serve::GrpcOptions go;
  go.port = 0;
  go.max_request_bytes = size_t{1} << 20;
  auto small = serve::GrpcServer::Start(*engine_, go);
  ASSERT_TRUE(small.ok()) << small.status();
  auto stub = inference::GRPCInferenceService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*small)->port()), grpc::InsecureChannelCredentials()));
  inference::ModelInferRequest req = RequestWithoutBytes();
  req.add_raw_input_contents(std::string(size_t{16} << 20, '\0'));
  grpc::ClientContext ctx;
  ctx.set_compression_algorithm(GRPC_COMPRESS_GZIP);
  inference::ModelInferResponse resp;
  const grpc::Status st = stub->ModelInfer(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_THAT(st.error_message(), ::testing::HasSubstr("larger than max (16777247 vs. 1048576)"));
  // The server goes on serving.
  inference::ModelInferRequest good = RequestWithoutBytes();
  good.add_raw_input_contents(std::string(reinterpret_cast<const char*>(input_.bytes().data()), input_.byte_size()));
  grpc::ClientContext ctx2;
  ASSERT_TRUE(stub->ModelInfer(&ctx2, good, &resp).ok());
  (*small)->Stop();
}

TEST(ServeGrpcClient, LargeAndSmallInputsReachTheServerInOrder) {
  // 128 KiB inputs: past the copy threshold, and past HTTP/2's first 64 KiB
  // window, so part of a message may still be unsent when InferAsync returns.
  constexpr int64_t kRows = 256, kCols = 128;
  const fs::path dir = fs::temp_directory_path() / ("baton_serve_grpc_client_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  graph::GraphBuilder b("sub_add");
  b.AddInput("a_small", dtype::kFloat, {kCols});
  b.AddInput("b_big", dtype::kFloat, {kRows, kCols});
  b.AddInput("c_big", dtype::kFloat, {kRows, kCols});
  b.AddNode("Sub", {"b_big", "c_big"}, {"d"});
  b.AddNode("Add", {"d", "a_small"}, {"y"});
  b.AddOutput("y", dtype::kFloat, {kRows, kCols});
  Result<std::unique_ptr<Engine>> engine = OpenBuiltModel(dir, b, "m");
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  serve::GrpcOptions go;
  go.port = 0;
  go.keepalive_time = go.keepalive_timeout = std::chrono::minutes(2);  // as in ServeGrpcTest::Start
  auto server = serve::GrpcServer::Start(**engine, go);
  ASSERT_TRUE(server.ok()) << server.status();
  // Declared before the client: a failed check below returns with the
  // client's poller still able to answer, and the client (destroyed first)
  // joins it before these go.
  std::vector<std::promise<Result<Tensors>>> answers(2);
  // Under ThreadSanitizer the 128 KiB copies inside gRPC, whose
  // synchronisation it cannot see, cost seconds to tens of seconds each (every
  // access is checked against tests/tsan_net.supp); the default 60 s of slack
  // is not a bound on this test's time there.
  serve::GrpcClientOptions client_options;
  client_options.call_slack = std::chrono::seconds(600);
  auto client = serve::GrpcClient::Connect("127.0.0.1:" + std::to_string((*server)->port()), client_options);
  ASSERT_TRUE(client.ok()) << client.status();

  const size_t n = kRows * kCols;
  std::vector<float> a(kCols), bv(n), c(n), want(n);
  for (size_t i = 0; i < kCols; ++i) a[i] = 1000.0f * static_cast<float>(i);
  for (size_t i = 0; i < n; ++i) {
    bv[i] = static_cast<float>(3 * i);
    c[i] = static_cast<float>(i);
    want[i] = bv[i] - c[i] + a[i % kCols];
  }
  auto owned = [](const std::vector<float>& v, std::vector<int64_t> shape) {
    std::vector<std::byte> raw(v.size() * sizeof(float));
    std::memcpy(raw.data(), v.data(), raw.size());
    return Tensor(dtype::kFloat, std::move(shape), std::move(raw));
  };
  std::vector<float> lent = bv;  // borrowed, then overwritten as soon as InferAsync returns
  auto adopted = std::make_shared<std::vector<float>>(bv);
  for (int call = 0; call < 2; ++call) {
    Tensors in;
    in.emplace("a_small", owned(a, {kCols}));
    in.emplace("b_big", call == 0 ? Tensor::Borrow(dtype::kFloat, {kRows, kCols}, lent.data(), n * sizeof(float))
                                  : Tensor::Adopt(dtype::kFloat, {kRows, kCols}, adopted->data(),
                                                  n * sizeof(float), adopted));
    in.emplace("c_big", owned(c, {kRows, kCols}));
    (*client)->InferAsync("m", std::move(in), {}, [&answers, call](Result<Tensors> r) {
      answers[static_cast<size_t>(call)].set_value(std::move(r));
    });
    if (call == 0) std::fill(lent.begin(), lent.end(), -1.0f);
  }
  adopted.reset();  // the call holds it
  for (int call = 0; call < 2; ++call) {
    Result<Tensors> r = answers[static_cast<size_t>(call)].get_future().get();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->count("y"), 1u);
    std::span<const float> got = r->at("y").data<float>();
    ASSERT_EQ(got.size(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], want[i]) << "call " << call << " element " << i;
  }
  client->reset();
  (*server)->Stop();
  (*engine)->Close();
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace baton
