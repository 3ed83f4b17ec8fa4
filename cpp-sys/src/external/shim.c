/*
 * xval's shim over a user's llama.cpp / bitnet.cpp tree.
 *
 * Compiled at run time against that tree's llama.h and ggml headers, linked to its libraries,
 * and loaded with dlopen by cpp-sys/src/external. It exports one fixed C ABI (the xval_*
 * functions below, XVAL_SHIM_ABI) whatever llama.cpp API the tree has; the XVAL_* macros,
 * decided by api.rs from the header text, pick the calls:
 *
 *   XVAL_API_VOCAB         tokenizer calls take a llama_vocab (llama_model_get_vocab);
 *                          otherwise the model (bitnet.cpp's fork and llama.cpp before 2025)
 *   XVAL_MODEL_LOAD_NEW    llama_model_load_from_file / llama_model_free
 *   XVAL_INIT_FROM_MODEL   llama_init_from_model, else llama_new_context_with_model
 *   XVAL_MEMORY            1 llama_memory_clear, 2 llama_kv_self_clear, 3 llama_kv_cache_clear
 *   XVAL_FLASH_ATTN_TYPE   context params carry flash_attn_type (enum), else a bool flash_attn
 *   XVAL_EXTRA_BUFTS, XVAL_NO_PERF, XVAL_N_OUTPUTS_MAX    optional params fields
 *   XVAL_VOCAB_N_TOKENS    llama_vocab_n_tokens
 *   XVAL_MODEL_GETTERS     llama_model_n_layer/_n_embd/_n_head/_n_head_kv
 *   XVAL_DETOKENIZE        llama_detokenize exists (else built from llama_token_to_piece)
 *   XVAL_PIECE_LSTRIP      llama_token_to_piece takes an lstrip argument
 *   XVAL_LLAMA_VERSION, XVAL_GGML_VERSION, XVAL_LOG_CONT
 *   XVAL_THREADPOOL        the context gets one pool of compute threads (ggml-cpu.h's
 *                          ggml_threadpool_new, llama_attach_threadpool) where the tree's pool
 *                          is safe to keep (api.rs says which); without it ggml starts a pool
 *                          per graph, and with cb_eval a graph is computed a few nodes at a time
 *
 * Taps: the context's cb_eval calls back into Rust (xval_node_fn) with each node's name, op
 * and shape; for a node Rust wants, the data phase copies the tensor's bytes out of its backend
 * buffer (ggml_backend_tensor_get) and hands them over with type and strides; Rust gathers
 * them into the engine's layout, the same code as the built-in oracle.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"
#ifdef XVAL_THREADPOOL
#include "ggml-cpu.h"
#endif

#define XVAL_SHIM_ABI 1

#if defined(__GNUC__)
#define XVAL_EXPORT __attribute__((visibility("default")))
#else
#define XVAL_EXPORT
#endif

/* --- log: kept in a ring for error messages, optionally echoed to stderr --- */

#define XVAL_LOG_KEEP 16384
static char g_log[XVAL_LOG_KEEP];
static size_t g_log_start, g_log_len;
static int g_log_echo, g_log_last_kept;
static pthread_mutex_t g_log_mutex = PTHREAD_MUTEX_INITIALIZER;

static void xval_log_cb(enum ggml_log_level level, const char * text, void * user_data) {
    (void) user_data;
    int keep;
#ifdef XVAL_LOG_CONT
    if (level == GGML_LOG_LEVEL_CONT) {
        keep = g_log_last_kept;
    } else
#endif
    {
        /* Debug messages (per-graph listings) drown what matters. */
        keep = level != GGML_LOG_LEVEL_DEBUG;
    }
    g_log_last_kept = keep;
    if (!keep || text == NULL) {
        return;
    }
    if (g_log_echo) {
        fputs(text, stderr);
    }
    pthread_mutex_lock(&g_log_mutex);
    for (const char * p = text; *p; p++) {
        g_log[(g_log_start + g_log_len) % XVAL_LOG_KEEP] = *p;
        if (g_log_len < XVAL_LOG_KEEP) {
            g_log_len++;
        } else {
            g_log_start = (g_log_start + 1) % XVAL_LOG_KEEP;
        }
    }
    pthread_mutex_unlock(&g_log_mutex);
}

