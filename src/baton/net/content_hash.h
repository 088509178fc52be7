// The content hash that names a partition on an agent (its cache key and
// handle): SHA-256 of the exact ONNX bytes, 64 lowercase hex digits. An agent
// shares its cache across clients, so the key must resist a client that crafts
// bytes to collide with another client's partition; a 64-bit non-cryptographic
// hash would not.
#pragma once

#include <string>
#include <string_view>

namespace baton::net {

inline constexpr size_t kContentHashHexDigits = 64;

std::string Sha256Hex(std::string_view bytes);

// 32 random hex digits (128 bits from std::random_device and the clock): an
// agent's instance, which changes on every start, and a client's id.
std::string RandomHexId();

}  // namespace baton::net
