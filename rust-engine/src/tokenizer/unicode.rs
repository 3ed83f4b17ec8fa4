//! Code point classification and the GPT-2 byte-to-unicode map, as llama.cpp's `src/unicode.cpp`
//! defines them.
//!
//! Categories come from [`unicode_data`](super::unicode_data), a generated copy of llama.cpp's own
//! table (Unicode 15.1 data: CJK Extension I is classified, Unicode 16 additions are not), so a
//! split decision never depends on the Unicode version of a Rust crate or of the host.

use super::unicode_data::{LOWERCASE, RANGES_FLAGS, WHITESPACE};

/// `unicode_cpt_flags`: the category bits (exactly one of them for every code point below
/// `MAX_CODEPOINTS`) plus the whitespace helper bit. Only what the BPE splitters read is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct CptFlags(u16);

impl CptFlags {
    pub const UNDEFINED: u16 = 0x0001;
    pub const NUMBER: u16 = 0x0002;
    pub const LETTER: u16 = 0x0004;
    pub const ACCENT_MARK: u16 = 0x0010;
    pub const PUNCTUATION: u16 = 0x0020;
    pub const SYMBOL: u16 = 0x0040;
    pub const MASK_CATEGORIES: u16 = 0x00FF;
    pub const WHITESPACE: u16 = 0x0100;

    /// The flags of a position outside the current fragment: llama.cpp's splitters return a
    /// default-constructed `unicode_cpt_flags{}` there, whose every bit is clear.
    pub const OUT_OF_RANGE: CptFlags = CptFlags(0);

    pub fn as_uint(self) -> u16 {
        self.0
    }
    pub fn category_flag(self) -> u16 {
        self.0 & Self::MASK_CATEGORIES
    }
    pub fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    pub fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    pub fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
}

/// llama.cpp's `MAX_CODEPOINTS`.
const MAX_CODEPOINTS: u32 = 0x11_0000;

/// `unicode_cpt_flags_from_cpt`: category of the range holding `cpt`, plus the whitespace bit.
/// Code points past `MAX_CODEPOINTS` are UNDEFINED, as in llama.cpp.
pub(crate) fn cpt_flags(cpt: u32) -> CptFlags {
    if cpt >= MAX_CODEPOINTS {
        return CptFlags(CptFlags::UNDEFINED);
    }
    // The table starts at 0 and ends with the MAX_CODEPOINTS sentinel, so for cpt below it the
    // partition point is in 1..len and the range that holds cpt is the one before it.
    let idx = RANGES_FLAGS.partition_point(|&(start, _)| start <= cpt) - 1;
    let mut flags = RANGES_FLAGS[idx].1;
    if WHITESPACE.binary_search(&cpt).is_ok() {
        flags |= CptFlags::WHITESPACE;
    }
    CptFlags(flags)
}

/// `unicode_tolower`: the lowercase map's value for `cpt`, or `cpt` itself.
pub(crate) fn tolower(cpt: u32) -> u32 {
    match LOWERCASE.binary_search_by_key(&cpt, |&(from, _)| from) {
        Ok(i) => LOWERCASE[i].1,
        Err(_) => cpt,
    }
}

/// Whether a byte keeps its own code point in GPT-2's `bytes_to_unicode`
/// (`unicode_byte_to_utf8_map`: '!'..='~', '¡'..='¬', '®'..='ÿ').
const fn byte_is_printable(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// GPT-2's `bytes_to_unicode` (llama.cpp `unicode_byte_to_utf8_map`): printable bytes map to
/// themselves, the other 68 to U+0100.. in byte order.
const BYTE_TO_CPT: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        if byte_is_printable(b as u8) {
            table[b] = b as u32;
        } else {
            table[b] = 256 + n;
            n += 1;
        }
        b += 1;
    }
    table
};

