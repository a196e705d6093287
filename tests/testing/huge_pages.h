// Private huge-page mounts for huge_pages_test and first_touch_bench: a
// tmpfs or hugetlbfs mounted in a fresh temp dir (root only), and a
// temporary raise of the hugetlbfs pool. Both undo themselves on
// destruction and say why when they could not be set up, so a caller can
// print "NOT RUN: <why>" instead of skipping silently.
#ifndef TESTS_TESTING_HUGE_PAGES_H_
#define TESTS_TESTING_HUGE_PAGES_H_

#include <limits.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"

namespace shmalloc::testing {

// A mount of `type` with `options` in a new directory under `parent`,
// unmounted (lazily if still busy) and removed on destruction. dir() is
// resolved (realpath): the daemon reports its --huge_dir that way.
class TempMount {
 public:
  TempMount(const std::string& parent, const char* type,
            const std::string& options) {
    std::string pattern = parent + "/huge_mount.XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      why_not_ = absl::StrCat("mkdtemp in ", parent, ": ", strerror(errno));
      return;
    }
    char resolved[PATH_MAX];
    dir_ = realpath(pattern.c_str(), resolved) != nullptr ? resolved : pattern;
    if (geteuid() != 0) {
      why_not_ = "not root (mount needs CAP_SYS_ADMIN)";
      return;
    }
    if (mount("none", dir_.c_str(), type, 0, options.c_str()) != 0) {
      why_not_ = absl::StrCat("mount -t ", type, " -o ", options, ": ",
                              strerror(errno));
      return;
    }
    mounted_ = true;
  }
  ~TempMount() {
    if (mounted_ && umount(dir_.c_str()) != 0) {
      umount2(dir_.c_str(), MNT_DETACH);
    }
    if (!dir_.empty()) {
      rmdir(dir_.c_str());
    }
  }
  TempMount(const TempMount&) = delete;
  TempMount& operator=(const TempMount&) = delete;

  bool mounted() const { return mounted_; }
  const std::string& why_not() const { return why_not_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string why_not_;
};

// Makes at least `pages` huge pages free in the pool for its lifetime
// (raising /proc/sys/vm/nr_hugepages), restoring the old count.
class HugePagePool {
 public:
  explicit HugePagePool(uint64_t pages) {
    std::ifstream("/proc/sys/vm/nr_hugepages") >> old_total_;
    const uint64_t free_now = FreeHugePages();
    if (free_now >= pages) {
      ok_ = true;
      return;
    }
    raised_ = Write(old_total_ + (pages - free_now));
    ok_ = raised_ && FreeHugePages() >= pages;
    if (!ok_) {
      why_not_ = absl::StrCat("cannot reserve ", pages,
                              " huge pages in /proc/sys/vm/nr_hugepages");
    }
  }
  ~HugePagePool() {
    if (raised_) {
      Write(old_total_);
    }
  }
  HugePagePool(const HugePagePool&) = delete;
  HugePagePool& operator=(const HugePagePool&) = delete;
  bool ok() const { return ok_; }
  const std::string& why_not() const { return why_not_; }

  static uint64_t FreeHugePages() {
    std::ifstream in("/proc/meminfo");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("HugePages_Free:", 0) == 0) {
        return std::strtoull(line.c_str() + 15, nullptr, 10);
      }
    }
    return 0;
  }

 private:
  static bool Write(uint64_t total) {
    std::ofstream out("/proc/sys/vm/nr_hugepages");
    out << total << "\n";
    out.flush();
    return static_cast<bool>(out);
  }
  uint64_t old_total_ = 0;
  bool raised_ = false;
  bool ok_ = false;
  std::string why_not_;
};

}  // namespace shmalloc::testing

#endif  // TESTS_TESTING_HUGE_PAGES_H_
