// Escaping text for the XML and HTML the CLI writes (the map's SVG, the
// profile report), so a client name or a region name cannot break out of an
// attribute or an element.
//
// Thread-safety: pure functions.
#ifndef CLIENT_CLI_MARKUP_H_
#define CLIENT_CLI_MARKUP_H_

#include <string>
#include <string_view>

namespace shmalloc::cli {

// Returns `s` with & < > " escaped and the control characters XML 1.0
// forbids (even escaped) replaced by '?'; newline and tab are kept.
std::string XmlEscape(std::string_view s);

}  // namespace shmalloc::cli

#endif  // CLIENT_CLI_MARKUP_H_
