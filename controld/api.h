/*
 * The route table and one handler set per REST resource (api_*.c), with
 * the validation of their bodies. Needs controld.h first.
 */

#ifndef CD_API_H
#define CD_API_H


#include "sp_cache.h"
#include "sp_egress.h"


extern const cd_route_t  cd_routes[];
extern const size_t      cd_routes_count;

void cd_api_healthz(cd_request_t *r);
void cd_api_metrics(cd_request_t *r);

/* api_openapi.c: controld/openapi.json, embedded by the Makefile */
extern const char    cd_openapi_json[];
extern const size_t  cd_openapi_json_len;

void cd_api_openapi(cd_request_t *r);

void cd_api_keys_create(cd_request_t *r);
void cd_api_keys_list(cd_request_t *r);
void cd_api_keys_get(cd_request_t *r);
void cd_api_keys_revoke(cd_request_t *r);
void cd_api_keys_rotate(cd_request_t *r);
void cd_api_keys_update(cd_request_t *r);

void cd_api_providers_put(cd_request_t *r);
void cd_api_providers_list(cd_request_t *r);
void cd_api_providers_get(cd_request_t *r);
void cd_api_providers_delete(cd_request_t *r);

void cd_api_audit_list(cd_request_t *r);
void cd_api_audit_summary(cd_request_t *r);
void cd_api_audit_export(cd_request_t *r);

void cd_api_org_get(cd_request_t *r);

void cd_api_compliance_verify(cd_request_t *r);
void cd_api_compliance_erase(cd_request_t *r);
void cd_api_compliance_erasures(cd_request_t *r);
void cd_api_compliance_retention_get(cd_request_t *r);
void cd_api_compliance_retention_put(cd_request_t *r);
void cd_api_org_update(cd_request_t *r);

void cd_api_orgs_create(cd_request_t *r);
void cd_api_orgs_list(cd_request_t *r);
void cd_api_orgs_get(cd_request_t *r);


/* "openai" ... -> default base URL ("" when none), NULL when unknown */
const char *cd_provider_default_url(const char *name);

/*
 * CD_OK when name is a provider of the catalogue (sp_provider.h), else
 * CD_ERROR after answering status (404 for a path part, 400 for a query
 * value) naming field and the providers expected
 */
int cd_provider_param(cd_request_t *r, const char *name, unsigned status,
    const char *field);

/* normalises a base URL in place (trailing '/' stripped); 0 if invalid */
int cd_base_url_normalize(char *url);


/* scopes array -> bits; CD_ERROR with the offending index */
int cd_scopes_parse(json_t *array, uint32_t *bits, size_t *bad_index)
    CD_CHECK;


/* ---- api_pricing.c ---------------------------------------------------- */

#define CD_PRICE_MAX_USD      1000000        /* per 1M tokens */
#define CD_PRICE_MAX_TOKENS   1000000000LL   /* max_output_tokens */

/* a validated PUT /pricing body; -1 means "not given" where optional */
typedef struct {
    int64_t  input;                 /* nano-USD per 1M tokens */
    int64_t  output;
    int64_t  cached_input;          /* -1: billed as input */
    int64_t  cache_write;           /* -1: billed as input */
    int64_t  max_output_tokens;     /* -1: unknown */
    int64_t  effective_us;          /* since the epoch */
    int      has_effective;         /* 0: from now */
} cd_price_input_t;


/*
 * A price as a decimal string ("2.50") or a JSON number, into nano-USD
 * per 1M tokens, exactly: a number is accepted only when its shortest
 * decimal form (at most 15 significant digits) has at most 9 decimals.
 * Fills err (field included) and returns CD_ERROR when refused.
 */
int cd_price_json_money(json_t *value, const char *field, int64_t *nano,
    cd_field_error_t *err) CD_CHECK;

/* validates the PUT /pricing body (keys already checked) into in */
int cd_price_body_parse(json_t *body, cd_price_input_t *in,
    cd_field_error_t *err) CD_CHECK;

/*
 * RFC 3339 date-time ("2026-12-01T00:00:00Z", "...T09:30:00.5+02:00")
 * into microseconds since the epoch; digits past microseconds are
 * dropped, a leap second counts as :59.999999. Years 1970 to 9999.
 */
