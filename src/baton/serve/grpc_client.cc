#include "baton/serve/grpc_client.h"

// GCC 12 at -O3 reports impossible memcpy bounds inside protobuf's inlined
// string accessors (false positives of -Wstringop-overflow, -Wrestrict,
// -Warray-bounds and -Wstringop-overread).
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#pragma GCC diagnostic ignored "-Wrestrict"
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wstringop-overread"

#include <fcntl.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "baton/core/file.h"
#include "baton/core/process.h"
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

// One region of this client's shared memory, mapped here and registered
// with the server under `name`. `fd` holds a shared flock on the object for
// the slot's life: the server drops the region once the lock is gone, so a
// client that dies without unregistering leaves nothing registered.
struct ShmSlot {
  std::string name;
  std::byte* data = nullptr;
  size_t size = 0;
  int fd = -1;
  uint64_t generation = 0;  // GrpcClient::Impl::shm_generation when it was registered
  ShmSlot() = default;
  ShmSlot(const ShmSlot&) = delete;
  ShmSlot& operator=(const ShmSlot&) = delete;
  ~ShmSlot() {
    if (data != nullptr) munmap(data, size);
    if (fd >= 0) close(fd);
  }
};

constexpr size_t kMaxShmSlots = 64;
constexpr size_t kShmAlign = 64;  // each input starts on a cache line

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

// One call in flight: what gRPC needs alive until it completes on the queue.
struct Call {
  uint64_t seq = 0;                     // its key in LiveCalls::calls
  std::shared_ptr<CancelToken> cancel;  // InferOptions::cancel, with the hook it holds
  uint64_t hook = 0;
  ShmSlot* slot = nullptr;  // the shared memory region its inputs are in, if any
  grpc::ClientContext context;
  grpc::ByteBuffer response;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> rpc;
  std::function<void(Result<Tensors>)> done;
};

// Inputs at least this large go into the message as slices over the
// tensor's own bytes; smaller ones are copied next to the request's fields.
constexpr size_t kZeroCopyMinBytes = size_t{16} << 10;

// A serialized ModelInferRequest that refers to its large raw inputs instead
// of copying them. Protocol Buffers parse a message from its fields in any
// order, so `head` (every field but raw_input_contents) comes first and each
// raw entry follows as its tag, its length and its bytes, in input order.
// Large bytes stay in `tensors`, owned by the message's slices until gRPC
// releases the last of them, which may be after the call's answer.
class RequestWriter {
 public:
  explicit RequestWriter(const inference::ModelInferRequest& head) { head.AppendToString(&pending_); }

  // Appends one raw_input_contents entry with `t`'s contents; takes `t`.
  void AddRaw(Tensor t) {
    std::string strings;  // BYTES in their raw form
    if (t.elem_type() == dtype::kString) AppendRaw(t, strings);
    const size_t size = t.elem_type() == dtype::kString ? strings.size() : t.byte_size();
    char prefix[16];
    uint8_t* end = WireFormatLite::WriteTagToArray(inference::ModelInferRequest::kRawInputContentsFieldNumber,
                                                   WireFormatLite::WIRETYPE_LENGTH_DELIMITED,
                                                   reinterpret_cast<uint8_t*>(prefix));
    end = google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(size, end);
    pending_.append(prefix, static_cast<size_t>(reinterpret_cast<char*>(end) - prefix));
    if (t.elem_type() == dtype::kString) {
      pending_.append(strings);
      return;
    }
    if (size < kZeroCopyMinBytes) {
      AppendRaw(t, pending_);
      return;
    }
    // Borrowed or adopted bytes are the caller's again once the call is
    // answered (it may write to them) while gRPC may still hold a slice: copy
    // those once; a tensor's own bytes go as they are.
    if (t.external()) t = t.Clone();
    Flush();
    if (tensors_ == nullptr) tensors_ = std::make_shared<std::vector<Tensor>>();  // only calls with a large input
    tensors_->push_back(std::move(t));
    Tensor& held = tensors_->back();
    slices_.emplace_back(held.bytes().data(), held.byte_size(), &ReleaseTensors,
                         new std::shared_ptr<std::vector<Tensor>>(tensors_));
  }

