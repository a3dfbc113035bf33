/*
 * A JSON response too large to hold, metered as it streams through: an
 * incremental scanner that follows strings and nesting and keeps copies of
 * the few top-level members the cost needs, "usage" (Google:
 * "usageMetadata", Cohere v1: "meta") and "model" (Google:
 * "modelVersion"), and nothing else. Google's streamGenerateContent
 * without alt=sse answers an array of such objects: their members count
 * too, the last one wins.
 *
 * Fed in pieces split anywhere, it finds what it finds in the whole body.
 * It never allocates, never reads past what it is given, and its copies
 * are bounded: a member too large for its copy is not kept.
 */

#ifndef SP_SCAN_H
#define SP_SCAN_H

#include "sp_usage.h"


#define SP_SCAN_USAGE_MAX   4096    /* a usage object's JSON text */
#define SP_SCAN_MODEL_MAX   1024    /* a model member's JSON text */
#define SP_SCAN_KEY_MAX     16      /* the longest name looked for, and 1 */


typedef enum {
    SP_SCAN_USAGE = 0,              /* "usage" or "usageMetadata" */
    SP_SCAN_META,                   /* "meta" (Cohere v1) */
    SP_SCAN_MODEL,                  /* "model" or "modelVersion" */
    SP_SCAN_NMEMBERS
} sp_scan_member_e;


typedef struct sp_scan_s {
    /*
     * What the body held so far: the JSON text of the last complete value
     * of each member looked for (length 0: not found) and its name.
     */
    char               usage[SP_SCAN_USAGE_MAX];
    char               meta[SP_SCAN_USAGE_MAX];
    char               model[SP_SCAN_MODEL_MAX];
    size_t             len[SP_SCAN_NMEMBERS];
    char               name[SP_SCAN_NMEMBERS][SP_SCAN_KEY_MAX];
    int64_t            bytes;           /* every byte fed */
    int64_t            text_bytes;      /* inside string values: estimates */

    /* parser state */
    uint64_t           depth;           /* open objects and arrays */
    char               root;            /* '{', '[' or 0 */
    char               element;         /* the root array's open element */
    unsigned           in_string:1;
    unsigned           escape:1;
    unsigned           in_key:1;
    unsigned           expect_key:1;
    unsigned           key_done:1;
    size_t             key_len;         /* SP_SCAN_KEY_MAX: too long */
    char               key[SP_SCAN_KEY_MAX];

    /*
     * The value being copied: into work first, so that one cut short or
     * too large replaces nothing.
     */
    int                capturing;       /* member + 1, or 0 */
    char               capture_name[SP_SCAN_KEY_MAX];
    size_t             work_len;        /* > its member's room: too large */
    char               work[SP_SCAN_USAGE_MAX];
} sp_scan_t;


void sp_scan_init(sp_scan_t *scan);

/* consumes all len bytes */
void sp_scan_feed(sp_scan_t *scan, const char *data, size_t len);

/*
 * What the scan found, as sp_usage_from_json() would have said of the
 * whole body: usage and model, and output_bytes from the string values
 * seen (for an estimate when there is no usage). Returns SP_OK when a
 * usage member was found and understood, SP_ERROR otherwise.
 */
int sp_scan_result(const sp_scan_t *scan, sp_provider_e provider,
    sp_response_info_t *info);


/* ---- request bodies: a validating scanner --------------------------- */

/*
 * A request body read without building a tree: one pass checks that it
 * is JSON as jansson reads it (json_loadb with JSON_REJECT_DUPLICATES and
 * JSON_ALLOW_NUL: UTF-8, escapes, surrogates, no key twice, numbers within
 * int64 and double) and writes a tape, one token a value or key, in
 * document order. The readers walk the tape: a container's members follow
 * it, and each token knows where its subtree ends.
 *
 * The scanner is never less strict than jansson. Where it cannot decide
 * cheaply (a body it finds invalid, keys that differ only after escapes,
 * deep nesting, numbers near the limits, very wide objects) it declines,
 * and the caller asks jansson, whose error messages are the client's.
 */

#define SP_JSON_TAPE_LOCAL   256    /* tokens held before one malloc */
#define SP_JSON_DEPTH_MAX    256    /* deeper: declined */
#define SP_JSON_WIDTH_MAX    64     /* object members checked for twins */

typedef enum {
    SP_JSON_OBJECT = 1,
    SP_JSON_ARRAY,
    SP_JSON_STRING,
    SP_JSON_INTEGER,
    SP_JSON_REAL,
    SP_JSON_TRUE,
    SP_JSON_FALSE,
    SP_JSON_NULL
} sp_json_type_e;

typedef struct {
    const char  *text;      /* string: its bytes as written, after '"' */
    uint32_t     raw_len;   /* string: bytes as written */
    uint32_t     end;       /* the token after this value's subtree */
    int64_t      value;     /* integer: the value; string: its length
                               decoded; object, array: members; real:
                               1 when not zero, 0 when zero */
    uint8_t      type;      /* sp_json_type_e */
    uint8_t      escaped;   /* string: holds backslash escapes */
} sp_json_token_t;

typedef struct {
    sp_json_token_t  *token;
    size_t            n;
    size_t            cap;
    int               nul;      /* a string value holds \u0000: jansson
                                   refuses it without JSON_ALLOW_NUL */
    sp_json_token_t   local[SP_JSON_TAPE_LOCAL];
} sp_json_tape_t;

void sp_json_tape_init(sp_json_tape_t *tape);
void sp_json_tape_free(sp_json_tape_t *tape);

/* appends a token; returns its index, or -1 when memory ran out */
long sp_json_tape_push(sp_json_tape_t *tape, sp_json_type_e type);

/*
 * Scans body (an object or an array, as json_loadb would accept it) onto
 * an empty tape. SP_OK: valid, token 0 is the root. SP_ERROR: invalid, or
 * declined (see above); the tape is then to be reset.
 */
int sp_json_scan(sp_json_tape_t *tape, const char *body, size_t len);

/*
 * A string token decoded into out (a C string of at most size - 1 bytes),
 * cut at the first NUL as jansson's json_string_value() would be seen by
 * strcmp(). Returns out.
 */
char *sp_json_cstr(const sp_json_token_t *t, char *out, size_t size);

/* the first size bytes of a string decoded; returns how many were written */
size_t sp_json_decode(const sp_json_token_t *t, char *out, size_t size);

/*
 * The value of member name in object i (the root is 0), or 0 when i is
 * not an object or has no such member: a lookup in what another found
 * must check for 0 first.
 */
size_t sp_json_get(const sp_json_tape_t *tape, size_t i, const char *name);

/*
 * A tree jansson accepted, written onto an empty tape, for the input the
 * scanner declined: the same readers then serve both. Strings point into
 * the tree (decoded, not escaped), which must outlive the tape. SP_ERROR:
 * memory ran out.
 */
struct json_t;

int sp_json_tape_from_tree(sp_json_tape_t *tape, struct json_t *v);


#endif /* SP_SCAN_H */
