#include "baton/net/remote_device.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/agent/v1/agent.grpc.pb.h"
#include "baton/core/process.h"
#include "baton/core/saturate.h"
#include "baton/net/content_hash.h"
#include "baton/net/codec.h"
#include "baton/net/security.h"

namespace baton::net {

// The connection behind GrpcRemoteDevice: everything that touches gRPC. The
// public class forwards to it, so no gRPC header leaves this folder.
class GrpcRemoteDevice::Impl {
 public:
  static absl::StatusOr<std::unique_ptr<Impl>> Connect(RemoteDeviceOptions options);
  ~Impl();

  const AgentHello& hello() const { return hello_; }
  const std::string& name() const { return options_.name; }
  // The public methods of GrpcRemoteDevice (remote_device.h says what they do).
  void Bind(DeviceId device, std::vector<runtime::PuSetup> pus, const runtime::RunnerTable* runners);

  using Loaded = GrpcRemoteDevice::Loaded;
  using Link = GrpcRemoteDevice::Link;
  absl::StatusOr<Loaded> Load(const std::string& partition_name, const std::string& bytes);

  absl::StatusOr<Link> MeasureLink(int64_t probe_bytes);

  void Submit(dispatch::Assignment assignment);
  void Cancel(std::span<const AssignmentId> ids);
  void UnloadAll(std::chrono::milliseconds limit);
  // Loads every partition the agent `instance` lacks again, a few at once;
  // false when one failed (the next try loads what is still missing).
  // With load_mu_ held.
  bool ReloadAll(const std::string& instance);
  // How many of our Loads the agent instance we talk to holds; with load_mu_ held.
  int64_t HeldLocked() const;
  // Loads again what the agent that answered `hello` lacks: everything when
  // it restarted (its cache is empty) or gave our Loads back (we were away
  // past its client grace). With load_mu_ held; false when a Load failed.
  bool CatchUpLocked(const pb::HelloReply& hello);
  void Start(runtime::RemoteDeviceEvents events);
  void Stop();
  std::vector<runtime::PuStats> pu_stats() const;
  void ResetStats();
  bool reachable() const;

  RemoteDeviceCounters counters() const;
  void SimulateLoss(const std::string& why);

 private:
  struct Stream;
  struct Loadable {
    std::string name;
    std::string bytes;
    Loaded loaded;
    std::string instance;  // the agent instance that holds our Load of it
  };

  explicit Impl(RemoteDeviceOptions options);
  void AddAuth(grpc::ClientContext& context) const;
  absl::Status Hello(std::chrono::milliseconds timeout, pb::HelloReply& reply);
  absl::StatusOr<Loaded> LoadOnAgent(const std::string& name, const std::string& bytes);
  // Opens a new Execute stream and starts its threads (mu_ not held);
  // `rejoin` counts it as a rejoin.
  absl::Status OpenStream(bool rejoin);
  void ReaderLoop(std::shared_ptr<Stream> stream);
  void WriterLoop(std::shared_ptr<Stream> stream);
  void SupervisorLoop();
  // Joins a retired stream's threads and finishes its call (mu_ not held).
  void Reap(Stream& stream);
  // Marks the agent lost (once per connection) and hands back in-flight work.
  void Lose(const std::shared_ptr<Stream>& stream, const std::string& why);
  void Deliver(std::vector<dispatch::Assignment> returned);
  Time Now() const;
  std::optional<std::string> HandleFor(const dispatch::Assignment& a) const;

  const RemoteDeviceOptions options_;
  ClientSecurity security_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Agent::Stub> stub_;
  AgentHello hello_;  // immutable after Connect (PU list, limits)

  DeviceId device_;
  std::vector<runtime::PuSetup> pus_;
  const runtime::RunnerTable* runners_ = nullptr;
  runtime::RemoteDeviceEvents events_;

  // This client's id on the agent (LoadHeader.client): the agent gives our
  // Loads back if we stay away past its client grace, and Hello says so.
  const std::string client_ = RandomHexId();
  mutable std::mutex load_mu_;  // serialises loads; guards loads_ and instance_
  absl::flat_hash_map<std::string, Loadable> loads_;  // by content hash
  std::string instance_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // supervisor wake-ups
  std::shared_ptr<Stream> stream_;  // guarded by mu_; null while lost
  struct Sent {
    dispatch::Assignment assignment;
    int64_t at_ns = 0;  // SteadyNanos() when it was sent
  };
  absl::flat_hash_map<AssignmentId, Sent> in_flight_;  // guarded by mu_
  // Answers the assignments sent more than answer_timeout ago (the agent
  // answers pings but withholds them) DEADLINE_EXCEEDED, and withdraws them.
  void ExpireUnanswered();
  std::vector<dispatch::Assignment> bounced_;  // guarded by mu_; submitted while lost, to hand back
  std::vector<std::shared_ptr<Stream>> retired_;  // guarded by mu_; lost streams whose threads are joined later
  std::vector<Duration> busy_;      // guarded by mu_; per PU
  std::vector<uint64_t> runs_;      // guarded by mu_
  std::vector<uint64_t> failures_;  // guarded by mu_
  RemoteDeviceCounters counters_;   // guarded by mu_
  bool started_ = false;            // guarded by mu_
  bool stopping_ = false;           // guarded by mu_
  std::thread supervisor_;
  std::atomic<uint64_t> ping_seq_{0};
};

struct GrpcRemoteDevice::Impl::Stream {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<pb::ExecuteIn, pb::ExecuteOut>> rw;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<pb::ExecuteIn> outbox;  // guarded by mu
  bool closed = false;               // guarded by mu
  std::atomic<int64_t> last_heard_ns{0};
  // The reader is handling a message (reassembling, converting, handing it
  // on): this side's own time, which the silence check does not count.
  std::atomic<bool> reader_busy{false};
  std::thread reader;
  std::thread writer;
  bool finished = false;  // Finish was called (by whoever reaps the stream)
};

namespace {

grpc::ChannelArguments ChannelArgs(const std::string& server_name) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  args.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  if (!server_name.empty()) args.SetSslTargetNameOverride(server_name);
  return args;
}

absl::Status FromGrpc(const grpc::Status& s, const std::string& what) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), absl::StrCat(what, ": ", s.error_message()));
}

