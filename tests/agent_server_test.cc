// The agent protocol's server side in one process: an AgentServer on
// 127.0.0.1:0 with real CPU executors (and fakes for capability and slow
// session creation), driven through the raw generated stub.
#include "baton/net/agent_server.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "baton/agent/v1/agent.grpc.pb.h"
#include "baton/backend/ort/cpu_executor.h"
#include "baton/config/run_config.h"
#include "baton/net/content_hash.h"
#include "baton/graph/builder.h"
#include "baton/graph/extract.h"
#include "baton/graph/model.h"
#include "baton/net/codec.h"
#include "baton/net/remote_device.h"
#include "baton/verify/verify.h"
#include "baton/zoo/zoo.h"
#include "nothing_executor.h"
#include "spin_model.h"
#include "wait_until.h"
#include "onnx/onnx_pb.h"

namespace baton::net {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr auto kRpcTimeout = std::chrono::seconds(60);

// A partition as the HL side sends it: the first third of the small ResNet
// (its input is 12 KiB, its output a feature map of several KiB).
struct TestPartition {
  std::string bytes;
  std::string hash;
  std::shared_ptr<const graph::Model> model;
};

const TestPartition& Partition() {
  static const TestPartition* partition = [] {
    auto* p = new TestPartition;
    absl::StatusOr<std::string> zoo = zoo::Generate("resnet", /*small=*/true);
    EXPECT_TRUE(zoo.ok()) << zoo.status();
    absl::StatusOr<std::shared_ptr<const graph::Model>> whole = graph::Model::LoadBytes(*zoo, "resnet");
    EXPECT_TRUE(whole.ok()) << whole.status();
    const std::vector<NodeId>& order = (*whole)->topo_order();
    std::vector<NodeId> prefix(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(order.size() / 3));
    absl::StatusOr<graph::Submodel> sub = graph::ExtractSubmodel(**whole, prefix, "resnet.p0");
    EXPECT_TRUE(sub.ok()) << sub.status();
    p->bytes = sub->onnx_bytes;
    p->hash = net::Sha256Hex(p->bytes);
    absl::StatusOr<std::shared_ptr<const graph::Model>> model = graph::Model::LoadBytes(p->bytes, "resnet.p0");
    EXPECT_TRUE(model.ok()) << model.status();
    p->model = *model;
    return p;
  }();
  return *partition;
}

using testing::NothingExecutor;  // claims no node: no partition can be placed on it

// Runs everything, but Prepare blocks until Release() (a session that takes
// long to create).
class BlockingExecutor : public backend::Executor {
 public:
  const std::string& pu_name() const override { return name_; }
  std::string kind() const override { return "cpu"; }
  std::vector<bool> QueryCapability(const graph::Model& model) const override {
    return std::vector<bool>(model.nodes().size(), true);
  }
  absl::StatusOr<std::unique_ptr<backend::PreparedPartition>> Prepare(const graph::Model&,
                                                                      const graph::Submodel&) const override {
    std::unique_lock lock(mu_);
    ++entered_;
    cv_.wait(lock, [&] { return released_; });
    return absl::UnavailableError("BlockingExecutor was released");
  }
  int entered() const {  // Prepare calls so far
    std::lock_guard lock(mu_);
    return entered_;
  }
  void Release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::string name_ = "slow0";
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool released_ = false;
  mutable int entered_ = 0;
};

AgentPu CpuPu(const backend::Executor& executor, const std::string& name) {
  AgentPu pu;
  pu.name = name;
  pu.kind = executor.kind();
  pu.executor = &executor;
  pu.share_key = "cpu:1";
  return pu;
}

std::shared_ptr<grpc::Channel> Channel(const AgentServer& server) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  args.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  return grpc::CreateCustomChannel(server.address(), grpc::InsecureChannelCredentials(), args);
}

void Prepare(grpc::ClientContext& context, const std::string& token) {
  context.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
}

struct LoadRequest {
  explicit LoadRequest(std::string b) : bytes(std::move(b)) {}
  LoadRequest& Hash(std::string h) {
    hash = std::move(h);
    return *this;
  }
  LoadRequest& Total(int64_t n) {
    total_bytes = n;
    return *this;
  }
  LoadRequest& Chunk(size_t n) {
    chunk = n;
    return *this;
  }
  LoadRequest& Token(std::string t) {
    token = std::move(t);
    return *this;
  }
  LoadRequest& Client(std::string c) {
    client = std::move(c);
    return *this;
  }

  std::string bytes;
  std::string name = "resnet.p0";
  std::optional<std::string> hash;     // default: net::Sha256Hex(bytes)
  std::optional<int64_t> total_bytes;  // default: bytes.size()
  size_t chunk = 64 * 1024;
  std::string token;
  std::string client;  // LoadHeader.client
};

grpc::Status Load(pb::Agent::Stub& stub, const LoadRequest& request, pb::LoadReply* reply) {
  grpc::ClientContext context;
  Prepare(context, request.token);
  std::unique_ptr<grpc::ClientWriter<pb::LoadChunk>> writer = stub.Load(&context, reply);
  size_t at = 0;
  bool first = true;
  while (first || at < request.bytes.size()) {
    pb::LoadChunk chunk;
    if (first) {
      chunk.mutable_header()->set_content_hash(request.hash.value_or(net::Sha256Hex(request.bytes)));
      chunk.mutable_header()->set_total_bytes(
          request.total_bytes.value_or(static_cast<int64_t>(request.bytes.size())));
      chunk.mutable_header()->set_name(request.name);
      chunk.mutable_header()->set_client(request.client);
      first = false;
    }
    const size_t n = std::min(request.chunk, request.bytes.size() - at);
    chunk.set_data(request.bytes.substr(at, n));
    at += n;
    if (!writer->Write(chunk)) break;  // the agent answered early
  }
  writer->WritesDone();
  return writer->Finish();
}

pb::Assignment MakeAssignment(uint64_t id, const std::string& handle, const dispatch::NamedTensors& inputs) {
  pb::Assignment a;
  a.set_id(id);
  a.set_handle(handle);
  for (const auto& [name, tensor] : inputs) ToProto(name, tensor, a.add_inputs());
  return a;
}

// One Execute stream of the client side.
class ExecuteClient {
 public:
  explicit ExecuteClient(pb::Agent::Stub& stub, const std::string& token = "") {
    Prepare(context_, token);
    stream_ = stub.Execute(&context_);
  }

  // Sends `a` whole, or as Frames of `chunk` bytes when chunk > 0.
  bool Send(const pb::Assignment& a, int64_t chunk = 0) {
    if (chunk <= 0) {
      pb::ExecuteIn in;
      *in.mutable_assignment() = a;
      return stream_->Write(in);
    }
    for (pb::Frame& frame : SplitFrames(a.SerializeAsString(), chunk)) {
      pb::ExecuteIn in;
      *in.mutable_frame() = std::move(frame);
      if (!stream_->Write(in)) return false;
    }
    return true;
  }
  bool Ping(uint64_t seq) {
    pb::ExecuteIn in;
    in.mutable_ping()->set_seq(seq);
    return stream_->Write(in);
  }
  bool Cancel(std::initializer_list<uint64_t> ids) {
    pb::ExecuteIn in;
    for (uint64_t id : ids) in.mutable_cancel()->add_ids(id);
    return stream_->Write(in);
  }
  void TryCancel() { context_.TryCancel(); }
  std::optional<pb::ExecuteOut> Next() {
    pb::ExecuteOut out;
    if (!stream_->Read(&out)) return std::nullopt;
    return out;
  }
  // The next completion, reassembled from frames; nullopt when the stream ends.
  std::optional<pb::Completion> NextCompletion() {
    FrameReader reader(int64_t{1} << 30);
    while (std::optional<pb::ExecuteOut> out = Next()) {
      if (out->has_completion()) return out->completion();
      if (!out->has_frame()) continue;
      ++frames_;
      absl::StatusOr<std::optional<std::string>> whole = reader.Add(out->frame());
      EXPECT_TRUE(whole.ok()) << whole.status();
      if (!whole.ok() || !whole->has_value()) continue;
      pb::Completion c;
      EXPECT_TRUE(c.ParseFromString(**whole));
      return c;
    }
    return std::nullopt;
  }
  void WritesDone() {
    if (!writes_done_) stream_->WritesDone();
    writes_done_ = true;
  }
  grpc::Status Finish() {
    WritesDone();
    while (Next()) {
    }
    return stream_->Finish();
  }
  int frames() const { return frames_; }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<pb::ExecuteIn, pb::ExecuteOut>> stream_;
  int frames_ = 0;
  bool writes_done_ = false;
};

dispatch::NamedTensors Inputs(uint64_t seed = 7) {
  absl::StatusOr<dispatch::NamedTensors> inputs = verify::RandomInputs(*Partition().model, seed);
  EXPECT_TRUE(inputs.ok()) << inputs.status();
  return std::move(*inputs);
}

// The partition's outputs for `inputs`, run directly (not through the agent).
dispatch::NamedTensors RunDirectly(const dispatch::NamedTensors& inputs) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"reference", 1, {}});
  auto prepared = cpu.Prepare(*Partition().model, graph::WholeSubmodel(*Partition().model));
  EXPECT_TRUE(prepared.ok()) << prepared.status();
  std::vector<std::pair<std::string, const Tensor*>> feeds;
  for (const auto& [name, tensor] : inputs) feeds.emplace_back(name, &tensor);
  auto run = (*prepared)->Run(feeds);
  EXPECT_TRUE(run.ok()) << run.status();
  return std::move(run->outputs);
}

void ExpectOutputsMatch(const pb::Completion& c, const dispatch::NamedTensors& expected) {
  ASSERT_EQ(c.code(), 0) << c.message();
  absl::StatusOr<dispatch::NamedTensors> actual = FromProto(c.outputs());
  ASSERT_TRUE(actual.ok()) << actual.status();
  ASSERT_EQ(actual->size(), expected.size());
  for (const auto& [name, tensor] : expected) {
    const Tensor* got = dispatch::FindTensor(*actual, name);
    ASSERT_NE(got, nullptr) << name;
    verify::Comparison cmp = verify::Compare(tensor, *got);
    EXPECT_TRUE(cmp.ok) << name << ": " << cmp.message;
  }
}

