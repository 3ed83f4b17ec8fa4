//! Pre-tokenizers: llama.cpp's `unicode_regex_split` for the two expression lists a GPT-2-style
//! vocabulary can ask for here.
//!
//! llama.cpp applies a list of regular expressions in turn; each one cuts every current piece
//! into its matches and the text between them (a match never crosses a piece boundary). Offsets
//! are piece lengths in code points, exactly as in `src/unicode.cpp`.
//!
//! - [`PreTokenizer::Llama3`] (`llm_tokenizer_bpe`, `LLAMA_VOCAB_PRE_TYPE_LLAMA3`): one
//!   expression, handled by the hand-written `unicode_regex_split_custom_llama3`, ported here
//!   line by line.
//! - [`PreTokenizer::Default`] (the `default:` case, also used when `tokenizer.ggml.pre` is
//!   absent): four expressions. The second has a hand-written splitter
//!   (`unicode_regex_split_custom_gpt2`, ported). The other three go through `std::regex` in
//!   llama.cpp, over a "collapsed" text in which every non-ASCII code point is replaced by one byte
//!   standing for its category; they are simple enough (`[set]+` and `[0-9][0-9][0-9]`) that the
//!   leftmost-longest scans below give the same matches, byte class for byte class.

use super::unicode::{cpt_flags, tolower, CptFlags};

/// Which expression list splits the text before BPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// llama.cpp's `default` list: `[\p{P}\$\+<=>\^~\|]+`, the GPT-2 expression, `\p{N}+`,
    /// `[0-9][0-9][0-9]`. Used when a GGUF has no `tokenizer.ggml.pre`.
    Default,
    /// The LLaMA-3 expression
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    Llama3,
}

/// Split `text` into words, returned as byte ranges of `text` in order; together they cover the
/// whole text. `unicode_regex_split(text, regex_exprs, byte_encode = false)` followed by
/// converting the code-point offsets back to bytes.
pub(crate) fn split_words(text: &str, pre: PreTokenizer) -> Vec<std::ops::Range<usize>> {
    let cpts: Vec<u32> = text.chars().map(|c| c as u32).collect();
    let mut offsets = vec![cpts.len()];
    match pre {
        PreTokenizer::Llama3 => {
            offsets = split_custom_llama3(&cpts, &offsets);
        }
        PreTokenizer::Default => {
            // The collapsed text is only read by the std::regex expressions.
            let collapsed: Vec<u8> = cpts.iter().map(|&c| collapse(c)).collect();
            // "[\\p{P}\\$\\+<=>\\^~\\|]+"
            offsets = split_runs(&collapsed, &offsets, default_punct_class);
            // "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
            offsets = split_custom_gpt2(&cpts, &offsets);
            // "\\p{N}+"
            offsets = split_runs(&collapsed, &offsets, number_class);
            // "[0-9][0-9][0-9]": std::wregex over the code points (non-ASCII whitespace turned
            // into U+000B, which cannot be a digit either way).
            offsets = split_three_digits(&cpts, &offsets);
        }
    }
    let mut ranges = Vec::with_capacity(offsets.len());
    let mut byte_pos = 0usize;
    let mut chars = text.chars();
    for len in offsets {
        let start = byte_pos;
        for c in chars.by_ref().take(len) {
            byte_pos += c.len_utf8();
        }
        ranges.push(start..byte_pos);
    }
    ranges
}

/// The `bpe_offsets` list a splitter appends to, with llama.cpp's `_add_token` bookkeeping.
struct Pieces<'a> {
    out: &'a mut Vec<usize>,
    prev_end: usize,
}

impl Pieces<'_> {
    /// `_add_token(end)`: close the piece that started at the previous end; empty pieces are
    /// not recorded. Returns its length.
    fn add(&mut self, end: usize) -> usize {
        debug_assert!(self.prev_end <= end, "pieces must move forward");
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }
}

const OUT_OF_RANGE: u32 = 0xFFFF_FFFF;

/// The second and third letters of `'re`, `'ve`, `'ll`.
fn is_three_letter_tail(a: u32, b: u32) -> bool {
    let (r, v, l, e) = ('r' as u32, 'v' as u32, 'l' as u32, 'e' as u32);
    (a == r || a == v) && b == e || a == l && b == l
}

/// Accessors for one fragment `[ini, end)` of the code points, returning llama.cpp's
/// `OUT_OF_RANGE` / empty flags outside it.
struct Fragment<'a> {
    cpts: &'a [u32],
    ini: usize,
    end: usize,
}

