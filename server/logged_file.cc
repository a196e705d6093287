#include "server/logged_file.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace shmalloc::server {

absl::StatusOr<LoggedFile> OpenLoggedFile(const LoggedFileSpec& spec) {
  absl::StatusOr<MappedFile> file = MappedFile::Open(spec.path, spec.mode);
  if (file.ok() && file->size() >= sizeof(uint64_t) &&
      *reinterpret_cast<const uint64_t*>(file->data()) == 0) {
    SHMALLOC_LOG(Warning) << spec.path
                          << " was never fully formatted; formatting it again";
    file->Unmap();
    SHMALLOC_RETURN_IF_ERROR(UnlinkFile(spec.path));
    file = absl::NotFoundError("reformat");
  }
  if (absl::IsNotFound(file.status())) {
    file = MappedFile::Create(spec.path, spec.create_bytes, spec.mode);
    if (!file.ok()) return file.status();
    SHMALLOC_RETURN_IF_ERROR(spec.format(*file));
  }
  if (!file.ok()) return file.status();
  SHMALLOC_RETURN_IF_ERROR(spec.validate(*file));
  absl::StatusOr<UndoLog> log = UndoLog::Open(
      file->bytes(), file->bytes().subspan(spec.log_offset, spec.log_bytes));
  if (!log.ok()) {
    return absl::DataLossError(
        absl::StrCat(spec.path, ": ", log.status().message()));
  }
  absl::StatusOr<uint64_t> undone = log->Recover();
  if (!undone.ok()) {
    return absl::DataLossError(
        absl::StrCat(spec.path, ": ", undone.status().message()));
  }
  if (*undone > 0) {
    SHMALLOC_LOG(Info) << spec.path << ": rolled back an interrupted change ("
                       << *undone << " words)";
  }
  return LoggedFile{*std::move(file), *std::move(log), *undone};
}

}  // namespace shmalloc::server
