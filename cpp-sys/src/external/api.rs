//! Which llama.cpp C API a tree's `llama.h` declares, read from the header text.
//!
//! llama.cpp changed its C API in steps: early 2025 moved the tokenizer calls from the model to
//! a `llama_vocab` (`llama_model_get_vocab`), renamed loading and context creation
//! (`llama_model_load_from_file`, `llama_init_from_model`), shortened `llama_batch_get_one` to
//! two arguments, later replaced `llama_kv_cache_clear` by `llama_kv_self_clear` and then by
//! `llama_memory_clear`, and turned `flash_attn` into `flash_attn_type`. bitnet.cpp's fork
//! (Eddie-Wang1120/llama.cpp, August 2024) predates all of it. Each of these is detected on its
//! own and becomes one `-D` macro for the shim, so that trees between the two ends work too.

/// What the header declares, as far as the shim cares.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Api {
    /// Tokenizer calls take a `llama_vocab` (`llama_model_get_vocab` exists).
    pub vocab: bool,
    /// `llama_model_load_from_file` / `llama_model_free` (else the `llama_load_model_from_file`
    /// / `llama_free_model` pair).
    pub model_load_new: bool,
    /// `llama_init_from_model` (else `llama_new_context_with_model`).
    pub init_from_model: bool,
    /// How the KV cache is cleared: 1 `llama_memory_clear`, 2 `llama_kv_self_clear`,
    /// 3 `llama_kv_cache_clear`.
    pub memory: u8,
    /// Context params carry `flash_attn_type` (else a bool `flash_attn`).
    pub flash_attn_type: bool,
    pub extra_bufts: bool,
    pub no_perf: bool,
    pub n_outputs_max: bool,
    pub vocab_n_tokens: bool,
    /// `llama_model_n_layer`, `_n_embd`, `_n_head`, `_n_head_kv`.
    pub model_getters: bool,
    pub detokenize: bool,
    /// `llama_token_to_piece` takes an `lstrip` argument.
    pub piece_lstrip: bool,
    pub llama_version: bool,
    /// Argument count of `llama_batch_get_one` (4 in the fork, 2 today); recorded only: the
    /// shim builds its batches with `llama_batch_init` to mark every position an output.
    pub batch_get_one_args: Option<usize>,
    /// From ggml.h: `ggml_version()` / `ggml_commit()`.
    pub ggml_version: bool,
    /// From ggml.h: `GGML_LOG_LEVEL_CONT`.
    pub log_cont: bool,
    /// From ggml.h: the tree knows `GGML_TYPE_I2_S` (bitnet.cpp), so I2_S models go in as given.
    pub i2s: bool,
    /// The shim gives the context one pool of compute threads (`llama_attach_threadpool`,
    /// `ggml_threadpool_new` from ggml-cpu.h). Without one ggml starts and joins a pool for
    /// every graph it computes, and with the tap callback a graph is computed a few nodes at a
    /// time (the built-in oracle's part of a 2B-4T comparison took 6.3-9.3 s, with a pool
    /// 2.2-2.3 s, as did a natively built tree through the shim with one). Only where the
    /// tree's pool keeps its graph count and thread count in one atomic
    /// (`GGML_THREADPOOL_N_THREADS_MASK` in ggml-cpu.c): the earlier pool (bitnet.cpp's fork
    /// among them, declared in ggml.h) read them apart, and a worker that saw a new graph with
    /// the previous graph's thread count could join a graph computed without it and spin in its
    /// barrier from then on (seen here: a core busy through the engine's runs in some
    /// bitnet.cpp comparisons), or throw later barriers off.
    pub threadpool: bool,
}

