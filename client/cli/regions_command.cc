// shmalloc regions list|create|delete|reset.
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/cli/commands.h"
#include "client/cli/stats_format.h"
#include "client/cli/units.h"
#include "client/connection.h"

namespace shmalloc::cli {
namespace {

absl::StatusOr<v1::Strategy> ParseStrategy(absl::string_view text) {
  if (text == "arena") return v1::STRATEGY_ARENA;
  if (text == "pool") return v1::STRATEGY_POOL;
  if (text == "buddy") return v1::STRATEGY_BUDDY;
  if (text == "slab") return v1::STRATEGY_SLAB;
  if (text == "free_list" || text == "free-list") return v1::STRATEGY_FREE_LIST;
  return UsageError(absl::StrCat("unknown strategy '", text,
                                 "': expected arena, pool, buddy, slab or "
                                 "free_list"));
}

// Returns the value, or the error as a usage error.
template <typename T>
absl::Status Usage(absl::StatusOr<T>& value) {
  return value.ok() ? absl::OkStatus() : UsageError(value.status().message());
}

absl::Status NeedName(const std::vector<std::string>& positional,
                      absl::string_view command) {
  if (positional.size() != 1) {
    return UsageError(
        absl::StrCat("usage: shmalloc regions ", command, " NAME",
                     command == "create" ? " --strategy=S" : " [--force]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunRegionsList(const std::vector<std::string>& positional,
                            const Args& args, const GlobalOptions& global) {
  if (!positional.empty()) {
    return UsageError("usage: shmalloc regions list [--json]");
  }
  absl::StatusOr<bool> json = args.GetBool("json", false);
  if (!json.ok()) return Usage(json);
  auto c = Connect(global);
  if (!c.ok()) return c.status();
  v1::ListRegionsResponse response;
  absl::Status s =
      (*c)->connection()->Call(&v1::Allocator::Stub::ListRegions, "ListRegions",
                               v1::ListRegionsRequest(), &response);
  if (!s.ok()) return s;
  std::cout << (*json ? RegionsToJson(response) : FormatRegions(response));
  return absl::OkStatus();
}

absl::Status RunRegionsCreate(const std::vector<std::string>& positional,
                              const Args& args, const GlobalOptions& global) {
  if (absl::Status s = NeedName(positional, "create"); !s.ok()) return s;
  v1::CreateRegionRequest request;
  request.set_name(positional[0]);
  std::optional<std::string> strategy = args.Get("strategy");
  if (!strategy) {
    return UsageError(
        "regions create needs --strategy=arena|pool|buddy|slab|free_list");
  }
  absl::StatusOr<v1::Strategy> parsed = ParseStrategy(*strategy);
  if (!parsed.ok()) return parsed.status();
  request.set_strategy(*parsed);
  absl::StatusOr<uint64_t> size = args.GetBytes("size", 64 << 20);
  if (!size.ok()) return Usage(size);
  request.set_size_bytes(*size);
  absl::StatusOr<uint64_t> block = args.GetBytes("block_size", 0);
  if (!block.ok()) return Usage(block);
  request.set_block_size(*block);
  absl::StatusOr<uint64_t> quota = args.GetBytes("quota", 0);
  if (!quota.ok()) return Usage(quota);
  request.set_quota_bytes_per_session(*quota);
  absl::StatusOr<bool> huge = args.GetBool("huge_pages", false);
  if (!huge.ok()) return Usage(huge);
  if (*huge) request.set_huge_pages(v1::HUGE_PAGES_REQUIRED);
  if (std::optional<std::string> classes = args.Get("size_classes")) {
    for (absl::string_view part :
         absl::StrSplit(*classes, ',', absl::SkipWhitespace())) {
      absl::StatusOr<uint64_t> bytes = ParseBytes(part);
      if (!bytes.ok()) {
        return UsageError(
            absl::StrCat("flag --size_classes: ", bytes.status().message()));
      }
      request.add_size_classes(*bytes);
    }
  }
  auto c = Connect(global);
  if (!c.ok()) return c.status();
  v1::Region region;
  absl::Status s = (*c)->connection()->Call(&v1::Allocator::Stub::CreateRegion,
                                            "CreateRegion", request, &region);
  if (!s.ok()) return s;
  std::cout << "created " << FormatRegion(region);
  return absl::OkStatus();
}

absl::Status RunRegionsDelete(const std::vector<std::string>& positional,
                              const Args& args, const GlobalOptions& global) {
  if (absl::Status s = NeedName(positional, "delete"); !s.ok()) return s;
  absl::StatusOr<bool> force = args.GetBool("force", false);
  if (!force.ok()) return Usage(force);
  auto c = Connect(global);
  if (!c.ok()) return c.status();
  absl::Status s = (*c)->DeleteRegion(positional[0], *force);
  if (!s.ok()) return s;
  std::cout << "deleted region '" << positional[0] << "'\n";
  return absl::OkStatus();
}

absl::Status RunRegionsReset(const std::vector<std::string>& positional,
                             const Args& args, const GlobalOptions& global) {
  if (absl::Status s = NeedName(positional, "reset"); !s.ok()) return s;
  absl::StatusOr<bool> force = args.GetBool("force", false);
  if (!force.ok()) return Usage(force);
  auto c = Connect(global);
  if (!c.ok()) return c.status();
  v1::ResetRegionRequest request;
  request.set_name(positional[0]);
  request.set_force(*force);
  v1::Region region;
  absl::Status s = (*c)->connection()->Call(&v1::Allocator::Stub::ResetRegion,
                                            "ResetRegion", request, &region);
  if (!s.ok()) return s;
  std::cout << "reset " << FormatRegion(region);
  return absl::OkStatus();
}

}  // namespace shmalloc::cli
