#include "allocators/undo_log.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace shmalloc {
namespace {

// The crash-point hook is process-wide: one counter across every log, so a
// test can stop an operation that spans several transactions at any store.
uint64_t crash_at = 0;      // 0 = off
uint64_t crash_passed = 0;  // crash points passed since SetCrashPoint
int crash_exit_code = 0;

// A compiler barrier: a crash is observed like a signal handler would see
// the process, at an instruction boundary in program order, so ordering the
// compiler's stores is all that is needed (kill -9 loses nothing that was
// stored; the CPU's store buffer drains on its own).
inline void Fence() { std::atomic_signal_fence(std::memory_order_seq_cst); }

inline void CrashPoint() {
  if (crash_at == 0) return;
  if (++crash_passed == crash_at) _exit(crash_exit_code);
}

}  // namespace

void UndoLog::SetCrashPoint(uint64_t k, int exit_code) {
  crash_armed_ = k != 0;
  crash_at = k;
  crash_passed = 0;
  crash_exit_code = exit_code;
}

uint64_t UndoLog::CrashPointsPassed() { return crash_passed; }

void UndoLog::MarkCrashPoint() { CrashPoint(); }

absl::StatusOr<UndoLog> UndoLog::Format(std::span<std::byte> base,
                                        std::span<std::byte> area) {
  if (reinterpret_cast<uintptr_t>(area.data()) % 8 != 0 ||
      area.size() < UndoLogBytes(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("an undo log needs an 8-byte aligned area of at least ",
                     UndoLogBytes(1), " bytes (got ", area.size(), ")"));
  }
  UndoLog log(base, area);
  UndoLogHeader* h = log.header();
  std::memset(static_cast<void*>(h), 0, kUndoLogHeaderBytes);
  h->capacity = (area.size() - kUndoLogHeaderBytes) / kUndoLogEntryBytes;
  Fence();
  h->magic = kUndoLogMagic;
  return log;
}

absl::StatusOr<UndoLog> UndoLog::Open(std::span<std::byte> base,
                                      std::span<std::byte> area) {
  if (reinterpret_cast<uintptr_t>(area.data()) % 8 != 0 ||
      area.size() < kUndoLogHeaderBytes) {
    return absl::DataLossError("undo log area is too small or misaligned");
  }
  UndoLog log(base, area);
  const UndoLogHeader* h = log.header();
  if (h->magic != kUndoLogMagic) {
    return absl::DataLossError("undo log has a bad magic");
  }
  if (h->capacity == 0 ||
      h->capacity > (area.size() - kUndoLogHeaderBytes) / kUndoLogEntryBytes) {
    return absl::DataLossError(absl::StrCat("undo log capacity ", h->capacity,
                                            " does not fit its area of ",
                                            area.size(), " bytes"));
  }
  const uint64_t length = h->length.load(std::memory_order_acquire);
  if (length > h->capacity) {
    return absl::DataLossError(absl::StrCat(
        "undo log length ", length, " exceeds its capacity ", h->capacity));
  }
  return log;
}

absl::StatusOr<uint64_t> UndoLog::Recover() {
  SHMALLOC_CHECK(!open_) << "Recover inside a transaction";
  const uint64_t n = header()->length.load(std::memory_order_acquire);
  const UndoLogEntry* e = entries();
  for (uint64_t i = 0; i < n; ++i) {
    if (e[i].offset % 8 != 0 || e[i].offset > base_.size() - 8) {
      return absl::DataLossError(absl::StrCat("undo log entry ", i,
                                              " names offset ", e[i].offset,
                                              " outside the metadata"));
    }
  }
  Undo(n);
  return n;
}

void UndoLog::Begin() {
  SHMALLOC_CHECK(!open_) << "nested transaction";
  SHMALLOC_CHECK(length() == 0) << "transaction begun over an unrecovered log";
  open_ = true;
  seen_ = 0;
  std::fill(std::begin(recent_), std::end(recent_), 0);
  if (++stamp_ == 0) {  // wrapped: old stamps could match again
    std::fill(slot_stamp_.begin(), slot_stamp_.end(), 0);
    stamp_ = 1;
  }
}

bool UndoLog::Seen(uint64_t offset) {
  // Keep the table at most half full. Its population is the words logged
  // through it; runs logged by LogFresh never enter it.
  if (2 * (seen_ + 1) > slot_offset_.size()) Grow(2 * (seen_ + 1));
  const uint64_t mask = slot_offset_.size() - 1;
  // Offsets are multiples of 8 and mostly dense: a multiplicative hash
  // spreads neighbouring words over the table.
  for (uint64_t i = ((offset >> 3) * 0x9e3779b97f4a7c15ULL) >> 20;; ++i) {
    i &= mask;
    if (slot_stamp_[i] != stamp_) {
      slot_stamp_[i] = stamp_;
      slot_offset_[i] = offset;
      ++seen_;
      return false;
    }
    if (slot_offset_[i] == offset) return true;
  }
}

void UndoLog::Grow(uint64_t want) {
  uint64_t size = 64;
  while (size < 2 * want) size *= 2;
  std::vector<uint64_t> old_offset(size, 0);
  std::vector<uint32_t> old_stamp(size, 0);
  old_offset.swap(slot_offset_);
  old_stamp.swap(slot_stamp_);
  const uint32_t old = stamp_;
  stamp_ = 1;
  const uint64_t mask = size - 1;
  for (size_t j = 0; j < old_stamp.size(); ++j) {
    if (old_stamp[j] != old) continue;
    for (uint64_t i = ((old_offset[j] >> 3) * 0x9e3779b97f4a7c15ULL) >> 20;;
         ++i) {
      i &= mask;
      if (slot_stamp_[i] != stamp_) {
        slot_stamp_[i] = stamp_;
        slot_offset_[i] = old_offset[j];
        break;
      }
    }
  }
}