// The completion that answers `a` from `device`; status, outputs, PU and
// times are the caller's to fill.
dispatch::Completion CompletionFor(const dispatch::Assignment& a, DeviceId device) {
  dispatch::Completion c;
  c.id = a.id;
  c.request = a.request;
  c.model = a.model;
  c.partition = a.partition;
  c.device = device;
  return c;
}

int64_t SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::chrono::milliseconds LoadCallBudget(const AgentHello& hello, size_t bytes) {
  constexpr int64_t kUnknownAgentTimeoutMs = 120'000;  // what clients allowed before agents said
  constexpr int64_t kSlack = 30'000;
  const int64_t agent = hello.load_timeout_ms > 0 ? std::min<int64_t>(hello.load_timeout_ms, int64_t{86'400'000})
                                                  : kUnknownAgentTimeoutMs;
  const int64_t transfer = static_cast<int64_t>(std::min<size_t>(bytes, size_t{1} << 40)) * 1000 >> 20;  // 1 MiB/s
  return std::chrono::milliseconds(agent + kSlack + transfer);
}

GrpcRemoteDevice::Impl::Impl(RemoteDeviceOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<GrpcRemoteDevice::Impl>> GrpcRemoteDevice::Impl::Connect(RemoteDeviceOptions options) {
  std::unique_ptr<Impl> d(new Impl(std::move(options)));
  BATON_ASSIGN_OR_RETURN(d->security_, MakeClientSecurity(d->options_.security));
  d->channel_ =
      grpc::CreateCustomChannel(d->options_.address, d->security_.credentials, ChannelArgs(d->security_.server_name));
  d->stub_ = pb::Agent::NewStub(d->channel_);
  const auto deadline = std::chrono::system_clock::now() + d->options_.connect_timeout;
  if (!d->channel_->WaitForConnected(deadline)) {
    return absl::UnavailableError(absl::StrCat("device '", d->options_.name, "': no agent answers at ",
                                               d->options_.address, " within ",
                                               d->options_.connect_timeout.count(),
                                               " ms; start it with `baton agent --listen ", d->options_.address,
                                               "` or fix the address (and ca_cert when it uses TLS)"));
  }
  pb::HelloReply hello;
  BATON_RETURN_IF_ERROR(d->Hello(d->options_.connect_timeout, hello));
  d->hello_ = FromProto(hello);
  // Frames of the agent's chunk size carry Loads and large assignments: kept
  // between 4 KiB and 64 MiB, whatever the agent says (1 byte would make a
  // message per byte).
  d->hello_.chunk_bytes = d->hello_.chunk_bytes > 0
                              ? std::clamp<int64_t>(d->hello_.chunk_bytes, int64_t{4} << 10, int64_t{64} << 20)
                              : kDefaultChunkBytes;
  if (d->hello_.pus.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("device '", d->options_.name, "': the agent at ", d->options_.address, " has no PUs"));
  }
  d->instance_ = d->hello_.instance;
  const size_t n = d->hello_.pus.size();
  d->busy_.assign(n, Duration(0));
  d->runs_.assign(n, 0);
  d->failures_.assign(n, 0);
  return d;
}

GrpcRemoteDevice::Impl::~Impl() { Stop(); }

void GrpcRemoteDevice::Impl::AddAuth(grpc::ClientContext& context) const {
  if (security_.token) context.AddMetadata("authorization", "Bearer " + *security_.token);
  context.AddMetadata("baton-client", client_);
}

absl::Status GrpcRemoteDevice::Impl::Hello(std::chrono::milliseconds timeout, pb::HelloReply& reply) {
  grpc::ClientContext context;
  AddAuth(context);
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  pb::HelloRequest request;
  request.set_client(client_);
  grpc::Status s = stub_->Hello(&context, request, &reply);
  if (!s.ok()) {
    return FromGrpc(s, absl::StrCat("device '", options_.name, "' (agent at ", options_.address, ")"));
  }
  return absl::OkStatus();
}