/// The inverse of [`BYTE_TO_CPT`] for the 68 shifted bytes: `SHIFTED_TO_BYTE[cpt - 256]`.
const SHIFTED_TO_BYTE: [u8; 68] = {
    let mut table = [0u8; 68];
    let mut b = 0usize;
    while b < 256 {
        if !byte_is_printable(b as u8) {
            table[(BYTE_TO_CPT[b] - 256) as usize] = b as u8;
        }
        b += 1;
    }
    table
};

/// `unicode_byte_to_utf8` as a `char`.
pub(crate) fn byte_to_char(b: u8) -> char {
    // Every value in the table is below U+0144, a valid scalar value.
    char::from_u32(BYTE_TO_CPT[b as usize]).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// `unicode_utf8_to_byte` for one code point: `None` where llama.cpp's map has no entry (it
/// throws `std::out_of_range`, which `llama_decode_text` turns into an `[UNK_BYTE_...]` marker).
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cpt = c as u32;
    if cpt < 256 {
        let b = cpt as u8;
        return byte_is_printable(b).then_some(b);
    }
    SHIFTED_TO_BYTE.get((cpt - 256) as usize).copied()
}

/// C's `isspace` in the "C" locale, which llama.cpp's special-token lstrip/rstrip use.
pub(crate) fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_gpt2_bytes_to_unicode() {
        assert_eq!(byte_to_char(b'!'), '!');
        assert_eq!(byte_to_char(b' '), 'Ġ'); // U+0120: the 33rd shifted byte
        assert_eq!(byte_to_char(b'\n'), 'Ċ'); // U+010A
        assert_eq!(byte_to_char(0x00), '\u{100}');
        assert_eq!(byte_to_char(0xAD), '\u{143}'); // the soft hyphen is the last shifted byte
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b), "byte {b:#04x}");
        }
        assert_eq!(char_to_byte(' '), None);
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(char_to_byte('€'), None);
    }

    #[test]
    fn flags_follow_llama_cpp_table() {
        assert_eq!(cpt_flags('a' as u32).category_flag(), CptFlags::LETTER);
        assert_eq!(cpt_flags('7' as u32).category_flag(), CptFlags::NUMBER);
        assert_eq!(cpt_flags('`' as u32).category_flag(), CptFlags::SYMBOL);
        assert_eq!(cpt_flags('_' as u32).category_flag(), CptFlags::PUNCTUATION);
        assert!(cpt_flags(' ' as u32).is_whitespace());
        assert_eq!(cpt_flags(' ' as u32).category_flag(), 0x0008); // separator
        assert!(cpt_flags(0x3000).is_whitespace());
        assert!(cpt_flags(0x85).is_whitespace());
        assert!(!cpt_flags(0x200B).is_whitespace()); // zero width space is Cf, not \s
        assert_eq!(cpt_flags(0x200D).category_flag(), 0x0080); // ZWJ: control (Cf)
        assert_eq!(cpt_flags(0x0301).category_flag(), CptFlags::ACCENT_MARK);
        assert_eq!(cpt_flags(0x4E2D).category_flag(), CptFlags::LETTER); // 中
        assert_eq!(cpt_flags(0x1F600).category_flag(), CptFlags::SYMBOL); // 😀
        assert_eq!(cpt_flags(0x0378).category_flag(), CptFlags::UNDEFINED); // unassigned
        assert_eq!(cpt_flags(0x10FFFF).category_flag(), CptFlags::UNDEFINED);
        assert_eq!(cpt_flags(0x110000).as_uint(), CptFlags::UNDEFINED);
        assert_eq!(cpt_flags(0x2EBF0).category_flag(), CptFlags::LETTER); // Unicode 15.1
        assert_eq!(cpt_flags(0x1CC00).category_flag(), CptFlags::UNDEFINED); // Unicode 16
    }

    #[test]
    fn tolower_uses_the_table() {
        assert_eq!(tolower('S' as u32), 's' as u32);
        assert_eq!(tolower('s' as u32), 's' as u32);
        assert_eq!(tolower(0x0130), 0x0069); // İ -> i
        assert_eq!(tolower(0x212A), 'k' as u32); // Kelvin sign
        assert_eq!(tolower('1' as u32), '1' as u32);
    }
}