void UndoLog::CheckWords(uint64_t offset, uint64_t words) const {
  SHMALLOC_CHECK(words <= base_.size() / 8 &&
                 offset + 8 * words <= base_.size())
      << "undo log: a store to a word that straddles the end of the metadata";
  const auto* first = base_.data() + offset;
  SHMALLOC_CHECK(first + 8 * words <= area_.data() ||
                 first >= area_.data() + area_.size())
      << "undo log: a store into the log itself";
}

// The checks' failure paths, out of line so TouchSlow needs no stream
// object (a 400-byte frame) on every call.
[[noreturn]] [[gnu::cold]] [[gnu::noinline]] void UndoLog::BadTouch(
    const void* addr, uint64_t length) const {
  const auto* p = static_cast<const std::byte*>(addr);
  SHMALLOC_CHECK(p >= base_.data() && p < base_.data() + base_.size())
      << "undo log: a store outside the logged metadata";
  const uint64_t offset = static_cast<uint64_t>(p - base_.data()) & ~7ULL;
  CheckWords(offset, 1);
  SHMALLOC_CHECK(length < header()->capacity)
      << "undo log full (" << header()->capacity
      << " entries): the transaction bound is wrong";
  SHMALLOC_CHECK(false) << "undo log: bad Touch";
  std::abort();
}

void UndoLog::TouchSlow(const void* addr) {
  CrashPoint();
  // The same checks as CheckWords, as unsigned compares: the word lies in
  // base (a pointer below base wraps to a huge offset) and not in the log.
  const uint64_t rel = reinterpret_cast<uintptr_t>(addr) -
                       reinterpret_cast<uintptr_t>(base_.data());
  const uint64_t offset = rel & ~7ULL;
  const uint64_t area_rel = reinterpret_cast<uintptr_t>(area_.data()) -
                            reinterpret_cast<uintptr_t>(base_.data());
  UndoLogHeader* h = header();
  const uint64_t n = h->length.load(std::memory_order_relaxed);
  if (rel >= base_.size() || offset + 8 > base_.size() ||
      (offset + 8 > area_rel && offset < area_rel + area_.size()))
      [[unlikely]] {
    BadTouch(addr, n);
  }
  const auto* word = base_.data() + offset;
  recent_[recent_next_] = reinterpret_cast<uintptr_t>(word);
  recent_next_ = (recent_next_ + 1) % kRecent;
  if (Seen(offset)) return;
  if (n >= h->capacity) [[unlikely]] {
    BadTouch(addr, n);
  }
  UndoLogEntry& entry = entries()[n];
  entry.offset = offset;
  std::memcpy(&entry.old_value, word, 8);
  // release (and the fence): the entry is complete before the length that
  // makes it count, and the caller's store comes after both.
  h->length.store(n + 1, std::memory_order_release);
  Fence();
  CrashPoint();
}

void UndoLog::LogFreshSlow(const void* addr, uint64_t words) {
  CrashPoint();
  if (words == 0) return;
  const auto* p = static_cast<const std::byte*>(addr);
  SHMALLOC_CHECK(p >= base_.data() && p < base_.data() + base_.size() &&
                 (p - base_.data()) % 8 == 0)
      << "undo log: an unaligned run or one outside the logged metadata";
  const auto offset = static_cast<uint64_t>(p - base_.data());
  CheckWords(offset, words);
  UndoLogHeader* h = header();
  const uint64_t n = h->length.load(std::memory_order_relaxed);
  SHMALLOC_CHECK(words <= h->capacity - n)
      << "undo log full (" << h->capacity
      << " entries): the transaction bound is wrong";
  UndoLogEntry* entry = entries() + n;
  for (uint64_t i = 0; i < words; ++i) {
    entry[i].offset = offset + 8 * i;
    std::memcpy(&entry[i].old_value, p + 8 * i, 8);
  }
  // As in TouchSlow: the entries are complete before the length that makes
  // them count, and the caller's stores come after both.
  h->length.store(n + words, std::memory_order_release);
  Fence();
  CrashPoint();
}

void UndoLog::TouchRange(const void* addr, uint64_t bytes) {
  if (!open_ || bytes == 0) return;
  const auto start = reinterpret_cast<uintptr_t>(addr) & ~uintptr_t{7};
  const auto end = reinterpret_cast<uintptr_t>(addr) + bytes;
  for (uintptr_t w = start; w < end; w += 8) {
    TouchSlow(reinterpret_cast<const void*>(w));
  }
}

void UndoLog::Commit() {
  SHMALLOC_CHECK(open_) << "Commit without Begin";
  CrashPoint();
  Fence();
  UndoLogHeader* h = header();
  // The commit point: one store. Before it the transaction rolls back, after
  // it the stores stand. `committed` is diagnostic and written after.
  h->length.store(0, std::memory_order_release);
  Fence();
  ++h->committed;
  open_ = false;
  CrashPoint();
}

void UndoLog::Abort() {
  SHMALLOC_CHECK(open_) << "Abort without Begin";
  Undo(length());
  open_ = false;
}

void UndoLog::Undo(uint64_t n) {
  const UndoLogEntry* e = entries();
  for (uint64_t i = n; i-- > 0;) {
    // A crash here leaves the log whole: the next Recover writes the same
    // old values again (idempotent).
    CrashPoint();
    std::memcpy(base_.data() + e[i].offset, &e[i].old_value, 8);
  }
  Fence();
  header()->length.store(0, std::memory_order_release);
  Fence();
}

}  // namespace shmalloc
