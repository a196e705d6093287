// A minimal logging shim (Debian's Abseil 20220623 has no absl/log): one line
// per message on stderr, with a UTC timestamp and severity. SHMALLOC_CHECK is
// for broken internal invariants only; bad input from a client is a Status.
#ifndef COMMON_LOG_H_
#define COMMON_LOG_H_

#include <sstream>
#include <string_view>

namespace shmalloc {

enum class LogSeverity { kInfo, kWarning, kError, kFatal };

// Accumulates one message and writes it on destruction; aborts for kFatal.
class LogMessage {
 public:
  LogMessage(LogSeverity severity, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogSeverity severity_;
  std::ostringstream stream_;
};

}  // namespace shmalloc

#define SHMALLOC_LOG(severity)                                           \
  ::shmalloc::LogMessage(::shmalloc::LogSeverity::k##severity, __FILE__, \
                         __LINE__)                                       \
      .stream()

// Aborts with a message when `cond` is false. For internal invariants only.
#define SHMALLOC_CHECK(cond) \
  if (cond) {                \
  } else                     \
    SHMALLOC_LOG(Fatal) << "Check failed: " #cond " "

#endif  // COMMON_LOG_H_
