#include "services/dataset/dataset_types.h"

namespace switchyard::dataset {

absl::string_view FormatName(DatasetFormat format) {
  switch (format) {
    case DatasetFormat::kAuto:
      return "auto";
    case DatasetFormat::kChat:
      return "chat";
    case DatasetFormat::kCompletion:
      return "completion";
    case DatasetFormat::kPreference:
      return "preference";
  }
  return "auto";
}

bool ParseFormat(absl::string_view name, DatasetFormat* format) {
  for (DatasetFormat f : {DatasetFormat::kAuto, DatasetFormat::kChat, DatasetFormat::kCompletion,
                          DatasetFormat::kPreference}) {
    if (name == FormatName(f)) {
      *format = f;
      return true;
    }
  }
  return false;
}

absl::string_view SeverityName(Severity severity) {
  return severity == Severity::kError ? "error" : "warning";
}

}  // namespace switchyard::dataset
