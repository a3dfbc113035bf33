/*
 * Policy snapshots: controld builds them, nginx workers map them read-only
 * and use them in place.
 *
 * File layout (all integers little-endian, every record 8-byte aligned):
 *
 *   sp_snapshot_header_t
 *   tables: for each table, `slots` entries of sp_snapshot_slot_t
 *           (open addressing, linear probing, slots a power of two,
 *           load factor <= 0.5; record == 0 marks an empty slot)
 *   records and string bytes, referenced by sp_snapshot_ref_t offsets
 *
 * checksum = sp_hash64(file + header_size, length - header_size,
 * generation). A reader validates magic, version, sizes and checksum once
 * at open, and bounds-checks every offset it follows, so a truncated,
 * corrupted or hostile file is refused, never trusted.
 */

#ifndef SP_SNAPSHOT_H
#define SP_SNAPSHOT_H

#include "spendpol.h"
#include "sp_price.h"
#include "sp_cache.h"


#define SP_SNAPSHOT_MAGIC        "SPSNAP01"
#define SP_SNAPSHOT_VERSION      11
#define SP_SNAPSHOT_FILE         "policy.snap"

enum {
    SP_TABLE_KEYS = 0,
    SP_TABLE_PROVIDERS,
    SP_TABLE_PRICES,
    SP_TABLE_ORGS,
    SP_TABLE_ALIASES,
    SP_TABLE_BUDGETS,
    SP_TABLE_ENDPOINTS,
    SP_TABLE_SETTINGS,
    SP_TABLE_CACHE_PURGES,
    SP_TABLE_ROUTES,
    SP_TABLE_TEMPLATES,
    SP_TABLE_POLICIES,
    SP_TABLE_COUNT
};

typedef struct {
    uint32_t  offset;
    uint32_t  len;
} sp_snapshot_ref_t;

typedef struct {
    uint64_t  offset;         /* of the first slot, 0 when empty */
    uint64_t  slots;          /* power of two, or 0 */
} sp_snapshot_table_t;

typedef struct {
    char                 magic[8];
    uint32_t             version;
    uint32_t             header_size;
    uint64_t             generation;
    uint64_t             length;
    uint64_t             checksum;
    int64_t              created_at;   /* unix seconds */
    uint64_t             entries[SP_TABLE_COUNT];
    sp_snapshot_table_t  tables[SP_TABLE_COUNT];
} sp_snapshot_header_t;

typedef struct {
    uint64_t  hash;
    uint64_t  record;          /* file offset of the record, 0 = empty */
} sp_snapshot_slot_t;

/* SP_TABLE_KEYS: looked up by the SHA-256 of the presented key */
typedef struct {
    uint8_t            key_hash[SP_KEY_HASH_LEN];
    sp_snapshot_ref_t  key_id;        /* "key_..." */
    sp_snapshot_ref_t  org_id;
    sp_snapshot_ref_t  name;
    sp_snapshot_ref_t  department;    /* len 0 when none */
    sp_snapshot_ref_t  project;
    sp_snapshot_ref_t  agent_id;
    uint32_t           scopes;        /* SP_SCOPE_* */
    uint32_t           flags;         /* SP_KEY_* */
    uint32_t           rpm_limit;     /* requests a minute, 0: none */
    uint32_t           tpm_limit;     /* tokens a minute, 0: none */
    uint32_t           agent_rpm_limit;   /* the key's agent, all its keys */
    uint32_t           agent_tpm_limit;
} sp_snapshot_key_t;

#define SP_KEY_AGENT_PAUSED          0x01u   /* the key's agent is paused */
/*
 * The key may re-attribute a request with X-Spendpol-Department, -Project
 * or -Agent (a shared service key); without it the key's own values bind.
 */
#define SP_KEY_ATTRIBUTION_OVERRIDE  0x02u
/* requests with this key must name a prompt template (403 otherwise) */
#define SP_KEY_TEMPLATE_REQUIRED     0x04u

/* SP_TABLE_PROVIDERS: looked up by (org_id, provider) */
typedef struct {
    sp_snapshot_ref_t  org_id;
    sp_snapshot_ref_t  provider;      /* "openai" */
    sp_snapshot_ref_t  base_url;      /* no trailing slash */
    sp_snapshot_ref_t  api_key;       /* the decrypted provider credential */
} sp_snapshot_provider_t;

/*
 * SP_TABLE_PRICES: looked up by (org_id, provider, model); org_id of
 * length 0 is the public list price, an organisation's own price wins.
 */
