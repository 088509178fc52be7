// Profiles: measured latencies of candidate partitions on PU kinds, and
// transfer costs, as written by `baton profile` and read by `baton plan` and
// `baton run --plan`. The measuring itself lives with the executors
// (runtime/profiler.h); this is the store.
//
// Keys, so that a stale profile is detected rather than silently used:
//   model      its name and a content hash of its serialized ONNX bytes
//   atoms      a hash of how it was cut into atoms (node names per atom): it
//              changes with the PUs' op support and the candidate budget
//   partition  a range of atoms, identified by a hash of its node names
//   PU kind    a key built from the PU's kind and the settings that change
//              its speed ("cpu/threads=1", "emu/speed=6/op_speed=Conv:12/...");
//              PUs with equal keys share measurements
//
// File format: JSON (see docs/profiles.md), written atomically (a temporary
// file renamed over the old one), so an interrupted `baton profile` leaves the
// last complete state, which the next run resumes from.
//
// Thread-safety: value types; Save/Load touch only the named file.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "baton/core/status.h"
#include "baton/profile/problem.h"

namespace baton::profile {

// 16 hex digits of 64-bit FNV-1a: stable across runs and machines.
std::string HashHex(std::string_view bytes);

struct LatencyStats {
  double median_ms = 0;
  double p90_ms = 0;
  double p99_ms = 0;
  int runs = 0;

  friend bool operator==(const LatencyStats&, const LatencyStats&) = default;
};

// Statistics of `samples_ms` (nearest rank); runs = samples. Empty -> zeros.
LatencyStats StatsOf(std::vector<double> samples_ms);

struct ProfiledRange {
  int first = 0;  // atoms [first, last)
  int last = 0;
  std::string key;         // HashHex of its node names, '\n'-joined
  std::string first_node;  // for people reading the file
  std::string last_node;
  std::map<std::string, LatencyStats> latency;  // by PU kind key

  friend bool operator==(const ProfiledRange&, const ProfiledRange&) = default;
};

struct ProfiledModel {
  std::string name;
  std::string content_hash;
  std::string atoms_key;
  int atoms = 0;
  std::vector<int> unit_of_atom;
  std::vector<int64_t> cut_bytes;
  std::vector<AtomEdge> edges;
  std::vector<ProfiledRange> ranges;
  // Dynamic batching (a model with max_batch > 1): the whole model's run
  // time at each measured batch size (1 included), by PU kind key. Empty
  // for a model that does not batch.
  std::map<int, std::map<std::string, LatencyStats>> batched;

  const ProfiledRange* Find(int first, int last) const;
  ProfiledRange* Find(int first, int last);

  friend bool operator==(const ProfiledModel&, const ProfiledModel&) = default;
};

struct Profile {
  static constexpr int kVersion = 1;
  // PU kind key -> a description of one PU it was measured on ("cpu0").
  std::map<std::string, std::string> pu_kinds;
  std::vector<ProfiledModel> models;
  // Handing a tensor from one PU's thread to another's inside one process.
  LinkCost same_device;
  // Not measured by `baton profile` (it sees one device); from the config.
  LinkCost cross_device;
  // Median cost of one partition run that does nothing (session call and
  // dispatch), measured on the first CPU PU kind.
  double partition_overhead_ms = 0;
  // How models were cut (MakeAtoms/Candidates): the planner cuts the same way
  // to find the profiled atoms again.
  int budget = 0;
  int min_atoms = 0;
  // How the measurements were taken (for people; not part of any key).
  int warmup_runs = 0;
  int min_runs = 0;
  double min_time_ms = 0;

  const ProfiledModel* FindModel(std::string_view name) const;
  ProfiledModel* FindModel(std::string_view name);

  std::string ToJson() const;
  // `source` names the text in errors. InvalidArgument naming the field on
  // malformed input or another format version.
  static absl::StatusOr<Profile> Parse(std::string_view json, const std::string& source);
  // Largest profile file Load reads (a profile of hundreds of models is far smaller).
  static constexpr size_t kMaxFileBytes = size_t{64} << 20;
  // NotFound when the file does not exist; InvalidArgument when it is not a
  // regular file or is larger than kMaxFileBytes.
  static absl::StatusOr<Profile> Load(const std::string& path);
  // Atomic: writes `path`.tmp.<pid> and renames it over `path`.
  absl::Status Save(const std::string& path) const;

  friend bool operator==(const Profile&, const Profile&) = default;
};

// The batch sizes the profiler measures for a model batching up to
// `max_batch`: 1, the powers of two below it, and max_batch itself, at most
// kMaxBatchSizes of them (the largest powers of two are dropped first).
inline constexpr int kMaxBatchSizes = 6;
std::vector<int> BatchSizesToMeasure(int max_batch);

// Whether dynamic batching pays for a model, from its profiled batch sizes:
// the size with the least measured time per request (summed over the PU
// kinds measured at every size), if that is at most kBatchGainThreshold of
// batch 1's; else 1 (no batching). `reason` says which and by how much, e.g.
// "batch 4 takes 1.08x batch 1's time per request on cpu/threads=1: off".
inline constexpr double kBatchGainThreshold = 0.95;
struct BatchChoice {
  int batch = 1;
  double per_request_ratio = 1;  // chosen (or best, when off) size's time per request / batch 1's
  std::string reason;
};
BatchChoice ChooseBatch(const ProfiledModel& model, int max_batch);

// What the configuration expects of a profile for one model.
struct ExpectedModel {
  std::string name;
  std::string content_hash;
  std::string atoms_key;
  // PU kind keys whose measurements this model needs, with a PU name each
  // (for messages).
  std::map<std::string, std::string> pu_kinds;
};
// OK when `profile` (read from `source`) has every model with the same hash
// and atoms key and measurements for every needed PU kind on every range.
// Otherwise FailedPrecondition saying what changed and to run `baton
// profile` again, e.g. "profile 'p.json': model 'camera' changed since it was
// profiled (content hash 1a2b... -> 3c4d...); run `baton profile` again".
absl::Status CheckFresh(const Profile& profile, const std::string& source, const std::vector<ExpectedModel>& expected);

}  // namespace baton::profile
