// RunCancel: lets one thread stop a run that another thread is executing (an
// execution timeout). The executor Arms it with a hook that stops its current
// call (ONNX Runtime: RunOptions::SetTerminate, checked between operators and
// between Loop iterations) and Disarms it when the call returns. Cancel() calls
// the hook if a call is armed, and otherwise stops the next call as soon as it
// arms. Reset() clears it for the next run.
//
// A run inside one long operator (a huge MatMul) only stops when the operator
// returns; the caller must not assume the call ends at once.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <functional>
#include <mutex>
#include <utility>

namespace baton {

class RunCancel {
 public:
  void Cancel() {
    std::lock_guard lock(mu_);
    cancelled_ = true;
    if (stop_) stop_();
  }
  bool cancelled() const {
    std::lock_guard lock(mu_);
    return cancelled_;
  }
  void Reset() {
    std::lock_guard lock(mu_);
    cancelled_ = false;
    stop_ = nullptr;
  }
  // For executors. `stop` must be safe to call until Disarm returns.
  void Arm(std::function<void()> stop) {
    std::lock_guard lock(mu_);
    stop_ = std::move(stop);
    if (cancelled_) stop_();
  }
  void Disarm() {
    std::lock_guard lock(mu_);
    stop_ = nullptr;
  }

 private:
  mutable std::mutex mu_;
  bool cancelled_ = false;       // guarded by mu_
  std::function<void()> stop_;   // guarded by mu_
};

}  // namespace baton
