// What a client hears while an agent sends it a large answer: an in-process
// AgentServer (one 1-thread CPU PU, reached over loopback TCP) runs a
// partition whose output is --mib MiB (Expand of one float), and a raw
// Execute stream times each message that comes back. Per round it prints the
// time from sending the assignment to the first message, the run itself (the
// completion's run_ns), the longest gap between two messages (what the remote
// device's loss detector sees, 2 s by default), and the whole answer; then the
// medians and the process's peak resident memory (agent and client together).
// Usage: agent_answer_bench [--mib M] [--rounds R]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "bench_common.h"
#include "baton/agent/v1/agent.grpc.pb.h"
#include "baton/backend/ort/cpu_executor.h"
#include "baton/graph/builder.h"
#include "baton/net/agent_server.h"
#include "baton/net/codec.h"
#include "baton/net/content_hash.h"

namespace baton {
namespace {

namespace pb = ::baton::agent::v1;
using Clock = std::chrono::steady_clock;

void Die(const absl::Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "agent_answer_bench: %s: %s\n", what, s.ToString().c_str());
  std::exit(1);
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// VmHWM of this process, in MiB.
double PeakRssMib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  }
  return 0;
}

}  // namespace
}  // namespace baton

int main(int argc, char** argv) {
  using namespace baton;
  int64_t mib = 256;
  int rounds = 5;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--mib") == 0) mib = std::atoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--rounds") == 0) rounds = std::atoi(argv[i + 1]);
  }
  if (mib <= 0 || mib > 1024 || rounds <= 0) {
    std::fprintf(stderr, "agent_answer_bench: --mib must be in 1..1024 and --rounds > 0\n");
    return 2;
  }
  const int64_t floats = mib * 1024 * 1024 / 4;

  graph::GraphBuilder b;
  b.AddInput("x", dtype::kFloat, {1});
  b.AddInitializer("shape", dtype::kInt64, {1}, std::vector<int64_t>{floats});
  b.AddNode("Expand", {"x", "shape"}, {"y"}, {}, "expand");
  b.AddOutput("y", dtype::kFloat, {floats});
  absl::StatusOr<std::string> model = b.Serialize();
  Die(model.status(), "model");

  backend::CpuExecutor cpu(backend::CpuPuSpec{"cpu0", 1, {}});
  net::AgentOptions options;
  options.name = "bench";
  net::AgentPu pu;
  pu.name = "cpu0";
  pu.kind = "cpu";
  pu.executor = &cpu;
  absl::StatusOr<std::unique_ptr<net::AgentServer>> server = net::AgentServer::Start(options, {pu});
  Die(server.status(), "agent");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(net::kMaxGrpcMessageBytes);
  args.SetMaxSendMessageSize(net::kMaxGrpcMessageBytes);
  auto stub = pb::Agent::NewStub(
      grpc::CreateCustomChannel((*server)->address(), grpc::InsecureChannelCredentials(), args));

  pb::LoadReply loaded;
  {
    grpc::ClientContext context;
    auto writer = stub->Load(&context, &loaded);
    pb::LoadChunk chunk;
    chunk.mutable_header()->set_content_hash(net::Sha256Hex(*model));
    chunk.mutable_header()->set_total_bytes(static_cast<int64_t>(model->size()));
    chunk.mutable_header()->set_name("expand");
    chunk.set_data(*model);
    writer->Write(chunk);
    writer->WritesDone();
    const grpc::Status s = writer->Finish();
    if (!s.ok()) Die(absl::InternalError(s.error_message()), "load");
  }

  std::printf("answer of %lld MiB, chunk %lld bytes, %d rounds\n", static_cast<long long>(mib),
              static_cast<long long>(options.chunk_bytes), rounds);
  std::vector<double> first_ms, run_ms, gap_ms, whole_ms;
  grpc::ClientContext context;
  auto rw = stub->Execute(&context);
  for (int r = 0; r < rounds; ++r) {
    pb::ExecuteIn in;
    pb::Assignment* a = in.mutable_assignment();
    a->set_id(static_cast<uint64_t>(r) + 1);
    a->set_handle(loaded.handle());
    Tensor x(dtype::kFloat, {1});
    x.data<float>()[0] = 1.5f;
    net::ToProto("x", x, a->add_inputs());
    const Clock::time_point sent = Clock::now();
    if (!rw->Write(in)) Die(absl::UnavailableError("the stream broke"), "send");
    Clock::time_point last = sent;
    Clock::duration gap{0};
    std::optional<Clock::time_point> first;
    net::FrameReader frames(int64_t{4} << 30);
    pb::Completion c;
    pb::ExecuteOut out;
    while (rw->Read(&out)) {
      const Clock::time_point now = Clock::now();
      if (!first) {
        first = now;
      } else {
        gap = std::max(gap, now - last);
      }
      last = now;
      if (out.has_completion()) {
        c = out.completion();
        break;
      }
      if (!out.has_frame()) continue;
      absl::StatusOr<std::optional<std::string>> whole = frames.Add(out.frame());
      Die(whole.status(), "frames");
      if (whole->has_value()) {
        if (!c.ParseFromString(**whole)) Die(absl::InternalError("does not parse"), "completion");
        break;
      }
    }
    if (c.code() != 0 || c.outputs_size() != 1 || c.outputs(0).data().size() != static_cast<size_t>(floats) * 4) {
      Die(absl::InternalError(absl::StrCat("code ", c.code(), ": ", c.message())), "answer");
    }
    first_ms.push_back(Ms(*first - sent));
    run_ms.push_back(static_cast<double>(c.run_ns()) / 1e6);
    gap_ms.push_back(Ms(gap));
    whole_ms.push_back(Ms(last - sent));
    std::printf("round %d: first message %.1f ms (run %.1f ms), longest gap %.1f ms, whole answer %.1f ms\n", r + 1,
                first_ms.back(), run_ms.back(), gap_ms.back(), whole_ms.back());
  }
  rw->WritesDone();
  (void)rw->Finish();
  std::printf("median: first message %.1f ms (run %.1f ms), longest gap %.1f ms, whole answer %.1f ms; peak RSS %.0f MiB\n",
              bench::Median(first_ms), bench::Median(run_ms), bench::Median(gap_ms), bench::Median(whole_ms),
              PeakRssMib());
  (*server)->Shutdown();
  return 0;
}
