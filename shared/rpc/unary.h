// Helpers for callback-API unary handlers: an authorization check, the body
// (inline or on a worker pool) and Finish with the mapped status; paging.
#ifndef SWITCHYARD_SHARED_RPC_UNARY_H_
#define SWITCHYARD_SHARED_RPC_UNARY_H_

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "shared/core/thread_pool.h"
#include "shared/rpc/auth.h"
#include "shared/rpc/status_mapping.h"

namespace switchyard::rpc {

// Runs `body` after an authorization check and finishes the default reactor.
template <typename Body>
grpc::ServerUnaryReactor* Unary(const Authorizer& auth, grpc::CallbackServerContext* context,
                                Role role, Body body) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status s = auth.Authorize(*context, role);
  if (s.ok()) s = body();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

// Like Unary, but `body` runs on `pool` (calls that copy files, read a lot
// or compute). The request and response live until Finish.
template <typename Body>
grpc::ServerUnaryReactor* Offload(ThreadPool& pool, const Authorizer& auth,
                                  grpc::CallbackServerContext* context, Role role, Body body) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status s = auth.Authorize(*context, role);
  if (!s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  pool.Submit(
      [reactor, body = std::move(body)]() mutable { reactor->Finish(ToGrpcStatus(body())); });
  return reactor;
}

// page_size 0 means `default_size`; at most `max_size`.
inline absl::StatusOr<int> PageSize(int32_t page_size, int default_size, int max_size = 1000) {
  if (page_size < 0) return absl::InvalidArgumentError("page_size must not be negative");
  return page_size == 0 ? default_size : std::min<int>(page_size, max_size);
}

// A page token is the offset of the page's first item.
inline absl::StatusOr<int64_t> ParsePageToken(const std::string& token) {
  int64_t value = 0;
  if (!token.empty() && (!absl::SimpleAtoi(token, &value) || value < 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_token \"", token, "\" is not a token this server issued"));
  }
  return value;
}

}  // namespace switchyard::rpc

#endif  // SWITCHYARD_SHARED_RPC_UNARY_H_