typedef struct {
    sp_snapshot_ref_t  org_id;
    sp_snapshot_ref_t  provider;
    sp_snapshot_ref_t  model;
    sp_price_t         price;         /* nano-USD per 1M tokens */
    int64_t            max_output_tokens;   /* 0 when unknown */
} sp_snapshot_price_t;

/* organisation settings */
#define SP_ORG_REFUSE_UNPRICED   0x01u   /* refuse models without a price */
/* X-Spendpol-Route: skip is ignored: the rules always apply */
#define SP_ORG_ROUTE_SKIP_FORBIDDEN  0x02u

/*
 * SP_TABLE_ORGS: looked up by org_id; absent means all flags off and the
 * cache's defaults (sp_cache_config_default(); v8: the cache's settings,
 * v9: with the semantic cache's). 192 bytes, a multiple of 8.
 */
typedef struct {
    sp_snapshot_ref_t  org_id;
    uint32_t           flags;         /* SP_ORG_* */
    uint32_t           rpm_limit;     /* the whole organisation, 0: none */
    uint32_t           tpm_limit;
    uint32_t           reserved;
    sp_cache_config_t  cache;         /* GET /cache/config, or defaults */
} sp_snapshot_org_t;

/*
 * SP_TABLE_CACHE_PURGES (v8): DELETE /cache, looked up by (org_id,
 * provider, model); provider and model "" stand for all (a purge of the
 * whole organisation is ("", ""), of one provider (provider, "")). An
 * entry stored before purged_ms (the database's clock, unix ms) by a
 * purge that covers it is not served.
 */
typedef struct {
    sp_snapshot_ref_t  org_id;
    sp_snapshot_ref_t  provider;
    sp_snapshot_ref_t  model;
    uint32_t           pad;
    int64_t            purged_ms;
} sp_snapshot_cache_purge_t;

/*
 * SP_TABLE_ALIASES: (org_id, provider, alias) -> the model it runs, e.g.
 * an Azure deployment name -> "gpt-4o", for pricing.
 */
typedef struct {
    sp_snapshot_ref_t  org_id;
    sp_snapshot_ref_t  provider;
    sp_snapshot_ref_t  alias;
    sp_snapshot_ref_t  model;
} sp_snapshot_alias_t;


/* what a budget covers: the organisation, or one key, agent, ... */
enum {
    SP_BUDGET_SCOPE_ORG = 0,
    SP_BUDGET_SCOPE_API_KEY,
    SP_BUDGET_SCOPE_AGENT,
    SP_BUDGET_SCOPE_DEPARTMENT,
    SP_BUDGET_SCOPE_PROJECT,
    SP_BUDGET_SCOPE_COUNT
};

#define SP_BUDGET_BLOCK   0     /* refuse what would cross the limit */
#define SP_BUDGET_WARN    1     /* serve, with a warning */

/*
 * SP_TABLE_BUDGETS: looked up by (org_id, scope, scope_value); several
 * budgets may share a lookup key (narrowed to different providers or
 * models), so lookups visit every match. The period is computed by
 * controld in the budget's time zone; the module only compares instants.
 */
typedef struct {
    sp_snapshot_ref_t  budget_id;
    sp_snapshot_ref_t  org_id;
    sp_snapshot_ref_t  scope_value;   /* "" for the organisation scope */
    sp_snapshot_ref_t  provider;      /* "" for any provider */
    sp_snapshot_ref_t  model;         /* "" for any model */
    uint32_t           scope;         /* SP_BUDGET_SCOPE_* */
    uint32_t           action;        /* SP_BUDGET_BLOCK or SP_BUDGET_WARN */
    int64_t            limit_nano;
    int64_t            period_start_ms;
    int64_t            period_end_ms; /* 0: no end ("total") */
} sp_snapshot_budget_t;


/*
 * SP_TABLE_ENDPOINTS: endpoints an organisation allows beyond the
 * built-in catalogue (PUT /org "allowed_endpoints"), looked up by
 * (org_id, provider); several share a lookup key, so lookups visit every
 * match. method is "GET" ... "DELETE", pattern a path pattern after
 * /v1/{provider} as sp_endpoint_pattern_valid() accepts it (controld
 * validated both; the module matches them).
 */
typedef struct {
    sp_snapshot_ref_t  org_id;
    sp_snapshot_ref_t  provider;
    sp_snapshot_ref_t  method;
    sp_snapshot_ref_t  pattern;
} sp_snapshot_endpoint_t;


