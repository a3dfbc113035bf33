
/*
 * Copyright (C) Spendpol
 */


#ifndef _NGX_HTTP_SPENDPOL_MODULE_H_INCLUDED_
#define _NGX_HTTP_SPENDPOL_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <spendpol.h>
#include <sp_journal.h>
#include <sp_snapshot.h>
#include <sp_usage.h>
#include <sp_budget.h>
#include <sp_lease.h>
#include <sp_endpoint.h>
#include <sp_price.h>
#include <sp_provider.h>
#include <sp_cache.h>
#include <sp_route.h>
#include <sp_template.h>
#include <sp_translate.h>
#include <sp_pii.h>
#include <sp_policy.h>
#include <sp_halluc.h>


#define NGX_HTTP_SPENDPOL_SSE_EVENT_MAX     65536
#define NGX_HTTP_SPENDPOL_OUT_BUF_SIZE      4096
#define NGX_HTTP_SPENDPOL_DEFAULT_MAX_OUTPUT 4096
#define NGX_HTTP_SPENDPOL_LIMITS            3    /* key, agent, org */
#define NGX_HTTP_SPENDPOL_WINDOW_MS         60000 /* a rate limit's minute */

/* what a stream's trailers may carry, announced in its Trailer header */
#define NGX_HTTP_SPENDPOL_TRAILERS                                            \
    "X-Spendpol-Cost, X-Spendpol-Tokens, X-Spendpol-Policy-Warning, "         \
    "X-Spendpol-Hallucination-Score"

/* sent to Anthropic when the client named none */
#define NGX_HTTP_SPENDPOL_ANTHROPIC_VERSION  "2023-06-01"

/* the host of $spendpol_upstream_url: the upstream{} block the module adds */
#define NGX_HTTP_SPENDPOL_UPSTREAM          "spendpol.upstream"


/*
 * A routing target that keeps failing is out for a while, for every
 * worker (ngx_http_spendpol_fallback.c): slots in the shared zone, found by
 * the hash of (organisation, provider, model), under the zone's mutex.
 */
#define NGX_HTTP_SPENDPOL_COOLDOWNS         256

typedef struct {
    uint64_t                   hash;          /* 0: a free slot */
    uint32_t                   failures;      /* in a row */
    uint32_t                   pad;
    int64_t                    until_ms;      /* out until then (unix ms) */
    int64_t                    used_ms;       /* last failure or success */
} ngx_http_spendpol_cooldown_t;


/* the shared zone: budget counters of this nginx instance */
typedef struct {
    ngx_rbtree_t               rbtree;        /* budget counters */
    ngx_rbtree_node_t          sentinel;
    int64_t                    epoch_ms;      /* when the zone was made */
    ngx_rbtree_t               windows;       /* rate limit windows */
    ngx_rbtree_node_t          windows_sentinel;
    ngx_atomic_uint_t          journal_torn;  /* a line lacks its newline */
    ngx_queue_t                queue;         /* every node, last used first */
    uint64_t                   admissions;    /* locked admissions so far */
    int64_t                    full_logged_ms; /* the last "zone is full" */
    int64_t                    ask_logged_ms; /* the last "ask file full" */
    ngx_http_spendpol_cooldown_t  cooldowns[NGX_HTTP_SPENDPOL_COOLDOWNS];
} ngx_http_spendpol_shctx_t;


/*
 * What every node of the zone's trees starts with: what it counts (a
 * hash) and since when, its place in the zone's LRU queue and which tree
 * holds it. A new period or minute zeroes what follows.
 */
typedef struct {
    ngx_rbtree_node_t          node;
    int64_t                    start_ms;
    ngx_queue_t                queue;
    ngx_uint_t                 window;        /* 1: in sh->windows */
    uint64_t                   admission;     /* sh->admissions when used */
} ngx_http_spendpol_count_t;


/* the response cache's zone (ngx_http_spendpol_cache.c) */
typedef struct {
    ngx_rbtree_t               rbtree;
    ngx_rbtree_node_t          sentinel;
    ngx_queue_t                queue;         /* last used first */
    int64_t                    entries;
    int64_t                    bytes;         /* of answers stored */
    int64_t                    evictions;     /* for room, before expiry */

    /* the semantic cache's vectors (ngx_http_spendpol_semantic.c) */
    ngx_rbtree_t               groups;        /* by group key */
    ngx_rbtree_node_t          groups_sentinel;
    ngx_rbtree_t               orgs;          /* by organisation */
    ngx_rbtree_node_t          orgs_sentinel;
    int64_t                    vectors;
    size_t                     vector_bytes;  /* at most half the zone */
} ngx_http_spendpol_cache_sh_t;


