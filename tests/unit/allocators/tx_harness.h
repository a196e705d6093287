// Crash-test harness for the undo-logged allocators: one strategy's metadata
// and its UndoLog in one MAP_SHARED anonymous mapping, so a forked child's
// stores (the ones it made before UndoLog's crash-point hook _exit()ed it) are
// what the parent finds, exactly as a restarted daemon finds a dead daemon's
// stores in the page cache of its meta file.
//
// Mapping layout (offsets from its start):
//   0            metadata       meta_bytes   (the allocator's span)
//   meta_bytes   zero padding                (up to log_offset, 64-aligned)
//   log_offset   UndoLog area   UndoLogBytes(log_entries)
// The log's base is the whole mapping (as in the daemon, where the log shares
// the meta file with what it logs); snapshots cover [0, log_offset), i.e.
// everything but the log.
//
// Thread-safety: none; one test thread (and its forked children).
#ifndef TESTS_UNIT_ALLOCATORS_TX_HARNESS_H_
#define TESTS_UNIT_ALLOCATORS_TX_HARNESS_H_

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "allocators/allocator.h"
#include "allocators/factory.h"
#include "allocators/undo_log.h"

namespace shmalloc::testing {

// A MAP_SHARED | MAP_ANONYMOUS mapping, zero-filled, unmapped on destruction.
// Shared with every child forked while it is mapped.
class SharedMapping {
 public:
  explicit SharedMapping(uint64_t bytes) : size_(bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    data_ = p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
  }
  ~SharedMapping() {
    if (data_ != nullptr) munmap(data_, size_);
  }
  SharedMapping(const SharedMapping&) = delete;
  SharedMapping& operator=(const SharedMapping&) = delete;

  bool ok() const { return data_ != nullptr; }
  std::byte* data() const { return data_; }
  uint64_t size() const { return size_; }
  std::span<std::byte> span() const { return {data_, size_}; }

 private:
  std::byte* data_ = nullptr;
  uint64_t size_ = 0;
};

// One strategy over a shared mapping with an undo log in its tail.
class TxRegion {
 public:
  // Formats the metadata for `options` and an empty log of `log_entries`
  // entries, and sets the log on the allocator. Errors from MetadataBytes,
  // CreateAllocator, UndoLog::Format; INTERNAL when mmap fails.
  static absl::StatusOr<std::unique_ptr<TxRegion>> Create(
      const AllocatorOptions& options, uint64_t log_entries) {
    absl::StatusOr<uint64_t> meta_bytes = MetadataBytes(options);
    if (!meta_bytes.ok()) return meta_bytes.status();
    const uint64_t log_offset = AlignUp(*meta_bytes, 64);
    std::unique_ptr<TxRegion> r(new TxRegion(
        *meta_bytes, log_offset, log_offset + UndoLogBytes(log_entries)));
    if (!r->map_.ok()) {
      return absl::InternalError(absl::StrCat("mmap: ", std::strerror(errno)));
    }
    absl::StatusOr<std::unique_ptr<OffsetAllocator>> a =
        CreateAllocator(r->meta(), options);
    if (!a.ok()) return a.status();
    absl::StatusOr<UndoLog> log = UndoLog::Format(r->base(), r->log_area());
    if (!log.ok()) return log.status();
    r->allocator_ = std::move(*a);
    r->log_.emplace(std::move(*log));
    r->allocator_->set_undo_log(&*r->log_);
    return r;
  }

  OffsetAllocator& allocator() const { return *allocator_; }
  UndoLog& log() { return *log_; }
  std::span<std::byte> base() const { return map_.span(); }
  std::span<std::byte> meta() const { return {map_.data(), meta_bytes_}; }
  std::span<std::byte> log_area() const {
    return {map_.data() + log_offset_, map_.size() - log_offset_};
  }

  // The bytes the allocator owns (everything but the log).
  std::vector<std::byte> Snapshot() const {
    return {map_.data(), map_.data() + log_offset_};
  }
  // The whole mapping, log included (to restore a prepared state exactly).
  std::vector<std::byte> SnapshotAll() const {
    return {map_.data(), map_.data() + map_.size()};
  }
  // Writes back a SnapshotAll() and re-attaches. Errors as for Reattach.
  absl::Status RestoreAll(const std::vector<std::byte>& all) {
    std::memcpy(map_.data(), all.data(), map_.size());
    return Reattach(/*recover=*/false).status();
  }