void GrpcRemoteDevice::Impl::Bind(DeviceId device, std::vector<runtime::PuSetup> pus,
                                  const runtime::RunnerTable* runners) {
  device_ = device;
  pus_ = std::move(pus);
  runners_ = runners;
}

absl::StatusOr<GrpcRemoteDevice::Loaded> GrpcRemoteDevice::Impl::LoadOnAgent(const std::string& name,
                                                                             const std::string& bytes) {
  const std::chrono::milliseconds budget = LoadCallBudget(hello_, bytes.size());
  const auto give_up = std::chrono::steady_clock::now() + budget;
  const std::string hash = Sha256Hex(bytes);  // once, for every try
  std::chrono::milliseconds wait{0};  // before the next try, when the agent is taking all the Loads it takes
  for (;;) {
    grpc::ClientContext context;
    AddAuth(context);
    context.set_deadline(std::chrono::system_clock::now() + budget);
    pb::LoadReply reply;
    std::unique_ptr<grpc::ClientWriter<pb::LoadChunk>> writer = stub_->Load(&context, &reply);
    const int64_t chunk = std::max<int64_t>(hello_.chunk_bytes > 0 ? hello_.chunk_bytes : kDefaultChunkBytes, 1);
    size_t at = 0;
    bool first = true;
    while (first || at < bytes.size()) {
      pb::LoadChunk c;
      if (first) {
        c.mutable_header()->set_content_hash(hash);
        c.mutable_header()->set_total_bytes(static_cast<int64_t>(bytes.size()));
        c.mutable_header()->set_name(name);
        c.mutable_header()->set_client(client_);
        first = false;
      }
      const size_t n = std::min(static_cast<size_t>(chunk), bytes.size() - at);
      c.set_data(bytes.data() + at, n);
      at += n;
      if (!writer->Write(c)) break;  // the agent refused; Finish says why
    }
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      // Refused only for now (another client's Loads, or ours at a rejoin,
      // fill the agent's --max-concurrent-loads): try again at growing
      // intervals (the agent's hint, doubled up to 1 s) while the budget lasts.
      const auto& trailers = context.GetServerTrailingMetadata();
      if (auto it = trailers.find(kLoadRetryAfterMsKey); it != trailers.end()) {
        const int64_t hint = std::strtoll(std::string(it->second.data(), it->second.size()).c_str(), nullptr, 10);
        wait = std::clamp(std::max(std::chrono::milliseconds(hint), 2 * wait), std::chrono::milliseconds(10),
                          std::chrono::milliseconds(1000));
        if (std::chrono::steady_clock::now() + wait < give_up) {
          std::unique_lock lock(mu_);
          if (cv_.wait_for(lock, wait, [&] { return stopping_; })) {
            return absl::CancelledError(absl::StrCat("device '", options_.name, "': loading partition '", name,
                                                     "': the device is stopping"));
          }
          ++counters_.loads_retried;
          continue;
        }
      }
    }
    if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && context.deadline() <= std::chrono::system_clock::now()) {
      // This side gave up (the agent's own timeout answers earlier, and says so).
      return absl::DeadlineExceededError(absl::StrCat(
          "device '", options_.name, "': loading partition '", name, "' (", bytes.size(), " bytes) got no answer from ",
          "the agent at ", options_.address, " within ", budget.count(), " ms (its load timeout of ",
          hello_.load_timeout_ms > 0 ? absl::StrCat(hello_.load_timeout_ms, " ms") : "unknown, taken as 120 s",
          ", 30 s, and the bytes at 1 MiB/s); check the link to the agent and whether the agent is stuck"));
    }
    if (!s.ok()) {
      return FromGrpc(s, absl::StrCat("device '", options_.name, "': loading partition '", name, "'"));
    }
    Loaded out;
    out.handle = reply.handle();
    out.capable_pus.assign(reply.capable_pus().begin(), reply.capable_pus().end());
    {
      std::lock_guard lock(mu_);
      ++counters_.loads_sent;
    }
    return out;
  }
}

absl::StatusOr<GrpcRemoteDevice::Loaded> GrpcRemoteDevice::Impl::Load(const std::string& partition_name,
                                                                      const std::string& bytes) {
  std::lock_guard lock(load_mu_);
  const std::string hash = Sha256Hex(bytes);
  if (auto it = loads_.find(hash); it != loads_.end()) return it->second.loaded;
  BATON_ASSIGN_OR_RETURN(Loaded loaded, LoadOnAgent(partition_name, bytes));
  loads_.emplace(hash, Loadable{partition_name, bytes, loaded, instance_});
  return loaded;
}

bool GrpcRemoteDevice::Impl::CatchUpLocked(const pb::HelloReply& hello) {
  const bool restarted = hello.instance() != instance_;
  const bool given_back = !restarted && hello.client_loads() < HeldLocked();
  if (given_back) {
    {
      std::lock_guard lock(mu_);
      ++counters_.given_back;
    }
    for (auto& [hash, l] : loads_) l.instance.clear();
  }
  // Also what an earlier catch-up could not load again.
  const bool missing = std::any_of(loads_.begin(), loads_.end(),
                                   [&](const auto& entry) { return entry.second.instance != hello.instance(); });
  if (missing && !ReloadAll(hello.instance())) return false;
  instance_ = hello.instance();
  return true;
}