  grpc::ByteBuffer Finish() {
    Flush();
    return grpc::ByteBuffer(slices_.data(), slices_.size());
  }

 private:
  using WireFormatLite = google::protobuf::internal::WireFormatLite;

  static void ReleaseTensors(void* held) { delete static_cast<std::shared_ptr<std::vector<Tensor>>*>(held); }

  void Flush() {
    if (!pending_.empty()) slices_.emplace_back(pending_);
    pending_.clear();
  }

  std::string pending_;  // serialized bytes not yet in a slice
  std::vector<grpc::Slice> slices_;
  // The large inputs; moving a Tensor keeps its bytes where they are.
  std::shared_ptr<std::vector<Tensor>> tensors_;
};

// The unary calls in flight, by start order, shared with the cancel hooks of
// their tokens (InferOptions::cancel): a hook that runs after its call has
// completed, or after the client is gone, finds nothing. Its mutex also
// hands each Call from the starting thread to the poller visibly to
// ThreadSanitizer (the queue's own synchronisation is inside the
// uninstrumented gRPC library); under it no call completes, so each one in
// `calls` is alive.
struct LiveCalls {
  std::mutex mu;
  std::atomic<uint64_t> next{0};
  std::map<uint64_t, Call*> calls;  // guarded by mu
  // Cancels call `seq` if it is still in flight; TryCancel only queues the cancellation.
  void Cancel(uint64_t seq) {
    std::lock_guard lock(mu);
    if (auto it = calls.find(seq); it != calls.end()) it->second->context.TryCancel();
  }
};

// A ModelInferResponse's outputs as tensors, or why they cannot be read.
Result<Tensors> TensorsOf(inference::ModelInferResponse& r, const std::string& address) {
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

// The answer of a finished unary call, as tensors, or why there is none.
Result<Tensors> AnswerOf(Call& call, const std::string& address) {
  if (!call.status.ok()) return FromGrpc(call.status, address);
  inference::ModelInferResponse r;
  if (!grpc::SerializationTraits<inference::ModelInferResponse>::Deserialize(&call.response, &r).ok()) {
    return Status(StatusCode::kInternal,
                  absl::StrCat("server ", address, " answered with bytes that are not a ModelInferResponse"));
  }
  return TensorsOf(r, address);
}

// A stream answer's error_message ("CODE: message", as baton and Triton
// write it) as a status; a message without a known code is UNKNOWN.
Status StreamError(const std::string& message, const std::string& address) {
  for (int c = 1; c <= 16; ++c) {
    const std::string prefix = absl::StrCat(StatusCodeName(static_cast<StatusCode>(c)), ": ");
    if (message.rfind(prefix, 0) == 0) {
      return Status(static_cast<StatusCode>(c), message.substr(prefix.size()));
    }
  }
  return Status(StatusCode::kUnknown, absl::StrCat("server ", address, ": ", message));
}

// Whether `answer` says the server does not know `slot`'s region: it was
// restarted (or the region unregistered) since the region was registered.
// baton's wording and Triton's ("Unable to find system shared memory region:
// 'NAME'") both name the region in quotes.
bool RegionUnknown(const Status& answer, const ShmSlot& slot) {
  if (answer.code() != StatusCode::kInvalidArgument && answer.code() != StatusCode::kNotFound) return false;
  const std::string& m = answer.message();
  return m.find("shared memory region") != std::string::npos &&
         m.find(absl::StrCat("'", slot.name, "'")) != std::string::npos;
}

// A call sent on the stream, waiting for its answer.
struct StreamCall {
  ShmSlot* slot = nullptr;
  std::chrono::steady_clock::time_point give_up;  // deadline plus call_slack
  std::function<void(Result<Tensors>)> done;
};

}  // namespace

