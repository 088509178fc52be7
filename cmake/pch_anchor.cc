// Anchor for the precompiled headers that targets reuse (CMakeLists.txt, tests/CMakeLists.txt).