int64_t GrpcRemoteDevice::Impl::HeldLocked() const {
  int64_t n = 0;
  for (const auto& [hash, l] : loads_) n += l.instance == instance_;
  return n;
}

bool GrpcRemoteDevice::Impl::ReloadAll(const std::string& instance) {
  // What the restarted agent lacks (an earlier try may have loaded some).
  std::vector<Loadable*> todo;
  for (auto& [hash, l] : loads_) {
    if (l.instance != instance) todo.push_back(&l);
  }
  // A few at once: each is a session creation on the agent, and the agent
  // counts as back only once all are there.
  constexpr size_t kReloadThreads = 4;
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  auto work = [&] {
    for (size_t i = next++; i < todo.size() && !failed.load(); i = next++) {
      if (LoadOnAgent(todo[i]->name, todo[i]->bytes).ok()) {
        todo[i]->instance = instance;
      } else {
        failed = true;
      }
    }
  };
  std::vector<std::thread> helpers;
  for (size_t t = 1; t < std::min(todo.size(), kReloadThreads); ++t) helpers.emplace_back(work);
  work();
  for (std::thread& t : helpers) t.join();
  return !failed.load();
}

void GrpcRemoteDevice::Impl::UnloadAll(std::chrono::milliseconds limit) {
  std::lock_guard lock(load_mu_);
  if (loads_.empty()) return;
  const auto deadline = std::chrono::system_clock::now() + limit;
  // Only to the agent instance that holds our Loads: a restarted one we never
  // rejoined may hold the same handles for other clients.
  pb::HelloReply hello;
  if (!Hello(std::chrono::duration_cast<std::chrono::milliseconds>(limit / 3), hello).ok() ||
      hello.instance() != instance_) {
    loads_.clear();
    return;
  }
  for (auto& [hash, l] : loads_) {
    // Only what the agent we talk to now holds (a restarted one lost the rest).
    if (l.instance != instance_) continue;
    grpc::ClientContext context;
    AddAuth(context);
    context.set_deadline(deadline);
    pb::UnloadRequest request;
    request.set_handle(l.loaded.handle);
    request.set_client(client_);
    pb::UnloadReply reply;
    // NOT_FOUND (the agent restarted meanwhile) and an unreachable agent are
    // fine: there is nothing left to give back, or nobody to give it to.
    if (stub_->Unload(&context, request, &reply).ok()) ++counters_.unloads_sent;
  }
  loads_.clear();
}

absl::StatusOr<GrpcRemoteDevice::Link> GrpcRemoteDevice::Impl::MeasureLink(int64_t probe_bytes) {
  auto echo = [&](const std::string& payload) -> absl::StatusOr<double> {
    grpc::ClientContext context;
    AddAuth(context);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    pb::EchoRequest request;
    request.set_payload(payload);
    pb::EchoReply reply;
    const auto t0 = std::chrono::steady_clock::now();
    grpc::Status s = stub_->Echo(&context, request, &reply);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (!s.ok()) return FromGrpc(s, absl::StrCat("device '", options_.name, "': link probe"));
    return ms;
  };
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::vector<double> small, large;
  for (int i = 0; i < 5; ++i) {
    BATON_ASSIGN_OR_RETURN(double ms, echo(""));
    small.push_back(ms);
  }
  const std::string payload(static_cast<size_t>(std::max<int64_t>(probe_bytes, 1)), 'x');
  for (int i = 0; i < 3; ++i) {
    BATON_ASSIGN_OR_RETURN(double ms, echo(payload));
    large.push_back(ms);
  }
  Link link;
  link.rtt_ms = median(small);
  const double transfer_ms = std::max(median(large) - link.rtt_ms, 1e-3);
  link.mbps = static_cast<double>(payload.size()) * 8.0 / (transfer_ms * 1000.0);
  return link;
}

Time GrpcRemoteDevice::Impl::Now() const { return events_.now ? events_.now() : Time(Duration(SteadyNanos())); }

std::optional<std::string> GrpcRemoteDevice::Impl::HandleFor(const dispatch::Assignment& a) const {
  if (runners_ == nullptr) return std::nullopt;
  for (const runtime::PuSetup& pu : pus_) {
    if (const auto* r = dynamic_cast<const RemotePartition*>(runners_->Find(a.model, a.partition, pu.id))) {
      return r->handle();
    }
  }
  return std::nullopt;
}

absl::Status GrpcRemoteDevice::Impl::OpenStream(bool rejoin) {
  auto stream = std::make_shared<Stream>();
  AddAuth(stream->context);
  stream->rw = stub_->Execute(&stream->context);
  stream->last_heard_ns = SteadyNanos();
  {
    std::lock_guard lock(mu_);
    if (stopping_) return absl::CancelledError("stopping");
    stream_ = stream;
    // Counted with the stream in place: whoever sees reachable() sees it.
    if (rejoin) ++counters_.rejoined;
    // Posted under mu_, as Lose posts reachable(false): the runtime sees the
    // changes in the order the stream changed (a rejoin racing a loss must
    // not leave a healthy agent marked unreachable for good).
    if (rejoin) events_.reachable(true, "");
  }
  stream->reader = std::thread([this, stream] { ReaderLoop(stream); });
  stream->writer = std::thread([this, stream] { WriterLoop(stream); });
  return absl::OkStatus();
}

