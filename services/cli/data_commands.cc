// `switchyard data ...`: local validation and preparation, and the dataset
// service client (upload, append, list, show, stats, versions, delete, export).
#include <sys/stat.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/rpc/status.pb.h"
#include "services/cli/cli_common.h"
#include "services/cli/commands.h"
#include "services/dataset/dataset_manager.h"
#include "services/dataset/dataset_preparer.h"
#include "services/dataset/dataset_proto.h"
#include "services/dataset/dataset_validator.h"
#include "services/dataset/token_counter.h"
#include "shared/core/file_util.h"
#include "shared/core/sha256.h"
#include "shared/text/model_text.h"
#include "switchyard/v1/dataset.grpc.pb.h"

namespace switchyard::cli {
namespace {

using dataset::DatasetFormat;

constexpr size_t kUploadChunk = 1 << 20;

const char* kDataUsage =
    "Usage: switchyard data <verb> [flags]\n\n"
    "Local (no server):\n"
    "  validate FILE     Check a JSONL dataset; exit 0 when valid, 1 when not.\n"
    "  prepare FILE -o OUT\n"
    "                    Convert CSV/TSV/JSON/JSONL to JSONL, report and apply fixes, split.\n"
    "Dataset service (--server ADDR):\n"
    "  upload FILE --name NAME     Validate and store a new version.\n"
    "  append NAME FILE            New version = latest train file + FILE's examples.\n"
    "  list                        Datasets, newest version of each.\n"
    "  show NAME[@V]               One dataset or version.\n"
    "  stats NAME[@V]              Statistics of a version.\n"
    "  versions NAME               Every version of a dataset.\n"
    "  delete NAME[@V]             Delete a dataset, or one version.\n"
    "  export NAME[@V] [-o FILE]   Download a version's file byte for byte.\n\n"
    "Run `switchyard data <verb> --help` for the flags of each verb.\n";

bool ParseFormatFlag(const FlagSet& flags, DatasetFormat* format) {
  if (!dataset::ParseFormat(flags.GetString("format"), format)) {
    std::cerr << "error: --format must be auto, chat, completion or preference\n";
    return false;
  }
  return true;
}

// "faq" -> ("faq", 0 = latest); "faq@3" -> ("faq", 3). Prints the problem and
// returns false for a malformed reference (a usage error, exit 2).
bool ParseRef(const std::string& ref, std::string* id, int64_t* version,
              bool allow_version = true) {
  size_t at = ref.find('@');
  *id = ref.substr(0, at);
  *version = 0;
  absl::Status valid = dataset::DatasetManager::ValidateDatasetId(*id);
  if (!valid.ok()) {
    std::cerr << "error: " << valid.message() << "\n";
    return false;
  }
  if (at == std::string::npos) return true;
  std::string v = ref.substr(at + 1);
  if (!allow_version) {
    std::cerr << "error: expected a dataset NAME without @VERSION, got " << ref << "\n";
    return false;
  }
  if (v == "latest" || (absl::SimpleAtoi(v, version) && *version > 0)) return true;
  std::cerr << "error: version in " << ref << " must be a positive number or latest\n";
  return false;
}

std::string VersionName(const std::string& id, int64_t version) {
  return absl::StrCat("datasets/", id, "/versions/",
                      version == 0 ? "latest" : absl::StrCat(version));
}

std::string Dist(const v1::Distribution& d) {
  return absl::StrFormat("mean %.1f  p50 %.0f  p90 %.0f  max %.0f", d.mean(), d.p50(), d.p90(),
                         d.max());
}

std::string FormatLabel(v1::DatasetFormat f) {
  return std::string(dataset::FormatName(dataset::FromProto(f)));
}

std::string StatsTable(const v1::DatasetStats& s) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"examples", absl::StrCat(s.examples())});
  rows.push_back({"bytes", HumanBytes(s.bytes())});
  rows.push_back({"messages/example", Dist(s.messages_per_example())});
  rows.push_back({"characters/example", Dist(s.characters_per_example())});
  rows.push_back({"words/example", Dist(s.words_per_example())});
  if (s.total_tokens() > 0) {
    rows.push_back({"tokens/example", Dist(s.tokens_per_example())});
    rows.push_back({"tokens (one epoch)", absl::StrCat(s.total_tokens())});
  }
  std::vector<std::string> roles;
  for (const char* r : {"system", "user", "assistant", "tool"}) {
    auto it = s.role_counts().find(r);
    if (it != s.role_counts().end()) roles.push_back(absl::StrCat(r, " ", it->second));
  }
  rows.push_back({"messages by role", absl::StrJoin(roles, ", ")});
  rows.push_back({"trained assistant turns", absl::StrCat(s.trained_assistant_messages())});
  rows.push_back({"without system message", absl::StrCat(s.examples_without_system_message())});
  rows.push_back({"duplicates", absl::StrCat("exact ", s.exact_duplicates(), ", normalized ",
                                             s.normalized_duplicates())});
  if (s.looks_like_classification()) {
    std::vector<std::string> labels;
    for (const v1::LabelCount& l : s.labels()) {
      if (labels.size() == 10) {
        labels.push_back("...");
        break;
      }
      labels.push_back(absl::StrCat("\"", l.label(), "\" ", l.count()));
    }
    rows.push_back({"labels (classification)", absl::StrJoin(labels, ", ")});
  }
  return FormatTable(rows);
}

