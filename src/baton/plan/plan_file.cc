#include "baton/plan/plan_file.h"

#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "baton/core/file.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace baton::plan {

using nlohmann::json;

namespace {

// JSON of a string list on one line.
std::string Line(const std::vector<std::string>& items) { return json(items).dump(); }
std::string Num(double v) { return json(v).dump(); }
std::string Str(const std::string& s) { return json(s).dump(); }

absl::Status Bad(const std::string& source, const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("plan '", source, "': ", path, ": ", what,
                                                 "; make the plan again with `baton plan`"));
}

absl::StatusOr<std::vector<std::string>> Strings(const json& j, const std::string& source, const std::string& path) {
  if (!j.is_array()) return Bad(source, path, "not a list");
  std::vector<std::string> out;
  for (const json& s : j) {
    if (!s.is_string()) return Bad(source, path, "holds something that is not a string");
    out.push_back(s.get<std::string>());
  }
  return out;
}

template <typename T>
absl::StatusOr<T> Get(const json& j, const char* key, const std::string& source, const std::string& path) {
  if (!j.is_object() || !j.contains(key)) return Bad(source, absl::StrCat(path, ".", key), "missing");
  const json& v = j.at(key);
  if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) return Bad(source, absl::StrCat(path, ".", key), "not a string");
  } else {
    if (!v.is_number()) return Bad(source, absl::StrCat(path, ".", key), "not a number");
  }
  return v.get<T>();
}

}  // namespace

std::string PlanFile::ToJson() const {
  std::string out = "{\n";
  absl::StrAppend(&out, "  \"format\": \"baton-plan\",\n  \"version\": ", kVersion, ",\n");
  absl::StrAppend(&out, "  \"policy\": ", Str(policy), ",\n  \"objective\": ", Str(objective), ",\n");
  absl::StrAppend(&out, "  \"profile\": ", Str(profile), ",\n");
  absl::StrAppend(&out, "  \"predicted_throughput_rps\": ", Num(predicted_throughput_rps), ",\n");
  absl::StrAppend(&out, "  \"bound_throughput_rps\": ", Num(bound_throughput_rps), ",\n");
  absl::StrAppend(&out, "  \"pus\": [\n");
  for (size_t i = 0; i < pus.size(); ++i) {
    const PlanPu& p = pus[i];
    absl::StrAppend(&out, "    {\"name\": ", Str(p.name), ", \"device\": ", Str(p.device), ", \"kind\": ", Str(p.kind_key),
                    ", \"predicted_busy\": ", Num(p.predicted_busy), ",\n     \"order\": ", Line(p.order), "}",
                    i + 1 < pus.size() ? ",\n" : "\n");
  }
  absl::StrAppend(&out, "  ],\n  \"models\": [\n");
  for (size_t i = 0; i < models.size(); ++i) {
    const PlanModel& m = models[i];
    absl::StrAppend(&out, "    {\"name\": ", Str(m.name), ", \"content_hash\": ", Str(m.content_hash),
                    ",\n     \"predicted_rps\": ", Num(m.predicted_rps), ", \"predicted_latency_ms\": ",
                    Num(m.predicted_latency_ms), ", \"latency_bound_ms\": ", Num(m.latency_bound_ms));
    if (m.priority) absl::StrAppend(&out, ", \"priority\": ", *m.priority);
    if (m.max_batch) absl::StrAppend(&out, ", \"max_batch\": ", *m.max_batch);
    absl::StrAppend(&out, ",\n     \"partitions\": [\n");
    for (size_t k = 0; k < m.partitions.size(); ++k) {
      const PlanPartition& p = m.partitions[k];
      absl::StrAppend(&out, "       {\"pus\": ", Line(p.pus));
      if (!p.shares.empty()) absl::StrAppend(&out, ", \"shares\": ", json(p.shares).dump());
      absl::StrAppend(&out, ", \"predicted_ms\": ", Num(p.predicted_ms), ",\n        \"nodes\": ", Line(p.nodes), "}",
                      k + 1 < m.partitions.size() ? ",\n" : "\n");
    }
    absl::StrAppend(&out, "     ]}", i + 1 < models.size() ? ",\n" : "\n");
  }
  absl::StrAppend(&out, "  ]\n}\n");
  return out;
}