/*
 * SP_TABLE_ROUTES (v10): looked up by org_id: the organisation's enabled
 * routing rules, in evaluation order, as one JSON array that each worker
 * compiles once per snapshot (sp_route_compile(), sp_route.h).
 */
typedef struct {
    sp_snapshot_ref_t  org_id;
    sp_snapshot_ref_t  rules;         /* JSON array */
} sp_snapshot_routes_t;

/*
 * SP_TABLE_TEMPLATES (v10): looked up by (org_id, slug): a prompt
 * template with all its versions and labels, the JSON record of
 * sp_template.h.
 */
typedef struct {
    sp_snapshot_ref_t  org_id;
    sp_snapshot_ref_t  slug;
    sp_snapshot_ref_t  record;        /* JSON object */
} sp_snapshot_template_t;

/*
 * SP_TABLE_POLICIES (v11): looked up by org_id: the organisation's
 * enabled policies, every scope, as one JSON array that each worker
 * compiles once per snapshot (sp_policy_compile(), sp_policy.h). The
 * record has the routes' shape: rules is the array.
 */
typedef sp_snapshot_routes_t  sp_snapshot_policies_t;


/*
 * SP_TABLE_SETTINGS: deployment-wide settings controld passes to the
 * module, looked up by name (v7). A reader treats an absent setting as
 * its default.
 */
typedef struct {
    sp_snapshot_ref_t  name;
    sp_snapshot_ref_t  value;
} sp_snapshot_setting_t;

/* SPENDPOL_UPSTREAM_ALLOW as controld validated it ("" or absent: none) */
#define SP_SETTING_UPSTREAM_ALLOW  "upstream_allow"
/* the admin API's listen address, "127.0.0.1:8081" or "[::1]:8081" */
#define SP_SETTING_ADMIN_LISTEN    "admin_listen"
/*
 * The response cache's Redis tier, from controld's REDIS_URL (absent: no
 * tier): the address as controld resolved it (a numeric IPv4 or IPv6
 * address, so a worker never waits on DNS), the port, the database and
 * the credentials ("" for none).
 */
#define SP_SETTING_REDIS_HOST      "redis_host"
#define SP_SETTING_REDIS_PORT      "redis_port"
#define SP_SETTING_REDIS_DB        "redis_db"
#define SP_SETTING_REDIS_USER      "redis_user"
#define SP_SETTING_REDIS_PASSWORD  "redis_password"
/*
 * The organisation a raw provider key's refusal is journaled in (a
 * shadow-AI alert; the key names no organisation): SPENDPOL_SHADOW_ORG,
 * absent: not journaled.
 */
#define SP_SETTING_SHADOW_ORG      "shadow_org"


/* ---- building (controld) --------------------------------------------- */

typedef struct sp_snapshot_builder_s  sp_snapshot_builder_t;

/* Strings are copied; NULL means "" */
typedef struct {
    uint8_t      key_hash[SP_KEY_HASH_LEN];
    const char  *key_id;
    const char  *org_id;
    const char  *name;
    const char  *department;
    const char  *project;
    const char  *agent_id;
    uint32_t     scopes;
    uint32_t     flags;       /* SP_KEY_* */
    uint32_t     rpm_limit;   /* 0: none */
    uint32_t     tpm_limit;
    uint32_t     agent_rpm_limit;
    uint32_t     agent_tpm_limit;
} sp_snapshot_key_in_t;

typedef struct {
    const char  *org_id;
    const char  *provider;
    const char  *base_url;
    const char  *api_key;
} sp_snapshot_provider_in_t;

typedef struct {
    const char  *org_id;      /* NULL or "" for the list price */
    const char  *provider;
    const char  *model;
    sp_price_t   price;
    int64_t      max_output_tokens;
} sp_snapshot_price_in_t;

typedef struct {
    const char         *org_id;
    uint32_t            flags;
    uint32_t            rpm_limit;   /* 0: none */
    uint32_t            tpm_limit;
    sp_cache_config_t   cache;       /* all zero: sp_cache_config_default */
    unsigned            cache_set:1; /* cache holds the organisation's */
} sp_snapshot_org_in_t;

typedef struct {
    const char  *org_id;
    const char  *provider;       /* NULL or "": all */
    const char  *model;          /* NULL or "": all */
    int64_t      purged_ms;
} sp_snapshot_cache_purge_in_t;

