// The agent's Execute stream, in one process: deadline budgets at the ends of
// int64 (saturated, not overflowed) and assignment ids that repeat on a
// stream (each id runs once per stream; the memory for it is bounded). The
// PU is a fake whose runs can be held at a gate, so that an assignment stays
// in flight for as long as a test needs, without sleeps.
#include <grpcpp/grpcpp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "baton/agent/v1/agent.grpc.pb.h"
#include "baton/net/content_hash.h"
#include "baton/graph/builder.h"
#include "baton/net/agent_server.h"
#include "baton/net/codec.h"
#include "baton/net/stream_ids.h"

namespace baton::net {
namespace {

using ::testing::HasSubstr;

constexpr auto kRpcTimeout = std::chrono::seconds(60);
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();

// y = Relu(x), x: float [1, 4].
std::string ReluBytes() {
  graph::GraphBuilder b;
  b.AddInput("x", dtype::kFloat, {int64_t{1}, int64_t{4}});
  b.AddNode("Relu", {"x"}, {"y"}, {}, "relu");
  b.AddOutput("y", dtype::kFloat, {int64_t{1}, int64_t{4}});
  absl::StatusOr<std::string> bytes = b.Serialize();
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : std::string();
}

// Claims every node. A run copies `x` to `y`, counts itself, and waits while
// the gate is closed (the gate starts open).
class GatedExecutor : public backend::Executor {
 public:
  const std::string& pu_name() const override { return name_; }
  std::string kind() const override { return "emu"; }
  std::vector<bool> QueryCapability(const graph::Model& model) const override {
    return std::vector<bool>(model.nodes().size(), true);
  }
  absl::StatusOr<std::unique_ptr<backend::PreparedPartition>> Prepare(const graph::Model&,
                                                                      const graph::Submodel&) const override {
    return std::unique_ptr<backend::PreparedPartition>(new Prepared(state_));
  }

  void Close() {
    std::lock_guard lock(state_->mu);
    state_->open = false;
  }
  void Open() {
    std::lock_guard lock(state_->mu);
    state_->open = true;
    state_->cv.notify_all();
  }
  // Blocks until `n` runs have started.
  void WaitForStarted(int n) {
    std::unique_lock lock(state_->mu);
    state_->cv.wait(lock, [&] { return state_->started >= n; });
  }
  int started() const {
    std::lock_guard lock(state_->mu);
    return state_->started;
  }

 private:
  struct State {
    mutable std::mutex mu;
    std::condition_variable cv;
    bool open = true;  // guarded by mu
    int started = 0;   // guarded by mu
  };
  class Prepared : public backend::PreparedPartition {
   public:
    explicit Prepared(std::shared_ptr<State> state) : state_(std::move(state)) {}
    absl::StatusOr<backend::RunResult> Run(
        std::span<const std::pair<std::string, const Tensor*>> inputs, RunCancel* = nullptr) const override {
      {
        std::unique_lock lock(state_->mu);
        ++state_->started;
        state_->cv.notify_all();
        state_->cv.wait(lock, [&] { return state_->open; });
      }
      backend::RunResult result;
      for (const auto& [name, tensor] : inputs) {
        if (name == "x") result.outputs.emplace_back("y", tensor->Clone());
      }
      return result;
    }

   private:
    std::shared_ptr<State> state_;
  };

  std::string name_ = "gated0";
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// An agent with one gated PU and the Relu partition loaded.
class AgentExecuteTest : public ::testing::Test {
 protected:
  void StartAgent(AgentOptions options = AgentOptions()) {
    AgentPu pu;
    pu.name = "gated0";
    pu.kind = "emu";
    pu.executor = &executor_;
    absl::StatusOr<std::unique_ptr<AgentServer>> server = AgentServer::Start(std::move(options), {pu});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
    args.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
    stub_ = pb::Agent::NewStub(
        grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args));

    const std::string bytes = ReluBytes();
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
    pb::LoadReply reply;
    std::unique_ptr<grpc::ClientWriter<pb::LoadChunk>> writer = stub_->Load(&context, &reply);
    pb::LoadChunk chunk;
    chunk.mutable_header()->set_content_hash(net::Sha256Hex(bytes));
    chunk.mutable_header()->set_total_bytes(static_cast<int64_t>(bytes.size()));
    chunk.mutable_header()->set_name("relu");
    chunk.set_data(bytes);
    ASSERT_TRUE(writer->Write(chunk));
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    ASSERT_TRUE(status.ok()) << status.error_message();
    handle_ = reply.handle();
  }

  pb::Assignment Make(uint64_t id) const {
    pb::Assignment a;
    a.set_id(id);
    a.set_handle(handle_);
    Tensor x(dtype::kFloat, {1, 4});
    for (int i = 0; i < 4; ++i) x.data<float>()[i] = static_cast<float>(i) - 1.5f;
    ToProto("x", x, a.add_inputs());
    return a;
  }

