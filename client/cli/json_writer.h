// JsonWriter: builds one JSON document into a string, for `shmalloc ...
// --json`. Integers are written as JSON numbers (not strings, unlike
// protobuf's JSON mapping of uint64), doubles with up to 17 significant
// digits (NaN and infinities as null), strings escaped per RFC 8259.
//
// Usage: BeginObject(); Key("a"); Uint(1); EndObject(); str(). The writer
// inserts commas; the caller pairs Begin/End and puts a Key before every
// value inside an object (not checked beyond a debug assert).
//
// Thread-safety: not thread-safe.
#ifndef CLIENT_CLI_JSON_WRITER_H_
#define CLIENT_CLI_JSON_WRITER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace shmalloc::cli {

class JsonWriter {
 public:
  // Pretty-prints with two-space indentation when `pretty`.
  explicit JsonWriter(bool pretty = true) : pretty_(pretty) {}

  void BeginObject() { Open('{'); }
  void EndObject() { Close('}'); }
  void BeginArray() { Open('['); }
  void EndArray() { Close(']'); }
  void Key(absl::string_view key);
  void String(absl::string_view value);
  void Uint(uint64_t value);
  void Double(double value);
  void Bool(bool value);

  // Key(key) then the value.
  void Field(absl::string_view key, absl::string_view value) {
    Key(key);
    String(value);
  }
  void Field(absl::string_view key, const char* value) {
    Field(key, absl::string_view(value));
  }
  void Field(absl::string_view key, uint64_t value) {
    Key(key);
    Uint(value);
  }
  void Field(absl::string_view key, double value) {
    Key(key);
    Double(value);
  }

  // Returns the document so far (complete once every Begin has its End).
  const std::string& str() const { return out_; }

 private:
  void Open(char bracket);
  void Close(char bracket);
  // Writes the separator and indentation a new value needs.
  void BeforeValue();
  void Newline();

  bool pretty_;
  std::string out_;
  // Per open container: whether it already holds an element.
  std::vector<bool> has_element_;
  bool after_key_ = false;
};

// Returns `s` as a quoted, escaped JSON string.
std::string JsonQuote(absl::string_view s);

}  // namespace shmalloc::cli

#endif  // CLIENT_CLI_JSON_WRITER_H_