typedef struct {
    const char  *org_id;
    const char  *provider;
    const char  *alias;
    const char  *model;
} sp_snapshot_alias_in_t;

typedef struct {
    const char  *budget_id;
    const char  *org_id;
    uint32_t     scope;
    const char  *scope_value;
    const char  *provider;
    const char  *model;
    uint32_t     action;
    int64_t      limit_nano;
    int64_t      period_start_ms;
    int64_t      period_end_ms;
} sp_snapshot_budget_in_t;

typedef struct {
    const char  *org_id;
    const char  *provider;
    const char  *method;
    const char  *pattern;
} sp_snapshot_endpoint_in_t;

typedef struct {
    const char  *name;
    const char  *value;
} sp_snapshot_setting_in_t;

typedef struct {
    const char  *org_id;
    const char  *rules;
} sp_snapshot_routes_in_t;

typedef struct {
    const char  *org_id;
    const char  *slug;
    const char  *record;
} sp_snapshot_template_in_t;

sp_snapshot_builder_t *sp_snapshot_builder_new(uint64_t generation);
void sp_snapshot_builder_free(sp_snapshot_builder_t *b);

/* each returns SP_OK, or SP_ERROR when out of memory */
int sp_snapshot_add_key(sp_snapshot_builder_t *b,
    const sp_snapshot_key_in_t *key);
int sp_snapshot_add_provider(sp_snapshot_builder_t *b,
    const sp_snapshot_provider_in_t *provider);
int sp_snapshot_add_price(sp_snapshot_builder_t *b,
    const sp_snapshot_price_in_t *price);
int sp_snapshot_add_org(sp_snapshot_builder_t *b,
    const sp_snapshot_org_in_t *org);
/* the same (org, provider, model) twice: the later purge wins */
int sp_snapshot_add_cache_purge(sp_snapshot_builder_t *b,
    const sp_snapshot_cache_purge_in_t *purge);
int sp_snapshot_add_alias(sp_snapshot_builder_t *b,
    const sp_snapshot_alias_in_t *alias);
int sp_snapshot_add_budget(sp_snapshot_builder_t *b,
    const sp_snapshot_budget_in_t *budget);
/* the same (org, provider, method, pattern) twice is one record */
int sp_snapshot_add_endpoint(sp_snapshot_builder_t *b,
    const sp_snapshot_endpoint_in_t *endpoint);

/* a later value of the same name replaces an earlier one */
int sp_snapshot_add_setting(sp_snapshot_builder_t *b,
    const sp_snapshot_setting_in_t *setting);

/* later duplicates of an org_id, or of (org_id, slug), replace earlier */
int sp_snapshot_add_routes(sp_snapshot_builder_t *b,
    const sp_snapshot_routes_in_t *routes);
int sp_snapshot_add_template(sp_snapshot_builder_t *b,
    const sp_snapshot_template_in_t *tmpl);
/* org_id and the JSON array of policies (in "rules") */
int sp_snapshot_add_policies(sp_snapshot_builder_t *b,
    const sp_snapshot_routes_in_t *policies);

/*
 * Lays the snapshot out in one malloc()ed buffer (*out, *len); the caller
 * frees it. Later duplicates of a lookup key replace earlier ones.
 */
int sp_snapshot_build(sp_snapshot_builder_t *b, uint8_t **out,
    size_t *len);

/*
 * Builds and publishes atomically: writes dir/.name.tmp.<pid>, then
 * rename()s it to dir/name. mode is the file mode (e.g. 0640). On failure
 * returns SP_ERROR with a reason in err (errlen bytes, NUL-terminated).
 */
int sp_snapshot_publish(sp_snapshot_builder_t *b, const char *dir,
    const char *name, unsigned mode, char *err, size_t errlen);


/* ---- reading (module) ------------------------------------------------ */

typedef struct {
    const uint8_t               *base;
    size_t                       len;
    const sp_snapshot_header_t  *header;
} sp_snapshot_t;

/*
 * Validates data[0..len) and points s at it (no copy: data must outlive
 * s). On failure returns SP_ERROR with a reason in err.
 */
int sp_snapshot_open(sp_snapshot_t *s, const void *data, size_t len,
    char *err, size_t errlen);

/*
 * sp_snapshot_open() in two steps, so a large snapshot is validated
 * without holding up the caller (an nginx worker's event loop): the
 * structure at once, then the checksum a bounded number of bytes per
 * call. sp_snapshot_verify() returns SP_AGAIN while bytes remain, SP_OK
 * when the checksum matches, SP_ERROR (with a reason) when it does not;
 * s is usable only after SP_OK.
 */