impl Api {
    /// Read the API from `llama.h`, `ggml.h`, and `ggml-cpu.h` and `ggml-cpu.c` (each empty
    /// where the tree has none); `Err` names what no known API explains.
    pub fn detect(
        llama_h: &str,
        ggml_h: &str,
        ggml_cpu_h: &str,
        ggml_cpu_c: &str,
    ) -> Result<Api, String> {
        let l = strip_comments_and_strings(llama_h);
        let g = strip_comments_and_strings(ggml_h);
        let gc = strip_comments_and_strings(ggml_cpu_h);
        let has = |name: &str| declares(&l, name);
        let ctx_params = struct_body(&l, "llama_context_params").unwrap_or_default();
        let model_params = struct_body(&l, "llama_model_params").unwrap_or_default();

        let mut missing = Vec::new();
        for (what, names) in [
            (
                "model loading",
                &["llama_model_load_from_file", "llama_load_model_from_file"][..],
            ),
            (
                "context creation",
                &["llama_init_from_model", "llama_new_context_with_model"][..],
            ),
            (
                "KV cache clearing",
                &[
                    "llama_memory_clear",
                    "llama_kv_self_clear",
                    "llama_kv_cache_clear",
                ][..],
            ),
            ("decoding", &["llama_decode"][..]),
            ("batches", &["llama_batch_init"][..]),
            ("logits", &["llama_get_logits_ith"][..]),
            ("tokenizing", &["llama_tokenize"][..]),
            ("token pieces", &["llama_token_to_piece"][..]),
        ] {
            if !names.iter().any(|n| has(n)) {
                missing.push(format!("{what} ({})", names.join(" or ")));
            }
        }
        if !has_field(&ctx_params, "cb_eval") {
            missing.push("llama_context_params.cb_eval (tap capture)".into());
        }
        if !missing.is_empty() {
            return Err(format!(
                "llama.h declares no recognisable llama.cpp API: missing {}",
                missing.join(", ")
            ));
        }

        let vocab = has("llama_model_get_vocab");
        // The tokenizer's first parameter must agree with the vocab API, or the header is
        // something in between we do not know.
        let tokenize_takes = first_param(&l, "llama_tokenize").unwrap_or_default();
        let expected = if vocab { "llama_vocab" } else { "llama_model" };
        if !tokenize_takes.contains(expected) {
            return Err(format!(
                "llama.h: llama_tokenize takes '{tokenize_takes}', but the header {} \
                 llama_model_get_vocab: an API xval does not know",
                if vocab { "declares" } else { "lacks" }
            ));
        }
        let memory = if has("llama_memory_clear") {
            1
        } else if has("llama_kv_self_clear") {
            2
        } else {
            3
        };
        let flash_attn_type = has_field(&ctx_params, "flash_attn_type");
        if !flash_attn_type && !has_field(&ctx_params, "flash_attn") {
            return Err(
                "llama.h: llama_context_params has neither flash_attn_type nor \
                        flash_attn"
                    .into(),
            );
        }
        Ok(Api {
            vocab,
            model_load_new: has("llama_model_load_from_file") && has("llama_model_free"),
            init_from_model: has("llama_init_from_model"),
            memory,
            flash_attn_type,
            extra_bufts: has_field(&model_params, "use_extra_bufts"),
            no_perf: has_field(&ctx_params, "no_perf"),
            n_outputs_max: has_field(&ctx_params, "n_outputs_max")
                && has_field(&ctx_params, "n_outputs_max_per_seq"),
            vocab_n_tokens: has("llama_vocab_n_tokens"),
            model_getters: ["n_layer", "n_embd", "n_head", "n_head_kv"]
                .iter()
                .all(|g| has(&format!("llama_model_{g}"))),
            detokenize: has("llama_detokenize"),
            piece_lstrip: param_count(&l, "llama_token_to_piece") == Some(6),
            llama_version: has("llama_version"),
            batch_get_one_args: param_count(&l, "llama_batch_get_one"),
            ggml_version: declares(&g, "ggml_version") && declares(&g, "ggml_commit"),
            log_cont: contains_word(&g, "GGML_LOG_LEVEL_CONT"),
            i2s: contains_word(&g, "GGML_TYPE_I2_S"),
            threadpool: has("llama_attach_threadpool")
                && declares(&g, "ggml_threadpool_params_default")
                && declares(&gc, "ggml_threadpool_new")
                && declares(&gc, "ggml_threadpool_free")
                && contains_word(ggml_cpu_c, "GGML_THREADPOOL_N_THREADS_MASK"),
        })
    }

