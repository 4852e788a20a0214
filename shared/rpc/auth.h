// Bearer-token authorization for every Switchyard service.
//
// Tokens come from a file (--auth-tokens), one per line:
//     <token> <role> [<name>]        # comments and blank lines are ignored
// with role `admin` (may create and delete) or `user` (reads and data plane).
// Clients send `authorization: Bearer <token>` metadata. With no token file,
// every call is allowed (the loopback default). Health checks, reflection and
// /metrics are never gated. Thread-safe after construction.
#ifndef SWITCHYARD_SHARED_RPC_AUTH_H_
#define SWITCHYARD_SHARED_RPC_AUTH_H_

#include <grpcpp/server_context.h>

#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace switchyard::rpc {

enum class Role { kUser = 0, kAdmin = 1 };

class Authorizer {
 public:
  // Allows everything.
  Authorizer() = default;
  // Parses a token file; INVALID_ARGUMENT names the line.
  static absl::StatusOr<std::shared_ptr<Authorizer>> FromFile(const std::string& path);
  static absl::StatusOr<std::shared_ptr<Authorizer>> FromText(const std::string& text,
                                                              const std::string& origin);

  bool enabled() const { return !tokens_.empty(); }
  // OK when the call's token has at least `required`; UNAUTHENTICATED without
  // a valid token; PERMISSION_DENIED when the role is too low. Sets
  // `*principal` (may be null) to the token's name.
  absl::Status Authorize(const grpc::ServerContextBase& context, Role required,
                         std::string* principal = nullptr) const;

 private:
  struct Entry {
    Role role;
    std::string name;
  };
  std::map<std::string, Entry> tokens_;
};

}  // namespace switchyard::rpc

#endif  // SWITCHYARD_SHARED_RPC_AUTH_H_