#define SP_AGAIN  1

int sp_snapshot_open_structure(sp_snapshot_t *s, const void *data,
    size_t len, char *err, size_t errlen);
void sp_snapshot_verify_begin(const sp_snapshot_t *s, sp_hash_state_t *st);
int sp_snapshot_verify(const sp_snapshot_t *s, sp_hash_state_t *st,
    size_t max_bytes, char *err, size_t errlen);

/* NULL when absent */
const sp_snapshot_key_t *sp_snapshot_find_key(const sp_snapshot_t *s,
    const uint8_t *key_hash);
const sp_snapshot_provider_t *sp_snapshot_find_provider(
    const sp_snapshot_t *s, sp_str_t org_id, sp_str_t provider);

/*
 * The price a model is billed at for the organisation, by the rule of
 * sp_price.h (alias, organisation, list, undated base model, and with
 * SP_PRICE_WITH_FALLBACK the organisation's fallback); found says how.
 * NULL when unpriced. The snapshot holds only the prices in effect.
 */
const sp_snapshot_price_t *sp_snapshot_resolve_price(const sp_snapshot_t *s,
    sp_str_t org_id, sp_str_t provider, sp_str_t model, unsigned options,
    sp_price_found_t *found);

/*
 * The same rule without aliases and without the fallback step: model
 * SP_PRICE_FALLBACK_MODEL still finds the organisation's fallback.
 */
const sp_snapshot_price_t *sp_snapshot_find_price(const sp_snapshot_t *s,
    sp_str_t org_id, sp_str_t provider, sp_str_t model);

const sp_snapshot_org_t *sp_snapshot_find_org(const sp_snapshot_t *s,
    sp_str_t org_id);
/*
 * The cache settings of an organisation: its record's, or the defaults
 * when it has none. A record with a value out of the admin API's ranges
 * reads as the defaults with the cache off; one in mode semantic without
 * an embeddings provider or model reads as mode exact.
 */
void sp_snapshot_cache_config(const sp_snapshot_t *s, sp_str_t org_id,
    sp_cache_config_t *config);

/*
 * The latest purge that covers (org_id, provider, model): the largest
 * purged_ms of ("", ""), (provider, "") and (provider, model); 0 when
 * none.
 */
int64_t sp_snapshot_cache_purged_ms(const sp_snapshot_t *s, sp_str_t org_id,
    sp_str_t provider, sp_str_t model);

const sp_snapshot_alias_t *sp_snapshot_find_alias(const sp_snapshot_t *s,
    sp_str_t org_id, sp_str_t provider, sp_str_t alias);

/*
 * Calls visit(budget, arg) for every budget of the organisation with that
 * scope and scope value (whatever its provider or model narrowing); stops
 * early when visit returns non-zero. Returns the number visited.
 */
size_t sp_snapshot_foreach_budget(const sp_snapshot_t *s, sp_str_t org_id,
    uint32_t scope, sp_str_t scope_value,
    int (*visit)(const sp_snapshot_budget_t *budget, void *arg), void *arg);

/*
 * Calls visit(endpoint, arg) for every endpoint the organisation allows
 * for that provider, in no particular order; stops early when visit
 * returns non-zero. Returns the number visited.
 */
size_t sp_snapshot_foreach_endpoint(const sp_snapshot_t *s, sp_str_t org_id,
    sp_str_t provider,
    int (*visit)(const sp_snapshot_endpoint_t *endpoint, void *arg),
    void *arg);

/* NULL when absent */
const sp_snapshot_routes_t *sp_snapshot_find_routes(const sp_snapshot_t *s,
    sp_str_t org_id);
const sp_snapshot_template_t *sp_snapshot_find_template(
    const sp_snapshot_t *s, sp_str_t org_id, sp_str_t slug);
const sp_snapshot_policies_t *sp_snapshot_find_policies(
    const sp_snapshot_t *s, sp_str_t org_id);

/* NULL when absent */
const sp_snapshot_setting_t *sp_snapshot_find_setting(const sp_snapshot_t *s,
    sp_str_t name);

/* a ref's bytes; an out-of-bounds ref yields the empty string */
sp_str_t sp_snapshot_str(const sp_snapshot_t *s, sp_snapshot_ref_t ref);


#endif /* SP_SNAPSHOT_H */