std::unique_ptr<AgentServer> StartAgent(AgentOptions options, std::vector<AgentPu> pus) {
  absl::StatusOr<std::unique_ptr<AgentServer>> server = AgentServer::Start(std::move(options), std::move(pus));
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  EXPECT_GT((*server)->port(), 0);
  return std::move(*server);
}

// ---------------------------------------------------------------------------

class AgentPuCountTest : public ::testing::TestWithParam<int> {};

TEST_P(AgentPuCountTest, LoadsExecutesAndMatchesADirectRun) {
  std::vector<std::unique_ptr<backend::CpuExecutor>> cpus;
  std::vector<AgentPu> pus;
  for (int i = 0; i < GetParam(); ++i) {
    const std::string name = absl::StrCat("cpu", i);
    cpus.push_back(std::make_unique<backend::CpuExecutor>(backend::CpuPuSpec{name, 1, {}}));
    pus.push_back(CpuPu(*cpus.back(), name));
  }
  AgentOptions options;
  options.name = "edge1";
  options.low_level = "fixed";  // honours Assignment.fixed_pu (fifo would not)
  std::unique_ptr<AgentServer> server = StartAgent(options, std::move(pus));
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->address(), absl::StrCat("127.0.0.1:", server->port()));
  auto stub = pb::Agent::NewStub(Channel(*server));

  pb::HelloReply hello;
  {
    grpc::ClientContext context;
    Prepare(context, "");
    ASSERT_TRUE(stub->Hello(&context, pb::HelloRequest(), &hello).ok());
  }
  EXPECT_EQ(hello.name(), "edge1");
  EXPECT_EQ(hello.version(), "0.1");
  ASSERT_EQ(hello.pus_size(), GetParam());
  EXPECT_EQ(hello.pus(0).name(), "cpu0");
  EXPECT_EQ(hello.pus(0).kind(), "cpu");
  EXPECT_EQ(hello.max_partition_bytes(), kDefaultMaxPartitionBytes);
  EXPECT_EQ(hello.chunk_bytes(), kDefaultChunkBytes);
  EXPECT_FALSE(hello.instance().empty());

  pb::LoadReply loaded;
  ASSERT_TRUE(Load(*stub, LoadRequest(Partition().bytes).Chunk(4096), &loaded).ok());
  EXPECT_EQ(loaded.handle(), Partition().hash);
  EXPECT_FALSE(loaded.cached());
  EXPECT_EQ(loaded.capable_pus_size(), GetParam());
  pb::LoadReply again;
  ASSERT_TRUE(Load(*stub, LoadRequest(Partition().bytes), &again).ok());
  EXPECT_TRUE(again.cached());
  EXPECT_EQ(again.handle(), loaded.handle());

  const dispatch::NamedTensors inputs = Inputs();
  const dispatch::NamedTensors expected = RunDirectly(inputs);
  ExecuteClient exec(*stub);
  constexpr int kAssignments = 4;
  for (int i = 0; i < kAssignments; ++i) {
    pb::Assignment a = MakeAssignment(100 + i, loaded.handle(), inputs);
    if (i == 1) {
      a.set_has_deadline(true);
      a.set_deadline_budget_ns(std::chrono::nanoseconds(std::chrono::seconds(30)).count());
    }
    if (i == 2) {
      a.set_has_fixed_pu(true);
      a.set_fixed_pu(GetParam() - 1);
    }
    ASSERT_TRUE(exec.Send(a));
  }
  std::set<uint64_t> answered;
  for (int i = 0; i < kAssignments; ++i) {
    std::optional<pb::Completion> c = exec.NextCompletion();
    ASSERT_TRUE(c.has_value());
    answered.insert(c->id());
    EXPECT_TRUE(c->ran());
    EXPECT_GE(c->pu(), 0);
    EXPECT_LT(c->pu(), GetParam());
    if (c->id() == 102) {
      EXPECT_EQ(c->pu(), GetParam() - 1);
    }
    EXPECT_GE(c->queued_ns(), 0);
    EXPECT_GT(c->run_ns(), 0);
    ExpectOutputsMatch(*c, expected);
  }
  EXPECT_EQ(answered, (std::set<uint64_t>{100, 101, 102, 103}));
  EXPECT_EQ(exec.frames(), 0);
  EXPECT_TRUE(exec.Finish().ok());

  pb::StatsReply stats;
  {
    grpc::ClientContext context;
    Prepare(context, "");
    ASSERT_TRUE(stub->Stats(&context, pb::StatsRequest(), &stats).ok());
  }
  EXPECT_EQ(stats.loads(), 2u);
  EXPECT_EQ(stats.loads_rejected(), 0u);
  EXPECT_EQ(stats.assignments(), static_cast<uint64_t>(kAssignments));
  EXPECT_EQ(stats.completions_ok(), static_cast<uint64_t>(kAssignments));
  EXPECT_EQ(stats.partitions_loaded(), 1u);
  ASSERT_EQ(stats.pus_size(), GetParam());
  uint64_t runs = 0;
  for (const pb::PuStatsProto& pu : stats.pus()) runs += pu.runs();
  EXPECT_EQ(runs, static_cast<uint64_t>(kAssignments));
}

INSTANTIATE_TEST_SUITE_P(PuCounts, AgentPuCountTest, ::testing::Values(1, 2));

// A client that sends and does not read is not read further once the
// stream's outbox is full (kMaxOutbox): its answers do not pile up in the
// agent. Each assignment names a 16 KiB handle that is not loaded, so each
// rejection (which quotes it) is as large: the client's window (BDP probing
// off) holds a few, the outbox 1024, and the writes of the 4000 sent stall.
// Once the client reads, every one is answered.
TEST(AgentServerTest, AStreamWhoseClientDoesNotReadIsNotReadFurther) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  std::unique_ptr<AgentServer> server = StartAgent(AgentOptions(), {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);  // the client's receive window stays at 64 KiB
  auto stub = pb::Agent::NewStub(grpc::CreateCustomChannel(server->address(), grpc::InsecureChannelCredentials(), args));
  ExecuteClient exec(*stub);
  constexpr int kSent = 4000;
  pb::Assignment a;
  a.set_handle(std::string(16384, 'h'));
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; i < kSent; ++i) {
      a.set_id(static_cast<uint64_t>(i) + 1);
      if (!exec.Send(a)) break;
      ++written;
    }
    exec.WritesDone();
  });
  EXPECT_FALSE(baton::testing::WaitUntil([&] { return written.load() == kSent; }, std::chrono::seconds(3)))
      << "the agent read all " << kSent << " assignments while their client read none of the answers";
  int answered = 0;
  while (std::optional<pb::Completion> c = exec.NextCompletion()) {
    EXPECT_EQ(c->code(), static_cast<int32_t>(absl::StatusCode::kNotFound));
    ++answered;
  }
  writer.join();
  EXPECT_EQ(written.load(), kSent);
  EXPECT_EQ(answered, kSent);
}

TEST(AgentServerTest, RejectedLoadsNameTheProblemAndTheAgentKeepsServing) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  AgentOptions options;
  std::unique_ptr<AgentServer> server = StartAgent(options, {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));
  const std::string& bytes = Partition().bytes;
  pb::LoadReply reply;

  // Not an ONNX model (the hash is right).
  grpc::Status status = Load(*stub, LoadRequest("this is not an onnx model"), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("not a valid self-contained ONNX model"));

  // A 64-bit hash (what older clients sent) is refused: the key is SHA-256.
  status = Load(*stub, LoadRequest(bytes).Hash("0123456789abcdef"), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("SHA-256 of the bytes, 64 lowercase hex digits"));
  // Hash mismatch.
  status = Load(*stub, LoadRequest(bytes).Hash(std::string(64, 'a')), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("not to the header's content_hash"));

  // More bytes than declared.
  status = Load(*stub, LoadRequest(bytes).Total(static_cast<int64_t>(bytes.size()) - 10), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("total_bytes"));

  // Declared above the limit: refused at once.
  status = Load(*stub, LoadRequest(bytes).Total(kDefaultMaxPartitionBytes + 1), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("--max-partition-mb"));
  EXPECT_THAT(status.error_message(), HasSubstr("resnet.p0"));

  // External data (refused from an untrusted peer).
  onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromString(bytes));
  ASSERT_GT(proto.graph().initializer_size(), 0);
  onnx::TensorProto* init = proto.mutable_graph()->mutable_initializer(0);
  init->clear_raw_data();
  init->clear_float_data();
  init->set_data_location(onnx::TensorProto::EXTERNAL);
  onnx::StringStringEntryProto* location = init->add_external_data();
  location->set_key("location");
  location->set_value("weights.bin");
  status = Load(*stub, LoadRequest(proto.SerializeAsString()), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("external"));

  // The agent still serves: the real partition loads and runs.
  ASSERT_TRUE(Load(*stub, LoadRequest(bytes), &reply).ok());
  EXPECT_FALSE(reply.cached());
  ExecuteClient exec(*stub);
  const dispatch::NamedTensors inputs = Inputs();
  ASSERT_TRUE(exec.Send(MakeAssignment(1, reply.handle(), inputs)));
  std::optional<pb::Completion> c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  ExpectOutputsMatch(*c, RunDirectly(inputs));
  EXPECT_TRUE(exec.Finish().ok());

  const pb::StatsReply stats = server->Stats();
  EXPECT_EQ(stats.loads_rejected(), 6u);
  EXPECT_EQ(stats.loads(), 1u);
}

