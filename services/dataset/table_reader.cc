#include "services/dataset/table_reader.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace switchyard::dataset {
namespace {

absl::Status Invalid(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

}  // namespace

absl::StatusOr<std::vector<Table::Row>> ParseCsvRows(absl::string_view text) {
  std::vector<Table::Row> rows;
  Table::Row row;
  std::string field;
  bool in_quotes = false;    // inside a quoted field
  bool after_quote = false;  // a quoted field just closed: only , or EOL may follow
  bool row_quoted = false;   // the row had a quoted field, so it is not blank
  int64_t line = 1;
  int64_t quote_line = 0;
  row.line = 1;
  auto end_field = [&] {
    row.fields.push_back(std::move(field));
    field.clear();
    after_quote = false;
  };
  auto end_row = [&] {
    end_field();
    bool blank = row.fields.size() == 1 && row.fields[0].empty() && !row_quoted;
    if (!blank) rows.push_back(std::move(row));
    row = Table::Row();
    row_quoted = false;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          in_quotes = false;
          after_quote = true;
        }
      } else {
        if (c == '\n') ++line;
        field += c;
      }
    } else if (c == ',') {
      end_field();
    } else if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
      continue;  // the '\n' ends the row
    } else if (c == '\n') {
      end_row();
      row.line = ++line;
    } else if (after_quote) {
      return Invalid(absl::StrCat("line ", line),
                     "unexpected character after a closing quote (a quote inside a "
                     "quoted field must be doubled)");
    } else if (c == '"' && field.empty()) {
      in_quotes = true;
      row_quoted = true;
      quote_line = line;
    } else {
      field += c;  // a stray quote inside an unquoted field is kept literally
    }
  }
  if (in_quotes) {
    return Invalid(absl::StrCat("line ", quote_line), "quoted field is never closed");
  }
  if (!field.empty() || !row.fields.empty() || row_quoted) end_row();
  return rows;
}

std::vector<Table::Row> ParseTsvRows(absl::string_view text) {
  std::vector<Table::Row> rows;
  int64_t line = 0;
  for (absl::string_view l : absl::StrSplit(text, '\n')) {
    ++line;
    if (absl::EndsWith(l, "\r")) l.remove_suffix(1);
    if (l.empty()) continue;
    Table::Row row;
    row.line = line;
    row.fields = absl::StrSplit(l, '\t');
    rows.push_back(std::move(row));
  }
  return rows;
}

absl::StatusOr<Table> ToTable(std::vector<Table::Row> rows) {
  if (rows.empty()) return absl::InvalidArgumentError("input is empty (no header row)");
  Table table;
  table.header_line = rows[0].line;
  for (std::string& name : rows[0].fields) {
    table.header.push_back(std::string(absl::StripAsciiWhitespace(name)));
  }
  for (size_t i = 1; i < rows.size(); ++i) {
    if (rows[i].fields.size() != table.header.size()) {
      return Invalid(absl::StrCat("row ", i, " (line ", rows[i].line, ")"),
                     absl::StrCat("expected ", table.header.size(),
                                  " fields (as in the header), found ", rows[i].fields.size()));
    }
    table.rows.push_back(std::move(rows[i]));
  }
  return table;
}

}  // namespace switchyard::dataset
