#include "client/cli/table.h"

#include <algorithm>
#include <cassert>

namespace shmalloc::cli {

void Table::AddRow(std::vector<std::string> cells) {
  assert(cells.size() == columns_.size());
  cells.resize(columns_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::Render() const {
  std::vector<size_t> width(columns_.size());
  for (size_t c = 0; c < columns_.size(); ++c) {
    width[c] = columns_[c].header.size();
    for (const auto& row : rows_) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (size_t c = 0; c < cells.size(); ++c) {
      if (c > 0) text += "  ";
      const std::string pad(width[c] - cells[c].size(), ' ');
      text +=
          columns_[c].align == Align::kRight ? pad + cells[c] : cells[c] + pad;
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out += text;
    out += '\n';
  };
  std::vector<std::string> header;
  for (const Column& c : columns_) header.push_back(c.header);
  line(header);
  for (const auto& row : rows_) line(row);
  return out;
}

}  // namespace shmalloc::cli
