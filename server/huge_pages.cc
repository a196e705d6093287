#include "server/huge_pages.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace shmalloc::server {
namespace {

constexpr int64_t kHugetlbfsMagic = 0x958458f6;
constexpr int64_t kTmpfsMagic = 0x01021994;
constexpr uint64_t kDefaultPmdBytes = uint64_t{2} << 20;
constexpr char kThpDir[] = "/sys/kernel/mm/transparent_hugepage/";

struct Mount {
  std::string point;
  std::string type;
  std::string options;
};

// /proc/self/mounts escapes space, tab, newline and backslash as \ooo.
std::string Unescape(absl::string_view field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      int value = 0;
      bool octal = true;
      for (size_t j = 1; j <= 3; ++j) {
        const char c = field[i + j];
        if (c < '0' || c > '7') {
          octal = false;
        }
        value = value * 8 + (c - '0');
      }
      if (octal) {
        out.push_back(static_cast<char>(value));
        i += 3;
        continue;
      }
    }
    out.push_back(field[i]);
  }
  return out;
}

std::vector<Mount> ReadMounts() {
  std::vector<Mount> mounts;
  std::ifstream in("/proc/self/mounts");
  std::string line;
  while (std::getline(in, line)) {
    std::vector<absl::string_view> f =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 4) {
      continue;
    }
    mounts.push_back({Unescape(f[1]), std::string(f[2].data(), f[2].size()),
                      std::string(f[3].data(), f[3].size())});
  }
  return mounts;
}

bool HasHugeOption(const std::string& options) {
  for (absl::string_view o : absl::StrSplit(options, ',')) {
    if (o == "huge=always" || o == "huge=within_size") {
      return true;
    }
  }
  return false;
}

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

uint64_t PmdBytes() {
  uint64_t bytes = 0;
  std::string text = ReadSmallFile(absl::StrCat(kThpDir, "hpage_pmd_size"));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
    text.pop_back();
  }
  return absl::SimpleAtoi(text, &bytes) && bytes != 0 ? bytes
                                                      : kDefaultPmdBytes;
}

// The mount `path` (a resolved absolute path) is on: the last entry whose
// mount point is `path` or a parent of it.
const Mount* MountOf(const std::vector<Mount>& mounts,
                     const std::string& path) {
  const Mount* best = nullptr;
  for (const Mount& m : mounts) {
    const bool contains =
        m.point == "/" || path == m.point ||
        (absl::StartsWith(path, m.point) && path.size() > m.point.size() &&
         path[m.point.size()] == '/');
    if (contains && (best == nullptr || m.point.size() >= best->point.size())) {
      best = &m;
    }
  }
  return best;
}

constexpr char kWhatToMount[] =
    "mount a hugetlbfs (reserve pages first: echo 64 > "
    "/proc/sys/vm/nr_hugepages; mount -t hugetlbfs none DIR) or a tmpfs with "
    "transparent huge pages (mount -t tmpfs -o huge=always,size=1g none DIR), "
    "then start shmallocd with --huge_dir=DIR (or huge_dir in its config)";

}  // namespace

const char* HugeKindName(HugeKind kind) {
  switch (kind) {
    case HugeKind::kHugetlbfs:
      return "hugetlbfs";
    case HugeKind::kTmpfsThp:
      return "tmpfs-thp";
    default:
      return "none";
  }
}

absl::StatusOr<HugePageDir> InspectHugePageDir(const std::string& dir) {
  struct statfs fs = {};
  if (statfs(dir.c_str(), &fs) != 0) {
    const int err = errno;
    const std::string message =
        absl::StrCat("huge_dir ", dir, ": statfs: ", strerror(err));
    return err == ENOENT ? absl::NotFoundError(message)
                         : absl::FailedPreconditionError(message);
  }
  // Absolute: clients are told this directory (Region.data_dir).
  char resolved[PATH_MAX];
  const std::string path =
      realpath(dir.c_str(), resolved) != nullptr ? resolved : dir;
  HugePageDir out;
  out.dir = path;
  if (static_cast<int64_t>(fs.f_type) == kHugetlbfsMagic) {
    out.kind = HugeKind::kHugetlbfs;
    out.page_bytes = static_cast<uint64_t>(fs.f_bsize);
    return out;
  }
  const std::vector<Mount> mounts = ReadMounts();
  const Mount* mount = MountOf(mounts, path);
  if (static_cast<int64_t>(fs.f_type) == kTmpfsMagic && mount != nullptr &&
      HasHugeOption(mount->options)) {
    const std::string shmem =
        ReadSmallFile(absl::StrCat(kThpDir, "shmem_enabled"));
    if (absl::StrContains(shmem, "[deny]")) {
      return absl::FailedPreconditionError(absl::StrCat(
          "huge_dir ", dir, " is a tmpfs mounted with huge pages, but ",
          kThpDir,
          "shmem_enabled is 'deny' (the kernel gives shared memory "
          "no transparent huge pages): set it to 'advise' or "
          "'always', or use a hugetlbfs"));
    }
    out.kind = HugeKind::kTmpfsThp;
    out.page_bytes = PmdBytes();
    return out;
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "huge_dir ", dir, " offers no huge pages (it is on ",
      mount != nullptr ? absl::StrCat(mount->type, " ", mount->point, " (",
                                      mount->options, ")")
                       : std::string("an unknown file system"),
      "): ", kWhatToMount));
}

std::string NoHugeDirMessage() {
  std::vector<std::string> found;
  for (const Mount& m : ReadMounts()) {
    if (m.type == "hugetlbfs" ||
        (m.type == "tmpfs" && HasHugeOption(m.options))) {
      found.push_back(absl::StrCat(m.type, " at ", m.point));
    }
  }
  return absl::StrCat(
      "this daemon has no huge-page directory: ", kWhatToMount,
      found.empty()
          ? std::string("; this machine has no such mount now")
          : absl::StrCat("; this machine has ", absl::StrJoin(found, ", "),
                         " (use a directory in it that the daemon's "
                         "user owns)"));
}

}  // namespace shmalloc::server