int cd_rfc3339_parse(const char *s, int64_t *us) CD_CHECK;

/*
 * NULL when model is a name the pricing routes take: 1 to CD_NAME_MAX
 * printable UTF-8 characters, "*" only as the whole name (the
 * organisation's fallback price for the provider, SP_PRICE_FALLBACK_MODEL
 * in the snapshot); else the reason, a sentence.
 */
const char *cd_price_model_problem(const char *model);

/*
 * The price the proxy applies to provider/model for the organisation of
 * the transaction (row-level security): GET /pricing's resolution, with
 * the organisation's fallback price. CD_OK with *priced 1, *price and
 * *max_output_tokens (0: unknown), or *priced 0 when the model has no
 * price; CD_ERROR when a statement failed or memory ran out.
 */
int cd_pricing_resolve(cd_db_conn_t *c, const char *org_id,
    const char *provider, const char *model, sp_price_t *price,
    int64_t *max_output_tokens, int *priced) CD_CHECK;

void cd_api_pricing_list(cd_request_t *r);
void cd_api_pricing_get(cd_request_t *r);
void cd_api_pricing_put(cd_request_t *r);
void cd_api_pricing_delete(cd_request_t *r);


/* ---- allowed endpoints (api_org.c) ------------------------------------ */

/* "allowed_endpoints" of PUT /org: at most this many, replaced whole */
#define CD_ALLOWED_ENDPOINTS_MAX  64

typedef struct {
    const char  *provider;      /* one of the six; all point into the body */
    const char  *method;        /* sp_endpoint_method_valid() */
    const char  *path;          /* sp_endpoint_pattern_valid() */
} cd_allowed_endpoint_t;

/*
 * Validates an "allowed_endpoints" array into out (n entries, room for
 * CD_ALLOWED_ENDPOINTS_MAX). Each refusal names its entry and member
 * ("allowed_endpoints[2].path: ..."): 400 for a wrong type or an unknown
 * member, 422 for a missing member, an unknown provider or method, a path
 * the gateway cannot match, a repeated entry or too many.
 */
int cd_allowed_endpoints_parse(json_t *value, cd_allowed_endpoint_t *out,
    size_t *n, cd_field_error_t *err) CD_CHECK;


/* ---- rate limits (api_keys.c) ----------------------------------------- */

#define CD_RATE_LIMIT_MAX     4294967295LL    /* the snapshot's uint32 */

/*
 * "rate_limits": {"requests_per_minute": n, "tokens_per_minute": n}, each
 * an integer 0..CD_RATE_LIMIT_MAX (0: none). A member left out is -1
 * (POST: none; PATCH: unchanged); null for the whole object sets both to
 * 0. Fills err (field "rate_limits.requests_per_minute" ...) on refusal.
 */
typedef struct {
    int64_t  rpm;
    int64_t  tpm;
} cd_rate_limits_t;

int cd_rate_limits_parse(json_t *value, cd_rate_limits_t *rl,
    cd_field_error_t *err) CD_CHECK;

/* body's "rate_limits", or CD_ERROR after answering 400/422 */
int cd_rate_limits_of(cd_request_t *r, json_t *body, cd_rate_limits_t *rl)
    CD_CHECK;

/* the longest decimal text of an int64_t, with its NUL */
#define CD_INT_TEXT  24

/* rl as SQL parameters; an absent limit (< 0) is 0, unlimited */
void cd_rate_limits_text(const cd_rate_limits_t *rl, char *rpm, char *tpm);

/* {"requests_per_minute": rpm, "tokens_per_minute": tpm} */
json_t *cd_rate_limits_json(const char *rpm, const char *tpm);


/* ---- api_budgets.c, api_agents.c -------------------------------------- */

#define CD_BUDGET_ID_PREFIX       SP_ID_BUDGET_PREFIX
#define CD_AGENT_ID_PREFIX        SP_ID_AGENT_PREFIX
#define CD_RANDOM_ID_BYTES        SP_ID_RANDOM_BYTES  /* 24 hex characters */
#define CD_BUDGET_THRESHOLDS_MAX  20
#define CD_TIMEZONE_MAX           64

