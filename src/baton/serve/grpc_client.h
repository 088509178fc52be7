// A KServe v2 gRPC client for a running `baton serve` (or any server of the
// protocol): what `baton run --server` sends its workload through.
//
//   auto client = serve::GrpcClient::Connect("127.0.0.1:8001", {});
//   (*client)->InferAsync("cam", std::move(inputs), options, [](Result<Tensors> r) { ... });
//
// Connect checks that the server is live and reads every model's metadata,
// so a wrong address or a server without a model is an error up front.
// Inputs go as raw_input_contents (or, with GrpcClientOptions::shared_memory,
// through regions of POSIX shared memory); a large input that owns its bytes
// goes into the message without a copy (gRPC sends from the tensor itself,
// which the client keeps until gRPC is done with it), and a borrowed or
// adopted one is copied once. Outputs come back as tensors that own their
// bytes. Each call carries the request's deadline (InferOptions) as
// Triton's `timeout` parameter and as the gRPC deadline (plus `call_slack`),
// so every call ends, and its priority as Triton's `priority` parameter. A
// call given a CancelToken (InferOptions::cancel) is cancelled with it: it
// is answered CANCELLED and the server cancels its request (such a call goes
// as a ModelInfer call even with `stream`: a stream message cannot be
// cancelled alone); one whose token is cancelled already is answered at
// once, on the calling thread, and not sent. InferOptions' slo and run_here_up_to are the server's
// business and are not sent.
//
// Thread-safety: InferAsync may be called from many threads at once (and
// from a `done`); `done` runs on the client's one completion thread (but for
// a call cancelled before it was sent, above). The
// destructor waits for the calls in flight, then unregisters and frees the
// client's shared memory regions (at most 64; their names are unlinked as
// soon as the server has mapped them, so nothing is left in /dev/shm even
// when the client dies). Each region's object carries a shared flock while
// the client lives, so a baton server drops the regions of a client that
// died without unregistering them (serve/shared_memory.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "baton/baton.h"
#include "baton/core/status.h"

namespace baton::serve {

struct GrpcClientOptions {
  std::string token;    // "" = none; sent as `authorization: Bearer <token>`
  std::string tls_ca;   // PEM CA file for a TLS server ("" = plaintext)
  std::chrono::seconds connect_timeout{10};
  // A call without a request deadline gets this one; a call with one gets
  // the request's deadline plus this slack (the server answers DEADLINE_EXCEEDED itself).
  std::chrono::seconds call_slack{60};
  size_t max_message_bytes = size_t{256} << 20;
  // Send fixed-size inputs through the system shared memory extension
  // instead of in the message (`baton run --server ... --shared-memory
  // system`): each call copies its inputs into a region of this client's own,
  // registered with the server once. The server must run on this machine
  // and be started with --allow-client-shm; Connect checks both.
  bool shared_memory = false;
  // Send every call as a message on one ModelStreamInfer stream instead of
  // as a ModelInfer call of its own (`baton run --server ... --streaming`,
  // as Triton's perf_analyzer --streaming): no per-call HTTP/2 stream,
  // headers or trailers. Answers are matched to calls by request id. A call
  // whose answer has not come within its deadline plus call_slack fails
  // with DEADLINE_EXCEEDED; once the stream has ended (the server stopped
  // or refused it), its calls in flight fail with the stream's status and
  // later calls go as ModelInfer calls.
  bool stream = false;
};

class GrpcClient {
 public:
  // Unavailable when the server cannot be reached in connect_timeout;
  // Unauthenticated for a token it refuses; InvalidArgument for bad options.
  static absl::StatusOr<std::unique_ptr<GrpcClient>> Connect(const std::string& address, GrpcClientOptions options);
  ~GrpcClient();
  GrpcClient(const GrpcClient&) = delete;
  GrpcClient& operator=(const GrpcClient&) = delete;

  // The server's models (ModelMetadata), in the order Connect was given them.
  // NotFound (naming the server's models) when the server lacks one.
  absl::Status CheckModels(const std::vector<std::string>& names);

  void InferAsync(const std::string& model, Tensors inputs, const InferOptions& options,
                  std::function<void(Result<Tensors>)> done);

  // Cancels every call in flight: each is answered CANCELLED soon (from the
  // client's thread), and the server cancels its request. With `stream`, the
  // stream is cancelled with its calls; later calls go as ModelInfer calls
  // until it has ended, then on a new stream. For giving up on what is left,
  // e.g. at the end of a measured run.
  void CancelAll();

  // How the calls so far went: on a stream, or as ModelInfer calls (every
  // call without `stream`; with it, calls given a CancelToken, and those made
  // while no stream was open), and how many streams were opened.
  struct Counts {
    uint64_t stream_calls = 0;
    uint64_t unary_calls = 0;
    uint64_t streams_opened = 0;
  };
  Counts counts() const;

  struct Impl;

 private:
  explicit GrpcClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace baton::serve
