// The cost of a remote device, measured as ratios in one run on this machine:
//   1. per-hop overhead: the median latency of a tiny partition (Relu on 64
//      floats) through a `baton agent` on loopback (gRPC, one hop there and
//      back) minus the same through a local device, one request at a time,
//      interleaved in blocks;
//   2. throughput of two models on two agents (one 1-thread CPU PU each) vs
//      the same two PUs as two local devices in one process (closed loop).
// The agents are AgentServers in this process, reached over real loopback
// TCP. Usage: agent_bench [--requests N] [--seconds S]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "baton/backend/ort/cpu_executor.h"
#include "baton/graph/builder.h"
#include "baton/graph/model.h"
#include "baton/net/agent_server.h"
#include "baton/net/remote_device.h"
#include "baton/runtime/deployment.h"
#include "baton/runtime/runtime.h"
#include "baton/verify/verify.h"
#include "baton/zoo/zoo.h"

namespace baton {
namespace {

void Die(const absl::Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "agent_bench: %s: %s\n", what, s.ToString().c_str());
  std::exit(1);
}

// N devices, each one 1-thread CPU PU: local, or an in-process agent.
class Setup {
 public:
  Setup(int devices, bool remote) {
    for (int d = 0; d < devices; ++d) {
      const std::string name = absl::StrCat(remote ? "agent" : "local", d);
      runtime::DeployDevice dev{DeviceId(static_cast<uint32_t>(d)), name, {}};
      cpus_.push_back(std::make_unique<backend::CpuExecutor>(backend::CpuPuSpec{name + "/cpu0", 1, {}}));
      if (remote) {
        net::AgentOptions o;
        o.name = name;
        net::AgentPu pu;
        pu.name = "cpu0";
        pu.kind = "cpu";
        pu.executor = cpus_.back().get();
        auto server = net::AgentServer::Start(o, {pu});
        Die(server.status(), "agent");
        net::RemoteDeviceOptions ro;
        ro.name = name;
        ro.address = (*server)->address();
        servers_.push_back(std::move(*server));
        auto device = net::GrpcRemoteDevice::Connect(ro);
        Die(device.status(), "connect");
        shadows_.push_back(std::make_unique<backend::CpuExecutor>(backend::CpuPuSpec{name + "/cpu0", 1, {}}));
        remote_execs_.push_back(
            std::make_unique<net::RemoteExecutor>(*device, 0, name + "/cpu0", "cpu", shadows_.back().get()));
        dev.pus.push_back(runtime::DeployPu{PuId(static_cast<uint32_t>(d)), name + "/cpu0",
                                            remote_execs_.back().get(), ""});
        remotes_.push_back(*device);
      } else {
        dev.pus.push_back(
            runtime::DeployPu{PuId(static_cast<uint32_t>(d)), name + "/cpu0", cpus_.back().get(), "cpu:1"});
        remotes_.push_back(nullptr);
      }
      devices_.push_back(std::move(dev));
    }
  }

  // Model i goes whole to device i % devices.
  void Deploy(const std::vector<std::shared_ptr<const graph::Model>>& models) {
    std::vector<runtime::DeployModel> deploy;
    for (size_t i = 0; i < models.size(); ++i) {
      deploy.push_back(runtime::DeployModel{ModelId(static_cast<uint32_t>(i)), absl::StrCat("m", i), models[i],
                                            runtime::Cut::kWhole, 1,
                                            DeviceId(static_cast<uint32_t>(i % devices_.size())), std::nullopt,
                                            {}, {}});
    }
    auto built = runtime::Deployment::Build(devices_, deploy);
    Die(built.status(), "deploy");
    deployment_ = std::move(*built);
    auto latency = policy::OnlineLatencyModel::Create({});
    Die(latency.status(), "latency");
    latency_ = std::move(*latency);
    std::vector<runtime::DeviceSetup> setups;
    for (size_t d = 0; d < devices_.size(); ++d) {
      runtime::DeviceSetup s;
      s.id = devices_[d].id;
      s.name = devices_[d].name;
      s.pus = {runtime::PuSetup{devices_[d].pus[0].id, devices_[d].pus[0].name, "cpu", {}}};
      s.policy = *policy::MakeLowLevelPolicy("fifo");
      if (remotes_[d]) {
        remotes_[d]->Bind(s.id, s.pus, &deployment_->runners());
        s.remote = remotes_[d];
      }
      setups.push_back(std::move(s));
    }
    auto rt = runtime::Runtime::Create(std::move(setups), latency_.get(), &deployment_->runners());
    Die(rt.status(), "runtime");
    rt_ = std::move(*rt);
    for (const runtime::DeployedModel& m : deployment_->models()) Die(rt_->AddModel(m.id, m.graph), "add model");
    Die(rt_->Start(), "start");
  }

  runtime::Runtime& rt() { return *rt_; }

