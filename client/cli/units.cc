#include "client/cli/units.h"

#include <cctype>
#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace shmalloc::cli {
namespace {

absl::Status BadBytes(absl::string_view text) {
  return absl::InvalidArgumentError(
      absl::StrCat("bad size '", text,
                   "': expected a number with an optional K, M, G or T "
                   "suffix (binary: 1K = 1024), e.g. 64MiB"));
}

}  // namespace

absl::StatusOr<uint64_t> ParseBytes(absl::string_view text) {
  std::string s = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  size_t digits = 0;
  while (digits < s.size() && (std::isdigit(s[digits]) || s[digits] == '.')) {
    ++digits;
  }
  if (digits == 0) return BadBytes(text);
  absl::string_view number(s.data(), digits);
  const absl::string_view suffix(s.data() + digits, s.size() - digits);
  int shift = -1;
  if (suffix.empty() || suffix == "b") shift = 0;
  for (const auto& [letter, bits] : {std::pair{'k', 10}, std::pair{'m', 20},
                                     std::pair{'g', 30}, std::pair{'t', 40}}) {
    const std::string one(1, letter);
    if (suffix == one || suffix == one + "b" || suffix == one + "ib") {
      shift = bits;
    }
  }
  if (shift < 0) return BadBytes(text);
  uint64_t whole = 0;
  if (number.find('.') == absl::string_view::npos) {
    if (!absl::SimpleAtoi(number, &whole)) return BadBytes(text);
    if (shift > 0 && whole > (UINT64_MAX >> shift)) return BadBytes(text);
    return whole << shift;
  }
  double value = 0;
  if (!absl::SimpleAtod(number, &value)) return BadBytes(text);
  const double bytes = std::ldexp(value, shift);
  if (bytes != std::floor(bytes) || bytes >= 18446744073709551616.0) {
    return BadBytes(text);
  }
  return static_cast<uint64_t>(bytes);
}

absl::StatusOr<uint64_t> ParseOffset(absl::string_view text) {
  uint64_t value = 0;
  bool ok = absl::StartsWith(text, "0x") || absl::StartsWith(text, "0X")
                ? absl::SimpleHexAtoi(text.substr(2), &value)
                : absl::SimpleAtoi(text, &value);
  if (!ok || text.empty() || text[0] == '-' || text[0] == '+') {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad offset '", text, "': expected a decimal or 0x hex number"));
  }
  return value;
}

std::string FormatBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB",
                                           "TiB", "PiB", "EiB"};
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  double value = static_cast<double>(bytes) / 1024;
  int unit = 0;
  while (value >= 1024 && unit < 5) {
    value /= 1024;
    ++unit;
  }
  if (value >= 100) return absl::StrFormat("%.0f %s", value, kUnits[unit]);
  if (value >= 10) return absl::StrFormat("%.1f %s", value, kUnits[unit]);
  return absl::StrFormat("%.2f %s", value, kUnits[unit]);
}

}  // namespace shmalloc::cli
