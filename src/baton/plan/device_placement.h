// transfer_aware device placement: which device each model goes to, so that
// no device's compute or link is the bottleneck (used when a config has
// several devices and no profile covers them, e.g. remote `baton agent`s).
//
// Per model m and device d, one request costs
//   compute(m, d)  = m's measured time on one CPU thread / d's capacity
//                    (capacity in 1-thread CPU equivalents: a cpu PU counts
//                    its threads, an emu PU its speed)
//   transfer(m, d) = 2 x latency + (input + output bytes) / bandwidth   (d remote)
// Models, slowest first, go where max(compute load, link load) after adding
// them is least; a device that cannot run every node of the model is never
// chosen (a model no device can run goes round-robin, so that the deployment
// names the unsupported node).
//
// Example: a 12 KB input over an 8 Mbit/s link costs 24 ms per request, so a
// 1 ms model stays on the local device even if that device already has one.
//
// Thread-safety: a pure function.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "baton/core/ids.h"

namespace baton::plan {

struct PlacementLink {
  double latency_ms = 0;  // one way
  double mbps = 0;
};

struct PlacementDevice {
  std::string name;
  double capacity = 0;  // 1-thread CPU equivalents; 0 = runs nothing
  std::optional<PlacementLink> link;  // nullopt: local (no transfer)
};

struct PlacementModel {
  std::string name;
  double one_thread_ms = 0;  // one request on one CPU thread (measured)
  double io_bytes = 0;       // inputs + outputs of one request
  std::vector<bool> can_run_on;  // per device: every node is supported there
};

struct DevicePlacement {
  std::vector<DeviceId> device_of;   // per model
  std::vector<double> compute_ms;    // per model, on its device
  std::vector<double> transfer_ms;   // per model, to its device
  std::vector<std::string> explain;  // per model: "cls -> edge1 (compute 3.10 ms, transfer 0.40 ms)"
};

DevicePlacement PlaceModelsOnDevices(std::span<const PlacementModel> models, std::span<const PlacementDevice> devices);

}  // namespace baton::plan