/* X-Spendpol-Cache */
#define NGX_HTTP_SPENDPOL_CACHE_SKIP   0      /* not looked up */
#define NGX_HTTP_SPENDPOL_CACHE_MISS   1
#define NGX_HTTP_SPENDPOL_CACHE_HIT    2


/* a rate limit's use in the current minute */
typedef struct {
    ngx_http_spendpol_count_t  count;         /* key: hash of scope and id */
    int64_t                    requests;
    int64_t                    tokens;
    int64_t                    holders;       /* requests holding tokens */
} ngx_http_spendpol_window_t;


/* a budget's spend on this node in the current period */
typedef struct {
    ngx_http_spendpol_count_t  count;         /* key: sp_budget_hash() */
    int64_t                    reserved_nano; /* in flight on this node */
    int64_t                    settled_nano;  /* settled since the epoch */
} ngx_http_spendpol_counter_t;


typedef struct {
    ngx_http_spendpol_counter_t  *counter;
    uint64_t                   hash;
    int64_t                    period_start_ms;
    int64_t                    amount;
    uint32_t                   covers;        /* routed: bit i, the budget
                                                 covers target i; 0: the
                                                 request was not routed */
} ngx_http_spendpol_reservation_t;


/* a blocking budget's lease as one admission sees it */
typedef struct {
    sp_lease_verdict_t         verdict;
    int64_t                    used;          /* sp_lease_used(), without
                                                 the request */
    int64_t                    shortfall;     /* what the lease lacks */
    const sp_spend_slot_t     *spend;         /* the lease's, or NULL */
    sp_ask_slot_t             *ask;           /* NULL: no lease check */
} ngx_http_spendpol_lease_t;


/* the proxy's metrics zone (ngx_http_spendpol_metrics.c) */
typedef struct ngx_http_spendpol_metrics_s  ngx_http_spendpol_metrics_t;


/* per worker: the mapped snapshot and id generation */
typedef struct {
    ngx_str_t                  snapshot_dir;
    ngx_str_t                  snapshot_path;
    ngx_msec_t                 snapshot_interval;
    ngx_open_file_t           *journal;
    ngx_str_t                  journal_path;
    ngx_str_t                  region;
    size_t                     zone_size;
    ngx_shm_zone_t            *shm_zone;
    ngx_slab_pool_t           *shpool;
    ngx_http_spendpol_shctx_t *sh;
    ngx_str_t                  spend_path;

    /* the response cache's zone: 0 turns the cache off */
    size_t                     cache_size;
    ngx_shm_zone_t            *cache_zone;
    ngx_slab_pool_t           *cache_shpool;
    ngx_http_spendpol_cache_sh_t  *cache_sh;

    /* the proxy's metrics: a zone of their own */
    ngx_shm_zone_t            *metrics_zone;
    ngx_http_spendpol_metrics_t  *metrics;
    ngx_flag_t                 cache_redis;   /* the Redis tier, if any */
    ngx_msec_t                 cache_redis_timeout;  /* a Redis lookup's */
    ngx_addr_t                *cache_embed_address;  /* embedding calls */

    /* the ask file (sp_lease.h): mapped by the master with the zone */
    void                      *ask;
    size_t                     ask_size;

    /* worker state after fork */
    sp_snapshot_t              snapshot;
    void                      *snapshot_map;
    size_t                     snapshot_size;
    ino_t                      snapshot_ino;
    time_t                     snapshot_mtime;
    long                       snapshot_mtime_ns;
    ngx_uint_t                 snapshot_failed_ino;
    ngx_uint_t                 snapshot_missing_logged;

    /* a new snapshot whose checksum is being verified, in steps */
    sp_snapshot_t              pending;
    sp_hash_state_t            pending_hash;
    void                      *pending_map;
    size_t                     pending_size;
    ino_t                      pending_ino;
    time_t                     pending_mtime;
    long                       pending_mtime_ns;
    ngx_event_t                snapshot_timer;

    sp_spend_t                 spend;
    void                      *spend_map;
    size_t                     spend_size;
    ino_t                      spend_ino;

    uint64_t                   random[2];
    uint32_t                   worker_tag;
    uint32_t                   sequence;
    ngx_uint_t                 journal_failures;

    /* upstream connections: ngx_http_spendpol_upstream.c */
    ngx_uint_t                 keepalive;      /* idle ones kept per worker */
    ngx_msec_t                 keepalive_timeout;
    ngx_uint_t                 keepalive_requests;
    ngx_http_upstream_srv_conf_t  *upstream;
    ngx_queue_t                keepalive_cache;  /* most recently idle first */
    ngx_queue_t                keepalive_free;
    ngx_queue_t                ssl_sessions;     /* most recently used first */
    ngx_uint_t                 upstream_rotation;  /* of a name's addresses */

    /* the CA bundle that verifies providers' certificates, full path */
    ngx_str_t                  ssl_trusted_certificate;
    ngx_uint_t                 ssl_checked;      /* readable: checked once */
} ngx_http_spendpol_main_conf_t;


