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


#endif /* SP_SCAN_H */
