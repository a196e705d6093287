#include "example_util.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>
#include <thread>

namespace examples {
namespace {

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

sockaddr_un Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    std::fprintf(stderr, "hand-off path too long: %s\n", path.c_str());
    std::exit(2);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// One step of the splitmix64 generator: the pattern's source.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::byte PatternByte(uint64_t sequence, size_t i) {
  return static_cast<std::byte>(Mix(sequence * 0x100000001b3ull + i / 8) >>
                                (8 * (i % 8)));
}

}  // namespace

std::map<std::string, std::string> ParseFlags(int argc, char** argv,
                                              const std::string& known,
                                              const std::string& usage) {
  std::set<std::string> names;
  std::istringstream in(known);
  for (std::string n; in >> n;) names.insert(n);
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help") {
      std::printf("%s\n", usage.c_str());
      std::exit(0);
    }
    if (arg.rfind("--", 0) != 0) {
      std::fprintf(stderr, "unexpected argument '%s'\n%s\n", arg.c_str(),
                   usage.c_str());
      std::exit(2);
    }
    arg = arg.substr(2);
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(0, eq);
    if (!names.count(name)) {
      std::fprintf(stderr, "unknown flag --%s\n%s\n", name.c_str(),
                   usage.c_str());
      std::exit(2);
    }
    flags[name] = eq == std::string::npos ? "true" : arg.substr(eq + 1);
  }
  return flags;
}

std::string Flag(const std::map<std::string, std::string>& flags,
                 const std::string& name, const std::string& fallback) {
  auto it = flags.find(name);
  return it == flags.end() ? fallback : it->second;
}

uint64_t FlagBytes(const std::map<std::string, std::string>& flags,
                   const std::string& name, uint64_t fallback) {
  auto it = flags.find(name);
  if (it == flags.end()) return fallback;
  char* end = nullptr;
  const uint64_t v = std::strtoull(it->second.c_str(), &end, 10);
  int shift = 0;
  const std::string suffix(end);
  if (suffix == "K" || suffix == "KiB")
    shift = 10;
  else if (suffix == "M" || suffix == "MiB")
    shift = 20;
  else if (suffix == "G" || suffix == "GiB")
    shift = 30;
  else if (!suffix.empty() || end == it->second.c_str()) {
    std::fprintf(stderr, "--%s: bad size '%s'\n", name.c_str(),
                 it->second.c_str());
    std::exit(2);
  }
  return v << shift;
}

int ListenUnix(const std::string& path) {
  const sockaddr_un addr = Address(path);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) Die("socket");
  unlink(path.c_str());  // a stale socket from an earlier run
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    Die("bind " + path);
  }
  if (listen(fd, 4) != 0) Die("listen " + path);
  return fd;
}

int ConnectUnix(const std::string& path, int timeout_s) {
  const sockaddr_un addr = Address(path);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) Die("socket");
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) ==
        0) {
      return fd;
    }
    close(fd);
    if ((errno != ENOENT && errno != ECONNREFUSED) ||
        std::chrono::steady_clock::now() >= deadline) {
      Die("connect " + path + " (is the consumer listening?)");
    }
    // The consumer is not listening yet: try again shortly.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void WriteFull(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) Die("write hand-off socket");
    p += w;
    n -= static_cast<size_t>(w);
  }
}

bool ReadFull(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  size_t got = 0;
  while (got < n) {
    const ssize_t r = read(fd, p + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) Die("read hand-off socket");
    if (r == 0) {
      if (got == 0) return false;
      std::fprintf(stderr, "hand-off socket closed mid-record\n");
      std::exit(1);
    }
    got += static_cast<size_t>(r);
  }
  return true;
}

uint64_t Checksum(std::span<const std::byte> bytes) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64
  for (std::byte b : bytes) {
    h = (h ^ static_cast<uint64_t>(b)) * 0x100000001b3ull;
  }
  return h;
}

uint64_t FillPattern(std::span<std::byte> bytes, uint64_t sequence) {
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = PatternByte(sequence, i);
  return Checksum(bytes);
}

int64_t CheckPattern(std::span<const std::byte> bytes, uint64_t sequence) {
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] != PatternByte(sequence, i)) return static_cast<int64_t>(i);
  }
  return -1;
}

}  // namespace examples
