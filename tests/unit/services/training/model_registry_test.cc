#include "services/training/model_registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "shared/core/file_util.h"
#include "shared/tensors/safetensors.h"
#include "tests/testing/temp_dir.h"

namespace switchyard::training {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kModels[] = SWITCHYARD_TEST_DATA_DIR "/model";
constexpr char kText[] = SWITCHYARD_TEST_DATA_DIR "/text";
// Tensor elements of the fixtures' model.safetensors (README: vocab 256,
// hidden 64; llama: 3 layers, GQA 4/2, intermediate 128, tied head).
constexpr int64_t kLlamaParameters = 127424;
// llama-qv: 3 layers x (q: A 4x64 + B 64x4, v: A 4x64 + B 32x4).
constexpr int64_t kLlamaQvParameters = 2688;

constexpr char kTemplateConfig[] =
    R"({"bos_token": "<s>", "eos_token": "</s>",
        "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"})";

class ModelRegistryTest : public testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    data_ = dir_ + "/data";
    Reopen();
  }
  void TearDown() override {
    registry_.reset();
    TempDirTest::TearDown();
  }

  void Reopen() {
    registry_.reset();
    auto registry = ModelRegistry::Open(data_, data_ + "/switchyard.db");
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = std::move(*registry);
  }

  std::string ModelsDir() const { return data_ + "/models"; }
  std::vector<std::string> ModelsEntries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(ModelsDir())) {
      out.push_back(e.path().filename().string());
    }
    return out;
  }

  // A copy of fixture `fixture` under dir_/src/<name>, with a tokenizer
  // (and a chat template when asked) as a real checkpoint directory has.
  std::string MakeSource(const std::string& name, const std::string& fixture, bool tokenizer = true,
                         bool chat_template = false) {
    const std::string dst = absl::StrCat(dir_, "/src/", name);
    fs::create_directories(dst);
    fs::copy(absl::StrCat(kModels, "/", fixture), dst, fs::copy_options::recursive);
    fs::remove(dst + "/reference.safetensors");
    if (tokenizer) {
      fs::copy_file(absl::StrCat(kText, "/bert-uncased/tokenizer.json"), dst + "/tokenizer.json");
      EXPECT_TRUE(
          WriteFileAtomic(dst + "/tokenizer_config.json", chat_template ? kTemplateConfig : "{}")
              .ok());
    }
    return dst;
  }

  // Rewrites <dir>/model.safetensors without tensor `drop`.
  void DropTensor(const std::string& dir, const std::string& drop) {
    const std::string path = dir + "/model.safetensors";
    auto file = tensors::SafetensorsFile::FromBytes(*ReadFile(path), path);
    ASSERT_TRUE(file.ok()) << file.status();
    std::vector<tensors::TensorView> views;
    for (const tensors::TensorInfo& info : (*file)->header().tensors) {
      if (info.name == drop) continue;
      views.push_back({info.name, info.dtype, info.shape, (*file)->data(info), info.NumBytes()});
    }
    ASSERT_TRUE(tensors::WriteSafetensors(path, views, (*file)->header().metadata).ok());
  }

  absl::StatusOr<ModelRecord> RegisterBase(const std::string& id, const std::string& fixture,
                                           bool link = false) {
    RegisterRequest request;
    request.model_id = id;
    request.path = MakeSource(id, fixture);
    request.link = link;
    return registry_->Register(request);
  }

  absl::StatusOr<ModelRecord> RegisterAdapter(const std::string& id, const std::string& fixture,
                                              const std::string& base) {
    RegisterRequest request;
    request.model_id = id;
    request.path = MakeSource(id, "adapters/" + fixture, /*tokenizer=*/false);
    request.base_model = base;
    return registry_->Register(request);
  }

  static RegisterRequest Request(const std::string& id, const std::string& path) {
    RegisterRequest request;
    request.model_id = id;
    request.path = path;
    return request;
  }

  static ListModelsFilter Filter(std::optional<ModelKind> kind, const std::string& base = "") {
    ListModelsFilter filter;
    filter.kind = kind;
    filter.base_model = base;
    return filter;
  }

  std::vector<std::string> Ids(const ModelPage& page) {
    std::vector<std::string> out;
    for (const ModelRecord& m : page.models) out.push_back(m.model_id);
    return out;
  }

  std::string data_;
  std::unique_ptr<ModelRegistry> registry_;
};

