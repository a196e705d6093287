// libFuzzer target: operation sequences against each strategy, checked by a
// model of the live extents (tests/fuzz/fuzz_common.h).
//
// Input: byte 0 picks the strategy, the next 4 bytes the geometry
// (DecodeOptions), then each operation is one opcode byte and its arguments:
//   Allocate (size, alignment)      extent in range, aligned, disjoint, != 0
//   Free of a live extent           OK (Arena: FAILED_PRECONDITION)
//   Free of a non-live offset       refused, state unchanged
//   SizeOf of live / non-live       the model's size / refused
//   FreeBatch of 1..3 offsets       OK iff all live and distinct, else
//                                   refused with the state unchanged
//   Reset, or relocation            (copy the metadata, Attach the copy)
// After every operation Stats must agree with the model, and CheckInvariants
// must hold (checked after each of the first 8 operations, every 32nd after
// that, and at the end). Anything else aborts, which libFuzzer reports with the
// input.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <set>
#include <vector>

#include "absl/status/status.h"
#include "allocators/factory.h"
#include "tests/fuzz/fuzz_common.h"

namespace shmalloc::fuzz {
namespace {

constexpr int kMaxOps = 256;

bool SameCounts(const AllocatorStats& a, const AllocatorStats& b) {
  return a.used_bytes == b.used_bytes && a.free_bytes == b.free_bytes &&
         a.live_allocations == b.live_allocations &&
         a.requested_bytes == b.requested_bytes &&
         a.largest_free_bytes == b.largest_free_bytes;
}

uint64_t DecodeAlignment(uint8_t b) {
  return b % 14 == 0 ? 0 : uint64_t{1} << (b % 14 - 1);  // 0, 1..4096
}

int Run(const uint8_t* data, size_t size) {
  Reader in(data, size);
  const Strategy strategy = kStrategies[in.U8() % 5];
  const AllocatorOptions options = DecodeOptions(strategy, in);
  absl::StatusOr<uint64_t> bytes = MetadataBytes(options);
  if (!bytes.ok()) return 0;  // a geometry this strategy refuses
  auto meta = std::make_unique<MetaBuffer>(*bytes);
  absl::StatusOr<std::unique_ptr<OffsetAllocator>> created =
      CreateAllocator(meta->span(), options);
  SHMALLOC_FUZZ_CHECK(created.ok(), "Create refused what MetadataBytes took");
  std::unique_ptr<OffsetAllocator> a = *std::move(created);
  const bool arena = strategy == Strategy::kArena;
  const uint64_t capacity = a->end() - a->begin();
  Model model(a.get());
  model.CheckStats();

  for (int op = 0; op < kMaxOps && !in.empty(); ++op) {
    const AllocatorStats before = a->Stats();
    switch (in.U8() % 8) {
      case 0:
      case 1:
      case 2: {  // Allocate: small, any up to capacity + 1, or raw
        const uint8_t kind = in.U8();
        uint64_t sz = kind % 3 == 0   ? 1 + in.U8()
                      : kind % 3 == 1 ? 1 + in.U32() % (capacity + 1)
                                      : in.U64();
        const uint64_t alignment = DecodeAlignment(in.U8());
        absl::StatusOr<Extent> e = a->Allocate(sz, alignment);
        if (e.ok()) {
          model.Allocated(*e, sz, alignment);
        } else {
          const absl::StatusCode c = e.status().code();
          SHMALLOC_FUZZ_CHECK(c == absl::StatusCode::kResourceExhausted ||
                                  c == absl::StatusCode::kInvalidArgument,
                              "Allocate failed with an unexpected code");
          SHMALLOC_FUZZ_CHECK(SameCounts(before, a->Stats()),
                              "a failed Allocate changed the state");
        }
        break;
      }
      case 3: {  // Free a live extent
        if (model.size() == 0) break;
        const uint64_t off = model.Nth(in.U16());
        const absl::Status s = a->Free(off);
        if (arena) {
          SHMALLOC_FUZZ_CHECK(s.code() == absl::StatusCode::kFailedPrecondition,
                              "arena Free not FAILED_PRECONDITION");
        } else {
          SHMALLOC_FUZZ_CHECK(s.ok(), "Free of a live extent refused");
          model.Freed(off);
        }
        break;
      }
      case 4: {  // Free / SizeOf of a non-live offset
        const uint64_t off =
            (in.U8() & 1) ? in.U64()
                          : a->begin() - 64 + in.U32() % (capacity + 128);
        if (model.IsLive(off)) break;
        SHMALLOC_FUZZ_CHECK(!a->Free(off).ok(), "Free of a non-live offset");
        SHMALLOC_FUZZ_CHECK(!a->SizeOf(off).ok(),
                            "SizeOf of a non-live offset");
        SHMALLOC_FUZZ_CHECK(SameCounts(before, a->Stats()),
                            "a refused Free changed the state");
        break;
      }
      case 5: {  // SizeOf of a live extent
        if (model.size() == 0) break;
        const uint64_t off = model.Nth(in.U16());
        absl::StatusOr<uint64_t> got = a->SizeOf(off);
        if (arena) {
          SHMALLOC_FUZZ_CHECK(!got.ok(), "arena SizeOf answered");
        } else {
          SHMALLOC_FUZZ_CHECK(got.ok() && *got == model.SizeOf(off),
                              "SizeOf of a live extent wrong");
        }
        break;
      }
      case 6: {  // FreeBatch of 1..3 offsets, live or not, maybe duplicated
        const int n = 1 + in.U8() % 3;
        std::vector<uint64_t> offsets;
        std::set<uint64_t> distinct;
        bool all_live = true;
        uint64_t released = 0;
        for (int i = 0; i < n; ++i) {
          const uint8_t pick = in.U8();
          uint64_t off;
          if (pick % 4 != 0 && model.size() > 0) {
            off = model.Nth(pick);
          } else {
            off = a->begin() + in.U32() % (capacity + 1);
          }
          offsets.push_back(off);
          all_live &= model.IsLive(off) && distinct.insert(off).second;
          if (model.IsLive(off)) released += model.SizeOf(off);
        }
        absl::StatusOr<uint64_t> got = a->FreeBatch(offsets);
        if (all_live && !arena) {
          SHMALLOC_FUZZ_CHECK(got.ok(), "FreeBatch of distinct live refused");
          SHMALLOC_FUZZ_CHECK(*got == released, "FreeBatch released bytes");
          for (uint64_t off : offsets) model.Freed(off);
        } else {
          SHMALLOC_FUZZ_CHECK(!got.ok(), "FreeBatch with a bad offset passed");
          SHMALLOC_FUZZ_CHECK(SameCounts(before, a->Stats()),
                              "a refused FreeBatch changed the state");
        }
        break;
      }
      case 7: {
        if (in.U8() & 1) {  // Reset
          a->Reset();
          model.Clear();
          break;
        }
        // Relocation: a byte copy elsewhere is the same allocator.
        auto copy = std::make_unique<MetaBuffer>(*bytes);
        std::memcpy(copy->span().data(), meta->span().data(), *bytes);
        std::memset(meta->span().data(), 0xa5, *bytes);  // the old view is dead
        absl::StatusOr<std::unique_ptr<OffsetAllocator>> moved =
            AttachAllocator(copy->span());
        SHMALLOC_FUZZ_CHECK(moved.ok(), "Attach of a relocated copy refused");
        a = *std::move(moved);
        meta = std::move(copy);
        model.set_allocator(a.get());
        SHMALLOC_FUZZ_CHECK(SameCounts(before, a->Stats()),
                            "relocation changed the stats");
        break;
      }
    }
    // Invariants after each of the first 8 operations, then after every
    // 32nd: CheckInvariants is O(metadata) and dominated the run time.
    model.CheckStats(op < 8 || op % 32 == 0);
  }
  model.CheckStats();
  return 0;
}

}  // namespace
}  // namespace shmalloc::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return shmalloc::fuzz::Run(data, size);
}
