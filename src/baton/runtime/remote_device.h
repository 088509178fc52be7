// RemoteDevice: a low-level dispatcher that lives outside this process (a
// `baton agent` reached over the network) and can therefore be lost. The
// runtime treats it as one more device; net/ implements it over gRPC, tests
// implement it with fakes. It links nothing: no gRPC here.
//
// Contract (on top of LowLevelPort's, see dispatch/port.h):
//   * Every submitted assignment is either answered exactly once through
//     `completion`, or handed back exactly once through `returned` (the device
//     was lost before it answered; the HL sends it elsewhere). Never both:
//     an answer that arrives after its assignment was returned is dropped
//     (assignments are de-duplicated by id).
//   * Submit while the device is unreachable returns the assignment (through
//     `returned`, never from inside Submit).
//   * `reachable(false, why)` is reported when the device is found lost (a
//     broken stream, a missed heartbeat); `reachable(true, "")` when it is back
//     and ready to take work again.
//   * Completion times are on the runtime's clock (the implementation
//     translates them); Completion::pu is one of the PuIds given at creation.
//   * Events are delivered from the implementation's own threads between
//     Start and Stop, never after Stop returns.
//
// Thread-safety: Submit, pu_stats and ResetStats from any thread.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "baton/core/time.h"
#include "baton/dispatch/messages.h"
#include "baton/dispatch/port.h"
#include "baton/runtime/device_shell.h"

namespace baton::runtime {

struct RemoteDeviceEvents {
  std::function<void(dispatch::Completion)> completion;
  std::function<void(std::vector<dispatch::Assignment>)> returned;
  // Called with the device's lock held, so that changes arrive in order:
  // post and return, never call back into the device.
  std::function<void(bool reachable, std::string why)> reachable;
  std::function<Time()> now;  // the runtime's clock
};

class RemoteDevice : public dispatch::LowLevelPort {
 public:
  virtual void Start(RemoteDeviceEvents events) = 0;
  virtual void Stop() = 0;
  // Per remote PU, as measured by the agent-side runs reported in completions.
  virtual std::vector<PuStats> pu_stats() const = 0;
  virtual void ResetStats() = 0;
  virtual bool reachable() const = 0;
};

}  // namespace baton::runtime
