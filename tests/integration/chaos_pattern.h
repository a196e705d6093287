// The byte pattern kill9_test's clients write into every allocation, and the
// request tags both sides agree on. A word depends on the allocation's offset,
// the tag of the request that made it and its index, so a block handed out
// twice (or freed and reused) shows up as a wrong word.
//
// Thread-safety: pure functions.
#ifndef TESTS_INTEGRATION_CHAOS_PATTERN_H_
#define TESTS_INTEGRATION_CHAOS_PATTERN_H_

#include <cstdint>

namespace shmalloc::testing {

// Returns word `index` of the allocation at `offset` made by request `tag`
// (SplitMix64 of the three).
inline uint64_t ChaosWord(uint64_t offset, uint64_t tag, uint64_t index) {
  uint64_t z = offset * 0x9E3779B97F4A7C15ULL ^ tag * 0xD1B54A32D192ED03ULL ^
               (index + 1) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Returns the tag of request `seq` of client `client` (also its pattern key).
inline uint64_t ChaosTag(uint64_t client, uint64_t seq) {
  return (client << 40) | seq;
}

}  // namespace shmalloc::testing

#endif  // TESTS_INTEGRATION_CHAOS_PATTERN_H_