TEST_F(ModelRegistryTest, RegisterCopiesBaseAndGetReturnsItsFields) {
  RegisterRequest request;
  request.model_id = "llama";
  request.path = MakeSource("llama", "llama");
  request.description = "tiny llama";
  request.labels = {{"team", "search"}};
  auto registered = registry_->Register(request);
  ASSERT_TRUE(registered.ok()) << registered.status();

  const std::string stored = ModelsDir() + "/llama";
  EXPECT_TRUE(fs::is_directory(stored));
  EXPECT_FALSE(fs::is_symlink(stored));
  int64_t bytes = 0;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"}) {
    ASSERT_TRUE(fs::exists(absl::StrCat(stored, "/", f))) << f;
  }
  for (const auto& e : fs::directory_iterator(stored)) bytes += fs::file_size(e.path());

  for (const char* name : {"llama", "models/llama"}) {
    auto got = registry_->Get(name);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->model_id, "llama");
    EXPECT_EQ(got->kind, ModelKind::kBase);
    EXPECT_EQ(got->architecture, "LlamaForCausalLM");
    EXPECT_EQ(got->parameter_count, kLlamaParameters);
    EXPECT_EQ(got->vocab_size, 256);
    EXPECT_EQ(got->context_length, 128);
    EXPECT_EQ(got->dtype, "float32");
    EXPECT_FALSE(got->has_chat_template);
    EXPECT_FALSE(got->lora.has_value());
    EXPECT_EQ(got->size_bytes, bytes);
    EXPECT_EQ(fs::path(got->path), fs::absolute(stored).lexically_normal());
    EXPECT_EQ(got->description, "tiny llama");
    EXPECT_EQ(got->labels.at("team"), "search");
    EXPECT_EQ(got->create_time_ms, registered->create_time_ms);
  }
  auto page = registry_->List(0, "", {});
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(Ids(*page), ElementsAre("llama"));
  EXPECT_EQ(page->total_size, 1);
}

TEST_F(ModelRegistryTest, RegisterRecordsStoredDtypeAndChatTemplate) {
  RegisterRequest request;
  request.model_id = "mistral";
  request.path = MakeSource("mistral", "mistral", true, /*chat_template=*/true);
  auto got = registry_->Register(request);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->architecture, "MistralForCausalLM");
  EXPECT_EQ(got->dtype, "bfloat16");
  EXPECT_TRUE(got->has_chat_template);
  EXPECT_EQ(got->parameter_count, 125248);
}

TEST_F(ModelRegistryTest, RegisterBertCopiesPoolingModuleDirectory) {
  auto got = RegisterBase("bert", "bert");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->architecture, "BertModel");
  EXPECT_EQ(got->parameter_count, 91840);
  EXPECT_TRUE(fs::exists(ModelsDir() + "/bert/1_Pooling/config.json"));
}

TEST_F(ModelRegistryTest, RegisterLinkPointsAtSourceAndDeleteKeepsSource) {
  auto got = RegisterBase("sharded", "llama-sharded", /*link=*/true);
  ASSERT_TRUE(got.ok()) << got.status();
  const std::string link = ModelsDir() + "/sharded";
  const std::string source = dir_ + "/src/sharded";
  ASSERT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(fs::read_symlink(link), fs::absolute(source).lexically_normal());
  EXPECT_EQ(got->parameter_count, kLlamaParameters);
  EXPECT_GT(got->size_bytes, 0);
  ASSERT_TRUE(registry_->Get("sharded").ok());

  ASSERT_TRUE(registry_->Delete("sharded", false, nullptr).ok());
  EXPECT_FALSE(fs::exists(fs::symlink_status(link)));
  EXPECT_TRUE(fs::exists(source + "/model-00001-of-00003.safetensors"));
}

