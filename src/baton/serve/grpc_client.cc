#include "baton/serve/grpc_client.h"

// GCC 12 at -O3 reports impossible memcpy bounds inside protobuf's inlined
// string accessors (false positives of -Wstringop-overflow / -Wrestrict).
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#pragma GCC diagnostic ignored "-Wrestrict"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "baton/core/file.h"
#include "baton/serve/kserve_json.h"
#include "baton/serve/kserve_raw.h"
#include "inference/grpc_service.grpc.pb.h"

namespace baton::serve {

namespace {

Status FromGrpc(const grpc::Status& s, const std::string& address) {
  return Status(static_cast<StatusCode>(static_cast<int>(s.error_code())),
                absl::StrCat(s.error_message(), s.error_code() == grpc::StatusCode::UNAVAILABLE
                                                    ? absl::StrCat(" (server ", address, ")")
                                                    : std::string()));
}

// One call in flight: what gRPC needs alive until it completes on the queue.
struct Call {
  grpc::ClientContext context;
  inference::ModelInferRequest request;
  inference::ModelInferResponse response;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<inference::ModelInferResponse>> rpc;
  std::function<void(Result<Tensors>)> done;
};

// The answer of a finished call, as tensors, or why there is none.
Result<Tensors> AnswerOf(Call& call, const std::string& address) {
  if (!call.status.ok()) return FromGrpc(call.status, address);
  inference::ModelInferResponse& r = call.response;
  if (r.raw_output_contents_size() != r.outputs_size()) {
    return Status(StatusCode::kInternal, absl::StrCat("server ", address, " answered ", r.outputs_size(),
                                                      " outputs with ", r.raw_output_contents_size(),
                                                      " raw contents; baton reads raw outputs"));
  }
  Tensors out;
  for (int i = 0; i < r.outputs_size(); ++i) {
    const auto& o = r.outputs(i);
    const std::string where = absl::StrCat("server ", address, " output '", o.name(), "'");
    const std::optional<ElemType> type = ElemTypeOfKServe(o.datatype());
    if (!type) {
      return Status(StatusCode::kInternal,
                    absl::StrCat(where, " has datatype '", o.datatype(), "', which baton does not know"));
    }
    absl::StatusOr<Tensor> t = TensorFromRaw(std::move(*r.mutable_raw_output_contents(i)), *type,
                                             std::vector<int64_t>(o.shape().begin(), o.shape().end()), where);
    if (!t.ok()) return Status(StatusCode::kInternal, std::string(t.status().message()));
    out.emplace(o.name(), *std::move(t));
  }
  return out;
}

}  // namespace

// Calls complete on one completion queue, drained by one thread that runs
// their `done` callbacks; the destructor shuts it down and joins it. (The
// async API rather than the callback API: with gRPC 1.51 the callback API's
// client threads can outlive the library at process exit.)
struct GrpcClient::Impl {
  std::string address;
  GrpcClientOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub;
  grpc::CompletionQueue cq;
  std::thread poller;
  // Calls started and not yet completed. Its mutex also hands each Call from
  // the starting thread to the poller visibly to ThreadSanitizer (the queue's
  // own synchronisation is inside the uninstrumented gRPC library).
  std::mutex calls_mu;
  uint64_t calls = 0;

  ~Impl() {
    cq.Shutdown();  // Next returns false once every call in flight has completed (each has a deadline)
    if (poller.joinable()) poller.join();
  }

  void Poll() {
    void* tag = nullptr;
    bool ok = false;
    while (cq.Next(&tag, &ok)) {
      {
        std::lock_guard lock(calls_mu);
        --calls;
      }
      std::unique_ptr<Call> call(static_cast<Call*>(tag));
      call->done(AnswerOf(*call, address));
    }
  }