impl Fragment<'_> {
    fn cpt(&self, pos: usize) -> u32 {
        if self.ini <= pos && pos < self.end {
            self.cpts[pos]
        } else {
            OUT_OF_RANGE
        }
    }
    fn flags(&self, pos: usize) -> CptFlags {
        if self.ini <= pos && pos < self.end {
            cpt_flags(self.cpts[pos])
        } else {
            CptFlags::OUT_OF_RANGE
        }
    }
}

/// Walk the pieces of `offsets`, calling `f(fragment, pieces)` for each one.
fn for_each_fragment(
    cpts: &[u32],
    offsets: &[usize],
    mut f: impl FnMut(&Fragment<'_>, &mut Pieces<'_>),
) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0usize;
    for &len in offsets {
        let frag = Fragment {
            cpts,
            ini: start,
            end: start + len,
        };
        start += len;
        let mut pieces = Pieces {
            out: &mut out,
            prev_end: frag.ini,
        };
        f(&frag, &mut pieces);
    }
    out
}

/// `unicode_regex_split_custom_gpt2`:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
fn split_custom_gpt2(cpts: &[u32], offsets: &[usize]) -> Vec<usize> {
    for_each_fragment(cpts, offsets, |fr, pieces| {
        let offset_end = fr.end;
        let mut pos = fr.ini;
        while pos < offset_end {
            let cpt = fr.cpt(pos);
            let flags = fr.flags(pos);

            // regex: 's|'t|'re|'ve|'m|'ll|'d
            if cpt == '\'' as u32 && pos + 1 < offset_end {
                let next = fr.cpt(pos + 1);
                if [b's', b't', b'm', b'd'].iter().any(|&c| next == c as u32) {
                    pos += pieces.add(pos + 2);
                    continue;
                }
                if pos + 2 < offset_end {
                    let next_next = fr.cpt(pos + 2);
                    if is_three_letter_tail(next, next_next) {
                        pos += pieces.add(pos + 3);
                        continue;
                    }
                }
            }

            let is_space = cpt == ' ' as u32;
            let mut flags2 = if is_space { fr.flags(pos + 1) } else { flags };
            // regex: <space>?\p{L}+
            if flags2.is_letter() {
                pos += is_space as usize;
                while flags2.is_letter() {
                    pos += 1;
                    flags2 = fr.flags(pos);
                }
                pieces.add(pos);
                continue;
            }
            // regex: <space>?\p{N}+
            if flags2.is_number() {
                pos += is_space as usize;
                while flags2.is_number() {
                    pos += 1;
                    flags2 = fr.flags(pos);
                }
                pieces.add(pos);
                continue;
            }
            // regex: <space>?[^\s\p{L}\p{N}]+
            let other = |f: CptFlags| {
                !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.as_uint() != 0
            };
            if other(flags2) {
                pos += is_space as usize;
                while other(flags2) {
                    pos += 1;
                    flags2 = fr.flags(pos);
                }
                pieces.add(pos);
                continue;
            }

            let mut num_whitespaces = 0usize;
            while fr.flags(pos + num_whitespaces).is_whitespace() {
                num_whitespaces += 1;
            }

            // regex: \s+(?!\S)
            if num_whitespaces > 1 && fr.cpt(pos + num_whitespaces) != OUT_OF_RANGE {
                pos += num_whitespaces - 1;
                pieces.add(pos);
                continue;
            }

            // regex: \s+
            if num_whitespaces > 0 {
                pos += num_whitespaces;
                pieces.add(pos);
                continue;
            }

            // no matches
            pos += 1;
            pieces.add(pos);
        }
    })
}

