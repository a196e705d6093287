// Creates or re-attaches any strategy from its options or its metadata bytes.
//
// Each strategy class X (arena.h, pool.h, buddy.h, slab.h, free_list.h)
// provides the same three static functions, which these dispatch to:
//   static absl::StatusOr<uint64_t> MetadataBytes(const AllocatorOptions&);
//   static absl::StatusOr<std::unique_ptr<X>> Create(std::span<std::byte> meta,
//                                                    const AllocatorOptions&);
//   static absl::StatusOr<std::unique_ptr<X>> Attach(std::span<std::byte>
//   meta);
// Thread-safe (no shared state).
#ifndef ALLOCATORS_FACTORY_H_
#define ALLOCATORS_FACTORY_H_

#include <cstddef>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "allocators/allocator.h"

namespace shmalloc {

// Returns how many metadata bytes `options` needs; INVALID_ARGUMENT for bad
// options (unknown strategy, empty or unaligned range, bad block size, ...).
absl::StatusOr<uint64_t> MetadataBytes(const AllocatorOptions& options);

// Formats `meta` for a fresh, empty allocator over [options.begin,
// options.end). INVALID_ARGUMENT for bad options or a span smaller than
// MetadataBytes(options) (the message names both sizes).
absl::StatusOr<std::unique_ptr<OffsetAllocator>> CreateAllocator(
    std::span<std::byte> meta, const AllocatorOptions& options);

// Re-opens metadata written by CreateAllocator, possibly at another address,
// after checking its header (DATA_LOSS when it is not valid metadata) and
// running CheckInvariants.
absl::StatusOr<std::unique_ptr<OffsetAllocator>> AttachAllocator(
    std::span<std::byte> meta);

}  // namespace shmalloc

#endif  // ALLOCATORS_FACTORY_H_
