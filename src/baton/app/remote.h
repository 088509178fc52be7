// Remote devices (`baton agent`s) in a `baton run` config: connect to each,
// learn its PUs, and stand executors in for them so that the same deployment
// code cuts and loads models for local and remote PUs alike.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "baton/backend/executor.h"
#include "baton/config/run_config.h"
#include "baton/core/status.h"
#include "baton/net/remote_device.h"
#include "baton/plan/device_placement.h"
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
// `stop` (may be null): once set, CANCELLED before the next device (each
// connection waits up to its connect_timeout, 5 s).
absl::StatusOr<Remotes> ConnectRemotes(const config::RunConfig& config, const Say& say,
                                       const std::atomic<bool>* stop = nullptr);

// After MakePus(remotes.resolved): the remote devices' PUs run through their
// agents (RemoteExecutor); the local executors made for them only answer
// capability queries.
void AttachRemoteExecutors(PuSet& pus, Remotes& remotes);

// transfer_aware device placement (plan/device_placement.h) for `config`:
// each model's one-thread time is measured here (a 1-thread ONNX Runtime
// session, spinning off, the median of 3 runs of its first sample after a
// warm-up), each device's capacity is its PUs' threads (cpu) or speed (emu),
// what a device can run is asked of its PUs' executors, and the links are
// `links` (per device; nullopt = local).
absl::StatusOr<plan::DevicePlacement> PlaceModelsOnDevices(const config::RunConfig& config,
                                                           const std::vector<LoadedModel>& models, const PuSet& pus,
                                                           const std::vector<std::optional<Remotes::Link>>& links);

}  // namespace baton::app
