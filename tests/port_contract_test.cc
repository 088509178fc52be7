// One contract suite for every low-level dispatcher the HL side can talk to
// (dispatch/port.h, runtime/remote_device.h): the local device shell (as the
// threaded runtime drives it), a remote agent over gRPC on loopback, and the
// virtual-time shell. Each must resolve every submitted assignment exactly
// once — answered with its id, or (remote only) handed back — run good work
// with its outputs, drop work whose deadline has passed, and never answer
// work it cannot run with success, and withdraw what it is told to cancel.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "baton/backend/ort/cpu_executor.h"
#include "baton/dispatch/virtual_shell.h"
#include "baton/graph/builder.h"
#include "baton/graph/extract.h"
#include "baton/graph/model.h"
#include "baton/net/agent_server.h"
#include "baton/net/remote_device.h"
#include "baton/policy/latency_model.h"
#include "baton/runtime/device_shell.h"
#include "spin_model.h"

namespace baton {
namespace {

using dispatch::Assignment;
using dispatch::Completion;

constexpr ModelId kModel(1);
constexpr PartitionId kRunnable(0);
constexpr PartitionId kUnknown(7);
constexpr PartitionId kSpin(3);  // runs until it is stopped (spin_model.h)

// What a harness saw: per assignment id, how often it was resolved, and how.
struct Seen {
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint32_t, int> resolved;
  std::map<uint32_t, absl::StatusCode> code;  // answers only
  std::map<uint32_t, bool> returned;
  std::map<uint32_t, bool> has_y;
  int inside_submit = 0;
  // Set by the harness around Submit: an answer on this thread while it is
  // set came from inside Submit (another thread answering meanwhile is fine).
  bool in_submit = false;
  std::thread::id submitter;
  bool InsideSubmit() const { return in_submit && std::this_thread::get_id() == submitter; }

