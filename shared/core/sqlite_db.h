// A thin RAII layer over SQLite: open with WAL and a busy timeout, run
// statements with bound parameters, read rows. Errors become absl::Status with
// SQLite's message and the SQL that failed.
//
// Not thread-safe: callers serialize access (the metadata stores hold a mutex).
#ifndef SWITCHYARD_SHARED_CORE_SQLITE_DB_H_
#define SWITCHYARD_SHARED_CORE_SQLITE_DB_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct sqlite3;
struct sqlite3_stmt;

namespace switchyard {

class SqliteStatement {
 public:
  SqliteStatement(sqlite3* db, sqlite3_stmt* stmt, std::string sql);
  ~SqliteStatement();
  SqliteStatement(SqliteStatement&&) noexcept;
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;

  // Parameters are 1-based, as in SQLite.
  SqliteStatement& Bind(int index, int64_t value);
  SqliteStatement& Bind(int index, absl::string_view value);
  // Named apart: an int argument would be ambiguous between int64_t and double.
  SqliteStatement& BindDouble(int index, double value);

  // Advances; true when a row is available, false when done.
  absl::StatusOr<bool> Step();
  // Runs to completion (for INSERT/UPDATE/DELETE).
  absl::Status Run();

  int64_t Int(int column) const;
  std::string Text(int column) const;
  double Double(int column) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
  std::string sql_;
};

class SqliteDb {
 public:
  // Opens or creates the database file, in WAL mode.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Open(const std::string& path);
  ~SqliteDb();

  absl::Status Exec(absl::string_view sql);
  absl::StatusOr<SqliteStatement> Prepare(absl::string_view sql);
  int64_t Changes() const;

 private:
  explicit SqliteDb(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

}  // namespace switchyard

#endif  // SWITCHYARD_SHARED_CORE_SQLITE_DB_H_
