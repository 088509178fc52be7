// Fuzz target: the JSON of a plan file (plan::PlanFile::Parse) and of a
// profile (profile::Profile::Parse), both on every input. What parses must
// print (ToJson) to JSON that parses to an equal value.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "baton/plan/plan_file.h"
#include "baton/profile/profile.h"
#include "fuzz_target.h"

namespace baton::fuzz {

std::vector<std::string> Seeds() {
  plan::PlanFile plan;
  plan.policy = "lp";
  plan.objective = "throughput";
  plan.profile = "p.json";
  plan.pus = {{"cpu0", "cpu:1", "local", 0.9, {"cam.p0", "cam.p1"}}, {"npu0", "emu:4", "local", 0.4, {"cam.p1"}}};
  plan.models = {{"cam", "00ff", {{{"conv1", "relu1"}, {"cpu0"}, 1.5, {1.0}}, {{"fc"}, {"npu0", "cpu0"}, 0.7, {0.8, 0.2}}},
                  120, 3.2, 2.0, 2}};
  plan.predicted_throughput_rps = 120;
  plan.bound_throughput_rps = 150;

  profile::Profile profile;
  profile.pu_kinds = {{"cpu:1", "cpu0"}};
  profile::ProfiledModel m;
  m.name = "cam";
  m.content_hash = "00ff";
  m.atoms_key = "k";
  m.atoms = 2;
  m.unit_of_atom = {0, 1};
  m.cut_bytes = {4096};
  profile::ProfiledRange r;
  r.first = 0;
  r.last = 2;
  r.key = "abcd";
  r.first_node = "conv1";
  r.last_node = "fc";
  m.ranges = {r};
  profile.models = {m};
  profile.partition_overhead_ms = 0.02;
  profile.budget = 8;
  profile.min_atoms = 2;
  return {plan.ToJson(), profile.ToJson()};
}

}  // namespace baton::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  if (absl::StatusOr<baton::plan::PlanFile> plan = baton::plan::PlanFile::Parse(json, "(fuzz)"); plan.ok()) {
    absl::StatusOr<baton::plan::PlanFile> again = baton::plan::PlanFile::Parse(plan->ToJson(), "(fuzz, printed)");
    if (!again.ok()) std::abort();  // ToJson wrote what Parse refuses
  }
  if (absl::StatusOr<baton::profile::Profile> p = baton::profile::Profile::Parse(json, "(fuzz)"); p.ok()) {
    absl::StatusOr<baton::profile::Profile> again = baton::profile::Profile::Parse(p->ToJson(), "(fuzz, printed)");
    if (!again.ok()) std::abort();
  }
  return 0;
}