TEST_F(ModelRegistryTest, RegisterWithoutConfigJsonIsInvalidAndStoresNothing) {
  const std::string src = MakeSource("noconfig", "llama");
  fs::remove(src + "/config.json");
  auto got = registry_->Register(Request("noconfig", src));
  EXPECT_TRUE(absl::IsInvalidArgument(got.status())) << got.status();
  EXPECT_THAT(got.status().message(), HasSubstr("config.json"));
  EXPECT_THAT(ModelsEntries(), IsEmpty());
  EXPECT_TRUE(absl::IsNotFound(registry_->Get("noconfig").status()));
}

TEST_F(ModelRegistryTest, RegisterWithMissingTensorNamesItAndStoresNothing) {
  const std::string src = MakeSource("broken", "llama");
  DropTensor(src, "model.layers.1.mlp.up_proj.weight");
  auto got = registry_->Register(Request("broken", src));
  EXPECT_TRUE(absl::IsInvalidArgument(got.status())) << got.status();
  EXPECT_THAT(got.status().message(), HasSubstr("model.layers.1.mlp.up_proj.weight"));
  EXPECT_THAT(got.status().message(), HasSubstr(fs::path(src).lexically_normal().string()));
  EXPECT_THAT(ModelsEntries(), IsEmpty());
}

TEST_F(ModelRegistryTest, RegisterBaseWithoutTokenizerIsInvalid) {
  const std::string src = MakeSource("notok", "gpt2", /*tokenizer=*/false);
  auto got = registry_->Register(Request("notok", src));
  EXPECT_TRUE(absl::IsInvalidArgument(got.status())) << got.status();
  EXPECT_THAT(got.status().message(), HasSubstr("tokenizer.json"));
  EXPECT_THAT(ModelsEntries(), IsEmpty());
}

TEST_F(ModelRegistryTest, RegisterTakenIdIsAlreadyExists) {
  ASSERT_TRUE(RegisterBase("llama", "llama").ok());
  auto again = registry_->Register(Request("llama", dir_ + "/src/llama"));
  EXPECT_TRUE(absl::IsAlreadyExists(again.status())) << again.status();
  // A directory without a row takes the id too.
  fs::create_directories(ModelsDir() + "/squatter");
  auto squatted = registry_->Register(Request("squatter", dir_ + "/src/llama"));
  EXPECT_TRUE(absl::IsAlreadyExists(squatted.status())) << squatted.status();
}

TEST_F(ModelRegistryTest, RegisterRefusesReservedFineTunedPrefix) {
  const std::string src = MakeSource("llama", "llama");
  auto got = registry_->Register(Request("ft:llama:demo:ft-1", src));
  EXPECT_TRUE(absl::IsInvalidArgument(got.status())) << got.status();
  EXPECT_THAT(got.status().message(), HasSubstr("reserved for fine-tuned models"));
  EXPECT_THAT(ModelsEntries(), IsEmpty());
}

TEST_F(ModelRegistryTest, ValidateModelIdAcceptsOnlyTheDocumentedCharacters) {
  for (const std::string& id :
       {std::string("llama"), std::string("Llama-3.2_1B.v1:q4"), std::string(128, 'a')}) {
    EXPECT_TRUE(ModelRegistry::ValidateModelId(id).ok()) << id;
  }
  for (const std::string& id : {std::string(""), std::string("-llama"), std::string(".hidden"),
                                std::string("a/b"), std::string("a b"), std::string(129, 'a')}) {
    absl::Status s = ModelRegistry::ValidateModelId(id);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << id;
    EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("\"", id, "\"")));
    EXPECT_THAT(s.message(), HasSubstr("1-128 letters, digits"));
  }
}

TEST_F(ModelRegistryTest, ValidateOnlyChecksAndStoresNothing) {
  RegisterRequest request;
  request.model_id = "llama";
  request.path = MakeSource("llama", "llama");
  request.validate_only = true;
  auto got = registry_->Register(request);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->parameter_count, kLlamaParameters);
  EXPECT_THAT(ModelsEntries(), IsEmpty());
  EXPECT_TRUE(absl::IsNotFound(registry_->Get("llama").status()));
}

