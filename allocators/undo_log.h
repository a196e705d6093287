// UndoLog: makes a group of metadata stores one crash-atomic transaction.
//
// The daemon can die at any instruction (kill -9, the OOM killer). Every
// store it makes to a region's metadata lands in the page cache of a
// MAP_SHARED tmpfs file and survives the process, so what a crash can leave
// behind is a transaction cut short: some words written, some not. Before a
// word of `base` is first changed in a transaction, Touch() appends its old
// value to the log and publishes the new length; Commit() truncates the log.
// Recover() (at attach) or Abort() (in process, e.g. a batch that fails part
// way) writes the old values back, newest first, so the metadata is exactly
// as it was when the transaction began. No fsync is involved: kill -9 loses
// no store that reached the page cache (prior art: SQLite's rollback
// journal, PMDK libpmemobj's undo log). docs/design/durability.md has the
// argument for every crash point.
//
// Byte layout of the log area (little-endian, 8-byte aligned; 64 + 16 *
// capacity bytes):
//   0   magic      u64   kUndoLogMagic
//   8   capacity   u64   entries the area holds
//   16  length     u64   entries valid (atomic; 0 = nothing to undo)
//   24  committed  u64   transactions committed since format (diagnostic)
//   32  reserved   u64[4], zero
//   64  entries    {u64 offset; u64 old_value}[capacity]; offset is bytes
//                  from the start of `base`, a multiple of 8
//
// Invariants: length <= capacity; every entry [0, length) names a distinct
// 8-byte word inside `base` (a word is logged once per transaction, so the
// log of a transaction is bounded by the words it changes); outside a
// transaction length == 0.
//
// Crash points. A test build can end the process (_exit) at the k-th crash
// point: the start of every Touch, the moment after a Touch published its
// entry (before the caller's store), before and after the commit store, and
// before every store of a rollback (Abort or Recover).
// Between two consecutive crash points at most one metadata store happens
// (or the stores to one run logged by LogFresh, every word of it logged
// before the first store), so covering every k covers every store.
//
// Thread-safety: not thread-safe; one transaction at a time, under the
// owner's lock. Touch costs one predictable branch when no transaction is
// open (the allocators call it on every store).
#ifndef ALLOCATORS_UNDO_LOG_H_
#define ALLOCATORS_UNDO_LOG_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace shmalloc {

inline constexpr uint64_t kUndoLogMagic = 0x31474f4c4f444e55ULL;  // UNDOLOG1
inline constexpr uint64_t kUndoLogHeaderBytes = 64;
inline constexpr uint64_t kUndoLogEntryBytes = 16;

struct UndoLogHeader {
  uint64_t magic;                // kUndoLogMagic
  uint64_t capacity;             // entries the area holds
  std::atomic<uint64_t> length;  // entries valid; 0 outside a transaction
  uint64_t committed;            // transactions committed (diagnostic)
  uint64_t reserved[4];          // zero
};
static_assert(sizeof(UndoLogHeader) == kUndoLogHeaderBytes);
static_assert(offsetof(UndoLogHeader, length) == 16);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

struct UndoLogEntry {
  uint64_t offset;     // bytes from the start of base; multiple of 8
  uint64_t old_value;  // the word's value before the transaction
};
static_assert(sizeof(UndoLogEntry) == kUndoLogEntryBytes);

// Returns the bytes of a log area holding `capacity` entries.
inline constexpr uint64_t UndoLogBytes(uint64_t capacity) {
  return kUndoLogHeaderBytes + kUndoLogEntryBytes * capacity;
}

class UndoLog {
 public:
  // Formats `area` as an empty log over `base` (`area` may lie inside
  // `base`; the log never logs its own words). INVALID_ARGUMENT when `area`
  // is not 8-byte aligned or holds no entry. Not thread-safe.
  static absl::StatusOr<UndoLog> Format(std::span<std::byte> base,
                                        std::span<std::byte> area);

  // Re-opens a log formatted over `base`. DATA_LOSS for a bad magic, a
  // capacity that does not fit `area`, or length > capacity. Does not roll
  // back: call Recover(). Not thread-safe.
  static absl::StatusOr<UndoLog> Open(std::span<std::byte> base,
                                      std::span<std::byte> area);

  UndoLog(UndoLog&&) = default;
  UndoLog& operator=(UndoLog&&) = default;

  // Writes back every logged word, newest first, and empties the log; the
  // metadata is then as before the interrupted transaction. Returns the
  // number of entries undone; DATA_LOSS (nothing written) when an entry
  // names a word outside `base` or not 8-byte aligned. Idempotent: a crash
  // during Recover is recovered by the next Recover. Not thread-safe.
  absl::StatusOr<uint64_t> Recover();

  // Opens a transaction. REQUIRES: none open.
  void Begin();