TEST(AgentServerTest, LimitsOfTheAgentRefuseAPartition) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  NothingExecutor nothing;
  const std::string& bytes = Partition().bytes;
  struct Case {
    std::string what;
    AgentOptions options;
    std::vector<AgentPu> pus;
    grpc::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases;
  {
    Case& c = cases.emplace_back();
    c.what = "partition above max_partition_bytes";
    c.options.max_partition_bytes = static_cast<int64_t>(bytes.size()) - 1;
    c.pus.push_back(CpuPu(cpu, "cpu0"));
    c.code = grpc::StatusCode::RESOURCE_EXHAUSTED;
    c.message = "above this agent's limit";
  }
  {
    Case& c = cases.emplace_back();
    c.what = "op not in the allow-list";
    c.options.allowed_ops = {"Conv"};
    c.pus.push_back(CpuPu(cpu, "cpu0"));
    c.code = grpc::StatusCode::FAILED_PRECONDITION;
    c.message = "does not allow: ";
  }
  {
    Case& c = cases.emplace_back();
    c.what = "parameters above max_param_bytes";
    c.options.max_param_bytes = 16;
    c.pus.push_back(CpuPu(cpu, "cpu0"));
    c.code = grpc::StatusCode::RESOURCE_EXHAUSTED;
    c.message = "bytes of parameters";
  }
  {
    Case& c = cases.emplace_back();
    c.what = "no capable PU";
    AgentPu pu;
    pu.name = "nothing0";
    pu.kind = "emu";
    pu.executor = &nothing;
    c.pus.push_back(pu);
    c.code = grpc::StatusCode::FAILED_PRECONDITION;
    c.message = "no PU of this agent supports: ";
  }
  for (Case& c : cases) {
    SCOPED_TRACE(c.what);
    std::unique_ptr<AgentServer> server = StartAgent(c.options, c.pus);
    ASSERT_NE(server, nullptr);
    auto stub = pb::Agent::NewStub(Channel(*server));
    pb::LoadReply reply;
    grpc::Status status = Load(*stub, LoadRequest(bytes), &reply);
    EXPECT_EQ(status.error_code(), c.code) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
    EXPECT_THAT(status.error_message(), HasSubstr("resnet.p0"));
    // Still serving.
    grpc::ClientContext context;
    Prepare(context, "");
    pb::HelloReply hello;
    EXPECT_TRUE(stub->Hello(&context, pb::HelloRequest(), &hello).ok());
    EXPECT_EQ(server->Stats().loads_rejected(), 1u);
  }
  // The allow-list names the refused ops and accepts a model that stays inside it.
  AgentOptions wide;
  for (const graph::Node& node : Partition().model->nodes()) wide.allowed_ops.push_back(node.op_type);
  std::unique_ptr<AgentServer> server = StartAgent(wide, {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));
  pb::LoadReply reply;
  EXPECT_TRUE(Load(*stub, LoadRequest(bytes), &reply).ok());
}

TEST(AgentServerTest, SlowSessionCreationIsDeadlineExceededAndTheAgentKeepsServing) {
  BlockingExecutor slow;
  AgentOptions options;
  options.load_timeout = std::chrono::milliseconds(50);
  options.max_stuck_loads = 1;
  AgentPu pu;
  pu.name = "slow0";
  pu.kind = "cpu";
  pu.executor = &slow;
  std::unique_ptr<AgentServer> server = StartAgent(options, {pu});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));
  pb::LoadReply reply;
  grpc::Status status = Load(*stub, LoadRequest(Partition().bytes), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(status.error_message(), HasSubstr("--load-timeout-s"));
  grpc::ClientContext context;
  Prepare(context, "");
  pb::HelloReply hello;
  EXPECT_TRUE(stub->Hello(&context, pb::HelloRequest(), &hello).ok());
  // The creation goes on after its Load gave up; with max_stuck_loads 1 the
  // next Load is refused at once instead of starting another.
  status = Load(*stub, LoadRequest(Partition().bytes), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("still creating sessions after they timed out (at most 1)"));
  slow.Release();  // the session thread finishes; Shutdown joins it
  server->Shutdown();
  EXPECT_EQ(server->Stats().loads_rejected(), 2u);
  EXPECT_EQ(server->loads_left_running(), 0u);
}

