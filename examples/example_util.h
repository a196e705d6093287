// Small helpers shared by the examples (not part of the shmalloc API):
// `--name=value` flags, the hand-off record and socket, the buffer pattern.
//
// The hand-off protocol: the consumer listens on a Unix stream socket (a
// path, so it works on one host and across containers that share the
// volume holding it); the producer connects and writes one HandoffRecord per
// buffer, then closes. Only {offset, size} and a checksum cross the socket;
// the bytes stay where the producer wrote them in shared memory.
#ifndef EXAMPLES_EXAMPLE_UTIL_H_
#define EXAMPLES_EXAMPLE_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>

namespace examples {

// Parses argv's `--name=value` / `--name` into a map; exits 2 on anything
// else or a name not in `known` (a space-separated list).
std::map<std::string, std::string> ParseFlags(int argc, char** argv,
                                              const std::string& known,
                                              const std::string& usage);
std::string Flag(const std::map<std::string, std::string>& flags,
                 const std::string& name, const std::string& fallback);
// Parses "4096", "64K", "1M" (binary); exits 2 when malformed.
uint64_t FlagBytes(const std::map<std::string, std::string>& flags,
                   const std::string& name, uint64_t fallback);

// One buffer handed over, as it crosses the socket (host byte order: both
// ends run on the same machine).
struct HandoffRecord {
  uint64_t sequence;  // 0, 1, 2, ...
  uint64_t offset;    // in the region's data file
  uint64_t size;      // bytes written
  uint64_t checksum;  // FNV-1a 64 of the bytes
};
static_assert(sizeof(HandoffRecord) == 32);

// Returns a listening socket at `path` (a stale socket file is replaced).
int ListenUnix(const std::string& path);
// Connects to `path`, retrying until `timeout_s` seconds have passed (the
// consumer may not be listening yet); exits 1 when it never answers.
int ConnectUnix(const std::string& path, int timeout_s);
// Writes / reads exactly n bytes. ReadFull returns false at a clean EOF
// before the first byte; exits 1 on errors or a torn record.
void WriteFull(int fd, const void* data, size_t n);
bool ReadFull(int fd, void* data, size_t n);

// Fills `bytes` with the pattern of buffer `sequence` and returns its
// checksum; CheckPattern returns the index of the first wrong byte or -1.
uint64_t FillPattern(std::span<std::byte> bytes, uint64_t sequence);
int64_t CheckPattern(std::span<const std::byte> bytes, uint64_t sequence);
uint64_t Checksum(std::span<const std::byte> bytes);

}  // namespace examples

#endif  // EXAMPLES_EXAMPLE_UTIL_H_
