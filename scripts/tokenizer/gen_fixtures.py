#!/usr/bin/env python3
"""Generate fixtures/tokenizer/llama3/expected_ids.jsonl.gz: expected tokenizations of the
LLaMA-3 vocabulary for the engine's tokenizer tests (CI has no Python; the output is committed).

Two independent references:
- llama.cpp's own pre-tokenizer: scripts/tokenizer/llama_cpp_split.cpp links llama.cpp's
  src/unicode.cpp + src/unicode-data.cpp and calls unicode_regex_split with the `default` and
  LLaMA-3 expression lists. Its words, BPE-merged by Hugging Face `tokenizers` (the BPE model of
  the same tokenizer.json, with ignore_merges as llama.cpp sets it per pre-tokenizer), give the
  expected ids of `llama_tokenize(text, add_special=false, parse_special=false)`.
- Hugging Face `tokenizers` end to end (LLaMA-3 pre-tokenizer, special tokens parsed), for the
  LLaMA-3 split only. Where HF and llama.cpp split differently, llama.cpp wins: such lines are
  flagged `hf_split_differs` and the test skips the HF comparison for them.

Each line: {"text", "split_default", "split_llama3", "ids_default", "ids_llama3",
"hf_llama3" (HF, specials parsed), "hf_llama3_plain" (HF, specials as text), "hf_split_differs"}.

Usage (from the repository root; needs g++ and `pip install tokenizers==0.22.1`):
    python3 scripts/tokenizer/gen_fixtures.py [path/to/llama.cpp]
"""

import glob
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer, models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE_DIR = os.path.join(ROOT, "fixtures", "tokenizer", "llama3")
SEED = 20240607
N_RANDOM = 3000

SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_17|>",
    "<|reserved_special_token_250|>",
]