// Calls complete on one completion queue, drained by one thread that runs
// their `done` callbacks; the destructor shuts it down and joins it. (The
// async API rather than the callback API: with gRPC 1.51 the callback API's
// client threads can outlive the library at process exit.) With
// options.stream the same thread also reads the stream's answers, starts its
// queued writes and fails the calls whose answer is overdue.
struct GrpcClient::Impl {
  std::string address;
  GrpcClientOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub;
  // ModelInfer goes through the generic stub, with the request serialized by RequestWriter.
  std::unique_ptr<grpc::GenericStub> generic;
  const std::string infer_method =
      absl::StrCat("/", inference::GRPCInferenceService::service_full_name(), "/ModelInfer");
  grpc::CompletionQueue cq;
  std::thread poller;
  // The unary calls started and not yet completed.
  const std::shared_ptr<LiveCalls> live = std::make_shared<LiveCalls>();

  // Shared memory regions (options.shared_memory): all of them, and those no
  // call is using. Guarded by shm_mu. When the server turns out not to know
  // a region (it was restarted), every region registered so far is stale:
  // the generation moves on and older slots are dropped once free, so later
  // calls register new ones.
  std::mutex shm_mu;
  std::vector<std::unique_ptr<ShmSlot>> slots;
  std::vector<ShmSlot*> free_slots;
  uint64_t shm_generation = 0;

  // The stream (options.stream). Guarded by stream_mu, except `incoming`,
  // which only the poller touches. At most one write is in flight (gRPC's
  // rule); the others wait in `outbox`, in the order their calls were made.
  // A stream CancelAll cancelled is replaced by a new one for the next call
  // once it has ended and no write of it is in flight (its operations' tags
  // are then free again); one the server ended is not.
  const std::string stream_method =
      absl::StrCat("/", inference::GRPCInferenceService::service_full_name(), "/ModelStreamInfer");
  std::mutex stream_mu;
  std::condition_variable stream_cv;  // signalled when stream_ended becomes true
  std::unique_ptr<grpc::ClientContext> stream_ctx;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> stream;
  bool stream_open = false;   // new calls may go on it
  bool reopen = false;        // CancelAll cancelled it: the next call opens a new one once it has ended
  bool finishing = false;     // its reads have ended and Finish is called: nothing more is written
  bool stream_ended = false;  // its Finish has completed
  bool writing = false;       // a StartCall, Write or WritesDone is in flight
  bool half_close = false;    // send WritesDone once no write is in flight
  bool writes_done = false;   // WritesDone has been sent
  std::deque<grpc::ByteBuffer> outbox;
  std::unordered_map<uint64_t, StreamCall> waiting;  // by request id
  uint64_t next_id = 1;
  grpc::Status stream_status;
  grpc::ByteBuffer incoming;
  uint64_t streams_opened = 0;
  std::chrono::steady_clock::time_point next_scan;  // poller only
  // Calls sent on a stream and as ModelInfer calls.
  std::atomic<uint64_t> stream_calls{0}, unary_calls{0};
  // The stream operations' completion-queue tags (their addresses).
  char op_start = 0, op_read = 0, op_write = 0, op_writes_done = 0, op_finish = 0;

  // Overdue stream calls are looked for this often.
  static constexpr std::chrono::milliseconds kScanEvery{100};
  // How long the destructor waits for the server to end the stream before it cancels it.
  static constexpr std::chrono::seconds kCloseWait{10};