void GrpcRemoteDevice::Impl::Start(runtime::RemoteDeviceEvents events) {
  {
    std::lock_guard lock(mu_);
    if (started_) return;
    started_ = true;
    events_ = std::move(events);
  }
  {
    // Loads may have come long before (a deployment loading other devices):
    // the agent may have given them back meanwhile. If it does not answer,
    // the stream below fails and the supervisor rejoins.
    pb::HelloReply hello;
    std::lock_guard lock(load_mu_);
    if (!loads_.empty() && Hello(options_.connect_timeout, hello).ok()) (void)CatchUpLocked(hello);
  }
  if (!OpenStream(/*rejoin=*/false).ok()) return;
  supervisor_ = std::thread([this] { SupervisorLoop(); });
}

void GrpcRemoteDevice::Impl::Stop() {
  std::vector<std::shared_ptr<Stream>> streams;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    if (stream_) retired_.push_back(std::move(stream_));
    stream_.reset();
    streams.swap(retired_);
  }
  cv_.notify_all();
  for (auto& s : streams) {
    s->context.TryCancel();
    {
      std::lock_guard lock(s->mu);
      s->closed = true;
    }
    s->cv.notify_all();
  }
  if (supervisor_.joinable()) supervisor_.join();
  {
    std::lock_guard lock(mu_);  // the supervisor may have retired more
    for (auto& s : retired_) streams.push_back(std::move(s));
    retired_.clear();
  }
  for (auto& s : streams) {
    s->context.TryCancel();
    {
      std::lock_guard lock(s->mu);
      s->closed = true;
    }
    s->cv.notify_all();
    Reap(*s);
  }
}

void GrpcRemoteDevice::Impl::Reap(Stream& stream) {
  if (stream.reader.joinable()) stream.reader.join();
  if (stream.writer.joinable()) stream.writer.join();
  // Both threads are done with the call: collect its status so gRPC can free it.
  if (stream.rw && !stream.finished) {
    stream.finished = true;
    (void)stream.rw->Finish();
  }
}

void GrpcRemoteDevice::Impl::Submit(dispatch::Assignment assignment) {
  std::optional<std::string> handle = HandleFor(assignment);
  pb::ExecuteIn msg;
  std::vector<pb::Frame> frames;
  if (handle) {
    pb::Assignment* a = msg.mutable_assignment();
    a->set_id(assignment.id.value);
    a->set_handle(*handle);
    if (assignment.deadline) {
      a->set_has_deadline(true);
      a->set_deadline_budget_ns((*assignment.deadline - Now()).count());
    }
    a->set_priority(assignment.priority);
    if (assignment.exec_timeout) a->set_exec_timeout_ns(assignment.exec_timeout->count());
    if (assignment.fixed_pu) {
      for (size_t i = 0; i < pus_.size(); ++i) {
        if (pus_[i].id == *assignment.fixed_pu) {
          a->set_has_fixed_pu(true);
          a->set_fixed_pu(static_cast<int32_t>(i));
        }
      }
    }
    // Above the chunk size, the inputs are copied once, straight into the
    // frames (no whole message, no whole serialized copy first).
    const int64_t chunk = hello_.chunk_bytes > 0 ? hello_.chunk_bytes : kDefaultChunkBytes;
    TensorFrames framed(a->SerializeAsString(), pb::Assignment::kInputsFieldNumber, assignment.inputs, chunk);
    if (framed.total_bytes() > chunk) {
      while (!framed.done()) frames.push_back(framed.Next());
    } else {
      for (const auto& [name, tensor] : assignment.inputs) ToProto(name, tensor, a->add_inputs());
    }
  }
  std::shared_ptr<Stream> stream;
  {
    std::lock_guard lock(mu_);
    if (!stream_ || !handle) {
      // Lost, or nothing loaded here for it: hand it back (never from inside Submit).
      bounced_.push_back(std::move(assignment));
      cv_.notify_all();
      return;
    }
    stream = stream_;
    ++counters_.sent;
    in_flight_.emplace(assignment.id, Sent{std::move(assignment), SteadyNanos()});
  }
  {
    std::lock_guard lock(stream->mu);
    if (frames.empty()) {
      stream->outbox.push_back(std::move(msg));
    } else {
      for (pb::Frame& f : frames) {
        pb::ExecuteIn in;
        *in.mutable_frame() = std::move(f);
        stream->outbox.push_back(std::move(in));
      }
    }
  }
  stream->cv.notify_one();
}

