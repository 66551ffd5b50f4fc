// Tokenizes many texts with one vocabulary in one process, through libllama itself (what
// llama-tokenize does per text: special tokens added and parsed). Built and run by
// make_pre_vectors.py where Debian's libllama-dev is installed; not part of nanochat's build.
//
//   llama_tokenize_batch VOCAB.gguf < TEXTS   (each text: its byte count on a line, then the bytes)
//
// Prints one line per text: the ids separated by spaces, or "error" when loading fails (once).
#include <llama.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  llama_log_set([](ggml_log_level, const char*, void*) {}, nullptr);
  llama_model_params params = llama_model_default_params();
  params.vocab_only = true;
  llama_model* model = llama_model_load_from_file(argv[1], params);
  if (model == nullptr) {
    std::printf("error\n");
    return 1;
  }
  const llama_vocab* vocab = llama_model_get_vocab(model);
  std::string line;
  while (std::getline(std::cin, line)) {
    std::string text(std::stoul(line), '\0');
    std::cin.read(text.data(), static_cast<std::streamsize>(text.size()));
    std::vector<llama_token> ids(text.size() + 16);
    int n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), ids.data(),
                           static_cast<int32_t>(ids.size()), true, true);
    if (n < 0) {
      ids.resize(static_cast<std::size_t>(-n));
      n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), ids.data(),
                         static_cast<int32_t>(ids.size()), true, true);
    }
    for (int i = 0; i < n; ++i)
      std::printf(i == 0 ? "%d" : " %d", ids[static_cast<std::size_t>(i)]);
    std::printf("\n");
  }
  llama_model_free(model);
  return 0;
}