// A remote device waits for a Load as long as the agent says its sessions may
// take, plus the transfer: an agent started with a long --load-timeout-s is
// not cut off by a fixed client deadline, and a slow load is answered by the
// agent's own message.
TEST(AgentServerTest, ARemoteDeviceWaitsForALoadAsLongAsTheAgentSays) {
  AgentHello hello;
  EXPECT_EQ(LoadCallBudget(hello, 0), std::chrono::milliseconds(150'000)) << "an agent that does not say: 120 s";
  hello.load_timeout_ms = 600'000;
  EXPECT_EQ(LoadCallBudget(hello, 0), std::chrono::milliseconds(630'000));
  EXPECT_EQ(LoadCallBudget(hello, size_t{100} << 20), std::chrono::milliseconds(730'000))
      << "100 MiB at 1 MiB/s";
  EXPECT_GT(LoadCallBudget(hello, SIZE_MAX).count(), 0) << "no overflow";

  BlockingExecutor slow;
  AgentOptions options;
  options.load_timeout = std::chrono::milliseconds(300);
  AgentPu pu;
  pu.name = "slow0";
  pu.kind = "cpu";
  pu.executor = &slow;
  std::unique_ptr<AgentServer> server = StartAgent(options, {pu});
  ASSERT_NE(server, nullptr);
  {
    RemoteDeviceOptions o;
    o.name = "edge";
    o.address = server->address();
    absl::StatusOr<std::shared_ptr<GrpcRemoteDevice>> device = GrpcRemoteDevice::Connect(o);
    ASSERT_TRUE(device.ok()) << device.status();
    EXPECT_EQ((*device)->hello().load_timeout_ms, 300);
    absl::StatusOr<GrpcRemoteDevice::Loaded> loaded = (*device)->Load("resnet.p0", Partition().bytes);
    ASSERT_FALSE(loaded.ok());
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_THAT(loaded.status().message(), HasSubstr("device 'edge': loading partition 'resnet.p0'"));
    EXPECT_THAT(loaded.status().message(), HasSubstr("--load-timeout-s")) << "the agent's answer, not the client's";
  }
  slow.Release();
  server->Shutdown();
}

// An agent that lies: chunk_bytes 1, a partition limit of INT64_MAX, and a
// completion whose run_ns is INT64_MIN. The client keeps the chunk size
// within its own bounds and the run time within what can have passed, so
// nothing overflows (UBSan checks the latter in CI's ASan stage).
class LyingAgent final : public pb::Agent::Service {
 public:
  grpc::Status Hello(grpc::ServerContext*, const pb::HelloRequest*, pb::HelloReply* reply) override {
    reply->set_name("liar");
    reply->set_version("0");
    pb::PuInfo* pu = reply->add_pus();
    pu->set_name("cpu0");
    pu->set_kind("cpu");
    pu->set_threads(1);
    reply->set_max_partition_bytes(INT64_MAX);
    reply->set_chunk_bytes(1);
    reply->set_instance("1");
    return grpc::Status::OK;
  }
  grpc::Status Execute(grpc::ServerContext*, grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* stream) override {
    pb::ExecuteIn in;
    while (stream->Read(&in)) {
      pb::ExecuteOut out;
      if (in.has_ping()) {
        ++pings;
        out.mutable_pong()->set_seq(in.ping().seq());
      } else if (in.has_cancel()) {
        cancels += in.cancel().ids_size();
        continue;
      } else if (in.has_assignment() && withhold) {
        continue;  // answers pings, never the work
      } else if (in.has_assignment()) {
        pb::Completion* c = out.mutable_completion();
        c->set_id(in.assignment().id());
        c->set_code(0);
        c->set_ran(true);
        c->set_pu(0);
        c->set_run_ns(INT64_MIN);
      } else {
        continue;
      }
      if (!stream->Write(out)) break;
    }
    return grpc::Status::OK;
  }
  bool withhold = false;
  std::atomic<int> cancels{0};
  std::atomic<int> pings{0};
};

// A LyingAgent on loopback and a GrpcRemoteDevice connected to it, bound to
// its one PU with a partition of any handle and started; completions are kept.
struct LiarHarness {
  LyingAgent liar;
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<GrpcRemoteDevice> device;
  runtime::RunnerTable runners;
  RemotePartition partition{"h"};  // the liar takes any handle
  std::mutex mu;
  std::vector<dispatch::Completion> got;  // guarded by mu
  std::function<void()> on_completion;   // runs first in the completion callback (on the reader)

  // Empty on success, else why it could not start.
  std::string Start(RemoteDeviceOptions o) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&liar);
    server = builder.BuildAndStart();
    if (server == nullptr) return "the fake agent did not start";
    o.address = absl::StrCat("127.0.0.1:", port);
    absl::StatusOr<std::shared_ptr<GrpcRemoteDevice>> connected = GrpcRemoteDevice::Connect(o);
    if (!connected.ok()) return connected.status().ToString();
    device = *std::move(connected);
    runners.Set(ModelId(0), PartitionId(0), PuId(0), &partition);
    device->Bind(DeviceId(0), {runtime::PuSetup{PuId(0), o.name + "/cpu0", "cpu", {}}}, &runners);
    device->Start(runtime::RemoteDeviceEvents{
        .completion =
            [this](dispatch::Completion c) {
              if (on_completion) on_completion();
              std::lock_guard lock(mu);
              got.push_back(std::move(c));
            },
        .returned = [](std::vector<dispatch::Assignment>) {},
        .reachable = [](bool, std::string) {},
        .now = [] { return Time(std::chrono::steady_clock::now().time_since_epoch()); }});
    return "";
  }
  void Submit(uint64_t id) {
    dispatch::Assignment a;
    a.id = AssignmentId(id);
    a.request = RequestId(id);
    device->Submit(std::move(a));
  }
  bool Answered() {
    std::lock_guard lock(mu);
    return !got.empty();
  }
  ~LiarHarness() {
    if (device) device->Stop();
    if (server) server->Shutdown();
  }
};

TEST(AgentServerTest, ARemoteDeviceBoundsWhatALyingAgentSays) {
  LiarHarness h;
  RemoteDeviceOptions o;
  o.name = "liar";
  ASSERT_EQ(h.Start(o), "");
  EXPECT_EQ(h.device->hello().chunk_bytes, 4096) << "raised to this side's least chunk";
  h.Submit(1);
  ASSERT_TRUE(baton::testing::WaitUntil([&] { return h.Answered(); }, std::chrono::seconds(30)));
  {
    std::lock_guard lock(h.mu);
    EXPECT_TRUE(h.got[0].status.ok()) << h.got[0].status;
    EXPECT_LE(h.got[0].start, h.got[0].end);
  }
  const std::vector<runtime::PuStats> stats = h.device->pu_stats();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_GE(stats[0].busy.count(), 0);
}

// An agent that answers pings but withholds an assignment's answer: after
// answer_timeout the client answers it DEADLINE_EXCEEDED itself and withdraws
// it on the agent (before, a request without a deadline waited for good).
TEST(AgentServerTest, AnAnswerTheAgentWithholdsIsGivenUpAfterTheAnswerTimeout) {
  LiarHarness h;
  h.liar.withhold = true;
  RemoteDeviceOptions o;
  o.name = "mute";
  o.answer_timeout = std::chrono::milliseconds(300);
  ASSERT_EQ(h.Start(o), "");
  h.Submit(5);
  ASSERT_TRUE(baton::testing::WaitUntil([&] { return h.Answered(); }));
  {
    std::lock_guard lock(h.mu);
    ASSERT_EQ(h.got.size(), 1u);
    EXPECT_EQ(h.got[0].id, AssignmentId(5));
    EXPECT_EQ(h.got[0].status.code(), absl::StatusCode::kDeadlineExceeded) << h.got[0].status;
    EXPECT_THAT(std::string(h.got[0].status.message()), HasSubstr("did not answer within 0.3 s though it answers pings"));
  }
  EXPECT_TRUE(baton::testing::WaitUntil([&] { return h.liar.cancels.load() == 1; })) << "withdrawn on the agent";
  EXPECT_EQ(h.device->counters().expired, 1u);
  EXPECT_TRUE(h.device->reachable()) << "an agent that answers pings is not lost";
}

// The client's own time with an answer (reassembling and converting it,
// handing it on) is not the agent's silence: a completion callback that holds
// the reader for over six times the loss limit, while the agent keeps answering
// pings, does not make the client take the agent for lost. Before, the client
// lost a healthy agent this way whenever an answer took it longer than
// lost_after to handle (a completion of hundreds of MB).
TEST(AgentServerTest, TheClientsOwnTimeWithAnAnswerIsNotTheAgentsSilence) {
  LiarHarness h;
  RemoteDeviceOptions o;
  o.name = "slow-reader";
  o.heartbeat = std::chrono::milliseconds(20);
  o.lost_after = std::chrono::milliseconds(300);
  std::atomic<bool> held{false};
  // Held while the client pings 100 times: at least 2 s.
  h.on_completion = [&] {
    held = true;
    const int from = h.liar.pings.load();
    baton::testing::WaitUntil(
        [&] { return h.liar.pings.load() >= from + 100 || h.device->counters().lost > 0; },  // lost: pings stop
        std::chrono::seconds(120));
  };
  ASSERT_EQ(h.Start(o), "");
  h.Submit(1);
  ASSERT_TRUE(baton::testing::WaitUntil([&] { return h.Answered(); }, std::chrono::seconds(180)));
  EXPECT_TRUE(held.load());
  EXPECT_EQ(h.device->counters().lost, 0u);
  EXPECT_TRUE(h.device->reachable());
}

// Loads at once are bounded (each holds its bytes and then a session
// creation): one more is refused at once, and taken again when one is done.
TEST(AgentServerTest, LoadsBeyondTheConcurrentLimitAreRefusedAtOnce) {
  BlockingExecutor slow;
  AgentOptions options;
  options.max_concurrent_loads = 1;
  options.load_timeout = std::chrono::minutes(5);
  AgentPu pu;
  pu.name = "slow0";
  pu.kind = "cpu";
  pu.executor = &slow;
  std::unique_ptr<AgentServer> server = StartAgent(options, {pu});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));
  std::future<grpc::Status> first = std::async(std::launch::async, [&] {
    pb::LoadReply reply;
    return Load(*stub, LoadRequest(Partition().bytes), &reply);
  });
  ASSERT_TRUE(baton::testing::WaitUntil([&] { return slow.entered() == 1; }));  // creating its sessions
  pb::LoadReply reply;
  const grpc::Status second = Load(*stub, LoadRequest(Partition().bytes), &reply);
  EXPECT_EQ(second.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << second.error_message();
  EXPECT_THAT(second.error_message(), HasSubstr("1 Loads are in progress already"));
  slow.Release();
  EXPECT_NE(first.get().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);  // it ran (and failed to prepare)
  const grpc::Status third = Load(*stub, LoadRequest(Partition().bytes), &reply);
  EXPECT_NE(third.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << third.error_message();
  server->Shutdown();
}

// A Load the agent refuses only because it is taking all the Loads it takes
// at once is tried again by baton's client, which loads once a slot is free;
// a refusal for any other reason is final. Before, the client gave up at once:
// a `baton serve` whose start met another client's Loads on a shared agent
// failed to start.
TEST(AgentServerTest, ALoadRefusedWhileTheAgentIsBusyIsTriedAgain) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  AgentOptions options;
  options.max_concurrent_loads = 1;
  std::unique_ptr<AgentServer> server = StartAgent(options, {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));
  const std::string bytes = Partition().bytes;

  // Another client holds the agent's one Load slot: its Load has sent its
  // header and part of its bytes, and goes on later.
  grpc::ClientContext holder_context;
  Prepare(holder_context, "");
  pb::LoadReply holder_reply;
  std::unique_ptr<grpc::ClientWriter<pb::LoadChunk>> holder = stub->Load(&holder_context, &holder_reply);
  pb::LoadChunk part;
  part.mutable_header()->set_content_hash(net::Sha256Hex(bytes));
  part.mutable_header()->set_total_bytes(static_cast<int64_t>(bytes.size()));
  part.mutable_header()->set_name("held");
  part.set_data(bytes.substr(0, 16));
  ASSERT_TRUE(holder->Write(part));
  // Held once a Load that would be refused for its hash is refused for the slot.
  ASSERT_TRUE(baton::testing::WaitUntil([&] {
    pb::LoadReply reply;
    return Load(*stub, LoadRequest("x").Hash("short"), &reply).error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
  }));

  RemoteDeviceOptions o;
  o.name = "edge";
  o.address = server->address();
  absl::StatusOr<std::shared_ptr<GrpcRemoteDevice>> device = GrpcRemoteDevice::Connect(o);
  ASSERT_TRUE(device.ok()) << device.status();
  std::future<absl::StatusOr<GrpcRemoteDevice::Loaded>> loaded =
      std::async(std::launch::async, [&] { return (*device)->Load("p0", bytes); });
  ASSERT_TRUE(baton::testing::WaitUntil([&] { return (*device)->counters().loads_retried >= 2; }))
      << "the client tries again while the slot is held";
  EXPECT_EQ(loaded.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  // The other client's Load ends (its bytes cut short): the slot is free.
  holder->WritesDone();
  EXPECT_EQ(holder->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  absl::StatusOr<GrpcRemoteDevice::Loaded> got = loaded.get();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->handle.empty());
  EXPECT_EQ((*device)->counters().loads_sent, 1u);
  EXPECT_EQ(server->Stats().partitions_loaded(), 1u);

  // A partition above the agent's size limit is refused for good: no retry.
  AgentOptions small;
  small.max_partition_bytes = 16;
  std::unique_ptr<AgentServer> tiny = StartAgent(small, {CpuPu(cpu, "cpu0")});
  ASSERT_NE(tiny, nullptr);
  o.address = tiny->address();
  absl::StatusOr<std::shared_ptr<GrpcRemoteDevice>> refused_device = GrpcRemoteDevice::Connect(o);
  ASSERT_TRUE(refused_device.ok()) << refused_device.status();
  absl::StatusOr<GrpcRemoteDevice::Loaded> refused = (*refused_device)->Load("p0", bytes);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("above this agent's limit"));
  EXPECT_EQ((*refused_device)->counters().loads_retried, 0u);
}

// A session creation that never returns does not hang Shutdown: it is left
// running, and the agent says how many it left.
TEST(AgentServerTest, ShutdownDoesNotWaitForeverForASessionCreation) {
  // Never destroyed (kept reachable for leak checkers): the detached creation
  // thread may still use it after the test.
  static auto* kept = new std::vector<BlockingExecutor*>;
  BlockingExecutor* stuck = kept->emplace_back(new BlockingExecutor);
  AgentOptions options;
  options.load_timeout = std::chrono::milliseconds(50);
  AgentPu pu;
  pu.name = "slow0";
  pu.kind = "cpu";
  pu.executor = stuck;
  std::unique_ptr<AgentServer> server = StartAgent(options, {pu});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));
  pb::LoadReply reply;
  EXPECT_EQ(Load(*stub, LoadRequest(Partition().bytes), &reply).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  server->Shutdown();  // returns (a hang would time the test out) and says what it left
  EXPECT_EQ(server->loads_left_running(), 1u);
  server.reset();
  stuck->Release();  // lets the detached thread end
}

TEST(AgentServerTest, TokenIsRequiredOnEveryAgentCall) {
  const fs::path token_file = fs::path(::testing::TempDir()) / absl::StrCat("agent_token_", getpid());
  {
    std::ofstream out(token_file);
    out << "s3cret\n";
  }
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  AgentOptions options;
  options.security.token_file = token_file.string();
  std::unique_ptr<AgentServer> server = StartAgent(options, {CpuPu(cpu, "cpu0")});
  fs::remove(token_file);
  ASSERT_NE(server, nullptr);
  EXPECT_THAT(server->notice(), HasSubstr("without TLS"));
  auto stub = pb::Agent::NewStub(Channel(*server));
  for (const std::string token : {"", "wrong", "s3cret"}) {
    SCOPED_TRACE(token);
    const grpc::StatusCode want = token == "s3cret" ? grpc::StatusCode::OK : grpc::StatusCode::UNAUTHENTICATED;
    grpc::ClientContext hello_context;
    Prepare(hello_context, token);
    pb::HelloReply hello;
    grpc::Status status = stub->Hello(&hello_context, pb::HelloRequest(), &hello);
    EXPECT_EQ(status.error_code(), want);
    if (want != grpc::StatusCode::OK) {
      EXPECT_THAT(status.error_message(), HasSubstr("bearer token"));
    }

    pb::LoadReply reply;
    EXPECT_EQ(Load(*stub, LoadRequest(Partition().bytes).Token(token), &reply).error_code(), want);

    grpc::ClientContext stats_context;
    Prepare(stats_context, token);
    pb::StatsReply stats;
    EXPECT_EQ(stub->Stats(&stats_context, pb::StatsRequest(), &stats).error_code(), want);

    ExecuteClient exec(*stub, token);
    if (want == grpc::StatusCode::OK) {
      ASSERT_TRUE(exec.Ping(5));
      std::optional<pb::ExecuteOut> pong = exec.Next();
      ASSERT_TRUE(pong.has_value());
      EXPECT_EQ(pong->pong().seq(), 5u);
    }
    EXPECT_EQ(exec.Finish().error_code(), want);
  }
  EXPECT_EQ(server->Stats().auth_failures(), 8u);  // 4 calls x 2 bad tokens
}

// An untrusted partition that loops forever holds a PU only until the agent's
// cap (or the client's shorter timeout); the run is stopped and answered
// ABORTED, and the agent keeps serving on that PU.
TEST(AgentServerTest, ARunPastItsTimeoutIsStoppedAndAnsweredAborted) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  AgentOptions options;
  options.max_run = std::chrono::milliseconds(300);
  std::unique_ptr<AgentServer> server = StartAgent(options, {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));
  absl::StatusOr<std::string> spin = baton::testing::SpinModelBytes();
  ASSERT_TRUE(spin.ok()) << spin.status();
  pb::LoadReply loaded;
  ASSERT_TRUE(Load(*stub, LoadRequest(*spin), &loaded).ok());
  dispatch::NamedTensors x;
  x.emplace_back("x", Tensor(dtype::kFloat, {1}));

  ExecuteClient exec(*stub);
  // Asks for an hour: the agent's 300 ms cap wins.
  pb::Assignment capped = MakeAssignment(1, loaded.handle(), x);
  capped.set_exec_timeout_ns(int64_t{3600} * 1000000000);
  ASSERT_TRUE(exec.Send(capped));
  std::optional<pb::Completion> c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->id(), 1u);
  EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::ABORTED)) << c->message();
  EXPECT_THAT(c->message(), HasSubstr("assignment 1 ran past its execution timeout of 300 ms on PU 'cpu0'"));
  EXPECT_THAT(c->message(), HasSubstr("--max-run-s of 0.3 s"));
  // The client's own, shorter timeout.
  pb::Assignment own = MakeAssignment(2, loaded.handle(), x);
  own.set_exec_timeout_ns(50 * 1000000);
  ASSERT_TRUE(exec.Send(own));
  c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->id(), 2u);
  EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::ABORTED)) << c->message();
  EXPECT_THAT(c->message(), HasSubstr("execution timeout of 50 ms"));
  pb::Assignment negative = MakeAssignment(3, loaded.handle(), x);
  negative.set_exec_timeout_ns(-1);
  ASSERT_TRUE(exec.Send(negative));
  c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(c->message(), HasSubstr("exec_timeout_ns"));
  // The PU is free again: a normal partition runs on it.
  pb::LoadReply normal;
  ASSERT_TRUE(Load(*stub, LoadRequest(Partition().bytes), &normal).ok());
  const dispatch::NamedTensors inputs = Inputs();
  ASSERT_TRUE(exec.Send(MakeAssignment(4, normal.handle(), inputs)));
  c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  ExpectOutputsMatch(*c, RunDirectly(inputs));
  exec.WritesDone();
  EXPECT_TRUE(exec.Finish().ok());
}

