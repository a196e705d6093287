#include "allocators/factory.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "allocators/arena.h"
#include "allocators/buddy.h"
#include "allocators/free_list.h"
#include "allocators/pool.h"
#include "allocators/slab.h"
#include "common/status_macros.h"

namespace shmalloc {
namespace {

// Calls `fn.template operator()<X>()` with the strategy class X of `strategy`.
template <typename Fn>
auto Dispatch(Strategy strategy, Fn&& fn)
    -> decltype(fn.template operator()<Arena>()) {
  switch (strategy) {
    case Strategy::kArena:
      return fn.template operator()<Arena>();
    case Strategy::kPool:
      return fn.template operator()<Pool>();
    case Strategy::kBuddy:
      return fn.template operator()<Buddy>();
    case Strategy::kSlab:
      return fn.template operator()<Slab>();
    case Strategy::kFreeList:
      return fn.template operator()<FreeList>();
    case Strategy::kUnspecified:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown strategy ", static_cast<uint32_t>(strategy)));
}

}  // namespace

absl::StatusOr<uint64_t> MetadataBytes(const AllocatorOptions& options) {
  return Dispatch(options.strategy,
                  [&]<typename X>() { return X::MetadataBytes(options); });
}

absl::StatusOr<std::unique_ptr<OffsetAllocator>> CreateAllocator(
    std::span<std::byte> meta, const AllocatorOptions& options) {
  return Dispatch(
      options.strategy,
      [&]<typename X>() -> absl::StatusOr<std::unique_ptr<OffsetAllocator>> {
        SHMALLOC_ASSIGN_OR_RETURN(std::unique_ptr<X> allocator,
                                  X::Create(meta, options));
        return std::unique_ptr<OffsetAllocator>(std::move(allocator));
      });
}

absl::StatusOr<std::unique_ptr<OffsetAllocator>> AttachAllocator(
    std::span<std::byte> meta) {
  if (meta.size() < sizeof(MetaHeader)) {
    return absl::DataLossError(absl::StrCat("metadata span of ", meta.size(),
                                            " bytes is smaller than a header"));
  }
  MetaHeader header;
  std::memcpy(&header, meta.data(), sizeof(header));
  if (header.magic != kMetaMagic) {
    return absl::DataLossError("metadata has no shmalloc magic");
  }
  auto result = Dispatch(
      static_cast<Strategy>(header.strategy),
      [&]<typename X>() -> absl::StatusOr<std::unique_ptr<OffsetAllocator>> {
        SHMALLOC_ASSIGN_OR_RETURN(std::unique_ptr<X> allocator,
                                  X::Attach(meta));
        return std::unique_ptr<OffsetAllocator>(std::move(allocator));
      });
  // An unknown strategy in a header with a valid magic is corrupt metadata,
  // not a bad argument.
  if (result.status().code() == absl::StatusCode::kInvalidArgument) {
    return absl::DataLossError(result.status().message());
  }
  return result;
}

}  // namespace shmalloc
