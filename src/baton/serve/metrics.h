// Prometheus text exposition (format 0.0.4) of an engine's stats, for
// `baton serve`'s GET /metrics. Names follow Prometheus conventions
// (`baton_` prefix, `_total` counters, seconds), modelled on Triton's:
//
//   baton_inference_requests_total{model,status}   counter: success, failed, rejected,
//                                                  deadline_exceeded, cancelled, invalid
//   baton_inference_slo_met_total{model}            counter: answered within the model's SLO
//   baton_inference_slo_requests_total{model}       counter: answered requests that had an SLO
//   baton_inference_request_duration_seconds{model} histogram of completed requests' latency
//                                                  (arrival to answer: queue and compute)
//   baton_inference_queue_duration_seconds{model}   histogram: the part not spent running on a PU
//   baton_inference_compute_duration_seconds{model} histogram: PU time of its partitions
//   baton_pu_busy_seconds_total{pu,kind,device}     counter
//   baton_pu_runs_total{pu,kind,device}             counter: partitions run
//   baton_device_queue_depth{device}                gauge: assignments waiting
//   baton_device_running{device}                    gauge: assignments running
//   baton_device_reachable{device}                  gauge: 1 or 0
//   baton_policy_violations_total{device}           counter: LL decisions the core ignored
//   baton_requests_in_flight                        gauge
//   baton_uptime_seconds                            gauge
//   baton_shared_memory_regions                     gauge: client shared memory regions registered
//   baton_shared_memory_bytes                       gauge: their total size
//                                                  (both only with a registry: --allow-client-shm)
//   baton_http_requests_cut_total{reason}           counter: REST requests or answers cut short
//                                                  (idle, deadline, head_too_large)
//   baton_http_idle_connections                     gauge: kept-alive REST connections parked
//
// Thread-safety: a pure function.
#pragma once

#include <cstdint>
#include <string>

#include "baton/baton.h"

namespace baton::serve {

class SharedMemoryRegistry;

// The REST front-end's connections (serve/http_connection.h): requests it
// cut short, by reason, and idle kept-alive connections parked now.
struct HttpStats {
  uint64_t cut_idle = 0;
  uint64_t cut_deadline = 0;
  uint64_t cut_head_too_large = 0;
  uint64_t idle_connections = 0;
};

// `shm`: the server's client shared memory registry (null = off: no shared
// memory metrics); `http`: the REST front-end's connections (null: none listed).
std::string PrometheusText(const EngineStats& stats, const SharedMemoryRegistry* shm = nullptr,
                           const HttpStats* http = nullptr);

}  // namespace baton::serve
