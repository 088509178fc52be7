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
#include "google/protobuf/util/message_differencer.h"

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

// Claims every node. A run copies `x` to `y` (or, after SetOutputFloats(n),
// answers a `y` of n floats), counts itself, and waits while the gate is
// closed (the gate starts open).
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
  // y[i] = i % 1000, as a float.
  void SetOutputFloats(int64_t n) {
    std::lock_guard lock(state_->mu);
    state_->output_floats = n;
  }

 private:
  struct State {
    mutable std::mutex mu;
    std::condition_variable cv;
    bool open = true;            // guarded by mu
    int started = 0;             // guarded by mu
    int64_t output_floats = 0;   // guarded by mu
  };
  class Prepared : public backend::PreparedPartition {
   public:
    explicit Prepared(std::shared_ptr<State> state) : state_(std::move(state)) {}
    absl::StatusOr<backend::RunResult> Run(
        std::span<const std::pair<std::string, const Tensor*>> inputs, RunCancel* = nullptr) const override {
      int64_t output_floats = 0;
      {
        std::unique_lock lock(state_->mu);
        ++state_->started;
        state_->cv.notify_all();
        state_->cv.wait(lock, [&] { return state_->open; });
        output_floats = state_->output_floats;
      }
      backend::RunResult result;
      if (output_floats > 0) {
        Tensor y(dtype::kFloat, {1, output_floats});
        for (int64_t i = 0; i < output_floats; ++i) y.data<float>()[i] = static_cast<float>(i % 1000);
        result.outputs.emplace_back("y", std::move(y));
        return result;
      }
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
  // `bdp_probe` false: the client's receive window stays at 64 KiB, so a
  // client that does not read stalls the agent's writes soon.
  void StartAgent(AgentOptions options = AgentOptions(), bool bdp_probe = true) {
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
    if (!bdp_probe) args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
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
// Completions above the chunk size

// TensorFrames' frames reassemble into the message that ToProto and
// SerializeAsString give, for every chunk size, with the tensors' bytes
// (fixed-size, empty and STRING) in place.
TEST(TensorFramesTest, FramesReassembleIntoTheWholeMessage) {
  dispatch::NamedTensors tensors;
  Tensor f(dtype::kFloat, {2, 3});
  for (int i = 0; i < 6; ++i) f.data<float>()[i] = static_cast<float>(i) * 0.5f;
  tensors.emplace_back("f", std::move(f));
  tensors.emplace_back("empty", Tensor(dtype::kInt64, {0, 4}));
  tensors.emplace_back("s", Tensor::Strings({2}, {"a", std::string(300, 'b')}));
  Tensor big(dtype::kUint8, {5000});
  for (int i = 0; i < 5000; ++i) big.data<uint8_t>()[i] = static_cast<uint8_t>(i * 7);
  tensors.emplace_back("big", std::move(big));

  pb::Completion head;
  head.set_id(42);
  head.set_message("ok");
  head.set_ran(true);
  head.set_pu(1);
  head.set_run_ns(123456789);
  pb::Completion expected = head;
  for (const auto& [name, tensor] : tensors) ToProto(name, tensor, expected.add_outputs());

  for (int64_t chunk : {int64_t{1}, int64_t{7}, int64_t{100}, int64_t{4096}, int64_t{1} << 20}) {
    SCOPED_TRACE(absl::StrCat("chunk ", chunk));
    TensorFrames frames(head.SerializeAsString(), pb::Completion::kOutputsFieldNumber, tensors, chunk);
    EXPECT_EQ(frames.total_bytes(), static_cast<int64_t>(expected.ByteSizeLong()));
    FrameReader reader(int64_t{1} << 30);
    std::optional<std::string> whole;
    int64_t count = 0;
    while (!frames.done()) {
      const pb::Frame frame = frames.Next();
      ++count;
      EXPECT_LE(static_cast<int64_t>(frame.data().size()), chunk);
      ASSERT_FALSE(whole.has_value()) << "a frame after the last";
      absl::StatusOr<std::optional<std::string>> added = reader.Add(frame);
      ASSERT_TRUE(added.ok()) << added.status();
      EXPECT_EQ(added->has_value(), frame.last());
      whole = *added;
    }
    ASSERT_TRUE(whole.has_value());
    EXPECT_EQ(count, (frames.total_bytes() + chunk - 1) / chunk);
    pb::Completion parsed;
    ASSERT_TRUE(parsed.ParseFromString(*whole));
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(parsed, expected))
        << parsed.ShortDebugString().substr(0, 400);
  }
}

// A completion of many frames to a client that reads only its first frame
// stalls the agent's writes; a ping sent then is answered before its last
// frame (the client hears the agent while a large answer travels), and the
// frames still carry the outputs. The second assignment, held at the gate,
// shows that the agent has read the ping before the client reads on.
TEST_F(AgentExecuteTest, APingIsAnsweredBetweenTheFramesOfALargeCompletion) {
  AgentOptions options;
  options.chunk_bytes = 4096;
  ASSERT_NO_FATAL_FAILURE(StartAgent(options, /*bdp_probe=*/false));
  Stream exec(*stub_);
  constexpr int64_t kFloats = int64_t{1} << 16;  // 256 KiB: 64 frames, the window holds 16
  executor_.SetOutputFloats(kFloats);
  ASSERT_TRUE(exec.Send(Make(1)));
  FrameReader reader(int64_t{1} << 30);
  std::optional<pb::ExecuteOut> first = exec.Next();
  ASSERT_TRUE(first.has_value() && first->has_frame()) << "no frame came first";
  ASSERT_TRUE(reader.Add(first->frame()).ok());
  executor_.Close();
  executor_.SetOutputFloats(0);
  ASSERT_TRUE(exec.Ping(77));
  ASSERT_TRUE(exec.Send(Make(2)));
  executor_.WaitForStarted(2);  // the agent has read the ping

  bool ponged = false;
  std::optional<pb::Completion> completion;
  while (!completion) {
    std::optional<pb::ExecuteOut> out = exec.Next();
    ASSERT_TRUE(out.has_value()) << "the stream ended before the large completion";
    if (out->has_pong()) {
      EXPECT_EQ(out->pong().seq(), 77u);
      ponged = true;
      continue;
    }
    ASSERT_TRUE(out->has_frame()) << out->ShortDebugString().substr(0, 200);
    absl::StatusOr<std::optional<std::string>> whole = reader.Add(out->frame());
    ASSERT_TRUE(whole.ok()) << whole.status();
    if (!whole->has_value()) continue;
    EXPECT_TRUE(ponged) << "the pong came after the last frame of the large completion";
    completion.emplace();
    ASSERT_TRUE(completion->ParseFromString(**whole));
  }
  EXPECT_EQ(completion->id(), 1u);
  EXPECT_EQ(completion->code(), 0) << completion->message();
  ASSERT_EQ(completion->outputs_size(), 1);
  absl::StatusOr<std::pair<std::string, Tensor>> y = FromProto(completion->outputs(0));
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->first, "y");
  ASSERT_EQ(y->second.shape(), (std::vector<int64_t>{1, kFloats}));
  int64_t wrong = 0;
  for (int64_t i = 0; i < kFloats; ++i) wrong += y->second.data<float>()[i] != static_cast<float>(i % 1000);
  EXPECT_EQ(wrong, 0) << "the frames do not carry the outputs";
  executor_.Open();
  std::vector<pb::Completion> rest = exec.Finish();
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].id(), 2u);
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
