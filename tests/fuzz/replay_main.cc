// The smoke-run driver of a fuzz target (see fuzz_target.h): runs every seed
// and `--mutations N` deterministic mutants of each (default 200) through
// LLVMFuzzerTestOneInput, and any files given on the command line (e.g. a
// crash libFuzzer found, to replay it). Exit status 0 when all ran; a crash
// or a sanitizer report ends the process as it would under libFuzzer.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

// xorshift64*: the same mutants on every run.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 2685821657736338717ULL;
  }
  size_t Below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(Next() % n); }
};

// Tokens that tend to matter to the parsers under test (YAML, JSON, numbers).
const char* const kTokens[] = {"{",    "}",     "[",   "]",    ":",    ",",     "\"",   "\n",  "-",  "-1",
                               "0",    "1e309", "nan", "null", "true", "65536", "4294967296", "\xff", "\0", "  ",
                               "&a",   "*a",    "<<",  "---",  "!!",   "~",     "9223372036854775807"};

std::string Mutate(const std::string& seed, Rng& rng) {
  std::string s = seed;
  const int ops = 1 + static_cast<int>(rng.Below(4));
  for (int op = 0; op < ops; ++op) {
    const size_t at = rng.Below(s.size() + 1);
    switch (rng.Below(7)) {
      case 0:  // flip a bit
        if (!s.empty()) s[rng.Below(s.size())] ^= static_cast<char>(1 << rng.Below(8));
        break;
      case 1: {  // an interesting byte
        static const char kBytes[] = {0, 1, 0x7f, static_cast<char>(0x80), static_cast<char>(0xff)};
        if (!s.empty()) s[rng.Below(s.size())] = kBytes[rng.Below(sizeof(kBytes))];
        break;
      }
      case 2:  // delete a range
        if (!s.empty()) s.erase(at > 0 ? at - 1 : 0, 1 + rng.Below(16));
        break;
      case 3: {  // duplicate a range
        if (s.empty()) break;
        const size_t from = rng.Below(s.size());
        const std::string piece = s.substr(from, 1 + rng.Below(32));
        s.insert(std::min(at, s.size()), piece);
        break;
      }
      case 4: {  // insert a token
        const std::string token = kTokens[rng.Below(sizeof(kTokens) / sizeof(kTokens[0]))];
        s.insert(std::min(at, s.size()), token.empty() ? std::string(1, '\0') : token);
        break;
      }
      case 5:  // truncate
        s.resize(rng.Below(s.size() + 1));
        break;
      default: {  // random bytes
        std::string junk(1 + rng.Below(8), '\0');
        for (char& c : junk) c = static_cast<char>(rng.Next());
        s.insert(std::min(at, s.size()), junk);
      }
    }
  }
  return s;
}

// BATON_FUZZ_SAVE=PATH: each input is written there before it runs, so the
// one that crashes or hangs the process is left behind to replay.
int Run(const std::string& input) {
  static const char* save = std::getenv("BATON_FUZZ_SAVE");
  if (save != nullptr) std::ofstream(save, std::ios::binary | std::ios::trunc) << input;
  return LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
}

}  // namespace

int main(int argc, char** argv) {
  int mutations = 200;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--mutations" && i + 1 < argc) {
      mutations = std::atoi(argv[++i]);
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "usage: %s [--mutations N] [FILE...]\n", argv[0]);
      return 2;
    } else {
      files.push_back(a);
    }
  }
  size_t runs = 0;
  for (const std::string& path : files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "cannot read '%s'\n", path.c_str());
      return 2;
    }
    std::ostringstream os;
    os << in.rdbuf();
    Run(os.str());
    ++runs;
  }
  Rng rng{0x9e3779b97f4a7c15ULL};
  for (const std::string& seed : baton::fuzz::Seeds()) {
    Run(seed);
    ++runs;
    for (int m = 0; m < mutations; ++m) {
      Run(Mutate(seed, rng));
      ++runs;
    }
  }
  std::printf("%zu inputs ran\n", runs);
  return 0;
}