XVAL_EXPORT int32_t xval_shim_abi_version(void) { return XVAL_SHIM_ABI; }

/* Once per process: route the log, initialise the backends. */
XVAL_EXPORT void xval_init(int32_t echo_log) {
    static int done;
    g_log_echo = echo_log;
    if (!done) {
        done = 1;
        llama_log_set(xval_log_cb, NULL);
        llama_backend_init();
    }
}

XVAL_EXPORT void xval_log_clear(void) {
    pthread_mutex_lock(&g_log_mutex);
    g_log_start = g_log_len = 0;
    pthread_mutex_unlock(&g_log_mutex);
}

/* Copies the last min(cap, kept) bytes of the log into out; returns how many. */
XVAL_EXPORT size_t xval_log_tail(char * out, size_t cap) {
    pthread_mutex_lock(&g_log_mutex);
    size_t n = g_log_len < cap ? g_log_len : cap;
    size_t from = g_log_start + g_log_len - n;
    for (size_t i = 0; i < n; i++) {
        out[i] = g_log[(from + i) % XVAL_LOG_KEEP];
    }
    pthread_mutex_unlock(&g_log_mutex);
    return n;
}

XVAL_EXPORT const char * xval_system_info(void) { return llama_print_system_info(); }

XVAL_EXPORT const char * xval_llama_version(void) {
#ifdef XVAL_LLAMA_VERSION
    return llama_version();
#else
    return "";
#endif
}

XVAL_EXPORT const char * xval_ggml_version(void) {
#ifdef XVAL_GGML_VERSION
    return ggml_version();
#else
    return "";
#endif
}

XVAL_EXPORT const char * xval_ggml_commit(void) {
#ifdef XVAL_GGML_VERSION
    return ggml_commit();
#else
    return "";
#endif
}

/* --- the oracle handle --- */

struct xval_node {
    uintptr_t id;
    const char * name;
    const char * op;
    int64_t ne[4];
    size_t nb[4];
    int32_t type;
    const char * type_name;
    /* Data phase only: the tensor's ggml_nbytes bytes, or NULL when it has no memory. */
    const void * data;
    size_t nbytes;
};

typedef bool (*xval_node_fn)(void * user_data, bool ask, const struct xval_node * node);

struct xval_params {
    uint32_t n_ctx;
    int32_t n_threads;
    int32_t kv_f16;
    int32_t flash_attn;
    xval_node_fn node_fn;
    void * node_user_data;
};

struct xval_info {
    int32_t n_vocab;
    int32_t n_layer;
    int32_t n_embd;
    /* -1 where the API has no getter (Rust reads the GGUF metadata instead). */
    int32_t n_head;
    int32_t n_head_kv;
    uint32_t n_ctx;
    uint32_t n_batch;
    uint32_t n_ubatch;
};

struct xval_oracle {
    struct llama_model * model;
    struct llama_context * ctx;
#ifdef XVAL_API_VOCAB
    const struct llama_vocab * vocab;
#endif
    xval_node_fn node_fn;
    void * node_user_data;
#ifdef XVAL_THREADPOOL
    struct ggml_threadpool * pool;
#endif
};

static void xval_describe(struct ggml_tensor * t, struct xval_node * n) {
    n->id = (uintptr_t) t;
    n->name = t->name;
    n->op = ggml_op_desc(t);
    for (int i = 0; i < 4; i++) {
        n->ne[i] = t->ne[i];
        n->nb[i] = t->nb[i];
    }
    n->type = (int32_t) t->type;
    n->type_name = ggml_type_name(t->type);
    n->data = NULL;
    n->nbytes = 0;
}

static bool xval_eval_cb(struct ggml_tensor * t, bool ask, void * user_data) {
    struct xval_oracle * o = (struct xval_oracle *) user_data;
    struct xval_node node;
    xval_describe(t, &node);
    if (ask) {
        return o->node_fn(o->node_user_data, true, &node);
    }
    void * buf = NULL;
    if (t->buffer != NULL && t->data != NULL) {
        node.nbytes = ggml_nbytes(t);
        buf = malloc(node.nbytes ? node.nbytes : 1);
        if (buf != NULL) {
            ggml_backend_tensor_get(t, buf, 0, node.nbytes);
        } else {
            node.nbytes = 0;
        }
    }
    node.data = buf;
    bool r = o->node_fn(o->node_user_data, false, &node);
    free(buf);
    return r;
}

