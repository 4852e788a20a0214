// `switchyard serve`: runs one target (or all built targets) in this process.
#include <prometheus/registry.h>

#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "services/cli/cli_common.h"
#include "services/cli/commands.h"
#include "services/dataset/dataset_catalog.h"
#include "services/dataset/dataset_manager.h"
#include "services/dataset/dataset_service.h"
#include "services/inference/inference_service.h"
#include "services/retrieval/collection_store.h"
#include "services/retrieval/retrieval_service.h"
#include "services/router/experiment_store.h"
#include "services/router/router_service.h"
#include "services/training/job_manager.h"
#include "services/training/job_store.h"
#include "services/training/model_registry.h"
#include "services/training/training_service.h"
#include "shared/core/file_util.h"
#include "shared/core/logging.h"
#include "shared/rpc/auth.h"
#include "shared/rpc/client_channel.h"
#include "shared/rpc/server_runner.h"

namespace switchyard::cli {
namespace {

const std::vector<std::string> kBuiltTargets = {"dataset", "training", "retrieval", "inference",
                                                "router"};

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

int RunServe(const std::vector<std::string>& args) {
  FlagSet flags("switchyard serve [flags]",
                "Runs Switchyard services: gRPC on --grpc-listen (with grpc.health.v1.Health and\n"
                "server reflection) and Prometheus metrics at http://--metrics-listen/metrics.\n"
                "SIGTERM or SIGINT drains in-flight calls, then exits 0.\n\n"
                "Targets: dataset, training, retrieval, inference, router, all (every service\n"
                "in one process).\n\n"
                "training runs fine-tuning jobs from a persistent queue: jobs that were running\n"
                "when the process stopped (even by kill -9) resume from their last checkpoint\n"
                "at the next start. On SIGTERM running jobs stop at a step boundary after a\n"
                "checkpoint. It serves the models under --data-dir/models (directories with a\n"
                "config.json there are registered as base models at start).\n\n"
                "retrieval serves the collections under --data-dir/collections; each is\n"
                "loaded at start and searchable again after any restart.\n\n"
                "inference serves the --model base models (NAME=DIR, or NAME for\n"
                "--data-dir/models/NAME; more with LoadModel) with LoRA adapters loaded by\n"
                "name on first use (--adapter NAME=DIR, or --data-dir/models/NAME, or a job\n"
                "checkpoint jobs/JOB/checkpoints/STEP), batching requests continuously.\n\n"
                "router answers chat requests of A/B experiments with fine-tuned, RAG or both\n"
                "arms, calling --inference-addr and --retrieval-addr (and --dataset-addr for\n"
                "exports); with --target=all it calls this process's own services without\n"
                "the network unless the addresses are given.");
  flags.AddString("target", "all",
                  "Service to run: dataset | training | retrieval | inference | router | all.");
  flags.AddString("grpc-listen", "127.0.0.1:50051", "gRPC address (host:port; port 0 = any).");
  flags.AddString("metrics-listen", "127.0.0.1:9464",
                  "Prometheus /metrics address (host:port); empty disables.");
  flags.AddString("data-dir", "./switchyard-data",
                  "Where datasets, models, jobs and metadata are stored.");
  flags.AddString("tls-cert", "", "PEM server certificate; with --tls-key enables TLS.");
  flags.AddString("tls-key", "", "PEM server private key.");
  flags.AddString("tls-client-ca", "", "PEM CA; clients must present a certificate it signed.");
  flags.AddString("auth-tokens", "",
                  "Token file (`<token> <admin|user> [name]` per line); empty allows all calls.");
  flags.AddInt("max-message-bytes", 64 << 20, "Largest gRPC message, in bytes.");
  flags.AddInt("max-upload-bytes", int64_t{2} << 30, "Largest dataset upload, in bytes.");
  flags.AddInt("max-line-bytes", 8 << 20, "Longest dataset line, in bytes.");
  flags.AddInt("max-listed-issues", 100, "Validation issues listed per upload (all are counted).");
  flags.AddInt("min-examples", 10, "Fewer examples than this is a validation error.");
  flags.AddInt("drain-seconds", 30, "Time in-flight calls get to finish on SIGTERM.");
  flags.AddInt("upload-workers", 2, "Threads that write and validate dataset uploads.");
  flags.AddInt("max-jobs-per-device", 1, "Fine-tuning jobs trained at once on each device.");
  flags.AddInt("max-queued-jobs", 64,
               "Queued fine-tuning jobs accepted before CreateJob answers RESOURCE_EXHAUSTED.");
  flags.AddInt("training-threads", 0, "LibTorch threads for training on the CPU (0 = every core).");
  flags.AddInt("search-threads", 0,
               "Workers answering searches, each with one OpenMP thread (0 = every core).");
  flags.AddInt("retrieval-write-threads", 2,
               "Workers that chunk, embed and index documents for the retrieval service.");
  flags.AddString("log-level", "info", "debug | info | warning | error.");
  flags.AddRepeatedString("model", "inference: a base model to load, NAME=DIR or NAME (repeat).");
  flags.AddRepeatedString("adapter",
                          "inference: an adapter's directory by name, NAME=DIR (repeat).");
  flags.AddInt("max-adapters", 8, "inference: LoRA adapters loaded per model (LRU past it).");
  flags.AddInt("max-batch-size", 64, "inference: sequences decoded together per model.");
  flags.AddInt("kv-cache-bytes", int64_t{2} << 30, "inference: KV-cache memory per model, bytes.");
  flags.AddInt("max-context-tokens", 0,
               "inference: longest prompt + generation (0 = the model's context).");
  flags.AddInt("max-waiting", 256,
               "inference: queued requests per model; past it RESOURCE_EXHAUSTED.");
  flags.AddString("dtype", "auto",
                  "inference: float32, bfloat16, float16 or auto (bf16 on GPUs, float32 on "
                  "CPUs).");
  flags.AddString("device", "auto", "inference: cpu, cuda, cuda:N or auto.");
  flags.AddInt("inference-threads", 0, "inference: LibTorch threads per model (0 = every core).");
  flags.AddString("inference-addr", "",
                  "router: InferenceService address (host:port); empty with --target=all = this "
                  "process.");
  flags.AddString("retrieval-addr", "",
                  "router: RetrievalService address; empty with --target=all = this process.");
  flags.AddString(
      "dataset-addr", "",
      "router: DatasetService address for exports and evaluations; empty with --target=all = this "
      "process.");
  flags.AddString("backend-token", "",
                  "router: bearer token for its calls to the other services (needed when they "
                  "check --auth-tokens; admin role for exports).");
  flags.AddString("backend-tls-ca", "",
                  "router: PEM CA of the other services' certificates (TLS to them when set).");
  flags.AddInt("chat-threads", 64, "router: chat requests answered at once (more wait).");
  flags.AddInt("shadow-threads", 16,
               "router: shadow answers generated at once (more are skipped).");
  flags.AddConfigFlag();
  int rc = ParseOrExit(&flags, args, 0, 0);
  if (rc >= 0) return rc;

  LogLevel level;
  if (!ParseLogLevel(flags.GetString("log-level"), &level)) {
    std::cerr << "error: --log-level must be debug, info, warning or error\n";
    return kExitUsage;
  }
  SetMinLogLevel(level);
  for (const char* name :
       {"max-message-bytes", "max-upload-bytes", "max-line-bytes", "max-listed-issues",
        "drain-seconds", "upload-workers", "max-jobs-per-device", "max-queued-jobs",
        "retrieval-write-threads", "max-adapters", "max-batch-size", "kv-cache-bytes",
        "chat-threads", "shadow-threads"}) {
    if (flags.GetInt(name) <= 0) {
      std::cerr << "error: --" << name << " must be positive, got " << flags.GetInt(name) << "\n";
      return kExitUsage;
    }
  }
  if (flags.GetInt("search-threads") < 0) {
    std::cerr << "error: --search-threads must not be negative, got "
              << flags.GetInt("search-threads") << "\n";
    return kExitUsage;
  }
  for (const char* name : {"max-context-tokens", "max-waiting", "inference-threads"}) {
    if (flags.GetInt(name) < 0) {
      std::cerr << "error: --" << name << " must not be negative, got " << flags.GetInt(name)
                << "\n";
      return kExitUsage;
    }
  }
  if (flags.GetInt("training-threads") < 0) {
    std::cerr << "error: --training-threads must not be negative, got "
              << flags.GetInt("training-threads") << "\n";
    return kExitUsage;
  }
  if (flags.GetInt("max-message-bytes") > INT32_MAX) {
    std::cerr << "error: --max-message-bytes must be at most " << INT32_MAX << "\n";
    return kExitUsage;
  }

  const std::string target = flags.GetString("target");
  std::vector<std::string> targets;
  if (target == "all") {
    targets = kBuiltTargets;
  } else if (Contains(kBuiltTargets, target)) {
    targets = {target};
  } else {
    std::cerr << "error: unknown --target=" << target << "; expected one of "
              << absl::StrJoin(kBuiltTargets, ", ") << ", all\n";
    return kExitUsage;
  }

  auto authorizer = std::make_shared<rpc::Authorizer>();
  if (!flags.GetString("auth-tokens").empty()) {
    auto loaded = rpc::Authorizer::FromFile(flags.GetString("auth-tokens"));
    if (!loaded.ok()) return ReportError(loaded.status());
    authorizer = *loaded;
  }

  auto registry = std::make_shared<prometheus::Registry>();
  rpc::ServerOptions server_options;
  server_options.grpc_listen = flags.GetString("grpc-listen");
  server_options.metrics_listen = flags.GetString("metrics-listen");
  server_options.tls_cert = flags.GetString("tls-cert");
  server_options.tls_key = flags.GetString("tls-key");
  server_options.tls_client_ca = flags.GetString("tls-client-ca");
  server_options.max_message_bytes = static_cast<int>(flags.GetInt("max-message-bytes"));
  server_options.drain_timeout = absl::Seconds(flags.GetInt("drain-seconds"));
  rpc::ServerRunner runner(server_options, registry);

  const std::string data_dir = flags.GetString("data-dir");
  absl::Status s = MakeDirs(data_dir);
  if (!s.ok()) return ReportError(s);

  std::unique_ptr<dataset::DatasetManager> datasets;
  std::unique_ptr<dataset::DatasetServiceImpl> dataset_service;
  if (Contains(targets, "dataset")) {
    auto catalog = dataset::SqliteDatasetCatalog::Open(data_dir + "/switchyard.db");
    if (!catalog.ok()) return ReportError(catalog.status());
    dataset::ManagerOptions options;
    options.data_dir = data_dir;
    options.max_upload_bytes = flags.GetInt("max-upload-bytes");
    options.validator.max_line_bytes = flags.GetInt("max-line-bytes");
    options.validator.max_listed_issues = static_cast<int>(flags.GetInt("max-listed-issues"));
    options.validator.min_examples = flags.GetInt("min-examples");
    auto manager = dataset::DatasetManager::Open(options, std::move(*catalog));
    if (!manager.ok()) return ReportError(manager.status());
    datasets = std::move(*manager);
    dataset_service = std::make_unique<dataset::DatasetServiceImpl>(
        datasets.get(), authorizer, *registry, static_cast<int>(flags.GetInt("upload-workers")));
    runner.AddService(dataset_service.get(), "switchyard.v1.DatasetService");
  }

  // Training: the model registry, a catalog connection of its own to read
  // datasets (SQLite in WAL mode), the job store and the job manager.
  std::unique_ptr<training::ModelRegistry> models;
  std::unique_ptr<dataset::SqliteDatasetCatalog> training_catalog;
  std::unique_ptr<training::JobManager> jobs;
  std::unique_ptr<training::TrainingServiceImpl> training_service;
  if (Contains(targets, "training")) {
    const std::string db_path = data_dir + "/switchyard.db";
    auto registry_or = training::ModelRegistry::Open(data_dir, db_path);
    if (!registry_or.ok()) return ReportError(registry_or.status());
    models = std::move(*registry_or);
    auto catalog = dataset::SqliteDatasetCatalog::Open(db_path);
    if (!catalog.ok()) return ReportError(catalog.status());
    training_catalog = std::move(*catalog);
    auto store = training::SqliteJobStore::Open(db_path);
    if (!store.ok()) return ReportError(store.status());
    training::JobManagerOptions options;
    options.data_dir = data_dir;
    options.max_jobs_per_device = static_cast<int>(flags.GetInt("max-jobs-per-device"));
    options.max_queued_jobs = static_cast<int>(flags.GetInt("max-queued-jobs"));
    options.cpu_threads = static_cast<int>(flags.GetInt("training-threads"));
    options.metrics = registry.get();
    auto manager = training::JobManager::Open(options, std::move(*store), models.get(),
                                              training_catalog.get());
    if (!manager.ok()) return ReportError(manager.status());
    jobs = std::move(*manager);
    training_service =
        std::make_unique<training::TrainingServiceImpl>(jobs.get(), models.get(), authorizer);
    runner.AddService(training_service.get(), "switchyard.v1.TrainingService");
  }

  std::unique_ptr<retrieval::CollectionStore> collections;
  std::unique_ptr<retrieval::RetrievalServiceImpl> retrieval_service;
  if (Contains(targets, "retrieval")) {
    auto store = retrieval::CollectionStore::Open(data_dir);
    if (!store.ok()) return ReportError(store.status());
    collections = std::move(*store);
    retrieval::RetrievalServiceOptions options;
    options.search_threads = static_cast<int>(flags.GetInt("search-threads"));
    options.write_threads = static_cast<int>(flags.GetInt("retrieval-write-threads"));
    retrieval_service = std::make_unique<retrieval::RetrievalServiceImpl>(
        collections.get(), authorizer, *registry, options);
    runner.AddService(retrieval_service.get(), "switchyard.v1.RetrievalService");
  }

  std::unique_ptr<inference::InferenceServiceImpl> inference_service;
  if (Contains(targets, "inference")) {
    inference::InferenceServiceOptions options;
    options.data_dir = data_dir;
    inference::EngineOptions& e = options.engine;
    e.dtype = flags.GetString("dtype");
    e.device = flags.GetString("device");
    e.max_batch_size = static_cast<int>(flags.GetInt("max-batch-size"));
    e.kv_cache_bytes = flags.GetInt("kv-cache-bytes");
    e.max_context_tokens = flags.GetInt("max-context-tokens");
    e.max_waiting = static_cast<int>(flags.GetInt("max-waiting"));
    e.max_adapters = static_cast<int>(flags.GetInt("max-adapters"));
    e.threads = static_cast<int>(flags.GetInt("inference-threads"));
    inference_service =
        std::make_unique<inference::InferenceServiceImpl>(options, authorizer, *registry);
    for (const std::string& spec : flags.GetStrings("adapter")) {
      const size_t eq = spec.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) {
        std::cerr << "error: --adapter " << spec << ": expected NAME=DIR\n";
        return kExitUsage;
      }
      inference_service->AddAdapterPath(spec.substr(0, eq), spec.substr(eq + 1));
    }
    for (const std::string& spec : flags.GetStrings("model")) {
      const size_t eq = spec.find('=');
      const std::string name = spec.substr(0, eq);
      const std::string dir = eq == std::string::npos ? "" : spec.substr(eq + 1);
      if (name.empty() || (eq != std::string::npos && dir.empty())) {
        std::cerr << "error: --model " << spec << ": expected NAME=DIR or NAME\n";
        return kExitUsage;
      }
      auto loaded = inference_service->AddModel(name, dir);
      if (!loaded.ok()) {
        std::cerr << "error: --model " << spec << ": " << loaded.status().message() << "\n";
        return absl::IsNotFound(loaded.status()) ? kExitNotFound : kExitInvalidData;
      }
    }
    if (flags.GetStrings("model").empty()) {
      SY_LOG(kInfo, "server") << "inference: no --model given; load models with LoadModel";
    }
    runner.AddService(inference_service.get(), "switchyard.v1.InferenceService");
  }

