// SessionStore and SessionTable over a real file in a temp dir: format,
// reopen, refusal of other layouts, and crash atomicity of every change at
// every crash point (fork; the child _exit()s at the k-th UndoLog crash
// point; the parent reopens and finds the table exactly before or after).
#include "server/session_store.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/ended_sessions.h"
#include "server/session_table.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/server/temp_dir.h"

namespace shmalloc::server {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::IsOkAndHolds;
using ::shmalloc::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int kCrashExit = 42;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::fstream out(path, std::ios::binary | std::ios::in | std::ios::out);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The table's content: the file without its undo log area (whose stale
// entries and commit counter differ between a committed and a rolled-back
// run without meaning anything).
std::string Content(const std::string& file) {
  const std::string bytes = ReadFile(file);
  const uint64_t log_end =
      kSessionFileHeaderBytes + UndoLogBytes(kSessionLogEntries);
  return bytes.substr(0, kSessionFileHeaderBytes) + bytes.substr(log_end);
}

std::unique_ptr<SessionStore> AttachOrDie(const std::string& dir,
                                          uint64_t* recovered = nullptr) {
  absl::StatusOr<std::unique_ptr<SessionStore>> store =
      SessionStore::Attach(dir, 4, 1000, recovered);
  EXPECT_THAT(store, IsOk());
  return store.ok() ? *std::move(store) : nullptr;
}

TEST(SessionStoreTest, FormatCreatesAnEmptyFileWithMode0600) {
  TempDir dir;
  std::unique_ptr<SessionStore> store = AttachOrDie(dir.path());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->capacity(), 4u);
  EXPECT_NE(store->next_id(), 0u);
  for (uint32_t i = 0; i < 4; ++i) EXPECT_EQ(store->record(i).id, 0u);
  struct stat st;
  ASSERT_EQ(stat(dir.File(kSessionFileName).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST(SessionStoreTest, RecordsSurviveReopen) {
  TempDir dir;
  uint64_t id;
  {
    std::unique_ptr<SessionStore> store = AttachOrDie(dir.path());
    absl::StatusOr<SessionStore::Inserted> in =
        store->Insert(TokenHash("secret"), 77, "client-a", 5000);
    ASSERT_THAT(in, IsOk());
    id = in->id;
    store->SetState(in->slot, SessionState::kOrphaned, 6000);
  }
  std::unique_ptr<SessionStore> store = AttachOrDie(dir.path());
  const SessionRecord& r = store->record(0);
  EXPECT_EQ(r.id, id);
  EXPECT_EQ(r.token_hash, TokenHash("secret"));
  EXPECT_EQ(r.pid, 77);
  EXPECT_EQ(r.state, static_cast<uint32_t>(SessionState::kOrphaned));
  EXPECT_EQ(r.orphaned_since_ms, 6000);
  EXPECT_EQ(std::string(r.client_name, r.client_name_bytes), "client-a");
  EXPECT_EQ(store->next_id(), id + 1);
}

TEST(SessionStoreTest, InsertRefusesALongNameAndAFullFile) {
  TempDir dir;
  std::unique_ptr<SessionStore> store = AttachOrDie(dir.path());
  EXPECT_THAT(store->Insert(1, 0, std::string(129, 'x'), 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  for (int i = 0; i < 4; ++i) ASSERT_THAT(store->Insert(i, 0, "c", 0), IsOk());
  EXPECT_THAT(store->Insert(9, 0, "c", 0),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(SessionStoreTest, TokenHashIsStableSha256Prefix) {
  // sha256(16 zero bytes) begins 37 47 08 ff f7 71 9d d5.
  EXPECT_EQ(TokenHash(std::string(16, '\0')), 0xd59d71f7ff084737ULL);
  EXPECT_NE(TokenHash("a"), TokenHash("b"));
}

TEST(SessionStoreTest, AnotherLayoutVersionIsRefusedSayingSo) {
  TempDir dir;
  AttachOrDie(dir.path());
  std::string bytes = ReadFile(dir.File(kSessionFileName));
  const uint32_t other = kSessionFileLayoutVersion + 1;
  std::memcpy(bytes.data() + 8, &other, sizeof(other));
  WriteFile(dir.File(kSessionFileName), bytes);
  absl::StatusOr<std::unique_ptr<SessionStore>> store =
      SessionStore::Attach(dir.path(), 4, 0);
  EXPECT_THAT(store, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store.status().message(), HasSubstr("layout version 2"));
}

TEST(SessionStoreTest, BadMagicIsDataLossAndAnUnfinishedFormatIsRedone) {
  TempDir dir;
  AttachOrDie(dir.path());
  std::string bytes = ReadFile(dir.File(kSessionFileName));
  bytes[0] ^= 1;
  WriteFile(dir.File(kSessionFileName), bytes);
  EXPECT_THAT(SessionStore::Attach(dir.path(), 4, 0),
              StatusIs(absl::StatusCode::kDataLoss));
  std::memset(bytes.data(), 0, 8);  // magic never written: format cut short
  WriteFile(dir.File(kSessionFileName), bytes);
  EXPECT_NE(AttachOrDie(dir.path()), nullptr);
}

// Runs `op` on the store in `dir` in a child that dies at crash point k;
// returns the child's exit code.
int RunWithCrashAt(const std::string& dir, uint64_t k,
                   const std::function<void(const std::string&)>& op) {
  const pid_t pid = fork();
  if (pid == 0) {
    UndoLog::SetCrashPoint(k, kCrashExit);
    op(dir);
    _exit(0);
  }
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A file with an undo log: its name, what of it counts as content, and
// how to re-attach it (which rolls back; returns the words rolled back).
struct LoggedFile {
  std::string name;
  std::function<std::string(const std::string& path)> content;
  std::function<uint64_t(const std::string& dir)> attach;
};

const LoggedFile kSessionFile{kSessionFileName, Content,
                              [](const std::string& dir) {
                                uint64_t recovered = 0;
                                AttachOrDie(dir, &recovered);
                                return recovered;
                              }};

// Crashes `op` at every crash point in turn and checks that re-attaching
// `logged` leaves its content exactly before or exactly after it, once
// `setup` has run on a fresh dir. Returns the number of crash points
// covered.
uint64_t CheckEveryCrashPoint(
    const std::string& name, const LoggedFile& logged,
    const std::function<void(const std::string&)>& setup,
    const std::function<void(const std::string&)>& op) {
  TempDir dir;
  const std::string file = dir.File(logged.name);
  setup(dir.path());
  const std::string raw_before = ReadFile(file);
  const std::string before = logged.content(file);
  EXPECT_EQ(RunWithCrashAt(dir.path(), 0, op), 0);
  EXPECT_EQ(logged.attach(dir.path()), 0u);
  const std::string after = logged.content(file);
  EXPECT_NE(before, after) << name << " changed nothing";
  uint64_t k = 1;
  uint64_t saw_before = 0, saw_after = 0;
  for (;; ++k) {
    WriteFile(file, raw_before);
    const int code = RunWithCrashAt(dir.path(), k, op);
    if (code == 0) break;  // the op completed: k - 1 points covered
    EXPECT_EQ(code, kCrashExit);
    logged.attach(dir.path());  // rolls back
    const std::string now = logged.content(file);
    if (now == before) {
      ++saw_before;
    } else if (now == after) {
      ++saw_after;
    } else {
      ADD_FAILURE() << name << ": crash point " << k
                    << " left a state neither before nor after";
    }
  }
  EXPECT_GT(saw_before, 0u);
  EXPECT_GT(saw_after, 0u);
  std::printf("%s: %llu crash points covered (%llu rolled back, %llu kept)\n",
              name.c_str(), static_cast<unsigned long long>(k - 1),
              static_cast<unsigned long long>(saw_before),
              static_cast<unsigned long long>(saw_after));
  return k - 1;
}

void InsertTwo(SessionStore& store) {
  ASSERT_THAT(store.Insert(TokenHash("t1"), 1, "one", 100), IsOk());
  ASSERT_THAT(store.Insert(TokenHash("t2"), 2, "two", 200), IsOk());
}

// Runs `setup` on the session store of a fresh `dir`.
std::function<void(const std::string&)> OnStore(
    std::function<void(SessionStore&)> setup) {
  return [setup = std::move(setup)](const std::string& dir) {
    std::unique_ptr<SessionStore> store = AttachOrDie(dir);
    setup(*store);
  };
}

TEST(SessionStoreCrashTest, EveryChangeIsAllOrNothingAtEveryCrashPoint) {
  uint64_t total = 0;
  total += CheckEveryCrashPoint(
      "insert", kSessionFile, OnStore(InsertTwo), [](const std::string& d) {
        auto store = SessionStore::Attach(d, 4, 0);
        if (!store.ok() ||
            !(*store)->Insert(TokenHash("t3"), 3, "three", 300).ok())
          _exit(1);
      });
  for (SessionState state :
       {SessionState::kOrphaned, SessionState::kClosing, SessionState::kOpen}) {
    total += CheckEveryCrashPoint(
        "set_state", kSessionFile, OnStore([](SessionStore& s) {
          InsertTwo(s);
          s.SetState(1, SessionState::kOrphaned, 50);
        }),
        [state](const std::string& d) {
          auto store = SessionStore::Attach(d, 4, 0);
          if (!store.ok()) _exit(1);
          (*store)->SetState(state == SessionState::kOrphaned ? 0 : 1, state,
                             999);
        });
  }
  total += CheckEveryCrashPoint("erase", kSessionFile, OnStore(InsertTwo),
                                [](const std::string& d) {
                                  auto store = SessionStore::Attach(d, 4, 0);
                                  if (!store.ok()) _exit(1);
                                  (*store)->Erase(0);
                                });
  std::printf("session store: %llu crash points covered in all\n",
              static_cast<unsigned long long>(total));
  EXPECT_GT(total, 0u);
}

// SessionTable::Attach orphans record by record (one transaction each): a
// crash part way leaves some orphaned, and the next Attach finishes the job.
TEST(SessionStoreCrashTest, TableAttachCrashedAnywhereOrphansAllNextTime) {
  TempDir dir;
  {
    SessionTable table(4, 1000);
    ASSERT_THAT(table.Attach(dir.path(), absl::FromUnixMillis(1)), IsOk());
    for (int i = 0; i < 3; ++i) {
      ASSERT_THAT(table.Open("c", i, absl::FromUnixMillis(2)), IsOk());
    }
  }
  const std::string file = dir.File(kSessionFileName);
  const std::string raw = ReadFile(file);
  uint64_t k = 1;
  for (;; ++k) {
    WriteFile(file, raw);
    const int code = RunWithCrashAt(dir.path(), k, [](const std::string& d) {
      SessionTable table(4, 1000);
      if (!table.Attach(d, absl::FromUnixMillis(10)).ok()) _exit(1);
    });
    if (code == 0) break;
    ASSERT_EQ(code, kCrashExit);
    SessionTable table(4, 1000);
    ASSERT_THAT(table.Attach(dir.path(), absl::FromUnixMillis(20)), IsOk());
    EXPECT_EQ(table.orphaned(), 3u) << "crash point " << k;
    EXPECT_EQ(table.open(), 0u);
  }
  std::printf("table attach: %llu crash points covered\n",
              static_cast<unsigned long long>(k - 1));
}

TEST(SessionTableTest, OpenCheckResumeCloseLifecycle) {
  TempDir dir;
  const absl::Time t0 = absl::FromUnixMillis(1'000'000);
  SessionTable::Opened a;
  {
    SessionTable table(8, 500);
    ASSERT_THAT(table.Attach(dir.path(), t0), IsOk());
    absl::StatusOr<SessionTable::Opened> opened = table.Open("a", 11, t0);
    ASSERT_THAT(opened, IsOk());
    a = *opened;
    EXPECT_NE(a.id, 0u);
    EXPECT_EQ(a.token.size(), kSessionTokenBytes);
    EXPECT_THAT(table.Check(a.id, a.token), IsOk());
    EXPECT_THAT(table.Check(a.id, ""),
                StatusIs(absl::StatusCode::kPermissionDenied));
    EXPECT_THAT(table.Check(a.id, std::string(16, 'x')),
                StatusIs(absl::StatusCode::kPermissionDenied));
    EXPECT_THAT(table.Check(a.id + 1, a.token),
                StatusIs(absl::StatusCode::kNotFound));
    EXPECT_THAT(table.Resume(a.token, t0),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    EXPECT_EQ(table.ClientName(a.id), "a");
    EXPECT_EQ(table.OrphanAll(t0), 1u);
  }
  // A restart: the orphan waits grace_ms from the start.
  const absl::Time t1 = t0 + absl::Seconds(5);
  SessionTable table(8, 500);
  ASSERT_THAT(table.Attach(dir.path(), t1), IsOk());
  EXPECT_EQ(table.orphaned(), 1u);
  EXPECT_EQ(table.NextOrphanDeadline(), t1 + absl::Milliseconds(500));
  EXPECT_THAT(table.Resume("nope", t1), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(table.Resume(a.token, t1), IsOkAndHolds(a.id));
  EXPECT_EQ(table.resumed_total(), 1u);
  EXPECT_EQ(table.open(), 1u);
  EXPECT_TRUE(table.BeginClose(a.id));
  EXPECT_FALSE(table.IsOpen(a.id));
  EXPECT_THAT(table.Check(a.id, a.token),
              StatusIs(absl::StatusCode::kNotFound));
  table.Remove(a.id);
  // Gone, but its name is remembered for the leak report.
  EXPECT_EQ(table.ClientName(a.id), "a");
  EXPECT_TRUE(table.Label(a.id).ended);
  // Ids are never reused.
  absl::StatusOr<SessionTable::Opened> b = table.Open("b", 0, t1);
  ASSERT_THAT(b, IsOk());
  EXPECT_GT(b->id, a.id);
}

TEST(SessionTableTest, OrphanPastGraceIsExpiredAndTaken) {
  TempDir dir;
  const absl::Time t0 = absl::FromUnixMillis(1'000'000);
  std::string token;
  {
    SessionTable table(8, 500);
    ASSERT_THAT(table.Attach(dir.path(), t0), IsOk());
    token = table.Open("a", 0, t0)->token;
  }
  SessionTable table(8, 500);
  ASSERT_THAT(table.Attach(dir.path(), t0), IsOk());
  EXPECT_TRUE(table.TakeExpired(t0 + absl::Milliseconds(499)).empty());
  EXPECT_THAT(table.Resume(token, t0 + absl::Milliseconds(500)),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(table.TakeExpired(t0 + absl::Milliseconds(500)).size(), 1u);
  EXPECT_EQ(table.reclaimed_total(), 1u);
  EXPECT_EQ(table.NextOrphanDeadline(), std::nullopt);
}

// The ended-session ring: content without its undo log area.
std::string EndedContent(const std::string& file) {
  const std::string bytes = ReadFile(file);
  const uint64_t log_end =
      kEndedSessionsHeaderBytes + UndoLogBytes(kEndedSessionsLogEntries);
  return bytes.substr(0, kEndedSessionsHeaderBytes) + bytes.substr(log_end);
}

std::unique_ptr<EndedSessions> AttachEndedOrDie(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<EndedSessions>> ended =
      EndedSessions::Attach(dir, 2);
  EXPECT_THAT(ended, IsOk());
  return ended.ok() ? *std::move(ended) : nullptr;
}

std::string NameOf(const std::optional<EndedSession>& e) {
  return e.has_value() ? std::string(e->client_name, e->client_name_bytes)
                       : "(none)";
}

TEST(EndedSessionsTest, NamesSurviveReopenAndTheRingForgetsTheOldest) {
  TempDir dir;
  {
    std::unique_ptr<EndedSessions> ended = AttachEndedOrDie(dir.path());
    ASSERT_NE(ended, nullptr);
    ended->Append(11, 101, "first", 1, 2);
    ended->Append(12, 102, std::string(200, 'x'), 3, 4);  // cut to 128
    EXPECT_EQ(NameOf(ended->Find(11)), "first");
  }
  struct stat st;
  ASSERT_EQ(stat(dir.File(kEndedSessionsFileName).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  std::unique_ptr<EndedSessions> ended = AttachEndedOrDie(dir.path());
  EXPECT_EQ(ended->appended(), 2u);
  EXPECT_EQ(NameOf(ended->Find(11)), "first");
  EXPECT_EQ(ended->Find(11)->pid, 101);
  EXPECT_EQ(ended->Find(11)->ended_at_ms, 2);
  EXPECT_EQ(NameOf(ended->Find(12)), std::string(128, 'x'));
  ended->Append(13, 0, "third", 5, 6);  // capacity 2: 11 is forgotten
  EXPECT_EQ(ended->Find(11), std::nullopt);
  EXPECT_EQ(NameOf(ended->Find(13)), "third");
  ended = AttachEndedOrDie(dir.path());
  EXPECT_EQ(ended->Find(11), std::nullopt);
  EXPECT_EQ(NameOf(ended->Find(12)), std::string(128, 'x'));
  EXPECT_EQ(NameOf(ended->Find(13)), "third");
}

TEST(EndedSessionsTest, BadMagicIsDataLoss) {
  TempDir dir;
  AttachEndedOrDie(dir.path());
  std::string bytes = ReadFile(dir.File(kEndedSessionsFileName));
  bytes[0] ^= 1;
  WriteFile(dir.File(kEndedSessionsFileName), bytes);
  EXPECT_THAT(EndedSessions::Attach(dir.path(), 2),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(EndedSessionsTest, AppendIsAllOrNothingAtEveryCrashPoint) {
  const LoggedFile ended_file{kEndedSessionsFileName, EndedContent,
                              [](const std::string& dir) -> uint64_t {
                                AttachEndedOrDie(dir);
                                return 0;
                              }};
  // The ring is full, so the append overwrites its oldest entry.
  const uint64_t covered = CheckEveryCrashPoint(
      "ended append", ended_file,
      [](const std::string& dir) {
        std::unique_ptr<EndedSessions> ended = AttachEndedOrDie(dir);
        ended->Append(1, 1, "one", 1, 1);
        ended->Append(2, 2, "two", 2, 2);
      },
      [](const std::string& d) {
        auto ended = EndedSessions::Attach(d, 2);
        if (!ended.ok()) _exit(1);
        (*ended)->Append(3, 3, "three", 3, 3);
      });
  EXPECT_GT(covered, 0u);
}

TEST(SessionTableTest, RemovedSessionKeepsItsNameMarkedEndedAcrossRestart) {
  TempDir dir;
  const absl::Time t0 = absl::FromUnixMillis(1'000'000);
  uint64_t id = 0;
  {
    SessionTable table(8, 500);
    ASSERT_THAT(table.Attach(dir.path(), t0), IsOk());
    absl::StatusOr<SessionTable::Opened> opened = table.Open("leaky", 7, t0);
    ASSERT_THAT(opened, IsOk());
    id = opened->id;
    EXPECT_EQ(table.Label(id).client_name, "leaky");
    EXPECT_FALSE(table.Label(id).ended);
    ASSERT_TRUE(table.BeginClose(id));
    table.Remove(id, t0 + absl::Seconds(1));
    EXPECT_EQ(table.Label(id).client_name, "leaky");
    EXPECT_TRUE(table.Label(id).ended);
  }
  SessionTable table(8, 500);
  ASSERT_THAT(table.Attach(dir.path(), t0 + absl::Seconds(2)), IsOk());
  EXPECT_EQ(table.ClientName(id), "leaky");
  EXPECT_TRUE(table.Label(id).ended);
  EXPECT_EQ(table.Label(id + 1000).client_name, "");
}

}  // namespace
}  // namespace shmalloc::server
