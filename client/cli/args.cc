#include "client/cli/args.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/cli/units.h"

namespace shmalloc::cli {
namespace {

const FlagSpec* Find(const std::vector<FlagSpec>& specs,
                     absl::string_view name) {
  auto it = std::find_if(specs.begin(), specs.end(),
                         [&](const FlagSpec& f) { return f.name == name; });
  return it == specs.end() ? nullptr : &*it;
}

}  // namespace

absl::StatusOr<Args> Args::Parse(const std::vector<std::string>& argv,
                                 const std::vector<FlagSpec>& specs) {
  Args args;
  bool flags_done = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& token = argv[i];
    if (flags_done || token == "-" || !absl::StartsWith(token, "-")) {
      args.positional_.push_back(token);
      continue;
    }
    if (token == "--") {
      flags_done = true;
      continue;
    }
    if (!absl::StartsWith(token, "--")) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option '", token, "' (flags are --name)"));
    }
    std::string name = token.substr(2);
    Value value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value.text = name.substr(eq + 1);
      name.resize(eq);
    }
    const FlagSpec* spec = Find(specs, name);
    if (spec == nullptr && absl::StartsWith(name, "no")) {
      const FlagSpec* positive = Find(specs, name.substr(2));
      if (positive != nullptr && !positive->takes_value && !value.text) {
        name = name.substr(2);
        value.negated = true;
        spec = positive;
      }
    }
    if (spec != nullptr && spec->takes_value && !value.text) {
      if (i + 1 >= argv.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", name, " needs a value"));
      }
      value.text = argv[++i];
    }
    args.flags_[name] = std::move(value);
  }
  return args;
}

absl::Status Args::Allow(const std::vector<FlagSpec>& allowed,
                         absl::string_view command) const {
  for (const auto& [name, value] : flags_) {
    const FlagSpec* spec = Find(allowed, name);
    if (spec == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " for '", command, "'"));
    }
    if (spec->takes_value && !value.text) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", name, " needs a value"));
    }
  }
  return absl::OkStatus();
}

bool Args::Has(absl::string_view name) const { return flags_.contains(name); }

std::optional<std::string> Args::Get(absl::string_view name) const {
  auto it = flags_.find(name);
  if (it == flags_.end()) return std::nullopt;
  return it->second.text.value_or("");
}

absl::StatusOr<bool> Args::GetBool(absl::string_view name,
                                   bool fallback) const {
  auto it = flags_.find(name);
  if (it == flags_.end()) return fallback;
  if (it->second.negated) return false;
  if (!it->second.text) return true;
  bool value = false;
  if (!absl::SimpleAtob(*it->second.text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, ": expected true or false, got '",
                     *it->second.text, "'"));
  }
  return value;
}

absl::StatusOr<uint64_t> Args::GetBytes(absl::string_view name,
                                        uint64_t fallback) const {
  std::optional<std::string> text = Get(name);
  if (!text) return fallback;
  absl::StatusOr<uint64_t> bytes = ParseBytes(*text);
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, ": ", bytes.status().message()));
  }
  return bytes;
}

absl::StatusOr<uint64_t> Args::GetUint(absl::string_view name,
                                       uint64_t fallback) const {
  std::optional<std::string> text = Get(name);
  if (!text) return fallback;
  uint64_t value = 0;
  if (text->empty() || (*text)[0] == '-' || !absl::SimpleAtoi(*text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name,
                     ": expected a non-negative integer, got '", *text, "'"));
  }
  return value;
}

absl::StatusOr<absl::Duration> Args::GetDuration(
    absl::string_view name, absl::Duration fallback) const {
  std::optional<std::string> text = Get(name);
  if (!text) return fallback;
  absl::Duration d;
  double seconds = 0;
  if (absl::SimpleAtod(*text, &seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(*text, &d)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "flag --", name, ": expected a duration like 500ms, 5s or 1m, got '",
        *text, "'"));
  }
  if (d <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, " must be positive"));
  }
  return d;
}

}  // namespace shmalloc::cli
