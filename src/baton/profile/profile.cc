#include "baton/profile/profile.h"

#include "baton/core/hash.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "baton/core/file.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace baton::profile {

using nlohmann::json;

std::string HashHex(std::string_view bytes) { return baton::HashHex(bytes); }

LatencyStats StatsOf(std::vector<double> samples_ms) {
  LatencyStats s;
  if (samples_ms.empty()) return s;
  std::sort(samples_ms.begin(), samples_ms.end());
  const size_t n = samples_ms.size();
  // Nearest rank: the smallest sample with at least q of them at or below it.
  auto rank = [&](double q) {
    size_t r = static_cast<size_t>(q * static_cast<double>(n) + 0.999999);
    return samples_ms[std::clamp<size_t>(r, 1, n) - 1];
  };
  s.median_ms = rank(0.5);
  s.p90_ms = rank(0.9);
  s.p99_ms = rank(0.99);
  s.runs = static_cast<int>(n);
  return s;
}

const ProfiledRange* ProfiledModel::Find(int first, int last) const {
  for (const ProfiledRange& r : ranges) {
    if (r.first == first && r.last == last) return &r;
  }
  return nullptr;
}

ProfiledRange* ProfiledModel::Find(int first, int last) {
  return const_cast<ProfiledRange*>(std::as_const(*this).Find(first, last));
}

const ProfiledModel* Profile::FindModel(std::string_view name) const {
  for (const ProfiledModel& m : models) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

ProfiledModel* Profile::FindModel(std::string_view name) {
  return const_cast<ProfiledModel*>(std::as_const(*this).FindModel(name));
}

namespace {

json LinkJson(const LinkCost& l) { return json{{"fixed_ms", l.fixed_ms}, {"ms_per_mb", l.ms_per_mb}}; }

// Reading with errors that name the field's path.
class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  absl::Status Error(const std::string& path, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat("profile '", source_, "': ", path, ": ", what,
                                                   "; re-create it with `baton profile`"));
  }
  absl::StatusOr<const json*> Field(const json& obj, const std::string& path, const char* key) const {
    if (!obj.is_object() || !obj.contains(key)) return Error(absl::StrCat(path, ".", key), "missing");
    return &obj.at(key);
  }
  absl::StatusOr<double> Number(const json& obj, const std::string& path, const char* key) const {
    BATON_ASSIGN_OR_RETURN(const json* v, Field(obj, path, key));
    if (!v->is_number()) return Error(absl::StrCat(path, ".", key), "not a number");
    return v->get<double>();
  }
  absl::StatusOr<int64_t> Int(const json& obj, const std::string& path, const char* key) const {
    BATON_ASSIGN_OR_RETURN(const json* v, Field(obj, path, key));
    if (!v->is_number_integer()) return Error(absl::StrCat(path, ".", key), "not an integer");
    return v->get<int64_t>();
  }
  absl::StatusOr<std::string> String(const json& obj, const std::string& path, const char* key) const {
    BATON_ASSIGN_OR_RETURN(const json* v, Field(obj, path, key));
    if (!v->is_string()) return Error(absl::StrCat(path, ".", key), "not a string");
    return v->get<std::string>();
  }
  absl::StatusOr<const json*> Array(const json& obj, const std::string& path, const char* key) const {
    BATON_ASSIGN_OR_RETURN(const json* v, Field(obj, path, key));
    if (!v->is_array()) return Error(absl::StrCat(path, ".", key), "not a list");
    return v;
  }
  absl::StatusOr<LinkCost> Link(const json& obj, const std::string& path, const char* key) const {
    BATON_ASSIGN_OR_RETURN(const json* v, Field(obj, path, key));
    const std::string p = absl::StrCat(path, ".", key);
    LinkCost l;
    BATON_ASSIGN_OR_RETURN(l.fixed_ms, Number(*v, p, "fixed_ms"));
    BATON_ASSIGN_OR_RETURN(l.ms_per_mb, Number(*v, p, "ms_per_mb"));
    return l;
  }

 private:
  std::string source_;
};

}  // namespace