// A client withdraws what it sent (Cancel): a queued assignment is removed, a
// running one is stopped, each is answered CANCELLED, and the PU serves again.
// A stream that ends withdraws what it left, so the next client is not stuck
// behind runs nobody waits for.
// An agent on one CPU PU with the spin model (runs until stopped) and the
// test partition loaded.
struct SpinAgent {
  explicit SpinAgent(AgentOptions options) {
    server = StartAgent(std::move(options), {CpuPu(cpu, "cpu0")});
    if (server == nullptr) return;
    stub = pb::Agent::NewStub(Channel(*server));
    absl::StatusOr<std::string> spin = baton::testing::SpinModelBytes();
    EXPECT_TRUE(spin.ok()) << spin.status();
    EXPECT_TRUE(Load(*stub, LoadRequest(*spin), &spinning).ok());
    EXPECT_TRUE(Load(*stub, LoadRequest(Partition().bytes), &normal).ok());
    x.emplace_back("x", Tensor(dtype::kFloat, {1}));
  }
  backend::CpuExecutor cpu{backend::CpuPuSpec{"cpu0", 1, {}}};
  std::unique_ptr<AgentServer> server;
  std::unique_ptr<pb::Agent::Stub> stub;
  pb::LoadReply spinning, normal;
  dispatch::NamedTensors x;  // the spin model's input
};

TEST(AgentServerTest, CancelAndAnEndedStreamWithdrawTheirWork) {
  AgentOptions options;
  options.max_run = std::chrono::seconds(600);  // only a cancel frees the PU in time
  SpinAgent agent(options);
  ASSERT_NE(agent.server, nullptr);
  pb::Agent::Stub* stub = agent.stub.get();
  const pb::LoadReply& spinning = agent.spinning;
  const pb::LoadReply& normal = agent.normal;
  const dispatch::NamedTensors& x = agent.x;
  const dispatch::NamedTensors inputs = Inputs();
  // A deadline instead of a hang if the PU were never freed.
  auto bounded = [&](uint64_t id) {
    pb::Assignment a = MakeAssignment(id, normal.handle(), inputs);
    a.set_has_deadline(true);
    a.set_deadline_budget_ns(int64_t{30} * 1000000000);
    return a;
  };

  ExecuteClient exec(*stub);
  ASSERT_TRUE(exec.Send(MakeAssignment(1, spinning.handle(), x)));  // runs
  ASSERT_TRUE(exec.Send(MakeAssignment(2, spinning.handle(), x)));  // queued behind it
  ASSERT_TRUE(exec.Cancel({2, 77}));                                 // 77 was never sent: ignored
  std::optional<pb::Completion> c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->id(), 2u);
  EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::CANCELLED)) << c->message();
  EXPECT_FALSE(c->ran());
  ASSERT_TRUE(exec.Cancel({1}));
  c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->id(), 1u);
  EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::CANCELLED)) << c->message();
  ASSERT_TRUE(exec.Send(bounded(3)));
  c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->id(), 3u);
  ExpectOutputsMatch(*c, RunDirectly(inputs));
  exec.WritesDone();
  EXPECT_TRUE(exec.Finish().ok());

  {
    ExecuteClient gone(*stub);
    ASSERT_TRUE(gone.Send(MakeAssignment(1, spinning.handle(), x)));
    ASSERT_TRUE(gone.Send(MakeAssignment(2, spinning.handle(), x)));
    ASSERT_TRUE(gone.Ping(1));
    std::optional<pb::ExecuteOut> pong = gone.Next();  // the agent has read both
    ASSERT_TRUE(pong.has_value() && pong->has_pong());
    gone.TryCancel();
    EXPECT_FALSE(gone.Finish().ok());
  }
  ExecuteClient next(*stub);
  ASSERT_TRUE(next.Send(bounded(1)));
  c = next.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->code(), 0) << c->message();
  ExpectOutputsMatch(*c, RunDirectly(inputs));
  next.WritesDone();
  EXPECT_TRUE(next.Finish().ok());
}

grpc::Status Unload(pb::Agent::Stub& stub, const std::string& handle) {
  grpc::ClientContext context;
  Prepare(context, "");
  pb::UnloadRequest request;
  request.set_handle(handle);
  pb::UnloadReply reply;
  return stub.Unload(&context, request, &reply);
}

// The agent's view of a client that names itself (LoadHeader.client).
int64_t ClientLoads(pb::Agent::Stub& stub, const std::string& client) {
  grpc::ClientContext context;
  Prepare(context, "");
  pb::HelloRequest request;
  request.set_client(client);
  pb::HelloReply reply;
  EXPECT_TRUE(stub.Hello(&context, request, &reply).ok());
  return reply.client_loads();
}

// A client that names itself is counted one Load per partition, however
// often it loads it, and is around while an Execute stream of its own is
// open; once it has had none for the client grace (0 here), its Loads are
// given back as if it had unloaded them. A Load without a client id (and
// another client's) is untouched, and an Unload of what a client no longer
// holds is ignored.
TEST(AgentServerTest, AClientAwayPastTheGraceHasItsLoadsGivenBack) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  AgentOptions options;
  options.client_grace = std::chrono::milliseconds(0);
  std::unique_ptr<AgentServer> server = StartAgent(options, {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));
  pb::LoadReply loaded;
  ASSERT_TRUE(Load(*stub, LoadRequest(Partition().bytes), &loaded).ok());  // no client id

  grpc::ClientContext stream_context;
  Prepare(stream_context, "");
  stream_context.AddMetadata("baton-client", "c1");
  std::unique_ptr<grpc::ClientReaderWriter<pb::ExecuteIn, pb::ExecuteOut>> stream = stub->Execute(&stream_context);
  ASSERT_TRUE(Load(*stub, LoadRequest(Partition().bytes).Client("c1"), &loaded).ok());
  ASSERT_TRUE(Load(*stub, LoadRequest(Partition().bytes).Client("c1"), &loaded).ok());  // counted once
  EXPECT_EQ(ClientLoads(*stub, "c1"), 1);
  EXPECT_EQ(ClientLoads(*stub, "other"), 0);
  // Its stream is open: around, whatever the grace.
  EXPECT_EQ(server->Stats().clients_expired(), 0u);
  EXPECT_EQ(ClientLoads(*stub, "c1"), 1);

  stream->WritesDone();
  pb::ExecuteOut out;
  while (stream->Read(&out)) {
  }
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_TRUE(baton::testing::WaitUntil([&] { return server->Stats().clients_expired() == 1; }))
      << "the client's Loads were not given back once its stream ended";
  EXPECT_EQ(ClientLoads(*stub, "c1"), 0);
  pb::StatsReply stats = server->Stats();
  EXPECT_EQ(stats.partitions_loaded(), 1u) << "the Load without a client id stays";
  EXPECT_EQ(stats.unloads(), 0u);
  {
    grpc::ClientContext context;
    Prepare(context, "");
    pb::UnloadRequest request;
    request.set_handle(loaded.handle());
    request.set_client("c1");
    pb::UnloadReply reply;
    EXPECT_TRUE(stub->Unload(&context, request, &reply).ok()) << "nothing to give back: not an error";
  }
  EXPECT_EQ(server->Stats().partitions_loaded(), 1u) << "c1's Unload took another's Load";
  ASSERT_TRUE(Unload(*stub, loaded.handle()).ok());
  stats = server->Stats();
  EXPECT_EQ(stats.partitions_loaded(), 0u) << "c1's two Loads were given back as one";
  EXPECT_EQ(stats.unloads(), 1u);

  // A client id is bounded (each one is kept until it expires).
  const grpc::Status long_id = Load(*stub, LoadRequest(Partition().bytes).Client(std::string(129, 'c')), &loaded);
  EXPECT_EQ(long_id.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(long_id.error_message(), HasSubstr("a client id of 129 bytes; send at most 128"));
  EXPECT_EQ(server->Stats().partitions_loaded(), 0u);
}

