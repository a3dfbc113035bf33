/*
 * The environment, read once at start (config.c). Included by controld.h.
 */

#ifndef CD_CONFIG_H
#define CD_CONFIG_H


typedef struct {
    char      *database_url;       /* the runtime role */
    char      *migrate_database_url; /* the owner role; NULL: database_url */
    char      *api_database_url;   /* tenant statements; NULL: database_url */
    long       database_insecure;  /* 1: runtime role may bypass RLS */
    char      *redis_url;          /* NULL: redis disabled */
    char      *api_listen;
    char      *api_host;           /* parsed from api_listen */
    uint16_t   api_port;
    char      *data_dir;
    char      *snapshot_dir;
    unsigned   snapshot_mode;
    char      *journal_path;
    char      *master_key_hex;     /* NULL: data_dir/master.key */
    char      *admin_key;          /* NULL: generated on first run */
    char      *metrics_token;      /* GET /metrics bearer; NULL: admin
                                      keys only */
    char      *migrations_dir;     /* NULL: searched at start */
    char      *prices_file;        /* NULL: migrations_dir/data/... */
    char      *node_id;            /* this node in budget_node_spend */
    char      *user;               /* run as this user when root */
    char      *upstream_allow;     /* SPENDPOL_UPSTREAM_ALLOW, as given */
    int        log_level;

    /* admin API limits: request bodies, connections, per-org rows */
    long       api_body_max;                  /* bytes */
    long       api_connection_limit;
    long       api_per_ip_connection_limit;   /* 0: no limit */
    long       api_connection_timeout;        /* seconds idle */
    char      *api_tls_cert;                  /* paths, both or neither */
    char      *api_tls_key;
    char      *api_tls_cert_pem;              /* their contents */
    char      *api_tls_key_pem;               /* secret: wiped */
    long       api_insecure;                  /* 1: plain HTTP anywhere */
    long       max_keys_per_org;              /* active keys */
    long       max_budgets_per_org;
    long       max_alert_rules_per_org;
    long       max_agents_per_org;
    long       audit_retention_months;        /* 0: keep audit_logs */
    long       leases;                        /* 0: no budget leases */
    long       lease_ttl_ms;                  /* budget leases (lease.c) */
    long       lease_grace_ms;
    long       lease_horizon_ms;
    long       forecast_job_ms;               /* the anomaly job's period */
    char      *egress_log;         /* SPENDPOL_EGRESS_LOG; NULL: no tail */
    char      *shadow_org;         /* its alerts' organisation */
} cd_config_t;

/* looks a variable up; NULL when unset. Tests pass a fake environment. */
typedef const char *(*cd_getenv_pt)(const char *name, void *data);

/*
 * Fills cf from the environment through getenv_fn. On failure returns
 * CD_ERROR with a message naming the variable and what it expects.
 */
int cd_config_load(cd_config_t *cf, cd_getenv_pt getenv_fn, void *data,
    char *err, size_t errlen) CD_CHECK;
void cd_config_free(cd_config_t *cf);

/* "host:port", "[v6]:port"; port 0 allowed (any free port) */
int cd_config_parse_listen(const char *value, char **host, uint16_t *port)
    CD_CHECK;

/*
 * The default node id: hostname + '-' + 8 hex of a hash of the journal
 * path, so two nodes on one machine (two journals) differ. out holds
 * CD_ID_MAX bytes.
 */
void cd_config_default_node_id(const char *hostname, const char *journal,
    char *out, size_t outlen);

/* the first existing candidate directory, or NULL; caller frees */
char *cd_config_find_migrations(void);

/*
 * 1 when host (as in SPENDPOL_API_LISTEN) is a loopback address:
 * 127.0.0.0/8, ::1, ::ffff:127.x.x.x or "localhost". Names are not
 * resolved: any other name counts as reachable from outside.
 */
int cd_config_host_is_loopback(const char *host);

/*
 * SPENDPOL_METRICS_TOKEN: 1 when value is CD_METRICS_TOKEN_MIN to _MAX
 * printable ASCII characters without spaces and not a Spendpol key (a
 * key there would be an admin key handed to the scraper)
 */
#define CD_METRICS_TOKEN_MIN  16
#define CD_METRICS_TOKEN_MAX  256

int cd_config_metrics_token_valid(const char *value);


#endif /* CD_CONFIG_H */
