/*
 * Policies: what a request may ask for, evaluated once in the request
 * path (stage 5: after templates and attribution, before routing) and by
 * POST /policies/evaluate with the same code, so the dry run gives the
 * module's answer. controld validates a policy with sp_policy_validate()
 * and publishes an organisation's enabled policies, every scope, as one
 * JSON array (SP_TABLE_POLICIES); each worker compiles it once per
 * snapshot.
 *
 * A policy (the JSON the admin API takes and lists):
 *
 *   {"id": "pol_...", "name": "No card numbers", "enabled": true,
 *    "scope": {"type": "organization"}            as budgets: organization,
 *            | {"type": "api_key", "value": "key_..."}   api_key, agent,
 *                                                  department, project
 *    "action": "block" | "warn" | "log" | "redact",   redact: pii and
 *                                                  pattern only
 *    "code": "pii_detected",       optional [a-z0-9_]{1,48}: what a warn
 *                                  puts in X-Spendpol-Policy-Warning;
 *                                  default per kind (below)
 *    "kind": one of
 *      "model":       "allow_models": [glob...], "deny_models": [glob...],
 *                     "allow_providers": [...], "deny_providers": [...]
 *                     (at least one list; the requested provider and
 *                     model: a deny match, or an allow list that does
 *                     not match, violates)         code model_not_allowed
 *      "limits":      "max_tokens": N (1..10^9; a request above it, or
 *                     without an output limit when "require_max_tokens":
 *                     true, violates) and/or "max_cost_usd": "0.50"
 *                     (decimal string or number, to the nano-dollar; the
 *                     request's worst case above it violates; an unpriced
 *                     model's worst case is unknown and does not)
 *                                                  code limit_exceeded
 *      "attribution": "require": "department" | "project" | "either" |
 *                     "both"                      code attribution_missing
 *      "pii":         "threshold": 0..1 (the guard score at or above it
 *                     violates; default 0: any entity), "entities":
 *                     {"card": "redact", "email": "log", ...} (types
 *                     not listed: the policy's action; a list ["card",
 *                     "iban"] limits the policy to those types),
 *                     "scan_responses": false      code pii_detected
 *      "pattern":     "patterns": ["regex", ...] (1..32, each <= 1024
 *                     bytes, PCRE2 syntax, UTF), "case_insensitive":
 *                     false; matched against the text the model reads
 *                     (sp_pii_body_text()), compiled with JIT, with a
 *                     match limit and a depth limit: a pattern that hits
 *                     a limit counts as matched (fail closed) and says so
 *                                                  code pattern_matched
 *      "time_window": "timezone", "days", "start", "end" as in routing
 *                     rules; a request outside the window violates
 *                                                  code outside_time_window
 *   }
 *
 * Evaluation: every enabled policy whose scope covers the request
 * (organization always; api_key, agent, department, project: the
 * request's value equals the scope's value) and whose condition is
 * violated is a match. The decision is the strongest action matched:
 * block > redact > warn > log. A pii or pattern policy with action
 * redact redacts its spans (sp_pii_redact()), a pii policy's per-entity
 * choices apply per type (an entity type set to block blocks). The PII
 * scan always runs (all types), so the guard score is known for every
 * request, with or without policies.
 */

#ifndef SP_POLICY_H
#define SP_POLICY_H

#include "spendpol.h"
#include "sp_journal.h"
#include "sp_pii.h"


#define SP_POLICY_MAX             500   /* an organisation's */
#define SP_POLICY_MAX_MATCHES     16    /* kept per decision */
#define SP_POLICY_MAX_PATTERNS    32
#define SP_POLICY_PATTERN_MAX_LEN 1024
#define SP_POLICY_MATCH_LIMIT     100000   /* pcre2_set_match_limit */
#define SP_POLICY_DEPTH_LIMIT     1000     /* pcre2_set_depth_limit */
#define SP_POLICY_REASON_LEN      256

typedef enum {
    SP_POLICY_PASS = 0,
    SP_POLICY_LOG,
    SP_POLICY_WARN,
    SP_POLICY_REDACT,
    SP_POLICY_BLOCK
} sp_policy_action_e;

