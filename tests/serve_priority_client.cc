// A client process of `baton serve` for CliServeGrpcTest: sends a
// ModelInferRequest (read from a file) from three threads, five times each,
// with one priority, and says how the calls were answered. Started by fork
// and exec, so that each client is a process of its own with a gRPC library
// of its own (a forked child of a process that had used gRPC may not use it).
//
//   serve_priority_client PORT PRIORITY REQUEST_FILE
//
// Exit status: 0 when every answer was OK (with one output) or
// RESOURCE_EXHAUSTED and at least one was OK; 1 otherwise; 2 on bad arguments.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "baton/net/grpc_library.h"
#include "inference/grpc_service.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: serve_priority_client PORT PRIORITY REQUEST_FILE\n");
    return 2;
  }
  const std::string port = argv[1];
  const int64_t priority = std::strtoll(argv[2], nullptr, 10);
  std::ifstream in(argv[3], std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  inference::ModelInferRequest request;
  if (!in || !request.ParseFromString(bytes)) {
    std::fprintf(stderr, "serve_priority_client: cannot read a ModelInferRequest from '%s'\n", argv[3]);
    return 2;
  }
  (*request.mutable_parameters())["priority"].set_int64_param(priority);
  (*request.mutable_parameters())["timeout"].set_int64_param(30'000'000);
  std::atomic<int> ok{0}, full{0}, other{0};
  {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    auto stub = inference::GRPCInferenceService::NewStub(
        grpc::CreateCustomChannel("127.0.0.1:" + port, grpc::InsecureChannelCredentials(), args));
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 5; ++i) {
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
          inference::ModelInferResponse response;
          const grpc::Status st = stub->ModelInfer(&ctx, request, &response);
          if (st.ok() && response.raw_output_contents_size() == 1) {
            ++ok;
          } else if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
            ++full;
          } else {
            ++other;
            std::fprintf(stderr, "serve_priority_client: %d %s\n", static_cast<int>(st.error_code()),
                         st.error_message().c_str());
          }
        }
      });
    }
    for (std::thread& t : threads) t.join();
  }
  std::printf("priority %lld: %d OK, %d RESOURCE_EXHAUSTED, %d other\n", static_cast<long long>(priority), ok.load(),
              full.load(), other.load());
  baton::net::AwaitGrpcShutdown(absl::Seconds(5));  // gRPC's own clean-up, before exit
  return ok > 0 && other == 0 && ok + full == 15 ? 0 : 1;
}
