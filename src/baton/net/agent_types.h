// Plain types of the agent protocol that callers outside net/ need: security
// options, limits, and what an agent says about itself (Hello). No gRPC or
// protobuf header is included here or in the other public headers of net/
// (agent_server.h, remote_device.h); codec.h, security.h and the generated
// protocol stay inside this folder (and its tests).
//
// Thread-safety: value types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace baton::net {

// Default limits (both ends set them explicitly on the channel / server).
inline constexpr int64_t kDefaultChunkBytes = 1 << 20;  // 1 MiB per stream message
// The outputs one completion can carry: one serialized protobuf message (at
// most 2 GiB), less room for its other fields.
inline constexpr size_t kMaxAnswerBytes = (size_t{2} << 30) - (size_t{64} << 20);
inline constexpr int kMaxGrpcMessageBytes = 8 << 20;    // > chunk + headers
inline constexpr int64_t kDefaultMaxPartitionBytes = 512 << 20;
// A Load the agent refused only because it is already taking as many as it
// takes at once (RESOURCE_EXHAUSTED) carries this trailing metadata: the
// milliseconds after which to try again. Clients retry such a refusal within
// their load budget; every other refusal is final.
inline constexpr char kLoadRetryAfterMsKey[] = "baton-load-retry-after-ms";
inline constexpr int kLoadRetryAfterMs = 100;

struct ServerSecurityOptions {
  std::string tls_cert_file;   // PEM server certificate chain ("" = plaintext)
  std::string tls_key_file;    // PEM private key
  std::string client_ca_file;  // PEM CA: when set, clients must present a certificate it signed
  std::string token_file;      // bearer token ("" = none)
};

struct ClientSecurityOptions {
  std::string ca_cert_file;      // PEM CA that signed the agent's certificate ("" = plaintext)
  std::string client_cert_file;  // PEM client certificate (for agents that require one)
  std::string client_key_file;
  std::string token_file;        // bearer token
  std::string server_name;       // TLS name to check instead of the address's host ("" = host)
};

// One PU of an agent as Hello describes it (the HL side cuts models for it).
struct AgentPuInfo {
  std::string name;
  std::string kind;  // "cpu" | "emu"
  int threads = 0;   // cpu
  double speed = 0;  // emu: the settings of backend/emu
  std::map<std::string, double> op_speed = {};
  std::vector<std::string> unsupported_ops = {};
  bool compute = false;
};

// What an agent says in Hello.
struct AgentHello {
  std::string name;
  std::string version;
  std::vector<AgentPuInfo> pus;
  int64_t max_partition_bytes = 0;
  int64_t chunk_bytes = 0;  // messages above this travel as Frames
  std::string instance;     // changes when the agent restarts (its cache is then empty)
  int64_t load_timeout_ms = 0;  // the agent's --load-timeout-s (0: an older agent that does not say)
};


}  // namespace baton::net
