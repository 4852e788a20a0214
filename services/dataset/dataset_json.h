// JSON forms of dataset statistics and issues, for the metadata store and
// manifest.json. Field names match the v1 API's JSON names.
#ifndef SWITCHYARD_SERVICES_DATASET_DATASET_JSON_H_
#define SWITCHYARD_SERVICES_DATASET_DATASET_JSON_H_

#include <nlohmann/json.hpp>

#include "services/dataset/dataset_types.h"

namespace switchyard::dataset {

nlohmann::json StatsToJson(const DatasetStats& stats);
DatasetStats StatsFromJson(const nlohmann::json& j);
nlohmann::json IssueToJson(const ValidationIssue& issue);
ValidationIssue IssueFromJson(const nlohmann::json& j);

}  // namespace switchyard::dataset

#endif  // SWITCHYARD_SERVICES_DATASET_DATASET_JSON_H_
