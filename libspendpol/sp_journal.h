/*
 * The journal: one JSON object per line, appended by nginx workers with a
 * single write() each, tailed by controld and loaded into PostgreSQL.
 *
 * A line is at most SP_JOURNAL_LINE_MAX bytes and ends with '\n'. Fields
 * (all present, strings may be "", but for routed .. client_addr,
 * written only when set: routed true, attempts > 1, strings not "",
 * template_version > 0, guard_score_milli > 0, hallucination_pct >= 0):
 *
 *   {"v":1,"id":"evt_...","ts_ms":1764230000123,"org_id":"...",
 *    "api_key_id":"key_...","provider":"openai","requested_model":"...",
 *    "model":"...","input_tokens":12,"output_tokens":34,
 *    "cached_tokens":0,"cache_write_tokens":0,"cost_nano":150000,
 *    "status":200,"cache":"miss","saved_nano":0,"stream":false,
 *    "latency_ms":12,
 *    "gateway_us":85,"department":"...","project":"...","agent_id":"...",
 *    "trace_id":"<uuid>","span_id":"<16 hex>","parent_id":"...",
 *    "warnings":"usage_estimated,unpriced_model","error_code":"...",
 *    "epoch":1764230000000,"reserved_nano":450000,
 *    "endpoint":"POST /chat/completions",
 *    "routed":true,"route_rule":"rr_...","attempts":2,
 *    "attempt_log":"openai/gpt-4o:429","route_note":"...",
 *    "template_id":"<uuid>","template_version":3,
 *    "guard_score_milli":850,"pii_types":"card","policy_action":"redact",
 *    "policy_ids":"pol_...","policy_warnings":"pii_detected",
 *    "hallucination_pct":12,"shadow_key_type":"openai",
 *    "shadow_key_fp":"fp_0123456789abcdef","client_addr":"10.0.0.7"}
 *
 * epoch identifies the nginx instance's shared spend counters (when they
 * were created, unix ms): controld sums this node's ingested spend per
 * budget and epoch, so the node can tell settled-but-not-ingested spend
 * from ingested spend (see sp_budget.h).
 *
 * Unknown fields are ignored by the reader, so a newer writer stays
 * readable.
 */

#ifndef SP_JOURNAL_H
#define SP_JOURNAL_H

#include "spendpol.h"


#define SP_JOURNAL_VERSION    1
#define SP_JOURNAL_LINE_MAX   65536   /* a full record, all escaped */
#define SP_ID_LEN             64      /* max length of any id field */
#define SP_FIELD_LEN          256     /* max length of other strings */
#define SP_JOURNAL_NOTE_LEN   1024    /* attempt_log, route_note */