std::string IssueLine(const v1::Issue& i) {
  std::string where = i.file().empty() ? "" : i.file();
  if (i.line() > 0) absl::StrAppend(&where, where.empty() ? "" : ":", "line ", i.line());
  if (where.empty()) where = "file";
  return absl::StrCat(i.severity() == v1::Issue::ERROR ? "error  " : "warning", " ", where,
                      i.field().empty() ? "" : absl::StrCat(" ", i.field()), ": ", i.message(),
                      " [", i.kind(), "]");
}

void PrintReport(const v1::ValidationReport& r, std::ostream& out) {
  out << (r.valid() ? "VALID" : "INVALID") << ": format " << FormatLabel(r.format()) << ", "
      << r.train_stats().examples() << " well-formed examples, " << r.error_count() << " error(s), "
      << r.warning_count() << " warning(s)\n";
  for (const v1::Issue& i : r.issues()) out << "  " << IssueLine(i) << "\n";
  if (r.truncated()) {
    out << "  ... more issues not listed; counts by kind:\n";
    for (const v1::IssueCount& c : r.counts()) {
      out << "    " << c.kind() << ": " << c.count() << "\n";
    }
  }
  out << "\ntrain statistics\n" << StatsTable(r.train_stats());
  if (r.has_validation_stats())
    out << "\nvalidation statistics\n" << StatsTable(r.validation_stats());
}

// Prints a failed upload's report from the rich error details, if present.
int ReportUploadFailure(const grpc::Status& status, bool json) {
  google::rpc::Status details;
  v1::ValidationReport report;
  if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
      details.ParseFromString(status.error_details()) && details.details_size() > 0 &&
      details.details(0).UnpackTo(&report)) {
    if (json) {
      std::cout << ToJson(report);
    } else {
      PrintReport(report, std::cerr);
      if (report.truncated()) {
        std::cerr << "\nthe server lists the first issues only; `switchyard data validate "
                     "FILE` lists them all\n";
      }
      std::cerr << "\nnothing was stored; fix the errors above and upload again\n";
    }
    return kExitInvalidData;
  }
  return ReportError(status);
}

int64_t FileSize(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : -1;
}