typedef struct ngx_http_spendpol_embed_s  ngx_http_spendpol_embed_t;


typedef struct {
    ngx_flag_t                 enable;
    size_t                     max_body_size;
    size_t                     max_response_size;

    /* a client that hangs up: how long and how much is still read */
    ngx_msec_t                 orphan_timeout;   /* 0: stop at once */
    size_t                     orphan_max_size;

    /* the longest a request waits for controld to extend the lease */
    ngx_msec_t                 lease_wait;
} ngx_http_spendpol_loc_conf_t;


/*
 * Where a routed request may go (ngx_http_spendpol_route.c): the first
 * target, then its fallbacks. Everything the proxy needs for it is made
 * before the request is admitted; switching target copies it into the
 * ctx's forwarding fields.
 */
typedef struct {
    sp_provider_e              provider;
    ngx_str_t                  provider_name;
    ngx_str_t                  model;
    ngx_str_t                  rest;           /* path after the base URL */
    ngx_str_t                  args;
    const sp_endpoint_t       *endpoint;
    sp_request_info_t         *request;        /* of body, as sent to it */
    ngx_str_t                  body;
    ngx_str_t                  credential;
    ngx_str_t                  authorization;
    ngx_str_t                  anthropic_version;
    ngx_str_t                  upstream_url;
    ngx_str_t                  upstream_host;
    ngx_str_t                  upstream_name;
    in_port_t                  upstream_port;
    ngx_addr_t                *upstream_addrs;
    ngx_uint_t                 upstream_naddrs;
    ngx_uint_t                 ssl:1;
    ngx_uint_t                 translate:1;    /* answers translated back
                                                  to OpenAI form */
    ngx_uint_t                 strip_usage:1;
    ngx_uint_t                 resolved:1;     /* its addresses are known */
    ngx_uint_t                 dropped:1;      /* unreachable: not tried */
    ngx_uint_t                 priced:1;
    ngx_uint_t                 fallback_price:1;
    sp_price_t                 price;
    int64_t                    worst_nano;
    uint64_t                   cooldown_hash;
} ngx_http_spendpol_target_t;


typedef enum {
    NGX_HTTP_SPENDPOL_RESPONSE_NONE = 0,
    NGX_HTTP_SPENDPOL_RESPONSE_BUFFER,    /* JSON: held until complete */
    NGX_HTTP_SPENDPOL_RESPONSE_STREAM,    /* SSE: passed on as it comes */
    NGX_HTTP_SPENDPOL_RESPONSE_PASS,      /* anything else, or too big */
    NGX_HTTP_SPENDPOL_RESPONSE_REPLACE    /* nginx's own error page */
} ngx_http_spendpol_response_e;