  GatedExecutor executor_;
  std::unique_ptr<AgentServer> server_;
  std::unique_ptr<pb::Agent::Stub> stub_;
  std::string handle_;
};

// One Execute stream of the client side (messages here are below the chunk size).
class Stream {
 public:
  explicit Stream(pb::Agent::Stub& stub) {
    context_.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
    rw_ = stub.Execute(&context_);
  }
  bool Send(const pb::Assignment& a) {
    pb::ExecuteIn in;
    *in.mutable_assignment() = a;
    return rw_->Write(in);
  }
  bool Ping(uint64_t seq) {
    pb::ExecuteIn in;
    in.mutable_ping()->set_seq(seq);
    return rw_->Write(in);
  }
  std::optional<pb::ExecuteOut> Next() {
    pb::ExecuteOut out;
    if (!rw_->Read(&out)) return std::nullopt;
    return out;
  }
  std::optional<pb::Completion> NextCompletion() {
    while (std::optional<pb::ExecuteOut> out = Next()) {
      if (out->has_completion()) return out->completion();
    }
    return std::nullopt;
  }
  // Half-closes; the agent answers everything in flight, then ends the
  // stream. Returns the completions that came until then.
  std::vector<pb::Completion> Finish() {
    rw_->WritesDone();
    std::vector<pb::Completion> rest;
    while (std::optional<pb::ExecuteOut> out = Next()) {
      if (out->has_completion()) rest.push_back(out->completion());
    }
    const grpc::Status status = rw_->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    return rest;
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<pb::ExecuteIn, pb::ExecuteOut>> rw_;
};

// ---------------------------------------------------------------------------
// Deadline budgets

TEST(DeadlineFromBudgetTest, SaturatesAtTheEndsOfInt64) {
  const Time arrival(std::chrono::seconds(5));
  EXPECT_EQ(DeadlineFromBudget(arrival, std::chrono::nanoseconds(std::chrono::seconds(2)).count()),
            Time(std::chrono::seconds(7)));
  EXPECT_EQ(DeadlineFromBudget(arrival, kInt64Max), arrival + kMaxDeadlineBudget);
  EXPECT_EQ(DeadlineFromBudget(arrival, kMaxDeadlineBudget.count() + 1), arrival + kMaxDeadlineBudget);
  // Late budgets end strictly before the arrival.
  EXPECT_EQ(DeadlineFromBudget(arrival, 0), arrival - Duration(1));
  EXPECT_EQ(DeadlineFromBudget(arrival, -1000), arrival - Duration(1001));
  EXPECT_EQ(DeadlineFromBudget(arrival, kInt64Min), arrival - kMaxDeadlineBudget - Duration(1));
  // The clamped deadline leaves room for ExpiryTime (+1 ns) and the like.
  EXPECT_GT(dispatch::ExpiryTime(DeadlineFromBudget(arrival, kInt64Max)), arrival);
}

TEST_F(AgentExecuteTest, HugeBudgetMeansNoPracticalDeadlineAndRuns) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  Stream exec(*stub_);
  pb::Assignment forever = Make(1);
  forever.set_has_deadline(true);
  forever.set_deadline_budget_ns(kInt64Max);
  ASSERT_TRUE(exec.Send(forever));
  std::optional<pb::Completion> c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->id(), 1u);
  EXPECT_EQ(c->code(), 0) << c->message();
  EXPECT_TRUE(c->ran());
  ASSERT_EQ(c->outputs_size(), 1);
  EXPECT_EQ(c->outputs(0).name(), "y");

  // The other end: already late, answered at once, and nothing overflows.
  pb::Assignment late = Make(2);
  late.set_has_deadline(true);
  late.set_deadline_budget_ns(kInt64Min);
  ASSERT_TRUE(exec.Send(late));
  c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->id(), 2u);
  EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED)) << c->message();
  EXPECT_FALSE(c->ran());
  EXPECT_TRUE(exec.Finish().empty());
  EXPECT_EQ(executor_.started(), 1);
  EXPECT_EQ(server_->Stats().dropped_deadline(), 1u);
}

// ---------------------------------------------------------------------------
// Assignment ids repeated on a stream

