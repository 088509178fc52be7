#include "baton/app/remote.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

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

absl::StatusOr<Remotes> ConnectRemotes(const config::RunConfig& config, const Say& say) {
  Remotes out;
  out.resolved = config;
  out.by_device.resize(config.devices.size());
  out.links.resize(config.devices.size());
  for (size_t i = 0; i < config.devices.size(); ++i) {
    config::DeviceConfig& d = out.resolved.devices[i];
    if (!d.remote()) continue;
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

DevicePlacement PlaceModelsOnDevices(const config::RunConfig& config, const std::vector<LoadedModel>& models,
                                     const PuSet& pus, const std::vector<std::optional<Remotes::Link>>& links) {
  const size_t devices = pus.devices.size();
  std::vector<double> capacity(devices, 0);  // in 1-thread CPU equivalents
  for (size_t d = 0; d < devices; ++d) {
    for (const config::PuConfig& pu : config.devices[d].pus) capacity[d] += pu.kind == "cpu" ? pu.threads : pu.speed;
  }
  struct Cost {
    double compute_ms = 0;
    double transfer_ms = 0;
    bool can = false;
  };
  std::vector<std::vector<Cost>> cost(models.size(), std::vector<Cost>(devices));
  for (size_t m = 0; m < models.size(); ++m) {
    const graph::Model& g = *models[m].model;
    double bytes = 0;
    if (!models[m].samples.empty()) {
      for (const auto& [name, t] : models[m].samples[0]) bytes += static_cast<double>(t.byte_size());
    }
    for (const std::string& out : g.outputs()) {
      if (const graph::Value* v = g.FindValue(out)) bytes += static_cast<double>(v->type.Bytes().value_or(0));
    }
    for (size_t d = 0; d < devices; ++d) {
      std::vector<bool> covered(g.nodes().size(), false);
      for (const runtime::DeployPu& pu : pus.devices[d].pus) {
        std::vector<bool> can = pu.executor->QueryCapability(g);
        for (size_t n = 0; n < can.size() && n < covered.size(); ++n) covered[n] = covered[n] || can[n];
      }
      Cost& c = cost[m][d];
      c.can = capacity[d] > 0 && std::all_of(covered.begin(), covered.end(), [](bool b) { return b; });
      c.compute_ms = static_cast<double>(g.total_flops()) / (capacity[d] * kAssumedGflopsPerThread * 1e9) * 1e3;
      if (d < links.size() && links[d]) {
        c.transfer_ms = 2 * links[d]->latency_ms + bytes * 8.0 / (std::max(links[d]->mbps, 1e-6) * 1e3);
      }
    }
  }
  std::vector<size_t> order(models.size());
  for (size_t m = 0; m < order.size(); ++m) order[m] = m;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return models[a].model->total_flops() > models[b].model->total_flops();
  });
  std::vector<double> compute_load(devices, 0), link_load(devices, 0);
  DevicePlacement out;
  out.device_of.assign(models.size(), DeviceId(0));
  out.explain.assign(models.size(), "");
  for (size_t m : order) {
    std::optional<size_t> best;
    double best_score = 0;
    for (size_t d = 0; d < devices; ++d) {
      const Cost& c = cost[m][d];
      if (!c.can) continue;
      const double score = std::max(compute_load[d] + c.compute_ms, link_load[d] + c.transfer_ms);
      if (!best || score < best_score - 1e-9) {
        best = d;
        best_score = score;
      }
    }
    const size_t d = best.value_or(m % devices);  // none can: Deployment names the unsupported node
    compute_load[d] += cost[m][d].compute_ms;
    link_load[d] += cost[m][d].transfer_ms;
    out.device_of[m] = DeviceId(static_cast<uint32_t>(d));
    out.explain[m] = absl::StrFormat("%s -> %s (compute ~%.2f ms, transfer %.2f ms)", models[m].config->name,
                                     config.devices[d].name, cost[m][d].compute_ms, cost[m][d].transfer_ms);
  }
  return out;
}

}  // namespace baton::app