void GrpcRemoteDevice::Impl::Cancel(std::span<const AssignmentId> ids) {
  // The agent takes at most this many ids per Cancel message.
  constexpr int kMaxIdsPerMessage = 65536;
  std::vector<pb::ExecuteIn> messages;
  std::shared_ptr<Stream> stream;
  {
    std::lock_guard lock(mu_);
    // Lost: what it held was handed back already, and a new stream knows none of it.
    if (!stream_) return;
    stream = stream_;
    for (AssignmentId id : ids) {
      // Answered already, or handed back: nothing to withdraw. The entry stays
      // until the agent answers (Cancelled, or its result if it finished first).
      if (!in_flight_.contains(id)) continue;
      if (messages.empty() || messages.back().cancel().ids_size() >= kMaxIdsPerMessage) messages.emplace_back();
      messages.back().mutable_cancel()->add_ids(id.value);
      ++counters_.cancels_sent;
    }
  }
  if (messages.empty()) return;
  {
    std::lock_guard lock(stream->mu);
    for (pb::ExecuteIn& m : messages) stream->outbox.push_back(std::move(m));
  }
  stream->cv.notify_one();
}

void GrpcRemoteDevice::Impl::WriterLoop(std::shared_ptr<Stream> stream) {
  NameThisThread("remote-writer");
  while (true) {
    pb::ExecuteIn msg;
    {
      std::unique_lock lock(stream->mu);
      stream->cv.wait(lock, [&] { return !stream->outbox.empty() || stream->closed; });
      if (stream->closed) return;
      msg = std::move(stream->outbox.front());
      stream->outbox.pop_front();
    }
    if (!stream->rw->Write(msg)) {
      Lose(stream, "the connection broke while sending");
      return;
    }
  }
}

void GrpcRemoteDevice::Impl::ReaderLoop(std::shared_ptr<Stream> stream) {
  NameThisThread("remote-reader");
  // The agent's say-so, within what one protobuf message can be (2 GiB): a
  // peer that claims more cannot make this side buffer without a bound.
  FrameReader frames(std::clamp<int64_t>(hello_.max_partition_bytes, kDefaultMaxPartitionBytes, (int64_t{2} << 30) - 1));
  pb::ExecuteOut out;
  // While a message is handled the agent is not silent: a completion of
  // hundreds of MB takes this side seconds to convert, and a slow completion
  // callback holds the reader too. Heard at the start and again at the end.
  struct Busy {
    explicit Busy(Stream& s) : stream(s) {
      stream.last_heard_ns = SteadyNanos();
      stream.reader_busy = true;
    }
    ~Busy() {
      stream.last_heard_ns = SteadyNanos();
      stream.reader_busy = false;
    }
    Stream& stream;
  };
  while (stream->rw->Read(&out)) {
    const Busy busy(*stream);
    pb::Completion c;
    if (out.has_pong()) continue;
    if (out.has_frame()) {
      absl::StatusOr<std::optional<std::string>> whole = frames.Add(out.frame());
      if (!whole.ok()) {
        Lose(stream, std::string(whole.status().message()));
        return;
      }
      if (!whole->has_value()) continue;
      if (!c.ParseFromString(**whole)) {
        Lose(stream, "the agent sent a completion that does not parse");
        return;
      }
    } else if (out.has_completion()) {
      c = std::move(*out.mutable_completion());
    } else {
      continue;
    }
    const Time now = Now();
    dispatch::Completion done;
    {
      std::lock_guard lock(mu_);
      auto it = stream_ == stream ? in_flight_.find(AssignmentId(c.id())) : in_flight_.end();
      if (it == in_flight_.end()) {
        ++counters_.late_dropped;
        continue;
      }
      done = CompletionFor(it->second.assignment, device_);
      in_flight_.erase(it);
      ++counters_.answered;
      done.end = now;
      done.start = now;
      if (c.ran() && c.pu() >= 0 && static_cast<size_t>(c.pu()) < pus_.size()) {
        const size_t u = static_cast<size_t>(c.pu());
        done.pu = pus_[u].id;
        // From the wire: at most the time since this clock's epoch (a run
        // cannot have started before), never negative, so nothing overflows.
        const int64_t run_ns = std::clamp<int64_t>(c.run_ns(), 0, now.time_since_epoch().count());
        done.start = now - Duration(run_ns);
        busy_[u] = Duration(SatAdd(busy_[u].count(), run_ns));
        ++runs_[u];
        if (c.code() != 0) ++failures_[u];
      }
    }
    if (c.code() != 0) {
      done.status = absl::Status(static_cast<absl::StatusCode>(c.code()),
                                 absl::StrCat("agent '", hello_.name, "': ", c.message()));
    } else {
      absl::StatusOr<dispatch::NamedTensors> outputs = FromProto(c.outputs());
      if (outputs.ok()) {
        done.outputs = std::move(*outputs);
      } else {
        done.status = absl::InternalError(absl::StrCat("agent '", hello_.name, "': ", outputs.status().message()));
      }
    }
    events_.completion(std::move(done));
  }
  Lose(stream, "the agent closed the connection");
}

