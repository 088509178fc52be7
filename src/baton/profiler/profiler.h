// The profiler: measures candidate partitions on PUs into a profile::Profile.
//
// For each model: ask every PU which nodes it supports, cut the model into
// atoms and candidates (partition/units.h) under the candidate budget, and
// for every candidate on every PU kind that can run it (one representative
// PU per kind key): extract it, prepare it, run `warmup_runs` unmeasured
// runs, then measured runs until at least `min_runs` and `min_time_ms` are
// reached (or `max_runs`), and record median, p90 and p99 of the run time
// (for an emulated PU, its charged time). Inputs are real: the model's random
// inputs, pushed through the atoms in order, give every tensor a candidate
// reads.
//
// Resumable: measurements already in the profile (same model hash, atoms key,
// range and PU kind) are kept, and `checkpoint` is called after each model x
// PU kind, so an interrupted profile loses at most one such batch.
//
// Also measured: the per-partition overhead (a one-node partition on the
// first CPU kind), the in-process handover between two PU threads, and a
// batching model's whole run time per batch size (see ProfilerModel).
//
// Thread-safety: ProfileModels runs on the calling thread (plus one
// short-lived thread per measurement, pinned like the PU); not reentrant.
#pragma once

#include <atomic>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "baton/backend/executor.h"
#include "baton/core/status.h"
#include "baton/graph/model.h"
#include "baton/partition/units.h"
#include "baton/profile/profile.h"

namespace baton::profiler {

struct ProfilerPu {
  std::string name;
  std::string kind_key;                         // see profile/profile.h
  const backend::Executor* executor = nullptr;  // borrowed
  std::vector<int> pin_cores;                   // the measuring thread runs here
  bool is_cpu = false;
};

struct ProfilerModel {
  std::string name;
  std::shared_ptr<const graph::Model> model;
  std::string content_hash;  // profile::HashHex of its serialized bytes
  // > 1: the model batches (its leading dimension is free); the whole model
  // is also measured at profile::BatchSizesToMeasure(max_batch) on every
  // CPU PU kind, its inputs stacked (ProfiledModel::batched).
  int max_batch = 1;
};

struct ProfilerOptions {
  int budget = 24;      // candidates per model (>= atoms)
  int min_atoms = 0;    // 0 = max(4, 2 x PUs), capped by the budget
  int warmup_runs = 2;
  int min_runs = 7;
  int max_runs = 200;
  double min_time_ms = 100;
  uint64_t seed = 1;
  // Set (e.g. by a signal): ProfileModels saves what it measured through its
  // checkpoint before the next measurement and returns Cancelled. Borrowed.
  const std::atomic<bool>* stop = nullptr;

  absl::Status Validate() const;
};

// How a model is cut for these PUs: support masks (bit u = pus[u]), atoms,
// candidates and the atoms key.
struct ModelCut {
  std::vector<uint64_t> support;
  partition::Atoms atoms;
  std::vector<partition::Candidate> candidates;
  std::string atoms_key;
};
absl::StatusOr<ModelCut> CutModel(const graph::Model& model, const std::vector<ProfilerPu>& pus,
                                  const ProfilerOptions& options);

// A PU kind key: "cpu/threads=2", "emu/speed=6/op_speed=Conv:12,MatMul:8/unsupported=LSTM,Softmax/compute=0".
std::string CpuKindKey(int threads);
std::string EmuKindKey(double speed, const std::vector<std::pair<std::string, double>>& op_speed,
                       std::vector<std::string> unsupported_ops, bool compute);

// (done, total, what) after each measurement.
using Progress = std::function<void(int done, int total, const std::string& what)>;

// Measures into `profile` (which may hold earlier results to resume from).
// Models whose hash or atoms key differ from the profile's entry are measured
// afresh. Errors name the model, range and PU.
absl::Status ProfileModels(const std::vector<ProfilerModel>& models, const std::vector<ProfilerPu>& pus,
                           const ProfilerOptions& options, profile::Profile& profile,
                           const std::function<absl::Status(const profile::Profile&)>& checkpoint,
                           const Progress& progress = nullptr);

// A model whose measurements SeedFromOtherProfiles took from another profile.
struct Seeded {
  std::string model;   // its name in this profile
  std::string from;    // the other profile's source (e.g. its path)
  std::string as;      // its name there
  int measurements = 0;  // range x PU kind (and batch size x PU kind) taken
};

// Before ProfileModels: for each of `models` that `profile` has no entry of
// (by name and content hash), copies the measurements of the same model
// (content hash) from the profiles in `others` (source, profile) that were cut
// with the same budget and min_atoms, keeping only the PU kinds of `pus`.
// The one holding the most such measurements wins (the first of `others` on
// a tie: list the newest first). ProfileModels then keeps what still matches
// (atoms key, range, PU kind) and measures the rest, as when resuming; so a
// model measured for another configuration on the same kinds of PU is not
// measured again. Pure: reads no file.
std::vector<Seeded> SeedFromOtherProfiles(
    profile::Profile& profile, const std::vector<ProfilerModel>& models, const std::vector<ProfilerPu>& pus,
    const ProfilerOptions& options, const std::vector<std::pair<std::string, const profile::Profile*>>& others);

}  // namespace baton::profiler
