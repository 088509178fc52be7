// Planning time: every high-level policy and the bounds on a mix of 8 models
// on 6 PUs (2 CPU-like PUs that run everything, 4 accelerators with gaps and
// different speeds), 8 atoms per model with measured ranges of 2 and 3 atoms.
// The goal: a plan in under 5 s, the LP bound in under 1 s.
//
// Run: build/release/bench/plan_bench --benchmark_min_time=0.5
#include <benchmark/benchmark.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "baton/plan/policies.h"
#include "baton/profile/bounds.h"

namespace baton {
namespace {

profile::Problem Mix(int models, int pus, int atoms, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> ms(0.2, 4.0);
  profile::Problem p;
  for (int u = 0; u < pus; ++u) p.pus.push_back({absl::StrCat("pu", u), u < 2 ? "cpu" : "emu", 0});
  p.partition_overhead_ms = 0.01;
  p.dispatch_ms = 0.02;
  for (int m = 0; m < models; ++m) {
    profile::ProblemModel pm;
    pm.name = absl::StrCat("m", m);
    for (int a = 0; a < atoms; ++a) {
      profile::PuCosts c(static_cast<size_t>(pus));
      const double cpu = ms(rng);
      for (int u = 0; u < pus; ++u) {
        // Accelerators are 2-12x faster and cannot run about one atom in four.
        if (u < 2) c[static_cast<size_t>(u)] = cpu;
        else if (rng() % 4 != 0) c[static_cast<size_t>(u)] = cpu / (2 + static_cast<double>(rng() % 11));
      }
      pm.atom_ms.push_back(c);
      pm.unit_of_atom.push_back(a);
      if (a + 1 < atoms) pm.cut_bytes.push_back(1 << 16);
      if (a > 0) pm.edges.push_back({a - 1, a, 1 << 16});
    }
    pm.demand.kind = m % 3 == 0 ? profile::Demand::Kind::kSaturating : profile::Demand::Kind::kClosed;
    pm.demand.concurrency = 2;
    pm.demand.think_ms = m % 3 == 0 ? 0 : 20;
    p.models.push_back(std::move(pm));
  }
  return p;
}

void BM_Plan(benchmark::State& state) {
  const auto policy = static_cast<plan::HighLevelPolicy>(state.range(0));
  const profile::Problem problem = Mix(8, 6, 8, 1);
  for (auto _ : state) {
    absl::StatusOr<profile::Placement> placement = plan::MakePlacement(policy, problem);
    if (!placement.ok()) state.SkipWithError(std::string(placement.status().message()).c_str());
    benchmark::DoNotOptimize(placement);
  }
  state.SetLabel(plan::HighLevelPolicyName(policy));
}
BENCHMARK(BM_Plan)
    ->Arg(static_cast<int>(plan::HighLevelPolicy::kCapability))
    ->Arg(static_cast<int>(plan::HighLevelPolicy::kBalanced))
    ->Arg(static_cast<int>(plan::HighLevelPolicy::kLp))
    ->Arg(static_cast<int>(plan::HighLevelPolicy::kSearch))
    ->Unit(benchmark::kMillisecond);

void BM_Bounds(benchmark::State& state) {
  const profile::Problem problem = Mix(8, 6, 8, 1);
  for (auto _ : state) {
    absl::StatusOr<profile::Bounds> b = profile::ComputeBounds(problem);
    if (!b.ok()) state.SkipWithError(std::string(b.status().message()).c_str());
    benchmark::DoNotOptimize(b);
  }
}
BENCHMARK(BM_Bounds)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace baton

BENCHMARK_MAIN();
