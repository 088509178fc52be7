// A PU that claims no node and prepares nothing: what the agent tests use
// where a PU must exist but no partition may be placed on it. And one that
// claims every node but fails to prepare any (a session that cannot be made).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "baton/backend/executor.h"

namespace baton::testing {

class NothingExecutor : public backend::Executor {
 public:
  explicit NothingExecutor(std::string name = "nothing0") : name_(std::move(name)) {}
  const std::string& pu_name() const override { return name_; }
  std::string kind() const override { return "emu"; }
  std::vector<bool> QueryCapability(const graph::Model& model) const override {
    return std::vector<bool>(model.nodes().size(), false);
  }
  absl::StatusOr<std::unique_ptr<backend::PreparedPartition>> Prepare(const graph::Model&,
                                                                      const graph::Submodel&) const override {
    return absl::FailedPreconditionError(absl::StrCat("PU '", name_, "' prepares nothing"));
  }

 private:
  std::string name_;
};

class FailingExecutor : public backend::Executor {
 public:
  FailingExecutor(std::string name, absl::Status error) : name_(std::move(name)), error_(std::move(error)) {}
  const std::string& pu_name() const override { return name_; }
  std::string kind() const override { return "cpu"; }
  std::vector<bool> QueryCapability(const graph::Model& model) const override {
    return std::vector<bool>(model.nodes().size(), true);
  }
  absl::StatusOr<std::unique_ptr<backend::PreparedPartition>> Prepare(const graph::Model&,
                                                                      const graph::Submodel&) const override {
    return error_;
  }

 private:
  std::string name_;
  absl::Status error_;
};

}  // namespace baton::testing