XVAL_EXPORT void xval_free(struct xval_oracle * o) {
    if (o == NULL) {
        return;
    }
    if (o->ctx != NULL) {
        llama_free(o->ctx);
    }
#ifdef XVAL_THREADPOOL
    if (o->pool != NULL) {
        ggml_threadpool_free(o->pool);
    }
#endif
    if (o->model != NULL) {
#ifdef XVAL_MODEL_LOAD_NEW
        llama_model_free(o->model);
#else
        llama_free_model(o->model);
#endif
    }
    free(o);
}

/* NULL on failure; the log says why. *stage is 1 when the model failed, 2 the context. */
XVAL_EXPORT struct xval_oracle * xval_load(const char * path, const struct xval_params * p, int32_t * stage) {
    struct xval_oracle * o = (struct xval_oracle *) calloc(1, sizeof(struct xval_oracle));
    if (o == NULL) {
        *stage = 0;
        return NULL;
    }
    o->node_fn = p->node_fn;
    o->node_user_data = p->node_user_data;

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
#ifdef XVAL_EXTRA_BUFTS
    /* Keep the file's weight layout: no runtime repacking into other block layouts. */
    mp.use_extra_bufts = false;
#endif
#ifdef XVAL_MODEL_LOAD_NEW
    o->model = llama_model_load_from_file(path, mp);
#else
    o->model = llama_load_model_from_file(path, mp);
#endif
    if (o->model == NULL) {
        *stage = 1;
        xval_free(o);
        return NULL;
    }
#ifdef XVAL_API_VOCAB
    o->vocab = llama_model_get_vocab(o->model);
#endif

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = p->n_ctx;
    /* One batch, one micro-batch: the whole prompt is one graph evaluation. */
    cp.n_batch = p->n_ctx;
    cp.n_ubatch = p->n_ctx;
    cp.n_seq_max = 1;
#ifdef XVAL_N_OUTPUTS_MAX
    cp.n_outputs_max = 0;
    cp.n_outputs_max_per_seq = 0;
#endif
    cp.n_threads = p->n_threads;
    cp.n_threads_batch = p->n_threads;
#ifdef XVAL_FLASH_ATTN_TYPE
    cp.flash_attn_type = p->flash_attn ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
#else
    cp.flash_attn = p->flash_attn != 0;
#endif
    cp.type_k = p->kv_f16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
    cp.type_v = p->kv_f16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
    cp.cb_eval = xval_eval_cb;
    cp.cb_eval_user_data = o;
    cp.embeddings = false;
#ifdef XVAL_NO_PERF
    cp.no_perf = true;
#endif
#ifdef XVAL_INIT_FROM_MODEL
    o->ctx = llama_init_from_model(o->model, cp);
#else
    o->ctx = llama_new_context_with_model(o->model, cp);
#endif
    if (o->ctx == NULL) {
        *stage = 2;
        xval_free(o);
        return NULL;
    }
#ifdef XVAL_THREADPOOL
    /* The same thread count, so the same results; freed after the context (xval_free). Where
       ggml cannot start it, it starts a pool per graph as without one. */
    struct ggml_threadpool_params tpp = ggml_threadpool_params_default(p->n_threads);
    o->pool = ggml_threadpool_new(&tpp);
    if (o->pool != NULL) {
        llama_attach_threadpool(o->ctx, o->pool, o->pool);
    }
#endif
    *stage = 0;
    return o;
}

XVAL_EXPORT void xval_get_info(const struct xval_oracle * o, struct xval_info * out) {
    const struct llama_model * m = o->model;
#if defined(XVAL_VOCAB_N_TOKENS)
    out->n_vocab = llama_vocab_n_tokens(o->vocab);
#elif defined(XVAL_API_VOCAB)
    out->n_vocab = llama_n_vocab(o->vocab);
#else
    out->n_vocab = llama_n_vocab(m);
#endif
#ifdef XVAL_MODEL_GETTERS
    out->n_layer = llama_model_n_layer(m);
    out->n_embd = llama_model_n_embd(m);
    out->n_head = llama_model_n_head(m);
    out->n_head_kv = llama_model_n_head_kv(m);
#else
    out->n_layer = llama_n_layer(m);
    out->n_embd = llama_n_embd(m);
    out->n_head = -1;
    out->n_head_kv = -1;
#endif
    out->n_ctx = llama_n_ctx(o->ctx);
    out->n_batch = llama_n_batch(o->ctx);
    out->n_ubatch = llama_n_ubatch(o->ctx);
}

