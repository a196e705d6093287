// Table: aligned text columns for the `shmalloc` CLI's human-readable output.
// Text columns are left-aligned, numeric ones right-aligned; two spaces
// between columns; no trailing spaces.
//
// Thread-safety: not thread-safe.
#ifndef CLIENT_CLI_TABLE_H_
#define CLIENT_CLI_TABLE_H_

#include <string>
#include <vector>

namespace shmalloc::cli {

class Table {
 public:
  enum class Align { kLeft, kRight };
  struct Column {
    std::string header;
    Align align = Align::kLeft;
  };

  explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}

  // Adds a row. REQUIRES: cells.size() == number of columns.
  void AddRow(std::vector<std::string> cells);
  // Returns the header and every row, each line ending in '\n'.
  std::string Render() const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace shmalloc::cli

#endif  // CLIENT_CLI_TABLE_H_