TEST_F(ModelRegistryTest, RegisterAdapterOverRegisteredBaseTakesBaseFields) {
  ASSERT_TRUE(RegisterBase("llama", "llama").ok());
  auto got = RegisterAdapter("llama-qv", "llama-qv", "models/llama");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->kind, ModelKind::kAdapter);
  EXPECT_EQ(got->base_model, "llama");
  EXPECT_EQ(got->adapter_parameter_count, kLlamaQvParameters);
  EXPECT_EQ(got->parameter_count, kLlamaParameters + kLlamaQvParameters);
  EXPECT_EQ(got->architecture, "LlamaForCausalLM");
  EXPECT_EQ(got->context_length, 128);
  EXPECT_EQ(got->vocab_size, 256);
  EXPECT_EQ(got->dtype, "float32");
  ASSERT_TRUE(got->lora.has_value());
  EXPECT_EQ(got->lora->r, 4);
  EXPECT_EQ(got->lora->alpha, 8);
  EXPECT_DOUBLE_EQ(got->lora->dropout, 0.05);
  EXPECT_THAT(got->lora->target_modules, ElementsAre("q_proj", "v_proj"));
  EXPECT_FALSE(got->lora->rslora);
  EXPECT_TRUE(fs::exists(ModelsDir() + "/llama-qv/adapter_model.safetensors"));

  auto read = registry_->Get("llama-qv");
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_TRUE(read->lora.has_value());
  EXPECT_THAT(read->lora->target_modules, ElementsAre("q_proj", "v_proj"));
}

TEST_F(ModelRegistryTest, RegisterAdapterRecordsRsloraAndLayers) {
  ASSERT_TRUE(RegisterBase("llama", "llama").ok());
  auto got = RegisterAdapter("rs", "llama-all-rslora", "llama");
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->lora.has_value());
  EXPECT_TRUE(got->lora->rslora);
  EXPECT_THAT(got->lora->layers, ElementsAre(1));
}

TEST_F(ModelRegistryTest, RegisterAdapterWithUnregisteredBaseIsNotFound) {
  auto got = RegisterAdapter("llama-qv", "llama-qv", "llama");
  EXPECT_TRUE(absl::IsNotFound(got.status())) << got.status();
  EXPECT_THAT(got.status().message(), HasSubstr("models/llama"));
  EXPECT_THAT(ModelsEntries(), IsEmpty());
}

TEST_F(ModelRegistryTest, RegisterAdapterWithoutBaseUsesAdapterConfigOrAsksForIt) {
  ASSERT_TRUE(RegisterBase("llama", "llama").ok());
  // The fixture names "tests/data/model/llama", not a registered id.
  auto unnamed = RegisterAdapter("qv", "llama-qv", "");
  EXPECT_TRUE(absl::IsInvalidArgument(unnamed.status())) << unnamed.status();
  EXPECT_THAT(unnamed.status().message(), HasSubstr("pass base_model"));

  const std::string src = dir_ + "/src/qv";
  std::string config = *ReadFile(src + "/adapter_config.json");
  const std::string from = "\"tests/data/model/llama\"";
  config.replace(config.find(from), from.size(), "\"llama\"");
  ASSERT_TRUE(WriteFileAtomic(src + "/adapter_config.json", config).ok());
  auto named = registry_->Register(Request("qv", src));
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(named->base_model, "llama");
}