absl::StatusOr<PlanFile> PlanFile::Parse(std::string_view text, const std::string& source) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad(source, "(file)", "not valid JSON");
  // json::value() throws when the key holds another type: look before reading.
  const auto format = j.is_object() ? j.find("format") : j.end();
  if (format == j.end() || !format->is_string() || *format != "baton-plan") {
    return Bad(source, "format", "not a baton plan");
  }
  const auto version = j.find("version");
  if (version == j.end() || !version->is_number_integer() || version->get<int64_t>() != kVersion) {
    return Bad(source, "version", absl::StrCat("this baton reads plan format version ", kVersion));
  }
  PlanFile p;
  BATON_ASSIGN_OR_RETURN(p.policy, Get<std::string>(j, "policy", source, ""));
  BATON_ASSIGN_OR_RETURN(p.objective, Get<std::string>(j, "objective", source, ""));
  BATON_ASSIGN_OR_RETURN(p.profile, Get<std::string>(j, "profile", source, ""));
  BATON_ASSIGN_OR_RETURN(p.predicted_throughput_rps, Get<double>(j, "predicted_throughput_rps", source, ""));
  BATON_ASSIGN_OR_RETURN(p.bound_throughput_rps, Get<double>(j, "bound_throughput_rps", source, ""));
  if (!j.contains("pus") || !j["pus"].is_array()) return Bad(source, "pus", "missing or not a list");
  for (size_t i = 0; i < j["pus"].size(); ++i) {
    const json& jp = j["pus"][i];
    const std::string path = absl::StrCat("pus[", i, "]");
    PlanPu pu;
    BATON_ASSIGN_OR_RETURN(pu.name, Get<std::string>(jp, "name", source, path));
    BATON_ASSIGN_OR_RETURN(pu.device, Get<std::string>(jp, "device", source, path));
    BATON_ASSIGN_OR_RETURN(pu.kind_key, Get<std::string>(jp, "kind", source, path));
    BATON_ASSIGN_OR_RETURN(pu.predicted_busy, Get<double>(jp, "predicted_busy", source, path));
    if (!jp.contains("order")) return Bad(source, path + ".order", "missing");
    BATON_ASSIGN_OR_RETURN(pu.order, Strings(jp["order"], source, path + ".order"));
    p.pus.push_back(std::move(pu));
  }
  if (!j.contains("models") || !j["models"].is_array()) return Bad(source, "models", "missing or not a list");
  for (size_t i = 0; i < j["models"].size(); ++i) {
    const json& jm = j["models"][i];
    const std::string path = absl::StrCat("models[", i, "]");
    PlanModel m;
    BATON_ASSIGN_OR_RETURN(m.name, Get<std::string>(jm, "name", source, path));
    BATON_ASSIGN_OR_RETURN(m.content_hash, Get<std::string>(jm, "content_hash", source, path));
    BATON_ASSIGN_OR_RETURN(m.predicted_rps, Get<double>(jm, "predicted_rps", source, path));
    BATON_ASSIGN_OR_RETURN(m.predicted_latency_ms, Get<double>(jm, "predicted_latency_ms", source, path));
    BATON_ASSIGN_OR_RETURN(m.latency_bound_ms, Get<double>(jm, "latency_bound_ms", source, path));
    if (jm.contains("priority")) {
      const json& jp = jm["priority"];
      if (!jp.is_number_integer() || jp.get<int64_t>() < std::numeric_limits<int>::min() ||
          jp.get<int64_t>() > std::numeric_limits<int>::max()) {
        return Bad(source, path + ".priority", "must be an integer");
      }
      m.priority = static_cast<int>(jp.get<int64_t>());
    }
    if (jm.contains("max_batch")) {
      const json& jb = jm["max_batch"];
      if (!jb.is_number_integer() || jb.get<int64_t>() < 1 || jb.get<int64_t>() > 1024) {
        return Bad(source, path + ".max_batch", "must be an integer in 1..1024 (1 = no batching)");
      }
      m.max_batch = static_cast<int>(jb.get<int64_t>());
    }
    if (!jm.contains("partitions") || !jm["partitions"].is_array() || jm["partitions"].empty()) {
      return Bad(source, path + ".partitions", "missing, empty or not a list");
    }
    for (size_t k = 0; k < jm["partitions"].size(); ++k) {
      const json& jq = jm["partitions"][k];
      const std::string qpath = absl::StrCat(path, ".partitions[", k, "]");
      PlanPartition q;
      if (!jq.contains("nodes") || !jq.contains("pus")) return Bad(source, qpath, "needs nodes and pus");
      BATON_ASSIGN_OR_RETURN(q.nodes, Strings(jq["nodes"], source, qpath + ".nodes"));
      BATON_ASSIGN_OR_RETURN(q.pus, Strings(jq["pus"], source, qpath + ".pus"));
      if (q.nodes.empty() || q.pus.empty()) return Bad(source, qpath, "needs at least one node and one PU");
      BATON_ASSIGN_OR_RETURN(q.predicted_ms, Get<double>(jq, "predicted_ms", source, qpath));
      if (jq.contains("shares")) {
        const json& js = jq["shares"];
        if (!js.is_array() || js.size() != q.pus.size()) {
          return Bad(source, qpath + ".shares", absl::StrCat("must be a list of ", q.pus.size(), " numbers, one per PU"));
        }
        double sum = 0;
        for (const json& v : js) {
          if (!v.is_number() || !(v.get<double>() >= 0) || !(v.get<double>() <= 1)) {
            return Bad(source, qpath + ".shares", "holds something that is not a number in [0, 1]");
          }
          q.shares.push_back(v.get<double>());
          sum += v.get<double>();
        }
        if (!(sum > 0)) return Bad(source, qpath + ".shares", "sums to 0; give at least one PU a share");
      }
      m.partitions.push_back(std::move(q));
    }
    p.models.push_back(std::move(m));
  }
  return p;
}

absl::StatusOr<PlanFile> PlanFile::Load(const std::string& path) {
  absl::StatusOr<std::string> text = ReadRegularFile(path, kMaxFileBytes, "plan");
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return absl::NotFoundError(absl::StrCat(text.status().message(), "; make one with `baton plan`"));
    return text.status();
  }
  return Parse(*text, path);
}

absl::Status PlanFile::Save(const std::string& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << ToJson();
  out.flush();
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write plan '", path, "'; choose a writable -o path"));
  return absl::OkStatus();
}

}  // namespace baton::plan