// A GrpcRemoteDevice on an agent in this process with one partition loaded,
// bound to PU 0 and started; its completions are kept.
struct StartedDevice {
  std::shared_ptr<GrpcRemoteDevice> device;
  std::unique_ptr<RemotePartition> partition;
  runtime::RunnerTable runners;
  std::mutex mu;
  std::vector<dispatch::Completion> got;  // guarded by mu

  // Empty on success, else what failed. `before_start` runs between the Load and Start.
  std::string Start(const AgentServer& server, const std::string& bytes,
                    const std::function<void()>& before_start = nullptr) {
    RemoteDeviceOptions o;
    o.name = "edge";
    o.address = server.address();
    absl::StatusOr<std::shared_ptr<GrpcRemoteDevice>> connected = GrpcRemoteDevice::Connect(o);
    if (!connected.ok()) return connected.status().ToString();
    device = *std::move(connected);
    absl::StatusOr<GrpcRemoteDevice::Loaded> loaded = device->Load("p0", bytes);
    if (!loaded.ok()) return loaded.status().ToString();
    partition = std::make_unique<RemotePartition>(loaded->handle);
    runners.Set(ModelId(0), PartitionId(0), PuId(0), partition.get());
    device->Bind(DeviceId(0), {runtime::PuSetup{PuId(0), "edge/cpu0", "cpu", {}}}, &runners);
    if (before_start) before_start();
    device->Start(runtime::RemoteDeviceEvents{
        .completion =
            [this](dispatch::Completion c) {
              std::lock_guard lock(mu);
              got.push_back(std::move(c));
            },
        .returned = [](std::vector<dispatch::Assignment>) {},
        .reachable = [](bool, std::string) {},
        .now = [] { return Time(std::chrono::steady_clock::now().time_since_epoch()); }});
    return "";
  }
  // Runs `inputs` as assignment 1 and waits for its completion (nullopt: none came).
  std::optional<dispatch::Completion> Run(const dispatch::NamedTensors& inputs) {
    dispatch::Assignment a;
    a.id = AssignmentId(1);
    a.request = RequestId(1);
    a.model = ModelId(0);
    a.partition = PartitionId(0);
    for (const auto& [name, tensor] : inputs) a.inputs.emplace_back(name, tensor.Clone());
    device->Submit(std::move(a));
    if (!baton::testing::WaitUntil([&] {
          std::lock_guard lock(mu);
          return !got.empty();
        })) {
      return std::nullopt;
    }
    std::lock_guard lock(mu);
    return std::move(got.front());
  }
  ~StartedDevice() {
    if (device) device->Stop();
  }
};

// A remote device whose Loads the agent gave back before it started (the
// grace is 0: it had no stream open yet) loads them again when it starts,
// and its work runs.
TEST(AgentServerTest, ARemoteDeviceLoadsAgainWhatTheAgentGaveBack) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  AgentOptions options;
  options.client_grace = std::chrono::milliseconds(0);
  std::unique_ptr<AgentServer> server = StartAgent(options, {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  StartedDevice d;
  ASSERT_EQ(d.Start(*server, Partition().bytes, [&] {
    EXPECT_EQ(server->Stats().partitions_loaded(), 0u) << "given back: no stream yet, and no grace";
  }), "");
  EXPECT_EQ(d.device->counters().given_back, 1u);
  EXPECT_EQ(d.device->counters().loads_sent, 2u);
  std::optional<dispatch::Completion> c = d.Run(Inputs(3));
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(c->status.ok()) << c->status;
  EXPECT_EQ(server->Stats().partitions_loaded(), 1u) << "held while the device's stream is open";
}

// Loads are counted per handle and the last Unload frees the partition; the
// parameters of everything loaded share one budget per agent.
TEST(AgentServerTest, TheLastUnloadFreesAPartitionAndAllLoadsShareOneBudget) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  absl::StatusOr<std::string> spin = baton::testing::SpinModelBytes();
  ASSERT_TRUE(spin.ok()) << spin.status();
  auto spin_model = graph::Model::LoadBytes(*spin, "spin");
  ASSERT_TRUE(spin_model.ok()) << spin_model.status();
  const int64_t resnet_bytes = Partition().model->total_param_bytes();
  const int64_t spin_bytes = (*spin_model)->total_param_bytes();
  ASSERT_GT(spin_bytes, 0);
  AgentOptions options;
  options.max_loaded_param_bytes = resnet_bytes + spin_bytes - 1;  // one of them at a time
  std::unique_ptr<AgentServer> server = StartAgent(options, {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));

  pb::LoadReply first, again, refused;
  ASSERT_TRUE(Load(*stub, LoadRequest(Partition().bytes), &first).ok());
  ASSERT_TRUE(Load(*stub, LoadRequest(Partition().bytes), &again).ok());  // cached: no more budget
  EXPECT_TRUE(again.cached());
  grpc::Status status = Load(*stub, LoadRequest(*spin), &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("memory budget"));
  EXPECT_THAT(status.error_message(), HasSubstr("--max-loaded-mb"));
  pb::StatsReply stats = server->Stats();
  EXPECT_EQ(stats.partitions_loaded(), 1u);
  EXPECT_EQ(stats.loaded_param_bytes(), resnet_bytes);
  EXPECT_EQ(stats.max_loaded_param_bytes(), options.max_loaded_param_bytes);

  ASSERT_TRUE(Unload(*stub, first.handle()).ok());  // one Load is still out
  EXPECT_EQ(server->Stats().partitions_loaded(), 1u);
  ASSERT_TRUE(Unload(*stub, first.handle()).ok());  // the last one
  stats = server->Stats();
  EXPECT_EQ(stats.partitions_loaded(), 0u);
  EXPECT_EQ(stats.loaded_param_bytes(), 0);
  EXPECT_EQ(stats.unloads(), 1u);
  EXPECT_EQ(Unload(*stub, first.handle()).error_code(), grpc::StatusCode::NOT_FOUND);

  // Room again. The Unload of a partition withdraws its run (its session
  // lives until the run returns), which frees the PU for the next one.
  pb::LoadReply spinning;
  ASSERT_TRUE(Load(*stub, LoadRequest(*spin), &spinning).ok());
  dispatch::NamedTensors x;
  x.emplace_back("x", Tensor(dtype::kFloat, {1}));
  ExecuteClient exec(*stub);
  ASSERT_TRUE(exec.Send(MakeAssignment(1, spinning.handle(), x)));
  ASSERT_TRUE(exec.Ping(1));
  std::optional<pb::ExecuteOut> pong = exec.Next();  // the agent has read it
  ASSERT_TRUE(pong.has_value() && pong->has_pong());
  ASSERT_TRUE(Unload(*stub, spinning.handle()).ok());
  EXPECT_EQ(server->Stats().partitions_loaded(), 0u);
  std::optional<pb::Completion> c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION)) << c->message();
  ASSERT_TRUE(exec.Cancel({1}));  // answered already: ignored
  pb::LoadReply back;
  ASSERT_TRUE(Load(*stub, LoadRequest(Partition().bytes), &back).ok());
  const dispatch::NamedTensors inputs = Inputs();
  pb::Assignment bounded = MakeAssignment(2, back.handle(), inputs);
  bounded.set_has_deadline(true);
  bounded.set_deadline_budget_ns(int64_t{30} * 1000000000);
  ASSERT_TRUE(exec.Send(bounded));
  c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  ExpectOutputsMatch(*c, RunDirectly(inputs));
  EXPECT_TRUE(exec.Finish().ok());
}

// The HL side gives back what it loaded when its device object goes away,
// so an agent serving many runs does not keep every partition it ever got.
TEST(AgentServerTest, ARemoteDeviceUnloadsWhatItLoadedWhenItGoesAway) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  std::unique_ptr<AgentServer> server = StartAgent(AgentOptions(), {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));
  pb::LoadReply other;  // another client's Load of the same partition
  ASSERT_TRUE(Load(*stub, LoadRequest(Partition().bytes), &other).ok());
  absl::StatusOr<std::string> spin = baton::testing::SpinModelBytes();
  ASSERT_TRUE(spin.ok()) << spin.status();
  {
    RemoteDeviceOptions o;
    o.name = "edge";
    o.address = server->address();
    absl::StatusOr<std::shared_ptr<GrpcRemoteDevice>> device = GrpcRemoteDevice::Connect(o);
    ASSERT_TRUE(device.ok()) << device.status();
    ASSERT_TRUE((*device)->Load("resnet.p0", Partition().bytes).ok());
    ASSERT_TRUE((*device)->Load("spin", *spin).ok());
    EXPECT_EQ(server->Stats().partitions_loaded(), 2u);
  }
  const pb::StatsReply stats = server->Stats();
  EXPECT_EQ(stats.partitions_loaded(), 1u) << "the other client's Load stays";
  EXPECT_EQ(stats.unloads(), 1u);
  ASSERT_TRUE(Unload(*stub, other.handle()).ok());
  EXPECT_EQ(server->Stats().partitions_loaded(), 0u);
}

