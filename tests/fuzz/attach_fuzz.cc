// libFuzzer target: arbitrary bytes as allocator metadata. AttachAllocator
// (allocators/factory.h) must either refuse them with a Status or return an
// allocator whose CheckInvariants holds; a few operations on it must then
// keep the invariants, count consistently and hand out extents only inside
// [begin, end) and never at offset 0. Nothing may crash, read or write out
// of the span (ASan), or hit undefined behaviour (UBSan).
//
// Input: byte 0 is a selector, the rest is the metadata span. Selector bits
// 0..2 pick a strategy (mod 5); bit 3 patches the header's magic, layout
// version and strategy fields to valid values and bit 4 its meta_bytes to the
// span size, so the fuzzer spends its time behind the header checks instead
// of rediscovering the magic. Without bit 3 the header is used as given.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "allocators/factory.h"
#include "tests/fuzz/fuzz_common.h"

namespace shmalloc::fuzz {
namespace {

constexpr size_t kMaxMeta = 1 << 20;

int Run(const uint8_t* data, size_t size) {
  if (size < 1 || size - 1 > kMaxMeta) return 0;
  const uint8_t selector = data[0];
  const Strategy strategy = kStrategies[(selector & 7) % 5];
  MetaBuffer meta(size - 1);
  std::memcpy(meta.span().data(), data + 1, size - 1);
  if (size - 1 >= sizeof(MetaHeader)) {
    MetaHeader h;
    std::memcpy(&h, meta.span().data(), sizeof(h));
    if (selector & 8) {
      h.magic = kMetaMagic;
      h.layout_version = kMetaLayoutVersion;
      h.strategy = static_cast<uint32_t>(strategy);
    }
    if (selector & 16) h.meta_bytes = size - 1;
    std::memcpy(meta.span().data(), &h, sizeof(h));
  }
  absl::StatusOr<std::unique_ptr<OffsetAllocator>> attached =
      AttachAllocator(meta.span());
  if (!attached.ok()) return 0;
  OffsetAllocator& a = **attached;
  {
    const absl::Status inv = a.CheckInvariants();
    if (!inv.ok()) {
      std::fprintf(stderr, "CheckInvariants: %s\n", inv.ToString().c_str());
    }
    SHMALLOC_FUZZ_CHECK(inv.ok(),
                        "Attach accepted metadata that fails "
                        "CheckInvariants");
  }
  SHMALLOC_FUZZ_CHECK(a.begin() > 0 && a.begin() < a.end(),
                      "attached with an empty or zero-based range");
  const bool arena = a.strategy() == Strategy::kArena;
  const AllocatorStats s0 = a.Stats();
  SHMALLOC_FUZZ_CHECK(s0.used_bytes + s0.free_bytes == s0.capacity_bytes,
                      "used + free != capacity on attach");

  // New extents, checked against each other (the ones live before Attach
  // are unknown to us; CheckInvariants covers those).
  Model model(&a);
  uint64_t reserved = 0, count = 0;
  const uint64_t sizes[] = {1, 8, 16, 24, 64, 100, 512, 4096, 40000};
  for (int i = 0; i < 24; ++i) {
    const uint64_t sz = sizes[i % std::size(sizes)];
    const uint64_t alignment = uint64_t{1} << (i % 7);
    absl::StatusOr<Extent> e = a.Allocate(sz, alignment);
    if (!e.ok()) continue;
    model.Allocated(*e, sz, alignment);
    reserved += e->size_bytes;
    ++count;
  }
  const AllocatorStats s1 = a.Stats();
  SHMALLOC_FUZZ_CHECK(a.CheckInvariants().ok(), "invariants after Allocate");
  SHMALLOC_FUZZ_CHECK(s1.used_bytes + s1.free_bytes == s1.capacity_bytes,
                      "used + free != capacity after Allocate");
  if (!arena) {
    SHMALLOC_FUZZ_CHECK(s1.live_allocations == s0.live_allocations + count,
                        "live_allocations did not grow by the count");
    SHMALLOC_FUZZ_CHECK(s1.used_bytes == s0.used_bytes + reserved,
                        "used_bytes did not grow by the extents");
    // Free every other new extent, then refuse a double free of it.
    for (size_t i = 0; i < model.size(); i += 2) {
      const uint64_t off = model.Nth(i);
      SHMALLOC_FUZZ_CHECK(a.Free(off).ok(), "Free of a new extent refused");
      SHMALLOC_FUZZ_CHECK(!a.Free(off).ok(), "double free accepted");
    }
    SHMALLOC_FUZZ_CHECK(a.CheckInvariants().ok(), "invariants after Free");
  }
  a.Reset();
  const AllocatorStats s2 = a.Stats();
  SHMALLOC_FUZZ_CHECK(a.CheckInvariants().ok(), "invariants after Reset");
  SHMALLOC_FUZZ_CHECK(s2.used_bytes == 0 && s2.free_bytes == s2.capacity_bytes,
                      "Reset did not empty the allocator");
  absl::StatusOr<Extent> e = a.Allocate(1, 0);
  if (e.ok()) {
    Model fresh(&a);
    fresh.Allocated(*e, 1, 0);
  }
  return 0;
}

}  // namespace
}  // namespace shmalloc::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return shmalloc::fuzz::Run(data, size);
}
