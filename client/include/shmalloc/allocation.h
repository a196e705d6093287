// shmalloc::client::Allocation: a move-only handle to one allocation the
// daemon made in a region (Region::Allocate / AllocateBatch).
//
// An owning handle frees its extent (Free RPC) when destroyed; a detached
// allocation, or one whose handle was Release()d, is left alone (another
// process, or the caller, frees it by offset). A default-constructed or
// moved-from handle is empty (valid() == false) and does nothing.
//
// A handle frees at most once: its Free RPC carries one request id for the
// handle's lifetime, reused by every retry (inside one call across a daemon
// restart, by a later Free() after an UNAVAILABLE one, and by the
// destructor), and the daemon applies a request id once. The Free carries
// generation() too, so a region reset since is FAILED_PRECONDITION, never a
// free of someone else's block.
//
// Thread-safety: not thread-safe (a value type); distinct handles may be used
// from distinct threads.
#ifndef CLIENT_INCLUDE_SHMALLOC_ALLOCATION_H_
#define CLIENT_INCLUDE_SHMALLOC_ALLOCATION_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "shmalloc/types.h"

namespace shmalloc::client {

class Region;

class Allocation {
 public:
  Allocation() = default;
  // Used by Region. `owning`: free on destruction.
  Allocation(std::shared_ptr<Region> region, Extent extent, uint64_t generation,
             bool owning);
  // Frees the extent if owning; errors are dropped (call Free() to see them).
  ~Allocation();
  Allocation(Allocation&& other) noexcept;
  Allocation& operator=(Allocation&& other) noexcept;
  Allocation(const Allocation&) = delete;
  Allocation& operator=(const Allocation&) = delete;

  bool valid() const { return region_ != nullptr; }
  uint64_t offset() const { return extent_.offset; }
  // Returns the bytes reserved (>= requested).
  uint64_t size() const { return extent_.size_bytes; }
  const Extent& extent() const { return extent_; }
  // Returns the region generation the allocation was made in (as the daemon
  // reported it).
  uint64_t generation() const { return generation_; }
  // Returns true when this handle frees on destruction.
  bool owning() const { return owning_; }
  // Returns the address in this process; nullptr (an empty span) when empty
  // or when the extent is not inside the region's heap as mapped here.
  void* data() const;
  std::span<std::byte> span() const;
  const std::shared_ptr<Region>& region() const { return region_; }

  // Gives up ownership and returns the extent; the handle becomes empty.
  Extent Release();
  // Frees the extent now (whether owning or not) and empties the handle.
  // FAILED_PRECONDITION when empty, when the region was reset since
  // (generation() is not the region's; refused here, no RPC) or deleted and
  // re-created since (Region::CheckIncarnation), or when the daemon refuses
  // (already freed); other errors as Region::Free. On error the handle
  // is unchanged and a later Free() or the destructor retries the same
  // request (see above).
  absl::Status Free();

 private:
  absl::Status FreeOnce();

  std::shared_ptr<Region> region_;
  Extent extent_;
  uint64_t generation_ = 0;
  bool owning_ = false;
  std::string free_request_id_;  // "" until the first free attempt
};

}  // namespace shmalloc::client

#endif  // CLIENT_INCLUDE_SHMALLOC_ALLOCATION_H_
