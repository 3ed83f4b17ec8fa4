//! Decoding helpers: llama.cpp's `token_to_piece` cases for a BPE vocabulary, `llama_decode_text`,
//! `token_to_byte` and the `clean_spaces` passes of `detokenize`.

use super::unicode;
use super::TokenAttr;

/// How `token_to_piece` renders a token of given attributes (special = true).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PieceKind {
    Verbatim,
    Decoded,
    Byte,
    Nothing,
}

pub(super) fn piece_kind(attr: TokenAttr) -> PieceKind {
    let verbatim = TokenAttr::UNKNOWN
        .union(TokenAttr::CONTROL)
        .union(TokenAttr::USER_DEFINED);
    if attr.intersects(verbatim) {
        PieceKind::Verbatim
    } else if attr.intersects(TokenAttr::NORMAL) {
        PieceKind::Decoded
    } else if attr.intersects(TokenAttr::BYTE) {
        PieceKind::Byte
    } else {
        PieceKind::Nothing
    }
}

/// `llama_decode_text`: each character of a byte-level token text back to its byte; a character
/// outside GPT-2's map becomes `[UNK_BYTE_0x<its utf-8 in hex><the whole token text>]`.
pub(super) fn decode_text(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match unicode::char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut utf8 = [0u8; 4];
                for b in c.encode_utf8(&mut utf8).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
}

/// `token_to_byte` for a BPE vocabulary: `strtol(text.substr(3, 2), NULL, 16)` cast to a byte.
/// The caller guarantees at least 3 bytes of text.
pub(super) fn token_to_byte(text: &str) -> u8 {
    let digits = &text.as_bytes()[3..text.len().min(5)];
    // strtol: leading C-locale whitespace, an optional sign, an optional 0x that is followed
    // by a hex digit, then hex digits until the first other byte.
    let mut i = 0;
    while i < digits.len() && unicode::c_isspace(digits[i]) {
        i += 1;
    }
    let mut negative = false;
    if i < digits.len() && (digits[i] == b'+' || digits[i] == b'-') {
        negative = digits[i] == b'-';
        i += 1;
    }
    if i + 2 < digits.len()
        && digits[i] == b'0'
        && (digits[i + 1] | 0x20) == b'x'
        && digits[i + 2].is_ascii_hexdigit()
    {
        i += 2;
    }
    let mut value: i64 = 0;
    while i < digits.len() {
        let Some(d) = (digits[i] as char).to_digit(16) else {
            break;
        };
        value = value * 16 + d as i64;
        i += 1;
    }
    if negative {
        value = -value;
    }
    value as u8
}

/// The three `clean_spaces` passes of `llama_vocab::impl::detokenize`, in place, ported index
/// for index.
pub(super) fn clean_spaces(text: &mut Vec<u8>) {
    // first pass: " ?", " !", " .", " ,"
    let total1 = text.len();
    let mut total = usize::from(total1 > 0);
    for i in 1..total1 {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    // second pass: a single apostrophe between spaces
    let total2 = total;
    total = usize::from(total2 > 0);
    let mut i = 1;
    while i < total2 {
        let x = text[i];
        if x == b'\'' && i + 1 < total2 && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    // third pass: contractions " 's", " 'm", " 're", " 've" (" 't", " 'd", " 'll" are kept)
    let total3 = total;
    total = usize::from(total3 > 0);
    for i in 1..total3 {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < total3 {
            let x1 = text[i + 1];
            if x1 == b't' || x1 == b'd' {
                // kept
            } else if x1 == b's' || x1 == b'm' {
                total -= 1;
            } else if i + 2 < total3 {
                let x2 = text[i + 2];
                if matches!((x1, x2), (b'r', b'e') | (b'v', b'e')) {
                    total -= 1;
                }
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_to_byte_mirrors_strtol() {
        assert_eq!(token_to_byte("<0x0A>"), 0x0A);
        assert_eq!(token_to_byte("<0xff>"), 0xFF);
        assert_eq!(token_to_byte("<0x"), 0);
        assert_eq!(token_to_byte("<0xA"), 0x0A);
        assert_eq!(token_to_byte("<0xZ1>"), 0);
        assert_eq!(token_to_byte("<0x-5>"), 0xFB); // (char)-5
        assert_eq!(token_to_byte("<0x 7>"), 7);
        assert_eq!(token_to_byte("<0x0x>"), 0);
    }

    #[test]
    fn clean_spaces_passes() {
        let clean = |s: &str| {
            let mut v = s.as_bytes().to_vec();
            clean_spaces(&mut v);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(clean("Hello , world !"), "Hello, world!");
        assert_eq!(clean("a ' b"), "a'b");
        assert_eq!(clean("it 's I 'm we 're you 've"), "it's I'm we're you've");
        assert_eq!(clean("don 't I 'd we 'll"), "don 't I 'd we 'll");
        assert_eq!(clean(""), "");
        assert_eq!(clean(" ."), ".");
    }

    #[test]
    fn decode_text_marks_unknown_characters() {
        let mut out = Vec::new();
        decode_text("Ġa€", &mut out);
        let mut want = b" a[UNK_BYTE_0xe282ac".to_vec();
        want.extend_from_slice("Ġa€]".as_bytes());
        assert_eq!(out, want);
    }
}
