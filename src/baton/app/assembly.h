// The one path from a configuration to a running baton: models loaded, PUs
// built (local and remote), a profile (cached per configuration), a plan by
// the configured high-level policy, the deployment (prepared sessions) and the
// threaded runtime started on it. `baton run`, baton::Engine and the Python
// module all assemble baton here.
//
// Thread-safety: Assemble is a plain function; the Assembly it returns owns
// the runtime, whose own contract (runtime/runtime.h) applies.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "baton/app/planning.h"
#include "baton/app/remote.h"
#include "baton/app/setup.h"
#include "baton/config/run_config.h"
#include "baton/core/status.h"
#include "baton/plan/plan_file.h"
#include "baton/policy/latency_model.h"
#include "baton/profile/profile.h"
#include "baton/runtime/batcher.h"
#include "baton/runtime/deployment.h"
#include "baton/runtime/runtime.h"
#include "baton/trace/trace_observer.h"

namespace baton::app {

// A runtime over a deployment: the latency model it learns into, and the
// runtime (destroyed first: it borrows the latency model).
struct RuntimeBundle {
  std::unique_ptr<policy::OnlineLatencyModel> latency;
  std::unique_ptr<runtime::Runtime> rt;
};

// A started runtime over `deployment` for the configured devices, PuIds
// numbered over all devices in config order, a CPU PU's worker pinned to its
// first core. `low_level` names the LL policy; `fixed` keeps each
// partition's fixed_pu (else the LL policy picks the PU). `observer` (may be
// null, borrowed) sees every core's events; `remotes` (may be null) binds the
// remote devices.
absl::StatusOr<RuntimeBundle> MakeRuntime(const config::RunConfig& config, const runtime::Deployment& deployment,
                                          const std::string& low_level, bool fixed,
                                          dispatch::DispatchObserver* observer = nullptr,
                                          const Remotes* remotes = nullptr);

struct AssembleOptions {
  std::string cache_dir;     // zoo models are generated here; "" = DefaultCacheDir()
  std::string plan_path;     // carry out this plan (`baton plan`); "" = plan now
  std::string profile_path;  // use this profile; "" = the plan's, else an automatic one cached per config
  bool no_profile = false;   // no profile, no bounds: plan from estimated costs (whole, capability, balanced only)
  int samples = 1;           // random input sets per model (LoadedModel::samples)
  bool with_expected = false;  // whole-model ORT outputs for the samples
  // false: everything up to the deployment's plan, but no sessions and no
  // runtime (`baton run --no-baton`).
  bool deploy = true;
  // Attached to the runtime's cores before it starts (e.g. a
  // trace::TraceObserver); borrowed, must outlive the Assembly.
  dispatch::DispatchObserver* observer = nullptr;
  Say say;                   // progress lines; null = silent
  profiler::Progress profile_progress;  // profiling progress (when no cached profile fits); null = none
  // Set (e.g. by a signal): Assemble returns Cancelled at its next step
  // (before loading, profiling, planning or creating sessions). Profiling
  // stops before its next measurement and keeps what it measured, so the next
  // start resumes it. Borrowed; null = never.
  const std::atomic<bool>* stop = nullptr;
};

// Members are declared so that the runtime goes first, then what it borrows.
struct Assembly {
  std::vector<LoadedModel> models;  // config order; LoadedModel::config points into the config passed
  PuSet pus;
  std::optional<Planning> planning;  // absent with no_profile
  std::string profile_source;        // the profile's file ("" without)
  std::optional<plan::PlanFile> plan;  // the plan carried out (given, or made now)
  bool estimated = false;              // the plan was made from estimated costs (no profile): no prediction
  std::vector<DeviceId> device_of;     // per model: the device it runs on
  std::vector<runtime::DeployModel> deploy;
  std::optional<profile::Placement> planned_placement;  // the plan over the problem's atoms
  double profile_predicted_rps = 0;   // the plan's prediction from the profile (0 without a plan)
  std::vector<int> configured_priorities;  // per model: the config's
  std::vector<int> priorities;             // per model: the plan's where it has one, else the config's
  // Per model: its dynamic batching (batch 1 = off): the config's max_batch
  // with `batching: on`, else profile::ChooseBatch on the profile (off
  // without one), with the reason.
  std::vector<profile::BatchChoice> batching;
  std::unique_ptr<runtime::Deployment> deployment;  // null with deploy = false
  RuntimeBundle runtime;                            // started; empty with deploy = false
};

// Assembles `config` (already resolved: remote PUs filled in, see
// ConnectRemotes; `remotes` is then non-null and outlives the result).
absl::StatusOr<Assembly> Assemble(const config::RunConfig& config, Remotes* remotes, const AssembleOptions& options);

// The lane names of a trace of `config`'s runtime (trace::TraceObserver):
// devices, PUs as "name (kind)" numbered over all devices in config order
// (as MakeRuntime numbers them), and models.
trace::TraceNames TraceNamesOf(const config::RunConfig& config);

// Dynamic batching in front of `rt` for the models whose `batching` choice
// (Assembly::batching, per model) is above 1 (Triton-style,
// runtime/batcher.h); null when no model batches. Each model keeps at most
// one batch in flight per PU `deployment` prepared it on (no limit without
// a deployment), and at most `max_waiting` requests waiting to be batched
// (the config's max_in_flight; more are answered RESOURCE_EXHAUSTED at once).
absl::StatusOr<std::unique_ptr<runtime::Batcher>> MakeBatcher(runtime::Runtime* rt,
                                                              const std::vector<LoadedModel>& models,
                                                              const std::vector<profile::BatchChoice>& batching,
                                                              const runtime::Deployment* deployment,
                                                              int max_waiting);

// A config with remote devices, connected: Remotes::resolved is what to
// assemble. Remote devices have no profile yet, so a high-level policy that
// needs one falls back to `balanced` (said through `say`), and a plan or
// profile file is refused. Null when the config has no remote device.
absl::StatusOr<std::unique_ptr<Remotes>> ConnectRemoteDevices(const config::RunConfig& config,
                                                              const AssembleOptions& options);

}  // namespace baton::app
