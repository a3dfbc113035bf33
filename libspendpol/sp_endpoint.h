/*
 * What the gateway lets through to a provider: the path and query string
 * of the upstream request, the values it writes into headers, and the
 * endpoints it meters.
 *
 * The module builds the upstream request line only from what
 * sp_path_canonical() and sp_query_canonical() write, and forwards only
 * calls that sp_endpoint_find() (or an organisation's own pattern, checked
 * with sp_endpoint_match()) knows. Nothing here allocates; every function
 * reads exactly the bytes it is given.
 */

#ifndef SP_ENDPOINT_H
#define SP_ENDPOINT_H

#include "spendpol.h"
#include "sp_usage.h"


/* ---- paths and query strings (sp_path.c) ----------------------------- */

/* the longest path, and the longest query string, the gateway forwards */
#define SP_PATH_MAX  2048

/*
 * Validates the raw, still percent-encoded path that follows
 * "/v1/{provider}" in the request target (it starts with '/', no '?'
 * part) and writes its canonical form into out (outcap bytes; 3 * len + 1
 * always suffices), NUL-terminated, its length in *outlen: each segment
 * percent-decoded once, then re-encoded (unreserved A-Za-z0-9-._~ and the
 * sub-delims ":@!$&'()*+,;=" literal, every other byte %XX uppercase).
 *
 * Refused, with a reason naming what was found in err: empty input or not
 * starting with '/', longer than SP_PATH_MAX, an empty segment ("//",
 * which could start an authority; one trailing '/' is kept), a segment
 * "." or "..", "://" (a scheme), and, raw or percent-encoded once or more
 * (decoding repeats until no '%' is left, at most 8 rounds; more is
 * refused too): bytes 0x00-0x1f and 0x7f, space, '\\', '?' and '#', a '/'
 * arising from decoding, and a malformed %-escape (a '%' not followed by
 * two hex digits). Returns SP_OK or SP_ERROR.
 */
int sp_path_canonical(const char *in, size_t len, char *out, size_t outcap,
    size_t *outlen, char *err, size_t errlen);

/*
 * NULL-terminated: the query parameter names that carry a Spendpol key
 * (compared in any letter case). Keep in step with the headers the module
 * reads a key from.
 */
extern const char *const  sp_query_key_names[];

/*
 * The same for the raw query string (without '?'), at most SP_PATH_MAX
 * bytes: parameters split on '&', empty parameters dropped, name and value
 * (split on the first '=') each decoded once and re-encoded like a path
 * segment, except that '&', '=' and '+' are literal only where they were
 * (a raw '+' stays '+', "%2B" stays "%2B", a '=' inside a value becomes
 * "%3D"). Refused: raw space, '\\' or '#', a malformed %-escape raw or
 * arising from decoding, and bytes 0x00-0x1f and 0x7f raw or
 * percent-encoded any number of times (at most 8 rounds of decoding).
 *
 * Parameters that carry a Spendpol key are removed: a name that decodes,
 * in any letter case, to one of sp_query_key_names, and any parameter
 * whose decoded name or value contains "sp_key_". When keybuf is not
 * NULL and the decoded value of such a parameter is a well-formed key
 * (sp_key_is_wellformed), the first such key is written into keybuf
 * (SP_KEY_LEN + 1 bytes, NUL-terminated) and *has_key is set to 1 (else
 * *has_key is 0). out (outcap bytes; 3 * len + 1 always suffices) gets the
 * remaining parameters in their order, NUL-terminated, *outlen their
 * length (0 when none is left). Returns SP_OK or SP_ERROR.
 */
int sp_query_canonical(const char *in, size_t len, char *out, size_t outcap,
    size_t *outlen, char *keybuf, int *has_key, char *err, size_t errlen);


/* ---- header values (sp_path.c) --------------------------------------- */

/*
 * 1 when v can go into an HTTP header, a trailer or the journal as it is:
 * no byte below 0x20 (HTAB included) and no 0x7f; else 0.
 */
int sp_header_value_ok(const char *v, size_t len);

/*
 * Copies v into out with every byte below 0x20, 0x7f and '%' written as
 * %XX (uppercase), so that the result passes sp_header_value_ok() and can
 * be decoded back. Returns the length written, or 0 when out (outcap
 * bytes) is too small; a NUL follows when there is room for it.
 */
size_t sp_header_value_escape(const char *v, size_t len, char *out,
    size_t outcap);


/* ---- the endpoint catalogue (sp_endpoint.c) -------------------------- */

typedef enum {
    SP_METER_TOKENS = 1,   /* input and output tokens (chat, completions,
                              responses, messages, generateContent, FIM) */
    SP_METER_EMBED,        /* input tokens only (embeddings) */
    SP_METER_SEARCH,       /* search units (Cohere rerank) */
    SP_METER_FREE          /* GET model lists, count_tokens: journaled, $0 */
} sp_meter_e;

#define SP_ENDPOINT_STREAMS      0x01u  /* may answer with SSE */
#define SP_ENDPOINT_CHAT         0x02u  /* OpenAI-shaped chat/completions:
                                           gets stream_options.include_usage */
#define SP_ENDPOINT_JSON_BODY    0x04u  /* a JSON request body is expected */

typedef struct {
    const char  *method;    /* "POST", "GET" */
    const char  *pattern;   /* relative to the provider's base URL */
    const char  *name;      /* "chat.completions", "embeddings", ... */
    sp_meter_e   meter;
    unsigned     flags;
} sp_endpoint_t;

/*
 * The catalogue's entry for a call, or NULL when the provider's catalogue
 * has no such endpoint. method is compared exactly (uppercase); path is
 * the canonical path (from sp_path_canonical) without query. A linear scan
 * of a dozen short patterns, no allocation.
 */
const sp_endpoint_t *sp_endpoint_find(sp_provider_e provider,
    const char *method, size_t method_len, const char *path, size_t len);

/*
 * A provider's whole catalogue, ending with an entry whose method is NULL;
 * NULL for SP_PROVIDER_UNKNOWN. For listings (docs, an error naming what
 * is governed) and tests.
 */
const sp_endpoint_t *sp_endpoint_catalogue(sp_provider_e provider);

/*
 * The pattern syntax, shared with the organisation's own allowed
 * endpoints: a path starting with '/'; '*' matches one or more bytes other
 * than '/' within a segment (so "/v1beta/models/ *:generateContent",
 * without the space, works); a final "/ **" (without the space) matches
 * the rest, one or more bytes after its '/'. Every other byte matches
 * itself. 1 on match, else 0.
 */
int sp_endpoint_match(const char *pattern, size_t plen, const char *path,
    size_t len);

/*
 * For controld: SP_OK when pattern is a usable pattern (starts with '/',
 * at most SP_ENDPOINT_PATTERN_MAX bytes, bytes from
 * [A-Za-z0-9-._~:@!$&'()+,;=*], and '/', no "." or ".." segment, no
 * "//", "**" only as the whole final segment); else SP_ERROR with a reason
 * in err.
 */
#define SP_ENDPOINT_PATTERN_MAX  256
int sp_endpoint_pattern_valid(const char *pattern, size_t len, char *err,
    size_t errlen);

/*
 * For controld: 1 when method is one an organisation may allow (exactly
 * GET, POST, PUT, PATCH or DELETE), else 0. A predicate like
 * sp_header_value_ok(), not SP_OK/SP_ERROR.
 */
int sp_endpoint_method_valid(const char *method, size_t len);


#endif /* SP_ENDPOINT_H */