namespace {

json LatencyJson(const std::map<std::string, LatencyStats>& latency) {
  json out = json::object();
  for (const auto& [kind, s] : latency) {
    out[kind] = {{"median_ms", s.median_ms}, {"p90_ms", s.p90_ms}, {"p99_ms", s.p99_ms}, {"runs", s.runs}};
  }
  return out;
}

// `parent`'s "latency": stats by PU kind key.
absl::StatusOr<std::map<std::string, LatencyStats>> ParseLatency(const Reader& rd, const json& parent,
                                                                 const std::string& path) {
  BATON_ASSIGN_OR_RETURN(const json* lat, rd.Field(parent, path, "latency"));
  if (!lat->is_object()) return rd.Error(path + ".latency", "not a map");
  std::map<std::string, LatencyStats> out;
  for (const auto& [kind, js] : lat->items()) {
    const std::string lp = absl::StrCat(path, ".latency.", kind);
    LatencyStats s;
    BATON_ASSIGN_OR_RETURN(s.median_ms, rd.Number(js, lp, "median_ms"));
    BATON_ASSIGN_OR_RETURN(s.p90_ms, rd.Number(js, lp, "p90_ms"));
    BATON_ASSIGN_OR_RETURN(s.p99_ms, rd.Number(js, lp, "p99_ms"));
    BATON_ASSIGN_OR_RETURN(int64_t runs, rd.Int(js, lp, "runs"));
    s.runs = static_cast<int>(runs);
    if (s.median_ms < 0 || s.runs < 1) return rd.Error(lp, "needs median_ms >= 0 and runs >= 1");
    out[kind] = s;
  }
  return out;
}

}  // namespace

std::string Profile::ToJson() const {
  json j;
  j["format"] = "baton-profile";
  j["version"] = kVersion;
  j["cut"] = {{"budget", budget}, {"min_atoms", min_atoms}};
  j["measurement"] = {{"warmup_runs", warmup_runs}, {"min_runs", min_runs}, {"min_time_ms", min_time_ms}};
  j["pu_kinds"] = json::object();
  for (const auto& [key, pu] : pu_kinds) j["pu_kinds"][key] = pu;
  j["same_device"] = LinkJson(same_device);
  j["cross_device"] = LinkJson(cross_device);
  j["partition_overhead_ms"] = partition_overhead_ms;
  j["models"] = json::array();
  for (const ProfiledModel& m : models) {
    json jm{{"name", m.name},         {"content_hash", m.content_hash}, {"atoms_key", m.atoms_key},
            {"atoms", m.atoms},       {"unit_of_atom", m.unit_of_atom}, {"cut_bytes", m.cut_bytes},
            {"edges", json::array()}, {"ranges", json::array()}};
    for (const AtomEdge& e : m.edges) jm["edges"].push_back(json::array({e.from, e.to, e.bytes}));
    for (const ProfiledRange& r : m.ranges) {
      json jr{{"atoms", json::array({r.first, r.last})},
              {"key", r.key},
              {"first_node", r.first_node},
              {"last_node", r.last_node},
              {"latency", json::object()}};
      jr["latency"] = LatencyJson(r.latency);
      jm["ranges"].push_back(std::move(jr));
    }
    if (!m.batched.empty()) {
      jm["batched"] = json::array();
      for (const auto& [batch, latency] : m.batched) {
        jm["batched"].push_back(json{{"batch", batch}, {"latency", LatencyJson(latency)}});
      }
    }
    j["models"].push_back(std::move(jm));
  }
  return j.dump(1);
}


std::vector<int> BatchSizesToMeasure(int max_batch) {
  std::vector<int> sizes;
  for (int b = 1; b < max_batch && static_cast<int>(sizes.size()) < kMaxBatchSizes - 1; b *= 2) sizes.push_back(b);
  if (max_batch > 1) sizes.push_back(max_batch);
  if (sizes.empty()) sizes.push_back(1);
  return sizes;
}