  // Router: its backends are remote addresses, or (--target=all, no
  // address) this process's own services over an in-process channel, which
  // exists once the server has started.
  std::unique_ptr<router::ExperimentStore> experiment_store;
  std::unique_ptr<router::RouterServiceImpl> router_service;
  std::vector<std::pair<std::string, std::shared_ptr<grpc::Channel>*>> in_process;
  router::Backends backends;
  if (Contains(targets, "router")) {
    backends.token = flags.GetString("backend-token");
    for (auto [flag, service, channel] :
         {std::make_tuple("inference-addr", "inference", &backends.inference),
          std::make_tuple("retrieval-addr", "retrieval", &backends.retrieval),
          std::make_tuple("dataset-addr", "dataset", &backends.dataset)}) {
      const std::string address = flags.GetString(flag);
      if (!address.empty()) {
        rpc::ClientOptions client;
        client.address = address;
        client.tls_ca = flags.GetString("backend-tls-ca");
        auto made = rpc::MakeChannel(client);
        if (!made.ok()) return ReportError(made.status());
        *channel = *made;
      } else if (Contains(targets, service)) {
        in_process.emplace_back(service, channel);
      } else {
        SY_LOG(kWarning, "server")
            << "router: no --" << flag << "; arms that need " << service << " will fail";
      }
    }
    auto store = router::ExperimentStore::Open(data_dir + "/switchyard.db");
    if (!store.ok()) return ReportError(store.status());
    experiment_store = std::move(*store);
    router::RouterServiceOptions options;
    options.chat_threads = static_cast<int>(flags.GetInt("chat-threads"));
    options.shadow_threads = static_cast<int>(flags.GetInt("shadow-threads"));
    auto made = router::RouterServiceImpl::Create(options, experiment_store.get(), backends,
                                                  authorizer, *registry);
    if (!made.ok()) return ReportError(made.status());
    router_service = std::move(*made);
    runner.AddService(router_service.get(), "switchyard.v1.RouterService");
  }