  ~Impl() {
    if (stream != nullptr) CloseStream();
    cq.Shutdown();  // Next returns false once every call in flight has completed (each has a deadline)
    if (poller.joinable()) poller.join();
    // Best effort, and bounded as a whole: the server may be gone or stuck.
    const auto until = std::chrono::system_clock::now() + std::chrono::seconds(5);
    for (const auto& slot : slots) {
      const auto left = until - std::chrono::system_clock::now();
      if (left <= std::chrono::nanoseconds::zero()) break;
      grpc::ClientContext ctx;
      Prepare(ctx, left);  // the deadline is `until`
      inference::SystemSharedMemoryUnregisterRequest req;
      req.set_name(slot->name);
      inference::SystemSharedMemoryUnregisterResponse resp;
      stub->SystemSharedMemoryUnregister(&ctx, req, &resp);
    }
  }

  // A new region of `size` bytes, mapped here and registered with the server.
  absl::StatusOr<std::unique_ptr<ShmSlot>> NewSlot(size_t size) {
    static std::atomic<uint64_t> counter{0};
    auto slot = std::make_unique<ShmSlot>();
    {
      std::lock_guard lock(shm_mu);
      slot->generation = shm_generation;
    }
    slot->name = absl::StrCat("baton-client-", getpid(), "-", reinterpret_cast<uintptr_t>(this), "-", counter++);
    const std::string key = "/" + slot->name;
    const int fd = shm_open(key.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot create shared memory object '", key, "': ", std::strerror(errno)));
    }
    slot->fd = fd;  // closed with the slot
    void* data = MAP_FAILED;
    // The lock says "in use" to the server until this process lets go of it.
    if (flock(fd, LOCK_SH) == 0 && ftruncate(fd, static_cast<off_t>(size)) == 0) {
      data = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    const int err = errno;
    if (data == MAP_FAILED) {
      shm_unlink(key.c_str());
      return absl::ResourceExhaustedError(absl::StrCat("cannot lock, size or map shared memory object '", key, "' (",
                                                       size, " bytes): ", std::strerror(err)));
    }
    slot->data = static_cast<std::byte*>(data);
    slot->size = size;
    grpc::ClientContext ctx;
    Prepare(ctx, options.connect_timeout);
    inference::SystemSharedMemoryRegisterRequest req;
    req.set_name(slot->name);
    req.set_key(key);
    req.set_byte_size(size);
    inference::SystemSharedMemoryRegisterResponse resp;
    const grpc::Status s = stub->SystemSharedMemoryRegister(&ctx, req, &resp);
    shm_unlink(key.c_str());  // the server has mapped it (or failed): the name is no longer needed
    if (!s.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                          absl::StrCat("server ", address, " did not register this client's shared memory: ",
                                       s.error_message(),
                                       s.error_code() == grpc::StatusCode::NOT_FOUND
                                           ? " (it runs on another machine or in another IPC namespace)"
                                           : "",
                                       "; drop --shared-memory"));
    }
    return slot;
  }

  // A free region of at least `size` bytes (made when none fits and fewer
  // than kMaxShmSlots exist), or null: the call then sends its bytes.
  ShmSlot* AcquireSlot(size_t size) {
    {
      std::lock_guard lock(shm_mu);
      auto best = free_slots.end();
      for (auto it = free_slots.begin(); it != free_slots.end(); ++it) {
        if ((*it)->size >= size && (best == free_slots.end() || (*it)->size < (*best)->size)) best = it;
      }
      if (best != free_slots.end()) {
        ShmSlot* slot = *best;
        free_slots.erase(best);
        return slot;
      }
      if (slots.size() >= kMaxShmSlots) return nullptr;
    }
    absl::StatusOr<std::unique_ptr<ShmSlot>> slot = NewSlot(RoundUp(size, size_t{1} << 16));
    if (!slot.ok()) return nullptr;
    std::lock_guard lock(shm_mu);  // calls racing here may pass kMaxShmSlots by as many as race
    slots.push_back(*std::move(slot));
    return slots.back().get();
  }