typedef struct {
    char      id[SP_ID_LEN];
    int64_t   ts_ms;                  /* request start, unix ms */
    char      org_id[SP_ID_LEN];
    char      api_key_id[SP_ID_LEN];
    char      provider[SP_ID_LEN];
    char      requested_model[SP_FIELD_LEN];
    char      model[SP_FIELD_LEN];
    int64_t   input_tokens;
    int64_t   output_tokens;
    int64_t   cached_tokens;
    int64_t   cache_write_tokens;
    int64_t   cost_nano;
    int       status;
    char      cache[16];              /* "hit", "miss" or "skip" (the
                                         cache was not looked up) */
    int64_t   saved_nano;             /* a hit: what the answer cost
                                         when it was stored; else 0 */
    int       stream;
    int64_t   latency_ms;             /* whole request, as the client saw */
    int64_t   gateway_us;             /* the gateway's own time */
    char      department[SP_FIELD_LEN];
    char      project[SP_FIELD_LEN];
    char      agent_id[SP_ID_LEN];
    char      trace_id[SP_ID_LEN];
    char      span_id[SP_ID_LEN];
    char      parent_id[SP_ID_LEN];
    char      warnings[SP_FIELD_LEN]; /* comma-separated */
    char      error_code[SP_ID_LEN];
    int64_t   epoch;                  /* the node's spend counters' epoch */
    int64_t   reserved_nano;          /* the worst case held at admission */
    char      endpoint[SP_FIELD_LEN]; /* "POST /chat/completions": the
                                         method and the path after
                                         /v1/{provider}, re-encoded */

    /* routing (sp_route.h); absent in older lines: 0 and "" */
    int       routed;                 /* a rule chose the target */
    char      route_rule[SP_ID_LEN];  /* its id */
    int       attempts;               /* upstream attempts, 0 or 1 when
                                         none fell back */
    char      attempt_log[SP_JOURNAL_NOTE_LEN];  /* the attempts that
                                         failed, in order, comma-separated
                                         "provider/model:status" (status
                                         0: no answer, a connect failure,
                                         reset or timeout) */
    char      route_note[SP_JOURNAL_NOTE_LEN];   /* rules skipped, and
                                         why; targets left out */

    /* the prompt template applied (sp_template.h); "" and 0: none */
    char      template_id[SP_ID_LEN];
    int64_t   template_version;

    /*
     * Policies and scores (sp_policy.h, sp_pii.h, sp_halluc.h), written
     * only when set: guard_score_milli > 0, strings not "",
     * hallucination_pct >= 0. Absent: 0, "" and -1.
     */
    int       guard_score_milli;      /* 0..1000: the prompt's PII score */
    char      pii_types[SP_FIELD_LEN];    /* names of the types found in
                                         the prompt, "card,email" */
    char      policy_action[16];      /* the decision: "", "log", "warn",
                                         "redact" or "block" */
    char      policy_ids[SP_JOURNAL_NOTE_LEN];   /* every policy matched,
                                         comma-separated */
    char      policy_warnings[SP_FIELD_LEN];     /* the warn codes sent in
                                         X-Spendpol-Policy-Warning */
    int       hallucination_pct;      /* 0..100; -1: not scored */

    /*
     * Shadow AI: a raw provider key was presented instead of a Spendpol
     * key (refused with 401). Its kind (sp_pii_secret_kind()) and
     * fingerprint, "fp_" and the first 16 hex digits of its SHA-256,
     * never the key; and the client's address. The line's org_id is the
     * deployment's shadow organisation (setting "shadow_org").
     */
    char      shadow_key_type[SP_ID_LEN];
    char      shadow_key_fp[SP_ID_LEN];
    char      client_addr[SP_ID_LEN];
} sp_journal_record_t;

/*
 * Formats rec as one line ending in '\n' into out (outlen bytes, at least
 * SP_JOURNAL_LINE_MAX). Strings are JSON-escaped. Returns the length, or 0
 * if it does not fit.
 */
size_t sp_journal_format(const sp_journal_record_t *rec, char *out,
    size_t outlen);

/*
 * Parses one line (without or with its '\n'). Returns SP_OK, or SP_ERROR
 * with a reason in err when the line is not a journal record.
 */
int sp_journal_parse(const char *line, size_t len, sp_journal_record_t *rec,
    char *err, size_t errlen);

/*
 * The bounds a record loaded into the ledger must keep. A line outside
 * them is no request the gateway wrote (it never reports negative usage;
 * a whole request past a trillion tokens or a million USD is a corrupt or
 * forged line), so the reader refuses it rather than bill or credit it.
 */
#define SP_JOURNAL_TOKENS_MAX  1000000000000LL        /* 1e12 tokens */
#define SP_JOURNAL_NANO_MAX    1000000000000000LL     /* 1e15 nano-USD,
                                                         1,000,000 USD */
#define SP_JOURNAL_STATUS_MIN  100
#define SP_JOURNAL_STATUS_MAX  599

/*
 * Checks a parsed record's numbers: tokens 0..SP_JOURNAL_TOKENS_MAX,
 * cached_tokens + cache_write_tokens <= input_tokens (both are part of the
 * input), cost_nano, reserved_nano and saved_nano 0..SP_JOURNAL_NANO_MAX,
 * status 0 (no
 * response was sent) or SP_JOURNAL_STATUS_MIN..MAX, attempts
 * 0..SP_ROUTE_MAX_TARGETS, template_version 0..2^31 - 1 (the audit
 * column is an integer), template_id "" or a UUID. Returns SP_OK, or
 * SP_ERROR with the first field out of range and its bound in err (never
 * the record's strings, so err is safe to log).
 */
int sp_journal_check(const sp_journal_record_t *rec, char *err,
    size_t errlen);

/* copies src into a fixed field, truncating at a UTF-8 boundary */
void sp_field_copy(char *dst, size_t dstlen, const char *src, size_t len);


#endif /* SP_JOURNAL_H */