BatchChoice ChooseBatch(const ProfiledModel& model, int max_batch) {
  BatchChoice choice;
  auto one = model.batched.find(1);
  if (max_batch <= 1) {
    choice.reason = "max_batch is 1";
    return choice;
  }
  if (one == model.batched.end() || one->second.empty()) {
    choice.reason = "not profiled at batch sizes above 1: off";
    return choice;
  }
  // PU kinds measured at every size up to max_batch.
  std::vector<std::string> kinds;
  for (const auto& [kind, stats] : one->second) {
    bool everywhere = true;
    for (const auto& [batch, latency] : model.batched) everywhere = everywhere && (batch > max_batch || latency.contains(kind));
    if (everywhere) kinds.push_back(kind);
  }
  auto per_request = [&](int batch, const std::map<std::string, LatencyStats>& latency) {
    double sum = 0;
    for (const std::string& k : kinds) sum += latency.at(k).median_ms;
    return sum / batch;
  };
  const double base = per_request(1, one->second);
  int best = 1;
  double best_ms = base;
  for (const auto& [batch, latency] : model.batched) {
    if (batch <= 1 || batch > max_batch) continue;
    const double ms = per_request(batch, latency);
    if (ms < best_ms) {
      best = batch;
      best_ms = ms;
    }
  }
  if (best == 1) {
    // Off: say how the largest measured size compares.
    for (const auto& [batch, latency] : model.batched) {
      if (batch > 1 && batch <= max_batch) {
        best = batch;
        best_ms = per_request(batch, latency);
      }
    }
  }
  choice.per_request_ratio = base > 0 ? best_ms / base : 1;
  const bool on = best > 1 && choice.per_request_ratio <= kBatchGainThreshold;
  choice.batch = on ? best : 1;
  choice.reason = absl::StrFormat("batch %d takes %.2fx batch 1's time per request on %s: %s", best,
                                  choice.per_request_ratio, absl::StrJoin(kinds, " + "),
                                  on ? "on" : absl::StrFormat("off (on below %.2fx)", kBatchGainThreshold));
  return choice;
}