/// `unicode_regex_split_custom_llama3`:
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
fn split_custom_llama3(cpts: &[u32], offsets: &[usize]) -> Vec<usize> {
    let is_cr_or_lf = |c: u32| c == '\r' as u32 || c == '\n' as u32;
    for_each_fragment(cpts, offsets, |fr, pieces| {
        let offset_end = fr.end;
        let mut pos = fr.ini;
        while pos < offset_end {
            let cpt = fr.cpt(pos);
            let flags = fr.flags(pos);

            // regex: (?i:'s|'t|'re|'ve|'m|'ll|'d) // case insensitive
            if cpt == '\'' as u32 && pos + 1 < offset_end {
                let next = tolower(fr.cpt(pos + 1));
                if [b's', b't', b'm', b'd'].iter().any(|&c| next == c as u32) {
                    pos += pieces.add(pos + 2);
                    continue;
                }
                if pos + 2 < offset_end {
                    let next_next = tolower(fr.cpt(pos + 2));
                    if is_three_letter_tail(next, next_next) {
                        pos += pieces.add(pos + 3);
                        continue;
                    }
                }
            }

            // regex: [^\r\n\p{L}\p{N}]?\p{L}+
            if !(is_cr_or_lf(cpt) || flags.is_number())
                && (flags.is_letter() || fr.flags(pos + 1).is_letter())
            {
                // one or more letters
                pos += 1;
                while fr.flags(pos).is_letter() {
                    pos += 1;
                }
                pieces.add(pos);
                continue;
            }

            // regex: \p{N}{1,3}
            if flags.is_number() {
                let mut ini = pos;
                while fr.flags(pos).is_number() {
                    pos += 1;
                    if pos - ini >= 3 {
                        pieces.add(pos);
                        ini = pos;
                    }
                }
                pieces.add(pos);
                continue;
            }

            // regex: <space>?[^\s\p{L}\p{N}]+[\r\n]*
            let is_space = cpt == ' ' as u32;
            let mut flags2 = if is_space { fr.flags(pos + 1) } else { flags };
            let other = |f: CptFlags| !(f.is_whitespace() || f.is_letter() || f.is_number());
            // llama.cpp tests `flags` (the code point at pos) for being defined here, and
            // `flags2` inside the loop; kept as is.
            if other(flags2) && flags.as_uint() != 0 {
                pos += is_space as usize;
                while other(flags2) && flags2.as_uint() != 0 {
                    pos += 1;
                    flags2 = fr.flags(pos);
                }
                let mut cpt2 = fr.cpt(pos);
                while is_cr_or_lf(cpt2) {
                    pos += 1;
                    cpt2 = fr.cpt(pos);
                }
                pieces.add(pos);
                continue;
            }

            let mut num_whitespaces = 0usize;
            let mut last_end_r_or_n = 0usize;
            while fr.flags(pos + num_whitespaces).is_whitespace() {
                let cpt2 = fr.cpt(pos + num_whitespaces);
                if is_cr_or_lf(cpt2) {
                    last_end_r_or_n = pos + num_whitespaces + 1;
                }
                num_whitespaces += 1;
            }

            // regex: \s*[\r\n]+
            if last_end_r_or_n > 0 {
                pos = last_end_r_or_n;
                pieces.add(pos);
                continue;
            }

            // regex: \s+(?!\S)
            if num_whitespaces > 1 && fr.cpt(pos + num_whitespaces) != OUT_OF_RANGE {
                pos += num_whitespaces - 1;
                pieces.add(pos);
                continue;
            }

            // regex: \s+
            if num_whitespaces > 0 {
                pos += num_whitespaces;
                pieces.add(pos);
                continue;
            }

            // no matches
            pos += 1;
            pieces.add(pos);
        }
    })
}

/// `unicode_regex_split`'s collapsed form of one code point: ASCII stays itself, other
/// whitespace becomes U+000B, other code points become a byte per category
/// (0xD1 N, 0xD2 L, 0xD3 P, 0xD4 M, 0xD5 S, 0xD0 anything else).
fn collapse(cpt: u32) -> u8 {
    if cpt < 128 {
        return cpt as u8;
    }
    let flags = cpt_flags(cpt);
    if flags.is_whitespace() {
        return 0x0B;
    }
    match flags.category_flag() {
        CptFlags::NUMBER => 0xD1,
        CptFlags::LETTER => 0xD2,
        CptFlags::PUNCTUATION => 0xD3,
        CptFlags::ACCENT_MARK => 0xD4,
        CptFlags::SYMBOL => 0xD5,
        _ => 0xD0,
    }
}

/// The bracket expression llama.cpp builds from `[\p{P}\$\+<=>\^~\|]`: 0xD3 (non-ASCII
/// punctuation), its ASCII punctuation ranges `!-#%-*,-/:-;?-@[-]_{}`, and `$+<=>^~|`. That is
/// every printable ASCII non-alphanumeric except the backtick.
fn default_punct_class(b: u8) -> bool {
    b == 0xD3 || matches!(b, 0x21..=0x2F | 0x3A..=0x40 | 0x5B..=0x5F | 0x7B..=0x7E)
}

/// The bracket expression llama.cpp builds from `\p{N}`: 0xD1 and `0-9`.
fn number_class(b: u8) -> bool {
    b == 0xD1 || b.is_ascii_digit()
}

