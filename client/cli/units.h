// Byte counts and offsets as the `shmalloc` CLI reads and prints them.
// Thread-safe (pure functions).
#ifndef CLIENT_CLI_UNITS_H_
#define CLIENT_CLI_UNITS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace shmalloc::cli {

// Parses "4096", "64K", "64KiB", "64kb", "1.5M", "2G", "1T": an unsigned
// number with an optional binary suffix (K = 1024, case-insensitive, "B",
// "iB" optional). Returns INVALID_ARGUMENT for anything else, a fraction that
// leaves part of a byte, or a value past 2^64 - 1.
absl::StatusOr<uint64_t> ParseBytes(absl::string_view text);

// Parses an offset: decimal or 0x-prefixed hexadecimal. INVALID_ARGUMENT
// otherwise.
absl::StatusOr<uint64_t> ParseOffset(absl::string_view text);

// Returns `bytes` for people: "512 B", "64.0 KiB", "1.50 GiB" (3 significant
// digits from KiB up).
std::string FormatBytes(uint64_t bytes);

}  // namespace shmalloc::cli

#endif  // CLIENT_CLI_UNITS_H_
