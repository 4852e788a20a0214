// `switchyard models ...`: the training service's client for the model
// registry (base models registered by name, models fine-tuned by jobs).
#include <filesystem>
#include <iostream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "services/cli/cli_common.h"
#include "services/cli/commands.h"
#include "switchyard/v1/training.grpc.pb.h"

namespace switchyard::cli {
namespace {

const char* kModelsUsage =
    "Usage: switchyard models <verb> [flags]\n\n"
    "The model registry of the training service (--server ADDR):\n"
    "  register NAME --path DIR  Register a Hugging Face checkpoint (or PEFT adapter) directory.\n"
    "  list                      Base and fine-tuned models, newest first.\n"
    "  show NAME                 One model (or a checkpoint: jobs/JOB/checkpoints/ID).\n"
    "  delete NAME               Delete a model and its files.\n\n"
    "Run `switchyard models <verb> --help` for the flags of each verb.\n";

using Client = ServiceClient<v1::TrainingService>;
using Stub = v1::TrainingService::Stub;

std::string ModelName(const std::string& arg) {
  return absl::StartsWith(arg, "models/") || absl::StartsWith(arg, "jobs/")
             ? arg
             : absl::StrCat("models/", arg);
}

std::string KindLabel(v1::ModelKind kind) {
  switch (kind) {
    case v1::MODEL_KIND_BASE:
      return "base";
    case v1::MODEL_KIND_ADAPTER:
      return "adapter";
    case v1::MODEL_KIND_FULL_FINE_TUNE:
      return "full";
    default:
      return "-";
  }
}

void PrintModel(const v1::Model& m, std::ostream& out) {
  out << m.name() << "  " << KindLabel(m.kind()) << "  " << m.architecture() << "\n";
  std::vector<std::vector<std::string>> rows;
  if (!m.base_model().empty()) rows.push_back({"  base", m.base_model()});
  rows.push_back({"  path", m.path()});
  rows.push_back({"  parameters", absl::StrCat(m.parameter_count())});
  if (m.kind() == v1::MODEL_KIND_ADAPTER) {
    rows.push_back({"  adapter parameters", absl::StrCat(m.adapter_parameter_count())});
  }
  rows.push_back({"  size", HumanBytes(m.size_bytes())});
  rows.push_back({"  context length", absl::StrCat(m.context_length())});
  rows.push_back({"  vocabulary", absl::StrCat(m.vocab_size())});
  rows.push_back({"  dtype", m.dtype()});
  rows.push_back({"  chat template", m.has_chat_template() ? "yes" : "no"});
  if (m.has_lora()) {
    rows.push_back({"  lora", absl::StrCat("r ", m.lora().r(), " alpha ", m.lora().alpha(), " on ",
                                           absl::StrJoin(m.lora().target_modules(), ","))});
  }
  if (m.has_fine_tune()) {
    const v1::FineTuneInfo& f = m.fine_tune();
    rows.push_back({"  job", f.job()});
    rows.push_back({"  trained on",
                    f.training_dataset() + (f.validation_dataset().empty()
                                                ? ""
                                                : " (validation " + f.validation_dataset() + ")")});
    if (f.has_final_train()) {
      rows.push_back(
          {"  final train",
           absl::StrFormat("loss %.4f acc %.3f after %d steps", f.final_train().loss(),
                           f.final_train().mean_token_accuracy(), f.final_train().step())});
    }
    if (f.has_final_eval()) {
      rows.push_back(
          {"  final eval",
           absl::StrFormat("val_loss %.4f val_acc %.3f", f.final_eval().validation_loss(),
                           f.final_eval().validation_mean_token_accuracy())});
    }
    if (!f.checkpoint().empty()) rows.push_back({"  checkpoint", f.checkpoint()});
  }
  if (!m.description().empty()) rows.push_back({"  description", m.description()});
  rows.push_back({"  created", TimeLabel(m.create_time())});
  out << FormatTable(rows);
}

int Register(const std::vector<std::string>& args) {
  FlagSet flags("switchyard models register NAME --path DIR [flags]",
                "Registers a Hugging Face checkpoint directory (config.json, *.safetensors,\n"
                "tokenizer.json) as a base model, or a PEFT adapter directory over a\n"
                "registered base. The server checks it loads, then copies (or links) it into\n"
                "its artifact store. DIR is read by the server: with a remote server it must\n"
                "be a path on the server's machine.");
  flags.AddString("path", "", "Model directory (required; relative paths are made absolute).");
  flags.AddBool("link", false, "Symlink the directory instead of copying (it must stay put).");
  flags.AddString("base-model", "",
                  "For an adapter: its base (default: adapter_config.json's "
                  "base_model_name_or_path).");
  flags.AddString("description", "", "Free text stored with the model.");
  flags.AddString("labels", "", "key=value pairs, comma-separated.");
  flags.AddBool("validate-only", false, "Check that the directory loads; register nothing.");
  flags.AddBool("json", false, "Print the model as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  if (flags.GetString("path").empty()) {
    std::cerr << "error: --path is required\n";
    return kExitUsage;
  }
  v1::RegisterModelRequest req;
  req.set_model_id(flags.positional()[0]);
  std::error_code ec;
  std::filesystem::path path = std::filesystem::absolute(flags.GetString("path"), ec);
  req.set_path(ec ? flags.GetString("path") : path.lexically_normal().string());
  req.set_mode(flags.GetBool("link") ? v1::REGISTER_MODE_LINK : v1::REGISTER_MODE_COPY);
  req.set_base_model(flags.GetString("base-model"));
  req.set_description(flags.GetString("description"));
  req.set_validate_only(flags.GetBool("validate-only"));
  for (absl::string_view kv : absl::StrSplit(flags.GetString("labels"), ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty() || kv.find('=') == absl::string_view::npos) {
      std::cerr << "error: --labels must look like key=value,key2=value2; got \""
                << flags.GetString("labels") << "\"\n";
      return kExitUsage;
    }
    (*req.mutable_labels())[p.first] = p.second;
  }
  v1::Model model;
  rc = CallOnce<v1::TrainingService>(flags, &Stub::RegisterModel, req, &model);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ToJson(model);
    return kExitOk;
  }
  std::cout << (req.validate_only() ? "valid (nothing registered): " : "registered ");
  PrintModel(model, std::cout);
  return kExitOk;
}

int ListModels(const std::vector<std::string>& args) {
  FlagSet flags("switchyard models list [flags]",
                "Lists base and fine-tuned models, newest first.");
  flags.AddString("kind", "", "Only this kind: base | adapter | full.");
  flags.AddString("base", "", "Only models derived from this base.");
  AddPageFlags(&flags, "Models");
  flags.AddBool("json", false, "Print the response as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 0, 0);
  if (rc >= 0) return rc;
  v1::ListModelsRequest base_req;
  if (flags.IsSet("kind")) {
    v1::ModelKind kind;
    if (!ParseChoice<v1::ModelKind>(flags, "kind",
                                    {{"base", v1::MODEL_KIND_BASE},
                                     {"adapter", v1::MODEL_KIND_ADAPTER},
                                     {"full", v1::MODEL_KIND_FULL_FINE_TUNE}},
                                    &kind))
      return kExitUsage;
    base_req.set_kind(kind);
  }
  base_req.set_base_model(flags.GetString("base"));
  Client c;
  if ((rc = Connect(flags, &c)) >= 0) return rc;
  v1::ListModelsResponse all;
  rc = FetchPages(
      flags,
      [&](int32_t size, const std::string& token, v1::ListModelsResponse* page) {
        grpc::ClientContext ctx;
        c.Prepare(&ctx);
        v1::ListModelsRequest req = base_req;
        req.set_page_size(size);
        req.set_page_token(token);
        return c.stub->ListModels(&ctx, req, page);
      },
      [](v1::ListModelsResponse* r) { return r->mutable_models(); }, &all);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ToJson(all);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"MODEL", "KIND", "ARCHITECTURE", "BASE", "PARAMETERS", "SIZE", "CREATED"}};
  for (const v1::Model& m : all.models()) {
    rows.push_back({m.model_id(), KindLabel(m.kind()), m.architecture(),
                    m.base_model().empty() ? "-" : m.base_model().substr(7),
                    absl::StrCat(m.kind() == v1::MODEL_KIND_ADAPTER ? m.adapter_parameter_count()
                                                                    : m.parameter_count()),
                    HumanBytes(m.size_bytes()), TimeLabel(m.create_time())});
  }
  std::cout << FormatTable(rows);
  PrintMorePages(all.next_page_token());
  return kExitOk;
}

