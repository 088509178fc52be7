// What every fuzz target in this folder defines, besides libFuzzer's
//   extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
// which must never crash, hang, leak or trip a sanitizer, whatever the bytes:
// every input is either accepted or refused with an error.
//
// Two builds (docs/reliability.md):
//   * with clang and -DBATON_FUZZ=ON (scripts/fuzz.sh): real libFuzzer
//     binaries; seed_writer.cc puts the seeds in an empty corpus first;
//   * otherwise, with replay_main.cc: a smoke run in the test suite that feeds
//     the seeds and a fixed number of deterministic mutations of each (run
//     under ASan/UBSan in CI's asan stage).
#pragma once

#include <string>
#include <vector>

namespace baton::fuzz {

// Valid inputs the mutations start from.
std::vector<std::string> Seeds();

}  // namespace baton::fuzz
