// Entry points of the `switchyard` subcommands. Each takes the arguments after
// its command words and returns the process exit code (see cli_common.h).
#ifndef SWITCHYARD_SERVICES_CLI_COMMANDS_H_
#define SWITCHYARD_SERVICES_CLI_COMMANDS_H_

#include <string>
#include <vector>

namespace switchyard::v1 {
class Evaluation;
class Grader;
}  // namespace switchyard::v1

namespace switchyard::cli {

int RunServe(const std::vector<std::string>& args);
// args[0] is the verb: validate, prepare, upload, append, list, show, stats, versions,
// delete, export.
int RunData(const std::vector<std::string>& args);
// args[0] is the verb: encode, decode, chat.
int RunText(const std::vector<std::string>& args);
// args[0] is the verb: init, score, generate, merge.
int RunModel(const std::vector<std::string>& args);
// args[0] is the verb: create, watch, show, list, events, checkpoints, cancel, pause,
// resume.
int RunTrain(const std::vector<std::string>& args);
// args[0] is the verb: validate, run.
int RunGrader(const std::vector<std::string>& args);
// Reads a grader JSON file (either form) into `out`: -1 to go on, else the
// exit code after printing the problem (naming the file and the field).
int ReadGraderFile(const std::string& path, v1::Grader* out);
// args[0] is the verb: register, list, show, delete.
int RunModels(const std::vector<std::string>& args);
// args[0] is the verb: create, ingest, delete, search, list, show, drop.
int RunRag(const std::vector<std::string>& args);
// `switchyard generate`: one generation from the inference service.
int RunGenerate(const std::vector<std::string>& args);
// args[0] is the verb: list, load, unload, load-adapter, unload-adapter, score.
int RunInference(const std::vector<std::string>& args);
// `switchyard experiment <verb>`: the router's experiments.
int RunExperiment(const std::vector<std::string>& args);
// `switchyard chat`, `feedback`, `compare`: traffic and reviews through the router.
int RunChat(const std::vector<std::string>& args);
int RunFeedback(const std::vector<std::string>& args);
int RunCompare(const std::vector<std::string>& args);
// `switchyard eval <verb>`: offline evaluation through the router.
int RunEval(const std::vector<std::string>& args);
// Prints an evaluation's per-arm table (eval and experiment report share it).
void PrintEvaluation(const v1::Evaluation& evaluation);

}  // namespace switchyard::cli

#endif  // SWITCHYARD_SERVICES_CLI_COMMANDS_H_
