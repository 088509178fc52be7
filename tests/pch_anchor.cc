// Anchor for the precompiled header the tests share (tests/CMakeLists.txt).