typedef struct {
    ngx_int_t                  phase_status;
    ngx_uint_t                 authenticated:1;
    ngx_uint_t                 proxied:1;
    ngx_uint_t                 strip_usage:1;
    ngx_uint_t                 headers_sent:1;
    ngx_uint_t                 finished:1;
    ngx_uint_t                 replaced:1;
    ngx_uint_t                 journaled:1;

    uint64_t                   start_us;
    int64_t                    start_ms;
    uint64_t                   gateway_us;
    uint64_t                   downstream_us;

    sp_provider_e              provider;
    ngx_str_t                  provider_name;
    ngx_str_t                  rest;           /* path after the provider,
                                                  validated, re-encoded */
    ngx_str_t                  args;           /* the query, re-encoded,
                                                  without Spendpol keys */
    const sp_endpoint_t       *endpoint;       /* the catalogue's, or NULL:
                                                  allowed by the org */

    /* copied from the snapshot: it may be swapped during the request */
    ngx_str_t                  org_id;
    ngx_str_t                  key_id;
    uint8_t                    key_hash[SP_KEY_HASH_LEN];
    ngx_str_t                  department;
    ngx_str_t                  project;
    ngx_str_t                  agent_id;
    ngx_str_t                  key_department; /* the key's own, when an */
    ngx_str_t                  key_project;    /* override named another */

    off_t                      body_received;
    sp_request_info_t         *request;
    ngx_str_t                  body;           /* as forwarded */
    ngx_str_t                  upstream_url;   /* to our upstream{} block */
    ngx_str_t                  upstream_host;  /* Host: as in the base URL */
    ngx_str_t                  upstream_name;  /* its host alone: TLS name */
    in_port_t                  upstream_port;
    ngx_addr_t                *upstream_addrs;
    ngx_uint_t                 upstream_naddrs;
    ngx_resolver_ctx_t        *resolver_ctx;   /* a name being resolved */
    ngx_int_t                  resolved_rc;
    ngx_uint_t                 resolving:1;    /* in ngx_resolve_name() */
    ngx_str_t                  upstream_authorization;  /* Bearer ... */
    ngx_str_t                  credential;    /* the provider key alone */
    ngx_str_t                  anthropic_version;

    u_char                     audit_id[40];
    u_char                     trace_id[SP_ID_LEN];
    u_char                     span_id[17];
    u_char                     parent_id[SP_ID_LEN];
    u_char                     trace_flags[2];
    u_char                     traceparent[56];

    ngx_http_spendpol_response_e  mode;
    sp_response_info_t         response;
    sp_usage_t                 usage;
    int64_t                    cost_nano;
    ngx_uint_t                 usage_estimated:1;
    ngx_uint_t                 unpriced:1;
    ngx_uint_t                 cost_done:1;
    ngx_uint_t                 fallback_price:1;  /* the org's "*" price */
    ngx_uint_t                 ungoverned:1;   /* an org-allowed endpoint */
    ngx_uint_t                 refused_unpriced:1;
    ngx_uint_t                 priced:1;
    sp_price_t                 price;          /* held at admission: the
                                                  model's, or the "*" one */
    int64_t                    worst_nano;     /* reserved per budget */
    int64_t                    hold_tokens;    /* held per rate limit */
    const char                *error_code;

    /* BUFFER: the whole body */
    u_char                    *buffer;
    size_t                     buffer_len;
    size_t                     buffer_size;

    /* STREAM */
    sp_sse_t                   sse;
    u_char                    *event;          /* current event's bytes */
    size_t                     event_len;
    size_t                     event_dropped;
    ngx_chain_t               *free;
    ngx_chain_t               *busy;

    /* REPLACE */
    ngx_str_t                  replacement;

    /* budgets */
    ngx_http_spendpol_reservation_t  *reservations;
    ngx_uint_t                 nreservations;
    int64_t                    reserved_nano;
    ngx_uint_t                 hold_cleanup:1;
    ngx_uint_t                 released:1;    /* budgets and rate limits */
    ngx_uint_t                 budget_warning:1;
    char                       refused_budget[SP_ID_LEN];
    int64_t                    refused_limit;
    int64_t                    refused_spent;
    ngx_uint_t                 refused_lease;  /* sp_lease_verdict_t; 0:
                                                  the limit refused */
    ngx_uint_t                 nreservations_max;  /* room in reservations */
    ngx_msec_t                 lease_deadline;  /* waits until then */
    ngx_uint_t                 lease_waiting:1;
    ngx_uint_t                 lease_answered:1;  /* while it waited, and
                                                     still short */
    uint64_t                   lease_ask_hash;  /* the ask its worst case */
    uint64_t                   lease_ask_seq;   /* is counted in */

    /* rate limits */
    ngx_http_spendpol_window_t  *rate_windows[NGX_HTTP_SPENDPOL_LIMITS];
    uint64_t                   rate_hashes[NGX_HTTP_SPENDPOL_LIMITS];
    ngx_uint_t                 nrate_windows;
    int64_t                    rate_window_start_ms;
    int64_t                    rate_held_tokens;
    ngx_uint_t                 rate_refused:1;
    uint32_t                   rate_rpm;
    uint32_t                   rate_tpm;
    int64_t                    rate_requests;
    int64_t                    rate_tokens;
    int64_t                    rate_reset_ms;

    /* the response cache (ngx_http_spendpol_cache.c) */
    ngx_uint_t                 cache_state;   /* NGX_HTTP_SPENDPOL_CACHE_* */
    ngx_uint_t                 cache_store:1; /* a miss, stored when the
                                                 answer is complete */
    u_char                     cache_key[SP_CACHE_KEY_LEN];
    int64_t                    cache_ttl_ms;
    int64_t                    cache_lookup_ms;  /* a stored answer's time */
    size_t                     cache_max_entry;
    int64_t                    cache_saved_nano;  /* a hit: its cost */
    int64_t                    cache_age_s;
    ngx_str_t                  cache_type;    /* a hit's content type */
    ngx_str_t                  cache_body;    /* and answer */
    u_char                    *cache_capture; /* a stream to store */
    size_t                     cache_captured;
    size_t                     cache_capture_size;
    ngx_uint_t                 cache_waiting:1;  /* on Redis or an
                                                    embedding */
    ngx_uint_t                 cache_redis_tried:1;
    ngx_uint_t                 cache_semantic_tried:1;
    ngx_msec_t                 cache_wait;    /* how long, at most */
    void                      *cache_redis;   /* its lookup in flight */
    ngx_http_spendpol_embed_t *cache_embed;   /* the embedding call */
    sp_cache_config_t         *cache_config;  /* semantic: the org's */
    int8_t                    *cache_vector;  /* the prompt's embedding */
    size_t                     cache_dim;
    ngx_str_t                  cache_text;    /* and text, for the guard */
    u_char                     cache_group[SP_CACHE_KEY_LEN];
    double                     cache_similarity;  /* a semantic hit's */
    ngx_str_t                  presented_key; /* the client's Spendpol key */

    /* templates and routing (ngx_http_spendpol_route.c) */
    ngx_str_t                  requested_model;  /* as the client sent it */
    ngx_http_spendpol_target_t  *targets;      /* NULL: not routed */
    ngx_uint_t                 ntargets;
    ngx_uint_t                 target;        /* the current one */
    ngx_uint_t                 route_next;    /* the next attempt's */
    ngx_uint_t                 attempts;      /* upstream attempts made */
    ngx_uint_t                 max_attempts;
    ngx_msec_t                 attempt_timeout;  /* 0: none */
    ngx_http_upstream_conf_t  *upstream_conf;  /* the request's own copy */
    ngx_msec_t                 read_timeout;   /* the location's */
    ngx_uint_t                 route_resolving;  /* 1 + the target whose
                                                    address is asked */
    uint32_t                   cooldown_failures;
    int64_t                    cooldown_ms;
    ngx_uint_t                 route_matched:1;  /* a rule applied */
    ngx_uint_t                 route_skipped:1;  /* X-Spendpol-Route: skip */
    ngx_uint_t                 route_rebuild:1;  /* the next attempt goes
                                                    to another target */
    ngx_uint_t                 route_answered:1;
    ngx_uint_t                 translate:1;   /* the current target's
                                                 answer is translated */
    ngx_uint_t                 template_applied:1;
    ngx_uint_t                 template_required:1;  /* by the key */
    ngx_uint_t                 client_include_usage:1;
    sp_provider_e              client_provider;  /* the client's format */
    sp_translate_stream_t     *translate_stream;
    ngx_str_t                  route_rule;
    ngx_str_t                  route_note;
    u_char                    *attempt_log;   /* SP_JOURNAL_NOTE_LEN */
    size_t                     attempt_log_len;
    u_char                    *route_code;    /* a template refusal's */
    u_char                     template_id[SP_ID_LEN];
    int64_t                    template_version;

    /*
     * Response side (ngx_http_spendpol_filter.c): a JSON body
     * too large to hold is metered as it passes (scan); a client that
     * hangs up after the request reached the provider leaves an orphan
     * whose answer is still read, bounded, to settle what it cost.
     */
    struct sp_scan_s          *scan;
    ngx_uint_t                 client_gone:1;
    ngx_uint_t                 orphan_cut:1;   /* given up: time or size */
    off_t                      orphan_bytes;   /* read after the client left */
    ngx_event_t                orphan_timer;

    /* policies and scores (ngx_http_spendpol_policy.c) */
    sp_policy_decision_t      *policy;        /* stage 5's, or NULL */
    ngx_int_t                  guard_score;   /* the prompt's, 0..1000 */
    uint32_t                   response_mask; /* PII types to scan the
                                                 answer for */
    sp_halluc_answer_t        *halluc;        /* the answer, to score */
    ngx_int_t                  halluc_pct;
    ngx_uint_t                 halluc_scored:1;
    ngx_uint_t                 redacted:1;
    ngx_uint_t                 response_pii:1;  /* the answer had some */
    sp_pii_result_t           *answer_pii;    /* a stream's events' scan */
    ngx_uint_t                 shadow:1;      /* a raw provider key,
                                                 journaled */
    const char                *shadow_key_type;
    u_char                     shadow_key_fp[24];
} ngx_http_spendpol_ctx_t;