int Validate(const std::vector<std::string>& args) {
  FlagSet flags("switchyard data validate FILE [flags]",
                "Checks a JSONL dataset as a hosted fine-tuning API would and prints its\n"
                "statistics. Every error names its line and field. Exit 0 when valid, 1 when not.");
  flags.AddString("format", "auto", "auto | chat | completion | preference.");
  flags.AddString("validation-file", "", "Also check a validation file (and train overlap).");
  flags.AddBool("strict", false, "Treat warnings as errors.");
  flags.AddBool("json", false, "Print the report as JSON (the API's ValidationReport).");
  flags.AddInt("max-listed-issues", 100, "Issues listed; all are counted.");
  flags.AddInt("max-line-bytes", 8 << 20, "Longest allowed line, in bytes.");
  flags.AddInt("min-examples", 10, "Fewer examples than this is an error.");
  flags.AddString("tokenizer", "",
                  "Model directory or tokenizer.json: count tokens per example and per epoch "
                  "(chat examples through the model's chat template when it has one).");
  flags.AddInt("max-seq-len", 0,
               "With --tokenizer: examples with more tokens are an error (0: no limit).");
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  if (flags.GetInt("max-seq-len") > 0 && flags.GetString("tokenizer").empty()) {
    std::cerr << "error: --max-seq-len needs --tokenizer\n";
    return kExitUsage;
  }
  for (const char* name : {"max-listed-issues", "max-line-bytes"}) {
    if (flags.GetInt(name) <= 0) {
      std::cerr << "error: --" << name << " must be positive\n";
      return kExitUsage;
    }
  }
  dataset::ValidatorOptions options;
  if (!ParseFormatFlag(flags, &options.format)) return kExitUsage;
  options.strict = flags.GetBool("strict");
  options.max_listed_issues = static_cast<int>(flags.GetInt("max-listed-issues"));
  options.max_line_bytes = flags.GetInt("max-line-bytes");
  options.min_examples = flags.GetInt("min-examples");
  text::ModelText model;
  std::unique_ptr<dataset::TokenizerTokenCounter> counter;
  if (!flags.GetString("tokenizer").empty()) {
    auto loaded = text::LoadModelText(flags.GetString("tokenizer"));
    if (!loaded.ok()) return ReportError(loaded.status());
    model = std::move(*loaded);
    counter = std::make_unique<dataset::TokenizerTokenCounter>(
        model.tokenizer.get(), model.chat_template.get(), model.template_variables);
    options.token_counter = counter.get();
    options.max_seq_len = flags.GetInt("max-seq-len");
  }
  auto report = dataset::DatasetValidator::ValidateFiles(options, flags.positional()[0],
                                                         flags.GetString("validation-file"));
  if (!report.ok()) return ReportError(report.status());
  v1::ValidationReport proto;
  dataset::ToProto(*report, &proto);
  if (flags.GetBool("json"))
    std::cout << ToJson(proto);
  else
    PrintReport(proto, std::cout);
  return report->valid ? kExitOk : kExitInvalidData;
}

int Prepare(const std::vector<std::string>& args) {
  FlagSet flags("switchyard data prepare FILE -o OUT [flags]",
                "Converts CSV, TSV, a JSON array or JSONL to a JSONL dataset, reports fixes\n"
                "(and applies them with --apply-fixes) and splits off a validation file\n"
                "(OUT_validation.jsonl). Never changes FILE.");
  flags.AddString("output", "", "Output JSONL path (-o).");
  flags.AddString("format", "auto", "Output format: auto | chat | completion | preference.");
  flags.AddString("input-kind", "auto", "auto | csv | tsv | json | jsonl.");
  flags.AddDouble("split", 0, "Fraction of examples for the validation file, 0 <= split < 1.");
  flags.AddInt("seed", 42, "Seed of the train/validation split.");
  flags.AddBool("apply-fixes", false, "Apply the fixes the report lists.");
  flags.AddString("prompt-column", "", "Column holding the prompt (tabular input).");
  flags.AddString("completion-column", "", "Column holding the answer (tabular input).");
  flags.AddString("system-message", "", "System message added to converted chat examples.");
  flags.AddBool("json", false, "Print the report as JSON.");
  int rc = ParseOrExit(&flags, ExpandShortFlags(args), 1, 1);
  if (rc >= 0) return rc;
  if (flags.GetString("output").empty()) {
    std::cerr << "error: -o OUT is required\n";
    return kExitUsage;
  }
  dataset::PrepareOptions o;
  if (!ParseFormatFlag(flags, &o.output_format)) return kExitUsage;
  const std::string kind = flags.GetString("input-kind");
  if (kind == "csv")
    o.input_kind = dataset::InputKind::kCsv;
  else if (kind == "tsv")
    o.input_kind = dataset::InputKind::kTsv;
  else if (kind == "json")
    o.input_kind = dataset::InputKind::kJsonArray;
  else if (kind == "jsonl")
    o.input_kind = dataset::InputKind::kJsonl;
  else if (kind != "auto") {
    std::cerr << "error: --input-kind must be auto, csv, tsv, json or jsonl\n";
    return kExitUsage;
  }
  o.validation_split = flags.GetDouble("split");
  o.seed = static_cast<uint64_t>(flags.GetInt("seed"));
  o.apply_fixes = flags.GetBool("apply-fixes");
  o.prompt_column = flags.GetString("prompt-column");
  o.completion_column = flags.GetString("completion-column");
  o.system_message = flags.GetString("system-message");
  dataset::DatasetPreparer preparer(o);
  auto report = preparer.Prepare(flags.positional()[0], flags.GetString("output"));
  if (!report.ok()) return ReportError(report.status());
  if (flags.GetBool("json")) {
    nlohmann::json fixes = nlohmann::json::array();
    for (const auto& f : report->fixes) {
      fixes.push_back({{"kind", f.kind},
                       {"count", f.count},
                       {"message", f.message},
                       {"exampleLines", f.example_lines},
                       {"applied", o.apply_fixes && !f.advice_only}});
    }
    nlohmann::json out = {{"inputExamples", report->input_examples},
                          {"trainExamples", report->train_examples},
                          {"validationExamples", report->validation_examples},
                          {"stratified", report->stratified},
                          {"format", std::string(dataset::FormatName(report->output_format))},
                          {"trainPath", report->train_path},
                          {"validationPath", report->validation_path},
                          {"fixes", fixes},
                          {"notes", report->notes}};
    std::cout << out.dump(2) << "\n";
    return kExitOk;
  }
  std::cout << "read " << report->input_examples << " examples from " << flags.positional()[0]
            << " (format " << dataset::FormatName(report->output_format) << ")\n";
  if (report->fixes.empty()) std::cout << "no fixes needed\n";
  for (const auto& f : report->fixes) {
    std::vector<std::string> lines;
    for (int64_t l : f.example_lines) lines.push_back(absl::StrCat(l));
    const char* verb = f.advice_only ? "advice " : o.apply_fixes ? "applied " : "suggested ";
    std::cout << verb << f.kind << " (" << f.count << " examples"
              << (lines.empty() ? "" : ", e.g. line " + absl::StrJoin(lines, ", "))
              << "): " << f.message << "\n";
  }
  if (!o.apply_fixes && !report->fixes.empty()) {
    std::cout << "run again with --apply-fixes to apply them\n";
  }
  for (const auto& n : report->notes) std::cout << "note: " << n << "\n";
  std::cout << "wrote " << report->train_examples << " examples to " << report->train_path << "\n";
  if (!report->validation_path.empty()) {
    std::cout << "wrote " << report->validation_examples << " examples to "
              << report->validation_path << (report->stratified ? " (stratified by label)" : "")
              << "\n";
  }
  return kExitOk;
}

