#include "shared/rpc/auth.h"

#include <openssl/crypto.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"

namespace switchyard::rpc {

absl::StatusOr<std::shared_ptr<Authorizer>> Authorizer::FromFile(const std::string& path) {
  SY_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return FromText(text, path);
}

absl::StatusOr<std::shared_ptr<Authorizer>> Authorizer::FromText(const std::string& text,
                                                                 const std::string& origin) {
  auto auth = std::make_shared<Authorizer>();
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    size_t hash = line.find('#');
    if (hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<std::string> parts =
        absl::StrSplit(absl::StripAsciiWhitespace(line), absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (parts.empty()) continue;
    if (parts.size() < 2 || parts.size() > 3) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ":", line_no, ": expected `<token> <admin|user> [<name>]`"));
    }
    Entry e;
    if (parts[1] == "admin")
      e.role = Role::kAdmin;
    else if (parts[1] == "user")
      e.role = Role::kUser;
    else {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ":", line_no, ": role \"", parts[1], "\" must be admin or user"));
    }
    if (parts[0].size() < 16) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ":", line_no, ": token is shorter than 16 characters"));
    }
    e.name = parts.size() == 3 ? parts[2] : absl::StrCat("token-line-", line_no);
    auth->tokens_[parts[0]] = e;
  }
  if (auth->tokens_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": no tokens"));
  }
  return auth;
}

absl::Status Authorizer::Authorize(const grpc::ServerContextBase& context, Role required,
                                   std::string* principal) const {
  if (tokens_.empty()) return absl::OkStatus();
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return absl::UnauthenticatedError("missing `authorization: Bearer <token>` metadata");
  }
  absl::string_view value(it->second.data(), it->second.size());
  if (!absl::StartsWithIgnoreCase(value, "bearer ")) {
    return absl::UnauthenticatedError("authorization metadata must be `Bearer <token>`");
  }
  std::string token(absl::StripAsciiWhitespace(value.substr(7)));
  const Entry* found = nullptr;
  for (const auto& [known, entry] : tokens_) {
    // Constant-time comparison per candidate.
    if (known.size() == token.size() &&
        CRYPTO_memcmp(known.data(), token.data(), token.size()) == 0) {
      found = &entry;
    }
  }
  if (found == nullptr) return absl::UnauthenticatedError("invalid token");
  if (principal != nullptr) *principal = found->name;
  if (static_cast<int>(found->role) < static_cast<int>(required)) {
    return absl::PermissionDeniedError(
        absl::StrCat("token \"", found->name, "\" has role user; this call needs admin"));
  }
  return absl::OkStatus();
}

}  // namespace switchyard::rpc