FIXED = [
    # empty and whitespace
    "", " ", "  ", "\n", "\t", "\r\n", "\r", "a", "Hello world", "Hello, world!",
    " leading space", "trailing space ", "trailing spaces   ", "multiple   spaces   inside",
    "tabs\tand\ttabs", "\t\t\tindent", "new\nline", "two\n\nnewlines", "mixed \t\n \r\n whitespace",
    "  \n  ", "line1\r\nline2\r\n", "\n\n\n", "ends with newline\n", " \n", "\n ", "a \n b",
    "x   y", "x \t y", "nbsp\u00a0here", "ideographic\u3000space", "thin\u2009space",
    "nel\u0085line", "ls\u2028ps\u2029", "zwsp\u200bword", "bom\ufeffword", " " * 20, "\t" * 7,
    "word" + " " * 9 + "\n" + " " * 4 + "indented",
    # digits
    "1", "12", "123", "1234", "12345", "123456", "1234567", "12345678", "123456789", "1234567890",
    " 1", " 12", " 1234", "a1b22c333d4444", "3.14159", "1,000,000", "2024-06-07", "v1.2.3",
    "0x1F", "\u0661\u0662\u0663\u0664\u0665", "\u0967\u0968\u0969", "\u2460\u2461\u2462",
    "\u00bd", "\u216b", "\uff11\uff12\uff13\uff14", "7\u00b2", "1\u0662345",
    # contractions
    "I'm", "you're", "they've", "he'll", "she'd", "it's", "don't", "I'M", "YOU'RE", "THEY'VE",
    "HE'LL", "SHE'D", "IT'S", "DON'T", "'s", "'S", "''", "'", "rock 'n' roll", "O'Neil's",
    "y'all'd've", "We'Re", "'ll'll", "can't't", "it\u2019s",
    # scripts
    "\u0421\u044a\u0435\u0448\u044c \u0436\u0435 \u0435\u0449\u0451 \u044d\u0442\u0438\u0445 "
    "\u043c\u044f\u0433\u043a\u0438\u0445 \u0444\u0440\u0430\u043d\u0446\u0443\u0437\u0441\u043a"
    "\u0438\u0445 \u0431\u0443\u043b\u043e\u043a",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
    "\u4e2d\u6587\u6d4b\u8bd5\uff1a\u4f60\u597d\uff0c\u4e16\u754c\u3002",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u30ab\u30bf\u30ab\u30ca",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u03b3\u03c1\u03ac\u03bc\u03bc\u03b1\u03c4\u03b1",
    "\u05e2\u05d1\u05e8\u05d9\u05ea", "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u",
    "\u00c7a va? D\u00e9j\u00e0 vu, na\u00efve caf\u00e9", "Stra\u00dfe Gr\u00f6\u00dfe",
    "e\u0301 combining", "\ufb01 ligature", "\U00020000\U0002a6d6 astral CJK",
    # emoji
    "\U0001f600", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f3f3\ufe0f\u200d\U0001f308", "\U0001f1eb\U0001f1f7\U0001f1ef\U0001f1f5", "I \u2764\ufe0f NY",
    "emoji\U0001f600in\U0001f600text", "\U0001f9d1\U0001f3ff\u200d\U0001f4bb coding",
    # code
    "def f(x):\n    return x**2\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "fn main() {\n\tprintln!(\"hi\");\n}", "<div class=\"a\">&amp;</div>",
    "SELECT * FROM t WHERE id = 42;", "x=>x*2", "#include <stdio.h>", "$HOME/.config",
    "a->b != c && d || !e", "`code`", "```python\nprint(1)\n```",
    "http://example.com/path?q=1&r=2#frag", "user@example.com", "    if (x) {\n        y();\n    }\n",
    # punctuation
    "...", "!!!", "?!?!", "\u2014", "\u00abquoted\u00bb", "\u201csmart quotes\u201d", "(parens)",
    "[brackets]", "{braces}", "a_b_c", "snake_case_name", "CamelCaseName", "#hashtag", "@mention",
    "100%", "$100", "\u20ac50", "\u00a3", "^_^", "~tilde~", "|pipe|", "<=>", "+-*/", "\\backslash\\",
    "a`b`c", "...\n\nok", " ?", "Hello , world !",
    # special tokens in text
    "<|begin_of_text|>", "<|begin_of_text|>Hello", "Hello<|end_of_text|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", "<|eot_id|><|eot_id|>",
    "text <|reserved_special_token_0|> more", "<|eot_id", "<|unknown_special|>",
    "<|begin_of_text|><|begin_of_text|>", " <|eot_id|> ", "<|reserved_special_token_250|>",
    "<|reserved_special_token_2|><|reserved_special_token_25|>",
    # long
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation.",
    "a" * 50, "9" * 50, "ab" * 40, "\u4e2d" * 30,
]

EMOJI = [
    "\U0001f600", "\U0001f602", "\U0001f914", "\U0001f44d", "\U0001f44d\U0001f3fb", "\U0001f44d\U0001f3ff",
    "\U0001f468\u200d\U0001f4bb", "\U0001f469\u200d\U0001f52c", "\U0001f3f3\ufe0f\u200d\U0001f308",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\u2764\ufe0f", "\u2728", "\U0001f680", "\U0001f1fa\U0001f1f8",
    "\U0001f9d1\u200d\U0001f91d\u200d\U0001f9d1", "\u263a", "\U0001f431", "\U0001f525",
]
WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", "\u00a0", "\u3000", " \n", "\t\n", "\n ", "\r"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
CODE = ["{", "}", "();", "=>", "->", "::", "==", "!=", "&&", "||", "/*", "*/", "//", "#!", "<<", ">>=",
        "x[i]", "f(x)", "a.b", "i++", "0x7f", "1e-5", "self.", "__init__", "\"str\"", "'c'"]
SCRIPTS = {
    "latin": [(0x61, 0x7A), (0x41, 0x5A)],
    "accented": [(0xC0, 0xFF), (0x100, 0x17F)],
    "cyrillic": [(0x410, 0x44F)],
    "greek": [(0x3B1, 0x3C9), (0x391, 0x3A9)],
    "cjk": [(0x4E00, 0x9FFF)],
    "kana": [(0x3041, 0x3096), (0x30A1, 0x30FA)],
    "hangul": [(0xAC00, 0xD7A3)],
    "arabic": [(0x621, 0x64A), (0x64B, 0x652)],
    "devanagari": [(0x905, 0x939), (0x93E, 0x94D)],
    "thai": [(0xE01, 0xE3A), (0xE40, 0xE4E)],
    "hebrew": [(0x5D0, 0x5EA)],
}
MISC_RANGES = [
    (0x300, 0x36F),      # combining marks
    (0x2010, 0x2027),    # general punctuation
    (0x2200, 0x22FF),    # math operators
    (0x20A0, 0x20C0),    # currency
    (0x2460, 0x24FF),    # enclosed alphanumerics
    (0xFF01, 0xFF5E),    # fullwidth forms
    (0x1F300, 0x1F5FF),  # pictographs
    (0x20000, 0x2A6DF),  # CJK extension B
    (0x00A0, 0xFFFD),    # anywhere in the BMP
    (0x2EBF0, 0x2EE5D),  # CJK extension I (Unicode 15.1)
    (0x1CC00, 0x1CCF9),  # Unicode 16 symbols (unassigned in llama.cpp's table)
    (0x0378, 0x0379),    # unassigned
]


def rand_char(rng, ranges):
    while True:
        lo, hi = rng.choice(ranges)
        c = rng.randint(lo, hi)
        if not (0xD800 <= c <= 0xDFFF):
            return chr(c)


def random_piece(rng):
    kind = rng.choice(["word"] * 6 + ["space", "space", "digits", "contraction", "punct", "emoji",
                                      "code", "special", "misc", "misc"])
    if kind == "word":
        script = rng.choice(list(SCRIPTS))
        word = "".join(rand_char(rng, SCRIPTS[script]) for _ in range(rng.randint(1, 10)))
        return (" " if rng.random() < 0.5 else "") + word
    if kind == "space":
        return "".join(rng.choice(WHITESPACE) for _ in range(rng.randint(1, 3)))
    if kind == "digits":
        return (" " if rng.random() < 0.3 else "") + "".join(
            rng.choice("0123456789") for _ in range(rng.randint(1, 10)))
    if kind == "contraction":
        c = rng.choice(CONTRACTIONS)
        return "".join(ch.upper() if rng.random() < 0.5 else ch for ch in c)
    if kind == "punct":
        return "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 3)))
    if kind == "emoji":
        return rng.choice(EMOJI)
    if kind == "code":
        return rng.choice(CODE)
    if kind == "special":
        s = rng.choice(SPECIALS)
        return s if rng.random() < 0.8 else s[: rng.randint(1, len(s) - 1)]
    return "".join(rand_char(rng, MISC_RANGES) for _ in range(rng.randint(1, 4)))


def corpus():
    rng = random.Random(SEED)
    texts = list(FIXED)
    seen = set(texts)
    while len(texts) < len(FIXED) + N_RANDOM:
        t = "".join(random_piece(rng) for _ in range(rng.randint(1, 8)))
        if t not in seen:
            seen.add(t)
            texts.append(t)
    return texts


def llama_cpp_splits(llama_cpp, texts):
    src = os.path.join(llama_cpp, "src")
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "llama_cpp_split")
        subprocess.run(["g++", "-O1", "-std=c++17", "-I" + src,
                        os.path.join(ROOT, "scripts", "tokenizer", "llama_cpp_split.cpp"),
                        os.path.join(src, "unicode.cpp"), os.path.join(src, "unicode-data.cpp"),
                        "-o", exe], check=True)
        inp = "".join(t.encode("utf-8").hex() + "\n" for t in texts)
        out = subprocess.run([exe], input=inp, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == 2 * len(texts)
    result = []
    for i in range(len(texts)):
        pair = {}
        for line in lines[2 * i: 2 * i + 2]:
            name, _, words = line.partition(" ")
            pair[name] = [bytes.fromhex(w).decode("utf-8") for w in words.split(",")] if words else []
        result.append(pair)
    return result


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def main():
    llama_cpp = sys.argv[1] if len(sys.argv) > 1 else sorted(glob.glob(os.path.expanduser(
        "~/.cargo/registry/src/index.crates.io-*/llama-cpp-sys-2-0.1.161/llama.cpp")))[-1]
    raw = gzip.open(os.path.join(FIXTURE_DIR, "tokenizer.json.gz")).read().decode("utf-8")
    hf = Tokenizer.from_str(raw)
    hf_plain = Tokenizer.from_str(raw)
    hf_plain.encode_special_tokens = True
    j = json.loads(raw)
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in j["model"]["merges"]]
    bpe_merging = models.BPE(vocab=j["model"]["vocab"], merges=merges, ignore_merges=False)
    bpe_ignore = hf.model
    assert bpe_ignore.ignore_merges
    byte_map = bytes_to_unicode()

    def bpe_ids(model, words):
        ids = []
        for w in words:
            encoded = "".join(byte_map[b] for b in w.encode("utf-8"))
            ids.extend(t.id for t in model.tokenize(encoded))
        return ids

    texts = corpus()
    splits = llama_cpp_splits(llama_cpp, texts)
    n_diff = 0
    out_path = os.path.join(FIXTURE_DIR, "expected_ids.jsonl.gz")
    lines = []
    for text, sp in zip(texts, splits):
        assert "".join(sp["default"]) == text and "".join(sp["llama3"]) == text
        ids_llama3 = bpe_ids(bpe_ignore, sp["llama3"])
        hf_plain_ids = hf_plain.encode(text, add_special_tokens=False).ids
        differs = hf_plain_ids != ids_llama3
        if differs:
            n_diff += 1
            print("HF and llama.cpp differ:", json.dumps(text), file=sys.stderr)
        lines.append(json.dumps({
            "text": text,
            "split_default": sp["default"],
            "split_llama3": sp["llama3"],
            "ids_default": bpe_ids(bpe_merging, sp["default"]),
            "ids_llama3": ids_llama3,
            "hf_llama3": hf.encode(text, add_special_tokens=False).ids,
            "hf_llama3_plain": hf_plain_ids,
            "hf_split_differs": differs,
        }, ensure_ascii=False))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    with open(out_path, "wb") as f:
        # mtime=0 and no file name: the same corpus gives the same bytes
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as gz:
            gz.write(data)
    print(f"wrote {len(lines)} lines to {out_path}; HF differs from llama.cpp on {n_diff}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
