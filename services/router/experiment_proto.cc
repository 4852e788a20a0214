#include "services/router/experiment_proto.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "shared/core/status_macros.h"

namespace switchyard::router {
namespace {

using google::protobuf::util::TimeUtil;

bool ValidName(const std::string& s, bool allow_dot) {
  if (s.empty() || s.size() > 63) return false;
  if (!(std::islower(static_cast<unsigned char>(s[0])) ||
        std::isdigit(static_cast<unsigned char>(s[0])))) {
    return false;
  }
  for (char c : s) {
    const bool ok = std::islower(static_cast<unsigned char>(c)) ||
                    std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '_' ||
                    (allow_dot && c == '.');
    if (!ok) return false;
  }
  return true;
}

absl::Status Invalid(const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

std::string StripPrefix(const std::string& s, absl::string_view prefix) {
  return absl::StartsWith(s, prefix) ? s.substr(prefix.size()) : s;
}

}  // namespace

absl::StatusOr<std::string> ExperimentIdFrom(const std::string& name, const char* field) {
  const std::string id = StripPrefix(name, "experiments/");
  if (!ValidName(id, true)) {
    return Invalid(field, absl::StrCat("\"", name,
                                       "\" is not an experiment id (1-63 characters: lower-case "
                                       "letters, digits, '-', '_', '.')"));
  }
  return id;
}

absl::Status ValidateExperiment(const v1::Experiment& e) {
  if (e.arms_size() == 0) return Invalid("arms", "at least one arm is required");
  if (e.arms_size() > 16) return Invalid("arms", "at most 16 arms");
  std::set<std::string> names;
  for (int i = 0; i < e.arms_size(); ++i) {
    const v1::Arm& arm = e.arms(i);
    const std::string field = absl::StrCat("arms[", i, "]");
    if (!ValidName(arm.name(), false)) {
      return Invalid(field + ".name",
                     absl::StrCat("\"", arm.name(),
                                  "\" is not an arm name (1-63 characters: lower-case letters, "
                                  "digits, '-', '_')"));
    }
    if (!names.insert(arm.name()).second) {
      return Invalid(field + ".name", absl::StrCat("\"", arm.name(), "\" is used twice"));
    }
    if (StripPrefix(arm.model(), "models/").empty()) {
      return Invalid(field + ".model", "required (a base model served by inference)");
    }
    if (arm.has_retrieval()) {
      const v1::ArmRetrieval& r = arm.retrieval();
      if (StripPrefix(r.collection(), "collections/").empty()) {
        return Invalid(field + ".retrieval.collection", "required");
      }
      if (r.k() < 0 || r.k() > 100) {
        return Invalid(field + ".retrieval.k", absl::StrCat("must be 0 to 100, got ", r.k()));
      }
      if (r.query_messages() < 0) {
        return Invalid(field + ".retrieval.query_messages", "must not be negative");
      }
      if (r.timeout().seconds() < 0 || r.timeout().nanos() < 0) {
        return Invalid(field + ".retrieval.timeout", "must not be negative");
      }
    }
    if (arm.context().context_token_budget() < 0) {
      return Invalid(field + ".context.context_token_budget", "must not be negative");
    }
    SY_RETURN_IF_ERROR(
        ValidateContextTemplate(ToContextTemplate(arm.context()), field + ".context"));
    const v1::SamplingParams& p = arm.sampling();
    if (p.has_temperature() && p.temperature() < 0) {
      return Invalid(field + ".sampling.temperature", "must be >= 0");
    }
    if (p.has_max_tokens() && p.max_tokens() <= 0) {
      return Invalid(field + ".sampling.max_tokens", "must be > 0");
    }
  }
  double total = 0;
  for (const auto& [name, weight] : e.weights()) {
    if (names.count(name) == 0) {
      return Invalid(absl::StrCat("weights.", name), "names no arm of the experiment");
    }
    if (!(weight >= 0) || std::isinf(weight)) {
      return Invalid(absl::StrCat("weights.", name), absl::StrCat("must be >= 0, got ", weight));
    }
    total += weight;
  }
  if (!e.weights().empty() && !(total > 0)) {
    return Invalid("weights", "at least one arm needs a positive weight");
  }
  if (e.has_shadow() && !e.shadow().arm().empty()) {
    if (names.count(e.shadow().arm()) == 0) {
      return Invalid("shadow.arm", absl::StrCat("\"", e.shadow().arm(), "\" is not an arm"));
    }
    if (!(e.shadow().sample_rate() >= 0 && e.shadow().sample_rate() <= 1)) {
      return Invalid("shadow.sample_rate", "must be 0 to 1");
    }
    if (e.shadow().max_in_flight() < 0) {
      return Invalid("shadow.max_in_flight", "must not be negative");
    }
  }
  if (e.has_bandit()) {
    const double max_floor = 1.0 / static_cast<double>(e.arms_size());
    if (!(e.bandit().floor() >= 0 && e.bandit().floor() <= max_floor)) {
      return Invalid("bandit.floor", absl::StrCat("must be 0 to 1/arms = ", max_floor));
    }
    if (e.bandit().prior_alpha() < 0 || e.bandit().prior_beta() < 0) {
      return Invalid("bandit.prior_alpha", "priors must not be negative");
    }
    if (e.bandit().update_interval().seconds() < 0) {
      return Invalid("bandit.update_interval", "must not be negative");
    }
  }
  if (e.has_feedback_scale() && !(e.feedback_scale().min() == 0 && e.feedback_scale().max() == 0) &&
      !(e.feedback_scale().max() > e.feedback_scale().min())) {
    return Invalid("feedback_scale", "max must be greater than min");
  }
  const v1::AnalysisSpec& a = e.analysis();
  if (!a.control_arm().empty() && names.count(a.control_arm()) == 0) {
    return Invalid("analysis.control_arm", absl::StrCat("\"", a.control_arm(), "\" is not an arm"));
  }
  if (!(a.significance_level() >= 0 && a.significance_level() < 0.5)) {
    return Invalid("analysis.significance_level", "must be in (0, 0.5); 0 means 0.05");
  }
  if (a.min_samples_per_arm() < 0) {
    return Invalid("analysis.min_samples_per_arm", "must not be negative");
  }
  return absl::OkStatus();
}

std::map<std::string, double> NormalizedWeights(const v1::Experiment& e) {
  std::map<std::string, double> out;
  double total = 0;
  for (const v1::Arm& arm : e.arms()) {
    double w = 1;
    if (!e.weights().empty()) {
      auto it = e.weights().find(arm.name());
      w = it == e.weights().end() ? 0 : it->second;
    }
    out[arm.name()] = w;
    total += w;
  }
  for (auto& [name, w] : out) w = total > 0 ? w / total : 0;
  return out;
}

std::vector<WeightedArm> ArmsInForce(const v1::Experiment& e) {
  std::vector<WeightedArm> out;
  for (const v1::Arm& arm : e.arms()) {
    auto it = e.effective_weights().find(arm.name());
    out.push_back({arm.name(), it == e.effective_weights().end() ? 0 : it->second});
  }
  return out;
}

const v1::Arm* FindArm(const v1::Experiment& e, const std::string& name) {
  for (const v1::Arm& arm : e.arms()) {
    if (arm.name() == name) return &arm;
  }
  return nullptr;
}

ExperimentRecord ToRecord(const v1::Experiment& e) {
  ExperimentRecord r;
  r.experiment_id = e.experiment_id();
  r.state = e.state() == v1::EXPERIMENT_STATE_ARCHIVED ? ExperimentState::kArchived
                                                       : ExperimentState::kActive;
  r.create_us = FromTimestamp(e.create_time());
  r.update_us = FromTimestamp(e.update_time());
  r.archive_us = e.has_archive_time() ? FromTimestamp(e.archive_time()) : 0;
  (void)google::protobuf::util::MessageToJsonString(e, &r.spec_json);
  return r;
}

absl::StatusOr<v1::Experiment> FromRecord(const ExperimentRecord& r) {
  v1::Experiment e;
  auto s = google::protobuf::util::JsonStringToMessage(r.spec_json, &e);
  if (!s.ok()) {
    return absl::DataLossError(absl::StrCat("experiments/", r.experiment_id,
                                            ": stored record is unreadable: ", s.ToString()));
  }
  return e;
}

ContextTemplate ToContextTemplate(const v1::ContextPrompt& p) {
  ContextTemplate t;
  t.context_template = p.context_template();
  t.source_template = p.source_template();
  t.separator = p.separator();
  t.placement = p.placement() == v1::CONTEXT_PLACEMENT_USER ? ContextPlacement::kUser
                                                            : ContextPlacement::kSystem;
  t.missing_context_note = p.missing_context_note();
  return t;
}

std::vector<Message> ToMessages(const google::protobuf::RepeatedPtrField<v1::ChatMessage>& in) {
  std::vector<Message> out;
  for (const v1::ChatMessage& m : in) {
    out.push_back({m.role(), m.content(), m.name(), m.tool_call_id()});
  }
  return out;
}

void ToProto(const PromptSource& s, bool cited, v1::Source* out) {
  out->set_citation_id(s.citation_id);
  out->set_collection(s.chunk.collection);
  out->set_document_id(s.chunk.document_id);
  out->set_position(s.chunk.position);
  out->set_chunk_id(s.chunk.chunk_id);
  out->set_text(s.chunk.text);
  out->set_score(s.chunk.score);
  for (const auto& [k, v] : s.chunk.metadata) (*out->mutable_metadata())[k] = v;
  out->set_cited(cited);
  out->set_truncated(s.truncated);
}

std::pair<double, double> FeedbackScale(const v1::Experiment& e) {
  if (!e.has_feedback_scale() || (e.feedback_scale().min() == 0 && e.feedback_scale().max() == 0)) {
    return {0.0, 1.0};
  }
  return {e.feedback_scale().min(), e.feedback_scale().max()};
}

ReportOptions ToReportOptions(const v1::Experiment& e, bool include_excluded) {
  ReportOptions o;
  o.control_arm = e.analysis().control_arm();
  o.metric = e.analysis().metric() == v1::REPORT_METRIC_WIN_RATE ? ReportMetric::kWinRate
                                                                 : ReportMetric::kFeedbackScore;
  if (e.analysis().significance_level() > 0) {
    o.significance_level = e.analysis().significance_level();
  }
  if (e.analysis().min_samples_per_arm() > 0) {
    o.min_samples_per_arm = e.analysis().min_samples_per_arm();
  }
  std::tie(o.scale_min, o.scale_max) = FeedbackScale(e);
  o.include_excluded = include_excluded;
  return o;
}

void ToProto(const LatencyStats& s, v1::LatencySummary* out) {
  out->set_mean(s.mean);
  out->set_p50(s.p50);
  out->set_p95(s.p95);
  out->set_p99(s.p99);
  out->set_max(s.max);
}

void ToProto(const Report& report, v1::ExperimentReport* out) {
  for (const ArmStats& s : report.arms) {
    v1::ArmReport* a = out->add_arms();
    a->set_arm(s.arm);
    a->set_weight(s.weight);
    a->set_effective_weight(s.effective_weight);
    a->set_traffic_share(s.traffic_share);
    a->set_requests(s.requests);
    a->set_errors(s.errors);
    for (const auto& [code, n] : s.errors_by_code) {
      (*a->mutable_errors_by_code())[absl::StatusCodeToString(
          static_cast<absl::StatusCode>(code))] = n;
    }
    ToProto(s.latency, a->mutable_latency());
    ToProto(s.time_to_first_token, a->mutable_time_to_first_token());
    a->set_prompt_tokens_per_request(s.prompt_tokens_per_request);
    a->set_completion_tokens_per_request(s.completion_tokens_per_request);
    a->set_prompt_tokens(s.prompt_tokens);
    a->set_completion_tokens(s.completion_tokens);
    a->set_compute_seconds_per_request(s.compute_seconds_per_request);
    a->set_retrieval_seconds_per_request(s.retrieval_seconds_per_request);
    a->set_context_missing(s.context_missing);
    a->set_feedback_count(s.feedback_count);
    a->set_feedback_mean(s.feedback_mean);
    a->set_feedback_ci_low(s.feedback_ci_low);
    a->set_feedback_ci_high(s.feedback_ci_high);
    a->set_thumbs_up(s.thumbs_up);
    a->set_thumbs_down(s.thumbs_down);
    a->set_shadow_requests(s.shadow_requests);
    a->set_comparisons(s.comparisons);
    a->set_wins(s.wins);
    a->set_losses(s.losses);
    a->set_ties(s.ties);
    a->set_win_rate(s.win_rate);
    a->set_win_rate_ci_low(s.win_rate_ci_low);
    a->set_win_rate_ci_high(s.win_rate_ci_high);
  }
  for (const ArmDifference& d : report.comparisons) {
    v1::ArmComparison* c = out->add_comparisons();
    c->set_arm(d.arm);
    c->set_control_arm(d.control_arm);
    c->set_metric(d.metric == ReportMetric::kWinRate ? v1::REPORT_METRIC_WIN_RATE
                                                     : v1::REPORT_METRIC_FEEDBACK_SCORE);
    c->set_difference(d.difference);
    c->set_ci_low(d.ci_low);
    c->set_ci_high(d.ci_high);
    c->set_p_value(d.p_value);
    c->set_significant(d.significant);
    c->set_samples(d.samples);
    c->set_control_samples(d.control_samples);
  }
  v1::Verdict* v = out->mutable_verdict();
  v->set_status(static_cast<v1::VerdictStatus>(static_cast<int>(report.verdict.status)));
  v->set_leading_arm(report.verdict.leading_arm);
  v->set_summary(report.verdict.summary);
  v->set_method(report.verdict.method);
  v->set_significance_level(report.verdict.significance_level);
}

int64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

google::protobuf::Timestamp ToTimestamp(int64_t micros) {
  return TimeUtil::MicrosecondsToTimestamp(micros);
}

int64_t FromTimestamp(const google::protobuf::Timestamp& t) {
  return TimeUtil::TimestampToMicroseconds(t);
}

void ToProto(const FeedbackRecord& r, v1::Feedback* out) {
  out->set_name(absl::StrCat("experiments/", r.experiment_id, "/feedback/", r.feedback_id));
  out->set_response_id(r.response_id);
  out->set_arm(r.arm);
  out->set_score(r.score);
  out->set_normalized_score(r.normalized);
  out->set_thumbs(static_cast<v1::Thumbs>(r.thumbs));
  out->set_comment(r.comment);
  out->set_reviewer(r.reviewer);
  *out->mutable_create_time() = ToTimestamp(r.create_us);
}

void ToProto(const ComparisonRecord& r, v1::Comparison* out) {
  out->set_name(absl::StrCat("experiments/", r.experiment_id, "/comparisons/", r.comparison_id));
  out->set_response_id(r.response_id);
  out->set_other_response_id(r.other_response_id);
  out->set_arm(r.arm);
  out->set_other_arm(r.other_arm);
  out->set_result(static_cast<v1::ComparisonResult>(r.result));
  out->set_preferred_arm(r.preferred_arm);
  out->set_reviewer(r.reviewer);
  out->set_comment(r.comment);
  *out->mutable_create_time() = ToTimestamp(r.create_us);
}

}  // namespace switchyard::router
