#include "baton/serve/http_server.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "baton/core/process.h"
#include "baton/core/version.h"
#include "baton/serve/auth.h"
#include "baton/serve/connection_watch.h"
#include "baton/serve/http_connection.h"
#include "baton/serve/kserve_json.h"
#include "baton/serve/metrics.h"
#include "baton/serve/shared_memory.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace baton::serve {

namespace {

using nlohmann::json;

constexpr size_t kMaxElements = size_t{1} << 28;  // per tensor, over JSON
// How often a waiting inference request looks whether its client is still there.
constexpr std::chrono::milliseconds kWatchEvery{100};

void Reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  // Strings from a model (BYTES outputs) may not be valid UTF-8: replace, never throw.
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void Error(httplib::Response& res, int status, const std::string& message) { Reply(res, status, {{"error", message}}); }

}  // namespace

HttpServer::HttpServer(std::unique_ptr<ServedEngine> owned, ServedEngine& served, HttpOptions options)
    : owned_(std::move(owned)), served_(served), options_(std::move(options)) {}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(Engine& engine, HttpOptions options) {
  auto served = std::make_unique<ServedEngine>(engine);
  ServedEngine& s = *served;
  return Start(s, std::move(options), std::move(served));
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(ServedEngine& served, HttpOptions options) {
  return Start(served, std::move(options), nullptr);
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(ServedEngine& served, HttpOptions options,
                                                              std::unique_ptr<ServedEngine> owned) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--http: port ", options.port, " is not in 0..65535"));
  }
  if (options.threads < 1 || options.threads > 256) {
    return absl::InvalidArgumentError(absl::StrCat("--threads must be in 1..256, got ", options.threads));
  }
  if (options.max_waiting_connections < 1 || options.max_waiting_connections > 65536) {
    return absl::InvalidArgumentError(absl::StrCat("HTTP max_waiting_connections must be in 1..65536, got ",
                                                   options.max_waiting_connections));
  }
  if (options.max_idle_connections < 0 || options.max_idle_connections > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-idle-connections must be in 0..65536, got ", options.max_idle_connections));
  }
  if (options.max_waiting_infer < 0 || options.max_waiting_infer > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-waiting-infer must be in 0..4096, got ", options.max_waiting_infer));
  }
  if (options.stop_grace < std::chrono::seconds(0) || options.stop_grace > std::chrono::hours(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP stop_grace must be 0 s..1 h, got ", options.stop_grace.count(), " s"));
  }
  if (options.max_request_bytes < 1024) {
    return absl::InvalidArgumentError("--max-request-mb must allow at least 1 KiB");
  }
  const auto in_seconds = [](std::chrono::seconds t, int64_t from, int64_t to) {
    return t.count() >= from && t.count() <= to;
  };
  if (!in_seconds(options.read_timeout, 1, 3600) || !in_seconds(options.write_timeout, 1, 3600)) {
    return absl::InvalidArgumentError(absl::StrCat("--timeout-s must be in 1..3600, got ", options.read_timeout.count(),
                                                   " and ", options.write_timeout.count()));
  }
  if (!in_seconds(options.request_timeout, 1, 86400)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--request-timeout-s must be in 1..86400, got ", options.request_timeout.count()));
  }
  if (!in_seconds(options.keep_alive, 1, 3600)) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP keep_alive must be 1..3600 s, got ", options.keep_alive.count()));
  }
  if (options.max_head_bytes < 1024 || options.max_head_bytes > (size_t{16} << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP max_head_bytes must be 1 KiB..16 MiB, got ", options.max_head_bytes));
  }
  BATON_RETURN_IF_ERROR(CheckExposure("HTTP", options.host, options.tls_cert, options.tls_key, options.token));
  std::unique_ptr<HttpServer> s(new HttpServer(std::move(owned), served, std::move(options)));
  const HttpOptions& o = s->options_;
  HttpServer* self = s.get();
  HttpWorkers workers;
  workers.threads = o.threads;
  workers.max_waiting = o.max_waiting_connections;
  workers.max_idle = o.max_idle_connections;
  workers.max_lent = o.max_waiting_infer;
  workers.stop_grace = o.stop_grace;
  workers.stuck = [self] { self->connections_shut_ = ShutdownTcpConnections(self->port_); };
  BATON_ASSIGN_OR_RETURN(s->server_,
                         NewBoundedHttpServer(s->Limits(), workers, o.tls_cert, o.tls_key, [self](RequestCut cut) {
                           switch (cut) {
                             case RequestCut::kIdle:
                               ++self->cut_idle_;
                               break;
                             case RequestCut::kDeadline:
                               ++self->cut_deadline_;
                               break;
                             case RequestCut::kHeadTooLarge:
                               ++self->cut_head_;
                               break;
                             case RequestCut::kNone:
                               break;
                           }
                         }));
  httplib::Server& srv = *s->server_;
  srv.set_payload_max_length(o.max_request_bytes);
  srv.set_keep_alive_max_count(1000);
  // Answers are small writes: without this, Nagle's algorithm and the
  // client's delayed ACK add tens of milliseconds to each request.
  srv.set_tcp_nodelay(true);
  s->Route();
  const int port = o.port == 0 ? srv.bind_to_any_port(o.host) : (srv.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port < 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", o.host, ":", o.port,
                                               " (in use, or not an address of this machine); pick another with --http"));
  }
  s->port_ = port;
  httplib::Server* raw = s->server_.get();
  s->thread_ = std::thread([raw] {
    NameThisThread("http");
    raw->listen_after_bind();
  });
  return s;
}

void HttpServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

HttpStats HttpServer::http_stats() const {
  HttpStats counts;
  counts.cut_idle = cut_idle_;
  counts.cut_deadline = cut_deadline_;
  counts.cut_head_too_large = cut_head_;
  counts.idle_connections = server_ ? IdleConnections(*server_) : 0;
  return counts;
}

HttpLimits HttpServer::Limits() const {
  HttpLimits limits;
  limits.io_timeout = std::min(options_.read_timeout, options_.write_timeout);
  limits.request_timeout = options_.request_timeout;
  limits.min_bytes_per_s = options_.min_bytes_per_s;
  limits.max_head_bytes = options_.max_head_bytes;
  limits.keep_alive = options_.keep_alive;
  return limits;
}

void HttpServer::Route() {
  httplib::Server& srv = *server_;
  const bool loopback = IsLoopbackLiteral(options_.host);
  // Checks before the body is read: the Content-Encoding, and the token
  // (health and metrics stay open on loopback). A request refused here leaves
  // its body unread on the connection, so the answer closes the connection.
  srv.set_pre_routing_handler([this, loopback](const httplib::Request& req, httplib::Response& res) {
    HeadReceived();  // what follows is the body
    auto refuse = [&](int status, const std::string& message) {
      res.set_header("Connection", "close");
      Error(res, status, message);
      return httplib::Server::HandlerResponse::Handled;
    };
    // A compressed body (Triton's clients send one with
    // request_compression_algorithm) is inflated piece by piece into the
    // routes that read their own bodies, every POST route, where
    // --max-request-mb bounds the inflated bytes (read_body below). httplib
    // would inflate any other body whole before any check, so one small
    // compressed body could take all the memory there is: those, and
    // encodings httplib does not inflate, are refused.
    const std::string encoding = req.get_header_value("Content-Encoding");
    if (!encoding.empty() && !absl::EqualsIgnoreCase(encoding, "identity") &&
        (req.method != "POST" || (encoding != "gzip" && encoding != "deflate" && encoding != "br"))) {
      return refuse(415, absl::StrCat("Content-Encoding '", encoding.substr(0, 64), "' is not accepted",
                                      req.method == "POST" ? ": send gzip, deflate or br, or no Content-Encoding"
                                                           : absl::StrCat(" on a ", req.method.substr(0, 16),
                                                                          ": send the body uncompressed"),
                                      " (answers are compressed for a client that sends Accept-Encoding)"));
    }
    if (options_.token.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const bool open = loopback && (req.path.rfind("/v2/health/", 0) == 0 || req.path == "/metrics");
    if (open) return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    if (!BearerTokenMatches(auth, options_.token)) {
      return refuse(401, "missing or wrong token: send 'Authorization: Bearer <token>'");
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  srv.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    Error(res, 500, absl::StrCat("internal error: ", what));
  });
  srv.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (const RequestCut cut = CurrentCut(); cut != RequestCut::kNone && res.status == 400) {
      // The library could not read the headers: they came too slowly, or too many.
      res.set_header("Connection", "close");
      Error(res, StatusOfCut(cut), MessageOfCut(cut, Limits()));
      return;
    }
    if (!res.body.empty()) return;  // a handler already answered
    if (res.status == 413) {
      Error(res, 413, "request body too large; raise --max-request-mb or send less (outside /infer, a body sent as "
                      "form data, Content-Type application/x-www-form-urlencoded, may have 8 KiB)");
    } else if (res.status == 404) {
      Error(res, 404, absl::StrCat("no endpoint ", req.method, " ", req.path, " (KServe v2: /v2/...)"));
    } else if (res.status == 400) {
      Error(res, 400, "malformed request: its line, headers or chunked body could not be parsed");
    }
  });

  srv.Get("/v2/health/live", [](const httplib::Request&, httplib::Response& res) { Reply(res, 200, {{"live", true}}); });
  srv.Get("/v2/health/ready",
          [](const httplib::Request&, httplib::Response& res) { Reply(res, 200, {{"ready", true}}); });
  const std::shared_ptr<SharedMemoryRegistry> shm = options_.shared_memory;
  srv.Get("/v2", [shm](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, {{"name", "baton"},
                     {"version", kVersion},
                     {"extensions", shm ? json::array({"binary_tensor_data", "classification", "statistics",
                                                       "system_shared_memory"})
                                        : json::array({"binary_tensor_data", "classification", "statistics"})}});
  });
  srv.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    const HttpStats cuts = http_stats();
    res.set_content(PrometheusText(served_.Stats(), options_.shared_memory.get(), &cuts),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  // The model a /v2/models/{m}[/versions/{v}]/... path names, with the
  // engine serving it (ServedEngine::Find), or nullopt after answering 400.
  auto model_of = [this](const httplib::Request& req,
                         httplib::Response& res) -> std::optional<ServedEngine::Model> {
    const std::string version = req.matches.size() > 2 ? req.matches[2].str() : "";
    absl::StatusOr<ServedEngine::Model> m = served_.Find(req.matches[1], version);
    if (!m.ok()) {
      Error(res, 400, std::string(m.status().message()));
      return std::nullopt;
    }
    return *std::move(m);
  };
  // Each model path also takes Triton's versioned form, /v2/models/{m}/versions/{v}/...
  const std::string model_path = R"(/v2/models/([^/]+)(?:/versions/([^/]+))?)";
  // The statistics extension; before the metadata route, which would take "stats" for a model's name.
  srv.Get("/v2/models/stats", [this](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, StatisticsJson(KServeStatistics(served_.Stats())));
  });
  srv.Get(model_path + "/stats", [this, model_of](const httplib::Request& req, httplib::Response& res) {
    if (const std::optional<ServedEngine::Model> m = model_of(req, res)) {
      Reply(res, 200, StatisticsJson(KServeStatistics(served_.Stats(), m->info->name)));
    }
  });
  srv.Get(model_path, [model_of](const httplib::Request& req, httplib::Response& res) {
    if (const std::optional<ServedEngine::Model> m = model_of(req, res)) Reply(res, 200, ModelMetadataJson(*m->info));
  });
  srv.Get(model_path + "/config", [model_of](const httplib::Request& req, httplib::Response& res) {
    if (const std::optional<ServedEngine::Model> m = model_of(req, res)) Reply(res, 200, ModelConfigJson(*m->info));
  });
  srv.Get(model_path + "/ready", [this](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    const std::string version = req.matches.size() > 2 ? req.matches[2].str() : "";
    absl::StatusOr<ServedEngine::Model> m = served_.Find(name, version);
    if (m.ok()) {
      Reply(res, 200, {{"name", m->info->name}, {"ready", true}});
    } else if (served_.explicit_control() && served_.Configured(name) && (version.empty() || version == "1")) {
      Reply(res, 200, {{"name", name}, {"ready", false}});  // a model of the config, not loaded now
    } else {
      Error(res, 400, std::string(m.status().message()));
    }
  });
  // A POST's body, read by the route itself (routes given a ContentReader),
  // bounded by --max-request-mb; "" when the request has neither a
  // Content-Length nor a chunked body (what `curl -X POST` sends, which
  // httplib would refuse with an empty 400). nullopt after answering 413 or 400.
  auto read_body = [this](const httplib::Request& req, httplib::Response& res,
                          const httplib::ContentReader& content_reader) -> std::optional<std::string> {
    if (!req.has_header("Content-Length") &&
        !absl::StrContains(absl::AsciiStrToLower(req.get_header_value("Transfer-Encoding")), "chunked")) {
      return std::string();
    }
    std::string body;
    bool too_large = false;
    const bool read = content_reader([&](const char* data, size_t n) {
      too_large = n > options_.max_request_bytes - std::min(body.size(), options_.max_request_bytes);
      if (!too_large) body.append(data, n);
      return !too_large;
    });
    if (!read || too_large) {
      res.set_header("Connection", "close");  // what is left of the body stays unread
      if (const RequestCut cut = CurrentCut(); cut != RequestCut::kNone) {
        Error(res, StatusOfCut(cut), MessageOfCut(cut, Limits()));
      } else if (too_large || res.status == 413) {
        Error(res, 413,
              req.has_header("Content-Encoding")
                  ? "request body too large once inflated (Content-Encoding); raise --max-request-mb or send less"
                  : "request body too large; raise --max-request-mb or send less");
      } else if (req.has_header("Content-Encoding")) {
        Error(res, 400,
              absl::StrCat("the request body could not be read or inflated: it is not valid '",
                           req.get_header_value("Content-Encoding").substr(0, 16),
                           "' data, or the client stopped sending, or sent a malformed chunk"));
      } else {
        Error(res, 400, "the request body could not be read (the client stopped sending, or sent a malformed chunk)");
      }
      return std::nullopt;
    }
    return body;
  };
  // The model repository extension, read-only (kserve_json.h), on Triton's
  // paths with or without a repository name. `repository_body`: the JSON
  // object a request's body holds ({} when empty), or nullopt after answering.
  auto repository_body = [read_body](const httplib::Request& req, httplib::Response& res,
                                     const httplib::ContentReader& content_reader) -> std::optional<json> {
    const std::optional<std::string> text = read_body(req, res, content_reader);
    if (!text) return std::nullopt;
    if (text->empty()) return json::object();
    absl::StatusOr<json> doc = ParseJsonBody(*text, "the body");
    if (!doc.ok() || !doc->is_object()) {
      Error(res, 400, doc.ok() ? "the body must be a JSON object" : std::string(doc.status().message()));
      return std::nullopt;
    }
    return *doc;
  };
  auto reply_status = [](httplib::Response& res, const absl::Status& st) {
    if (st.ok()) {
      Reply(res, 200, json::object());
    } else {
      Error(res, HttpStatusOf(static_cast<StatusCode>(static_cast<int>(st.code()))), std::string(st.message()));
    }
  };
  srv.Post(R"(/v2/repository(?:/([^/]+))?/index)",
           [this, repository_body](const httplib::Request& req, httplib::Response& res,
                                   const httplib::ContentReader& content_reader) {
             // {"ready": true}: only the models loaded now.
             const std::optional<json> body = repository_body(req, res, content_reader);
             if (!body) return;
             const auto ready = body->find("ready");
             const bool ready_only = ready != body->end() && ready->is_boolean() && ready->get<bool>();
             absl::StatusOr<std::vector<RepositoryModel>> index =
                 RepositoryIndex(served_, req.matches[1].str(), ready_only);
             if (!index.ok()) {
               Error(res, HttpStatusOf(static_cast<StatusCode>(static_cast<int>(index.status().code()))),
                     std::string(index.status().message()));
               return;
             }
             Reply(res, 200, RepositoryIndexJson(*index));
           });
  srv.Post(R"(/v2/repository(?:/([^/]+))?/models/([^/]+)/load)",
           [this, repository_body, reply_status](const httplib::Request& req, httplib::Response& res,
                                                 const httplib::ContentReader& content_reader) {
             const std::optional<json> body = repository_body(req, res, content_reader);
             if (!body) return;
             const auto params = body->find("parameters");
             const bool with_parameters = params != body->end() && !(params->is_object() && params->empty());
             // Waits while a new engine opens (seconds): this worker's place
             // is lent meanwhile, as for a request waiting for the engine.
             absl::Status st = CheckRepositoryLoad(req.matches[1].str(), req.matches[2], with_parameters);
             if (st.ok()) {
               const EngineWait lend;
               st = served_.LoadAndWait(req.matches[2]);
             }
             reply_status(res, st);
           });
  srv.Post(R"(/v2/repository(?:/([^/]+))?/models/([^/]+)/unload)",
           [this, repository_body, reply_status](const httplib::Request& req, httplib::Response& res,
                                                 const httplib::ContentReader& content_reader) {
             if (!repository_body(req, res, content_reader)) return;
             absl::Status st = CheckRepository(req.matches[1].str());
             if (st.ok()) {
               const EngineWait lend;
               st = served_.UnloadAndWait(req.matches[2]);
             }
             reply_status(res, st);
           });
  // The body is read here, not by httplib: httplib caps a body whose
  // Content-Type is form data (what `curl -d` sends unless told otherwise) at
  // 8 KiB and answers 413, which no --max-request-mb could fix.
  srv.Post(model_path + "/infer", [this, model_of, read_body](const httplib::Request& req, httplib::Response& res,
                                                             const httplib::ContentReader& content_reader) {
    std::optional<std::string> request_body = read_body(req, res, content_reader);
    if (!request_body) return;
    const std::optional<ServedEngine::Model> model = model_of(req, res);
    if (!model) return;
    const ModelInfo* m = model->info;  // held with model->engine until answered
    // The binary tensor data extension. get_header_value returns a copy: keep it alive.
    const std::string header_value = req.get_header_value("Inference-Header-Content-Length");
    std::optional<std::string_view> header_length;
    if (req.has_header("Inference-Header-Content-Length")) header_length = header_value;
    absl::StatusOr<ParsedRequest> parsed =
        ParseInferRequest(*request_body, *m, kMaxElements, options_.shared_memory.get(), header_length);
    if (!parsed.ok()) {
      Error(res, 400, std::string(parsed.status().message()));
      return;
    }
    request_body.reset();  // parsed: the request owns its inputs
    // A fast model's request may run on this thread (as over gRPC); any other
    // is waited for while the client is watched: one that gives up (closes or
    // resets the connection) cancels its request. Meanwhile a helper thread
    // may take this worker's place (EngineWait, --max-waiting-infer).
    InferOptions options = parsed->options;
    auto cancel = std::make_shared<CancelToken>();
    options.cancel = cancel;
    options.run_here_up_to = options_.run_here_up_to;
    std::future<Result<Tensors>> answer = model->engine->InferAsync(m->name, std::move(parsed->inputs), options);
    if (answer.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      const EngineWait lend;
      ConnectionWatch watch(CurrentSocket());
      while (answer.wait_for(kWatchEvery) != std::future_status::ready) {
        if (!cancel->cancelled() && watch.PeerGone()) cancel->Cancel();
      }
    }
    Result<Tensors> out = answer.get();
    if (!out.ok()) {
      Error(res, HttpStatusOf(out.status().code()), out.status().message());
      return;
    }
    absl::StatusOr<InferResponseBody> body = InferResponseBodyOf(*m, *parsed, *out);
    if (!body.ok()) {
      // The client's own doing is 400: a shared memory region too small, or a
      // classification of an output whose rank was open and turned out unfit.
      const auto code = static_cast<StatusCode>(static_cast<int>(body.status().code()));
      const bool clients = !parsed->shm_outputs.empty() || code == StatusCode::kInvalidArgument;
      Error(res, clients ? HttpStatusOf(code) : 500, std::string(body.status().message()));
      return;
    }
    res.status = 200;
    if (body->binary) res.set_header("Inference-Header-Content-Length", std::to_string(body->json_length));
    res.set_header("Content-Type", body->binary ? "application/octet-stream" : "application/json");
    res.body = std::move(body->body);  // what set_content does, without copying the outputs' bytes
  });
  // The system shared memory extension; 400 while it is off.
  auto shm_call = [this](httplib::Response& res, const std::function<absl::Status(SharedMemoryRegistry&)>& body) {
    if (!options_.shared_memory) {
      Error(res, 400, kSharedMemoryOff);
      return;
    }
    if (absl::Status st = body(*options_.shared_memory); !st.ok()) {
      Error(res, st.code() == absl::StatusCode::kResourceExhausted ? 429 : 400, std::string(st.message()));
      return;
    }
    if (res.body.empty()) Reply(res, 200, json::object());
  };
  auto shm_status = [shm_call](const std::string& name, httplib::Response& res) {
    shm_call(res, [&](SharedMemoryRegistry& registry) -> absl::Status {
      BATON_ASSIGN_OR_RETURN(std::vector<SharedMemoryRegionInfo> regions, registry.Status(name));
      json out = json::array();
      for (const SharedMemoryRegionInfo& r : regions) {
        out.push_back({{"name", r.name}, {"key", r.key}, {"offset", r.offset}, {"byte_size", r.byte_size}});
      }
      Reply(res, 200, out);
      return absl::OkStatus();
    });
  };
  srv.Get("/v2/systemsharedmemory/status",
          [shm_status](const httplib::Request&, httplib::Response& res) { shm_status("", res); });
  srv.Get(R"(/v2/systemsharedmemory/region/([^/]+)/status)",
          [shm_status](const httplib::Request& req, httplib::Response& res) { shm_status(req.matches[1], res); });
  srv.Post(R"(/v2/systemsharedmemory/region/([^/]+)/register)",
           [shm_call, read_body](const httplib::Request& req, httplib::Response& res,
                                 const httplib::ContentReader& content_reader) {
             const std::optional<std::string> body = read_body(req, res, content_reader);
             if (!body) return;
             const std::string name = req.matches[1];
             shm_call(res, [&](SharedMemoryRegistry& registry) -> absl::Status {
               const json doc = ParseJsonBody(*body, "the body").value_or(json());  // not an object: refused below
               auto field = [&](const char* key) { return doc.is_object() ? doc.find(key) : doc.end(); };
               const auto key = field("key"), offset = field("offset"), size = field("byte_size");
               auto count = [&](const json::const_iterator& it) {
                 return it->is_number_unsigned() || (it->is_number_integer() && it->get<int64_t>() >= 0);
               };
               if (!doc.is_object() || key == doc.end() || !key->is_string() || size == doc.end() || !count(size) ||
                   (offset != doc.end() && !count(offset))) {
                 return absl::InvalidArgumentError(absl::StrCat(
                     "registering shared memory region '", name,
                     "' needs a JSON body {\"key\": string, \"offset\": integer >= 0, \"byte_size\": integer >= 1}"));
               }
               const uint64_t at = offset == doc.end() ? 0 : offset->get<uint64_t>();
               return registry.Register(name, key->get<std::string>(), at, size->get<uint64_t>());
             });
           });
  // Bodiless POSTs (`curl -X POST`) are welcome here: the body, if any, is read and ignored.
  srv.Post("/v2/systemsharedmemory/unregister",
           [shm_call, read_body](const httplib::Request& req, httplib::Response& res,
                                 const httplib::ContentReader& content_reader) {
             if (!read_body(req, res, content_reader)) return;
             shm_call(res, [](SharedMemoryRegistry& registry) { return registry.Unregister(""); });
           });
  srv.Post(R"(/v2/systemsharedmemory/region/([^/]+)/unregister)",
           [shm_call, read_body](const httplib::Request& req, httplib::Response& res,
                                 const httplib::ContentReader& content_reader) {
             if (!read_body(req, res, content_reader)) return;
             const std::string name = req.matches[1];
             shm_call(res, [&](SharedMemoryRegistry& registry) { return registry.Unregister(name); });
           });
  // Requests with a body to any other path, answered before their body is
  // read: the library would otherwise read a body without a Content-Length
  // until the client closes (HTTP/1.1 gives such a request none).
  const auto no_endpoint = [](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader&) {
    res.set_header("Connection", "close");  // its body, if any, stays unread
    Error(res, 404, absl::StrCat("no endpoint ", req.method, " ", req.path, " (KServe v2: /v2/...)"));
  };
  srv.Post(".*", no_endpoint);
  srv.Put(".*", no_endpoint);
  srv.Patch(".*", no_endpoint);
  srv.Delete(".*", no_endpoint);
}

}  // namespace baton::serve
