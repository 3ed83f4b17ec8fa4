//! What a comparison or an oracle run evaluates: prompt texts (each side tokenizes them) or
//! token ids given on the command line.

use std::path::Path;

use xval_cpp_sys::TokenId;

use crate::error::Error;

/// The prompt compared when none is given.
pub const DEFAULT_PROMPT: &str = "The quick brown fox jumps over the lazy dog.";

/// Parse `1,2,3` or `1 2 3` (`--tokens`).
pub fn parse_token_ids(s: &str) -> Result<Vec<TokenId>, Error> {
    let ids: Vec<TokenId> = s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<TokenId>()
                .map_err(|_| Error::Invalid(format!("--tokens: '{p}' is not a token id")))
        })
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err(Error::Invalid("--tokens: no token ids given".into()));
    }
    Ok(ids)
}

/// The prompts of a `--prompts` file: one per line, empty lines skipped; none is an error.
pub fn read_prompts(path: &Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Invalid(format!("--prompts {}: {e}", path.display())))?;
    let v: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    if v.is_empty() {
        return Err(Error::Invalid(format!(
            "--prompts {}: no prompts",
            path.display()
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_parse() {
        assert_eq!(parse_token_ids("1,2, 3").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_token_ids(" 7 8 ").unwrap(), vec![7, 8]);
        assert!(parse_token_ids("1,x")
            .unwrap_err()
            .to_string()
            .contains("'x'"));
        assert!(parse_token_ids(" , ").is_err());
        assert!(parse_token_ids("-1").is_err());
    }

    #[test]
    fn prompt_files_skip_empty_lines_and_refuse_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.txt");
        std::fs::write(&p, "a b\n\n  \nc\n").unwrap();
        assert_eq!(read_prompts(&p).unwrap(), ["a b", "c"]);
        std::fs::write(&p, "\n \n").unwrap();
        assert!(read_prompts(&p)
            .unwrap_err()
            .to_string()
            .contains("no prompts"));
        assert!(read_prompts(&dir.path().join("none")).is_err());
    }
}