/*
 * What an organisation publishes as one JSON array, compiled once per
 * snapshot by each worker (ngx_http_spendpol_policy.c).
 */
typedef void *(*ngx_http_spendpol_compile_pt)(const char *json, size_t len,
    char *err, size_t errlen);
typedef void (*ngx_http_spendpol_free_pt)(void *set);

typedef struct {
    uint64_t                   generation;
    const void                *base;          /* the snapshot's mapping */
    size_t                     org_len;
    u_char                     org[SP_ID_LEN];
    void                      *set;
    ngx_uint_t                 failed;        /* did not compile */
} ngx_http_spendpol_compiled_t;


extern ngx_module_t  ngx_http_spendpol_module;


/* ngx_http_spendpol_snapshot.c */
ngx_int_t ngx_http_spendpol_snapshot_init_worker(ngx_cycle_t *cycle,
    ngx_http_spendpol_main_conf_t *smcf);
void ngx_http_spendpol_snapshot_exit_worker(
    ngx_http_spendpol_main_conf_t *smcf);
void ngx_http_spendpol_snapshot_refresh(ngx_http_spendpol_main_conf_t *smcf,
    ngx_log_t *log);
void *ngx_http_spendpol_map_file(ngx_str_t *path, ngx_file_info_t *fi,
    ngx_log_t *log);