int ShowModel(const std::vector<std::string>& args) {
  FlagSet flags("switchyard models show NAME [flags]",
                "Shows a model: kind, architecture, sizes, LoRA settings and, for fine-tuned\n"
                "models, the job, data and final metrics. NAME may also be a checkpoint\n"
                "(jobs/JOB/checkpoints/ID).");
  flags.AddBool("json", false, "Print the model as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::GetModelRequest req;
  req.set_name(ModelName(flags.positional()[0]));
  v1::Model model;
  rc = CallOnce<v1::TrainingService>(flags, &Stub::GetModel, req, &model);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ToJson(model);
    return kExitOk;
  }
  PrintModel(model, std::cout);
  return kExitOk;
}

int DeleteModel(const std::vector<std::string>& args) {
  FlagSet flags("switchyard models delete NAME [flags]",
                "Deletes a model and its files. Refused while a queued, running or paused job\n"
                "uses it, and for a base that fine-tuned models derive from unless --force\n"
                "(which deletes them too).");
  flags.AddBool("force", false, "Also delete the models derived from this one.");
  flags.AddBool("json", false, "Print {\"deleted\": NAME} as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::DeleteModelRequest req;
  req.set_name(ModelName(flags.positional()[0]));
  req.set_force(flags.GetBool("force"));
  google::protobuf::Empty empty;
  rc = CallOnce<v1::TrainingService>(flags, &Stub::DeleteModel, req, &empty);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << "{\n  \"deleted\": \"" << req.name() << "\"\n}\n";
  } else {
    std::cout << "deleted " << req.name() << "\n";
  }
  return kExitOk;
}

}  // namespace

int RunModels(const std::vector<std::string>& args) {
  return DispatchVerb("models", kModelsUsage, args,
                      {
                          {"register", Register},
                          {"list", ListModels},
                          {"show", ShowModel},
                          {"delete", DeleteModel},
                      });
}

}  // namespace switchyard::cli