/* a validated budget body (POST, or PATCH merged onto the stored one) */
typedef struct {
    const char  *name;
    uint32_t     scope;                /* SP_BUDGET_SCOPE_* */
    const char  *scope_value;          /* "" for the organisation */
    const char  *provider;             /* NULL: any */
    const char  *model;                /* NULL: any */
    int64_t      limit_nano;
    const char  *period;               /* "daily" ... "total" */
    const char  *timezone;
    uint32_t     action;               /* SP_BUDGET_BLOCK / SP_BUDGET_WARN */
    int          thresholds[CD_BUDGET_THRESHOLDS_MAX];   /* ascending */
    size_t       nthresholds;
} cd_budget_input_t;


/* "organization" ... -> SP_BUDGET_SCOPE_*, or -1 */
int cd_budget_scope_parse(const char *name);
/* SP_BUDGET_SCOPE_* -> "organization" ..., NULL when out of range */
const char *cd_budget_scope_name(uint32_t scope);

/* "daily", "weekly", "monthly", "total" -> the same static string */
const char *cd_budget_period_parse(const char *name);

/* 1 when tz looks like an IANA zone name (PostgreSQL has the last word) */
int cd_timezone_wellformed(const char *tz);

/* limit_usd: a decimal string or an integer, > 0, into nano-USD */
int cd_budget_limit_parse(json_t *value, int64_t *nano,
    cd_field_error_t *err) CD_CHECK;

/* thresholds: integer percents 1..100, sorted, duplicates dropped */
int cd_budget_thresholds_parse(json_t *value, int *out, size_t *n,
    cd_field_error_t *err) CD_CHECK;

/* a PostgreSQL int[] text ("{50,80,100}") into out; CD_ERROR if not one */
int cd_budget_thresholds_from_text(const char *text, int *out, size_t *n)
    CD_CHECK;

/* the whole body; strings point into body */
int cd_budget_body_parse(json_t *body, cd_budget_input_t *in,
    cd_field_error_t *err) CD_CHECK;

/* 1 when spent reached percent % of limit (exact, no overflow) */
int cd_budget_threshold_reached(int64_t limit_nano, int64_t spent_nano,
    int percent);

void cd_api_budgets_create(cd_request_t *r);
void cd_api_budgets_list(cd_request_t *r);
void cd_api_budgets_get(cd_request_t *r);
void cd_api_budgets_update(cd_request_t *r);
void cd_api_budgets_delete(cd_request_t *r);
void cd_api_budgets_spend(cd_request_t *r);

/* api_leases.c: every node's budget leases; free a dead node's */
void cd_api_leases_list(cd_request_t *r);
void cd_api_leases_release(cd_request_t *r);

void cd_api_agents_create(cd_request_t *r);
void cd_api_agents_list(cd_request_t *r);
void cd_api_agents_get(cd_request_t *r);
void cd_api_agents_update(cd_request_t *r);
void cd_api_agents_delete(cd_request_t *r);
void cd_api_agents_pause(cd_request_t *r);
void cd_api_agents_resume(cd_request_t *r);


/* ---- api_cache.c ------------------------------------------------------ */

/* which members a PUT /cache/config body gave */
#define CD_CACHE_MODE            0x01u
#define CD_CACHE_TTL             0x02u
#define CD_CACHE_SCOPE           0x04u
#define CD_CACHE_DETERMINISTIC   0x08u
#define CD_CACHE_MAX_ENTRY       0x10u
#define CD_CACHE_THRESHOLD       0x20u
#define CD_CACHE_EMBED_PROVIDER  0x40u
#define CD_CACHE_EMBED_MODEL     0x80u
#define CD_CACHE_EMBED_SYSTEM    0x100u
#define CD_CACHE_EMBED_TIMEOUT   0x200u
#define CD_CACHE_MAX_VECTORS     0x400u

/*
 * The members of a PUT /cache/config body (keys already checked) over
 * config, the given ones flagged in given (CD_CACHE_*). A refusal names
 * its field: 400 for a wrong type, 422 for a value out of range or an
 * unknown name (anthropic as embedding_provider: it has no embeddings
 * endpoint). embedding_provider and embedding_model null unset them.
 */