absl::StatusOr<Profile> Profile::Parse(std::string_view text, const std::string& source) {
  const Reader rd(source);
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return rd.Error("(file)", "not valid JSON");
  // json::value() throws when the key holds another type: look before reading.
  const auto format = j.is_object() ? j.find("format") : j.end();
  if (format == j.end() || !format->is_string() || *format != "baton-profile") {
    return rd.Error("format", "not a baton profile");
  }
  BATON_ASSIGN_OR_RETURN(int64_t version, rd.Int(j, "", "version"));
  if (version != kVersion) {
    return rd.Error("version", absl::StrCat("format version ", version, ", this baton reads version ", kVersion));
  }
  Profile p;
  BATON_ASSIGN_OR_RETURN(const json* cut, rd.Field(j, "", "cut"));
  BATON_ASSIGN_OR_RETURN(int64_t budget, rd.Int(*cut, "cut", "budget"));
  BATON_ASSIGN_OR_RETURN(int64_t min_atoms, rd.Int(*cut, "cut", "min_atoms"));
  if (budget < 1 || min_atoms < 0) return rd.Error("cut", "needs budget >= 1 and min_atoms >= 0");
  p.budget = static_cast<int>(budget);
  p.min_atoms = static_cast<int>(min_atoms);
  BATON_ASSIGN_OR_RETURN(const json* meas, rd.Field(j, "", "measurement"));
  BATON_ASSIGN_OR_RETURN(int64_t warmup, rd.Int(*meas, "measurement", "warmup_runs"));
  BATON_ASSIGN_OR_RETURN(int64_t min_runs, rd.Int(*meas, "measurement", "min_runs"));
  p.warmup_runs = static_cast<int>(warmup);
  p.min_runs = static_cast<int>(min_runs);
  BATON_ASSIGN_OR_RETURN(p.min_time_ms, rd.Number(*meas, "measurement", "min_time_ms"));
  BATON_ASSIGN_OR_RETURN(const json* kinds, rd.Field(j, "", "pu_kinds"));
  if (!kinds->is_object()) return rd.Error("pu_kinds", "not a map");
  for (const auto& [key, pu] : kinds->items()) {
    if (!pu.is_string()) return rd.Error(absl::StrCat("pu_kinds.", key), "not a string");
    p.pu_kinds[key] = pu.get<std::string>();
  }
  BATON_ASSIGN_OR_RETURN(p.same_device, rd.Link(j, "", "same_device"));
  BATON_ASSIGN_OR_RETURN(p.cross_device, rd.Link(j, "", "cross_device"));
  BATON_ASSIGN_OR_RETURN(p.partition_overhead_ms, rd.Number(j, "", "partition_overhead_ms"));
  BATON_ASSIGN_OR_RETURN(const json* models, rd.Array(j, "", "models"));
  for (size_t mi = 0; mi < models->size(); ++mi) {
    const json& jm = (*models)[mi];
    const std::string mp = absl::StrCat("models[", mi, "]");
    ProfiledModel m;
    BATON_ASSIGN_OR_RETURN(m.name, rd.String(jm, mp, "name"));
    BATON_ASSIGN_OR_RETURN(m.content_hash, rd.String(jm, mp, "content_hash"));
    BATON_ASSIGN_OR_RETURN(m.atoms_key, rd.String(jm, mp, "atoms_key"));
    BATON_ASSIGN_OR_RETURN(int64_t atoms, rd.Int(jm, mp, "atoms"));
    if (atoms < 1) return rd.Error(mp + ".atoms", "must be at least 1");
    m.atoms = static_cast<int>(atoms);
    BATON_ASSIGN_OR_RETURN(const json* units, rd.Array(jm, mp, "unit_of_atom"));
    BATON_ASSIGN_OR_RETURN(const json* cuts, rd.Array(jm, mp, "cut_bytes"));
    BATON_ASSIGN_OR_RETURN(const json* edges, rd.Array(jm, mp, "edges"));
    if (units->size() != static_cast<size_t>(m.atoms) || cuts->size() != static_cast<size_t>(m.atoms - 1)) {
      return rd.Error(mp, "unit_of_atom needs one entry per atom and cut_bytes one per cut");
    }
    for (const json& u : *units) {
      if (!u.is_number_integer()) return rd.Error(mp + ".unit_of_atom", "not an integer");
      m.unit_of_atom.push_back(u.get<int>());
    }
    for (const json& c : *cuts) {
      if (!c.is_number_integer()) return rd.Error(mp + ".cut_bytes", "not an integer");
      m.cut_bytes.push_back(c.get<int64_t>());
    }
    for (const json& e : *edges) {
      if (!e.is_array() || e.size() != 3 || !e[0].is_number_integer() || !e[1].is_number_integer() ||
          !e[2].is_number_integer() || e[0].get<int>() < 0 || e[0].get<int>() >= e[1].get<int>() ||
          e[1].get<int>() >= m.atoms) {
        return rd.Error(mp + ".edges", "each edge is [from, to, bytes] with 0 <= from < to < atoms");
      }
      m.edges.push_back(AtomEdge{e[0].get<int>(), e[1].get<int>(), e[2].get<int64_t>()});
    }
    BATON_ASSIGN_OR_RETURN(const json* ranges, rd.Array(jm, mp, "ranges"));
    for (size_t ri = 0; ri < ranges->size(); ++ri) {
      const json& jr = (*ranges)[ri];
      const std::string rp = absl::StrCat(mp, ".ranges[", ri, "]");
      ProfiledRange r;
      BATON_ASSIGN_OR_RETURN(const json* span, rd.Array(jr, rp, "atoms"));
      if (span->size() != 2 || !(*span)[0].is_number_integer() || !(*span)[1].is_number_integer()) {
        return rd.Error(rp + ".atoms", "must be [first, last]");
      }
      r.first = (*span)[0].get<int>();
      r.last = (*span)[1].get<int>();
      if (r.first < 0 || r.first >= r.last || r.last > m.atoms) {
        return rd.Error(rp + ".atoms", absl::StrCat("[", r.first, ", ", r.last, "] is not a range of ", m.atoms,
                                                    " atoms"));
      }
      BATON_ASSIGN_OR_RETURN(r.key, rd.String(jr, rp, "key"));
      BATON_ASSIGN_OR_RETURN(r.first_node, rd.String(jr, rp, "first_node"));
      BATON_ASSIGN_OR_RETURN(r.last_node, rd.String(jr, rp, "last_node"));
      BATON_ASSIGN_OR_RETURN(r.latency, ParseLatency(rd, jr, rp));
      m.ranges.push_back(std::move(r));
    }
    if (jm.contains("batched")) {
      BATON_ASSIGN_OR_RETURN(const json* batched, rd.Array(jm, mp, "batched"));
      for (size_t bi = 0; bi < batched->size(); ++bi) {
        const json& jb = (*batched)[bi];
        const std::string bp = absl::StrCat(mp, ".batched[", bi, "]");
        BATON_ASSIGN_OR_RETURN(int64_t batch, rd.Int(jb, bp, "batch"));
        if (batch < 1 || batch > 1024) return rd.Error(bp + ".batch", "must be in 1..1024");
        BATON_ASSIGN_OR_RETURN(m.batched[static_cast<int>(batch)], ParseLatency(rd, jb, bp));
      }
    }
    p.models.push_back(std::move(m));
  }
  return p;
}

