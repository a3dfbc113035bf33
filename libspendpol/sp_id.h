/*
 * Id formats: every id Spendpol makes is a four-byte prefix naming its
 * kind and a fixed number of lowercase hex digits. One table here, so
 * the admin API validates, controld generates (cd_random_id with these
 * prefixes and SP_ID_RANDOM_BYTES) and error messages describe one set
 * of formats.
 */

#ifndef SP_ID_H
#define SP_ID_H

#include "spendpol.h"


enum {
    SP_ID_KEY = 0,                /* an API key's id (not the key) */
    SP_ID_BUDGET,
    SP_ID_AGENT,
    SP_ID_ALERT,
    SP_ID_ALERT_RULE,
    SP_ID_EVENT,                  /* an audit event, made by the module */
    SP_ID_POLICY,
    SP_ID_SHADOW_ALERT,
    SP_ID_KIND_COUNT
};

#define SP_ID_KEY_PREFIX         "key_"
#define SP_ID_BUDGET_PREFIX      "bud_"
#define SP_ID_AGENT_PREFIX       "agt_"
#define SP_ID_ALERT_PREFIX       "alr_"
#define SP_ID_ALERT_RULE_PREFIX  "arl_"
#define SP_ID_EVENT_PREFIX       "evt_"
#define SP_ID_POLICY_PREFIX      "pol_"
#define SP_ID_SHADOW_ALERT_PREFIX  "sai_"

/* random bytes behind a generated id: 24 hex digits */
#define SP_ID_RANDOM_BYTES       12

/*
 * An event id is not random: 12 hex of the request's start in ms, 8 of
 * the worker, 8 of the worker's sequence, so ids sort by time per worker
 */
#define SP_ID_EVENT_HEX          28

/* the longest id with its NUL */
#define SP_ID_MAX                33

typedef struct {
    const char  *prefix;
    size_t       hex;             /* lowercase hex digits after it */
    const char  *noun;            /* "budget", for messages */
} sp_id_format_t;

/* NULL when kind is out of range */
const sp_id_format_t *sp_id_format(unsigned kind);

/* 1 when id[0..len) is an id of that kind; reads no byte past len */
int sp_id_valid(unsigned kind, const char *id, size_t len);

/* the kind of a well-formed id, or -1 */
int sp_id_kind(const char *id, size_t len);

/*
 * What an id of that kind looks like, for an error message: "a budget id:
 * \"bud_\" followed by 24 lowercase hex digits". Returns the length
 * written (truncated to outlen - 1, NUL-terminated), 0 for a bad kind.
 */
size_t sp_id_expected(unsigned kind, char *out, size_t outlen);


#endif /* SP_ID_H */