/// `unicode_regex_split_stl` for an expression `[class]+`: every maximal run of class members
/// is a match (a `+` over a single class is greedy and cannot match empty), and the text
/// between matches stays as pieces of its own.
fn split_runs(collapsed: &[u8], offsets: &[usize], class: fn(u8) -> bool) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0usize;
    for &len in offsets {
        let seg = &collapsed[start..start + len];
        let mut gap_start = 0usize;
        let mut i = 0usize;
        while i < seg.len() {
            if class(seg[i]) {
                let run_start = i;
                while i < seg.len() && class(seg[i]) {
                    i += 1;
                }
                if run_start > gap_start {
                    out.push(run_start - gap_start);
                }
                out.push(i - run_start);
                gap_start = i;
            } else {
                i += 1;
            }
        }
        if gap_start < seg.len() {
            out.push(seg.len() - gap_start);
        }
        start += len;
    }
    out
}

/// `unicode_regex_split_stl` for `[0-9][0-9][0-9]`: leftmost non-overlapping triples of ASCII
/// digits are matches, the rest stays as pieces.
fn split_three_digits(cpts: &[u32], offsets: &[usize]) -> Vec<usize> {
    let digit = |c: u32| ('0' as u32..='9' as u32).contains(&c);
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0usize;
    for &len in offsets {
        let seg = &cpts[start..start + len];
        let mut gap_start = 0usize;
        let mut i = 0usize;
        while i + 3 <= seg.len() {
            if digit(seg[i]) && digit(seg[i + 1]) && digit(seg[i + 2]) {
                if i > gap_start {
                    out.push(i - gap_start);
                }
                out.push(3);
                i += 3;
                gap_start = i;
            } else {
                i += 1;
            }
        }
        if gap_start < seg.len() {
            out.push(seg.len() - gap_start);
        }
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str, pre: PreTokenizer) -> Vec<&str> {
        split_words(text, pre)
            .into_iter()
            .map(|r| &text[r])
            .collect()
    }

    #[test]
    fn llama3_split_basics() {
        use PreTokenizer::Llama3;
        assert_eq!(
            words("Hello world, it's 12345!", Llama3),
            ["Hello", " world", ",", " it", "'s", " ", "123", "45", "!"]
        );
        assert_eq!(words("I'LL DON'T", Llama3), ["I", "'LL", " DON", "'T"]);
        assert_eq!(words("a  \n\n b", Llama3), ["a", "  \n\n", " b"]);
        assert_eq!(words("x   y", Llama3), ["x", "  ", " y"]);
        assert_eq!(words("end   ", Llama3), ["end", "   "]);
        assert_eq!(words("\tfoo", Llama3), ["\tfoo"]);
        assert_eq!(words("...\n\nok", Llama3), ["...\n\n", "ok"]);
        assert_eq!(words("", Llama3), Vec::<&str>::new());
        assert_eq!(words("中文字", Llama3), ["中文字"]);
    }

    #[test]
    fn default_split_basics() {
        use PreTokenizer::Default;
        // Punctuation runs are cut out first, so " world" keeps its space but "," stands alone.
        assert_eq!(
            words("Hello world, it's 1234567!", Default),
            ["Hello", " world", ",", " it", "'", "s", " ", "123", "456", "7", "!"]
        );
        // The backtick is not in the first class and joins the GPT-2 "other" run.
        assert_eq!(words("a`b", Default), ["a", "`", "b"]);
        assert_eq!(words(" 12", Default), [" ", "12"]);
        assert_eq!(words("x   y", Default), ["x", "  ", " y"]);
        assert_eq!(words("end   ", Default), ["end", "   "]);
    }

    #[test]
    fn run_and_triple_scanners() {
        let collapsed: Vec<u8> = "ab!!c?".bytes().collect();
        assert_eq!(
            split_runs(&collapsed, &[6], default_punct_class),
            [2, 2, 1, 1]
        );
        let cpts: Vec<u32> = "1234567".chars().map(|c| c as u32).collect();
        assert_eq!(split_three_digits(&cpts, &[7]), [3, 3, 1]);
        assert_eq!(split_three_digits(&cpts, &[2, 5]), [2, 3, 2]);
        let cpts: Vec<u32> = "12a3456".chars().map(|c| c as u32).collect();
        assert_eq!(split_three_digits(&cpts, &[7]), [3, 3, 1]);
    }
}
