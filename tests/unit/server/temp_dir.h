// A fresh directory under the test temp dir, removed with its files at the
// end of the test. Test-only.
#ifndef TESTS_UNIT_SERVER_TEMP_DIR_H_
#define TESTS_UNIT_SERVER_TEMP_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace shmalloc::server {

class TempDir {
 public:
  TempDir() {
    std::string pattern =
        absl::StrCat(::testing::TempDir(), "/shmalloc-test-XXXXXX");
    char* made = mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const {
    return absl::StrCat(path_, "/", name);
  }

 private:
  std::string path_;
};

}  // namespace shmalloc::server

#endif  // TESTS_UNIT_SERVER_TEMP_DIR_H_