    /// How the identity names the API.
    pub fn variant(&self) -> &'static str {
        match (self.vocab, self.init_from_model) {
            (true, true) => "current",
            (false, false) => "bitnet.cpp fork (pre-vocab API)",
            _ => "transitional (between the fork's and the current API)",
        }
    }

    /// The `-D` macros that select the shim's calls.
    pub fn macros(&self) -> Vec<String> {
        let mut m: Vec<String> = [
            (self.vocab, "XVAL_API_VOCAB"),
            (self.model_load_new, "XVAL_MODEL_LOAD_NEW"),
            (self.init_from_model, "XVAL_INIT_FROM_MODEL"),
            (self.flash_attn_type, "XVAL_FLASH_ATTN_TYPE"),
            (self.extra_bufts, "XVAL_EXTRA_BUFTS"),
            (self.no_perf, "XVAL_NO_PERF"),
            (self.n_outputs_max, "XVAL_N_OUTPUTS_MAX"),
            (self.vocab_n_tokens, "XVAL_VOCAB_N_TOKENS"),
            (self.model_getters, "XVAL_MODEL_GETTERS"),
            (self.detokenize, "XVAL_DETOKENIZE"),
            (self.piece_lstrip, "XVAL_PIECE_LSTRIP"),
            (self.llama_version, "XVAL_LLAMA_VERSION"),
            (self.ggml_version, "XVAL_GGML_VERSION"),
            (self.log_cont, "XVAL_LOG_CONT"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| format!("-D{name}"))
        .collect();
        m.push(format!("-DXVAL_MEMORY={}", self.memory));
        if self.threadpool {
            m.push("-DXVAL_THREADPOOL".into());
        }
        m
    }
}

/// The text with comments removed and string literals emptied, so that a name mentioned in a
/// comment or a deprecation message does not count as declared.
fn strip_comments_and_strings(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1)) {
            (b'/', Some(b'/')) => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            (b'/', Some(b'*')) => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
                out.push(b' ');
            }
            (b'"', _) => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.extend_from_slice(b"\"\"");
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Byte offsets where `word` occurs as a whole identifier.
fn word_positions<'a>(text: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    let b = text.as_bytes();
    text.match_indices(word).map(|(i, _)| i).filter(move |&i| {
        let before = i == 0 || !is_ident(b[i - 1]);
        let end = i + word.len();
        let after = end >= b.len() || !is_ident(b[end]);
        before && after
    })
}

fn contains_word(text: &str, word: &str) -> bool {
    word_positions(text, word).next().is_some()
}

/// Where `name(` is declared: the offset just after its opening parenthesis.
fn call_open(text: &str, name: &str) -> Option<usize> {
    word_positions(text, name).find_map(|i| {
        let rest = &text[i + name.len()..];
        let trimmed = rest.trim_start();
        trimmed
            .starts_with('(')
            .then(|| text.len() - trimmed.len() + 1)
    })
}

fn declares(text: &str, name: &str) -> bool {
    call_open(text, name).is_some()
}

/// The parameter list of `name(...)`, split at top-level commas.
fn params(text: &str, name: &str) -> Option<Vec<String>> {
    let start = call_open(text, name)?;
    let mut depth = 0usize;
    let mut cur = String::new();
    let mut out = Vec::new();
    for c in text[start..].chars() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                out.push(cur.trim().to_string());
                return Some(out.into_iter().filter(|p| !p.is_empty()).collect());
            }
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    None
}

