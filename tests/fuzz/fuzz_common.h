// Helpers shared by the libFuzzer targets in tests/fuzz/: a byte reader over
// the fuzzer's input, options decoded from it for every strategy, an aligned
// metadata buffer, and a model of live extents that checks the strategy
// contract of allocators/allocator.h (in range, never offset 0, aligned,
// disjoint, stats consistent). A violated check aborts with a message, which
// libFuzzer reports as a crash with the input that caused it.
//
// Not thread-safe: one fuzzer thread per process.
#ifndef TESTS_FUZZ_FUZZ_COMMON_H_
#define TESTS_FUZZ_FUZZ_COMMON_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "allocators/allocator.h"

namespace shmalloc::fuzz {

// Aborts with `what` when `cond` is false: a contract violation.
#define SHMALLOC_FUZZ_CHECK(cond, what)                                   \
  do {                                                                    \
    if (!(cond)) {                                                        \
      std::fprintf(stderr, "fuzz check failed: %s (%s) at %s:%d\n", what, \
                   #cond, __FILE__, __LINE__);                            \
      std::abort();                                                       \
    }                                                                     \
  } while (0)

// Reads little-endian integers from the input; past its end it reads zeros.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(U8() | (U8() << 8)); }
  uint32_t U32() { return U16() | (static_cast<uint32_t>(U16()) << 16); }
  uint64_t U64() { return U32() | (static_cast<uint64_t>(U32()) << 32); }
  bool empty() const { return pos_ >= size_; }
  // Returns the unread rest of the input.
  std::span<const uint8_t> Rest() const {
    return {data_ + std::min(pos_, size_), size_ - std::min(pos_, size_)};
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

inline constexpr Strategy kStrategies[] = {Strategy::kArena, Strategy::kPool,
                                           Strategy::kBuddy, Strategy::kSlab,
                                           Strategy::kFreeList};

// Decodes small, mostly valid options for `strategy` from 5 input bytes:
// begin 4096..16384, capacity 1..64 pages minus a tail of 0..3840 bytes, and
// the strategy parameter. Small heaps keep every operation and every
// CheckInvariants cheap, so the fuzzer runs many inputs per second.
inline AllocatorOptions DecodeOptions(Strategy strategy, Reader& in) {
  AllocatorOptions o;
  o.strategy = strategy;
  o.begin = 4096 * (1 + in.U8() % 4);
  const uint64_t pages = 1 + in.U8() % 64;
  o.end = o.begin + pages * 4096 - (in.U8() & 0x0f) * 256;
  const uint8_t p = in.U8();
  switch (strategy) {
    case Strategy::kPool:
      o.block_size = 8 * (1 + p % 64);  // 8..512
      break;
    case Strategy::kBuddy:
      // 32..512: Buddy::CheckInvariants is O(leaves) and dominated the run
      // time with 16-byte leaves (measured with perf).
      o.min_block = uint64_t{32} << (p % 5);
      break;
    case Strategy::kSlab:
      if (p & 1) o.size_classes = {16, 48, 256, 1024};
      break;
    case Strategy::kFreeList:
      o.max_extents = p < 128 ? 0 : (p - 127) * 8;  // default or 8..1024
      break;
    default:
      break;
  }
  return o;
}

// A metadata span with the alignment the segment header gives (64 bytes).
class MetaBuffer {
 public:
  explicit MetaBuffer(size_t size)
      : size_(size),
        bytes_(static_cast<std::byte*>(std::aligned_alloc(64, RoundUp(size)))) {
    std::memset(bytes_, 0, RoundUp(size));
  }
  ~MetaBuffer() { std::free(bytes_); }
  MetaBuffer(const MetaBuffer&) = delete;
  MetaBuffer& operator=(const MetaBuffer&) = delete;
  std::span<std::byte> span() { return {bytes_, size_}; }

 private:
  static size_t RoundUp(size_t n) { return (n + 63) / 64 * 64 + 64; }
  size_t size_;
  std::byte* bytes_;
};

// The live extents an allocator handed out, and the contract checks.
class Model {
 public:
  explicit Model(const OffsetAllocator* a) : a_(a) {}
  // Points the checks at another view of the same metadata (relocation).
  void set_allocator(const OffsetAllocator* a) { a_ = a; }

  // Checks a successful Allocate(size, alignment) and records the extent.
  void Allocated(const Extent& e, uint64_t size, uint64_t alignment) {
    if (alignment == 0) {
      // 0 = kDefaultAlignment, except that a pool caps it at its blocks'
      // natural alignment (pool.h), the lowest set bit of the block size.
      alignment = kDefaultAlignment;
      if (a_->strategy() == Strategy::kPool) {
        alignment = std::min(alignment, e.size_bytes & (0 - e.size_bytes));
      }
    }
    SHMALLOC_FUZZ_CHECK(e.offset != 0, "offset 0 handed out");
    SHMALLOC_FUZZ_CHECK(e.offset >= a_->begin(), "extent below begin");
    SHMALLOC_FUZZ_CHECK(
        e.size_bytes <= a_->end() && e.offset <= a_->end() - e.size_bytes,
        "extent past end");
    SHMALLOC_FUZZ_CHECK(e.size_bytes >= size, "extent smaller than asked");
    SHMALLOC_FUZZ_CHECK(e.offset % alignment == 0, "extent misaligned");
    auto next = live_.lower_bound(e.offset);
    SHMALLOC_FUZZ_CHECK(
        next == live_.end() || e.offset + e.size_bytes <= next->first,
        "extent overlaps the next live one");
    if (next != live_.begin()) {
      auto prev = std::prev(next);
      SHMALLOC_FUZZ_CHECK(prev->first + prev->second.size <= e.offset,
                          "extent overlaps the previous live one");
    }
    live_[e.offset] = {e.size_bytes, size};
  }
  bool IsLive(uint64_t offset) const { return live_.count(offset) != 0; }
  void Freed(uint64_t offset) { live_.erase(offset); }
  void Clear() { live_.clear(); }
  size_t size() const { return live_.size(); }
  // Returns the offset of the `i % size()`-th live extent; REQUIRES size()>0.
  uint64_t Nth(size_t i) const {
    auto it = live_.begin();
    std::advance(it, i % live_.size());
    return it->first;
  }
  uint64_t SizeOf(uint64_t offset) const { return live_.at(offset).size; }

  // Checks that Stats agrees with the model, and the invariants when
  // `invariants` (O(metadata): callers run them on a schedule for speed).
  void CheckStats(bool invariants = true) const {
    if (invariants) {
      const absl::Status inv = a_->CheckInvariants();
      if (!inv.ok()) {
        std::fprintf(stderr, "CheckInvariants: %s\n", inv.ToString().c_str());
      }
      SHMALLOC_FUZZ_CHECK(inv.ok(), "invariants broken after an operation");
    }
    const AllocatorStats s = a_->Stats();
    SHMALLOC_FUZZ_CHECK(s.capacity_bytes == a_->end() - a_->begin(),
                        "capacity != end - begin");
    SHMALLOC_FUZZ_CHECK(s.used_bytes + s.free_bytes == s.capacity_bytes,
                        "used + free != capacity");
    SHMALLOC_FUZZ_CHECK(s.largest_free_bytes <= s.free_bytes,
                        "largest free > free");
    SHMALLOC_FUZZ_CHECK(s.peak_used_bytes >= s.used_bytes, "peak < used");
    uint64_t reserved = 0, requested = 0;
    for (const auto& [offset, e] : live_) {
      reserved += e.size;
      requested += e.requested;
    }
    if (a_->strategy() == Strategy::kArena) {
      SHMALLOC_FUZZ_CHECK(s.used_bytes >= reserved, "arena used < handed out");
      return;
    }
    SHMALLOC_FUZZ_CHECK(s.live_allocations == live_.size(),
                        "live_allocations != model");
    SHMALLOC_FUZZ_CHECK(s.used_bytes == reserved, "used_bytes != model");
    SHMALLOC_FUZZ_CHECK(s.requested_bytes == requested,
                        "requested_bytes != model");
  }

 private:
  struct Live {
    uint64_t size;       // reserved
    uint64_t requested;  // asked for
  };
  const OffsetAllocator* a_;
  std::map<uint64_t, Live> live_;
};

}  // namespace shmalloc::fuzz

#endif  // TESTS_FUZZ_FUZZ_COMMON_H_