  s = runner.Start();
  if (!s.ok()) return ReportError(s);
  if (router_service != nullptr && !in_process.empty()) {
    for (auto& [service, channel] : in_process) *channel = runner.InProcessChannel();
    router_service->SetBackends(backends);
  }
  if (jobs != nullptr) {
    s = jobs->Start();
    if (!s.ok()) {
      runner.Shutdown();
      runner.Wait();
      return ReportError(s);
    }
  }
  SY_LOG(kInfo, "server") << "serving targets=" << absl::StrJoin(targets, ",")
                          << " grpc=" << server_options.grpc_listen
                          << " grpc_port=" << runner.grpc_port()
                          << " metrics_port=" << runner.metrics_port() << " data_dir=" << data_dir
                          << " tls=" << (server_options.tls_cert.empty() ? "off" : "on")
                          << " auth=" << (authorizer->enabled() ? "tokens" : "off");
  const std::string host =
      server_options.grpc_listen.substr(0, server_options.grpc_listen.rfind(':'));
  const bool loopback = host == "127.0.0.1" || host == "localhost" || host == "[::1]";
  if (!loopback && (server_options.tls_cert.empty() || !authorizer->enabled())) {
    SY_LOG(kWarning, "server") << "listening on " << server_options.grpc_listen << " without "
                               << (server_options.tls_cert.empty() ? "TLS" : "")
                               << (server_options.tls_cert.empty() && !authorizer->enabled()
                                       ? " and without "
                                       : "")
                               << (authorizer->enabled() ? "" : "--auth-tokens")
                               << "; anyone who can reach the port can call it (see "
                                  "docs/operations.md, Security)";
  }
  int sig = rpc::WaitForTerminationSignal();
  SY_LOG(kInfo, "server") << "signal " << sig << ": draining";
  // WatchJob streams last as long as their jobs: end them first so the drain
  // does not wait for them.
  if (training_service != nullptr) training_service->EndWatches();
  runner.Shutdown();
  runner.Wait();
  if (jobs != nullptr) jobs->Shutdown();
  SY_LOG(kInfo, "server") << "stopped";
  return kExitOk;
}

}  // namespace switchyard::cli