void GrpcRemoteDevice::Impl::ExpireUnanswered() {
  const int64_t now_ns = SteadyNanos();
  const int64_t limit_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(options_.answer_timeout).count();
  std::vector<dispatch::Completion> expired;
  std::vector<AssignmentId> ids;
  {
    std::lock_guard lock(mu_);
    for (auto it = in_flight_.begin(); it != in_flight_.end();) {
      if (now_ns - it->second.at_ns <= limit_ns) {
        ++it;
        continue;
      }
      const dispatch::Assignment& a = it->second.assignment;
      dispatch::Completion c = CompletionFor(a, device_);
      c.start = c.end = Now();
      c.status = absl::DeadlineExceededError(absl::StrCat(
          "device '", options_.name, "': the agent at ", options_.address, " did not answer within ",
          options_.answer_timeout.count() / 1000.0, " s though it answers pings; it was withdrawn (check the agent's "
          "log; RemoteDeviceOptions::answer_timeout sets the limit)"));
      expired.push_back(std::move(c));
      ids.push_back(a.id);
      in_flight_.erase(it++);
      ++counters_.answered;
      ++counters_.expired;
    }
  }
  if (expired.empty()) return;
  // Withdrawn on the agent too; its answer, if one comes, is dropped as late.
  constexpr int kMaxIdsPerMessage = 65536;  // as Cancel: the agent's limit per message
  std::vector<pb::ExecuteIn> messages;
  for (AssignmentId id : ids) {
    if (messages.empty() || messages.back().cancel().ids_size() >= kMaxIdsPerMessage) messages.emplace_back();
    messages.back().mutable_cancel()->add_ids(id.value);
  }
  std::shared_ptr<Stream> stream;
  {
    std::lock_guard lock(mu_);
    stream = stream_;
  }
  if (stream) {
    {
      std::lock_guard lock(stream->mu);
      for (pb::ExecuteIn& m : messages) stream->outbox.push_back(std::move(m));
    }
    stream->cv.notify_one();
  }
  for (dispatch::Completion& c : expired) events_.completion(std::move(c));
}

void GrpcRemoteDevice::Impl::Lose(const std::shared_ptr<Stream>& stream, const std::string& why) {
  std::vector<dispatch::Assignment> back;
  {
    std::lock_guard lock(mu_);
    if (stream_ != stream || stopping_) return;
    stream_.reset();
    retired_.push_back(stream);
    back.reserve(in_flight_.size());
    for (auto& [id, sent] : in_flight_) back.push_back(std::move(sent.assignment));
    in_flight_.clear();
    ++counters_.lost;
    counters_.returned += back.size();
    // Under mu_, before the supervisor can rejoin (see OpenStream).
    events_.reachable(false, absl::StrCat("agent at ", options_.address, ": ", why));
  }
  stream->context.TryCancel();
  {
    std::lock_guard lock(stream->mu);
    stream->closed = true;
  }
  stream->cv.notify_all();
  cv_.notify_all();
  Deliver(std::move(back));
}

void GrpcRemoteDevice::Impl::Deliver(std::vector<dispatch::Assignment> returned) {
  if (returned.empty()) return;
  // Oldest first, so the HL re-issues in the order it sent.
  std::sort(returned.begin(), returned.end(),
            [](const dispatch::Assignment& a, const dispatch::Assignment& b) { return a.id.value < b.id.value; });
  events_.returned(std::move(returned));
}

void GrpcRemoteDevice::Impl::SimulateLoss(const std::string& why) {
  std::shared_ptr<Stream> s;
  {
    std::lock_guard lock(mu_);
    s = stream_;
  }
  if (s) Lose(s, why);
}

void GrpcRemoteDevice::Impl::SupervisorLoop() {
  NameThisThread("remote-watch");
  auto last_try = std::chrono::steady_clock::now() - options_.reconnect_every;
  while (true) {
    std::shared_ptr<Stream> stream;
    std::vector<dispatch::Assignment> bounced;
    std::vector<std::shared_ptr<Stream>> reap;
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, options_.heartbeat, [&] { return stopping_ || !bounced_.empty(); });
      if (stopping_) return;
      stream = stream_;
      bounced.swap(bounced_);
      for (auto it = retired_.begin(); it != retired_.end();) {
        reap.push_back(std::move(*it));
        it = retired_.erase(it);
      }
    }
    for (auto& s : reap) Reap(*s);  // threads of lost streams end once cancelled
    Deliver(std::move(bounced));
    ExpireUnanswered();
    if (stream) {
      const int64_t silent_ns = stream->reader_busy.load() ? 0 : SteadyNanos() - stream->last_heard_ns.load();
      if (silent_ns > std::chrono::duration_cast<std::chrono::nanoseconds>(options_.lost_after).count()) {
        Lose(stream, absl::StrCat("no answer for ", silent_ns / 1000000, " ms (heartbeat every ",
                                  options_.heartbeat.count(), " ms)"));
        continue;
      }
      pb::ExecuteIn ping;
      ping.mutable_ping()->set_seq(++ping_seq_);
      {
        std::lock_guard lock(stream->mu);
        stream->outbox.push_back(std::move(ping));
      }
      stream->cv.notify_one();
      continue;
    }
    // Lost: try to rejoin.
    const auto now = std::chrono::steady_clock::now();
    if (now - last_try < options_.reconnect_every) continue;
    last_try = now;
    pb::HelloReply hello;
    if (!Hello(std::chrono::milliseconds(1000), hello).ok()) continue;
    bool reloaded = true;
    {
      std::lock_guard lock(load_mu_);
      reloaded = CatchUpLocked(hello);
    }
    if (!reloaded || !OpenStream(/*rejoin=*/true).ok()) continue;
  }
}

