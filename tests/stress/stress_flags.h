// Flags shared by the gtest stress executables: each reads
// --threads=N --iterations=N --seed=N from the command line (after gtest has
// taken its own flags) or SHMALLOC_STRESS_THREADS / _ITERATIONS / _SEED from
// the environment, and prints what it runs with, so a failure can be
// replayed.
#ifndef TESTS_STRESS_STRESS_FLAGS_H_
#define TESTS_STRESS_STRESS_FLAGS_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace shmalloc::stress {

struct StressFlags {
  int threads = 8;
  uint64_t iterations = 0;  // per thread; 0 = the test's default
  uint64_t seed = 1;
};

inline StressFlags& Flags() {
  static StressFlags flags;
  return flags;
}

// Parses the flags (argv after testing::InitGoogleTest) and the environment.
// Returns false and prints a usage line on an unknown argument.
inline bool ParseStressFlags(int argc, char** argv) {
  StressFlags& f = Flags();
  if (const char* v = std::getenv("SHMALLOC_STRESS_THREADS")) {
    f.threads = std::atoi(v);
  }
  if (const char* v = std::getenv("SHMALLOC_STRESS_ITERATIONS")) {
    f.iterations = std::strtoull(v, nullptr, 10);
  }
  if (const char* v = std::getenv("SHMALLOC_STRESS_SEED")) {
    f.seed = std::strtoull(v, nullptr, 10);
  }
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* name) -> const char* {
      const size_t n = std::strlen(name);
      return arg.compare(0, n, name) == 0 ? arg.c_str() + n : nullptr;
    };
    if (const char* v = value("--threads=")) {
      f.threads = std::atoi(v);
    } else if (const char* v = value("--iterations=")) {
      f.iterations = std::strtoull(v, nullptr, 10);
    } else if (const char* v = value("--seed=")) {
      f.seed = std::strtoull(v, nullptr, 10);
    } else {
      std::fprintf(stderr,
                   "unknown argument %s; usage: %s [gtest flags] "
                   "[--threads=N] [--iterations=N] [--seed=N]\n",
                   argv[i], argv[0]);
      return false;
    }
  }
  if (f.threads < 2) f.threads = 2;
  return true;
}

// Returns the iterations per thread: the flag, or `fallback`.
inline uint64_t IterationsOr(uint64_t fallback) {
  return Flags().iterations != 0 ? Flags().iterations : fallback;
}

}  // namespace shmalloc::stress

#endif  // TESTS_STRESS_STRESS_FLAGS_H_
