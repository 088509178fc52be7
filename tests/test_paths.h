// Where the tests find the source tree, the `baton` binary and the helper
// programs they start.
// The paths are compiled into one small library (test_paths.cc) rather than
// into every test, so that a compiler cache shared by several clones of the
// repository reuses every other test object.
#pragma once

namespace baton::testing {
extern const char* const kSourceDir;
extern const char* const kCliPath;
extern const char* const kPriorityClientPath;  // tests/serve_priority_client.cc
}  // namespace baton::testing

#define BATON_SOURCE_DIR ::baton::testing::kSourceDir
#define BATON_CLI ::baton::testing::kCliPath