  // What a restarted daemon does: re-opens the log (UndoLog::Open), rolls
  // an interrupted transaction back when `recover`, re-attaches the
  // allocator (AttachAllocator, which runs CheckInvariants) and sets the log
  // on it. Returns the entries undone. Errors from those calls.
  absl::StatusOr<uint64_t> Reattach(bool recover = true) {
    absl::StatusOr<UndoLog> log = UndoLog::Open(base(), log_area());
    if (!log.ok()) return log.status();
    uint64_t undone = 0;
    if (recover) {
      absl::StatusOr<uint64_t> n = log->Recover();
      if (!n.ok()) return n.status();
      undone = *n;
    }
    absl::StatusOr<std::unique_ptr<OffsetAllocator>> a =
        AttachAllocator(meta());
    if (!a.ok()) return a.status();
    allocator_ = std::move(*a);
    log_.emplace(std::move(*log));
    allocator_->set_undo_log(&*log_);
    return undone;
  }

  // The metadata offsets (from the start of the mapping, multiples of 8) of
  // the entries [0, length) of the log, read from the log area itself.
  absl::flat_hash_set<uint64_t> LoggedOffsets() const {
    const std::byte* area = map_.data() + log_offset_;
    const auto* header = reinterpret_cast<const UndoLogHeader*>(area);
    const uint64_t n = header->length.load(std::memory_order_acquire);
    const auto* entries =
        reinterpret_cast<const UndoLogEntry*>(area + kUndoLogHeaderBytes);
    absl::flat_hash_set<uint64_t> offsets;
    for (uint64_t i = 0; i < n; ++i) offsets.insert(entries[i].offset);
    return offsets;
  }

 private:
  TxRegion(uint64_t meta_bytes, uint64_t log_offset, uint64_t total)
      : map_(total), meta_bytes_(meta_bytes), log_offset_(log_offset) {}

  SharedMapping map_;
  uint64_t meta_bytes_;
  uint64_t log_offset_;
  std::unique_ptr<OffsetAllocator> allocator_;
  std::optional<UndoLog> log_;
};

// Returns the offsets (multiples of 8) of the 8-byte words in which `a` and
// `b` differ. REQUIRES: equal sizes, a multiple of 8.
inline std::vector<uint64_t> DifferingWords(std::span<const std::byte> a,
                                            std::span<const std::byte> b) {
  std::vector<uint64_t> words;
  for (uint64_t w = 0; w + 8 <= a.size() && w + 8 <= b.size(); w += 8) {
    if (std::memcmp(a.data() + w, b.data() + w, 8) != 0) words.push_back(w);
  }
  return words;
}

// Returns "" when equal, else which words differ (at most a few named).
inline std::string DescribeDifference(std::span<const std::byte> a,
                                      std::span<const std::byte> b) {
  if (a.size() != b.size()) {
    return absl::StrCat("sizes differ: ", a.size(), " vs ", b.size());
  }
  const std::vector<uint64_t> words = DifferingWords(a, b);
  if (words.empty()) return "";
  std::string out = absl::StrCat(words.size(), " words differ, at");
  for (size_t i = 0; i < words.size() && i < 8; ++i) {
    uint64_t x, y;
    std::memcpy(&x, a.data() + words[i], 8);
    std::memcpy(&y, b.data() + words[i], 8);
    absl::StrAppend(&out, " [", words[i], "] ", absl::Hex(x), " vs ",
                    absl::Hex(y));
  }
  return out;
}

// Forks; the child runs `child` and then _exit(0) (`child` may _exit itself,
// e.g. from UndoLog's crash hook). Returns the child's exit code, or
// 128 + signal when a signal ended it, or -1 when fork/waitpid failed.
// REQUIRES: the calling process has one thread (fork copies only it).
inline int RunInChild(const std::function<void()>& child) {
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    child();
    _exit(0);
  }
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid, &status, 0);
  } while (r < 0 && errno == EINTR);
  if (r != pid) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// The seed for randomized tests: SHMALLOC_SEED when set, else random. The
// caller prints it.
inline uint64_t TestSeed() {
  if (const char* env = std::getenv("SHMALLOC_SEED"); env != nullptr) {
    return std::strtoull(env, nullptr, 0);
  }
  return std::random_device{}() | (uint64_t{std::random_device{}()} << 32);
}

}  // namespace shmalloc::testing

#endif  // TESTS_UNIT_ALLOCATORS_TX_HARNESS_H_
