// Training inputs from a conversation: the token ids of the model's own chat
// template rendering, and which of them belong to assistant turns, so loss is
// computed on those alone (messages with "weight": 0 are left out).
//
// Works for templates without {% generation %} markers: a second rendering,
// with every message's content replaced by a unique placeholder, shows where
// each content lands; a trained assistant turn is its content plus the special
// token that closes it (<|im_end|>, <|eot_id|>, </s>). The rendering is
// tokenized piece by piece at those edges, which must give the same ids as
// tokenizing it whole. When a template rewrites or branches on a message's
// content, or tokens straddle an edge, the call says so, naming the message,
// rather than guessing.
#ifndef SWITCHYARD_SHARED_TEXT_ASSISTANT_MASK_H_
#define SWITCHYARD_SHARED_TEXT_ASSISTANT_MASK_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/status/statusor.h"
#include "shared/text/chat_template.h"
#include "shared/text/tokenizer.h"

namespace switchyard::text {

struct MaskedConversation {
  std::vector<int32_t> ids;
  std::vector<uint8_t> assistant_mask;  // 1 for tokens of trained assistant turns
};

// `context` holds "messages" (and any template variables: tools, bos_token,
// ...). The rendering is tokenized without the tokenizer's own special tokens,
// as transformers' apply_chat_template(tokenize=True) does.
absl::StatusOr<MaskedConversation> RenderForTraining(const ChatTemplate& chat_template,
                                                     const Tokenizer& tokenizer,
                                                     const nlohmann::ordered_json& context);

}  // namespace switchyard::text

#endif  // SWITCHYARD_SHARED_TEXT_ASSISTANT_MASK_H_
