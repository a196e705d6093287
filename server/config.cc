#include "server/config.h"

#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "server/region_name.h"
#include "server/shm_file.h"

#ifndef SHMALLOC_SYSCONF_CONFIG
#define SHMALLOC_SYSCONF_CONFIG "/usr/local/etc/shmalloc/shmallocd.textproto"
#endif

namespace shmalloc::server {
namespace {

constexpr char kDefaultShmDir[] = "/dev/shm/shmalloc";

// Keeps the first parse error with its position.
class FirstError : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (error_.empty()) {
      error_ = absl::StrCat(line + 1, ":", column + 1, ": ", message);
    }
  }
  const std::string& error() const { return error_; }

 private:
  std::string error_;
};

}  // namespace

ServerLimits ResolveLimits(const v1::Limits& limits) {
  ServerLimits resolved;
  if (limits.max_region_bytes() != 0) {
    resolved.max_region_bytes = limits.max_region_bytes();
  }
  if (limits.max_regions() != 0) resolved.max_regions = limits.max_regions();
  if (limits.max_batch() != 0) resolved.max_batch = limits.max_batch();
  if (limits.max_sessions() != 0) resolved.max_sessions = limits.max_sessions();
  if (limits.session_grace_ms() != 0) {
    resolved.session_grace_ms = limits.session_grace_ms();
  }
  if (limits.max_watchers() != 0) resolved.max_watchers = limits.max_watchers();
  if (limits.max_sessions_per_peer() != 0) {
    resolved.max_sessions_per_peer = limits.max_sessions_per_peer();
  }
  return resolved;
}

absl::StatusOr<v1::DaemonConfig> ParseConfig(std::string_view text,
                                             std::string_view origin) {
  v1::DaemonConfig config;
  FirstError errors;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &config)) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(origin), ":", errors.error()));
  }
  return config;
}

absl::StatusOr<v1::DaemonConfig> LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read config file ", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::NotFoundError(absl::StrCat("cannot read config file ", path));
  }
  return ParseConfig(text.str(), path);
}

std::string DefaultConfigPath() {
  for (const char* path :
       {SHMALLOC_SYSCONF_CONFIG, "/etc/shmalloc/shmallocd.textproto"}) {
    if (PathExists(path).ok()) return path;
  }
  return "";
}

absl::StatusOr<std::string> NormalizeListenAddress(std::string_view address) {
  std::string host = "127.0.0.1";
  std::string_view port = address;
  if (const size_t colon = address.rfind(':');
      colon != std::string_view::npos) {
    if (colon > 0) host = std::string(address.substr(0, colon));
    port = address.substr(colon + 1);
  }
  uint32_t number = 0;
  if (!absl::SimpleAtoi(absl::string_view(port.data(), port.size()), &number) ||
      number > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen address \"", std::string(address),
        "\" needs a port: HOST:PORT, :PORT or PORT (host defaults to "
        "127.0.0.1)"));
  }
  return absl::StrCat(host, ":", number);
}

absl::StatusOr<DaemonOptions> ResolveOptions(
    const v1::DaemonConfig& config, const FlagValues& flags,
    absl::FunctionRef<absl::StatusOr<std::string>()> default_socket) {
  DaemonOptions options;
  options.limits = ResolveLimits(config.limits());
  options.shm_dir = !flags.shm_dir.empty()      ? flags.shm_dir
                    : !config.shm_dir().empty() ? config.shm_dir()
                                                : kDefaultShmDir;
  options.own_shm_dir = flags.shm_dir.empty() && config.shm_dir().empty();
  options.huge_dir =
      !flags.huge_dir.empty() ? flags.huge_dir : config.huge_dir();
  if (!flags.socket.empty()) {
    options.socket = flags.socket;
  } else if (!config.socket().empty()) {
    options.socket = config.socket();
  } else {
    SHMALLOC_ASSIGN_OR_RETURN(options.socket, default_socket());
  }
  const std::vector<std::string> listen =
      !flags.listen.empty() ? flags.listen
                            : std::vector<std::string>(config.listen().begin(),
                                                       config.listen().end());
  for (const std::string& address : listen) {
    if (address.empty()) continue;
    SHMALLOC_ASSIGN_OR_RETURN(std::string normalized,
                              NormalizeListenAddress(address));
    options.listen.push_back(std::move(normalized));
  }
  if (!flags.metrics_listen.empty()) {
    absl::StatusOr<std::string> metrics =
        NormalizeListenAddress(flags.metrics_listen);
    if (!metrics.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--metrics_listen: ", metrics.status().message()));
    }
    options.metrics_listen = *std::move(metrics);
  }
  absl::flat_hash_set<std::string> names;
  for (const v1::CreateRegionRequest& region : config.regions()) {
    if (absl::Status s = ValidateRegionName(region.name()); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config region \"", region.name(), "\": ", s.message()));
    }
    if (!names.insert(region.name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("config names region ", region.name(), " twice"));
    }
    if (region.size_bytes() > options.limits.max_region_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("config region ", region.name(), " has size_bytes ",
                       region.size_bytes(), " over max_region_bytes ",
                       options.limits.max_region_bytes));
    }
    options.regions.push_back(region);
  }
  if (options.regions.size() > options.limits.max_regions) {
    return absl::InvalidArgumentError(
        absl::StrCat("config has ", options.regions.size(),
                     " regions; max_regions is ", options.limits.max_regions));
  }
  return options;
}

}  // namespace shmalloc::server