/* ngx_http_spendpol_handler.c */
ngx_int_t ngx_http_spendpol_handler(ngx_http_request_t *r);
void ngx_http_spendpol_unpark(ngx_http_request_t *r);
int64_t ngx_http_spendpol_request_worst(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
ngx_int_t ngx_http_spendpol_parse_body(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
ngx_table_elt_t *ngx_http_spendpol_request_header(ngx_http_request_t *r,
    const char *name, size_t len);
ngx_int_t ngx_http_spendpol_add_header(ngx_http_request_t *r,
    ngx_list_t *headers, const char *name, u_char *value, size_t len);
ngx_int_t ngx_http_spendpol_add_request_headers(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
uint64_t ngx_http_spendpol_now_us(void);
void ngx_http_spendpol_forward(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_int_t rc);

ngx_int_t ngx_http_spendpol_request_body_init(ngx_conf_t *cf);

/* ngx_http_spendpol_filter.c */
ngx_int_t ngx_http_spendpol_filter_init(ngx_conf_t *cf);
void ngx_http_spendpol_settle(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
const sp_snapshot_price_t *ngx_http_spendpol_price(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const char *name);
size_t ngx_http_spendpol_warnings(ngx_http_spendpol_ctx_t *ctx, u_char *buf,
    size_t len);
void ngx_http_spendpol_watch_client(ngx_http_request_t *r);
ngx_int_t ngx_http_spendpol_latency_header(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_list_t *headers);

/* ngx_http_spendpol_zone.c */
ngx_int_t ngx_http_spendpol_init_zone(ngx_shm_zone_t *shm_zone, void *data);
void *ngx_http_spendpol_zone_count(ngx_http_spendpol_main_conf_t *smcf,
    ngx_rbtree_t *tree, uint64_t hash, int64_t start_ms, size_t size);
ngx_uint_t ngx_http_spendpol_zone_held(ngx_http_spendpol_count_t *count,
    uint64_t hash, int64_t start_ms);
ngx_int_t ngx_http_spendpol_zone_full(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
int64_t ngx_http_spendpol_epoch(ngx_http_spendpol_main_conf_t *smcf);

/* ngx_http_spendpol_budget.c */
ngx_int_t ngx_http_spendpol_budget_admit(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
void ngx_http_spendpol_budget_release(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_ctx_t *ctx, int64_t cost);
ngx_int_t ngx_http_spendpol_hold(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
void ngx_http_spendpol_release(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_uint_t settled);
ngx_uint_t ngx_http_spendpol_counter_idle(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_counter_t *counter);
void ngx_http_spendpol_spend_refresh(ngx_http_spendpol_main_conf_t *smcf,
    ngx_log_t *log);
void ngx_http_spendpol_spend_view(ngx_http_spendpol_main_conf_t *smcf,
    uint64_t hash, int64_t period_start_ms, sp_spend_view_t *view);
int64_t ngx_http_spendpol_budget_used_ppm(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, sp_str_t budget_id);

/* ngx_http_spendpol_lease.c */
ngx_int_t ngx_http_spendpol_ask_init(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_main_conf_t *osmcf, ngx_log_t *log);
void ngx_http_spendpol_ask_heartbeat(ngx_http_spendpol_main_conf_t *smcf);
sp_lease_verdict_t ngx_http_spendpol_lease_check(
    ngx_http_spendpol_main_conf_t *smcf, ngx_http_spendpol_counter_t *counter,
    const sp_spend_view_t *view, int64_t worst, int64_t now_ms,
    ngx_http_spendpol_lease_t *lease);
ngx_uint_t ngx_http_spendpol_lease_publish(ngx_http_spendpol_lease_t *leases,
    ngx_uint_t n, int64_t worst, int64_t now_ms);
ngx_uint_t ngx_http_spendpol_lease_ask(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_lease_t *lease, int64_t worst,
    ngx_http_spendpol_ctx_t *ctx);
void ngx_http_spendpol_lease_released(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_counter_t *counter);

/* ngx_http_spendpol_ratelimit.c */
ngx_int_t ngx_http_spendpol_ratelimit_admit(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
ngx_int_t ngx_http_spendpol_ratelimit_refuse(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
void ngx_http_spendpol_ratelimit_release(ngx_http_spendpol_ctx_t *ctx,
    int64_t used);

/* ngx_http_spendpol_route.c */
ngx_int_t ngx_http_spendpol_template_stage(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
ngx_int_t ngx_http_spendpol_route_stage(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
void ngx_http_spendpol_route_load(ngx_http_spendpol_ctx_t *ctx,
    ngx_http_spendpol_target_t *t);
void ngx_http_spendpol_route_save(ngx_http_spendpol_ctx_t *ctx,
    ngx_http_spendpol_target_t *t);
void ngx_http_spendpol_route_keep(ngx_http_spendpol_ctx_t *ctx);
void ngx_http_spendpol_route_worst_case(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx,
    void (*price_target)(ngx_http_request_t *r,
                         ngx_http_spendpol_ctx_t *ctx));
ngx_int_t ngx_http_spendpol_route_headers(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
void ngx_http_spendpol_route_exit_worker(void);

/* ngx_http_spendpol_policy.c */
void *ngx_http_spendpol_compiled(ngx_http_request_t *r,
    ngx_http_spendpol_compiled_t *cache, ngx_uint_t n, ngx_str_t *org,
    sp_str_t json, ngx_http_spendpol_compile_pt compile,
    ngx_http_spendpol_free_pt release, const char *what);
void ngx_http_spendpol_compiled_free(ngx_http_spendpol_compiled_t *cache,
    ngx_uint_t n, ngx_http_spendpol_free_pt release);
void ngx_http_spendpol_policy_exit_worker(void);
ngx_int_t ngx_http_spendpol_policy_stage(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
const char *ngx_http_spendpol_policy_warnings(ngx_http_spendpol_ctx_t *ctx);
ngx_int_t ngx_http_spendpol_guard_header(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
ngx_int_t ngx_http_spendpol_shadow_key(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_str_t *key);
ngx_int_t ngx_http_spendpol_halluc_start(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
void ngx_http_spendpol_halluc_event(ngx_http_spendpol_ctx_t *ctx);
void ngx_http_spendpol_halluc_json(ngx_http_spendpol_ctx_t *ctx,
    u_char *data, size_t len);
void ngx_http_spendpol_halluc_end(ngx_http_spendpol_ctx_t *ctx);
ngx_int_t ngx_http_spendpol_halluc_header(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_list_t *headers);
ngx_int_t ngx_http_spendpol_scan_answer(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
ngx_int_t ngx_http_spendpol_scan_event(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_buf_t **ob, ngx_chain_t ***last);
void ngx_http_spendpol_scan_answer_text(ngx_http_spendpol_ctx_t *ctx);

/* ngx_http_spendpol_filter.c */
ngx_int_t ngx_http_spendpol_out_room(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_buf_t **ob, ngx_chain_t ***last,
    size_t size);

/* ngx_http_spendpol_fallback.c */
ngx_int_t ngx_http_spendpol_fallback_resolve(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_int_t rc);
ngx_int_t ngx_http_spendpol_fallback_upstream(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_http_upstream_t *u);
ngx_uint_t ngx_http_spendpol_fallback_failed(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_uint_t status);
void ngx_http_spendpol_fallback_answered(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_uint_t status);
void ngx_http_spendpol_fallback_note(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_http_spendpol_target_t *t,
    const char *what);
ngx_int_t ngx_http_spendpol_fallback_request(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
ngx_uint_t ngx_http_spendpol_fallback_cooling(
    ngx_http_spendpol_main_conf_t *smcf, uint64_t hash, int64_t now_ms);

/* ngx_http_spendpol_upstream.c */
ngx_int_t ngx_http_spendpol_upstream_add(ngx_conf_t *cf,
    ngx_http_spendpol_main_conf_t *smcf);
char *ngx_http_spendpol_upstream_init_main_conf(ngx_conf_t *cf,
    ngx_http_spendpol_main_conf_t *smcf);
ngx_int_t ngx_http_spendpol_upstream_target(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, u_char *base_url, size_t len,
    ngx_str_t *args);
ngx_int_t ngx_http_spendpol_upstream_resolve(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
void ngx_http_spendpol_upstream_exit_worker(
    ngx_http_spendpol_main_conf_t *smcf);

/* ngx_http_spendpol_cache.c */
ngx_int_t ngx_http_spendpol_cache_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
ngx_int_t ngx_http_spendpol_cache_lookup(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
ngx_int_t ngx_http_spendpol_cache_send(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
ngx_int_t ngx_http_spendpol_cache_capture(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_chain_t *in);
void ngx_http_spendpol_cache_store(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, u_char *body, size_t len);
ngx_int_t ngx_http_spendpol_cache_headers(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
ngx_str_t *ngx_http_spendpol_cache_state_name(ngx_http_spendpol_ctx_t *ctx);
void ngx_http_spendpol_cache_report(ngx_http_spendpol_main_conf_t *smcf);
void ngx_http_spendpol_cache_found(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, u_char *value, size_t len);

ngx_int_t ngx_http_spendpol_cache_next(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
ngx_int_t ngx_http_spendpol_cache_fetch_locked(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, u_char *key, int64_t now_ms,
    int64_t purged_ms);
int64_t ngx_http_spendpol_cache_now_ms(void);
int64_t ngx_http_spendpol_cache_purged_ms(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);

/* ngx_http_spendpol_semantic.c */
ngx_int_t ngx_http_spendpol_semantic_begin(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
void ngx_http_spendpol_semantic_search(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
void ngx_http_spendpol_semantic_store(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, int64_t stored_ms);
void ngx_http_spendpol_semantic_init_zone(ngx_http_spendpol_cache_sh_t *sh);

/* ngx_http_spendpol_embed.c */
ngx_int_t ngx_http_spendpol_embed_start(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const sp_cache_config_t *config,
    sp_str_t text);
void ngx_http_spendpol_embed_abandon(ngx_http_spendpol_ctx_t *ctx);

/* ngx_http_spendpol_redis.c */
ngx_uint_t ngx_http_spendpol_redis_ready(ngx_http_spendpol_main_conf_t *smcf,
    ngx_log_t *log);
ngx_int_t ngx_http_spendpol_redis_lookup(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
void ngx_http_spendpol_redis_abandon(ngx_http_spendpol_ctx_t *ctx);
void ngx_http_spendpol_redis_store(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, int64_t ttl_ms, u_char *value,
    size_t len);
void ngx_http_spendpol_redis_exit_worker(void);

/* ngx_http_spendpol_journal.c */
ngx_int_t ngx_http_spendpol_log_handler(ngx_http_request_t *r);

/* ngx_http_spendpol_metrics.c */
ngx_int_t ngx_http_spendpol_metrics_add_zone(ngx_conf_t *cf,
    ngx_http_spendpol_main_conf_t *smcf);
char *ngx_http_spendpol_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
void ngx_http_spendpol_metrics_record(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, sp_journal_record_t *rec);
void ngx_http_spendpol_metrics_refused(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);

/* ngx_http_spendpol_error.c */
ngx_int_t ngx_http_spendpol_send_error(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_uint_t status, const char *type,
    const char *code, const char *message);
ngx_int_t ngx_http_spendpol_error_json(ngx_pool_t *pool, const char *type,
    const char *code, const char *message, ngx_str_t *out);

/* ngx_http_spendpol_ids.c */
void ngx_http_spendpol_ids(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_http_spendpol_main_conf_t *smcf);
size_t ngx_http_spendpol_traceparent(ngx_http_spendpol_ctx_t *ctx,
    u_char *buf);
void ngx_http_spendpol_random_init(ngx_http_spendpol_main_conf_t *smcf);

/* the tokenizer (ngx_http_spendpol_handler.c): encoders in the master,
   a context per worker */
ngx_int_t ngx_http_spendpol_tokenizer_init(ngx_cycle_t *cycle);
ngx_int_t ngx_http_spendpol_tokenizer_init_worker(ngx_cycle_t *cycle);
void ngx_http_spendpol_tokenizer_exit_worker(void);
uint64_t ngx_http_spendpol_random(ngx_http_spendpol_main_conf_t *smcf);


#endif /* _NGX_HTTP_SPENDPOL_MODULE_H_INCLUDED_ */