  void Prepare(grpc::ClientContext& ctx, std::chrono::nanoseconds timeout) const {
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    if (!options.token.empty()) ctx.AddMetadata("authorization", "Bearer " + options.token);
  }
};

GrpcClient::GrpcClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GrpcClient::~GrpcClient() = default;

absl::StatusOr<std::unique_ptr<GrpcClient>> GrpcClient::Connect(const std::string& address,
                                                                  GrpcClientOptions options) {
  if (address.empty() || address.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--server wants HOST:PORT of a `baton serve` gRPC endpoint, got '",
                                                   address, "'"));
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_ca.empty()) {
    absl::StatusOr<std::string> pem = ReadRegularFile(options.tls_ca, 1 << 20, "TLS CA file");
    if (!pem.ok()) return pem.status();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *std::move(pem);
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(std::min<size_t>(options.max_message_bytes, INT32_MAX)));
  args.SetMaxSendMessageSize(static_cast<int>(std::min<size_t>(options.max_message_bytes, INT32_MAX)));
  auto impl = std::make_unique<Impl>();
  impl->address = address;
  impl->options = std::move(options);
  impl->channel = grpc::CreateCustomChannel(address, credentials, args);
  impl->stub = inference::GRPCInferenceService::NewStub(impl->channel);
  // Live, and does it take our token? ServerMetadata needs the token where ServerLive may not.
  grpc::ClientContext ctx;
  impl->Prepare(ctx, impl->options.connect_timeout);
  inference::ServerMetadataResponse meta;
  grpc::Status s = impl->stub->ServerMetadata(&ctx, {}, &meta);
  if (!s.ok()) {
    if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED || s.error_code() == grpc::StatusCode::UNAVAILABLE) {
      return absl::UnavailableError(absl::StrCat("no KServe v2 gRPC server answered at ", address, " within ",
                                                 impl->options.connect_timeout.count(),
                                                 " s; start one with `baton serve CONFIG --grpc ", address, "`"));
    }
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                        absl::StrCat("server ", address, ": ", s.error_message()));
  }
  Impl* raw = impl.get();
  impl->poller = std::thread([raw] { raw->Poll(); });
  return std::unique_ptr<GrpcClient>(new GrpcClient(std::move(impl)));
}

absl::Status GrpcClient::CheckModels(const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    grpc::ClientContext ctx;
    impl_->Prepare(ctx, impl_->options.connect_timeout);
    inference::ModelMetadataRequest req;
    req.set_name(name);
    inference::ModelMetadataResponse meta;
    grpc::Status s = impl_->stub->ModelMetadata(&ctx, req, &meta);
    if (!s.ok()) {
      return absl::NotFoundError(absl::StrCat("server ", impl_->address, " cannot serve model '", name,
                                              "': ", s.error_message(),
                                              "; give the server a config with the same model names"));
    }
  }
  return absl::OkStatus();
}

void GrpcClient::InferAsync(const std::string& model, Tensors inputs, const InferOptions& options,
                            std::function<void(Result<Tensors>)> done) {
  auto* call = new Call;
  call->done = std::move(done);
  call->request.set_model_name(model);
  for (const auto& [name, t] : inputs) {
    inference::ModelInferRequest::InferInputTensor* in = call->request.add_inputs();
    in->set_name(name);
    in->set_datatype(KServeDatatype(t.elem_type()).value_or(ElemTypeName(t.elem_type())));
    for (int64_t d : t.shape()) in->add_shape(d);
    AppendRaw(t, *call->request.add_raw_input_contents());
  }
  auto& params = *call->request.mutable_parameters();
  if (options.priority) params["priority"].set_int64_param(*options.priority);
  std::chrono::nanoseconds timeout = impl_->options.call_slack;
  if (options.deadline) {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(*options.deadline).count();
    params["timeout"].set_int64_param(std::max<int64_t>(1, us));
    timeout += *options.deadline;
  }
  impl_->Prepare(call->context, timeout);
  // Held until Finish has registered the tag: the poller, which takes the
  // mutex before it touches a call, then sees everything done here.
  std::lock_guard lock(impl_->calls_mu);
  ++impl_->calls;
  call->rpc = impl_->stub->PrepareAsyncModelInfer(&call->context, call->request, &impl_->cq);
  call->rpc->StartCall();
  call->rpc->Finish(&call->response, &call->status, call);
}

}  // namespace baton::serve
