/*
 * The response cache's rules (issue 12), shared by the module (lookup and
 * store) and controld (/cache/config validation and defaults): what a
 * request's cache key is, which requests may be cached, and an
 * organisation's settings.
 *
 * The key is a SHA-256 over the organisation, the scope and its value,
 * the provider, the endpoint ("POST /chat/completions") and the request
 * body as it is sent upstream, canonicalised: insignificant whitespace
 * removed, the members of every object sorted by name (bytewise, as
 * spelled), and the top-level members that do not change the answer
 * (user, stream_options, metadata) left out. Strings and numbers are kept
 * as spelled: two spellings of one value are two keys (a miss, never a
 * wrong hit). Two organisations never share a key.
 *
 * The bytes hashed: "spendpol-cache-v1"; org_id, the scope as a 4-byte
 * big-endian number, scope_value, provider and endpoint, each string
 * after its length as 4 bytes big-endian (so ("ab","c") and ("a","bc")
 * differ); then the canonical body. Not keyed (SP_ERROR): a body that is
 * empty, not JSON as the request parser reads it (jansson: UTF-8,
 * escapes, surrogates, a member name twice in one object, as spelled) or
 * followed by more than whitespace; nesting deeper than jansson's
 * JSON_PARSER_MAX_DEPTH (2048, every value a level: 2047 objects around a
 * number, 2048 around nothing); a string field longer than 1024 bytes.
 */

#ifndef SP_CACHE_H
#define SP_CACHE_H

#include "spendpol.h"


#define SP_CACHE_KEY_LEN               32         /* SHA-256 */

typedef enum {
    SP_CACHE_OFF = 0,
    SP_CACHE_EXACT,
    SP_CACHE_SEMANTIC
} sp_cache_mode_e;

/* whose requests share entries, beyond the organisation */
typedef enum {
    SP_CACHE_SCOPE_ORG = 0,
    SP_CACHE_SCOPE_API_KEY,
    SP_CACHE_SCOPE_PROJECT,
    SP_CACHE_SCOPE_DEPARTMENT
} sp_cache_scope_e;

#define SP_CACHE_DEFAULT_MODE          SP_CACHE_EXACT
#define SP_CACHE_DEFAULT_TTL_S         3600
#define SP_CACHE_DEFAULT_SCOPE         SP_CACHE_SCOPE_ORG
#define SP_CACHE_DEFAULT_MAX_ENTRY     (1024 * 1024)   /* bytes */
#define SP_CACHE_TTL_MAX_S             (30 * 86400)
#define SP_CACHE_MAX_ENTRY_MAX         (16 * 1024 * 1024)

/* the semantic cache's settings (mode semantic) */
#define SP_CACHE_EMBED_MODEL_LEN        128       /* with its NUL */
#define SP_CACHE_DEFAULT_THRESHOLD_PPM  950000    /* similarity 0.95 */
#define SP_CACHE_DEFAULT_EMBED_TIMEOUT  1000      /* ms */
#define SP_CACHE_DEFAULT_MAX_VECTORS    10000
#define SP_CACHE_THRESHOLD_MIN_PPM      500000
#define SP_CACHE_THRESHOLD_MAX_PPM      1000000
#define SP_CACHE_EMBED_TIMEOUT_MIN      50
#define SP_CACHE_EMBED_TIMEOUT_MAX      30000
#define SP_CACHE_MAX_VECTORS_MAX        100000