absl::StatusOr<Profile> Profile::Load(const std::string& path) {
  absl::StatusOr<std::string> text = ReadRegularFile(path, kMaxFileBytes, "profile");
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return absl::NotFoundError(absl::StrCat(text.status().message(), "; make one with `baton profile`"));
    return text.status();
  }
  return Parse(*text, path);
}

absl::Status Profile::Save(const std::string& path) const {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << ToJson() << "\n";
    out.flush();
    if (!out) {
      return absl::PermissionDeniedError(absl::StrCat("cannot write profile '", tmp, "'; choose a writable -o path"));
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return absl::PermissionDeniedError(absl::StrCat("cannot move '", tmp, "' to profile '", path, "'"));
  }
  return absl::OkStatus();
}

absl::Status CheckFresh(const Profile& profile, const std::string& source, const std::vector<ExpectedModel>& expected) {
  auto stale = [&](const std::string& what) {
    return absl::FailedPreconditionError(
        absl::StrCat("profile '", source, "': ", what, "; run `baton profile` again for this config"));
  };
  for (const ExpectedModel& e : expected) {
    const ProfiledModel* m = profile.FindModel(e.name);
    if (m == nullptr) return stale(absl::StrCat("it has no model '", e.name, "'"));
    if (m->content_hash != e.content_hash) {
      return stale(absl::StrCat("model '", e.name, "' changed since it was profiled (content hash ", m->content_hash,
                                " -> ", e.content_hash, ")"));
    }
    if (m->atoms_key != e.atoms_key) {
      return stale(absl::StrCat("model '", e.name,
                                "' is now cut differently (the PUs' op support or the candidate budget changed)"));
    }
    for (const auto& [kind, pu] : e.pu_kinds) {
      if (!profile.pu_kinds.contains(kind)) {
        return stale(absl::StrCat("it has no measurements for PU '", pu, "' (kind ", kind, ")"));
      }
    }
    if (m->Find(0, 1) == nullptr && m->atoms > 0) return stale(absl::StrCat("model '", e.name, "' has no atom ranges"));
  }
  return absl::OkStatus();
}

}  // namespace baton::profile
