//! BPE merging of one pre-tokenized, byte-encoded word: llama.cpp's `llm_tokenizer_bpe_session`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Merge ranks keyed by the two sides' texts, without allocating a key per lookup: every
/// distinct side of a merge rule is interned once, and ranks are keyed by the pair of intern ids.
#[derive(Clone, Default)]
pub(crate) struct MergeRanks {
    sides: HashMap<Box<str>, u32>,
    ranks: HashMap<(u32, u32), u32>,
    n_rules: usize,
}

impl MergeRanks {
    /// Build from GGUF merge rules (`tokenizer.ggml.merges`), ranked by position.
    ///
    /// Mirrors `llama_vocab::impl::load`: a rule is cut at its first space at byte index 1 or
    /// later (so a side may begin with a space); a rule without one becomes the pair ("", ""),
    /// which never matches; of two identical pairs the first rank wins (`std::map::emplace`).
    pub(crate) fn new<S: AsRef<str>>(rules: &[S]) -> MergeRanks {
        let mut m = MergeRanks {
            sides: HashMap::with_capacity(rules.len()),
            ranks: HashMap::with_capacity(rules.len()),
            n_rules: rules.len(),
        };
        for (rank, rule) in rules.iter().enumerate() {
            let rule = rule.as_ref();
            // `word.find(' ', 1)` on bytes; a space byte is always a char boundary.
            let cut = rule.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1);
            let (first, second) = match cut {
                Some(p) => (&rule[..p], &rule[p + 1..]),
                None => ("", ""),
            };
            let a = m.intern(first);
            let b = m.intern(second);
            m.ranks.entry((a, b)).or_insert(rank as u32);
        }
        m
    }

    fn intern(&mut self, s: &str) -> u32 {
        let next = self.sides.len() as u32;
        if let Some(&id) = self.sides.get(s) {
            return id;
        }
        self.sides.insert(s.into(), next);
        next
    }

    /// `find_bpe_rank(left, right)`.
    pub(crate) fn rank(&self, left: &str, right: &str) -> Option<u32> {
        let a = *self.sides.get(left)?;
        let b = *self.sides.get(right)?;
        self.ranks.get(&(a, b)).copied()
    }

    /// Number of rules read (duplicates included), as `tokenizer.ggml.merges` holds them.
    pub(crate) fn n_rules(&self) -> usize {
        self.n_rules
    }
}

/// `llm_symbol`: a piece of the word; `n == 0` once merged into its left neighbour.
#[derive(Clone, Copy, Debug)]
struct Symbol {
    prev: i32,
    next: i32,
    start: usize,
    n: usize,
}

/// `llm_bigram_bpe`, ordered so that the heap's top is the lowest rank, then the leftmost
/// symbol (llama.cpp's comparator). The two sides' lengths stand for the bigram's text: a
/// symbol's start never moves and its length only grows, so the pair is stale exactly when
/// llama.cpp's `left_token + right_token != bigram.text` check says so.
type Bigram = Reverse<(u32, i32, i32, usize, usize)>;

/// Merge `word` (already in GPT-2 byte-level form) into pieces by rank and return the pieces as
/// byte ranges of `word`, in order. `whole_word` short-circuits like `ignore_merges`: the word
/// is one piece.
pub(crate) fn merge_word(
    word: &str,
    ranks: &MergeRanks,
    whole_word: bool,
) -> Vec<std::ops::Range<usize>> {
    if whole_word {
        return std::iter::once(0..word.len()).collect();
    }
    // One symbol per UTF-8 character of the encoded word (`unicode_len_utf8`).
    let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
    let n_chars = word.chars().count();
    for (index, (start, c)) in word.char_indices().enumerate() {
        let index = index as i32;
        symbols.push(Symbol {
            prev: index - 1,
            next: if index as usize + 1 == n_chars {
                -1
            } else {
                index + 1
            },
            start,
            n: c.len_utf8(),
        });
    }

    let text = |s: &Symbol| &word[s.start..s.start + s.n];
    let mut queue: BinaryHeap<Bigram> = BinaryHeap::new();
    let add_bigram = |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: i32, right: i32| {
        if left == -1 || right == -1 {
            return;
        }
        let (l, r) = (&symbols[left as usize], &symbols[right as usize]);
        if let Some(rank) = ranks.rank(text(l), text(r)) {
            queue.push(Reverse((rank, left, right, l.n, r.n)));
        }
    };
    for i in 1..symbols.len() as i32 {
        add_bigram(&mut queue, &symbols, i - 1, i);
    }

    while let Some(Reverse((_, left, right, left_n, right_n))) = queue.pop() {
        let (l, r) = (symbols[left as usize], symbols[right as usize]);
        if l.n == 0 || r.n == 0 || l.n != left_n || r.n != right_n {
            continue; // outdated bigram
        }
        // merge the right symbol into the left one and unlink it
        symbols[left as usize].n += r.n;
        symbols[right as usize].n = 0;
        symbols[left as usize].next = r.next;
        if r.next >= 0 {
            symbols[r.next as usize].prev = left;
        }
        let (prev, next) = (symbols[left as usize].prev, symbols[left as usize].next);
        add_bigram(&mut queue, &symbols, prev, left);
        add_bigram(&mut queue, &symbols, left, next);
    }

    symbols
        .iter()
        .filter(|s| s.n > 0)
        .map(|s| s.start..s.start + s.n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces<'a>(word: &'a str, ranks: &MergeRanks) -> Vec<&'a str> {
        merge_word(word, ranks, false)
            .into_iter()
            .map(|r| &word[r])
            .collect()
    }

    #[test]
    fn merges_by_rank_then_leftmost() {
        let ranks = MergeRanks::new(&["b c", "a b", "a bc", "x x"]);
        assert_eq!(pieces("abc", &ranks), ["abc"]); // "b c" first, then "a bc"
        assert_eq!(pieces("abd", &ranks), ["ab", "d"]);
        // equal ranks: the leftmost pair merges first, so four x's become two pairs
        assert_eq!(pieces("xxxx", &ranks), ["xx", "xx"]);
        assert_eq!(pieces("xxx", &ranks), ["xx", "x"]);
        assert_eq!(pieces("", &ranks), Vec::<&str>::new());
    }

    #[test]
    fn rule_parsing_mirrors_llama_cpp() {
        // The cut is the first space at index >= 1: a leading space belongs to the first side.
        let ranks = MergeRanks::new(&[" a b", "nospace", "c d e", "c d", "é f"]);
        assert_eq!(ranks.rank("é", "f"), Some(4));
        assert_eq!(ranks.rank(" a", "b"), Some(0));
        assert_eq!(ranks.rank("c", "d e"), Some(2));
        assert_eq!(ranks.rank("c", "d"), Some(3));
        assert_eq!(ranks.rank("", ""), Some(1));
        assert_eq!(ranks.rank("nospace", ""), None);
        // first occurrence wins
        let ranks = MergeRanks::new(&["a b", "a b"]);
        assert_eq!(ranks.rank("a", "b"), Some(0));
        assert_eq!(ranks.n_rules(), 2);
    }
}