int cd_cache_config_parse(json_t *body, sp_cache_config_t *config,
    unsigned *given, cd_field_error_t *err) CD_CHECK;

/*
 * The members given in put over config (the stored settings, or the
 * defaults), then the rule no single member shows: mode semantic needs
 * an embeddings provider and model, from this PUT or stored before (422
 * missing_field naming embedding_model, else embedding_provider).
 */
int cd_cache_config_merge(sp_cache_config_t *config,
    const sp_cache_config_t *put, unsigned given, cd_field_error_t *err)
    CD_CHECK;

/* {"mode", "ttl_seconds", "scope", "only_deterministic",
   "max_entry_bytes", "similarity_threshold", "embedding_provider",
   "embedding_model", "embed_system_prompt", "embedding_timeout_ms",
   "max_vectors"}, provider and model null when unset; NULL for an
   unknown mode, scope or provider, or no memory */
json_t *cd_cache_config_json(const sp_cache_config_t *config);

void cd_api_cache_config_get(cd_request_t *r);
void cd_api_cache_config_put(cd_request_t *r);
void cd_api_cache_purge(cd_request_t *r);
void cd_api_cache_stats(cd_request_t *r);


/* ---- api_alerts.c ----------------------------------------------------- */

void cd_api_alerts_list(cd_request_t *r);
void cd_api_alerts_get(cd_request_t *r);
void cd_api_alerts_acknowledge(cd_request_t *r);

void cd_api_alert_rules_create(cd_request_t *r);
void cd_api_alert_rules_list(cd_request_t *r);
void cd_api_alert_rules_delete(cd_request_t *r);


/* ---- api_routing.c ---------------------------------------------------- */

#define CD_RULE_PRIORITY_DEFAULT  100
#define CD_RULE_PRIORITY_MIN      (-1000000)
#define CD_RULE_PRIORITY_MAX      1000000

/*
 * An organisation's enabled routing rules as one JSON array in
 * evaluation order (priority, then creation), each the stored rule with
 * its id, name, priority and enabled: what the snapshot publishes
 * (SP_TABLE_ROUTES) and /routing/evaluate compiles. An aggregate over
 * routing_rules: one row, "[]" when there is none.
 */
#define CD_ROUTING_RULES_JSON                                                \
    "coalesce(jsonb_agg(rule || jsonb_build_object('id', id, 'name', name,"  \
    " 'priority', priority, 'enabled', enabled)"                            \
    " ORDER BY priority, created_at, id), '[]'::jsonb)::text"

/* a validated rule body (POST, or PATCH merged onto the stored rule) */
typedef struct {
    const char  *name;              /* points into the body */
    int          priority;
    int          enabled;
    json_t      *rule;              /* owned: the body without the members
                                       held in columns (id, name, priority,
                                       enabled, created_at, updated_at) */
} cd_rule_input_t;

/*
 * name (required), priority (default CD_RULE_PRIORITY_DEFAULT) and
 * enabled (default true), then the whole body through
 * sp_route_validate(): a refusal is 422 invalid_rule naming the member's
 * path ("action.targets[1].weight"). On CD_OK the caller frees in->rule.
 */
int cd_rule_body_parse(json_t *body, cd_rule_input_t *in,
    cd_field_error_t *err) CD_CHECK;

/* spent / limit in parts per million, exact (no floats); -1: no limit */
int64_t cd_route_used_ppm(int64_t spent_nano, int64_t limit_nano);

/* the "headers" of POST /routing/evaluate that routing reads */
typedef struct {
    int          skip;              /* X-Spendpol-Route: skip */
    const char  *trace_id;          /* X-Spendpol-Trace-Id, or NULL */
    char         field[64];         /* a refused header's field */
} cd_route_headers_t;

/* names matched case-insensitively; values must be strings */
int cd_route_headers_parse(json_t *headers, cd_route_headers_t *out,
    cd_field_error_t *err) CD_CHECK;

void cd_api_routing_rules_create(cd_request_t *r);
void cd_api_routing_rules_list(cd_request_t *r);
void cd_api_routing_rules_get(cd_request_t *r);
void cd_api_routing_rules_update(cd_request_t *r);
void cd_api_routing_rules_delete(cd_request_t *r);
void cd_api_routing_evaluate(cd_request_t *r);