// Streams files to an upload or append call; returns false when a write failed
// (the server already finished the call).
template <typename Writer, typename MakeChunk>
bool SendFiles(Writer* writer, const std::vector<std::pair<std::string, v1::DatasetSplit>>& files,
               int64_t total, MakeChunk make_chunk) {
  ProgressBar bar("upload", total);
  int64_t sent = 0;
  std::string buf(kUploadChunk, '\0');
  for (const auto& [path, split] : files) {
    std::ifstream in(path, std::ios::binary);
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      size_t n = static_cast<size_t>(in.gcount());
      if (n == 0) break;
      if (!writer->Write(make_chunk(split, absl::string_view(buf.data(), n)))) {
        bar.Done();
        return false;
      }
      sent += static_cast<int64_t>(n);
      bar.Update(sent);
    }
  }
  bar.Done();
  return true;
}

void PrintVersion(const v1::DatasetVersion& v, std::ostream& out) {
  out << v.name() << "  format " << FormatLabel(v.format()) << "\n";
  for (const v1::DatasetFile& f : v.files()) {
    out << "  " << (f.split() == v1::DATASET_SPLIT_VALIDATION ? "validation" : "train     ") << "  "
        << f.examples() << " examples  " << HumanBytes(f.bytes()) << "  sha256 " << f.sha256()
        << "\n";
  }
  for (const v1::Issue& w : v.warnings()) out << "  " << IssueLine(w) << "\n";
}

