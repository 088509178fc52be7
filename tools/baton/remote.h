// Remote devices (`baton agent`s) in a `baton run` config: connect to each,
// learn its PUs, and stand executors in for them so that the same deployment
// code cuts and loads models for local and remote PUs alike.
#pragma once

#include <memory>
#include <vector>

#include "baton/backend/executor.h"
#include "baton/config/run_config.h"
#include "baton/core/status.h"
#include "baton/net/remote_device.h"
#include "setup.h"

namespace baton::cli {

struct Remotes {
  // The config with each remote device's PUs filled in from its agent (named
  // "<device>/<agent PU name>").
  config::RunConfig resolved;
  // Per device (config order): the connection, or null for a local device.
  std::vector<std::shared_ptr<net::GrpcRemoteDevice>> by_device;
  std::vector<std::unique_ptr<backend::Executor>> executors;  // RemoteExecutors
};

bool HasRemoteDevices(const config::RunConfig& config);

// Connects to every remote device of `config` (files relative to its base_dir).
absl::StatusOr<Remotes> ConnectRemotes(const config::RunConfig& config, const Say& say);

// After MakePus(remotes.resolved): the remote devices' PUs run through their
// agents (RemoteExecutor); the local executors made for them only answer
// capability queries.
void AttachRemoteExecutors(PuSet& pus, Remotes& remotes);

}  // namespace baton::cli