// With a chunk size below an assignment's input and its answer's output
// (Relu on 4096 floats: 16 KiB each way), a remote device sends the
// assignment as frames and takes the answer in frames; the output is right.
TEST(AgentServerTest, ARemoteDeviceSendsAndTakesFramesBelowTheChunkSize) {
  constexpr int64_t kFloats = 4096;
  graph::GraphBuilder b;
  b.AddInput("x", dtype::kFloat, {1, kFloats});
  b.AddNode("Relu", {"x"}, {"y"}, {}, "relu");
  b.AddOutput("y", dtype::kFloat, {1, kFloats});
  absl::StatusOr<std::string> model = b.Serialize();
  ASSERT_TRUE(model.ok()) << model.status();
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  AgentOptions options;
  options.chunk_bytes = 4096;  // the least a remote device takes
  std::unique_ptr<AgentServer> server = StartAgent(options, {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  StartedDevice d;
  ASSERT_EQ(d.Start(*server, *model), "");
  ASSERT_EQ(d.device->hello().chunk_bytes, 4096);
  dispatch::NamedTensors inputs;
  Tensor x(dtype::kFloat, {1, kFloats});
  for (int64_t i = 0; i < kFloats; ++i) x.data<float>()[i] = static_cast<float>(i % 17) - 8.0f;
  inputs.emplace_back("x", x.Clone());
  std::optional<dispatch::Completion> c = d.Run(inputs);
  ASSERT_TRUE(c.has_value());
  ASSERT_TRUE(c->status.ok()) << c->status;
  const Tensor* y = dispatch::FindTensor(c->outputs, "y");
  ASSERT_NE(y, nullptr);
  ASSERT_EQ(y->shape(), x.shape());
  int64_t wrong = 0;
  for (int64_t i = 0; i < kFloats; ++i) wrong += y->data<float>()[i] != std::max(0.0f, x.data<float>()[i]);
  EXPECT_EQ(wrong, 0);
}

// Unloading a partition withdraws its work: the assignment running and the
// ones queued behind it are answered FAILED_PRECONDITION at once, where they
// would otherwise wait for good (no PU can take them any more).
TEST(AgentServerTest, UnloadingAPartitionAnswersItsWorkStillQueuedOrRunning) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  std::unique_ptr<AgentServer> server = StartAgent(AgentOptions(), {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));
  absl::StatusOr<std::string> spin = baton::testing::SpinModelBytes();
  ASSERT_TRUE(spin.ok()) << spin.status();
  pb::LoadReply loaded;
  ASSERT_TRUE(Load(*stub, LoadRequest(*spin), &loaded).ok());
  dispatch::NamedTensors x;
  x.emplace_back("x", Tensor(dtype::kFloat, {1}));
  ExecuteClient exec(*stub);
  for (uint64_t id = 1; id <= 3; ++id) {
    pb::Assignment a = MakeAssignment(id, loaded.handle(), x);
    a.set_exec_timeout_ns(int64_t{50} * 1000000000);  // the agent's 60 s cap: it would run for that long
    ASSERT_TRUE(exec.Send(a));
  }
  ASSERT_TRUE(baton::testing::WaitUntil([&] {
    const pb::StatsReply st = server->Stats();
    return st.running() == 1 && st.queued() == 2;
  }));
  ASSERT_TRUE(Unload(*stub, loaded.handle()).ok());
  std::set<uint64_t> answered;
  for (int i = 0; i < 3; ++i) {
    std::optional<pb::Completion> c = exec.NextCompletion();
    ASSERT_TRUE(c.has_value());
    answered.insert(c->id());
    EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION)) << c->message();
    EXPECT_THAT(c->message(), HasSubstr("was unloaded while this assignment waited or ran"));
  }
  EXPECT_EQ(answered, (std::set<uint64_t>{1, 2, 3}));
  EXPECT_TRUE(baton::testing::WaitUntil([&] { return server->Stats().running() == 0; })) << "the run was stopped";
  exec.WritesDone();
  EXPECT_TRUE(exec.Finish().ok());
}

// Outputs too large for one answer are answered RESOURCE_EXHAUSTED, naming
// the sizes; before, a completion over 2 GiB failed to serialize and went out
// as an empty frame, and its client never got an answer.
TEST(AgentServerTest, OutputsTooLargeForOneAnswerAreAnsweredResourceExhausted) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  AgentOptions options;
  options.max_answer_bytes = 16;  // stands in for 2 GiB
  std::unique_ptr<AgentServer> server = StartAgent(options, {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));
  pb::LoadReply loaded;
  ASSERT_TRUE(Load(*stub, LoadRequest(Partition().bytes), &loaded).ok());
  ExecuteClient exec(*stub);
  ASSERT_TRUE(exec.Send(MakeAssignment(7, loaded.handle(), Inputs())));
  std::optional<pb::Completion> c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->id(), 7u);
  EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED)) << c->message();
  EXPECT_THAT(c->message(), HasSubstr("the outputs of assignment 7 are "));
  EXPECT_THAT(c->message(), HasSubstr("above the 16 one answer can carry"));
  EXPECT_EQ(c->outputs_size(), 0);
  exec.WritesDone();
  EXPECT_TRUE(exec.Finish().ok());
}

// A client that used up its execution-time budget gets RESOURCE_EXHAUSTED for
// new work; another client is not affected.
TEST(AgentServerTest, AClientPastItsExecutionBudgetIsRefusedAndOthersAreNot) {
  AgentOptions options;
  options.client_run_budget = std::chrono::milliseconds(100);
  options.client_budget_window = std::chrono::seconds(600);  // refills 1 ms of budget per 6 s
  options.max_run = std::chrono::milliseconds(300);           // the spin is stopped here, and charged
  SpinAgent agent(options);
  ASSERT_NE(agent.server, nullptr);
  pb::Agent::Stub* stub = agent.stub.get();
  const pb::LoadReply& spinning = agent.spinning;
  const pb::LoadReply& normal = agent.normal;
  const dispatch::NamedTensors& x = agent.x;
  const dispatch::NamedTensors inputs = Inputs();

  ExecuteClient greedy(*stub);
  ASSERT_TRUE(greedy.Send(MakeAssignment(1, spinning.handle(), x)));
  std::optional<pb::Completion> c = greedy.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::ABORTED)) << c->message();  // its max_run
  ASSERT_TRUE(greedy.Send(MakeAssignment(2, normal.handle(), inputs)));
  c = greedy.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED)) << c->message();
  EXPECT_THAT(c->message(), HasSubstr("execution-time budget of 100 ms of PU time per 600000 ms"));
  EXPECT_FALSE(c->ran());
  EXPECT_TRUE(greedy.Finish().ok());

  ExecuteClient other(*stub);
  ASSERT_TRUE(other.Send(MakeAssignment(1, normal.handle(), inputs)));
  c = other.NextCompletion();
  ASSERT_TRUE(c.has_value());
  ExpectOutputsMatch(*c, RunDirectly(inputs));
  EXPECT_TRUE(other.Finish().ok());
  EXPECT_EQ(agent.server->Stats().budget_refusals(), 1u);
}

TEST(ContentHashTest, IsSha256InLowercaseHex) {
  EXPECT_EQ(net::Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(net::Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(AgentServerTest, UnknownHandleAndLateAssignmentAreAnsweredAtOnce) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  std::unique_ptr<AgentServer> server = StartAgent(AgentOptions(), {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));
  pb::LoadReply loaded;
  ASSERT_TRUE(Load(*stub, LoadRequest(Partition().bytes), &loaded).ok());
  const dispatch::NamedTensors inputs = Inputs();

  ExecuteClient exec(*stub);
  ASSERT_TRUE(exec.Send(MakeAssignment(1, "no-such-handle", inputs)));
  std::optional<pb::Completion> c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->id(), 1u);
  EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_THAT(c->message(), HasSubstr("no-such-handle"));
  EXPECT_FALSE(c->ran());

  uint64_t late_id = 20;  // ids are unique per stream: a repeat would be refused
  for (int64_t budget : {int64_t{0}, int64_t{-1000000}}) {
    pb::Assignment late = MakeAssignment(late_id, loaded.handle(), inputs);
    late.set_has_deadline(true);
    late.set_deadline_budget_ns(budget);
    ASSERT_TRUE(exec.Send(late));
    c = exec.NextCompletion();
    ASSERT_TRUE(c.has_value());
    EXPECT_EQ(c->id(), late_id++);
    EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED)) << c->message();
    EXPECT_FALSE(c->ran());
  }

  // Missing input and a bad fixed PU: InvalidArgument naming them.
  pb::Assignment missing = MakeAssignment(3, loaded.handle(), {});
  ASSERT_TRUE(exec.Send(missing));
  c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(c->message(), HasSubstr("is missing"));
  pb::Assignment bad_pu = MakeAssignment(4, loaded.handle(), inputs);
  bad_pu.set_has_fixed_pu(true);
  bad_pu.set_fixed_pu(7);
  ASSERT_TRUE(exec.Send(bad_pu));
  c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(c->message(), HasSubstr("fixed_pu 7"));

  // Unload: the handle is gone for later work and for a second Unload.
  for (grpc::StatusCode want : {grpc::StatusCode::OK, grpc::StatusCode::NOT_FOUND}) {
    grpc::ClientContext context;
    Prepare(context, "");
    pb::UnloadRequest request;
    request.set_handle(loaded.handle());
    pb::UnloadReply reply;
    EXPECT_EQ(stub->Unload(&context, request, &reply).error_code(), want);
  }
  ASSERT_TRUE(exec.Send(MakeAssignment(5, loaded.handle(), inputs)));
  c = exec.NextCompletion();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_TRUE(exec.Finish().ok());

  const pb::StatsReply stats = server->Stats();
  EXPECT_EQ(stats.dropped_deadline(), 2u);
  EXPECT_EQ(stats.completions_failed(), 6u);
  EXPECT_EQ(stats.partitions_loaded(), 0u);
}

