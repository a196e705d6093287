// A small command-line parser for the `shmalloc` CLI: subcommand words,
// positional arguments and GNU-style long flags (`--name=value`,
// `--name value`, boolean `--name`, `--noname`), anywhere on the line; `--`
// ends the flags.
//
// Why not absl flags: absl's ParseCommandLine exits with status 1 on a bad
// flag and keeps one global flag set for every subcommand, while the CLI must
// exit 2 on usage errors and reject a flag its subcommand does not take.
//
// Thread-safety: a value type; not thread-safe.
#ifndef CLIENT_CLI_ARGS_H_
#define CLIENT_CLI_ARGS_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace shmalloc::cli {

// One flag a command accepts.
struct FlagSpec {
  absl::string_view name;  // without dashes: "strategy"
  bool takes_value;        // false: boolean flag
};

class Args {
 public:
  // Parses `argv` (without the program name). A token `--NAME` of a flag in
  // `value_flags` consumes the next token unless written `--NAME=VALUE`.
  // Returns INVALID_ARGUMENT for a valued flag without a value or a single
  // dash option. Which flags a command allows is checked by Allow().
  static absl::StatusOr<Args> Parse(const std::vector<std::string>& argv,
                                    const std::vector<FlagSpec>& specs);

  const std::vector<std::string>& positional() const { return positional_; }
  // Returns INVALID_ARGUMENT naming the first flag not in `allowed`, or a
  // boolean flag given a value, or a valued flag given none.
  absl::Status Allow(const std::vector<FlagSpec>& allowed,
                     absl::string_view command) const;

  bool Has(absl::string_view name) const;
  // Returns the flag's value, or nullopt when absent.
  std::optional<std::string> Get(absl::string_view name) const;
  // Returns a boolean flag: true for `--name`, `--name=true|1`; false for
  // `--noname`, `--name=false|0`; `fallback` when absent. INVALID_ARGUMENT
  // for any other value.
  absl::StatusOr<bool> GetBool(absl::string_view name, bool fallback) const;
  // Returns a byte count with an optional binary suffix (see ParseBytes);
  // `fallback` when absent.
  absl::StatusOr<uint64_t> GetBytes(absl::string_view name,
                                    uint64_t fallback) const;
  // Returns a non-negative integer; `fallback` when absent.
  absl::StatusOr<uint64_t> GetUint(absl::string_view name,
                                   uint64_t fallback) const;
  // Returns a duration ("500ms", "5s", "1m"; a bare number is seconds).
  absl::StatusOr<absl::Duration> GetDuration(absl::string_view name,
                                             absl::Duration fallback) const;

 private:
  struct Value {
    std::optional<std::string> text;  // nullopt: given without a value
    bool negated = false;             // given as --noNAME
  };
  std::vector<std::string> positional_;
  std::map<std::string, Value, std::less<>> flags_;
};

}  // namespace shmalloc::cli

#endif  // CLIENT_CLI_ARGS_H_