typedef struct {
    uint32_t  mode;                  /* sp_cache_mode_e */
    uint32_t  scope;                 /* sp_cache_scope_e */
    uint32_t  ttl_s;                 /* 1..SP_CACHE_TTL_MAX_S */
    uint32_t  max_entry_bytes;       /* 1..SP_CACHE_MAX_ENTRY_MAX */
    uint32_t  only_deterministic;    /* 1: temperature 0 or a seed only */

    /*
     * Mode semantic: the embeddings endpoint, and how close a stored
     * prompt must be. Meaningful only with both embed_provider and
     * embed_model set (sp_snapshot_cache_config() reads a semantic
     * record without them as exact).
     */
    uint32_t  threshold_ppm;      /* similarity_threshold x 1e6:
                                     500000..1000000 */
    uint32_t  embed_provider;     /* sp_provider_e of the embeddings endpoint;
                                     SP_PROVIDER_UNKNOWN unset */
    uint32_t  embed_system;       /* 1: the system prompt is embedded too */
    uint32_t  embed_timeout_ms;   /* 50..30000 */
    uint32_t  max_vectors;        /* per organisation, 1..100000 */
    char      embed_model[SP_CACHE_EMBED_MODEL_LEN];  /* NUL-terminated,
                                                          "" unset */
} sp_cache_config_t;

/* the defaults an organisation without settings has */
void sp_cache_config_default(sp_cache_config_t *config);

/*
 * 1 when provider may serve the semantic cache's embeddings: openai,
 * azure, google, cohere or mistral (anthropic has no embeddings endpoint)
 */
int sp_cache_embed_provider_valid(uint32_t provider);

/*
 * 1 when model is an embedding model name the settings accept: 1 to
 * SP_CACHE_EMBED_MODEL_LEN - 1 bytes of printable ASCII without spaces
 */
int sp_cache_embed_model_valid(const char *model, size_t len);

/* names as the admin API spells them; NULL for an unknown value */
const char *sp_cache_mode_name(uint32_t mode);
const char *sp_cache_scope_name(uint32_t scope);

/* SP_OK and the value, or SP_ERROR for an unknown name */
int sp_cache_mode_parse(const char *name, size_t len, uint32_t *mode);
int sp_cache_scope_parse(const char *name, size_t len, uint32_t *scope);


/*
 * SP_CACHE_KEY_NO_PROMPT: the semantic cache's "group" key, the entries
 * a prompt's vector is compared with (same organisation, scope,
 * provider, endpoint and parameters). It hashes the prefix
 * "spendpol-cache-v1-group" instead of "spendpol-cache-v1", so it never
 * equals an exact key, and leaves out, besides user, stream_options and
 * metadata, the top-level members that carry the prompt: messages,
 * contents, system, systemInstruction, system_instruction, message,
 * chat_history and preamble.
 */
#define SP_CACHE_KEY_NO_PROMPT         0x1

/* what the key covers besides the body */
typedef struct {
    sp_str_t     org_id;
    uint32_t     scope;              /* sp_cache_scope_e */
    sp_str_t     scope_value;        /* the key id, project or department;
                                        "" for the organisation scope */
    sp_str_t     provider;
    sp_str_t     endpoint;           /* "POST /chat/completions" */
    const char  *body;               /* as sent upstream */
    size_t       body_len;
    unsigned     flags;              /* SP_CACHE_KEY_*, 0: the exact key */
} sp_cache_key_in_t;

/*
 * Scratch bytes sp_cache_key() needs for a body of body_len bytes (the
 * compact and canonical texts and the member lists it sorts); the caller
 * allocates them, so the function allocates nothing. About 6 times
 * body_len, at least 4 KB: two texts of body_len (the first at least
 * 4,139 bytes, the longest header), 12 bytes for each of at most
 * body_len / 5 members and 16 for each of at most body_len / 10 objects
 * out of order. SIZE_MAX past 1 GB.
 */
size_t sp_cache_key_scratch(size_t body_len);

/*
 * The key into key[SP_CACHE_KEY_LEN]. SP_ERROR with a reason in err when
 * the body is not JSON, nests deeper than the request parser allows or
 * scratch is too small: such a request is not cached.
 */
int sp_cache_key(const sp_cache_key_in_t *in, void *scratch,
    size_t scratch_len, uint8_t *key, char *err, size_t errlen);


/*
 * 1 when the request may be cached under only_deterministic: its
 * temperature is exactly 0 or it carries a seed (sp_request_info_t's
 * temperature_zero and has_seed), or its endpoint does not sample at all
 * (metered as embeddings or search).
 */
int sp_cache_deterministic(int temperature_zero, int has_seed,
    int meter);


#endif /* SP_CACHE_H */