/* ---- api_policies.c --------------------------------------------------- */

/*
 * An organisation's enabled policies as one JSON array, oldest first,
 * each the stored policy with its id: what the snapshot publishes
 * (SP_TABLE_POLICIES) and /policies/evaluate compiles. An aggregate over
 * policies: one row, "[]" when there is none.
 */
#define CD_POLICIES_JSON                                                     \
    "coalesce(jsonb_agg(policy || jsonb_build_object('id', id)"             \
    " ORDER BY created_at, id), '[]'::jsonb)::text"

/*
 * A policy body (POST, PATCH merged onto the stored policy, or one of
 * /policies/evaluate's "policies"), with enabled (true) and scope
 * (organization) written down when absent, through sp_policy_validate().
 * A refusal is 422 naming the member's path after prefix: code
 * invalid_pattern for a regex PCRE2 refuses (its message and offset),
 * else validation_error (missing_field for a missing name). On CD_OK
 * *policy (owned) is the body without id, created_at and updated_at.
 */
int cd_policy_body_parse(json_t *body, const char *prefix, json_t **policy,
    cd_field_error_t *err) CD_CHECK;

void cd_api_policies_create(cd_request_t *r);
void cd_api_policies_list(cd_request_t *r);
void cd_api_policies_get(cd_request_t *r);
void cd_api_policies_update(cd_request_t *r);
void cd_api_policies_delete(cd_request_t *r);
void cd_api_policies_evaluate(cd_request_t *r);


/* ---- api_prompts.c ---------------------------------------------------- */

/*
 * The snapshot record of each template (sp_template.h): {"id", "slug",
 * "latest", "labels": {...}, "versions": [{"version": n, ...}]}, from
 * prompts p (the template's row) as text.
 */
#define CD_PROMPT_RECORD_JSON                                                \
    "jsonb_build_object('id', p.id::text, 'slug', p.slug,"                   \
    " 'latest', (SELECT coalesce(max(v.version), 0) FROM prompt_versions v"  \
    " WHERE v.prompt_id = p.id),"                                            \
    " 'labels', (SELECT coalesce(jsonb_object_agg(l.label, l.version),"      \
    " '{}'::jsonb) FROM prompt_labels l WHERE l.prompt_id = p.id),"          \
    " 'versions', (SELECT coalesce(jsonb_agg(v.body ||"                      \
    " jsonb_build_object('version', v.version) ORDER BY v.version),"         \
    " '[]'::jsonb) FROM prompt_versions v WHERE v.prompt_id = p.id))::text"

/*
 * A version object through sp_template_validate(); a refusal is 422
 * invalid_template naming the member's path after prefix ("version."
 * for POST /prompts, "" for POST /prompts/{slug}/versions).
 */
int cd_prompt_version_parse(json_t *version, const char *prefix,
    cd_field_error_t *err) CD_CHECK;

void cd_api_prompts_list(cd_request_t *r);
void cd_api_prompts_create(cd_request_t *r);
void cd_api_prompts_get(cd_request_t *r);
void cd_api_prompts_version_create(cd_request_t *r);
void cd_api_prompts_label_put(cd_request_t *r);
void cd_api_prompts_label_delete(cd_request_t *r);


/* ---- api_shadow.c ----------------------------------------------------- */

#define CD_SHADOW_ID_PREFIX   SP_ID_SHADOW_ALERT_PREFIX
/* POST /shadow-ai/logs: a body up to this size (http.c raises
   SPENDPOL_API_BODY_MAX for this route alone), and this many lines */
#define CD_SHADOW_BODY_MAX    (10L * 1024 * 1024)
#define CD_SHADOW_LINES_MAX   100000
#define CD_SHADOW_PATH        "/shadow-ai/logs"

/* the lines of one batch and their AI hits, as JSON for the upsert */
typedef struct {
    sp_egress_format_e  format;
    int64_t             now_ms;           /* for year-less times */
    long                lines;
    long                queries;
    long                ai_queries;
    long                unreadable;
    long                first_unreadable; /* 1-based; 0: none */
    char                first_reason[128];/* its shape, never its text */
    char               *hits;             /* owned: "[{...},..." */
    size_t              len;
    size_t              cap;
} cd_shadow_batch_t;