XVAL_EXPORT int32_t xval_meta_str(const struct xval_oracle * o, const char * key, char * buf, size_t len) {
    return llama_model_meta_val_str(o->model, key, buf, len);
}

XVAL_EXPORT int32_t xval_desc(const struct xval_oracle * o, char * buf, size_t len) {
    return llama_model_desc(o->model, buf, len);
}

#ifdef XVAL_API_VOCAB
#define XVAL_TOKENIZER(o) ((o)->vocab)
#else
#define XVAL_TOKENIZER(o) ((o)->model)
#endif

XVAL_EXPORT int32_t xval_tokenize(const struct xval_oracle * o, const char * text, int32_t len,
                                  int32_t * out, int32_t max, bool add_special, bool parse_special) {
    return llama_tokenize(XVAL_TOKENIZER(o), text, len, out, max, add_special, parse_special);
}

XVAL_EXPORT int32_t xval_token_to_piece(const struct xval_oracle * o, int32_t token, char * buf,
                                        int32_t len, bool special) {
#ifdef XVAL_PIECE_LSTRIP
    return llama_token_to_piece(XVAL_TOKENIZER(o), token, buf, len, 0, special);
#else
    return llama_token_to_piece(XVAL_TOKENIZER(o), token, buf, len, special);
#endif
}

/* Whether xval_detokenize is llama.cpp's own llama_detokenize. */
XVAL_EXPORT int32_t xval_has_detokenize(void) {
#ifdef XVAL_DETOKENIZE
    return 1;
#else
    return 0;
#endif
}

XVAL_EXPORT int32_t xval_detokenize(const struct xval_oracle * o, const int32_t * tokens, int32_t n,
                                    char * buf, int32_t len, bool remove_special, bool unparse_special) {
#ifdef XVAL_DETOKENIZE
    return llama_detokenize(XVAL_TOKENIZER(o), tokens, n, buf, len, remove_special, unparse_special);
#else
    /* As llama.cpp's common code did before llama_detokenize: the pieces, concatenated;
       remove_special drops a leading BOS and a trailing EOS. */
    int32_t first = 0, last = n;
    if (remove_special && n > 0 && tokens[0] == llama_token_bos(o->model)) {
        first = 1;
    }
    if (remove_special && last > first && tokens[last - 1] == llama_token_eos(o->model)) {
        last--;
    }
    int64_t total = 0;
    char piece[256];
    for (int32_t i = first; i < last; i++) {
        int32_t k = xval_token_to_piece(o, tokens[i], piece, (int32_t) sizeof(piece), unparse_special);
        if (k < 0) {
            return INT32_MIN;
        }
        if (total + k <= len) {
            memcpy(buf + total, piece, (size_t) k);
        }
        total += k;
    }
    if (total > INT32_MAX) {
        return INT32_MIN;
    }
    return total <= len ? (int32_t) total : -(int32_t) total;
#endif
}

/* Decode tokens at start_pos.. with every position an output (all_outputs) or the last one only
   (as llama-bench and llama-cli decode a prompt); clear empties the KV cache first. */
XVAL_EXPORT int32_t xval_eval(struct xval_oracle * o, const int32_t * tokens, int32_t n, int32_t start_pos, bool clear, bool all_outputs) {
    if (clear) {
#if XVAL_MEMORY == 1
        llama_memory_clear(llama_get_memory(o->ctx), true);
#elif XVAL_MEMORY == 2
        llama_kv_self_clear(o->ctx);
#else
        llama_kv_cache_clear(o->ctx);
#endif
    }
    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int32_t i = 0; i < n; i++) {
        b.token[i] = tokens[i];
        b.pos[i] = start_pos + i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = all_outputs || i == n - 1;
    }
    b.n_tokens = n;
    int32_t rc = llama_decode(o->ctx, b);
    llama_synchronize(o->ctx);
    llama_batch_free(b);
    return rc;
}

XVAL_EXPORT const float * xval_logits_ith(struct xval_oracle * o, int32_t i) {
    return llama_get_logits_ith(o->ctx, i);
}
