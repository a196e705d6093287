// StableHash64: a 64-bit hash of bytes that is the same in every process and
// every build (unlike absl::Hash, which is seeded per process), for values
// persisted in files: AIP-155 request ids. Not cryptographic: the input is
// chosen by the session that owns the record, so a collision can only hurt
// that session. (Session tokens are hashed with SHA-256 instead:
// server/session_store.h.)
//
// Thread-safety: a pure function.
#ifndef COMMON_STABLE_HASH_H_
#define COMMON_STABLE_HASH_H_

#include <cstdint>
#include <string_view>

namespace shmalloc {

// Returns FNV-1a 64 of `bytes`, finalised with the splitmix64 mixer; never 0
// (0 means "none" in the records that store it).
inline uint64_t StableHash64(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h == 0 ? 1 : h;
}

}  // namespace shmalloc

#endif  // COMMON_STABLE_HASH_H_
