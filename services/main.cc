// The `switchyard` binary: every service and the command-line client.
#include <iostream>
#include <string>
#include <vector>

#include "services/cli/cli_common.h"
#include "services/cli/commands.h"
#include "shared/rpc/server_runner.h"

namespace {

const char* kUsage =
    "switchyard: fine-tune, retrieve, or both - decided with numbers.\n\n"
    "Usage: switchyard <command> [args] [flags]\n\n"
    "Commands:\n"
    "  serve            Run services (--target=dataset|training|retrieval|inference|\n"
    "                   router|all); see `switchyard serve --help`.\n"
    "  data <verb>      Validate, prepare, upload, list, show, stats, versions, delete,\n"
    "                   export datasets; see `switchyard data --help`.\n"
    "  text <verb>      Encode, decode and render chat templates with a model's own\n"
    "                   tokenizer; see `switchyard text --help`.\n"
    "  model <verb>     Init, score, generate with and merge checkpoints and LoRA\n"
    "                   adapters locally; see `switchyard model --help`.\n"
    "  train <verb>     Create, watch, show, list, cancel, pause and resume fine-tuning\n"
    "                   jobs; see `switchyard train --help`.\n"
    "  grader <verb>    Validate a reinforcement grader spec locally, or run it on one\n"
    "                   sample on the server; see `switchyard grader --help`.\n"
    "  models <verb>    Register, list, show and delete base and fine-tuned models on\n"
    "                   the server; see `switchyard models --help`.\n"
    "  rag <verb>       Create collections, ingest, delete and search documents\n"
    "                   (dense, BM25, hybrid); see `switchyard rag --help`.\n"
    "  generate         Generate text on the inference service (streaming, adapters,\n"
    "                   sampling); see `switchyard generate --help`.\n"
    "  inference <verb> List, load and unload models and adapters on the inference\n"
    "                   service, score completions; see `switchyard inference --help`.\n"
    "  experiment <verb> Create, show, list, update, archive A/B experiments on the\n"
    "                   router; report with verdict; exports; see `switchyard experiment\n"
    "                   --help`.\n"
    "  chat             Send a chat request through the router (--experiment, --user-key,\n"
    "                   --arm); see `switchyard chat --help`.\n"
    "  feedback         Rate an answer by response id (--score or --thumbs).\n"
    "  compare          Record which of two answers (a shadow pair) is better.\n"
    "  eval <verb>      Offline evaluation of an experiment's arms and the base model on\n"
    "                   a labelled dataset; see `switchyard eval --help`.\n"
    "  version          Print the version.\n\n"
    "Exit codes: 0 ok, 1 invalid data, 2 usage error, 3 not found, 4 server unavailable\n"
    "or deadline exceeded, 5 unauthenticated or permission denied, 6 other error.\n";

}  // namespace

int main(int argc, char** argv) {
  // Before any thread starts, so only `serve`'s sigwait sees SIGTERM/SIGINT.
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::cerr << kUsage;
    return switchyard::cli::kExitUsage;
  }
  const std::string command = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (command == "serve") {
    switchyard::rpc::BlockTerminationSignals();
    return switchyard::cli::RunServe(rest);
  }
  if (command == "data") return switchyard::cli::RunData(rest);
  if (command == "text") return switchyard::cli::RunText(rest);
  if (command == "model") return switchyard::cli::RunModel(rest);
  if (command == "train") return switchyard::cli::RunTrain(rest);
  if (command == "grader") return switchyard::cli::RunGrader(rest);
  if (command == "models") return switchyard::cli::RunModels(rest);
  if (command == "rag") return switchyard::cli::RunRag(rest);
  if (command == "generate") return switchyard::cli::RunGenerate(rest);
  if (command == "inference") return switchyard::cli::RunInference(rest);
  if (command == "experiment") return switchyard::cli::RunExperiment(rest);
  if (command == "chat") return switchyard::cli::RunChat(rest);
  if (command == "feedback") return switchyard::cli::RunFeedback(rest);
  if (command == "compare") return switchyard::cli::RunCompare(rest);
  if (command == "eval") return switchyard::cli::RunEval(rest);
  if (command == "version" || command == "--version") {
    std::cout << "switchyard " << SWITCHYARD_VERSION << "\n";
    return 0;
  }
  if (command == "help" || command == "--help" || command == "-h") {
    std::cout << kUsage;
    return 0;
  }
  std::cerr << "error: unknown command `" << command << "`\n\n" << kUsage;
  return switchyard::cli::kExitUsage;
}
