// Fuzz target: a run configuration's YAML text (config::ParseRunConfig and
// Validate). A config that validates must print (ToYaml) to YAML that parses
// and validates again.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "baton/config/run_config.h"
#include "fuzz_target.h"

namespace baton::fuzz {

std::vector<std::string> Seeds() {
  return {
      config::ToYaml(config::DefaultRunConfig(2)),
      "devices: [{name: local, pus: [{name: cpu0, kind: cpu, threads: 2, cores: [0, 1]}]}]\n"
      "models:\n  - {name: cam, path: m.onnx, slo_ms: 30, deadline_ms: 50, priority: 2,\n"
      "     arrival: {mode: periodic, fps: 30}}\n"
      "  - {name: txt, path: t.onnx, max_batch: 4, max_queue_delay_ms: 2, arrival: {mode: poisson, rate: 50}}\n"
      "policy: {high_level: balanced, low_level: share, stages: 2}\n"
      "run: {duration_s: 2, warmup_s: 0.5, slices: 4, max_queue: 64, max_in_flight: 8, seed: 7}\n",
      "devices:\n"
      "  - {name: box, pus: [{name: npu0, kind: emu, speed: 4.0, op_speed: {Conv: 30}, unsupported_ops: [Gelu],"
      " compute: true}]}\n"
      "  - {name: far, address: '10.0.0.2:7070', pus: [{name: gpu0, kind: cpu}]}\n"
      "models: [{name: m, path: m.onnx, arrival: {mode: closed, concurrency: 2, think_ms: 5}}]\n",
  };
}

}  // namespace baton::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<baton::config::RunConfig> config = baton::config::ParseRunConfig(text, "(fuzz)");
  if (!config.ok() || !baton::config::Validate(*config).ok()) return 0;
  const std::string again = baton::config::ToYaml(*config);
  absl::StatusOr<baton::config::RunConfig> reparsed = baton::config::ParseRunConfig(again, "(fuzz, printed)");
  if (!reparsed.ok() || !baton::config::Validate(*reparsed).ok()) std::abort();  // ToYaml lost or broke something
  return 0;
}