typedef enum {
    SP_POLICY_KIND_MODEL = 0,
    SP_POLICY_KIND_LIMITS,
    SP_POLICY_KIND_ATTRIBUTION,
    SP_POLICY_KIND_PII,
    SP_POLICY_KIND_PATTERN,
    SP_POLICY_KIND_TIME_WINDOW
} sp_policy_kind_e;


typedef struct sp_policy_set_s  sp_policy_set_t;


/* "pass", "log", "warn", "redact", "block" */
const char *sp_policy_action_name(sp_policy_action_e action);
/* "model", "limits", ... */
const char *sp_policy_kind_name(sp_policy_kind_e kind);

/*
 * Validates one policy object (POST /policies; PATCH validates the merged
 * policy). SP_ERROR: field gets the member's path ("patterns[1]",
 * "entities.card", "scope.value") and err what was expected; for a
 * pattern PCRE2's own message and the offset ("missing closing
 * parenthesis at offset 5"). "id", "created_at" and "updated_at" are
 * accepted and not checked; an unknown member is an error.
 */
int sp_policy_validate(const char *json, size_t len, char *field,
    size_t fieldlen, char *err, size_t errlen);

/*
 * Compiles a JSON array of policies (each one sp_policy_validate()
 * accepts; one that no longer does never matches and is counted by
 * sp_policy_invalid()). NULL with a reason when out of memory or not an
 * array. A set is used by one thread at a time (it keeps PCRE2 match
 * data).
 */
sp_policy_set_t *sp_policy_compile(const char *json, size_t len, char *err,
    size_t errlen);
void sp_policy_free(sp_policy_set_t *set);
size_t sp_policy_count(const sp_policy_set_t *set);
size_t sp_policy_invalid(const sp_policy_set_t *set, char *err,
    size_t errlen);


/* what evaluation knows of a request (after stage 4) */
typedef struct {
    sp_provider_e  provider;          /* as requested */
    sp_str_t       model;             /* as requested */
    sp_str_t       api_key_id;
    sp_str_t       agent_id;
    sp_str_t       department;        /* "" when unknown */
    sp_str_t       project;
    int64_t        max_tokens;        /* the output limit asked; -1 none */
    int64_t        now_ms;            /* unix ms */
    const char    *body;              /* the request body, JSON */
    size_t         body_len;

    /* asked only when a limits policy has max_cost_usd: nano-USD, -1
       when the model has no price */
    int64_t      (*worst_case_nano)(void *data);
    void          *data;
} sp_policy_request_t;

typedef struct {
    char     policy_id[SP_ID_LEN];
    char     name[SP_FIELD_LEN];
    int      kind;                    /* sp_policy_kind_e */
    int      action;                  /* sp_policy_action_e, as applied */
    char     code[SP_ID_LEN];
    char     reason[SP_POLICY_REASON_LEN];   /* "card number found (2)",
                                         "model gpt-4o matches deny glob
                                         \"gpt-4*\"": never a value found */
} sp_policy_match_t;

typedef struct {
    int                decision;      /* sp_policy_action_e */
    int                blocked_by;    /* index in matches, or -1 */
    sp_policy_match_t  matches[SP_POLICY_MAX_MATCHES];
    size_t             nmatches;
    size_t             total_matches;
    char               warnings[SP_FIELD_LEN];    /* distinct codes of the
                                         warn matches, comma-separated */
    char               policy_ids[SP_JOURNAL_NOTE_LEN];  /* every match */

    /* the PII scan of the body (all types) plus pattern spans to redact
       (type SP_PII_PATTERN) */
    sp_pii_result_t    pii;
    uint32_t           redact_mask;   /* types (bits) to redact */

    /* answers: the types to scan (0: answers are not scanned) */
    uint32_t           response_mask;
    uint32_t           response_redact;   /* of them, the types redacted
                                         in answers */
} sp_policy_decision_t;

/*
 * Always fills out (set may be NULL: no policies, the scan still runs).
 * SP_ERROR only when the body is not JSON the scanner can read: the
 * caller refuses the request (never fail open).
 */
int sp_policy_evaluate(sp_policy_set_t *set, const sp_policy_request_t *req,
    sp_policy_decision_t *out);

/* a block's client message: "blocked by policy \"name\" (pol_...): reason" */
size_t sp_policy_message(const sp_policy_decision_t *d, char *out,
    size_t outlen);


#endif /* SP_POLICY_H */