  void Answer(const Completion& c) {
    std::lock_guard lock(mu);
    ++resolved[c.id.value];
    code[c.id.value] = c.status.code();
    has_y[c.id.value] = dispatch::FindTensor(c.outputs, "y") != nullptr;
    if (InsideSubmit()) ++inside_submit;
    cv.notify_all();
  }
  void Return(const Assignment& a) {
    std::lock_guard lock(mu);
    ++resolved[a.id.value];
    returned[a.id.value] = true;
    if (InsideSubmit()) ++inside_submit;
    cv.notify_all();
  }
  size_t total() {
    std::lock_guard lock(mu);
    size_t n = 0;
    for (const auto& [id, k] : resolved) n += static_cast<size_t>(k);
    return n;
  }
};

class Harness {
 public:
  virtual ~Harness() = default;
  virtual dispatch::LowLevelPort* port() = 0;
  virtual dispatch::NamedTensors Inputs() = 0;
  virtual Time Now() = 0;
  // Until `n` resolutions were seen (real time: bounded wait; virtual: run).
  virtual void Settle(size_t n) {
    std::unique_lock lock(seen.mu);
    seen.cv.wait_for(lock, std::chrono::seconds(20), [&] {
      size_t t = 0;
      for (const auto& [id, k] : seen.resolved) t += static_cast<size_t>(k);
      return t >= n;
    });
  }
  // Whether answers inside Submit are part of this dispatcher's contract
  // (the local shell answers rejections inside Submit into the runtime's
  // mailbox, which delivers them later).
  virtual bool answers_outside_submit() const { return true; }
  void Submit(Assignment a) {
    {
      std::lock_guard lock(seen.mu);
      seen.in_submit = true;
      seen.submitter = std::this_thread::get_id();
    }
    port()->Submit(std::move(a));
    std::lock_guard lock(seen.mu);
    seen.in_submit = false;
  }
  // Cancel, watched like Submit: an answer inside it on this thread counts
  // as inside a port call.
  void Cancel(std::vector<AssignmentId> ids) {
    {
      std::lock_guard lock(seen.mu);
      seen.in_submit = true;
      seen.submitter = std::this_thread::get_id();
    }
    port()->Cancel(ids);
    std::lock_guard lock(seen.mu);
    seen.in_submit = false;
  }
  Seen seen;
};

std::shared_ptr<const graph::Model> ReluModel() {
  graph::GraphBuilder b;
  b.AddInput("x", dtype::kFloat, {1, 4});
  b.AddNode("Relu", {"x"}, {"y"}, {}, "relu");
  b.AddOutput("y", dtype::kFloat, {1, 4});
  auto bytes = b.Serialize();
  EXPECT_TRUE(bytes.ok());
  auto m = graph::Model::LoadBytes(*bytes, "relu");
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

dispatch::NamedTensors ReluInputs() {
  dispatch::NamedTensors in;
  Tensor x(dtype::kFloat, {1, 4});
  for (int i = 0; i < 4; ++i) x.data<float>()[i] = static_cast<float>(i) - 1.5f;
  in.emplace_back("x", std::move(x));
  return in;
}

std::unique_ptr<backend::PreparedPartition> PrepareRelu(const backend::Executor& cpu,
                                                        const graph::Model& model, std::string* bytes) {
  std::vector<NodeId> all;
  for (size_t n = 0; n < model.nodes().size(); ++n) all.push_back(NodeId(static_cast<uint32_t>(n)));
  auto sub = graph::ExtractSubmodel(model, all, "relu.p0");
  EXPECT_TRUE(sub.ok()) << sub.status();
  if (bytes) *bytes = sub->onnx_bytes;
  auto prepared = cpu.Prepare(model, *sub);
  EXPECT_TRUE(prepared.ok()) << prepared.status();
  return std::move(*prepared);
}

// The spin model as one whole partition: float x[1] -> y[1], practically forever.
std::unique_ptr<backend::PreparedPartition> PrepareSpin(const backend::Executor& cpu, std::string* bytes,
                                                        std::shared_ptr<const graph::Model>* keep) {
  absl::StatusOr<std::string> spin = baton::testing::SpinModelBytes();
  EXPECT_TRUE(spin.ok()) << spin.status();
  auto m = graph::Model::LoadBytes(*spin, "spin");
  EXPECT_TRUE(m.ok()) << m.status();
  *keep = *m;
  std::vector<NodeId> all;
  for (size_t n = 0; n < (*m)->nodes().size(); ++n) all.push_back(NodeId(static_cast<uint32_t>(n)));
  auto sub = graph::ExtractSubmodel(**m, all, "spin.p0");
  EXPECT_TRUE(sub.ok()) << sub.status();
  if (bytes) *bytes = sub->onnx_bytes;
  auto prepared = cpu.Prepare(**m, *sub);
  EXPECT_TRUE(prepared.ok()) << prepared.status();
  return std::move(*prepared);
}

dispatch::NamedTensors SpinInputs() {
  dispatch::NamedTensors in;
  Tensor x(dtype::kFloat, {1});
  x.data<float>()[0] = 0.0f;
  in.emplace_back("x", std::move(x));
  return in;
}

// The local device shell, its sink feeding a mailbox as the runtime's does.
class LocalHarness : public Harness {
 public:
  LocalHarness() : cpu_(backend::CpuPuSpec{"cpu0", 1, {}}) {
    model_ = ReluModel();
    prepared_ = PrepareRelu(cpu_, *model_, nullptr);
    runners_.Set(kModel, kRunnable, PuId(0), prepared_.get());
    spin_ = PrepareSpin(cpu_, nullptr, &spin_model_);
    runners_.Set(kModel, kSpin, PuId(0), spin_.get());
    latency_ = *policy::OnlineLatencyModel::Create({});
    latency_->SetCapable(kModel, kUnknown, PuId(0), false);
    auto shell = runtime::DeviceShell::Create(
        DeviceId(0), "local", {runtime::PuSetup{PuId(0), "cpu0", "cpu", {}}}, *policy::MakeLowLevelPolicy("fifo"),
        16, latency_.get(), &runners_, std::chrono::steady_clock::now(),
        [this](std::vector<Completion> cs) {
          for (Completion& c : cs) seen.Answer(c);
        });
    EXPECT_TRUE(shell.ok()) << shell.status();
    shell_ = std::move(*shell);
    shell_->Start();
  }
  ~LocalHarness() override { shell_->Stop(); }
  dispatch::LowLevelPort* port() override { return shell_.get(); }
  dispatch::NamedTensors Inputs() override { return ReluInputs(); }
  Time Now() override { return shell_->Now(); }
  bool answers_outside_submit() const override { return false; }

 private:
  backend::CpuExecutor cpu_;
  std::shared_ptr<const graph::Model> model_, spin_model_;
  std::unique_ptr<backend::PreparedPartition> prepared_, spin_;
  runtime::RunnerTable runners_;
  std::unique_ptr<policy::OnlineLatencyModel> latency_;
  std::unique_ptr<runtime::DeviceShell> shell_;
};

// A `baton agent` (in this process) on loopback, through GrpcRemoteDevice.
class RemoteHarness : public Harness {
 public:
  RemoteHarness() : cpu_(backend::CpuPuSpec{"cpu0", 1, {}}), epoch_(std::chrono::steady_clock::now()) {
    net::AgentPu pu;
    pu.name = "cpu0";
    pu.kind = "cpu";
    pu.executor = &cpu_;
    auto server = net::AgentServer::Start(net::AgentOptions{}, {pu});
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    net::RemoteDeviceOptions o;
    o.name = "edge";
    o.address = server_->address();
    auto device = net::GrpcRemoteDevice::Connect(o);
    EXPECT_TRUE(device.ok()) << device.status();
    device_ = *device;
    model_ = ReluModel();
    std::string bytes;
    PrepareRelu(cpu_, *model_, &bytes);
    auto loaded = device_->Load("relu.p0", bytes);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    partition_ = std::make_unique<net::RemotePartition>(loaded->handle);
    runners_.Set(kModel, kRunnable, PuId(0), partition_.get());
    std::string spin_bytes;
    PrepareSpin(cpu_, &spin_bytes, &spin_model_);
    auto spin = device_->Load("spin.p0", spin_bytes);
    EXPECT_TRUE(spin.ok()) << spin.status();
    spin_ = std::make_unique<net::RemotePartition>(spin->handle);
    runners_.Set(kModel, kSpin, PuId(0), spin_.get());
    device_->Bind(DeviceId(0), {runtime::PuSetup{PuId(0), "edge/cpu0", "cpu", {}}}, &runners_);
    device_->Start(runtime::RemoteDeviceEvents{
        .completion = [this](Completion c) { seen.Answer(c); },
        .returned =
            [this](std::vector<Assignment> back) {
              for (const Assignment& a : back) seen.Return(a);
            },
        .reachable = [](bool, std::string) {},
        .now = [this] { return Now(); }});
  }
  ~RemoteHarness() override {
    device_->Stop();
    server_->Shutdown();
  }
  dispatch::LowLevelPort* port() override { return device_.get(); }
  dispatch::NamedTensors Inputs() override { return ReluInputs(); }
  Time Now() override { return Time(std::chrono::steady_clock::now() - epoch_); }

 private:
  backend::CpuExecutor cpu_;
  std::chrono::steady_clock::time_point epoch_;
  std::unique_ptr<net::AgentServer> server_;
  std::shared_ptr<net::GrpcRemoteDevice> device_;
  std::shared_ptr<const graph::Model> model_, spin_model_;
  std::unique_ptr<net::RemotePartition> partition_, spin_;
  runtime::RunnerTable runners_;
};

// The virtual-time shell: its port's completions go to its HL core, which
// ignores them (it did not send them); the trace shows each resolution.
class VirtualHarness : public Harness, public dispatch::VirtualExecutor, public dispatch::DispatchObserver {
 public:
  VirtualHarness() : shell_(this) {
    latency_.Set(kModel, kRunnable, PuId(0), FromMillis(1));
    latency_.Set(kModel, kSpin, PuId(0), FromMillis(1));
    EXPECT_TRUE(shell_.AddDevice({.device = DeviceId(0), .pus = {{PuId(0), "cpu"}}, .max_queue = 16},
                                 *policy::MakeLowLevelPolicy("fifo"), &latency_)
                    .ok());
    shell_.set_observer(this);
  }
  dispatch::LowLevelPort* port() override { return shell_.port(DeviceId(0)); }
  dispatch::NamedTensors Inputs() override { return ReluInputs(); }
  Time Now() override { return shell_.now(); }
  void Settle(size_t) override { shell_.RunUntilIdle(); }

  Duration RunTime(DeviceId, PuId, const Assignment& a) override {
    return a.partition == kSpin ? Duration(std::chrono::hours(1)) : FromMillis(1);
  }
  absl::StatusOr<dispatch::NamedTensors> Outputs(DeviceId, PuId, const Assignment& a) override {
    dispatch::NamedTensors out;
    out.emplace_back("y", a.inputs[0].second.Clone());
    return out;
  }
  void OnEvent(const dispatch::TraceEvent& e) override {
    if (!e.assignment) return;
    if (e.kind == dispatch::TraceKind::kFinished || e.kind == dispatch::TraceKind::kDropped) {
      Completion c;
      c.id = *e.assignment;
      c.status = absl::Status(e.code, "");
      if (e.code == absl::StatusCode::kOk) c.outputs.emplace_back("y", Tensor(dtype::kFloat, {1}));
      seen.Answer(c);
    }
  }

 private:
  policy::FixedLatencyModel latency_;
  dispatch::VirtualShell shell_;
};

class PortContractTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<Harness> Make() {
    if (GetParam() == "local") return std::make_unique<LocalHarness>();
    if (GetParam() == "remote") return std::make_unique<RemoteHarness>();
    return std::make_unique<VirtualHarness>();
  }
  static Assignment Make(Harness& h, uint32_t id, PartitionId partition, std::optional<Time> deadline) {
    Assignment a;
    a.id = AssignmentId(id);
    a.request = RequestId(id);
    a.model = kModel;
    a.partition = partition;
    a.inputs = h.Inputs();
    a.deadline = deadline;
    return a;
  }
};

TEST_P(PortContractTest, EveryAssignmentIsResolvedExactlyOnceWithItsId) {
  std::unique_ptr<Harness> h = Make();
  for (uint32_t i = 1; i <= 8; ++i) h->Submit(Make(*h, i, kRunnable, std::nullopt));
  h->Settle(8);
  for (uint32_t i = 1; i <= 8; ++i) {
    EXPECT_EQ(h->seen.resolved[i], 1) << "assignment " << i;
    EXPECT_EQ(h->seen.code[i], absl::StatusCode::kOk) << "assignment " << i;
    EXPECT_TRUE(h->seen.has_y[i]) << "assignment " << i;
  }
  EXPECT_EQ(h->seen.total(), 8u);
  if (h->answers_outside_submit()) {
    EXPECT_EQ(h->seen.inside_submit, 0);
  }
}

TEST_P(PortContractTest, WorkWhoseDeadlineHasPassedIsDropped) {
  std::unique_ptr<Harness> h = Make();
  const Time past = h->Now() - FromMillis(5);
  h->Submit(Make(*h, 1, kRunnable, past));
  h->Submit(Make(*h, 2, kRunnable, h->Now() + std::chrono::seconds(30)));
  h->Settle(2);
  EXPECT_EQ(h->seen.resolved[1], 1);
  EXPECT_EQ(h->seen.code[1], absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(h->seen.code[2], absl::StatusCode::kOk);
  if (h->answers_outside_submit()) {
    EXPECT_EQ(h->seen.inside_submit, 0);
  }
}

TEST_P(PortContractTest, WorkItCannotRunIsResolvedOnceAndNeverAsSuccess) {
  std::unique_ptr<Harness> h = Make();
  h->Submit(Make(*h, 1, kUnknown, std::nullopt));
  h->Submit(Make(*h, 2, kRunnable, std::nullopt));
  h->Settle(2);
  EXPECT_EQ(h->seen.resolved[1], 1);
  EXPECT_TRUE(h->seen.returned[1] || h->seen.code[1] != absl::StatusCode::kOk);
  EXPECT_EQ(h->seen.code[2], absl::StatusCode::kOk);
  EXPECT_EQ(h->seen.total(), 2u);
  if (h->answers_outside_submit()) {
    EXPECT_EQ(h->seen.inside_submit, 0);
  }
}

// Cancel: a running and a queued assignment are each answered Cancelled, once;
// an unknown id and an id already answered change nothing; the PU is free for
// the next assignment once the stopped run returns.
TEST_P(PortContractTest, CancelledWorkIsAnsweredOnceAndFreesThePu) {
  std::unique_ptr<Harness> h = Make();
  h->Submit(Make(*h, 1, kRunnable, std::nullopt));
  h->Settle(1);
  Assignment spin = Make(*h, 2, kSpin, std::nullopt);
  spin.inputs = SpinInputs();
  h->Submit(std::move(spin));                          // runs (forever)
  h->Submit(Make(*h, 3, kRunnable, std::nullopt));      // queued behind it
  h->Cancel({AssignmentId(2), AssignmentId(3), AssignmentId(1), AssignmentId(99)});
  h->Submit(Make(*h, 4, kRunnable, std::nullopt));      // runs once the spin stops
  h->Settle(4);
  EXPECT_EQ(h->seen.code[1], absl::StatusCode::kOk);
  EXPECT_EQ(h->seen.code[2], absl::StatusCode::kCancelled);
  EXPECT_EQ(h->seen.code[3], absl::StatusCode::kCancelled);
  EXPECT_EQ(h->seen.code[4], absl::StatusCode::kOk);
  for (uint32_t i = 1; i <= 4; ++i) EXPECT_EQ(h->seen.resolved[i], 1) << "assignment " << i;
  EXPECT_EQ(h->seen.resolved.count(99), 0u);
  EXPECT_EQ(h->seen.total(), 4u);
  if (h->answers_outside_submit()) {
    EXPECT_EQ(h->seen.inside_submit, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(LowLevelDispatchers, PortContractTest, ::testing::Values("local", "remote", "virtual"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace baton
