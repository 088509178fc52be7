#include "baton/app/remote.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "baton/backend/ort/ort_runner.h"

namespace baton::app {

namespace {

std::string Resolve(const std::string& base_dir, const std::string& path) {
  if (path.empty() || base_dir.empty() || std::filesystem::path(path).is_absolute()) return path;
  return (std::filesystem::path(base_dir) / path).string();
}

}  // namespace

bool HasRemoteDevices(const config::RunConfig& config) {
  for (const config::DeviceConfig& d : config.devices) {
    if (d.remote()) return true;
  }
  return false;
}

absl::StatusOr<Remotes> ConnectRemotes(const config::RunConfig& config, const Say& say,
                                       const std::atomic<bool>* stop) {
  Remotes out;
  out.resolved = config;
  out.by_device.resize(config.devices.size());
  out.links.resize(config.devices.size());
  for (size_t i = 0; i < config.devices.size(); ++i) {
    config::DeviceConfig& d = out.resolved.devices[i];
    if (!d.remote()) continue;
    if (stop != nullptr && stop->load()) {
      return absl::CancelledError(absl::StrCat("start-up stopped before connecting to device '", d.name, "'"));
    }
    net::RemoteDeviceOptions o;
    o.name = d.name;
    o.address = d.address;
    o.security.token_file = Resolve(config.base_dir, d.token_file);
    o.security.ca_cert_file = Resolve(config.base_dir, d.ca_cert);
    o.security.client_cert_file = Resolve(config.base_dir, d.client_cert);
    o.security.client_key_file = Resolve(config.base_dir, d.client_key);
    o.security.server_name = d.server_name;
    BATON_ASSIGN_OR_RETURN(std::shared_ptr<net::GrpcRemoteDevice> device, net::GrpcRemoteDevice::Connect(o));
    std::vector<std::string> names;
    for (const net::AgentPuInfo& info : device->hello().pus) {
      config::PuConfig pu;
      pu.name = absl::StrCat(d.name, "/", info.name);
      pu.kind = info.kind;
      pu.threads = std::max(1, info.threads);
      if (info.kind == "emu") {
        pu.speed = info.speed;
        pu.op_speed = {info.op_speed.begin(), info.op_speed.end()};
        pu.unsupported_ops = info.unsupported_ops;
        pu.compute = info.compute;
      }
      names.push_back(pu.name);
      d.pus.push_back(std::move(pu));
    }
    Remotes::Link link;
    if (d.link_latency_ms && d.link_mbps) {
      link.latency_ms = *d.link_latency_ms;
      link.mbps = *d.link_mbps;
    } else {
      BATON_ASSIGN_OR_RETURN(net::GrpcRemoteDevice::Link measured, device->MeasureLink());
      link.latency_ms = d.link_latency_ms.value_or(measured.rtt_ms / 2);
      link.mbps = d.link_mbps.value_or(measured.mbps);
      link.measured = true;
    }
    out.links[i] = link;
    say(absl::StrFormat("device '%s': agent '%s' at %s (%s); link %.2f ms one way, %.1f Mbit/s (%s)", d.name,
                        device->hello().name, d.address, absl::StrJoin(names, ", "), link.latency_ms, link.mbps,
                        link.measured ? "measured" : "from the config"));
    out.by_device[i] = std::move(device);
  }
  BATON_RETURN_IF_ERROR(config::Validate(out.resolved));
  return out;
}

void AttachRemoteExecutors(PuSet& pus, Remotes& remotes) {
  pus.cpu_threads = 0;
  pus.cpu_cores.clear();
  for (runtime::DeployDevice& dev : pus.devices) {
    const auto& remote = remotes.by_device[dev.id.value];
    if (!remote) {
      for (const config::PuConfig& pu : remotes.resolved.devices[dev.id.value].pus) {
        if (pu.kind == "cpu") {
          pus.cpu_threads += pu.threads;
          pus.cpu_cores.insert(pus.cpu_cores.end(), pu.cores.begin(), pu.cores.end());
        }
      }
      continue;
    }
    for (size_t u = 0; u < dev.pus.size(); ++u) {
      runtime::DeployPu& pu = dev.pus[u];
      remotes.executors.push_back(std::make_unique<net::RemoteExecutor>(
          remote, static_cast<int>(u), pu.name, pu.executor->kind(), pu.executor));
      pu.executor = remotes.executors.back().get();
      pu.share_key.clear();  // the agent shares sessions itself; loads are cached per agent
      pus.profiler_pus[pu.id.value].executor = pu.executor;
    }
  }
}

namespace {

// One request of `m`'s first sample on one CPU thread: the median of 3 runs after a warm-up.
absl::StatusOr<double> OneThreadMs(const LoadedModel& m) {
  ort::SessionOptions options;
  options.intra_op_threads = 1;
  options.allow_spinning = false;
  BATON_ASSIGN_OR_RETURN(std::unique_ptr<ort::OrtRunner> runner,
                         ort::OrtRunner::Create(m.model->SerializeToString(), options, m.config->name));
  if (m.samples.empty()) return absl::InternalError(absl::StrCat("model '", m.config->name, "' has no sample inputs"));
  std::vector<std::pair<std::string, const Tensor*>> feeds;
  for (const auto& [n, t] : m.samples[0]) feeds.emplace_back(n, &t);
  std::vector<double> ms;
  for (int i = 0; i < 4; ++i) {
    const auto start = std::chrono::steady_clock::now();
    BATON_RETURN_IF_ERROR(runner->Run(feeds).status());
    if (i > 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[1];
}

}  // namespace

absl::StatusOr<plan::DevicePlacement> PlaceModelsOnDevices(const config::RunConfig& config,
                                                           const std::vector<LoadedModel>& models, const PuSet& pus,
                                                           const std::vector<std::optional<Remotes::Link>>& links) {
  std::vector<plan::PlacementDevice> devices(pus.devices.size());
  for (size_t d = 0; d < devices.size(); ++d) {
    devices[d].name = config.devices[d].name;
    for (const config::PuConfig& pu : config.devices[d].pus) devices[d].capacity += pu.kind == "cpu" ? pu.threads : pu.speed;
    if (d < links.size() && links[d]) devices[d].link = plan::PlacementLink{links[d]->latency_ms, links[d]->mbps};
  }
  std::vector<plan::PlacementModel> placed(models.size());
  for (size_t m = 0; m < models.size(); ++m) {
    const graph::Model& g = *models[m].model;
    plan::PlacementModel& pm = placed[m];
    pm.name = models[m].config->name;
    BATON_ASSIGN_OR_RETURN(pm.one_thread_ms, OneThreadMs(models[m]));
    if (!models[m].samples.empty()) {
      for (const auto& [name, t] : models[m].samples[0]) pm.io_bytes += static_cast<double>(t.byte_size());
    }
    for (const std::string& out : g.outputs()) {
      if (const graph::Value* v = g.FindValue(out)) pm.io_bytes += static_cast<double>(v->type.Bytes().value_or(0));
    }
    for (size_t d = 0; d < devices.size(); ++d) {
      std::vector<bool> covered(g.nodes().size(), false);
      for (const runtime::DeployPu& pu : pus.devices[d].pus) {
        std::vector<bool> can = pu.executor->QueryCapability(g);
        for (size_t n = 0; n < can.size() && n < covered.size(); ++n) covered[n] = covered[n] || can[n];
      }
      pm.can_run_on.push_back(std::all_of(covered.begin(), covered.end(), [](bool b) { return b; }));
    }
  }
  return plan::PlaceModelsOnDevices(placed, devices);
}

}  // namespace baton::app
