// Reading a process's figures from /proc, for the benchmarks that measure
// what the daemon costs (restart_bench, sessions_bench).
#ifndef BENCH_PROC_STATUS_H_
#define BENCH_PROC_STATUS_H_

#include <sys/types.h>

#include <cstdint>
#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace shmalloc::bench {

// Returns field `name` (kB, e.g. "VmRSS", "RssAnon") of /proc/<pid>/status,
// or 0 when the process or the field is absent.
inline uint64_t StatusKb(pid_t pid, const std::string& name) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + ":", 0) != 0) continue;
    std::string digits;
    for (char c : line) {
      if (c >= '0' && c <= '9') digits += c;
    }
    uint64_t kb = 0;
    (void)absl::SimpleAtoi(digits, &kb);
    return kb;
  }
  return 0;
}

}  // namespace shmalloc::bench

#endif  // BENCH_PROC_STATUS_H_
