#include "services/dataset/dataset_proto.h"

#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"

namespace switchyard::dataset {
namespace {

void ToProto(const Summary& s, v1::Distribution* out) {
  out->set_mean(s.mean);
  out->set_p50(s.p50);
  out->set_p90(s.p90);
  out->set_min(s.min);
  out->set_max(s.max);
}

v1::Issue::Severity ToProto(Severity s) {
  return s == Severity::kError ? v1::Issue::ERROR : v1::Issue::WARNING;
}

v1::DatasetSplit SplitFromName(const std::string& split) {
  return split == "validation" ? v1::DATASET_SPLIT_VALIDATION : v1::DATASET_SPLIT_TRAIN;
}

}  // namespace

v1::DatasetFormat ToProto(DatasetFormat format) {
  switch (format) {
    case DatasetFormat::kChat:
      return v1::DATASET_FORMAT_CHAT;
    case DatasetFormat::kCompletion:
      return v1::DATASET_FORMAT_COMPLETION;
    case DatasetFormat::kPreference:
      return v1::DATASET_FORMAT_PREFERENCE;
    case DatasetFormat::kAuto:
      break;
  }
  return v1::DATASET_FORMAT_UNSPECIFIED;
}

DatasetFormat FromProto(v1::DatasetFormat format) {
  switch (format) {
    case v1::DATASET_FORMAT_CHAT:
      return DatasetFormat::kChat;
    case v1::DATASET_FORMAT_COMPLETION:
      return DatasetFormat::kCompletion;
    case v1::DATASET_FORMAT_PREFERENCE:
      return DatasetFormat::kPreference;
    default:
      return DatasetFormat::kAuto;
  }
}

void ToProto(const ValidationIssue& issue, v1::Issue* out) {
  out->set_severity(ToProto(issue.severity));
  out->set_kind(issue.kind);
  out->set_line(issue.line);
  out->set_field(issue.field);
  out->set_message(issue.message);
  out->set_file(issue.file);
}

void ToProto(const DatasetStats& s, v1::DatasetStats* out) {
  out->set_examples(s.examples);
  out->set_bytes(s.bytes);
  ToProto(s.messages_per_example, out->mutable_messages_per_example());
  ToProto(s.characters_per_example, out->mutable_characters_per_example());
  ToProto(s.words_per_example, out->mutable_words_per_example());
  for (const auto& [role, count] : s.role_counts) (*out->mutable_role_counts())[role] = count;
  out->set_exact_duplicates(s.exact_duplicates);
  out->set_normalized_duplicates(s.normalized_duplicates);
  out->set_examples_without_system_message(s.examples_without_system_message);
  out->set_trained_assistant_messages(s.trained_assistant_messages);
  out->set_looks_like_classification(s.looks_like_classification);
  if (s.has_tokens) {
    ToProto(s.tokens_per_example, out->mutable_tokens_per_example());
    out->set_total_tokens(s.total_tokens);
  }
  for (const auto& [label, count] : s.labels) {
    v1::LabelCount* l = out->add_labels();
    l->set_label(label);
    l->set_count(count);
  }
}

void ToProto(const ValidationReport& r, v1::ValidationReport* out) {
  out->set_format(ToProto(r.format));
  out->set_valid(r.valid);
  for (const ValidationIssue& issue : r.issues) ToProto(issue, out->add_issues());
  for (const auto& [kind, count] : r.counts) {
    v1::IssueCount* c = out->add_counts();
    c->set_kind(kind);
    c->set_severity(ToProto(count.severity));
    c->set_count(count.count);
  }
  out->set_error_count(r.error_count);
  out->set_warning_count(r.warning_count);
  out->set_truncated(r.truncated);
  ToProto(r.train_stats, out->mutable_train_stats());
  if (r.validation_stats) ToProto(*r.validation_stats, out->mutable_validation_stats());
}

void ToProto(const VersionRecord& v, v1::DatasetVersion* out) {
  using google::protobuf::util::TimeUtil;
  out->set_name(absl::StrCat("datasets/", v.dataset_id, "/versions/", v.version));
  out->set_dataset_id(v.dataset_id);
  out->set_version(v.version);
  out->set_format(ToProto(v.format));
  *out->mutable_create_time() = TimeUtil::MillisecondsToTimestamp(v.create_time_ms);
  for (const FileRecord& f : v.files) {
    v1::DatasetFile* file = out->add_files();
    file->set_split(SplitFromName(f.split));
    file->set_bytes(f.bytes);
    file->set_sha256(f.sha256);
    file->set_examples(f.examples);
  }
  ToProto(v.train_stats, out->mutable_train_stats());
  if (v.validation_stats) ToProto(*v.validation_stats, out->mutable_validation_stats());
  for (const ValidationIssue& w : v.warnings) ToProto(w, out->add_warnings());
  out->set_parent_version(v.parent_version);
}

void ToProto(const DatasetRecord& d, v1::Dataset* out) {
  using google::protobuf::util::TimeUtil;
  out->set_name(absl::StrCat("datasets/", d.dataset_id));
  out->set_dataset_id(d.dataset_id);
  out->set_description(d.description);
  for (const auto& [k, v] : d.labels) (*out->mutable_labels())[k] = v;
  *out->mutable_create_time() = TimeUtil::MillisecondsToTimestamp(d.create_time_ms);
  *out->mutable_update_time() = TimeUtil::MillisecondsToTimestamp(d.update_time_ms);
  out->set_latest_version(d.latest_version);
  out->set_version_count(d.version_count);
}

}  // namespace switchyard::dataset
