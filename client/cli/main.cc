// shmalloc: the command-line client of shmallocd. `shmalloc --help` lists
// the commands; exit status 0 on success, 1 when an RPC or the connection
// fails (the gRPC status is printed in words), 2 for a bad command line.
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli/args.h"
#include "client/cli/commands.h"
#include "shmalloc/client.h"

namespace shmalloc::cli {
namespace {

struct Command {
  std::vector<absl::string_view> words;  // {"regions", "list"}
  std::vector<FlagSpec> flags;           // besides the global ones
  CommandFn run;
};

const std::vector<FlagSpec>& GlobalFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"socket", true}, {"timeout", true}, {"help", false}};
  return *flags;
}

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {{"regions", "list"}, {{"json", false}}, RunRegionsList},
      {{"regions", "create"},
       {{"strategy", true},
        {"size", true},
        {"block_size", true},
        {"size_classes", true},
        {"quota", true},
        {"huge_pages", false}},
       RunRegionsCreate},
      {{"regions", "delete"}, {{"force", false}}, RunRegionsDelete},
      {{"regions", "reset"}, {{"force", false}}, RunRegionsReset},
      {{"stats"}, {{"json", false}}, RunStats},
      {{"watch"},
       {{"interval_ms", true},
        {"count", true},
        {"json", false},
        {"clear", false}},
       RunWatch},
      {{"alloc"},
       {{"count", true}, {"alignment", true}, {"detached", false}},
       RunAlloc},
      {{"free"}, {}, RunFree},
      {{"health"}, {{"service", true}}, RunHealth},
      {{"map"}, {{"buckets", true}, {"svg", true}, {"color", false}}, RunMap},
      {{"leaks"},
       {{"older-than", true},
        {"older_than", true},
        {"page_size", true},
        {"json", false}},
       RunLeaks},
      {{"profile"},
       {{"duration", true}, {"interval", true}, {"out", true}, {"json", false}},
       RunProfile},
  };
  return *commands;
}

std::string Help() {
  return absl::StrCat(
      "usage: shmalloc [--socket=PATH] [--timeout=5s] COMMAND [ARGS]\n"
      "\n"
      "commands:\n"
      "  regions list [--json]               list the daemon's regions\n"
      "  regions create NAME --strategy=arena|pool|buddy|slab|free_list\n"
      "      [--size=64MiB] [--block_size=B] [--size_classes=64,256,4K]\n"
      "      [--quota=BYTES] [--huge_pages]  create a region (sizes take "
      "K/M/G/T, binary;\n"
      "                                      --huge_pages: data file on the "
      "daemon's --huge_dir)\n"
      "  regions delete NAME [--force]       delete a region (--force: even "
      "with live allocations)\n"
      "  regions reset NAME [--force]        free everything, bump the "
      "generation\n"
      "  stats [REGION] [--json]             figures as a table, or JSON\n"
      "  watch [REGION] [--interval_ms=1000] [--count=N] [--json] [--clear]\n"
      "                                      live view; Ctrl-C (or N "
      "updates) ends it\n"
      "  alloc REGION SIZE [--count=N] [--alignment=A] [--detached]\n"
      "                                      allocate; prints offsets. Without "
      "--detached they\n"
      "                                      belong to this command's session "
      "and die with it\n"
      "  free REGION OFFSET...               free allocations (decimal or "
      "0x hex offsets)\n"
      "  health [--service=NAME]             grpc.health.v1 check; exit 0 "
      "when SERVING\n"
      "  map REGION [--buckets=512] [--svg FILE] [--color]\n"
      "                                      draw the region's layout: who "
      "holds which bytes,\n"
      "                                      where the holes are (--svg: a "
      "picture for a browser)\n"
      "  leaks [REGION] [--older-than=10m] [--json]\n"
      "                                      live allocations by client, "
      "with ages; detached\n"
      "                                      allocations nobody freed\n"
      "  profile [REGION] --duration=60s [--interval=1s] --out=FILE [--json]\n"
      "                                      sample the daemon; write one "
      "self-contained HTML\n"
      "                                      report (charts, leak suspects, "
      "pool/slab sizing\n"
      "                                      advice), or the raw series with "
      "--json\n"
      "\n"
      "global flags:\n"
      "  --socket=PATH   the daemon's socket or gRPC target (default: $",
      client::kSocketEnvVar, ", else\n                  ",
      client::kDefaultSocketPath,
      " or the daemon's per-user fallback)\n"
      "  --timeout=DUR   connect and per-RPC deadline (default 5s)\n"
      "\n"
      "exit status: 0 ok, 1 the daemon or connection failed, 2 bad usage\n");
}

int Fail(const absl::Status& status) {
  if (IsUsageError(status)) {
    std::cerr << "shmalloc: " << status.message()
              << "\nrun 'shmalloc --help' for usage\n";
    return kExitUsage;
  }
  std::cerr << "shmalloc: " << absl::StatusCodeToString(status.code()) << ": "
            << status.message() << "\n";
  return kExitError;
}

int Main(int argc, char** argv) {
  std::vector<FlagSpec> all = GlobalFlags();
  for (const Command& c : Commands()) {
    all.insert(all.end(), c.flags.begin(), c.flags.end());
  }
  absl::StatusOr<Args> args =
      Args::Parse(std::vector<std::string>(argv + 1, argv + argc), all);
  if (!args.ok()) return Fail(UsageError(args.status().message()));
  if (args->Has("help")) {
    std::cout << Help();
    return kExitOk;
  }
  if (args->positional().empty()) {
    std::cerr << "shmalloc: missing command\n" << Help();
    return kExitUsage;
  }
  const std::vector<std::string>& words = args->positional();
  const Command* command = nullptr;
  for (const Command& c : Commands()) {
    if (c.words.size() <= words.size() &&
        std::equal(c.words.begin(), c.words.end(), words.begin())) {
      command = &c;
    }
  }
  if (command == nullptr) {
    return Fail(
        UsageError(words[0] == "regions"
                       ? "usage: shmalloc regions list|create|delete|reset ..."
                       : absl::StrCat("unknown command '", words[0], "'")));
  }
  std::string name;
  for (absl::string_view w : command->words) {
    absl::StrAppend(&name, name.empty() ? "" : " ", w);
  }
  std::vector<FlagSpec> allowed = GlobalFlags();
  allowed.insert(allowed.end(), command->flags.begin(), command->flags.end());
  if (absl::Status s = args->Allow(allowed, name); !s.ok()) {
    return Fail(UsageError(s.message()));
  }
  GlobalOptions global;
  global.socket = args->Get("socket").value_or("");
  absl::StatusOr<absl::Duration> timeout =
      args->GetDuration("timeout", global.timeout);
  if (!timeout.ok()) return Fail(UsageError(timeout.status().message()));
  global.timeout = *timeout;
  const std::vector<std::string> rest(words.begin() + command->words.size(),
                                      words.end());
  absl::Status status = command->run(rest, *args, global);
  return status.ok() ? kExitOk : Fail(status);
}

}  // namespace
}  // namespace shmalloc::cli

int main(int argc, char** argv) { return shmalloc::cli::Main(argc, argv); }
