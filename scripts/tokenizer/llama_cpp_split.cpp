// Pre-tokenizer splits exactly as llama.cpp computes them: links llama.cpp's own src/unicode.cpp
// and src/unicode-data.cpp and calls unicode_regex_split with the expression lists of
// llm_tokenizer_bpe (src/llama-vocab.cpp) for LLAMA_VOCAB_PRE_TYPE_DEFAULT and _LLAMA3.
//
// Input (stdin): one text per line, hex-encoded UTF-8. Output (stdout): for each text two lines,
// "default <words>" then "llama3 <words>", words hex-encoded and joined by ','.
// Built and run by scripts/tokenizer/gen_fixtures.py; not part of the build.

#include "unicode.h"

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

static std::string from_hex(const std::string & hex) {
    std::string out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) {
        out.push_back((char) std::stoi(hex.substr(i, 2), nullptr, 16));
    }
    return out;
}

static std::string to_hex(const std::string & s) {
    static const char * digits = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s) {
        out.push_back(digits[c >> 4]);
        out.push_back(digits[c & 15]);
    }
    return out;
}

int main() {
    // copied verbatim from llm_tokenizer_bpe's constructor
    const std::vector<std::string> regex_default = {
        "[\\p{P}\\$\\+<=>\\^~\\|]+",
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
        "\\p{N}+",
        "[0-9][0-9][0-9]",
    };
    const std::vector<std::string> regex_llama3 = {
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    };
    std::string line;
    while (std::getline(std::cin, line)) {
        const std::string text = from_hex(line);
        for (int k = 0; k < 2; ++k) {
            const auto words = unicode_regex_split(text, k == 0 ? regex_default : regex_llama3, false);
            std::string out = k == 0 ? "default " : "llama3 ";
            for (size_t i = 0; i < words.size(); ++i) {
                if (i) out += ',';
                out += to_hex(words[i]);
            }
            std::cout << out << '\n';
        }
    }
    return 0;
}
