// The folder rules of DESIGN.md that the compiler cannot see: which headers
// may be included where. Checks direct #include lines of the sources.
//   * gRPC and the generated agent protocol stay inside src/baton/net/: the
//     public headers of net/ (agent_server.h, remote_device.h, agent_types.h)
//     include neither them nor net/'s internal headers, and nothing outside
//     net/ (and the tests) includes them. The one other gRPC service, the
//     KServe front-end of `baton serve`, includes gRPC and the generated
//     KServe protocol in src/baton/serve/*.cc only, never net/'s internals.
//   * ONNX Runtime's headers are included only under src/baton/backend/ort/.
//   * The HTTP library (cpp-httplib) only under src/baton/serve/ (in .cc files).
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_paths.h"

namespace baton {
namespace {

namespace fs = std::filesystem;

const fs::path kRoot = BATON_SOURCE_DIR;

std::vector<std::string> IncludesOf(const fs::path& file) {
  std::ifstream in(file);
  std::vector<std::string> out;
  static const std::regex kInclude(R"(^\s*#\s*include\s*[<"]([^>"]+)[>"])");
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, kInclude)) out.push_back(m[1]);
  }
  return out;
}

std::vector<fs::path> SourcesUnder(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    const std::string ext = entry.path().extension().string();
    if (entry.is_regular_file() && (ext == ".h" || ext == ".cc")) out.push_back(entry.path());
  }
  return out;
}

bool IsNetPrivate(const std::string& include) {
  return include.starts_with("grpc") || include.starts_with("inference/") || include.find("agent.pb.h") != std::string::npos ||
         include.find("agent.grpc.pb.h") != std::string::npos || include == "baton/net/codec.h" ||
         include == "baton/net/security.h" || include == "baton/net/agent_server_impl.h";
}

bool IsKServeGrpc(const std::string& include) {
  return include.starts_with("grpcpp/") || include == "inference/grpc_service.grpc.pb.h" ||
         include == "inference/grpc_service.pb.h" || include == "grpc/health/v1/health.grpc.pb.h" ||
         include == "grpc/health/v1/health.pb.h";
}

TEST(LayeringTest, GrpcStaysInsideNet) {
  std::vector<fs::path> files = SourcesUnder(kRoot / "tools");
  for (const fs::path& f : SourcesUnder(kRoot / "src" / "baton")) {
    if (f.parent_path().filename() != "net") files.push_back(f);
  }
  const fs::path serve = kRoot / "src" / "baton" / "serve";
  for (const char* header : {"agent_server.h", "remote_device.h", "agent_types.h"}) {
    files.push_back(kRoot / "src" / "baton" / "net" / header);
  }
  ASSERT_GT(files.size(), 50u);
  for (const fs::path& f : files) {
    const bool serve_source = f.parent_path() == serve && f.extension() == ".cc";
    for (const std::string& include : IncludesOf(f)) {
      if (serve_source && IsKServeGrpc(include)) continue;
      EXPECT_FALSE(IsNetPrivate(include)) << f.lexically_relative(kRoot).string() << " includes " << include
                                          << ", which only src/baton/net/*.cc (and tests) may";
    }
  }
}

TEST(LayeringTest, OnnxRuntimeHeadersOnlyInBackendOrt) {
  std::vector<fs::path> files = SourcesUnder(kRoot / "tools");
  for (const fs::path& f : SourcesUnder(kRoot / "src" / "baton")) {
    if (f.parent_path() != kRoot / "src" / "baton" / "backend" / "ort") files.push_back(f);
  }
  for (const fs::path& f : files) {
    for (const std::string& include : IncludesOf(f)) {
      EXPECT_THAT(include, ::testing::Not(::testing::StartsWith("onnxruntime")))
          << f.lexically_relative(kRoot).string() << " includes ONNX Runtime; only src/baton/backend/ort/ may";
    }
  }
}

TEST(LayeringTest, HttpLibraryOnlyInServe) {
  std::vector<fs::path> files = SourcesUnder(kRoot / "tools");
  for (const fs::path& f : SourcesUnder(kRoot / "src" / "baton")) {
    if (f.parent_path() != kRoot / "src" / "baton" / "serve" || f.extension() == ".h") files.push_back(f);
  }
  for (const fs::path& f : files) {
    for (const std::string& include : IncludesOf(f)) {
      EXPECT_NE(include, "httplib.h") << f.lexically_relative(kRoot).string()
                                      << " includes the HTTP library; only src/baton/serve/*.cc may";
    }
  }
}

}  // namespace
}  // namespace baton
