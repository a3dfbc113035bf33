/*
 * Routing rules: which provider and model a request goes to, and where
 * it falls back. controld validates a rule with sp_route_validate() and
 * publishes an organisation's enabled rules, in evaluation order, as one
 * JSON array in the snapshot (SP_TABLE_ROUTES); each nginx worker
 * compiles that array once per snapshot (sp_route_compile()) and
 * evaluates it per request. POST /routing/evaluate compiles and evaluates
 * with the same code, so the dry run gives the module's answer.
 *
 * A rule (the JSON the admin API takes and lists):
 *
 *   {"id": "rr_...", "name": "...", "priority": 10, "enabled": true,
 *    "conditions": {                       all optional, ANDed
 *      "model": "gpt-4o*",                 exact or glob (* ? [a-z] [!x])
 *      "provider": "openai",               as requested
 *      "api_key_id": "key_...", "agent_id": "...",
 *      "department": "...", "project": "...",
 *      "prompt_tokens": {"min": 0, "max": 8000},       estimated
 *      "time_window": {"timezone": "Europe/Paris",     IANA name
 *                      "days": ["mon", "tue", ...],    default all
 *                      "start": "09:00", "end": "18:00"},
 *                                           end < start spans midnight
 *      "budget_used_pct": {"gte": 80, "lt": 100,
 *                          "budget_id": "bud_..."},
 *                     the used share of any budget covering the request
 *                     (or of that one); gte and lt each optional
 *      "has_tools": true, "has_images": false },
 *    "action": one of
 *      {"type": "rewrite", "model": "gpt-4o-mini"}
 *      {"type": "provider", "provider": "anthropic",
 *       "model": "claude-sonnet-4-5"  or  "model_map": {"gpt-4o": "...",
 *       "*": "..."}}                       (the requested model, or "*")
 *      {"type": "split", "targets": [{"provider": "openai",
 *       "model": "gpt-4o", "weight": 70}, ...], "sticky": true}
 *                                           sticky: by trace id
 *      {"type": "fallback", "targets": [{"provider": "anthropic",
 *       "model": "claude-sonnet-4-5"}, ...]}
 *                                           the request as sent first
 *    "fallback": [{"provider": ..., "model": ...}, ...],
 *                     tried in order after the action's target
 *    "max_attempts": 3,               default 1 + the fallbacks, at most
 *                                     SP_ROUTE_MAX_TARGETS
 *    "attempt_timeout_ms": 30000,     until the answer's headers; 0: none
 *    "cooldown": {"failures": 3, "seconds": 30} }
 *
 * Evaluation: rules in order (priority ascending, then creation); the
 * first whose conditions all hold and whose primary target can take the
 * request (the caller's usable() says, e.g. a translation that would not
 * be faithful) wins; a rule skipped for its target is recorded in the
 * decision's explanation. Fallback targets the request cannot use are
 * left out of the chain (also explained).
 */

#ifndef SP_ROUTE_H
#define SP_ROUTE_H

#include "spendpol.h"
#include "sp_usage.h"


#define SP_ROUTE_MAX_TARGETS      8     /* primary and fallbacks */
#define SP_ROUTE_MAX_RULES        1000  /* an organisation's */
#define SP_ROUTE_EXPLAIN_LEN      1024
#define SP_ROUTE_DEFAULT_COOLDOWN_FAILURES  3
#define SP_ROUTE_DEFAULT_COOLDOWN_SECONDS   30


typedef struct sp_route_set_s  sp_route_set_t;


/*
 * Validates one rule object (POST /routing/rules; PATCH validates the
 * merged rule). SP_ERROR: field gets the member's path ("action.targets
 * [1].weight", "conditions.model") and err what was expected ("a glob
 * with balanced brackets", "an IANA time zone such as Europe/Paris",
 * "weights that sum to more than zero", "one of openai, anthropic, ...").
 * "id", "created_at" and "updated_at" are accepted and not checked.
 */
int sp_route_validate(const char *json, size_t len, char *field,
    size_t fieldlen, char *err, size_t errlen);

/*
 * Compiles a JSON array of rules, in evaluation order, each one
 * sp_route_validate() accepts (a rule that no longer does, e.g. a time
 * zone that left the system, is skipped: never matches). NULL with a
 * reason when out of memory or not an array.
 */
sp_route_set_t *sp_route_compile(const char *json, size_t len, char *err,
    size_t errlen);
void sp_route_free(sp_route_set_t *set);
size_t sp_route_count(const sp_route_set_t *set);

/*
 * Of the compiled rules, how many never match because they failed
 * validation; err gets the first one's number, id, member and reason
 * (for the worker's error log), "" when none.
 */
size_t sp_route_invalid(const sp_route_set_t *set, char *err,
    size_t errlen);


typedef struct {
    sp_provider_e  provider;
    char           model[SP_FIELD_LEN];
} sp_route_target_t;

/* what evaluation knows of a request */
typedef struct {
    sp_provider_e  provider;          /* as requested */
    sp_str_t       model;             /* as requested */
    sp_str_t       api_key_id;
    sp_str_t       agent_id;
    sp_str_t       department;
    sp_str_t       project;
    sp_str_t       trace_id;          /* sticky splits hash it */
    int            has_tools;
    int            has_images;
    int64_t        now_ms;            /* unix ms */
    uint64_t       random;            /* non-sticky splits */

    /*
     * Asked only when a rule's condition needs them. prompt_tokens: the
     * prompt's estimate. budget_used_ppm: the used share in parts per
     * million of budget_id (len 0: the largest over every budget that
     * covers the request), -1 when there is no such budget.
     */
    int64_t      (*prompt_tokens)(void *data);
    int64_t      (*budget_used_ppm)(void *data, sp_str_t budget_id);
    /* 1 when the request can go to target; else 0 with a reason */
    int          (*usable)(void *data, const sp_route_target_t *target,
                           char *why, size_t whylen);
    void          *data;
} sp_route_request_t;

typedef struct {
    int                matched;             /* 0: no rule applies */
    char               rule_id[SP_ID_LEN];
    char               rule_name[SP_FIELD_LEN];
    sp_route_target_t  targets[SP_ROUTE_MAX_TARGETS];  /* [0] first */
    size_t             ntargets;
    int                max_attempts;
    int64_t            attempt_timeout_ms;  /* 0: none */
    int                cooldown_failures;
    int64_t            cooldown_ms;
    /* why: the rule and the conditions that matched, rules skipped */
    char               explain[SP_ROUTE_EXPLAIN_LEN];
} sp_route_decision_t;

/* always fills out; out->matched says whether a rule applies */
void sp_route_evaluate(const sp_route_set_t *set,
    const sp_route_request_t *req, sp_route_decision_t *out);

/*
 * 1 when glob is well formed: not empty, each [set] closed, not empty and
 * its ranges low to high, no stray ']' (policies' model lists too)
 */
int sp_route_glob_valid(const char *glob, size_t len);

/* 1 when name matches glob (* ? [set] [!set]); a malformed glob: 0 */
int sp_route_glob_match(const char *glob, size_t glob_len, const char *name,
    size_t len);


#endif /* SP_ROUTE_H */