  // Gives `slot` back after its call's answer (`answer`: its error, if any).
  void ReleaseSlot(ShmSlot* slot, const Status* answer = nullptr) {
    if (slot == nullptr) return;
    std::lock_guard lock(shm_mu);
    const bool now_stale = answer != nullptr && slot->generation == shm_generation && RegionUnknown(*answer, *slot);
    if (now_stale) ++shm_generation;
    free_slots.push_back(slot);
    // Stale slots no call is using: unmapped and closed; the server that knew
    // them is gone. Those free at the change go now, the others as they come
    // back, so the common case (nothing stale) scans nothing.
    if (!now_stale && slot->generation == shm_generation) return;
    std::erase_if(free_slots, [&](ShmSlot* s) {
      if (s->generation == shm_generation) return false;
      std::erase_if(slots, [&](const std::unique_ptr<ShmSlot>& owned) { return owned.get() == s; });
      return true;
    });
  }

  void Poll() {
    NameThisThread("grpc-client");
    void* tag = nullptr;
    bool ok = false;
    if (stream == nullptr) {
      while (cq.Next(&tag, &ok)) CompleteUnary(tag);
      return;
    }
    for (;;) {
      const auto got = cq.AsyncNext(&tag, &ok, std::chrono::system_clock::now() + kScanEvery);
      if (got == grpc::CompletionQueue::SHUTDOWN) return;
      if (got == grpc::CompletionQueue::GOT_EVENT) {
        if (tag == &op_start || tag == &op_read || tag == &op_write || tag == &op_writes_done || tag == &op_finish) {
          OnStreamEvent(tag, ok);
        } else {
          CompleteUnary(tag);
        }
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_scan) {
        next_scan = now + kScanEvery;
        FailOverdue(now);
      }
    }
  }

  void CompleteUnary(void* tag) {
    std::unique_ptr<Call> call(static_cast<Call*>(tag));
    {
      std::lock_guard lock(live->mu);
      live->calls.erase(call->seq);
    }
    if (call->cancel) call->cancel->Remove(call->hook);
    Result<Tensors> answer = AnswerOf(*call, address);
    // Before `done`, which may send the next request.
    const Status error = answer.ok() ? Status() : answer.status();
    ReleaseSlot(call->slot, answer.ok() ? nullptr : &error);
    call->done(std::move(answer));
  }

  // Opens a stream and starts its first read: at Connect (before the
  // poller runs), or in place of one CancelAll cancelled (stream_mu held).
  void OpenStream() {
    // The ended stream's objects go only now: gRPC is done with them.
    stream.reset();
    stream_ctx = std::make_unique<grpc::ClientContext>();
    if (!options.token.empty()) stream_ctx->AddMetadata("authorization", "Bearer " + options.token);
    stream = generic->PrepareCall(stream_ctx.get(), stream_method, &cq);
    finishing = stream_ended = half_close = writes_done = reopen = false;
    outbox.clear();
    // StartCall is a write as far as gRPC is concerned (it reuses the write
    // operation): the first Write waits for it in the outbox.
    writing = true;
    stream->StartCall(&op_start);
    stream->Read(&incoming, &op_read);
    stream_open = true;
    ++streams_opened;
  }

  // Sends `request` (whose id is `id`) on the stream; false, leaving `done`
  // alone, when the stream has ended.
  bool SendOnStream(uint64_t id, const grpc::ByteBuffer& request, ShmSlot* slot, std::chrono::nanoseconds timeout,
                    std::function<void(Result<Tensors>)>& done) {
    std::lock_guard lock(stream_mu);
    if (!stream_open && reopen && stream_ended && !writing) OpenStream();
    if (!stream_open) return false;
    StreamCall& call = waiting[id];
    call.slot = slot;
    call.give_up = std::chrono::steady_clock::now() +
                   std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
    call.done = std::move(done);
    if (writing) {
      outbox.push_back(request);
    } else {
      writing = true;
      stream->Write(request, &op_write);
    }
    return true;
  }

