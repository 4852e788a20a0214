// Conversions between the dataset domain types and switchyard.v1 messages.
// Used by the gRPC adapter and by the CLI (local validation prints the same
// JSON a server would return).
#ifndef SWITCHYARD_SERVICES_DATASET_DATASET_PROTO_H_
#define SWITCHYARD_SERVICES_DATASET_DATASET_PROTO_H_

#include "services/dataset/dataset_catalog.h"
#include "services/dataset/dataset_types.h"
#include "switchyard/v1/dataset.pb.h"

namespace switchyard::dataset {

v1::DatasetFormat ToProto(DatasetFormat format);
DatasetFormat FromProto(v1::DatasetFormat format);
void ToProto(const ValidationIssue& issue, v1::Issue* out);
void ToProto(const DatasetStats& stats, v1::DatasetStats* out);
void ToProto(const ValidationReport& report, v1::ValidationReport* out);
void ToProto(const VersionRecord& version, v1::DatasetVersion* out);
void ToProto(const DatasetRecord& dataset, v1::Dataset* out);

}  // namespace switchyard::dataset

#endif  // SWITCHYARD_SERVICES_DATASET_DATASET_PROTO_H_