  // Logs the 8-byte word containing `addr` unless this transaction already
  // logged it. No-op outside a transaction. REQUIRES: the word lies in
  // `base` and the log has room (capacity is sized by the caller for the
  // largest transaction it allows; running out is a bug and aborts).
  void Touch(const void* addr) {
    if (!open_) return;
    // The words touched again and again (a strategy's counters and list
    // heads) are found among the last few logged without the filter; the
    // crash point at the start of every Touch is kept.
    const uintptr_t word = reinterpret_cast<uintptr_t>(addr) & ~uintptr_t{7};
    for (uintptr_t recent : recent_) {
      if (recent == word) {
        if (crash_armed_) MarkCrashPoint();
        return;
      }
    }
    TouchSlow(addr);
  }
  // Logs every word overlapping [addr, addr + bytes).
  void TouchRange(const void* addr, uint64_t bytes);

  // Logs the `words` 8-byte words at `addr` (8-byte aligned) with one
  // publish of the length and no filter lookup: for a run of words the
  // caller stores to only once in this transaction (an owner record being
  // filled or emptied). A word logged twice is harmless (the rollback
  // writes the oldest value last) but takes log room, so use it only where
  // the transaction's bound counts each word once. Crash points: before the
  // entries and after the publish. No-op outside a transaction.
  void LogFresh(const void* addr, uint64_t words) {
    if (open_) LogFreshSlow(addr, words);
  }

  // Makes the transaction's stores permanent (truncates the log).
  void Commit();

  // Rolls the open transaction back in process (as Recover) and closes it.
  void Abort();

  bool open() const { return open_; }
  uint64_t capacity() const { return header()->capacity; }
  // Entries logged by the open transaction (0 when none is open).
  uint64_t length() const {
    return header()->length.load(std::memory_order_relaxed);
  }
  // Transactions committed since Format.
  uint64_t committed() const { return header()->committed; }

  // Test hook: end the process with _exit(exit_code) at the k-th crash point
  // counted from now, across every UndoLog in the process (k >= 1; 0 turns
  // the hook off). Crash points: see the file comment.
  static void SetCrashPoint(uint64_t k, int exit_code);
  // Crash points passed since SetCrashPoint (to size an exhaustive loop).
  static uint64_t CrashPointsPassed();
  // Marks a crash point outside a transaction: between the steps of an
  // unlogged, restartable operation (the redo half of a reset).
  static void MarkCrashPoint();

 private:
  UndoLog(std::span<std::byte> base, std::span<std::byte> area)
      : base_(base), area_(area) {}
  UndoLogHeader* header() const {
    return reinterpret_cast<UndoLogHeader*>(area_.data());
  }
  UndoLogEntry* entries() const {
    return reinterpret_cast<UndoLogEntry*>(area_.data() + kUndoLogHeaderBytes);
  }
  void TouchSlow(const void* addr);
  // Aborts naming the check of TouchSlow that `addr` (with `length` entries
  // logged) fails.
  [[noreturn]] void BadTouch(const void* addr, uint64_t length) const;
  void LogFreshSlow(const void* addr, uint64_t words);
  // Checks that [offset, offset + 8 * words) is metadata outside the log.
  void CheckWords(uint64_t offset, uint64_t words) const;
  // Writes entries [0, n) back, newest first, then publishes length 0.
  void Undo(uint64_t n);
  // Returns true when `offset` was already logged in this transaction, and
  // remembers it otherwise.
  bool Seen(uint64_t offset);
  // Rehashes the filter into a table for at least `want` offsets.
  void Grow(uint64_t want);

  std::span<std::byte> base_;
  std::span<std::byte> area_;
  bool open_ = false;
  // The offsets this transaction logged, as an open-addressing table whose
  // slots count only when their stamp is the transaction's: starting a
  // transaction costs one increment, not a clear (a hash set's clear frees
  // and regrows its table every big batch, which dominated the batch path).
  std::vector<uint64_t> slot_offset_;
  std::vector<uint32_t> slot_stamp_;
  uint32_t stamp_ = 0;
  uint64_t seen_ = 0;  // offsets the filter holds for this transaction
  // Addresses of the last words TouchSlow found or logged in this
  // transaction (0 = none; cleared by Begin), round robin.
  static constexpr int kRecent = 4;
  uintptr_t recent_[kRecent] = {};
  int recent_next_ = 0;
  // Whether SetCrashPoint armed the hook (any log in the process).
  static inline bool crash_armed_ = false;
};

// Runs `op` as one transaction on `log` (null: no logging): commits when it
// returns OK, aborts (rolls back) otherwise, and returns its status.
template <typename Op>
absl::Status InTransaction(UndoLog* log, Op&& op) {
  if (log == nullptr) return op();
  log->Begin();
  absl::Status status = op();
  if (status.ok()) {
    log->Commit();
  } else {
    log->Abort();
  }
  return status;
}

}  // namespace shmalloc

#endif  // ALLOCATORS_UNDO_LOG_H_
