#include "remote.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace baton::cli {

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
    for (const net::pb::PuInfo& info : device->hello().pus()) {
      config::PuConfig pu;
      pu.name = absl::StrCat(d.name, "/", info.name());
      pu.kind = info.kind();
      pu.threads = std::max(1, info.threads());
      if (info.kind() == "emu") {
        pu.speed = info.speed();
        pu.op_speed = {info.op_speed().begin(), info.op_speed().end()};
        pu.unsupported_ops = {info.unsupported_ops().begin(), info.unsupported_ops().end()};
        pu.compute = info.compute();
      }
      names.push_back(pu.name);
      d.pus.push_back(std::move(pu));
    }
    say(absl::StrCat("device '", d.name, "': agent '", device->hello().name(), "' at ", d.address, " (",
                     absl::StrJoin(names, ", "), ")"));
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

}  // namespace baton::cli