 private:
  std::vector<std::unique_ptr<backend::CpuExecutor>> cpus_, shadows_;
  std::vector<std::unique_ptr<net::AgentServer>> servers_;
  std::vector<std::unique_ptr<backend::Executor>> remote_execs_;
  std::vector<std::shared_ptr<net::GrpcRemoteDevice>> remotes_;
  std::vector<runtime::DeployDevice> devices_;
  std::unique_ptr<runtime::Deployment> deployment_;
  std::unique_ptr<policy::OnlineLatencyModel> latency_;
  std::unique_ptr<runtime::Runtime> rt_;
};

dispatch::NamedTensors Clone(const dispatch::NamedTensors& t) {
  dispatch::NamedTensors out;
  for (const auto& [n, v] : t) out.emplace_back(n, v.Clone());
  return out;
}

// Sequential requests; per-request latency in microseconds.
std::vector<double> Sequential(runtime::Runtime& rt, const dispatch::NamedTensors& in, int n) {
  std::vector<double> us;
  for (int i = 0; i < n; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    runtime::RequestResult r = rt.Submit(ModelId(0), Clone(in)).get();
    const auto t1 = std::chrono::steady_clock::now();
    if (!r.status.ok()) Die(r.status, "request");
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  return us;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Closed loop of `in_flight` requests per model for `seconds`; requests/s.
double ClosedLoop(runtime::Runtime& rt, const std::vector<dispatch::NamedTensors>& inputs, int in_flight,
                  double seconds) {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> done{0};
  std::mutex mu;
  std::condition_variable cv;
  int open = 0;
  std::function<void(size_t)> next = [&](size_t m) {
    {
      std::lock_guard lock(mu);
      ++open;
    }
    // The follow-up is submitted before this request stops counting as open,
    // and the notify happens under the lock: once `open` reaches 0 the waiter
    // below returns and destroys everything this callback refers to.
    rt.Submit(ModelId(static_cast<uint32_t>(m)), Clone(inputs[m]), {}, [&, m](runtime::RequestResult r) {
      if (!r.status.ok()) Die(r.status, "request");
      done.fetch_add(1);
      if (!stop.load()) next(m);
      std::lock_guard lock(mu);
      --open;
      cv.notify_all();
    });
  };
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t m = 0; m < inputs.size(); ++m) {
    for (int k = 0; k < in_flight; ++k) next(m);
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  const uint64_t count = done.load();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return open == 0; });
  return static_cast<double>(count) / elapsed;
}

}  // namespace
}  // namespace baton

int main(int argc, char** argv) {
  using namespace baton;
  int requests = 2000;
  double seconds = 3;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--requests") == 0) requests = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atof(argv[i + 1]);
  }

  // 1. Per-hop overhead with small tensors.
  graph::GraphBuilder b;
  b.AddInput("x", dtype::kFloat, {1, 64});
  b.AddNode("Relu", {"x"}, {"y"}, {}, "relu");
  b.AddOutput("y", dtype::kFloat, {1, 64});
  auto bytes = b.Serialize();
  Die(bytes.status(), "tiny model");
  auto tiny = graph::Model::LoadBytes(*bytes, "tiny");
  Die(tiny.status(), "tiny model");
  auto tiny_in = verify::RandomInputs(**tiny, 1);
  Die(tiny_in.status(), "inputs");
  Setup local(1, false), remote(1, true);
  local.Deploy({*tiny});
  remote.Deploy({*tiny});
  std::vector<double> local_us, remote_us;
  const int blocks = 10;
  for (int k = 0; k < blocks; ++k) {  // interleaved
    auto l = Sequential(local.rt(), *tiny_in, requests / blocks);
    auto r = Sequential(remote.rt(), *tiny_in, requests / blocks);
    if (k == 0) continue;  // warm-up block
    local_us.insert(local_us.end(), l.begin(), l.end());
    remote_us.insert(remote_us.end(), r.begin(), r.end());
  }
  const double lm = Median(local_us), rm = Median(remote_us);
  std::printf("per-hop overhead (Relu on 64 floats, one request at a time, %zu requests each):\n", local_us.size());
  std::printf("  local device  median %.1f us\n  remote agent  median %.1f us\n  overhead      %.1f us per hop\n",
              lm, rm, rm - lm);
  local.rt().Stop();
  remote.rt().Stop();

  // 2. Two models on two agents vs two local devices (same PUs, one process).
  std::vector<std::shared_ptr<const graph::Model>> models;
  std::vector<dispatch::NamedTensors> inputs;
  for (const char* name : {"squeezenet", "mobilenetv2"}) {
    auto z = zoo::Generate(name, /*small=*/false);
    Die(z.status(), name);
    auto m = graph::Model::LoadBytes(*z, name);
    Die(m.status(), name);
    auto in = verify::RandomInputs(**m, 2);
    Die(in.status(), name);
    models.push_back(*m);
    inputs.push_back(std::move(*in));
  }
  Setup local2(2, false), remote2(2, true);
  local2.Deploy(models);
  remote2.Deploy(models);
  std::vector<double> ratio;
  std::printf("two full-size zoo models (squeezenet, mobilenetv2), two 1-thread CPU PUs, closed loop x2 per model, %.1f s slices:\n", seconds);
  for (int k = 0; k < 3; ++k) {
    const double l = ClosedLoop(local2.rt(), inputs, 2, seconds);
    const double r = ClosedLoop(remote2.rt(), inputs, 2, seconds);
    std::printf("  slice %d: local devices %.1f req/s, agents %.1f req/s, agents/local %.3f\n", k + 1, l, r, r / l);
    ratio.push_back(r / l);
  }
  std::printf("  median agents/local throughput: %.3f\n", Median(ratio));
  local2.rt().Stop();
  remote2.rt().Stop();
  return 0;
}
