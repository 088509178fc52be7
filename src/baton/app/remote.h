// Remote devices (`baton agent`s) in a `baton run` config: connect to each,
// learn its PUs, and stand executors in for them so that the same deployment
// code cuts and loads models for local and remote PUs alike.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "baton/backend/executor.h"
#include "baton/config/run_config.h"
#include "baton/core/status.h"
#include "baton/net/remote_device.h"
#include "baton/app/setup.h"

namespace baton::app {

struct Remotes {
  // The config with each remote device's PUs filled in from its agent (named
  // "<device>/<agent PU name>").
  config::RunConfig resolved;
  // Per device (config order): the connection, or null for a local device.
  std::vector<std::shared_ptr<net::GrpcRemoteDevice>> by_device;
  std::vector<std::unique_ptr<backend::Executor>> executors;  // RemoteExecutors
  // Per device: the link to it (told by the config, else measured), or
  // nullopt for a local device.
  struct Link {
    double latency_ms = 0;  // one way
    double mbps = 0;
    bool measured = false;
  };
  std::vector<std::optional<Link>> links;
};

bool HasRemoteDevices(const config::RunConfig& config);

// Connects to every remote device of `config` (files relative to its base_dir).
absl::StatusOr<Remotes> ConnectRemotes(const config::RunConfig& config, const Say& say);

// After MakePus(remotes.resolved): the remote devices' PUs run through their
// agents (RemoteExecutor); the local executors made for them only answer
// capability queries.
void AttachRemoteExecutors(PuSet& pus, Remotes& remotes);

// transfer_aware device placement: which device each model goes to, so that
// no device's compute or link is the bottleneck. Per model, one request costs
//   compute(m, d) = FLOPs / (d's PU capacity x kAssumedGflopsPerThread)
//   transfer(m, d) = 2 x latency + (input + output bytes) / bandwidth  (remote d)
// (no profile exists for remote PUs, so compute comes from FLOPs). Models,
// largest first, go where max(compute load, link load) after adding them is
// least; a device that cannot run every node of the model is never chosen.
// Example: a 12 KB input over an 8 Mbit/s link costs 24 ms per request, so
// a 1 ms model stays on the fast device even if that device already has one.
inline constexpr double kAssumedGflopsPerThread = 20;
struct DevicePlacement {
  std::vector<DeviceId> device_of;  // per model
  std::vector<std::string> explain;  // per model: "cls -> edge1 (compute 3.1 ms, transfer 0.4 ms)"
};
DevicePlacement PlaceModelsOnDevices(const config::RunConfig& config, const std::vector<LoadedModel>& models,
                                     const PuSet& pus, const std::vector<std::optional<Remotes::Link>>& links);

}  // namespace baton::app
