// The config `baton serve`'s CLI tests serve: one model (`cam`, the small
// zoo squeezenet at `model_path`) on two CPU PUs, cut in two stages.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

namespace baton::testing {

// Writes `dir`/serve.yaml and returns its path; `extra_run` goes into `run: {...}`.
inline std::string WriteServeConfig(const std::filesystem::path& dir, const std::string& model_path,
                                    const std::string& extra_run = "") {
  const std::string path = (dir / "serve.yaml").string();
  std::ofstream(path) << "devices: [{name: local, pus: [{name: cpu0, kind: cpu}, {name: cpu1, kind: cpu}]}]\n"
                      << "models:\n  - {name: cam, path: " << model_path << ", slo_ms: 1000}\n"
                      << "policy: {high_level: balanced, stages: 2}\n"
                      << (extra_run.empty() ? "" : "run: {" + extra_run + "}\n");
  return path;
}

}  // namespace baton::testing
