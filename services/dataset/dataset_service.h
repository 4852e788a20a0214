// DatasetService gRPC adapter: translates switchyard.v1 messages to
// DatasetManager calls, enforces roles (admin: upload, append, delete; user:
// reads and export) and exports the dataset metrics:
//   switchyard_dataset_uploads_total{result="committed|validated|invalid|failed"}
//   switchyard_dataset_upload_bytes_total
//   switchyard_dataset_validation_errors_total{kind}
//   switchyard_dataset_datasets, switchyard_dataset_versions (gauges)
// Thread-safe; the manager and authorizer must outlive it, and the gRPC server
// must be shut down before it is destroyed.
#ifndef SWITCHYARD_SERVICES_DATASET_DATASET_SERVICE_H_
#define SWITCHYARD_SERVICES_DATASET_DATASET_SERVICE_H_

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <memory>

#include "services/dataset/dataset_manager.h"
#include "shared/core/thread_pool.h"
#include "shared/rpc/auth.h"
#include "switchyard/v1/dataset.grpc.pb.h"

namespace switchyard::dataset {

struct DatasetMetrics {
  explicit DatasetMetrics(prometheus::Registry& registry);
  prometheus::Family<prometheus::Counter>& uploads;
  prometheus::Counter& upload_bytes;
  prometheus::Family<prometheus::Counter>& validation_errors;
  prometheus::Gauge& datasets;
  prometheus::Gauge& versions;
};

class DatasetServiceImpl final : public v1::DatasetService::CallbackService {
 public:
  // `upload_workers` threads write and validate upload chunks.
  DatasetServiceImpl(DatasetManager* manager, std::shared_ptr<const rpc::Authorizer> auth,
                     prometheus::Registry& registry, int upload_workers = 2);

  grpc::ServerReadReactor<v1::UploadDatasetRequest>* UploadDataset(
      grpc::CallbackServerContext* context, v1::UploadDatasetResponse* response) override;
  grpc::ServerReadReactor<v1::AppendExamplesRequest>* AppendExamples(
      grpc::CallbackServerContext* context, v1::UploadDatasetResponse* response) override;
  grpc::ServerUnaryReactor* GetDataset(grpc::CallbackServerContext* context,
                                       const v1::GetDatasetRequest* request,
                                       v1::Dataset* response) override;
  grpc::ServerUnaryReactor* ListDatasets(grpc::CallbackServerContext* context,
                                         const v1::ListDatasetsRequest* request,
                                         v1::ListDatasetsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteDataset(grpc::CallbackServerContext* context,
                                          const v1::DeleteDatasetRequest* request,
                                          google::protobuf::Empty* response) override;
  grpc::ServerUnaryReactor* GetDatasetVersion(grpc::CallbackServerContext* context,
                                              const v1::GetDatasetVersionRequest* request,
                                              v1::DatasetVersion* response) override;
  grpc::ServerUnaryReactor* ListDatasetVersions(grpc::CallbackServerContext* context,
                                                const v1::ListDatasetVersionsRequest* request,
                                                v1::ListDatasetVersionsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteDatasetVersion(grpc::CallbackServerContext* context,
                                                 const v1::DeleteDatasetVersionRequest* request,
                                                 google::protobuf::Empty* response) override;
  grpc::ServerWriteReactor<v1::ExportDatasetResponse>* ExportDataset(
      grpc::CallbackServerContext* context, const v1::ExportDatasetRequest* request) override;

  // Internal to the adapter's reactors.
  DatasetManager* manager() { return manager_; }
  const rpc::Authorizer& auth() const { return *auth_; }
  DatasetMetrics& metrics() { return metrics_; }
  ThreadPool& upload_workers() { return upload_workers_; }
  void RefreshGauges();

 private:
  DatasetManager* manager_;
  std::shared_ptr<const rpc::Authorizer> auth_;
  DatasetMetrics metrics_;
  ThreadPool upload_workers_;  // last: joined first, while the rest is alive
};

}  // namespace switchyard::dataset

#endif  // SWITCHYARD_SERVICES_DATASET_DATASET_SERVICE_H_
