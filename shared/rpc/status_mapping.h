// The one place absl::Status becomes grpc::Status and back. The numeric codes
// are the same canonical codes; messages pass through unchanged.
#ifndef SWITCHYARD_SHARED_RPC_STATUS_MAPPING_H_
#define SWITCHYARD_SHARED_RPC_STATUS_MAPPING_H_

#include <grpcpp/support/status.h>

#include <string_view>

#include "absl/status/status.h"

namespace switchyard::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);
// The same, the message prefixed with what failed ("inference Tokenize: ...").
absl::Status FromGrpcStatus(const grpc::Status& status, std::string_view what);
// "INVALID_ARGUMENT", "OK", ... (the names grpc_server_handled_total uses).
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace switchyard::rpc

#endif  // SWITCHYARD_SHARED_RPC_STATUS_MAPPING_H_