TEST(AgentServerTest, MessagesAboveTheChunkSizeTravelAsFramesBothWays) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  AgentOptions options;
  options.chunk_bytes = 1024;
  std::unique_ptr<AgentServer> server = StartAgent(options, {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));
  pb::LoadReply loaded;
  ASSERT_TRUE(Load(*stub, LoadRequest(Partition().bytes).Chunk(1024), &loaded).ok());

  const dispatch::NamedTensors inputs = Inputs(11);
  const dispatch::NamedTensors expected = RunDirectly(inputs);
  ExecuteClient exec(*stub);
  for (uint64_t id = 1; id <= 2; ++id) {
    const pb::Assignment a = MakeAssignment(id, loaded.handle(), inputs);
    ASSERT_GT(a.ByteSizeLong(), 1024u);
    ASSERT_TRUE(exec.Send(a, /*chunk=*/1024));
  }
  for (int i = 0; i < 2; ++i) {
    std::optional<pb::Completion> c = exec.NextCompletion();
    ASSERT_TRUE(c.has_value());
    ASSERT_GT(c->ByteSizeLong(), 1024u);
    ExpectOutputsMatch(*c, expected);
  }
  EXPECT_GT(exec.frames(), 2);
  // A ping between framed messages is answered.
  ASSERT_TRUE(exec.Ping(9));
  std::optional<pb::ExecuteOut> pong = exec.Next();
  ASSERT_TRUE(pong.has_value());
  EXPECT_EQ(pong->pong().seq(), 9u);
  EXPECT_TRUE(exec.Finish().ok());
}

TEST(AgentServerTest, HalfClosedStreamStillGetsItsCompletions) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  std::unique_ptr<AgentServer> server = StartAgent(AgentOptions(), {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));
  pb::LoadReply loaded;
  ASSERT_TRUE(Load(*stub, LoadRequest(Partition().bytes), &loaded).ok());
  const dispatch::NamedTensors inputs = Inputs();
  ExecuteClient exec(*stub);
  for (uint64_t id = 1; id <= 3; ++id) ASSERT_TRUE(exec.Send(MakeAssignment(id, loaded.handle(), inputs)));
  // Half-close at once: the agent answers all three before ending the stream.
  exec.WritesDone();
  int completions = 0;
  while (std::optional<pb::Completion> c = exec.NextCompletion()) {
    EXPECT_EQ(c->code(), 0) << c->message();
    ++completions;
  }
  EXPECT_TRUE(exec.Finish().ok());
  EXPECT_EQ(completions, 3);
}

TEST(AgentServerTest, ShutdownEndsOpenStreams) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  std::unique_ptr<AgentServer> server = StartAgent(AgentOptions(), {CpuPu(cpu, "cpu0")});
  ASSERT_NE(server, nullptr);
  auto stub = pb::Agent::NewStub(Channel(*server));
  ExecuteClient exec(*stub);
  ASSERT_TRUE(exec.Ping(1));
  ASSERT_TRUE(exec.Next().has_value());  // the stream is open on the agent
  EXPECT_EQ(server->Stats().streams(), 1u);
  server->Shutdown();
  EXPECT_FALSE(exec.Next().has_value());
  server->Shutdown();  // idempotent
}

TEST(AgentServerTest, HealthServiceAnswersServing) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  const fs::path token_file = fs::path(::testing::TempDir()) / absl::StrCat("agent_health_token_", getpid());
  {
    std::ofstream out(token_file);
    out << "t0k3n";
  }
  AgentOptions options;
  options.security.token_file = token_file.string();  // health stays open
  std::unique_ptr<AgentServer> server = StartAgent(options, {CpuPu(cpu, "cpu0")});
  fs::remove(token_file);
  ASSERT_NE(server, nullptr);
  grpc::GenericStub generic(Channel(*server));
  for (const std::string& service : {std::string(), std::string("baton.agent.v1.Agent")}) {
    SCOPED_TRACE(service);
    // HealthCheckRequest{service} by hand: field 1, length-delimited.
    std::string request;
    if (!service.empty()) {
      request = absl::StrCat(std::string(1, 0x0a), std::string(1, static_cast<char>(service.size())), service);
    }
    grpc::Slice slice(request);
    grpc::ByteBuffer request_buffer(&slice, 1);
    grpc::ByteBuffer response_buffer;
    grpc::ClientContext context;
    Prepare(context, "");
    std::promise<grpc::Status> result;
    generic.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request_buffer,
                      &response_buffer, [&](grpc::Status s) { result.set_value(std::move(s)); });
    grpc::Status status = result.get_future().get();
    ASSERT_TRUE(status.ok()) << status.error_message();
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(response_buffer.Dump(&slices).ok());
    std::string response;
    for (const grpc::Slice& s : slices) response.append(reinterpret_cast<const char*>(s.begin()), s.size());
    EXPECT_EQ(response, std::string("\x08\x01", 2));  // HealthCheckResponse{status: SERVING}
  }
}

TEST(AgentServerTest, StartRefusesBadOptions) {
  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  {
    AgentOptions options;
    options.low_level = "no-such-policy";
    absl::StatusOr<std::unique_ptr<AgentServer>> server = AgentServer::Start(options, {CpuPu(cpu, "cpu0")});
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(server.status().message()), HasSubstr("no-such-policy"));
  }
  {
    absl::StatusOr<std::unique_ptr<AgentServer>> server = AgentServer::Start(AgentOptions(), {});
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  }
  {
    AgentOptions options;
    options.client_budget_window = std::chrono::milliseconds(0);
    absl::StatusOr<std::unique_ptr<AgentServer>> server = AgentServer::Start(options, {CpuPu(cpu, "cpu0")});
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(server.status().message()), HasSubstr("client_budget_window"));
  }
  for (auto [set, says] : std::vector<std::pair<std::function<void(AgentOptions&)>, const char*>>{
           {[](AgentOptions& o) { o.max_concurrent_loads = 0; }, "max_concurrent_loads must be in 1..1024, got 0"},
           {[](AgentOptions& o) { o.max_threads = 2; }, "max_threads must be in 8..4096, got 2"},
           {[](AgentOptions& o) { o.max_answer_bytes = 0; }, "max_answer_bytes must be in 1.."}}) {
    AgentOptions options;
    set(options);
    absl::StatusOr<std::unique_ptr<AgentServer>> server = AgentServer::Start(options, {CpuPu(cpu, "cpu0")});
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(server.status().message()), HasSubstr(says));
  }
  {
    AgentOptions options;
    options.max_loaded_param_bytes = -1;
    absl::StatusOr<std::unique_ptr<AgentServer>> server = AgentServer::Start(options, {CpuPu(cpu, "cpu0")});
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(server.status().message()), HasSubstr("max_loaded_param_bytes"));
  }
  {
    // 0 = half of the physical memory, reported by Stats.
    std::unique_ptr<AgentServer> server = StartAgent(AgentOptions(), {CpuPu(cpu, "cpu0")});
    ASSERT_NE(server, nullptr);
    EXPECT_GT(server->Stats().max_loaded_param_bytes(), 0);
  }
  {
    // The port is taken by a first agent.
    std::unique_ptr<AgentServer> first = StartAgent(AgentOptions(), {CpuPu(cpu, "cpu0")});
    ASSERT_NE(first, nullptr);
    AgentOptions options;
    options.listen = first->address();
    absl::StatusOr<std::unique_ptr<AgentServer>> second = AgentServer::Start(options, {CpuPu(cpu, "cpu0")});
    EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(std::string(second.status().message()), HasSubstr("--listen"));
  }
}

// ---------------------------------------------------------------------------
// AGENT.yaml

TEST(AgentConfigTest, ParsesPusAndRefusesUnknownKeys) {
  absl::StatusOr<config::DeviceConfig> device = config::ParseAgentConfig(
      "name: edge1\n"
      "pus:\n"
      "  - {name: cpu0, kind: cpu, threads: 1, cores: [0]}\n"
      "  - {name: npu0, kind: emu, speed: 4, unsupported_ops: [Softmax], compute: true}\n",
      "AGENT.yaml");
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ(device->name, "edge1");
  ASSERT_EQ(device->pus.size(), 2u);
  EXPECT_EQ(device->pus[1].kind, "emu");
  EXPECT_EQ(device->pus[1].unsupported_ops, std::vector<std::string>{"Softmax"});

  absl::StatusOr<config::DeviceConfig> unnamed = config::ParseAgentConfig("pus: [{name: cpu0}]", "a.yaml");
  ASSERT_TRUE(unnamed.ok()) << unnamed.status();
  EXPECT_EQ(unnamed->name, "agent");

  struct Bad {
    std::string yaml;
    std::string message;
  };
  for (const Bad& bad : std::vector<Bad>{
           {"name: e\npus: [{name: cpu0}]\nmodels: []", "unknown key 'models'"},
           {"name: e", "missing required key 'pus'"},
           {"pus: []", "at least one PU"},
           {"pus: [{name: cpu0, colour: red}]", "pus[0]: unknown key 'colour'"},
           {"pus: [{name: cpu0}, {name: cpu0}]", "duplicate PU name 'cpu0'"},
           {"pus: [{name: cpu0, kind: cpu, speed: 2}]", "'speed' applies only to kind emu"},
           {"pus: [{name: a, kind: gpu}]", "unknown kind 'gpu'"},
           {"", "empty"},
           {"pus: [", "invalid YAML"},
       }) {
    SCOPED_TRACE(bad.yaml);
    absl::StatusOr<config::DeviceConfig> parsed = config::ParseAgentConfig(bad.yaml, "AGENT.yaml");
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("AGENT.yaml"));
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(bad.message));
  }
  EXPECT_EQ(config::LoadAgentConfig("/no/such/AGENT.yaml").status().code(), absl::StatusCode::kNotFound);
}

TEST(AgentConfigTest, DefaultDeviceHasOnePinnedCpuPuPerCore) {
  const config::DeviceConfig device = config::DefaultAgentDevice("edge", 3);
  EXPECT_EQ(device.name, "edge");
  ASSERT_EQ(device.pus.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(device.pus[i].name, absl::StrCat("cpu", i));
    EXPECT_EQ(device.pus[i].kind, "cpu");
    EXPECT_EQ(device.pus[i].threads, 1);
    EXPECT_EQ(device.pus[i].cores, std::vector<int>{i});
  }
  EXPECT_EQ(config::DefaultAgentDevice("edge", 0).pus.size(), 1u);
}

}  // namespace
}  // namespace baton::net