int Upload(const std::vector<std::string>& args, bool append) {
  FlagSet flags(append ? "switchyard data append NAME FILE [flags]"
                       : "switchyard data upload FILE --name NAME [flags]",
                append
                    ? "Creates a new version holding the base version's train file plus the\n"
                      "examples in FILE; validated as a whole, committed only when valid."
                    : "Uploads a JSONL dataset (and optional validation file) as a new version.\n"
                      "The server validates while receiving and commits only when there are\n"
                      "no errors; on errors nothing is stored and every error is listed.");
  if (!append) {
    flags.AddString("name", "", "Dataset id: lower-case letters, digits, '-', '_', '.'.");
    flags.AddString("validation-file", "", "Validation JSONL stored beside the train file.");
    flags.AddString("format", "auto", "auto | chat | completion | preference.");
    flags.AddString("description", "", "Description set when the dataset is created.");
  } else {
    flags.AddInt("base-version", 0, "Version to append to; 0 means the latest.");
  }
  flags.AddBool("strict", false, "Warnings block the commit too.");
  flags.AddBool("validate-only", false, "Validate on the server; store nothing.");
  flags.AddBool("json", false, "Print the response as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, append ? 2 : 1, append ? 2 : 1);
  if (rc >= 0) return rc;
  std::vector<std::pair<std::string, v1::DatasetSplit>> files;
  files.emplace_back(flags.positional()[append ? 1 : 0], v1::DATASET_SPLIT_TRAIN);
  if (!append && !flags.GetString("validation-file").empty()) {
    files.emplace_back(flags.GetString("validation-file"), v1::DATASET_SPLIT_VALIDATION);
  }
  int64_t total = 0;
  for (const auto& f : files) {
    int64_t size = FileSize(f.first);
    if (size < 0) {
      std::cerr << "error: cannot read " << f.first << "\n";
      return kExitNotFound;
    }
    total += size;
  }
  DatasetFormat format = DatasetFormat::kAuto;
  if (!append && !ParseFormatFlag(flags, &format)) return kExitUsage;
  if (!append && flags.GetString("name").empty()) {
    std::cerr << "error: --name is required\n";
    return kExitUsage;
  }
  rpc::ClientOptions client = ClientOptionsFromFlags(flags);
  auto channel = rpc::MakeChannel(client);
  if (!channel.ok()) return ReportError(channel.status());
  auto stub = v1::DatasetService::NewStub(*channel);
  grpc::ClientContext ctx;
  rpc::PrepareContext(client, &ctx);
  v1::UploadDatasetResponse response;
  grpc::Status status;
  if (!append) {
    auto writer = stub->UploadDataset(&ctx, &response);
    v1::UploadDatasetRequest header;
    v1::UploadHeader* h = header.mutable_header();
    h->set_dataset_id(flags.GetString("name"));
    h->set_format(dataset::ToProto(format));
    h->set_strict(flags.GetBool("strict"));
    h->set_validate_only(flags.GetBool("validate-only"));
    h->set_description(flags.GetString("description"));
    h->set_expected_bytes(total);
    if (writer->Write(header)) {
      v1::UploadDatasetRequest chunk;
      if (SendFiles(writer.get(), files, total, [&](v1::DatasetSplit split, absl::string_view d) {
            chunk.mutable_chunk()->set_split(split);
            chunk.mutable_chunk()->set_data(std::string(d));
            return chunk;
          })) {
        writer->WritesDone();
      }
    }
    status = writer->Finish();
  } else {
    std::string id;
    int64_t ignored;
    if (!ParseRef(flags.positional()[0], &id, &ignored, /*allow_version=*/false)) {
      return kExitUsage;
    }
    auto writer = stub->AppendExamples(&ctx, &response);
    v1::AppendExamplesRequest header;
    v1::AppendHeader* h = header.mutable_header();
    h->set_dataset(absl::StrCat("datasets/", id));
    h->set_base_version(flags.GetInt("base-version"));
    h->set_strict(flags.GetBool("strict"));
    h->set_validate_only(flags.GetBool("validate-only"));
    h->set_expected_bytes(total);
    if (writer->Write(header)) {
      v1::AppendExamplesRequest chunk;
      if (SendFiles(writer.get(), files, total, [&](v1::DatasetSplit, absl::string_view d) {
            chunk.set_data(std::string(d));
            return chunk;
          })) {
        writer->WritesDone();
      }
    }
    status = writer->Finish();
  }
  if (!status.ok()) return ReportUploadFailure(status, flags.GetBool("json"));
  if (flags.GetBool("json")) {
    std::cout << ToJson(response);
    return kExitOk;
  }
  if (response.has_version()) {
    std::cout << "committed ";
    PrintVersion(response.version(), std::cout);
  } else {
    std::cout << "validated on the server (nothing stored)\n";
  }
  std::cout << "\n";
  PrintReport(response.report(), std::cout);
  return kExitOk;
}

using Client = ServiceClient<v1::DatasetService>;

// Streams one file of a version into `out`, checking its sha256 (DATA_LOSS on
// a mismatch). With `progress`, draws a bar on a terminal.
grpc::Status Download(const Client& c, const std::string& name, v1::DatasetSplit split,
                      std::ostream& out, bool progress, std::string* sha256) {
  grpc::ClientContext ctx;
  c.Prepare(&ctx);
  v1::ExportDatasetRequest req;
  req.set_name(name);
  req.set_split(split);
  auto reader = c.stub->ExportDataset(&ctx, req);
  v1::ExportDatasetResponse msg;
  Sha256 hasher;
  std::unique_ptr<ProgressBar> bar;
  while (reader->Read(&msg)) {
    if (!bar && progress) bar = std::make_unique<ProgressBar>("export", msg.total_bytes());
    out.write(msg.data().data(), static_cast<std::streamsize>(msg.data().size()));
    hasher.Update(msg.data());
    *sha256 = msg.sha256();
    if (bar) bar->Update(msg.offset() + static_cast<int64_t>(msg.data().size()));
  }
  if (bar) bar->Done();
  grpc::Status s = reader->Finish();
  if (!s.ok()) return s;
  if (hasher.HexDigest() != *sha256) {
    return grpc::Status(grpc::StatusCode::DATA_LOSS, "sha256 mismatch: the download is corrupt");
  }
  return grpc::Status::OK;
}

// Token statistics of a stored version: downloads its files and counts them
// with `tokenizer` locally, filling tokens_per_example and total_tokens.
int AddTokenStats(const Client& c, const std::string& tokenizer_path, v1::DatasetVersion* v) {
  auto model = text::LoadModelText(tokenizer_path);
  if (!model.ok()) return ReportError(model.status());
  std::string paths[2];
  for (const v1::DatasetFile& f : v->files()) {
    const int i = f.split() == v1::DATASET_SPLIT_VALIDATION ? 1 : 0;
    paths[i] = absl::StrCat("/tmp/switchyard-stats-", RandomHex(6), i ? "-validation" : "-train",
                            ".jsonl");
    std::ofstream out(paths[i], std::ios::binary);
    std::string sha;
    grpc::Status s = Download(c, v->name(), f.split(), out, false, &sha);
    out.close();
    if (!s.ok()) {
      for (const std::string& p : paths) {
        if (!p.empty()) std::remove(p.c_str());
      }
      return ReportError(s);
    }
  }
  dataset::TokenizerTokenCounter counter(model->tokenizer.get(), model->chat_template.get(),
                                         model->template_variables);
  dataset::ValidatorOptions options;
  options.format = dataset::FromProto(v->format());
  options.min_examples = 0;
  options.token_counter = &counter;
  auto report = dataset::DatasetValidator::ValidateFiles(options, paths[0], paths[1]);
  for (const std::string& p : paths) {
    if (!p.empty()) std::remove(p.c_str());
  }
  if (!report.ok()) return ReportError(report.status());
  v1::ValidationReport proto;
  dataset::ToProto(*report, &proto);
  *v->mutable_train_stats()->mutable_tokens_per_example() =
      proto.train_stats().tokens_per_example();
  v->mutable_train_stats()->set_total_tokens(proto.train_stats().total_tokens());
  if (v->has_validation_stats()) {
    *v->mutable_validation_stats()->mutable_tokens_per_example() =
        proto.validation_stats().tokens_per_example();
    v->mutable_validation_stats()->set_total_tokens(proto.validation_stats().total_tokens());
  }
  return -1;
}

int List(const std::vector<std::string>& args) {
  FlagSet flags("switchyard data list [flags]", "Lists datasets with their newest version.");
  AddPageFlags(&flags, "Datasets");
  flags.AddBool("json", false, "Print the response as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 0, 0);
  if (rc >= 0) return rc;
  Client c;
  if ((rc = Connect(flags, &c)) >= 0) return rc;
  v1::ListDatasetsResponse all;
  rc = FetchPages(
      flags,
      [&](int32_t size, const std::string& token, v1::ListDatasetsResponse* page) {
        grpc::ClientContext ctx;
        c.Prepare(&ctx);
        v1::ListDatasetsRequest req;
        req.set_page_size(size);
        req.set_page_token(token);
        return c.stub->ListDatasets(&ctx, req, page);
      },
      [](v1::ListDatasetsResponse* r) { return r->mutable_datasets(); }, &all);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ToJson(all);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {{"NAME", "LATEST", "VERSIONS", "DESCRIPTION"}};
  for (const v1::Dataset& d : all.datasets()) {
    rows.push_back({d.dataset_id(), absl::StrCat("v", d.latest_version()),
                    absl::StrCat(d.version_count()), d.description()});
  }
  std::cout << FormatTable(rows);
  PrintMorePages(all.next_page_token());
  return kExitOk;
}

int ShowOrStats(const std::vector<std::string>& args, bool stats_only) {
  FlagSet flags(stats_only ? "switchyard data stats NAME[@VERSION] [flags]"
                           : "switchyard data show NAME[@VERSION] [flags]",
                stats_only ? "Prints the statistics of a version (the latest by default)."
                           : "Shows a dataset and a version (the latest by default).");
  flags.AddBool("json", false, "Print the response as JSON.");
  if (stats_only) {
    flags.AddString("model", "",
                    "A model under the server's <data-dir>/models/: the server counts tokens "
                    "with its tokenizer and chat template.");
    flags.AddString("tokenizer", "",
                    "Model directory or tokenizer.json: add token counts (downloads the files "
                    "and counts locally).");
  }
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  std::string id;
  int64_t version;
  if (!ParseRef(flags.positional()[0], &id, &version)) return kExitUsage;
  Client c;
  if ((rc = Connect(flags, &c)) >= 0) return rc;
  v1::Dataset dataset;
  if (!stats_only) {
    grpc::ClientContext ctx;
    c.Prepare(&ctx);
    v1::GetDatasetRequest req;
    req.set_name(absl::StrCat("datasets/", id));
    grpc::Status s = c.stub->GetDataset(&ctx, req, &dataset);
    if (!s.ok()) return ReportError(s);
  }
  grpc::ClientContext ctx;
  c.Prepare(&ctx);
  v1::GetDatasetVersionRequest req;
  req.set_name(VersionName(id, version));
  if (stats_only) req.set_tokenizer_model(flags.GetString("model"));
  v1::DatasetVersion v;
  grpc::Status s = c.stub->GetDatasetVersion(&ctx, req, &v);
  if (!s.ok()) return ReportError(s);
  if (stats_only && !flags.GetString("tokenizer").empty()) {
    if ((rc = AddTokenStats(c, flags.GetString("tokenizer"), &v)) >= 0) return rc;
  }
  if (flags.GetBool("json")) {
    if (stats_only) {
      std::cout << ToJson(v);
    } else {
      *dataset.mutable_latest() = v;
      std::cout << ToJson(dataset);
    }
    return kExitOk;
  }
  if (!stats_only) {
    std::cout << dataset.name() << "  versions " << dataset.version_count() << "  latest v"
              << dataset.latest_version()
              << (dataset.description().empty() ? "" : "  \"" + dataset.description() + "\"")
              << "\n";
    PrintVersion(v, std::cout);
  }
  std::cout << (stats_only ? "" : "\n") << "train statistics (" << v.name() << ")\n"
            << StatsTable(v.train_stats());
  if (v.has_validation_stats()) {
    std::cout << "\nvalidation statistics\n" << StatsTable(v.validation_stats());
  }
  return kExitOk;
}

int Versions(const std::vector<std::string>& args) {
  FlagSet flags("switchyard data versions NAME [flags]", "Lists every version of a dataset.");
  flags.AddBool("json", false, "Print the response as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  std::string id;
  int64_t ignored;
  if (!ParseRef(flags.positional()[0], &id, &ignored, /*allow_version=*/false)) return kExitUsage;
  Client c;
  if ((rc = Connect(flags, &c)) >= 0) return rc;
  v1::ListDatasetVersionsResponse all;
  std::string token;
  do {
    grpc::ClientContext ctx;
    c.Prepare(&ctx);
    v1::ListDatasetVersionsRequest req;
    req.set_parent(absl::StrCat("datasets/", id));
    req.set_page_token(token);
    v1::ListDatasetVersionsResponse resp;
    grpc::Status s = c.stub->ListDatasetVersions(&ctx, req, &resp);
    if (!s.ok()) return ReportError(s);
    all.mutable_versions()->MergeFrom(resp.versions());
    token = resp.next_page_token();
  } while (!token.empty());
  if (flags.GetBool("json")) {
    std::cout << ToJson(all);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"VERSION", "FORMAT", "EXAMPLES", "BYTES", "PARENT", "SHA256"}};
  for (const v1::DatasetVersion& v : all.versions()) {
    std::string sha = v.files_size() > 0 ? v.files(0).sha256().substr(0, 16) : "";
    rows.push_back({absl::StrCat("v", v.version()), FormatLabel(v.format()),
                    absl::StrCat(v.train_stats().examples()), HumanBytes(v.train_stats().bytes()),
                    v.parent_version() ? absl::StrCat("v", v.parent_version()) : "-", sha});
  }
  std::cout << FormatTable(rows);
  return kExitOk;
}

int Delete(const std::vector<std::string>& args) {
  FlagSet flags("switchyard data delete NAME[@VERSION] [flags]",
                "Deletes a dataset with all its versions, or one version (NAME@VERSION).");
  flags.AddBool("json", false, "Print {\"deleted\": NAME} as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  std::string id;
  int64_t version;
  if (!ParseRef(flags.positional()[0], &id, &version)) return kExitUsage;
  Client c;
  if ((rc = Connect(flags, &c)) >= 0) return rc;
  grpc::ClientContext ctx;
  c.Prepare(&ctx);
  google::protobuf::Empty empty;
  grpc::Status s;
  const bool whole_dataset = flags.positional()[0].find('@') == std::string::npos;
  if (!whole_dataset && version == 0) {
    std::cerr << "error: delete one version by number (NAME@3), not @latest\n";
    return kExitUsage;
  }
  if (whole_dataset) {
    v1::DeleteDatasetRequest req;
    req.set_name(absl::StrCat("datasets/", id));
    s = c.stub->DeleteDataset(&ctx, req, &empty);
  } else {
    v1::DeleteDatasetVersionRequest req;
    req.set_name(VersionName(id, version));
    s = c.stub->DeleteDatasetVersion(&ctx, req, &empty);
  }
  if (!s.ok()) return ReportError(s);
  if (flags.GetBool("json")) {
    std::cout << "{\n  \"deleted\": \"" << flags.positional()[0] << "\"\n}\n";
  } else {
    std::cout << "deleted " << flags.positional()[0] << "\n";
  }
  return kExitOk;
}

int Export(const std::vector<std::string>& args) {
  FlagSet flags("switchyard data export NAME[@VERSION] [-o FILE] [flags]",
                "Writes a version's file, byte for byte as uploaded, to FILE or stdout, and\n"
                "checks its sha256.");
  flags.AddString("output", "", "Output file (-o); stdout when empty.");
  flags.AddString("split", "train", "train | validation.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, ExpandShortFlags(args), 1, 1);
  if (rc >= 0) return rc;
  std::string id;
  int64_t version;
  if (!ParseRef(flags.positional()[0], &id, &version)) return kExitUsage;
  const std::string split = flags.GetString("split");
  if (split != "train" && split != "validation") {
    std::cerr << "error: --split must be train or validation\n";
    return kExitUsage;
  }
  Client c;
  if ((rc = Connect(flags, &c)) >= 0) return rc;
  const std::string out_path = flags.GetString("output");
  std::string tmp_path = out_path.empty() ? "" : out_path + ".part";
  std::ofstream file;
  if (!out_path.empty()) {
    file.open(tmp_path, std::ios::binary | std::ios::trunc);
    if (!file) {
      std::cerr << "error: cannot write " << tmp_path << "\n";
      return kExitError;
    }
  }
  std::ostream& out = out_path.empty() ? std::cout : file;
  std::string expected_sha;
  grpc::Status s =
      Download(c, VersionName(id, version),
               split == "train" ? v1::DATASET_SPLIT_TRAIN : v1::DATASET_SPLIT_VALIDATION, out,
               !out_path.empty(), &expected_sha);
  if (!s.ok()) {
    if (!tmp_path.empty()) std::remove(tmp_path.c_str());
    return ReportError(s);
  }
  out.flush();
  if (!out) {
    std::cerr << "error: writing " << (out_path.empty() ? "stdout" : tmp_path) << " failed\n";
    if (!tmp_path.empty()) std::remove(tmp_path.c_str());
    return kExitError;
  }
  if (!out_path.empty()) {
    file.close();
    if (!file) {
      std::cerr << "error: writing " << tmp_path << " failed (disk full?)\n";
      std::remove(tmp_path.c_str());
      return kExitError;
    }
    if (std::rename(tmp_path.c_str(), out_path.c_str()) != 0) {
      std::cerr << "error: cannot rename " << tmp_path << " to " << out_path << "\n";
      return kExitError;
    }
    std::cerr << "wrote " << out_path << " (sha256 " << expected_sha << ")\n";
  }
  return kExitOk;
}

}  // namespace

int RunData(const std::vector<std::string>& args) {
  return DispatchVerb(
      "data", kDataUsage, args,
      {
          {"validate", Validate},
          {"prepare", Prepare},
          {"upload", [](const std::vector<std::string>& a) { return Upload(a, false); }},
          {"append", [](const std::vector<std::string>& a) { return Upload(a, true); }},
          {"list", List},
          {"show", [](const std::vector<std::string>& a) { return ShowOrStats(a, false); }},
          {"stats", [](const std::vector<std::string>& a) { return ShowOrStats(a, true); }},
          {"versions", Versions},
          {"delete", Delete},
          {"export", Export},
      });
}

}  // namespace switchyard::cli