TEST_F(ModelRegistryTest, AddFineTunedMovesAdapterInAndKeepsFineTuneJson) {
  ASSERT_TRUE(RegisterBase("llama", "llama").ok());
  const std::string out = MakeSource("job-out", "adapters/llama-qv", false);
  AddFineTunedRequest request;
  request.model_id = "ft:llama:demo:ft-1";
  request.source_dir = out;
  request.kind = ModelKind::kAdapter;
  request.base_model = "llama";
  request.fine_tune_json = R"({"job":"ft-1","method":"sft"})";
  auto added = registry_->AddFineTuned(request);
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(fs::exists(ModelsDir() + "/ft:llama:demo:ft-1/adapter_config.json"));

  auto got = registry_->Get("models/ft:llama:demo:ft-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->kind, ModelKind::kAdapter);
  EXPECT_EQ(got->base_model, "llama");
  EXPECT_EQ(got->fine_tune_json, R"({"job":"ft-1","method":"sft"})");
  EXPECT_EQ(got->parameter_count, kLlamaParameters + kLlamaQvParameters);
}

TEST_F(ModelRegistryTest, AddFineTunedFullCheckpointNeedsNoTokenizer) {
  RegisterRequest base;
  base.model_id = "llama";
  base.path = MakeSource("llama", "llama", true, /*chat_template=*/true);
  ASSERT_TRUE(registry_->Register(base).ok());
  AddFineTunedRequest request;
  request.model_id = "ft:llama:full:ft-2";
  request.source_dir = MakeSource("ckpt", "llama", /*tokenizer=*/false);
  request.kind = ModelKind::kFullFineTune;
  request.base_model = "models/llama";
  auto added = registry_->AddFineTuned(request);
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(added->kind, ModelKind::kFullFineTune);
  EXPECT_EQ(added->base_model, "llama");
  EXPECT_EQ(added->parameter_count, kLlamaParameters);
  EXPECT_TRUE(added->has_chat_template);  // the base's tokenizer serves it
}

TEST_F(ModelRegistryTest, AddFineTunedWithTakenIdLeavesSourceInPlace) {
  ASSERT_TRUE(RegisterBase("llama", "llama").ok());
  AddFineTunedRequest request;
  request.model_id = "llama";
  request.source_dir = MakeSource("job-out", "adapters/llama-qv", false);
  request.base_model = "llama";
  auto added = registry_->AddFineTuned(request);
  EXPECT_TRUE(absl::IsAlreadyExists(added.status())) << added.status();
  EXPECT_TRUE(fs::exists(request.source_dir + "/adapter_config.json"));
}

TEST_F(ModelRegistryTest, DeleteRefusesModelInUse) {
  ASSERT_TRUE(RegisterBase("llama", "llama").ok());
  absl::Status s = registry_->Delete("models/llama", true, [](const std::string& id) {
    return id == "llama" ? std::optional<std::string>("job ft-1 is running on it") : std::nullopt;
  });
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("job ft-1 is running on it"));
  EXPECT_TRUE(registry_->Get("llama").ok());
  EXPECT_TRUE(fs::exists(ModelsDir() + "/llama/config.json"));
}

TEST_F(ModelRegistryTest, DeleteBaseWithDerivedModelsNeedsForceAndRemovesBoth) {
  ASSERT_TRUE(RegisterBase("llama", "llama").ok());
  ASSERT_TRUE(RegisterAdapter("llama-qv", "llama-qv", "llama").ok());
  auto unused = [](const std::string&) { return std::optional<std::string>(); };

  absl::Status refused = registry_->Delete("llama", false, unused);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_THAT(refused.message(), HasSubstr("models/llama-qv"));

  // A derived model in use refuses even with force, and nothing is deleted.
  absl::Status busy = registry_->Delete("llama", true, [](const std::string& id) {
    return id == "llama-qv" ? std::optional<std::string>("serving") : std::nullopt;
  });
  EXPECT_TRUE(absl::IsFailedPrecondition(busy)) << busy;
  EXPECT_TRUE(registry_->Get("llama-qv").ok());

  ASSERT_TRUE(registry_->Delete("llama", true, unused).ok());
  EXPECT_TRUE(absl::IsNotFound(registry_->Get("llama").status()));
  EXPECT_TRUE(absl::IsNotFound(registry_->Get("llama-qv").status()));
  EXPECT_THAT(ModelsEntries(), IsEmpty());
}