fn param_count(text: &str, name: &str) -> Option<usize> {
    params(text, name).map(|p| p.len())
}

fn first_param(text: &str, name: &str) -> Option<String> {
    params(text, name)?
        .into_iter()
        .next()
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The body of `struct name { ... };`.
fn struct_body(text: &str, name: &str) -> Option<String> {
    let open = word_positions(text, name).find_map(|i| {
        let before = text[..i].trim_end();
        let rest = text[i + name.len()..].trim_start();
        (before.ends_with("struct") && rest.starts_with('{')).then(|| text.len() - rest.len() + 1)
    })?;
    let mut depth = 0usize;
    for (k, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(text[open..open + k].to_string()),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Whether a struct body declares a field `name` (`type name;`, also `type name[...]`).
fn has_field(body: &str, name: &str) -> bool {
    word_positions(body, name).any(|i| {
        let rest = body[i + name.len()..].trim_start();
        rest.starts_with(';') || rest.starts_with('[') || rest.starts_with(',')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GGML_OLD: &str = r#"
        enum ggml_type { GGML_TYPE_TQ2_0 = 35, GGML_TYPE_I2_S = 36, GGML_TYPE_COUNT };
        enum ggml_log_level { GGML_LOG_LEVEL_ERROR = 2, GGML_LOG_LEVEL_DEBUG = 5 };
        GGML_API struct ggml_threadpool_params ggml_threadpool_params_default(int n_threads);
        GGML_API struct ggml_threadpool * ggml_threadpool_new(struct ggml_threadpool_params * p);
        GGML_API void ggml_threadpool_free(struct ggml_threadpool * threadpool);
    "#;

    const GGML_NEW: &str = r#"
        enum ggml_log_level { GGML_LOG_LEVEL_DEBUG = 1, GGML_LOG_LEVEL_CONT = 5 };
        GGML_API const char * ggml_version(void);
        GGML_API const char * ggml_commit(void);
        GGML_API struct ggml_threadpool_params ggml_threadpool_params_default(int n_threads);
    "#;

    const GGML_CPU_NEW: &str = r#"
        GGML_BACKEND_API struct ggml_threadpool * ggml_threadpool_new(struct ggml_threadpool_params * params);
        GGML_BACKEND_API void ggml_threadpool_free(struct ggml_threadpool * threadpool);
    "#;

    /// The shape of bitnet.cpp's fork (llama.cpp of August 2024).
    const LLAMA_FORK: &str = r#"
        struct llama_model_params { int32_t n_gpu_layers; bool use_mmap; };
        struct llama_context_params {
            uint32_t seed; uint32_t n_ctx;
            ggml_backend_sched_eval_callback cb_eval;
            void * cb_eval_user_data;
            enum ggml_type type_k;
            bool logits_all; bool embeddings; bool flash_attn; // [EXPERIMENTAL]
        };
        LLAMA_API struct llama_model * llama_load_model_from_file(const char * path_model,
                                                                  struct llama_model_params params);
        LLAMA_API void llama_free_model(struct llama_model * model);
        LLAMA_API struct llama_context * llama_new_context_with_model(struct llama_model * model,
                                                                      struct llama_context_params params);
        // llama_model_get_vocab(model) is not here: the comment must not count.
        LLAMA_API void llama_kv_cache_clear(struct llama_context * ctx);
        LLAMA_API void llama_attach_threadpool(struct llama_context * ctx,
            ggml_threadpool_t threadpool, ggml_threadpool_t threadpool_batch);
        LLAMA_API struct llama_batch llama_batch_get_one(llama_token * tokens, int32_t n_tokens,
                                                         llama_pos pos_0, llama_seq_id seq_id);
        LLAMA_API struct llama_batch llama_batch_init(int32_t n_tokens, int32_t embd, int32_t n_seq_max);
        LLAMA_API int32_t llama_decode(struct llama_context * ctx, struct llama_batch batch);
        LLAMA_API float * llama_get_logits_ith(struct llama_context * ctx, int32_t i);
        LLAMA_API int32_t llama_n_vocab(const struct llama_model * model);
        LLAMA_API int32_t llama_tokenize(const struct llama_model * model, const char * text,
            int32_t text_len, llama_token * tokens, int32_t n_tokens_max, bool add_special,
            bool parse_special);
        LLAMA_API int32_t llama_token_to_piece(const struct llama_model * model, llama_token token,
            char * buf, int32_t length, int32_t lstrip, bool special);
        LLAMA_API int32_t llama_detokenize(const struct llama_model * model,
            const llama_token * tokens, int32_t n_tokens, char * text, int32_t text_len_max,
            bool remove_special, bool unparse_special);
    "#;

    /// The shape of current llama.cpp (the pinned built-in tree).
    const LLAMA_CURRENT: &str = r#"
        struct llama_model_params { int32_t n_gpu_layers; bool use_extra_bufts; };
        struct llama_context_params {
            uint32_t n_ctx;
            uint32_t n_outputs_max; uint32_t n_outputs_max_per_seq;
            enum llama_flash_attn_type flash_attn_type;
            ggml_backend_sched_eval_callback cb_eval;
            void * cb_eval_user_data;
            bool no_perf;
        };
        DEPRECATED(LLAMA_API struct llama_model * llama_load_model_from_file(
            const char * path_model, struct llama_model_params params),
            "use llama_model_load_from_file instead");
        LLAMA_API struct llama_model * llama_model_load_from_file(const char * path_model,
                                                                  struct llama_model_params params);
        LLAMA_API void llama_model_free(struct llama_model * model);
        LLAMA_API struct llama_context * llama_init_from_model(struct llama_model * model,
                                                               struct llama_context_params params);
        LLAMA_API const struct llama_vocab * llama_model_get_vocab(const struct llama_model * model);
        LLAMA_API int32_t llama_model_n_layer(const struct llama_model * model);
        LLAMA_API int32_t llama_model_n_embd(const struct llama_model * model);
        LLAMA_API int32_t llama_model_n_head(const struct llama_model * model);
        LLAMA_API int32_t llama_model_n_head_kv(const struct llama_model * model);
        LLAMA_API int32_t llama_vocab_n_tokens(const struct llama_vocab * vocab);
        LLAMA_API void llama_memory_clear(llama_memory_t mem, bool data);
        LLAMA_API void llama_attach_threadpool(struct llama_context * ctx,
            ggml_threadpool_t threadpool, ggml_threadpool_t threadpool_batch);
        LLAMA_API struct llama_batch llama_batch_get_one(llama_token * tokens, int32_t n_tokens);
        LLAMA_API struct llama_batch llama_batch_init(int32_t n_tokens, int32_t embd, int32_t n_seq_max);
        LLAMA_API int32_t llama_decode(struct llama_context * ctx, struct llama_batch batch);
        LLAMA_API float * llama_get_logits_ith(struct llama_context * ctx, int32_t i);
        LLAMA_API int32_t llama_tokenize(const struct llama_vocab * vocab, const char * text,
            int32_t text_len, llama_token * tokens, int32_t n_tokens_max, bool add_special,
            bool parse_special);
        LLAMA_API int32_t llama_token_to_piece(const struct llama_vocab * vocab, llama_token token,
            char * buf, int32_t length, int32_t lstrip, bool special);
        LLAMA_API int32_t llama_detokenize(const struct llama_vocab * vocab,
            const llama_token * tokens, int32_t n_tokens, char * text, int32_t text_len_max,
            bool remove_special, bool unparse_special);
        LLAMA_API const char * llama_version(void);
    "#;

    #[test]
    fn the_fork_api() {
        let a = Api::detect(LLAMA_FORK, GGML_OLD, "", "").unwrap();
        assert_eq!(a.variant(), "bitnet.cpp fork (pre-vocab API)");
        assert!(!a.vocab && !a.model_load_new && !a.init_from_model);
        assert_eq!(a.memory, 3);
        assert!(!a.flash_attn_type && !a.no_perf && !a.extra_bufts && !a.model_getters);
        assert_eq!(a.batch_get_one_args, Some(4));
        assert!(a.piece_lstrip && a.detokenize && a.i2s);
        assert!(!a.ggml_version && !a.log_cont);
        // The fork's pool (in ggml.h) is the one that reads graph and thread counts apart.
        assert!(!a.threadpool);
        assert_eq!(
            a.macros(),
            [
                "-DXVAL_DETOKENIZE",
                "-DXVAL_PIECE_LSTRIP",
                "-DXVAL_MEMORY=3"
            ]
        );
    }

    #[test]
    fn the_current_api() {
        // The pool: declared in ggml-cpu.h, and ggml-cpu.c with graph and thread counts in one
        // atomic; without either, none.
        let fixed = "int n_threads = n_graph & GGML_THREADPOOL_N_THREADS_MASK;";
        let a = Api::detect(LLAMA_CURRENT, GGML_NEW, GGML_CPU_NEW, fixed).unwrap();
        assert!(a.threadpool);
        assert!(a.macros().contains(&"-DXVAL_THREADPOOL".to_string()));
        let racy =
            "int n_threads = atomic_load_explicit(&tp->n_threads_cur, memory_order_relaxed);";
        assert!(
            !Api::detect(LLAMA_CURRENT, GGML_NEW, GGML_CPU_NEW, racy)
                .unwrap()
                .threadpool
        );
        assert!(
            !Api::detect(LLAMA_CURRENT, GGML_NEW, "", fixed)
                .unwrap()
                .threadpool
        );
        let a = Api::detect(LLAMA_CURRENT, GGML_NEW, "", "").unwrap();
        assert_eq!(a.variant(), "current");
        assert!(a.vocab && a.model_load_new && a.init_from_model && a.vocab_n_tokens);
        assert_eq!(a.memory, 1);
        assert!(a.flash_attn_type && a.no_perf && a.extra_bufts && a.n_outputs_max);
        assert!(a.model_getters && a.detokenize && a.llama_version);
        assert_eq!(a.batch_get_one_args, Some(2));
        assert!(a.ggml_version && a.log_cont && !a.i2s);
    }

    #[test]
    fn an_unknown_header_says_what_is_missing() {
        let e = Api::detect("int main(void);", "", "", "").unwrap_err();
        assert!(
            e.contains("llama_model_load_from_file or llama_load_model_from_file"),
            "{e}"
        );
        assert!(e.contains("cb_eval"), "{e}");
        // The vocab API announced, but the tokenizer still takes the model.
        let mixed = LLAMA_FORK.replace(
            "LLAMA_API void llama_free_model",
            "LLAMA_API const struct llama_vocab * llama_model_get_vocab(const struct llama_model * m);\n\
             LLAMA_API void llama_free_model",
        );
        let e = Api::detect(&mixed, GGML_OLD, "", "").unwrap_err();
        assert!(e.contains("llama_tokenize takes"), "{e}");
    }

    #[test]
    fn the_text_scanner() {
        let s = strip_comments_and_strings("a /* b(c) */ d // e(\n\"f(\" g(x, (y, z)) h");
        assert!(!declares(&s, "b") && !declares(&s, "e") && !declares(&s, "f"));
        assert_eq!(param_count(&s, "g"), Some(2));
        assert!(!contains_word("GGML_TYPE_I2_SX", "GGML_TYPE_I2_S"));
        assert!(has_field(" bool flash_attn; ", "flash_attn"));
        assert!(!has_field(" int flash_attn_type; ", "flash_attn"));
    }
}
