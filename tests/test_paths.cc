#include "test_paths.h"

namespace baton::testing {
const char* const kSourceDir = BATON_TEST_SOURCE_DIR;
const char* const kCliPath = BATON_TEST_CLI;
const char* const kPriorityClientPath = BATON_TEST_PRIORITY_CLIENT;
}  // namespace baton::testing