TEST_F(ModelRegistryTest, ReopenKeepsRowsDropsVanishedAdoptsUnregisteredAndCleansStaging) {
  ASSERT_TRUE(RegisterBase("kept", "llama").ok());
  ASSERT_TRUE(RegisterBase("vanished", "gpt2").ok());
  registry_.reset();
  fs::remove_all(ModelsDir() + "/vanished");
  fs::copy(dir_ + "/src/kept", ModelsDir() + "/dropped-in");  // already in place: adopted
  fs::create_directories(ModelsDir() + "/.staging-x");
  ASSERT_TRUE(WriteFileAtomic(ModelsDir() + "/.staging-x/model.safetensors", "partial").ok());
  fs::create_directories(ModelsDir() + "/unloadable");  // a config.json alone does not load
  fs::copy_file(absl::StrCat(kModels, "/llama/config.json"),
                ModelsDir() + "/unloadable/config.json");
  Reopen();

  EXPECT_TRUE(registry_->Get("kept").ok());
  EXPECT_TRUE(absl::IsNotFound(registry_->Get("vanished").status()));
  auto adopted = registry_->Get("dropped-in");
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  EXPECT_EQ(adopted->kind, ModelKind::kBase);
  EXPECT_EQ(adopted->parameter_count, kLlamaParameters);
  EXPECT_FALSE(fs::exists(ModelsDir() + "/.staging-x"));
  EXPECT_TRUE(absl::IsNotFound(registry_->Get("unloadable").status()));
  EXPECT_TRUE(fs::exists(ModelsDir() + "/unloadable/config.json"));  // skipped, not deleted
}

TEST_F(ModelRegistryTest, SecondRegistryOnSameDataDirIsRefused) {
  auto second = ModelRegistry::Open(data_, data_ + "/switchyard.db");
  EXPECT_TRUE(absl::IsFailedPrecondition(second.status())) << second.status();
}

TEST_F(ModelRegistryTest, ListPagesNewestFirst) {
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(RegisterBase(id, "gpt2").ok());
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    auto page = registry_->List(1, token, {});
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_EQ(page->total_size, 3);
    ASSERT_EQ(page->models.size(), 1u);
    seen.push_back(page->models[0].model_id);
    token = page->next_page_token;
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_THAT(seen, ElementsAre("c", "b", "a"));
}

TEST_F(ModelRegistryTest, ListRejectsMalformedPageToken) {
  for (const char* token : {"abc", "-1"}) {
    auto page = registry_->List(10, token, {});
    EXPECT_TRUE(absl::IsInvalidArgument(page.status())) << token;
  }
}

TEST_F(ModelRegistryTest, ListFiltersByKindAndBase) {
  ASSERT_TRUE(RegisterBase("llama", "llama").ok());
  ASSERT_TRUE(RegisterBase("gpt2", "gpt2").ok());
  ASSERT_TRUE(RegisterAdapter("llama-qv", "llama-qv", "llama").ok());
  ASSERT_TRUE(RegisterAdapter("gpt2-attn", "gpt2-attn", "gpt2").ok());

  auto adapters = registry_->List(0, "", Filter(ModelKind::kAdapter));
  ASSERT_TRUE(adapters.ok()) << adapters.status();
  EXPECT_THAT(Ids(*adapters), ElementsAre("gpt2-attn", "llama-qv"));
  EXPECT_EQ(adapters->total_size, 2);

  auto bases = registry_->List(0, "", Filter(ModelKind::kBase));
  ASSERT_TRUE(bases.ok()) << bases.status();
  EXPECT_THAT(Ids(*bases), ElementsAre("gpt2", "llama"));

  auto over_llama = registry_->List(0, "", Filter(std::nullopt, "models/llama"));
  ASSERT_TRUE(over_llama.ok()) << over_llama.status();
  EXPECT_THAT(Ids(*over_llama), ElementsAre("llama-qv"));
  EXPECT_EQ(over_llama->total_size, 1);
}

TEST_F(ModelRegistryTest, InspectDescribesCheckpointWithoutRegistering) {
  auto got = registry_->Inspect(MakeSource("ckpt", "qwen2", false), ModelKind::kFullFineTune);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->kind, ModelKind::kFullFineTune);
  EXPECT_EQ(got->architecture, "Qwen2ForCausalLM");
  EXPECT_GT(got->parameter_count, 0);
  EXPECT_THAT(ModelsEntries(), IsEmpty());
}

}  // namespace
}  // namespace switchyard::training