std::vector<runtime::PuStats> GrpcRemoteDevice::Impl::pu_stats() const {
  std::vector<runtime::PuStats> out;
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < pus_.size() && i < busy_.size(); ++i) {
    out.push_back(runtime::PuStats{pus_[i].id, device_, pus_[i].name, pus_[i].kind, busy_[i], runs_[i],
                                   failures_[i]});
  }
  return out;
}

void GrpcRemoteDevice::Impl::ResetStats() {
  std::lock_guard lock(mu_);
  std::fill(busy_.begin(), busy_.end(), Duration(0));
  std::fill(runs_.begin(), runs_.end(), 0);
  std::fill(failures_.begin(), failures_.end(), 0);
}

bool GrpcRemoteDevice::Impl::reachable() const {
  std::lock_guard lock(mu_);
  return stream_ != nullptr;
}

RemoteDeviceCounters GrpcRemoteDevice::Impl::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

GrpcRemoteDevice::GrpcRemoteDevice(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::shared_ptr<GrpcRemoteDevice>> GrpcRemoteDevice::Connect(RemoteDeviceOptions options) {
  BATON_ASSIGN_OR_RETURN(std::unique_ptr<Impl> impl, Impl::Connect(std::move(options)));
  return std::shared_ptr<GrpcRemoteDevice>(new GrpcRemoteDevice(std::move(impl)));
}

GrpcRemoteDevice::~GrpcRemoteDevice() {
  impl_->Stop();
  // Nobody can run these partitions any more: give them back to the agent,
  // so its memory budget does not fill with every run that used it.
  impl_->UnloadAll(std::chrono::milliseconds(3000));
}

const AgentHello& GrpcRemoteDevice::hello() const { return impl_->hello(); }
const std::string& GrpcRemoteDevice::name() const { return impl_->name(); }
void GrpcRemoteDevice::Bind(DeviceId device, std::vector<runtime::PuSetup> pus, const runtime::RunnerTable* runners) {
  impl_->Bind(device, std::move(pus), runners);
}
absl::StatusOr<GrpcRemoteDevice::Loaded> GrpcRemoteDevice::Load(const std::string& partition_name,
                                                                const std::string& bytes) {
  return impl_->Load(partition_name, bytes);
}
absl::StatusOr<GrpcRemoteDevice::Link> GrpcRemoteDevice::MeasureLink(int64_t probe_bytes) {
  return impl_->MeasureLink(probe_bytes);
}
void GrpcRemoteDevice::Submit(dispatch::Assignment assignment) { impl_->Submit(std::move(assignment)); }
void GrpcRemoteDevice::Cancel(std::span<const AssignmentId> ids) { impl_->Cancel(ids); }
void GrpcRemoteDevice::Start(runtime::RemoteDeviceEvents events) { impl_->Start(std::move(events)); }
void GrpcRemoteDevice::Stop() { impl_->Stop(); }
std::vector<runtime::PuStats> GrpcRemoteDevice::pu_stats() const { return impl_->pu_stats(); }
void GrpcRemoteDevice::ResetStats() { impl_->ResetStats(); }
bool GrpcRemoteDevice::reachable() const { return impl_->reachable(); }
RemoteDeviceCounters GrpcRemoteDevice::counters() const { return impl_->counters(); }
void GrpcRemoteDevice::SimulateLoss(const std::string& why) { impl_->SimulateLoss(why); }

RemoteExecutor::RemoteExecutor(std::shared_ptr<GrpcRemoteDevice> device, int pu_index, std::string pu_name,
                               std::string kind, const backend::Executor* capability)
    : device_(std::move(device)),
      pu_index_(pu_index),
      pu_name_(std::move(pu_name)),
      kind_(std::move(kind)),
      capability_(capability) {}

std::vector<bool> RemoteExecutor::QueryCapability(const graph::Model& model) const {
  return capability_->QueryCapability(model);
}

absl::StatusOr<std::unique_ptr<backend::PreparedPartition>> RemoteExecutor::Prepare(
    const graph::Model& model, const graph::Submodel& partition) const {
  BATON_RETURN_IF_ERROR(backend::CheckCapable(model, partition, QueryCapability(model), pu_name_));
  BATON_ASSIGN_OR_RETURN(
      GrpcRemoteDevice::Loaded loaded,
      device_->Load(absl::StrCat(model.display_name(), " (", partition.nodes.size(), " nodes)"), partition.onnx_bytes));
  if (std::find(loaded.capable_pus.begin(), loaded.capable_pus.end(), pu_index_) == loaded.capable_pus.end()) {
    return absl::FailedPreconditionError(absl::StrCat("PU '", pu_name_, "' of device '", device_->name(),
                                                      "': the agent says this PU cannot run the partition"));
  }
  return std::make_unique<RemotePartition>(loaded.handle);
}

absl::StatusOr<backend::RunResult> RemotePartition::Run(std::span<const std::pair<std::string, const Tensor*>>, RunCancel*) const {
  return absl::FailedPreconditionError(
      "a remote partition runs on its agent, not in this process (a runtime bug sent it to a local PU)");
}

}  // namespace baton::net
