#include "services/router/arm_runner.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/router/experiment_proto.h"
#include "shared/core/status_macros.h"
#include "shared/rpc/status_mapping.h"

namespace switchyard::router {
namespace {

constexpr absl::Duration kDefaultRetrievalTimeout = absl::Seconds(2);
constexpr int kDefaultK = 4;
constexpr int kDefaultMaxTokens = 256;  // inference's default
// Room the auto budget keeps beside the rendered conversation: the "\n\n"
// joining the context block to its message, a new system message's template
// tokens when the conversation had none, and merges across the block's edges.
constexpr int kContextMarginTokens = 32;

std::string WithPrefix(const std::string& name, absl::string_view prefix) {
  return absl::StartsWith(name, prefix) ? name : absl::StrCat(prefix, name);
}

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

}  // namespace

v1::SamplingParams MergeSampling(const v1::SamplingParams& arm, const v1::SamplingParams& r) {
  v1::SamplingParams out = arm;
  if (r.has_temperature()) out.set_temperature(r.temperature());
  if (r.has_top_k()) out.set_top_k(r.top_k());
  if (r.has_top_p()) out.set_top_p(r.top_p());
  if (r.has_min_p()) out.set_min_p(r.min_p());
  if (r.has_repetition_penalty()) out.set_repetition_penalty(r.repetition_penalty());
  if (r.has_seed()) out.set_seed(r.seed());
  if (r.has_max_tokens()) out.set_max_tokens(r.max_tokens());
  if (r.stop_size() > 0) *out.mutable_stop() = r.stop();
  if (r.stop_token_ids_size() > 0) *out.mutable_stop_token_ids() = r.stop_token_ids();
  if (r.logprobs()) out.set_logprobs(true);
  if (r.top_logprobs() > 0) out.set_top_logprobs(r.top_logprobs());
  if (r.ignore_eos()) out.set_ignore_eos(true);
  return out;
}

std::unique_ptr<grpc::ClientContext> BackendContext(const Backends& backends, absl::Time deadline) {
  auto context = std::make_unique<grpc::ClientContext>();
  if (deadline != absl::InfiniteFuture()) context->set_deadline(absl::ToChronoTime(deadline));
  if (!backends.token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", backends.token));
  }
  return context;
}

ArmRunner::ArmRunner(Backends backends) : backends_(std::move(backends)) {
  if (backends_.inference) inference_ = v1::InferenceService::NewStub(backends_.inference);
  if (backends_.retrieval) retrieval_ = v1::RetrievalService::NewStub(backends_.retrieval);
}

std::unique_ptr<grpc::ClientContext> ArmRunner::Context(const ArmCall& call,
                                                        absl::Time deadline) const {
  std::unique_ptr<grpc::ClientContext> context =
      call.parent != nullptr ? grpc::ClientContext::FromCallbackServerContext(*call.parent)
                             : std::make_unique<grpc::ClientContext>();
  if (deadline != absl::InfiniteFuture()) context->set_deadline(absl::ToChronoTime(deadline));
  if (!backends_.token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", backends_.token));
  }
  return context;
}

ArmAnswer ArmRunner::Run(const ArmCall& call) {
  ArmAnswer answer;
  std::vector<Message> messages = ToMessages(call.request->messages());
  if (call.arm->has_retrieval()) {
    answer.status = Retrieve(call, &messages, &answer);
  } else {
    // The arm's system prompt only.
    absl::StatusOr<BuiltPrompt> built =
        BuildPrompt(messages, call.arm->system_prompt(), {}, ContextTemplate{}, -1, nullptr, false);
    if (built.ok()) {
      messages = std::move(built->messages);
    } else {
      answer.status = built.status();
    }
  }
  if (!answer.status.ok()) {
    answer.timings.set_total_seconds(Seconds(absl::Now() - call.start));
    return answer;
  }
  answer.prompt_messages = messages;
  if (call.on_head) call.on_head(answer);
  answer.status = Generate(call, messages, &answer);
  if (answer.status.ok()) answer.cited = CitedSources(answer.text, answer.sources);
  answer.timings.set_total_seconds(Seconds(absl::Now() - call.start));
  return answer;
}

absl::Status ArmRunner::Retrieve(const ArmCall& call, std::vector<Message>* messages,
                                 ArmAnswer* answer) {
  const v1::ArmRetrieval& r = call.arm->retrieval();
  const std::string query = !call.request->retrieval_query().empty()
                                ? call.request->retrieval_query()
                                : RetrievalQuery(*messages, r.query_messages());
  std::vector<RetrievedChunk> chunks;
  if (retrieval_ == nullptr) {
    answer->context_missing = true;
    answer->context_missing_reason = v1::CONTEXT_MISSING_REASON_RETRIEVAL_ERROR;
    if (!call.experiment->allow_rag_without_context()) {
      return absl::UnavailableError(absl::StrCat(
          "arm ", call.arm->name(), " needs retrieval, and this router has no --retrieval-addr"));
    }
  } else if (query.empty()) {
    answer->context_missing = true;
    answer->context_missing_reason = v1::CONTEXT_MISSING_REASON_NO_RESULTS;
  } else {
    const absl::Duration timeout =
        r.has_timeout() && (r.timeout().seconds() > 0 || r.timeout().nanos() > 0)
            ? absl::Seconds(r.timeout().seconds()) + absl::Nanoseconds(r.timeout().nanos())
            : kDefaultRetrievalTimeout;
    const absl::Time began = absl::Now();
    v1::SearchRequest search;
    search.set_collection(WithPrefix(r.collection(), "collections/"));
    search.add_queries(query);
    search.set_k(r.k() > 0 ? r.k() : kDefaultK);
    if (r.has_filter()) *search.mutable_filter() = r.filter();
    search.set_mode(r.mode());
    if (r.has_hybrid()) *search.mutable_hybrid() = r.hybrid();
    if (r.has_min_score()) search.set_min_score(r.min_score());
    v1::SearchResponse found;
    std::unique_ptr<grpc::ClientContext> context =
        Context(call, std::min(call.deadline, began + timeout));
    grpc::Status s = retrieval_->Search(context.get(), search, &found);
    answer->timings.set_retrieval_seconds(Seconds(absl::Now() - began));
    if (!s.ok()) {
      const bool timed_out = s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
      if (absl::Now() >= call.deadline) {
        return absl::DeadlineExceededError("the deadline passed during retrieval");
      }
      if (s.error_code() == grpc::StatusCode::CANCELLED) {
        return absl::CancelledError("cancelled during retrieval");
      }
      if (!call.experiment->allow_rag_without_context()) {
        const std::string why = absl::StrCat("retrieval for arm ", call.arm->name(), " from ",
                                             search.collection(), " failed: ", s.error_message());
        return timed_out ? absl::DeadlineExceededError(why) : absl::UnavailableError(why);
      }
      answer->context_missing = true;
      answer->context_missing_reason = timed_out ? v1::CONTEXT_MISSING_REASON_RETRIEVAL_TIMEOUT
                                                 : v1::CONTEXT_MISSING_REASON_RETRIEVAL_ERROR;
    } else {
      for (const v1::QueryResult& result : found.results()) {
        for (const v1::SearchHit& hit : result.hits()) {
          RetrievedChunk c;
          c.collection = search.collection();
          c.document_id = hit.document_id();
          c.position = hit.position();
          c.chunk_id = hit.chunk_id();
          c.text = hit.text();
          c.score = hit.score();
          c.metadata.insert(hit.metadata().begin(), hit.metadata().end());
          answer->retrieved_documents.push_back(c.document_id);
          chunks.push_back(std::move(c));
        }
      }
      if (chunks.empty()) {
        answer->context_missing = true;
        answer->context_missing_reason = v1::CONTEXT_MISSING_REASON_NO_RESULTS;
      }
    }
  }

  // The token budget of the context: given, or what the model's context
  // leaves after the conversation and the answer.
  const v1::ContextPrompt& prompt = call.arm->context();
  const std::string model = WithPrefix(call.arm->model(), "models/");
  auto tokenize = [&](const std::vector<std::string>& texts,
                      bool offsets) -> absl::StatusOr<v1::TokenizeResponse> {
    if (inference_ == nullptr) return absl::UnavailableError("this router has no --inference-addr");
    v1::TokenizeRequest request;
    request.set_model(model);
    for (const std::string& t : texts) request.add_texts(t);
    request.set_return_offsets(offsets);
    v1::TokenizeResponse response;
    std::unique_ptr<grpc::ClientContext> context = Context(call, call.deadline);
    SY_RETURN_IF_ERROR(rpc::FromGrpcStatus(inference_->Tokenize(context.get(), request, &response),
                                           "inference Tokenize"));
    return response;
  };
  int budget = -1;
  if (!chunks.empty()) {
    budget = prompt.context_token_budget();
    if (budget == 0) {
      // What the model's context leaves: the conversation as generation
      // renders it (template, system prompt, generation prompt), the answer's
      // max_tokens, and a margin for the context block's separators and
      // tokens merging across its edges.
      SY_ASSIGN_OR_RETURN(BuiltPrompt bare, BuildPrompt(*messages, call.arm->system_prompt(), {},
                                                        ContextTemplate{}, -1, nullptr, false));
      v1::TokenizeRequest count;
      count.set_model(model);
      for (const Message& m : bare.messages) {
        v1::ChatMessage* cm = count.mutable_chat()->add_messages();
        cm->set_role(m.role);
        cm->set_content(m.content);
      }
      if (inference_ == nullptr) {
        return absl::UnavailableError("this router has no --inference-addr");
      }
      v1::TokenizeResponse counted;
      std::unique_ptr<grpc::ClientContext> context = Context(call, call.deadline);
      SY_RETURN_IF_ERROR(rpc::FromGrpcStatus(inference_->Tokenize(context.get(), count, &counted),
                                             "inference Tokenize"));
      const v1::SamplingParams sampling =
          MergeSampling(call.arm->sampling(), call.request->sampling());
      const int64_t used = counted.chat_token_count() + kContextMarginTokens +
                           (sampling.has_max_tokens() ? sampling.max_tokens() : kDefaultMaxTokens);
      budget = static_cast<int>(std::max<int64_t>(0, counted.max_context_tokens() - used));
    }
  }
  TokenEndsFn token_ends =
      [&](const std::vector<std::string>& texts) -> absl::StatusOr<std::vector<std::vector<int>>> {
    SY_ASSIGN_OR_RETURN(v1::TokenizeResponse counted, tokenize(texts, true));
    std::vector<std::vector<int>> ends;
    for (const v1::TokenizedText& t : counted.texts()) {
      ends.emplace_back(t.token_end_offsets().begin(), t.token_end_offsets().end());
    }
    return ends;
  };
  SY_ASSIGN_OR_RETURN(BuiltPrompt built, BuildPrompt(*messages, call.arm->system_prompt(), chunks,
                                                     ToContextTemplate(prompt), budget, token_ends,
                                                     answer->context_missing));
  *messages = std::move(built.messages);
  answer->sources = std::move(built.sources);
  if (!chunks.empty() && answer->sources.empty()) {
    answer->context_missing = true;
    answer->context_missing_reason = v1::CONTEXT_MISSING_REASON_NO_BUDGET;
  }
  return absl::OkStatus();
}

absl::Status ArmRunner::Generate(const ArmCall& call, const std::vector<Message>& messages,
                                 ArmAnswer* answer) {
  if (inference_ == nullptr) return absl::UnavailableError("this router has no --inference-addr");
  v1::GenerateRequest request;
  request.set_model(call.arm->model());
  request.set_adapter(call.arm->adapter());
  request.set_request_id(call.response_id);
  for (const Message& m : messages) {
    v1::ChatMessage* out = request.mutable_chat()->add_messages();
    out->set_role(m.role);
    out->set_content(m.content);
    out->set_name(m.name);
    out->set_tool_call_id(m.tool_call_id);
  }
  *request.mutable_sampling() = MergeSampling(call.arm->sampling(), call.request->sampling());
  const std::string what = absl::StrCat(
      "inference (", request.model(),
      call.arm->adapter().empty() ? "" : absl::StrCat(", adapter ", call.arm->adapter()), ")");
  const absl::Time began = absl::Now();
  std::unique_ptr<grpc::ClientContext> context = Context(call, call.deadline);
  v1::GenerationTimings timings;
  if (!call.on_text) {
    v1::CompleteResponse response;
    SY_RETURN_IF_ERROR(
        rpc::FromGrpcStatus(inference_->Complete(context.get(), request, &response), what));
    answer->text = response.text();
    answer->finish_reason = response.finish_reason();
    answer->usage = response.usage();
    timings = response.timings();
    answer->timings.set_time_to_first_token_seconds(Seconds(began - call.start) +
                                                    timings.time_to_first_token_seconds());
  } else {
    std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
        inference_->Generate(context.get(), request);
    v1::GenerateResponse part;
    bool first = true;
    while (reader->Read(&part)) {
      if (!part.text().empty()) {
        if (first) {
          answer->timings.set_time_to_first_token_seconds(Seconds(absl::Now() - call.start));
          first = false;
        }
        answer->text += part.text();
        call.on_text(part.text());
      }
      if (part.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
        answer->finish_reason = part.finish_reason();
        answer->usage = part.usage();
        timings = part.timings();
      }
    }
    SY_RETURN_IF_ERROR(rpc::FromGrpcStatus(reader->Finish(), what));
    if (first) {
      answer->timings.set_time_to_first_token_seconds(Seconds(absl::Now() - call.start));
    }
  }
  answer->timings.set_queue_seconds(timings.queue_seconds());
  answer->timings.set_compute_seconds(
      std::max(0.0, timings.total_seconds() - timings.queue_seconds()));
  return absl::OkStatus();
}

}  // namespace switchyard::router