void cd_shadow_batch_init(cd_shadow_batch_t *b, sp_egress_format_e format,
    int64_t now_ms);
void cd_shadow_batch_free(cd_shadow_batch_t *b);

/* one line (no '\n'): counted, and an AI hit kept; CD_ERROR: no memory */
int cd_shadow_batch_line(cd_shadow_batch_t *b, const char *line, size_t len)
    CD_CHECK;

/*
 * Lines of text into b. consumed NULL: every line, the last one without
 * its '\n' too, at most CD_SHADOW_LINES_MAX in b (CD_DECLINED beyond);
 * else only whole lines, *consumed their bytes (a tail's partial line
 * waits). CD_ERROR: no memory.
 */
#ifndef CD_DECLINED
#define CD_DECLINED  -5
#endif
int cd_shadow_batch_text(cd_shadow_batch_t *b, const char *text, size_t len,
    size_t *consumed) CD_CHECK;

/*
 * Upserts b's hits into org's alerts (one per client and UTC day) in c's
 * transaction: the ids touched, one per row, or NULL when the statement
 * failed (or b has no hit: check b->len first).
 */
PGresult *cd_shadow_batch_commit(cd_db_conn_t *c, const char *org,
    cd_shadow_batch_t *b) CD_CHECK;

/* 1 when id is "sai_" and 24 lowercase hex digits */

void cd_api_shadow_alerts_list(cd_request_t *r);
void cd_api_shadow_alerts_get(cd_request_t *r);
void cd_api_shadow_alerts_acknowledge(cd_request_t *r);
void cd_api_shadow_logs(cd_request_t *r);

void cd_api_chargeback_create(cd_request_t *r);
void cd_api_chargeback_list(cd_request_t *r);
void cd_api_chargeback_get(cd_request_t *r);
void cd_api_chargeback_update(cd_request_t *r);
void cd_api_chargeback_delete(cd_request_t *r);
void cd_api_chargeback_finalize(cd_request_t *r);


/* ---- api_forecast.c (forecast.h: the series and the job) -------------- */

void cd_api_forecast_spend(cd_request_t *r);
void cd_api_forecast_anomalies(cd_request_t *r);
void cd_api_forecast_what_if(cd_request_t *r);
/* ---- the audit export (api_audit.c, docs/audit.md) -------------------- */

typedef enum {
    CD_EXPORT_CSV = 0,
    CD_EXPORT_JSONL
} cd_export_format_e;

/* the columns of an export, in order: /work/brief/export-format.md */
#define CD_EXPORT_COLUMNS     52

/* bytes of one or more formatted rows, reused row after row */
typedef struct {
    char    *data;
    size_t   len;
    size_t   cap;
} cd_export_buf_t;

void cd_export_buf_free(cd_export_buf_t *b);

/* column i's name, or NULL past the last */
const char *cd_export_column_name(size_t i);

/* appends the CSV header row (nothing for JSONL); CD_ERROR: no memory */
int cd_export_header(cd_export_buf_t *b, cd_export_format_e format)
    CD_CHECK;

/*
 * Appends one row: values[i] (lengths[i] bytes, NULL for SQL NULL) are
 * the CD_EXPORT_COLUMNS columns as the export's query prints them. CSV:
 * every cell quoted, a text cell starting with = + - @ TAB CR or ' gets
 * one ' first, CRLF; JSONL: one object, '\n'. CD_ERROR: no memory.
 */
int cd_export_row(cd_export_buf_t *b, cd_export_format_e format,
    const char *const *values, const int *lengths) CD_CHECK;

/*
 * "audit-logs-<org>-<from>-<to>.csv" (or .jsonl): the bounds as
 * 20261201T000000Z, from_us or to_us < 0 for none ("start", and now_us
 * for to); an org id character outside [A-Za-z0-9_-] becomes '_'.
 */
void cd_export_filename(char *out, size_t len, const char *org,
    int64_t from_us, int64_t to_us, int64_t now_us,
    cd_export_format_e format);


#endif /* CD_API_H */
