#include <gtest/gtest.h>

#include "nanochat/model/chat_template.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::model {
namespace {

const std::vector<ChatMessage> kConversation = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "2+2?"}};

TEST(ChatTemplate, DetectsFamiliesByTheirMarkers) {
  EXPECT_EQ(ChatTemplate::detect("{{'<|im_start|>' + message['role']}}").name(), "chatml");
  EXPECT_EQ(ChatTemplate::detect("<|start_header_id|>{{ role }}<|end_header_id|>").name(),
            "llama3");
  EXPECT_EQ(ChatTemplate::detect("{{ role | capitalize }}: {{ content }}<|eot_id|>").name(),
            "bitnet");
  EXPECT_EQ(ChatTemplate::detect("{{'<|user|>' + '\\n' + content + '<|end|>'}}{{'<|assistant|>'}}")
                .name(),
            "phi3");
  EXPECT_EQ(ChatTemplate::detect("<start_of_turn>user").name(), "gemma");
  EXPECT_EQ(ChatTemplate::detect("[INST] {{ content }} [/INST]").name(), "llama2");
  EXPECT_EQ(ChatTemplate::detect("").name(), "plain");
  EXPECT_THROW(ChatTemplate::named("jinja9"), UsageError);
}

TEST(ChatTemplate, RendersEachFamily) {
  EXPECT_EQ(ChatTemplate::named("chatml").render(kConversation, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(ChatTemplate::named("llama3").render({{"user", "Hi"}}, true),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(ChatTemplate::named("bitnet").render({{"system", "S"}, {"user", "Hi"}}, true),
            "System: S<|eot_id|>User: Hi<|eot_id|>Assistant: ");
  EXPECT_EQ(ChatTemplate::named("phi3").render({{"user", "Hi"}}, true),
            "<|user|>\nHi<|end|>\n<|assistant|>\n");
  EXPECT_EQ(ChatTemplate::named("gemma").render(kConversation, true),
            "<start_of_turn>user\nBe "
            "brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
            "<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(ChatTemplate::named("llama2").render(kConversation, true),
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] 2+2? [/INST]");
  EXPECT_EQ(ChatTemplate::named("plain").render({{"user", "Hi"}}, true), "User: Hi\nAssistant:");
  EXPECT_EQ(ChatTemplate::named("plain").stop(), std::vector<std::string>{"\nUser:"});
}

}  // namespace
}  // namespace nanochat::model
