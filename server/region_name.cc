#include "server/region_name.h"

#include "absl/strings/str_cat.h"

namespace shmalloc::server {
namespace {

constexpr std::string_view kPrefix = "shmalloc-";
constexpr std::string_view kDataSuffix = ".data";
constexpr std::string_view kMetaSuffix = ".meta";

bool IsLeadChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool IsTailChar(char c) {
  return IsLeadChar(c) || c == '_' || c == '.' || c == '-';
}

}  // namespace

absl::Status ValidateRegionName(std::string_view name) {
  if (name.empty()) {
    return absl::InvalidArgumentError("region name must not be empty");
  }
  if (name.size() > kMaxRegionNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("region name is ", name.size(), " bytes long; at most ",
                     kMaxRegionNameLength, " allowed"));
  }
  if (!IsLeadChar(name[0])) {
    return absl::InvalidArgumentError(
        "region name must start with [a-z0-9] (pattern "
        "[a-z0-9][a-z0-9_.-]{0,62})");
  }
  for (char c : name) {
    if (!IsTailChar(c)) {
      return absl::InvalidArgumentError(
          "region name may contain only [a-z0-9_.-] (pattern "
          "[a-z0-9][a-z0-9_.-]{0,62})");
    }
  }
  return absl::OkStatus();
}

std::string DataFileName(std::string_view name) {
  return absl::StrCat(
      absl::string_view(kPrefix.data(), kPrefix.size()),
      absl::string_view(name.data(), name.size()),
      absl::string_view(kDataSuffix.data(), kDataSuffix.size()));
}

std::string MetaFileName(std::string_view name) {
  return absl::StrCat(
      absl::string_view(kPrefix.data(), kPrefix.size()),
      absl::string_view(name.data(), name.size()),
      absl::string_view(kMetaSuffix.data(), kMetaSuffix.size()));
}

std::optional<std::string> RegionNameFromFile(std::string_view file_name) {
  if (!file_name.starts_with(kPrefix)) return std::nullopt;
  if (file_name.ends_with(kDataSuffix)) {
    file_name.remove_suffix(kDataSuffix.size());
  } else if (file_name.ends_with(kMetaSuffix)) {
    file_name.remove_suffix(kMetaSuffix.size());
  } else {
    return std::nullopt;
  }
  file_name.remove_prefix(kPrefix.size());
  if (!ValidateRegionName(file_name).ok()) return std::nullopt;
  return std::string(file_name);
}

std::string JoinPath(std::string_view dir, std::string_view file_name) {
  std::string path(dir);
  if (path.empty() || path.back() != '/') path.push_back('/');
  path.append(file_name);
  return path;
}

}  // namespace shmalloc::server