  void OnStreamEvent(void* tag, bool ok) {
    if (tag == &op_read) {
      if (ok) {
        Answered();
        std::lock_guard lock(stream_mu);  // `stream` is replaced under it (only once this one has ended)
        stream->Read(&incoming, &op_read);
        return;
      }
      // The server has ended the stream (or it broke): read its status.
      std::lock_guard lock(stream_mu);
      stream_open = false;
      finishing = true;
      stream->Finish(&stream_status, &op_finish);
      return;
    }
    if (tag == &op_start || tag == &op_write || tag == &op_writes_done) {
      std::lock_guard lock(stream_mu);
      writing = false;
      if (!ok || finishing) {
        outbox.clear();  // their calls wait in `waiting` and fail when the stream's Finish completes
      } else if (!outbox.empty()) {  // sent even once new calls no longer come here
        writing = true;
        stream->Write(outbox.front(), &op_write);
        outbox.pop_front();
      }
      MaybeHalfCloseLocked();
      return;
    }
    if (tag == &op_finish) {
      std::unordered_map<uint64_t, StreamCall> left;
      {
        std::lock_guard lock(stream_mu);
        left.swap(waiting);
        stream_ended = true;
      }
      stream_cv.notify_all();
      const Status why = stream_status.ok()
                             ? Status(StatusCode::kUnavailable,
                                      absl::StrCat("server ", address, " ended the stream before answering"))
                             : FromGrpc(stream_status, address);
      for (auto& [id, call] : left) {
        ReleaseSlot(call.slot);
        call.done(why);
      }
    }
  }

  // Sends WritesDone once it is wanted and no write is in flight (stream_mu held).
  void MaybeHalfCloseLocked() {
    if (half_close && !writing && !writes_done && !finishing) {
      writes_done = true;
      writing = true;
      stream->WritesDone(&op_writes_done);
    }
  }

  // The answer in `incoming`, given to its call. An answer whose call has
  // already failed as overdue (or with an id this client never sent) is dropped.
  void Answered() {
    inference::ModelStreamInferResponse r;
    const bool parsed = grpc::SerializationTraits<inference::ModelStreamInferResponse>::Deserialize(&incoming, &r).ok();
    incoming.Clear();
    uint64_t id = 0;
    const std::string& text = r.infer_response().id();
    if (!parsed || std::from_chars(text.data(), text.data() + text.size(), id).ec != std::errc()) return;
    StreamCall call;
    {
      std::lock_guard lock(stream_mu);
      auto it = waiting.find(id);
      if (it == waiting.end()) return;
      call = std::move(it->second);
      waiting.erase(it);
    }
    if (r.error_message().empty()) {
      ReleaseSlot(call.slot);
      call.done(TensorsOf(*r.mutable_infer_response(), address));
      return;
    }
    Status error = StreamError(r.error_message(), address);
    ReleaseSlot(call.slot, &error);
    if (error.code() == StatusCode::kUnavailable) {
      // The server is stopping (or cannot serve for now): stop sending on the
      // stream, which lets a baton server end it at once (not after a quiet
      // second); later calls go as ModelInfer calls, which a stopped server
      // refuses at once.
      std::lock_guard lock(stream_mu);
      stream_open = false;
      half_close = true;
      MaybeHalfCloseLocked();
    }
    call.done(std::move(error));
  }