TEST(StreamIdsTest, RemembersIdsInFlightAndABoundedWindowOfAnswered) {
  for (size_t keep : {size_t{0}, size_t{1}, size_t{2}, size_t{8}}) {
    SCOPED_TRACE(keep);
    StreamIds ids(keep);
    EXPECT_EQ(ids.Admit(1), StreamIds::Seen::kNew);
    EXPECT_EQ(ids.Admit(2), StreamIds::Seen::kNew);
    EXPECT_EQ(ids.Admit(1), StreamIds::Seen::kInFlight);
    EXPECT_EQ(ids.in_flight(), 2u);
    ids.Answered(1);
    EXPECT_EQ(ids.Admit(1), keep > 0 ? StreamIds::Seen::kAnswered : StreamIds::Seen::kNew);
    if (keep > 0) {
      EXPECT_EQ(ids.Admit(2), StreamIds::Seen::kInFlight);
    }
    // Many more answered ids: the window never holds more than `keep`.
    for (uint64_t id = 100; id < 120; ++id) {
      ASSERT_EQ(ids.Admit(id), StreamIds::Seen::kNew);
      ids.Answered(id);
      EXPECT_LE(ids.answered(), keep);
    }
    EXPECT_EQ(ids.Admit(119), keep > 0 ? StreamIds::Seen::kAnswered : StreamIds::Seen::kNew);
    if (keep > 0 && keep < 20) {
      EXPECT_EQ(ids.Admit(100), StreamIds::Seen::kNew);  // forgotten
    }
    ids.Answered(999);  // not in flight: no effect
    EXPECT_LE(ids.answered(), keep);
  }
}

TEST_F(AgentExecuteTest, RepeatedIdRunsOnceOnAStream) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  Stream exec(*stub_);
  executor_.Close();
  ASSERT_TRUE(exec.Send(Make(7)));
  executor_.WaitForStarted(1);  // 7 is running, held at the gate
  ASSERT_TRUE(exec.Send(Make(7)));
  // The repeat is neither answered (the pong comes first: the agent handles a
  // stream's messages in order) nor run.
  ASSERT_TRUE(exec.Ping(1));
  std::optional<pb::ExecuteOut> pong = exec.Next();
  ASSERT_TRUE(pong.has_value());
  EXPECT_TRUE(pong->has_pong()) << pong->DebugString();
  executor_.Open();
  std::optional<pb::Completion> c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->id(), 7u);
  EXPECT_EQ(c->code(), 0) << c->message();
  EXPECT_TRUE(c->ran());

  // Answered already: refused at once, naming the id, not run.
  ASSERT_TRUE(exec.Send(Make(7)));
  c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->id(), 7u);
  EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::ALREADY_EXISTS)) << c->message();
  EXPECT_THAT(c->message(), HasSubstr("assignment 7"));
  EXPECT_FALSE(c->ran());

  // An id answered at once (unknown handle) counts as answered too.
  pb::Assignment unknown = Make(8);
  unknown.set_handle("no-such-handle");
  for (grpc::StatusCode want : {grpc::StatusCode::NOT_FOUND, grpc::StatusCode::ALREADY_EXISTS}) {
    ASSERT_TRUE(exec.Send(unknown));
    c = exec.NextCompletion();
    ASSERT_TRUE(c.has_value());
    EXPECT_EQ(c->id(), 8u);
    EXPECT_EQ(c->code(), static_cast<int>(want)) << c->message();
  }

  EXPECT_TRUE(exec.Finish().empty()) << "a repeated id was answered twice";
  EXPECT_EQ(executor_.started(), 1);
  const pb::StatsReply stats = server_->Stats();
  EXPECT_EQ(stats.assignments(), 5u);
  EXPECT_EQ(stats.completions_ok(), 1u);
  EXPECT_EQ(stats.completions_failed(), 3u);
}

TEST_F(AgentExecuteTest, IdsAreRememberedPerStreamWithinABoundedWindow) {
  AgentOptions options;
  options.answered_ids_kept = 2;
  ASSERT_NO_FATAL_FAILURE(StartAgent(options));
  const auto answer = [&](Stream& exec, uint64_t id) -> int {
    EXPECT_TRUE(exec.Send(Make(id)));
    std::optional<pb::Completion> c = exec.NextCompletion();
    EXPECT_TRUE(c.has_value());
    if (!c) return -1;
    EXPECT_EQ(c->id(), id);
    return c->code();
  };
  constexpr int kOk = 0;
  constexpr int kAlreadyExists = static_cast<int>(grpc::StatusCode::ALREADY_EXISTS);
  Stream a(*stub_);
  Stream b(*stub_);
  EXPECT_EQ(answer(a, 1), kOk);
  EXPECT_EQ(answer(b, 1), kOk);  // another stream: its own ids
  EXPECT_EQ(answer(a, 1), kAlreadyExists);
  EXPECT_EQ(answer(a, 2), kOk);
  EXPECT_EQ(answer(a, 3), kOk);  // a remembers 2 and 3 now; 1 is forgotten
  EXPECT_EQ(answer(a, 3), kAlreadyExists);
  EXPECT_EQ(answer(a, 1), kOk);
  EXPECT_TRUE(a.Finish().empty());
  EXPECT_TRUE(b.Finish().empty());
  EXPECT_EQ(executor_.started(), 5);
}

}  // namespace
}  // namespace baton::net
