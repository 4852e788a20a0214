// Tabular input for `data prepare`: RFC 4180 CSV and TSV split into rows that
// remember the physical line they start on, so errors can name it.
// Stateless functions; thread-safe.
#ifndef SWITCHYARD_SERVICES_DATASET_TABLE_READER_H_
#define SWITCHYARD_SERVICES_DATASET_TABLE_READER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::dataset {

struct Table {
  struct Row {
    int64_t line = 0;  // physical line the row starts on
    std::vector<std::string> fields;
  };
  std::vector<std::string> header;
  int64_t header_line = 0;
  std::vector<Row> rows;
};

// Splits RFC 4180 CSV into rows: quoted fields may hold commas, doubled quotes
// and newlines; records end in LF or CRLF. Blank lines are skipped. An
// unclosed quote or text after a closing quote is INVALID_ARGUMENT naming the line.
absl::StatusOr<std::vector<Table::Row>> ParseCsvRows(absl::string_view text);

// TSV: one row per line, tab-separated, no quoting. Blank lines are skipped.
std::vector<Table::Row> ParseTsvRows(absl::string_view text);

// The first row is the header (names trimmed); every other row must have as
// many fields, else INVALID_ARGUMENT naming the row and line.
absl::StatusOr<Table> ToTable(std::vector<Table::Row> rows);

}  // namespace switchyard::dataset

#endif  // SWITCHYARD_SERVICES_DATASET_TABLE_READER_H_
