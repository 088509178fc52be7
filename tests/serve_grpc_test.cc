// The KServe v2 gRPC front-end (serve::GrpcServer) and client
// (serve::GrpcClient) in one process, for what a separate process hides from
// ThreadSanitizer: many client threads and a stream at once, answers equal
// to whole-model ONNX Runtime, the server stopping while calls are in
// flight (every call still answered), and the client's destructor waiting
// for its calls. Run under TSan in CI (scripts/test.sh).
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "baton/backend/ort/ort_runner.h"
#include "baton/baton.h"
#include "baton/graph/model.h"
#include "baton/serve/grpc_client.h"
#include "baton/serve/grpc_server.h"
#include "baton/verify/verify.h"
#include "baton/zoo/zoo.h"
#include "inference/grpc_service.grpc.pb.h"

namespace baton {
namespace {

namespace fs = std::filesystem;

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

  void SetUp() override {
    EngineOptions options;
    options.no_profile = true;
    options.cache_dir = (*dir_ / "cache").string();
    Result<std::unique_ptr<Engine>> engine = Engine::OpenText(
        "devices: [{name: local, pus: [{name: cpu0, kind: cpu, threads: 1}, {name: cpu1, kind: cpu, threads: 1}]}]\n"
        "models: [{name: cam, path: squeezenet.onnx}]\n"
        "policy: {high_level: balanced, stages: 2}\n",
        dir_->string(), options);
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    engine_ = std::move(engine).value();
    serve::GrpcOptions go;
    go.port = 0;
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

  static inline fs::path* dir_ = nullptr;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<serve::GrpcServer> server_;
  std::string input_name_, output_name_;
  Tensor input_;
  std::vector<float> want_;
};

TEST_F(ServeGrpcTest, ManyClientThreadsAndAStreamAtOnce) {
  auto client = serve::GrpcClient::Connect(Address(), {});
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
  inference::ModelInferRequest req;
  req.set_model_name("cam");
  auto* in = req.add_inputs();
  in->set_name(input_name_);
  in->set_datatype("FP32");
  for (int64_t d : input_.shape()) in->add_shape(d);
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
  for (const std::string& p : problems) EXPECT_EQ(p, "");
  EXPECT_EQ(good.load(), kThreads * kEach);
}

TEST_F(ServeGrpcTest, StopWhileCallsAreInFlightAnswersThemAll) {
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

}  // namespace
}  // namespace baton
