// RouterServiceImpl, part two: the interaction log, feedback, pairwise
// reviews, exports to the dataset service, the report and the bandit.
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/router/experiment_proto.h"
#include "services/router/experiment_report.h"
#include "services/router/experiment_stats.h"
#include "services/router/router_service.h"
#include "shared/core/file_util.h"
#include "shared/core/logging.h"
#include "shared/core/status_macros.h"
#include "shared/rpc/status_mapping.h"
#include "shared/rpc/unary.h"
#include "switchyard/v1/dataset.grpc.pb.h"

namespace switchyard::router {

using rpc::Offload;
using rpc::Role;

namespace {

constexpr size_t kMaxComment = 4096;

nlohmann::json MessagesJson(const google::protobuf::RepeatedPtrField<v1::ChatMessage>& messages) {
  nlohmann::json out = nlohmann::json::array();
  for (const v1::ChatMessage& m : messages) {
    nlohmann::json j = {{"role", m.role()}, {"content", m.content()}};
    if (!m.name().empty()) j["name"] = m.name();
    if (!m.tool_call_id().empty()) j["tool_call_id"] = m.tool_call_id();
    out.push_back(std::move(j));
  }
  return out;
}

bool SameConversation(const v1::Interaction& a, const v1::Interaction& b) {
  if (a.messages_size() != b.messages_size()) return false;
  for (int i = 0; i < a.messages_size(); ++i) {
    if (a.messages(i).role() != b.messages(i).role() ||
        a.messages(i).content() != b.messages(i).content()) {
      return false;
    }
  }
  return true;
}

int64_t WindowStart(const google::protobuf::Timestamp& t, bool has) {
  return has ? FromTimestamp(t) : 0;
}

}  // namespace

absl::StatusOr<v1::Interaction> RouterServiceImpl::ReadInteraction(const InteractionRecord& r,
                                                                   bool with_reviews) {
  v1::Interaction out;
  if (!r.detail_json.empty()) {
    auto s = google::protobuf::util::JsonStringToMessage(r.detail_json, &out);
    if (!s.ok()) {
      return absl::DataLossError(
          absl::StrCat("interaction ", r.response_id, " is unreadable: ", s.ToString()));
    }
  }
  out.set_name(absl::StrCat("experiments/", r.experiment_id, "/interactions/", r.response_id));
  out.set_response_id(r.response_id);
  out.set_arm(r.arm);
  out.set_user_key(r.user_key);
  out.set_context_missing(r.context_missing);
  out.set_error_code(r.error_code);
  out.set_shadow(r.shadow);
  out.set_paired_response_id(r.paired_response_id);
  out.set_overridden(r.overridden);
  out.set_excluded_from_report(r.excluded);
  *out.mutable_create_time() = ToTimestamp(r.create_us);
  if (with_reviews) {
    SY_ASSIGN_OR_RETURN(std::vector<FeedbackRecord> feedback,
                        store_->ListFeedback(r.experiment_id, r.response_id));
    for (const FeedbackRecord& f : feedback) ToProto(f, out.add_feedback());
    SY_ASSIGN_OR_RETURN(std::vector<ComparisonRecord> comparisons,
                        store_->ListComparisons(r.experiment_id, r.response_id));
    for (const ComparisonRecord& c : comparisons) ToProto(c, out.add_comparisons());
  }
  return out;
}

grpc::ServerUnaryReactor* RouterServiceImpl::GetInteraction(
    grpc::CallbackServerContext* context, const v1::GetInteractionRequest* request,
    v1::Interaction* response) {
  return Offload(
      chat_pool_, *auth_, context, Role::kUser, [this, request, response]() -> absl::Status {
        if (request->response_id().empty())
          return absl::InvalidArgumentError("response_id: required");
        SY_ASSIGN_OR_RETURN(InteractionRecord r, store_->GetInteraction(request->response_id()));
        SY_ASSIGN_OR_RETURN(*response, ReadInteraction(r, true));
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* RouterServiceImpl::ListInteractions(
    grpc::CallbackServerContext* context, const v1::ListInteractionsRequest* request,
    v1::ListInteractionsResponse* response) {
  return Offload(
      chat_pool_, *auth_, context, Role::kUser, [this, request, response]() -> absl::Status {
        SY_ASSIGN_OR_RETURN(std::shared_ptr<const v1::Experiment> e, Find(request->parent()));
        SY_ASSIGN_OR_RETURN(int page_size, rpc::PageSize(request->page_size(), 50));
        SY_ASSIGN_OR_RETURN(int64_t offset, rpc::ParsePageToken(request->page_token()));
        InteractionQuery q;
        q.experiment_id = e->experiment_id();
        q.arm = request->arm();
        q.shadow_pairs_only = request->shadow_pairs_only();
        q.unreviewed_only = request->unreviewed_only();
        q.with_feedback_only = request->with_feedback_only();
        q.start_us = WindowStart(request->start_time(), request->has_start_time());
        q.end_us = WindowStart(request->end_time(), request->has_end_time());
        q.offset = offset;
        q.limit = page_size + 1;
        SY_ASSIGN_OR_RETURN(std::vector<InteractionRecord> rows, store_->ListInteractions(q));
        for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(page_size); ++i) {
          SY_ASSIGN_OR_RETURN(*response->add_interactions(), ReadInteraction(rows[i], true));
        }
        if (rows.size() > static_cast<size_t>(page_size)) {
          response->set_next_page_token(std::to_string(offset + page_size));
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* RouterServiceImpl::RecordFeedback(
    grpc::CallbackServerContext* context, const v1::RecordFeedbackRequest* request,
    v1::Feedback* response) {
  return Offload(
      chat_pool_, *auth_, context, Role::kUser, [this, request, response]() -> absl::Status {
        if (request->response_id().empty())
          return absl::InvalidArgumentError("response_id: required");
        if (request->comment().size() > kMaxComment) {
          return absl::InvalidArgumentError(
              absl::StrCat("comment: at most ", kMaxComment, " bytes"));
        }
        SY_ASSIGN_OR_RETURN(InteractionRecord r, store_->GetInteraction(request->response_id()));
        SY_ASSIGN_OR_RETURN(std::shared_ptr<const v1::Experiment> e, Find(r.experiment_id));
        const auto [lo, hi] = FeedbackScale(*e);
        FeedbackRecord f;
        switch (request->value_case()) {
          case v1::RecordFeedbackRequest::kScore:
            if (!(request->score() >= lo && request->score() <= hi)) {
              return absl::InvalidArgumentError(absl::StrCat("score: ", request->score(),
                                                             " is outside the experiment's scale [",
                                                             lo, ", ", hi, "]"));
            }
            f.score = request->score();
            break;
          case v1::RecordFeedbackRequest::kThumbs:
            if (request->thumbs() == v1::THUMBS_UNSPECIFIED) {
              return absl::InvalidArgumentError("thumbs: THUMBS_UP or THUMBS_DOWN");
            }
            f.thumbs = request->thumbs();
            f.score = request->thumbs() == v1::THUMBS_UP ? hi : lo;
            break;
          default:
            return absl::InvalidArgumentError("score or thumbs: one is required");
        }
        f.feedback_id = absl::StrCat("f-", RandomHex(8));
        f.experiment_id = r.experiment_id;
        f.response_id = r.response_id;
        f.arm = r.arm;
        f.normalized = (f.score - lo) / (hi - lo);
        f.comment = request->comment();
        f.reviewer = request->reviewer();
        f.create_us = NowMicros();
        SY_ASSIGN_OR_RETURN(FeedbackRecord stored, store_->PutFeedback(f));
        const prometheus::Labels labels = {{"experiment", r.experiment_id}, {"arm", r.arm}};
        metrics_.feedback.Add(labels).Increment();
        metrics_.feedback_score
            .Add(labels, prometheus::Histogram::BucketBoundaries{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7,
                                                                 0.8, 0.9, 1.0})
            .Observe(f.normalized);
        ToProto(stored, response);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* RouterServiceImpl::RecordComparison(
    grpc::CallbackServerContext* context, const v1::RecordComparisonRequest* request,
    v1::Comparison* response) {
  return Offload(
      chat_pool_, *auth_, context, Role::kUser, [this, request, response]() -> absl::Status {
        if (request->response_id().empty())
          return absl::InvalidArgumentError("response_id: required");
        if (request->result() == v1::COMPARISON_RESULT_UNSPECIFIED) {
          return absl::InvalidArgumentError(
              "result: FIRST_BETTER, SECOND_BETTER, TIE or BOTH_BAD is required");
        }
        if (request->comment().size() > kMaxComment) {
          return absl::InvalidArgumentError(
              absl::StrCat("comment: at most ", kMaxComment, " bytes"));
        }
        SY_ASSIGN_OR_RETURN(InteractionRecord a, store_->GetInteraction(request->response_id()));
        const std::string other_id = request->other_response_id().empty()
                                         ? a.paired_response_id
                                         : request->other_response_id();
        if (other_id.empty()) {
          return absl::FailedPreconditionError(absl::StrCat(
              "response ", a.response_id, " has no shadow pair; name other_response_id"));
        }
        if (other_id == a.response_id) {
          return absl::InvalidArgumentError("other_response_id: must differ from response_id");
        }
        SY_ASSIGN_OR_RETURN(InteractionRecord b, store_->GetInteraction(other_id));
        if (a.experiment_id != b.experiment_id) {
          return absl::FailedPreconditionError("the two responses belong to different experiments");
        }
        if (a.paired_response_id != b.response_id) {
          SY_ASSIGN_OR_RETURN(v1::Interaction ia, ReadInteraction(a, false));
          SY_ASSIGN_OR_RETURN(v1::Interaction ib, ReadInteraction(b, false));
          if (!SameConversation(ia, ib)) {
            return absl::FailedPreconditionError(absl::StrCat("responses ", a.response_id, " and ",
                                                              b.response_id,
                                                              " do not answer the same request"));
          }
        }
        ComparisonRecord c;
        c.comparison_id = absl::StrCat("c-", RandomHex(8));
        c.experiment_id = a.experiment_id;
        c.response_id = a.response_id;
        c.other_response_id = b.response_id;
        c.arm = a.arm;
        c.other_arm = b.arm;
        c.result = request->result();
        if (request->result() == v1::COMPARISON_RESULT_FIRST_BETTER) c.preferred_arm = a.arm;
        if (request->result() == v1::COMPARISON_RESULT_SECOND_BETTER) c.preferred_arm = b.arm;
        c.reviewer = request->reviewer();
        c.comment = request->comment();
        c.create_us = NowMicros();
        SY_ASSIGN_OR_RETURN(ComparisonRecord stored, store_->PutComparison(c));
        ToProto(stored, response);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* RouterServiceImpl::GetExperimentReport(
    grpc::CallbackServerContext* context, const v1::GetExperimentReportRequest* request,
    v1::ExperimentReport* response) {
  return Offload(
      chat_pool_, *auth_, context, Role::kUser, [this, request, response]() -> absl::Status {
        SY_ASSIGN_OR_RETURN(std::shared_ptr<const v1::Experiment> e, Find(request->name()));
        const int64_t start = WindowStart(request->start_time(), request->has_start_time());
        const int64_t end = WindowStart(request->end_time(), request->has_end_time());
        InteractionQuery q;
        q.experiment_id = e->experiment_id();
        q.start_us = start;
        q.end_us = end;
        q.with_detail = false;
        SY_ASSIGN_OR_RETURN(std::vector<InteractionRecord> interactions,
                            store_->ListInteractions(q));
        SY_ASSIGN_OR_RETURN(std::vector<FeedbackRecord> feedback,
                            store_->ListFeedback(e->experiment_id()));
        SY_ASSIGN_OR_RETURN(std::vector<ComparisonRecord> comparisons,
                            store_->ListComparisons(e->experiment_id()));
        auto in_window = [&](int64_t t) {
          return (start == 0 || t >= start) && (end == 0 || t < end);
        };
        feedback.erase(
            std::remove_if(feedback.begin(), feedback.end(),
                           [&](const FeedbackRecord& f) { return !in_window(f.create_us); }),
            feedback.end());
        comparisons.erase(
            std::remove_if(comparisons.begin(), comparisons.end(),
                           [&](const ComparisonRecord& c) { return !in_window(c.create_us); }),
            comparisons.end());
        std::vector<ReportArm> arms;
        const std::map<std::string, double> weights = NormalizedWeights(*e);
        for (const v1::Arm& arm : e->arms()) {
          auto eff = e->effective_weights().find(arm.name());
          arms.push_back({arm.name(), weights.at(arm.name()),
                          eff == e->effective_weights().end() ? 0 : eff->second});
        }
        Report report =
            ComputeReport(arms, interactions, std::move(feedback), std::move(comparisons),
                          ToReportOptions(*e, request->include_excluded()));
        response->set_experiment(e->name());
        *response->mutable_generate_time() = ToTimestamp(NowMicros());
        if (request->has_start_time()) *response->mutable_start_time() = request->start_time();
        if (request->has_end_time()) *response->mutable_end_time() = request->end_time();
        ToProto(report, response);
        return absl::OkStatus();
      });
}

// ---------------------------------------------------------------------------
// Exports

absl::Status RouterServiceImpl::Upload(const std::string& dataset_id, v1::DatasetFormat format,
                                       const std::string& jsonl, bool validate_only,
                                       const std::string& description,
                                       v1::UploadDatasetResponse* response) {
  Backends backends;
  {
    std::lock_guard<std::mutex> lock(mu_);
    backends = backends_;
  }
  if (!backends.dataset) {
    return absl::FailedPreconditionError(
        "this router has no --dataset-addr: exports go to the dataset service");
  }
  auto stub = v1::DatasetService::NewStub(backends.dataset);
  std::unique_ptr<grpc::ClientContext> context =
      BackendContext(backends, absl::Now() + absl::Minutes(10));
  std::unique_ptr<grpc::ClientWriter<v1::UploadDatasetRequest>> writer =
      stub->UploadDataset(context.get(), response);
  v1::UploadDatasetRequest header;
  header.mutable_header()->set_dataset_id(dataset_id);
  header.mutable_header()->set_format(format);
  header.mutable_header()->set_validate_only(validate_only);
  header.mutable_header()->set_description(description);
  header.mutable_header()->set_expected_bytes(static_cast<int64_t>(jsonl.size()));
  bool ok = writer->Write(header);
  constexpr size_t kChunk = 1 << 20;
  for (size_t at = 0; ok && at < jsonl.size(); at += kChunk) {
    v1::UploadDatasetRequest chunk;
    chunk.mutable_chunk()->set_split(v1::DATASET_SPLIT_TRAIN);
    chunk.mutable_chunk()->set_data(jsonl.substr(at, kChunk));
    ok = writer->Write(chunk);
  }
  writer->WritesDone();
  return rpc::FromGrpcStatus(writer->Finish(), "dataset service");
}

grpc::ServerUnaryReactor* RouterServiceImpl::ExportComparisons(
    grpc::CallbackServerContext* context, const v1::ExportComparisonsRequest* request,
    v1::ExportComparisonsResponse* response) {
  return Offload(
      chat_pool_, *auth_, context, Role::kAdmin, [this, request, response]() -> absl::Status {
        SY_ASSIGN_OR_RETURN(std::shared_ptr<const v1::Experiment> e, Find(request->experiment()));
        if (request->dataset_id().empty())
          return absl::InvalidArgumentError("dataset_id: required");
        const int64_t start = WindowStart(request->start_time(), request->has_start_time());
        const int64_t end = WindowStart(request->end_time(), request->has_end_time());
        SY_ASSIGN_OR_RETURN(std::vector<ComparisonRecord> comparisons,
                            store_->ListComparisons(e->experiment_id()));
        std::string jsonl;
        int64_t examples = 0, skipped = 0;
        for (const ComparisonRecord& c : comparisons) {
          if ((start != 0 && c.create_us < start) || (end != 0 && c.create_us >= end)) continue;
          if (request->reviewers_size() > 0 &&
              std::find(request->reviewers().begin(), request->reviewers().end(), c.reviewer) ==
                  request->reviewers().end()) {
            continue;
          }
          if (c.result != v1::COMPARISON_RESULT_FIRST_BETTER &&
              c.result != v1::COMPARISON_RESULT_SECOND_BETTER) {
            ++skipped;
            continue;
          }
          SY_ASSIGN_OR_RETURN(InteractionRecord ra, store_->GetInteraction(c.response_id));
          SY_ASSIGN_OR_RETURN(InteractionRecord rb, store_->GetInteraction(c.other_response_id));
          SY_ASSIGN_OR_RETURN(v1::Interaction a, ReadInteraction(ra, false));
          SY_ASSIGN_OR_RETURN(v1::Interaction b, ReadInteraction(rb, false));
          const bool first = c.result == v1::COMPARISON_RESULT_FIRST_BETTER;
          if (absl::StripAsciiWhitespace(a.text()).empty() ||
              absl::StripAsciiWhitespace(b.text()).empty()) {
            ++skipped;  // a preference needs two answers
            continue;
          }
          nlohmann::json line = {
              {"input", {{"messages", MessagesJson(a.messages())}}},
              {"preferred_output",
               nlohmann::json::array(
                   {{{"role", "assistant"}, {"content", first ? a.text() : b.text()}}})},
              {"non_preferred_output",
               nlohmann::json::array(
                   {{{"role", "assistant"}, {"content", first ? b.text() : a.text()}}})}};
          jsonl += line.dump() + "\n";
          ++examples;
        }
        if (examples == 0) {
          return absl::FailedPreconditionError(
              absl::StrCat(e->name(), " has no comparison with a preferred answer to export (",
                           skipped, " ties or both-bad)"));
        }
        v1::UploadDatasetResponse uploaded;
        SY_RETURN_IF_ERROR(Upload(request->dataset_id(), v1::DATASET_FORMAT_PREFERENCE, jsonl,
                                  request->validate_only(),
                                  absl::StrCat("Pairwise reviews of ", e->name()), &uploaded));
        response->set_dataset_version(uploaded.has_version() ? uploaded.version().name() : "");
        response->set_examples(examples);
        response->set_skipped(skipped);
        *response->mutable_report() = uploaded.report();
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* RouterServiceImpl::ExportInteractions(
    grpc::CallbackServerContext* context, const v1::ExportInteractionsRequest* request,
    v1::ExportInteractionsResponse* response) {
  return Offload(
      chat_pool_, *auth_, context, Role::kAdmin, [this, request, response]() -> absl::Status {
        SY_ASSIGN_OR_RETURN(std::shared_ptr<const v1::Experiment> e, Find(request->experiment()));
        if (request->dataset_id().empty())
          return absl::InvalidArgumentError("dataset_id: required");
        InteractionQuery q;
        q.experiment_id = e->experiment_id();
        q.served_only = !request->include_shadow();
        q.start_us = WindowStart(request->start_time(), request->has_start_time());
        q.end_us = WindowStart(request->end_time(), request->has_end_time());
        SY_ASSIGN_OR_RETURN(std::vector<InteractionRecord> rows, store_->ListInteractions(q));
        std::map<std::string, std::pair<double, int>> scores;  // response -> (sum, count)
        if (request->has_min_feedback_score()) {
          SY_ASSIGN_OR_RETURN(std::vector<FeedbackRecord> feedback,
                              store_->ListFeedback(e->experiment_id()));
          for (const FeedbackRecord& f : feedback) {
            scores[f.response_id].first += f.score;
            ++scores[f.response_id].second;
          }
        }
        std::string jsonl;
        int64_t examples = 0, skipped_empty = 0;
        for (auto it = rows.rbegin(); it != rows.rend(); ++it) {  // oldest first
          const InteractionRecord& r = *it;
          if (r.error_code != 0) continue;
          if (request->arms_size() > 0 && std::find(request->arms().begin(), request->arms().end(),
                                                    r.arm) == request->arms().end()) {
            continue;
          }
          if (request->has_min_feedback_score()) {
            auto s = scores.find(r.response_id);
            if (s == scores.end() ||
                s->second.first / s->second.second < request->min_feedback_score()) {
              continue;
            }
          }
          SY_ASSIGN_OR_RETURN(v1::Interaction i, ReadInteraction(r, false));
          const std::string answer =
              request->strip_citations() ? StripCitations(i.text()) : i.text();
          if (absl::StripAsciiWhitespace(answer).empty()) {
            ++skipped_empty;  // a training example needs an assistant message
            continue;
          }
          nlohmann::json messages = MessagesJson(i.messages());
          messages.push_back({{"role", "assistant"}, {"content", answer}});
          jsonl += nlohmann::json({{"messages", std::move(messages)}}).dump() + "\n";
          ++examples;
        }
        if (examples == 0) {
          return absl::FailedPreconditionError(absl::StrCat(
              e->name(), " has no interaction matching the export's conditions",
              skipped_empty > 0
                  ? absl::StrCat(" (", skipped_empty, " with an empty answer left out)")
                  : ""));
        }
        v1::UploadDatasetResponse uploaded;
        SY_RETURN_IF_ERROR(Upload(request->dataset_id(), v1::DATASET_FORMAT_CHAT, jsonl,
                                  request->validate_only(),
                                  absl::StrCat("Interactions of ", e->name()), &uploaded));
        response->set_dataset_version(uploaded.has_version() ? uploaded.version().name() : "");
        response->set_skipped_empty(skipped_empty);
        response->set_examples(examples);
        *response->mutable_report() = uploaded.report();
        return absl::OkStatus();
      });
}

// ---------------------------------------------------------------------------
// Bandit

void RouterServiceImpl::UpdateBandits(bool force) {
  std::vector<std::shared_ptr<const v1::Experiment>> due;
  const absl::Time now = absl::Now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, e] : experiments_) {
      if (!e->bandit().enabled() || e->state() == v1::EXPERIMENT_STATE_ARCHIVED) continue;
      const auto& d = e->bandit().update_interval();
      const absl::Duration interval =
          d.seconds() > 0 || d.nanos() > 0
              ? absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos())
              : absl::Seconds(60);
      auto last = bandit_updated_.find(id);
      if (last == bandit_updated_.end()) {
        // The first interval runs on the configured weights.
        bandit_updated_[id] = now;
        if (!force) continue;
      } else if (!force && now - last->second < interval) {
        continue;
      }
      bandit_updated_[id] = now;
      due.push_back(e);
    }
  }
  for (const auto& e : due) {
    absl::StatusOr<std::vector<FeedbackRecord>> feedback = store_->ListFeedback(e->experiment_id());
    if (!feedback.ok()) {
      SY_LOG(kWarning, "router") << "bandit " << e->name() << ": " << feedback.status().message();
      continue;
    }
    std::map<std::string, ArmReward> rewards;
    for (const FeedbackRecord& f : *feedback) {
      if (f.shadow || f.excluded) continue;
      rewards[f.arm].successes += f.normalized;
      rewards[f.arm].failures += 1 - f.normalized;
    }
    std::vector<ArmReward> arms;
    for (const v1::Arm& arm : e->arms()) arms.push_back(rewards[arm.name()]);
    const v1::BanditSpec& b = e->bandit();
    const double floor = b.floor() > 0 ? b.floor() : std::min(0.05, 1.0 / e->arms_size());
    std::vector<double> weights =
        ThompsonWeights(arms, b.prior_alpha() > 0 ? b.prior_alpha() : 1.0,
                        b.prior_beta() > 0 ? b.prior_beta() : 1.0, floor, 4000,
                        StableHash64(absl::StrCat(e->experiment_id(), feedback->size())));
    v1::Experiment updated = *e;
    // Every arm keeps at least the floor.
    for (int i = 0; i < e->arms_size(); ++i) {
      (*updated.mutable_effective_weights())[e->arms(i).name()] = weights[static_cast<size_t>(i)];
    }
    *updated.mutable_update_time() = ToTimestamp(NowMicros());
    {
      // Skip when the experiment changed meanwhile (an update or archive).
      std::lock_guard<std::mutex> lock(mu_);
      auto it = experiments_.find(e->experiment_id());
      if (it == experiments_.end() || it->second != e) continue;
    }
    absl::Status s = Put(std::move(updated), false);
    if (!s.ok()) SY_LOG(kWarning, "router") << "bandit " << e->name() << ": " << s.message();
  }
}

void RouterServiceImpl::BanditLoop() {
  std::unique_lock<std::mutex> lock(bandit_mu_);
  while (!stopping_) {
    bandit_wake_.wait_for(lock, absl::ToChronoSeconds(options_.bandit_tick));
    if (stopping_) break;
    lock.unlock();
    UpdateBandits(false);
    lock.lock();
  }
}

}  // namespace switchyard::router