  // Fails the stream calls whose answer is overdue: a stream message has no
  // deadline of its own, so this is what bounds a call's wait.
  void FailOverdue(std::chrono::steady_clock::time_point now) {
    std::vector<StreamCall> overdue;
    {
      std::lock_guard lock(stream_mu);
      for (auto it = waiting.begin(); it != waiting.end();) {
        if (it->second.give_up <= now) {
          overdue.push_back(std::move(it->second));
          it = waiting.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (StreamCall& call : overdue) {
      ReleaseSlot(call.slot);
      call.done(Status(StatusCode::kDeadlineExceeded,
                       absl::StrCat("server ", address,
                                    " did not answer on the stream within the request's deadline plus ",
                                    std::chrono::duration_cast<std::chrono::seconds>(options.call_slack).count(),
                                    " s")));
    }
  }

  // Half-closes the stream once its writes are out and waits for the server
  // to end it (it does once its answers are written); cancels it after
  // kCloseWait. Then nothing of the stream is left on the queue.
  void CloseStream() {
    std::unique_lock lock(stream_mu);
    stream_open = false;
    half_close = true;
    MaybeHalfCloseLocked();
    if (!stream_cv.wait_for(lock, kCloseWait, [&] { return stream_ended; })) {
      stream_ctx->TryCancel();
      stream_cv.wait(lock, [&] { return stream_ended; });  // a cancelled call always finishes
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
  impl->generic = std::make_unique<grpc::GenericStub>(impl->channel);
  // Live, and does it take our token? ServerMetadata needs the token where ServerLive may not.
  grpc::ClientContext ctx;
  impl->Prepare(ctx, impl->options.connect_timeout);
  inference::ServerMetadataResponse meta;
  grpc::Status s = impl->stub->ServerMetadata(&ctx, {}, &meta);
  if (!s.ok()) {
    if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED || s.error_code() == grpc::StatusCode::UNAVAILABLE) {
      // gRPC's reason says whether nothing listens there or a handshake failed.
      return absl::UnavailableError(absl::StrCat(
          "no KServe v2 gRPC server answered at ", address, " (",
          s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED
              ? absl::StrCat("nothing within ", impl->options.connect_timeout.count(), " s")
              : s.error_message(),
          "); start one with `baton serve CONFIG --grpc ", address, "`",
          impl->options.tls_ca.empty()
              ? ", or, if it serves TLS (--tls-cert), give --tls-ca with the CA that signed its certificate"
              : ", or, if it serves TLS, check that --tls-ca signed its certificate and that the certificate "
                "names the host in --server"));
    }
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                        absl::StrCat("server ", address, ": ", s.error_message()));
  }
  if (impl->options.shared_memory) {
    if (std::find(meta.extensions().begin(), meta.extensions().end(), "system_shared_memory") ==
        meta.extensions().end()) {
      return absl::FailedPreconditionError(absl::StrCat("server ", address,
                                                        " takes no client shared memory; start it with "
                                                        "--allow-client-shm, or drop --shared-memory"));
    }
    // One small region now: a server that cannot map it is an error here, not in every call.
    absl::StatusOr<std::unique_ptr<ShmSlot>> first = impl->NewSlot(size_t{1} << 16);
    if (!first.ok()) return first.status();
    impl->free_slots.push_back(first->get());
    impl->slots.push_back(*std::move(first));
  }
  if (impl->options.stream) impl->OpenStream();
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
  if (options.cancel && options.cancel->cancelled()) {
    done(Status(StatusCode::kCancelled, absl::StrCat("model '", model, "': cancelled by its caller before it was sent")));
    return;
  }
  inference::ModelInferRequest head;  // every field but the raw contents
  head.set_model_name(model);
  uint64_t id = 0;
  // A message on the stream cannot be cancelled alone: a call with a token goes as a ModelInfer call.
  if (impl_->options.stream && !options.cancel) {
    std::lock_guard lock(impl_->stream_mu);
    id = impl_->next_id++;
  }
  if (id != 0) head.set_id(absl::StrCat(id));  // how the stream's answer finds its call
  ShmSlot* slot = nullptr;
  if (impl_->options.shared_memory) {
    size_t total = 0;
    for (const auto& [name, t] : inputs) {
      if (t.elem_type() != dtype::kString) total += RoundUp(t.byte_size(), kShmAlign);
    }
    if (total > 0) slot = impl_->AcquireSlot(total);
  }
  std::vector<Tensor*> raw;  // inputs that go in the message, in the order of head.inputs
  size_t offset = 0;
  for (auto& [name, t] : inputs) {
    inference::ModelInferRequest::InferInputTensor* in = head.add_inputs();
    in->set_name(name);
    in->set_datatype(KServeDatatype(t.elem_type()).value_or(ElemTypeName(t.elem_type())));
    for (int64_t d : t.shape()) in->add_shape(d);
    if (slot != nullptr && t.elem_type() != dtype::kString) {
      if (t.byte_size() > 0) std::memcpy(slot->data + offset, t.bytes().data(), t.byte_size());
      auto& params = *in->mutable_parameters();
      params["shared_memory_region"].set_string_param(slot->name);
      params["shared_memory_byte_size"].set_int64_param(static_cast<int64_t>(t.byte_size()));
      params["shared_memory_offset"].set_int64_param(static_cast<int64_t>(offset));
      offset += RoundUp(t.byte_size(), kShmAlign);
    } else {
      raw.push_back(&t);  // one raw entry per input not in shared memory
    }
  }
  auto& params = *head.mutable_parameters();
  if (options.priority) params["priority"].set_int64_param(*options.priority);
  std::chrono::nanoseconds timeout = impl_->options.call_slack;
  if (options.deadline) {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(*options.deadline).count();
    params["timeout"].set_int64_param(std::max<int64_t>(1, us));
    timeout += *options.deadline;
  }
  RequestWriter writer(head);
  for (Tensor* t : raw) writer.AddRaw(std::move(*t));
  const grpc::ByteBuffer request = writer.Finish();
  if (id != 0 && impl_->SendOnStream(id, request, slot, timeout, done)) {
    impl_->stream_calls.fetch_add(1);
    return;
  }
  impl_->unary_calls.fetch_add(1);
  auto* call = new Call;
  call->slot = slot;
  call->done = std::move(done);
  call->seq = impl_->live->next.fetch_add(1) + 1;
  if (options.cancel) {
    // Before the call is visible to the poller, which removes the hook. A
    // cancel from now until the call is in `live` finds nothing there; the
    // check below catches it.
    call->cancel = options.cancel;
    call->hook = options.cancel->OnCancel([live = impl_->live, seq = call->seq] { live->Cancel(seq); });
  }
  impl_->Prepare(call->context, timeout);
  // Held until Finish has registered the tag: the poller, which takes the
  // mutex before it touches a call, then sees everything done here.
  std::lock_guard lock(impl_->live->mu);
  impl_->live->calls.emplace(call->seq, call);
  call->rpc = impl_->generic->PrepareUnaryCall(&call->context, impl_->infer_method, request, &impl_->cq);
  call->rpc->StartCall();
  call->rpc->Finish(&call->response, &call->status, call);
  if (call->cancel && call->cancel->cancelled()) call->context.TryCancel();
}

void GrpcClient::CancelAll() {
  {
    // Newest first: a call that waits behind an older one is cancelled
    // before the older one's end can let it start.
    std::lock_guard lock(impl_->live->mu);
    for (auto it = impl_->live->calls.rbegin(); it != impl_->live->calls.rend(); ++it) it->second->context.TryCancel();
  }
  std::lock_guard lock(impl_->stream_mu);
  if (impl_->stream != nullptr && !impl_->stream_ended && !impl_->waiting.empty()) {
    // Later calls go as ModelInfer calls until it has ended, then on a new stream.
    impl_->stream_open = false;
    impl_->reopen = true;
    impl_->stream_ctx->TryCancel();
  }
}

GrpcClient::Counts GrpcClient::counts() const {
  Counts c;
  c.stream_calls = impl_->stream_calls.load();
  c.unary_calls = impl_->unary_calls.load();
  std::lock_guard lock(impl_->stream_mu);
  c.streams_opened = impl_->streams_opened;
  return c;
}

}  // namespace baton::serve
