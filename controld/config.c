/*
 * Configuration from the environment. One table drives the names, the
 * fallback names, the defaults and the parsing of every setting.
 */

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/crypto.h>

#include "controld.h"
#include "outbound.h"
#include "sp_lease.h"


typedef enum {
    CD_CONF_STRING = 0,
    CD_CONF_PATH_IN_DATA_DIR,    /* default is relative to data_dir */
    CD_CONF_LISTEN,
    CD_CONF_MODE,
    CD_CONF_LOG_LEVEL,
    CD_CONF_MASTER_KEY,
    CD_CONF_ADMIN_KEY,
    CD_CONF_METRICS_TOKEN,
    CD_CONF_NODE_ID,             /* default from hostname and journal */
    CD_CONF_LONG,                /* a long in [min, max] */
    CD_CONF_BOOL                 /* "0" or "1", stored as a long */
} cd_conf_type_e;

typedef struct {
    const char       *name;
    const char       *fallback;     /* older generic name, or NULL */
    const char       *default_value;/* NULL: unset unless required */
    cd_conf_type_e    type;
    size_t            offset;       /* of the char * or value in cd_config_t */
    int               required;
    long              min;          /* CD_CONF_LONG: accepted range */
    long              max;
    const char       *unit;         /* CD_CONF_LONG: for messages */
} cd_conf_entry_t;

#define CD_CONF_OFFSET(field)  offsetof(cd_config_t, field)
/* the range and unit of an entry that is no CD_CONF_LONG */
#define CD_CONF_ANY            0, 0, NULL

/* data_dir comes before everything whose default lives under it */
static const cd_conf_entry_t  cd_conf_table[] = {
    { "SPENDPOL_DATABASE_URL", "DATABASE_URL", NULL, CD_CONF_STRING,
      CD_CONF_OFFSET(database_url), 1, CD_CONF_ANY },
    /* the owner role that runs migrations; NULL: SPENDPOL_DATABASE_URL */
    { "SPENDPOL_MIGRATE_DATABASE_URL", NULL, NULL, CD_CONF_STRING,
      CD_CONF_OFFSET(migrate_database_url), 0, CD_CONF_ANY },
    /*
     * the role of the admin API's tenant statements (spendpol_app only);
     * NULL: SPENDPOL_DATABASE_URL, refused unless SPENDPOL_DATABASE_INSECURE
     * when that role can also become spendpol_system
     */
    { "SPENDPOL_API_DATABASE_URL", NULL, NULL, CD_CONF_STRING,
      CD_CONF_OFFSET(api_database_url), 0, CD_CONF_ANY },
    /* 1: run even when the runtime role could bypass row-level security */
    { "SPENDPOL_DATABASE_INSECURE", NULL, "0", CD_CONF_BOOL,
      CD_CONF_OFFSET(database_insecure), 0, CD_CONF_ANY },
    { "SPENDPOL_REDIS_URL", "REDIS_URL", NULL, CD_CONF_STRING,
      CD_CONF_OFFSET(redis_url), 0, CD_CONF_ANY },
    { "SPENDPOL_API_LISTEN", NULL, "127.0.0.1:8081", CD_CONF_LISTEN,
      CD_CONF_OFFSET(api_listen), 0, CD_CONF_ANY },
    { "SPENDPOL_DATA_DIR", NULL, ".run", CD_CONF_STRING,
      CD_CONF_OFFSET(data_dir), 0, CD_CONF_ANY },
    { "SPENDPOL_SNAPSHOT_DIR", NULL, "/dev/shm/spendpol", CD_CONF_STRING,
      CD_CONF_OFFSET(snapshot_dir), 0, CD_CONF_ANY },
    { "SPENDPOL_SNAPSHOT_MODE", NULL, "0640", CD_CONF_MODE,
      CD_CONF_OFFSET(snapshot_mode), 0, CD_CONF_ANY },
    { "SPENDPOL_JOURNAL", NULL, "journal/journal.log",
      CD_CONF_PATH_IN_DATA_DIR, CD_CONF_OFFSET(journal_path), 0, CD_CONF_ANY },
    { "SPENDPOL_MASTER_KEY", NULL, NULL, CD_CONF_MASTER_KEY,
      CD_CONF_OFFSET(master_key_hex), 0, CD_CONF_ANY },
    { "SPENDPOL_ADMIN_KEY", NULL, NULL, CD_CONF_ADMIN_KEY,
      CD_CONF_OFFSET(admin_key), 0, CD_CONF_ANY },
    /*
     * a bearer token that reads GET /metrics and nothing else, for a
     * scraper's credentials file; admin keys read it too
     */
    { "SPENDPOL_METRICS_TOKEN", NULL, NULL, CD_CONF_METRICS_TOKEN,
      CD_CONF_OFFSET(metrics_token), 0, CD_CONF_ANY },
    { "SPENDPOL_MIGRATIONS_DIR", NULL, NULL, CD_CONF_STRING,
      CD_CONF_OFFSET(migrations_dir), 0, CD_CONF_ANY },
    { "SPENDPOL_PRICES_FILE", NULL, NULL, CD_CONF_STRING,
      CD_CONF_OFFSET(prices_file), 0, CD_CONF_ANY },
    { "SPENDPOL_LOG_LEVEL", NULL, "info", CD_CONF_LOG_LEVEL,
      CD_CONF_OFFSET(log_level), 0, CD_CONF_ANY },
    { "SPENDPOL_NODE_ID", NULL, NULL, CD_CONF_NODE_ID,
      CD_CONF_OFFSET(node_id), 0, CD_CONF_ANY },
    /* the user controld runs as when started as root */
    { "SPENDPOL_USER", NULL, NULL, CD_CONF_STRING,
      CD_CONF_OFFSET(user), 0, CD_CONF_ANY },
    /* outbound addresses beyond public https: CIDRs and host names */
    { "SPENDPOL_UPSTREAM_ALLOW", NULL, NULL, CD_CONF_STRING,
      CD_CONF_OFFSET(upstream_allow), 0, CD_CONF_ANY },

    /*
     * Admin API limits. The body cap leaves room for the largest
     * legitimate body (a price list or a provider's settings); one
     * client may hold at most half the connections.
     */
    { "SPENDPOL_API_BODY_MAX", NULL, "1048576", CD_CONF_LONG,
      CD_CONF_OFFSET(api_body_max), 0, 1024, 64L * 1024 * 1024, "bytes" },
    { "SPENDPOL_API_CONNECTION_LIMIT", NULL, "512", CD_CONF_LONG,
      CD_CONF_OFFSET(api_connection_limit), 0, 1, 65536, "connections" },
    { "SPENDPOL_API_PER_IP_CONNECTION_LIMIT", NULL, "256", CD_CONF_LONG,
      CD_CONF_OFFSET(api_per_ip_connection_limit), 0, 0, 65536,
      "connections (0: no limit)" },
    { "SPENDPOL_API_CONNECTION_TIMEOUT", NULL, "30", CD_CONF_LONG,
      CD_CONF_OFFSET(api_connection_timeout), 0, 1, 3600, "seconds" },
    { "SPENDPOL_API_TLS_CERT", NULL, NULL, CD_CONF_STRING,
      CD_CONF_OFFSET(api_tls_cert), 0, CD_CONF_ANY },
    { "SPENDPOL_API_TLS_KEY", NULL, NULL, CD_CONF_STRING,
      CD_CONF_OFFSET(api_tls_key), 0, CD_CONF_ANY },
    { "SPENDPOL_API_INSECURE", NULL, "0", CD_CONF_BOOL,
      CD_CONF_OFFSET(api_insecure), 0, CD_CONF_ANY },

    /*
     * Rows one organisation may create through the API. High enough for
     * real fleets (the 1M-key bench inserts its keys with SQL), low enough
     * that one admin key cannot grow the snapshot without bound.
     */
    { "SPENDPOL_MAX_KEYS_PER_ORG", NULL, "100000", CD_CONF_LONG,
      CD_CONF_OFFSET(max_keys_per_org), 0, 1, 100000000, "active keys" },
    { "SPENDPOL_MAX_BUDGETS_PER_ORG", NULL, "10000", CD_CONF_LONG,
      CD_CONF_OFFSET(max_budgets_per_org), 0, 1, 10000000, "budgets" },
    { "SPENDPOL_MAX_ALERT_RULES_PER_ORG", NULL, "1000", CD_CONF_LONG,
      CD_CONF_OFFSET(max_alert_rules_per_org), 0, 1, 1000000,
      "alert rules" },
    { "SPENDPOL_MAX_AGENTS_PER_ORG", NULL, "100000", CD_CONF_LONG,
      CD_CONF_OFFSET(max_agents_per_org), 0, 1, 100000000, "agents" },
    /*
     * Whole months of audit_logs kept before the current one (UTC);
     * older ones are dropped hourly by ingest. 0: keep forever.
     */
    { "SPENDPOL_AUDIT_RETENTION_MONTHS", NULL, "0", CD_CONF_LONG,
      CD_CONF_OFFSET(audit_retention_months), 0, 0, 1200,
      "months (0: keep forever)" },
    /*
     * Budget leases across nodes (lease.c): a granted lease is good for
     * ttl unless renewed; live nodes are those heartbeating within it;
     * a slice lasts a horizon of this node's traffic. SPENDPOL_LEASES=0
     * turns leasing off: each node checks a budget's whole remainder
     * alone (exact on one node, not across nodes in a burst).
     */
    { "SPENDPOL_LEASES", NULL, "1", CD_CONF_BOOL,
      CD_CONF_OFFSET(leases), 0, CD_CONF_ANY },
    { "SPENDPOL_LEASE_TTL_MS", NULL, CD_STRINGIFY(SP_LEASE_TTL_MS),
      CD_CONF_LONG, CD_CONF_OFFSET(lease_ttl_ms), 0, 500, 3600000, "ms" },
    { "SPENDPOL_LEASE_GRACE_MS", NULL, CD_STRINGIFY(SP_LEASE_GRACE_MS),
      CD_CONF_LONG, CD_CONF_OFFSET(lease_grace_ms), 0, 0, 3600000, "ms" },
    { "SPENDPOL_LEASE_HORIZON_MS", NULL, CD_STRINGIFY(SP_LEASE_HORIZON_MS),
      CD_CONF_LONG, CD_CONF_OFFSET(lease_horizon_ms), 0, 100, 600000,
      "ms" },
    /*
     * Shadow AI (shadow_tail.c): egress logs controld tails, each
     * "path[:format]" (dnsmasq, bind, squid, generic; auto when left
     * out), comma-separated; their alerts go to the shadow organisation
     */
    /*
     * The spend anomaly job (forecast_job.c): how often it raises the
     * anomalies of the last days as alerts. Tests shorten it.
     */
    { "SPENDPOL_FORECAST_JOB_MS", NULL, "300000", CD_CONF_LONG,
      CD_CONF_OFFSET(forecast_job_ms), 0, 100, 86400000, "ms" },
    { "SPENDPOL_EGRESS_LOG", NULL, NULL, CD_CONF_STRING,
      CD_CONF_OFFSET(egress_log), 0, CD_CONF_ANY },
    { "SPENDPOL_SHADOW_ORG", NULL, CD_DEFAULT_ORG, CD_CONF_STRING,
      CD_CONF_OFFSET(shadow_org), 0, CD_CONF_ANY },
};

/* a PEM file holds a few certificates at most */
#define CD_CONF_PEM_MAX  (256 * 1024)


static char *
cd_conf_strdup(const char *s)
{
    return s == NULL ? NULL : strdup(s);
}


int
cd_config_parse_listen(const char *value, char **host, uint16_t *port)
{
    const char     *colon, *host_start, *host_end;
    char           *end;
    unsigned long   n;

    if (value[0] == '[') {
        host_start = value + 1;
        host_end = strchr(host_start, ']');

        if (host_end == NULL || host_end[1] != ':') {
            return CD_ERROR;
        }

        colon = host_end + 1;

    } else {
        colon = strrchr(value, ':');

        if (colon == NULL || strchr(value, ':') != colon) {
            return CD_ERROR;
        }

        host_start = value;
        host_end = colon;
    }

    if (host_end == host_start || colon[1] == '\0') {
        return CD_ERROR;
    }

    errno = 0;
    n = strtoul(colon + 1, &end, 10);

    if (errno != 0 || *end != '\0' || n > 65535 || colon[1] == '-'
        || colon[1] == '+')
    {
        return CD_ERROR;
    }

    *host = strndup(host_start, host_end - host_start);

    if (*host == NULL) {
        return CD_ERROR;
    }

    *port = (uint16_t) n;

    return CD_OK;
}


static int
cd_conf_parse_mode(const char *value, unsigned *mode)
{
    char           *end;
    unsigned long   n;

    if (value[0] < '0' || value[0] > '7') {
        return CD_ERROR;
    }

    errno = 0;
    n = strtoul(value, &end, 8);

    if (errno != 0 || *end != '\0' || n > 0777) {
        return CD_ERROR;
    }

    *mode = (unsigned) n;

    return CD_OK;
}


static int
cd_conf_master_key_valid(const char *value)
{
    uint8_t  key[CD_MASTER_KEY_LEN];

    return sp_hex_decode(value, strlen(value), key, sizeof(key)) == SP_OK;
}


int
cd_config_metrics_token_valid(const char *value)
{
    size_t  i, len;

    len = strlen(value);

    if (len < CD_METRICS_TOKEN_MIN || len > CD_METRICS_TOKEN_MAX
        || strncmp(value, "sp_key_", 7) == 0)
    {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (value[i] <= ' ' || value[i] > '~') {
            return 0;
        }
    }

    return 1;
}


static int
cd_conf_parse_long(const char *value, long min, long max, long *out)
{
    char  *end;
    long   n;

    if (value[0] < '0' || value[0] > '9') {
        return CD_ERROR;
    }

    errno = 0;
    n = strtol(value, &end, 10);

    if (errno != 0 || *end != '\0' || n < min || n > max) {
        return CD_ERROR;
    }

    *out = n;

    return CD_OK;
}


int
cd_config_host_is_loopback(const char *host)
{
    unsigned char  a4[4], a6[16];
    static const unsigned char  v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0,
                                                 0, 0, 0xff, 0xff };

    if (strcasecmp(host, "localhost") == 0) {
        return 1;
    }

    if (inet_pton(AF_INET, host, a4) == 1) {
        return a4[0] == 127;
    }

    if (inet_pton(AF_INET6, host, a6) == 1) {
        if (memcmp(a6, in6addr_loopback.s6_addr, 16) == 0) {
            return 1;
        }

        return memcmp(a6, v4mapped, 12) == 0 && a6[12] == 127;
    }

    return 0;
}


/* reads a whole PEM file of at most CD_CONF_PEM_MAX bytes into *out */
static int
cd_conf_read_pem(const char *name, const char *path, char **out, char *err,
    size_t errlen)
{
    FILE    *f;
    char    *buf;
    size_t   n;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s=\"%s\" cannot be read: %s", name, path,
                 strerror(errno));
        return CD_ERROR;
    }

    buf = malloc(CD_CONF_PEM_MAX + 1);
    if (buf == NULL) {
        fclose(f);
        snprintf(err, errlen, "out of memory");
        return CD_ERROR;
    }

    n = fread(buf, 1, CD_CONF_PEM_MAX + 1, f);

    if (ferror(f) || n > CD_CONF_PEM_MAX) {
        snprintf(err, errlen, "%s=\"%s\" %s", name, path,
                 ferror(f) ? "cannot be read" : "is larger than 256 KiB: "
                 "expected a PEM file");
        OPENSSL_cleanse(buf, CD_CONF_PEM_MAX + 1);
        free(buf);
        fclose(f);
        return CD_ERROR;
    }

    fclose(f);
    buf[n] = '\0';

    /* never echo the contents: the key file is a secret */
    if (strstr(buf, "-----BEGIN ") == NULL || strlen(buf) != n) {
        snprintf(err, errlen, "%s=\"%s\" is not a PEM file: expected "
                 "\"-----BEGIN ...\" blocks", name, path);
        OPENSSL_cleanse(buf, n);
        free(buf);
        return CD_ERROR;
    }

    *out = buf;

    return CD_OK;
}


/*
 * After the table: TLS for the admin API (both files or neither), and no
 * plain HTTP on an address other hosts reach unless asked for by name,
 * since admin keys and provider keys cross this API.
 */
static int
cd_conf_check_api(cd_config_t *cf, char *err, size_t errlen)
{
    if ((cf->api_tls_cert == NULL) != (cf->api_tls_key == NULL)) {
        snprintf(err, errlen, "%s is set but %s is not: the admin API "
                 "needs both a certificate and its private key for TLS",
                 cf->api_tls_cert ? "SPENDPOL_API_TLS_CERT"
                                  : "SPENDPOL_API_TLS_KEY",
                 cf->api_tls_cert ? "SPENDPOL_API_TLS_KEY"
                                  : "SPENDPOL_API_TLS_CERT");
        return CD_ERROR;
    }

    if (cf->api_tls_cert != NULL) {
        if (cd_conf_read_pem("SPENDPOL_API_TLS_CERT", cf->api_tls_cert,
                             &cf->api_tls_cert_pem, err, errlen) != CD_OK
            || cd_conf_read_pem("SPENDPOL_API_TLS_KEY", cf->api_tls_key,
                                &cf->api_tls_key_pem, err, errlen) != CD_OK)
        {
            return CD_ERROR;
        }

        return CD_OK;
    }

    if (!cf->api_insecure && !cd_config_host_is_loopback(cf->api_host)) {
        snprintf(err, errlen, "SPENDPOL_API_LISTEN=\"%s\" is not a loopback "
                 "address and the admin API has no TLS: set "
                 "SPENDPOL_API_TLS_CERT and SPENDPOL_API_TLS_KEY, or set "
                 "SPENDPOL_API_INSECURE=1 to serve plain HTTP there (e.g. "
                 "behind a TLS proxy on a private network)", cf->api_listen);
        return CD_ERROR;
    }

    return CD_OK;
}


int
cd_config_load(cd_config_t *cf, cd_getenv_pt getenv_fn, void *data,
    char *err, size_t errlen)
{
    size_t                  i;
    char                   *path, **field;
    const char             *value, *used_name;
    const cd_conf_entry_t  *e;

    memset(cf, 0, sizeof(*cf));

    for (i = 0; i < sizeof(cd_conf_table) / sizeof(cd_conf_table[0]); i++) {
        e = &cd_conf_table[i];
        used_name = e->name;
        value = getenv_fn(e->name, data);

        if ((value == NULL || value[0] == '\0') && e->fallback != NULL) {
            value = getenv_fn(e->fallback, data);
            used_name = e->fallback;
        }

        if (value != NULL && value[0] == '\0') {
            value = NULL;
        }

        if (value == NULL && e->required) {
            snprintf(err, errlen, "%s (or %s) is required: a PostgreSQL "
                     "connection URL such as postgresql://user@host:5432/db",
                     e->name, e->fallback);
            goto failed;
        }

        if (value == NULL) {
            value = e->default_value;
            used_name = e->name;
        }

        field = (char **) ((char *) cf + e->offset);

        switch (e->type) {

        case CD_CONF_LONG:
            if (cd_conf_parse_long(value, e->min, e->max, (long *) field)
                != CD_OK)
            {
                snprintf(err, errlen, "%s=\"%s\" is not a number of %s "
                         "from %ld to %ld", used_name, value, e->unit,
                         e->min, e->max);
                goto failed;
            }
            continue;

        case CD_CONF_BOOL:
            if (strcmp(value, "0") != 0 && strcmp(value, "1") != 0) {
                snprintf(err, errlen, "%s=\"%s\" is not 0 or 1",
                         used_name, value);
                goto failed;
            }

            *(long *) field = value[0] == '1';
            continue;

        case CD_CONF_MODE:
            if (cd_conf_parse_mode(value, (unsigned *) field) != CD_OK) {
                snprintf(err, errlen, "%s=\"%s\" is not a file mode: expected"
                         " octal digits such as 0640", used_name, value);
                goto failed;
            }
            continue;

        case CD_CONF_LOG_LEVEL:
            *(int *) field = cd_log_level_parse(value);

            if (*(int *) field < 0) {
                snprintf(err, errlen, "%s=\"%s\" is not a log level: expected"
                         " error, warn, info or debug", used_name, value);
                goto failed;
            }
            continue;

        case CD_CONF_LISTEN:
            if (cd_config_parse_listen(value, &cf->api_host, &cf->api_port)
                != CD_OK)
            {
                snprintf(err, errlen, "%s=\"%s\" is not a listen address: "
                         "expected HOST:PORT such as 127.0.0.1:8081",
                         used_name, value);
                goto failed;
            }
            break;

        case CD_CONF_MASTER_KEY:
            if (value != NULL && !cd_conf_master_key_valid(value)) {
                /* never echo the value: it is a secret */
                snprintf(err, errlen, "%s must be 64 hex characters (a "
                         "256-bit AES key), e.g. from `openssl rand -hex 32`",
                         used_name);
                goto failed;
            }
            break;

        case CD_CONF_ADMIN_KEY:
            if (value != NULL && !sp_key_is_wellformed(value, strlen(value)))
            {
                snprintf(err, errlen, "%s is not a Spendpol key: expected "
                         "\"sp_key_\" followed by 48 lowercase hex characters",
                         used_name);
                goto failed;
            }
            break;

        case CD_CONF_METRICS_TOKEN:
            if (value != NULL && !cd_config_metrics_token_valid(value)) {
                /* never echo the value: it is a secret */
                snprintf(err, errlen, "%s must be %d to %d printable ASCII "
                         "characters without spaces, e.g. from `openssl "
                         "rand -hex 32`, and not a Spendpol key", used_name,
                         CD_METRICS_TOKEN_MIN, CD_METRICS_TOKEN_MAX);
                goto failed;
            }
            break;

        case CD_CONF_PATH_IN_DATA_DIR:
            if (value == e->default_value) {
                if (asprintf(&path, "%s/%s", cf->data_dir, value) < 0) {
                    snprintf(err, errlen, "out of memory");
                    goto failed;
                }

                *field = path;
                continue;
            }
            break;

        case CD_CONF_NODE_ID:
            if (value == NULL) {
                char  host[256], id[CD_ID_MAX];

                if (gethostname(host, sizeof(host)) != 0) {
                    strcpy(host, "localhost");
                }

                host[sizeof(host) - 1] = '\0';
                cd_config_default_node_id(host, cf->journal_path, id,
                                          sizeof(id));
                *field = strdup(id);

                if (*field == NULL) {
                    snprintf(err, errlen, "out of memory");
                    goto failed;
                }

                continue;
            }

            if (strlen(value) > CD_ID_MAX - 1
                || cd_validate_text(value, 1, CD_ID_MAX - 1) != NULL)
            {
                snprintf(err, errlen, "%s must be 1 to %d printable "
                         "characters naming this node", used_name,
                         CD_ID_MAX - 1);
                goto failed;
            }
            break;

        case CD_CONF_STRING:
            break;
        }

        if (value != NULL) {
            *field = cd_conf_strdup(value);

            if (*field == NULL) {
                snprintf(err, errlen, "out of memory");
                goto failed;
            }
        }
    }

    if (cd_conf_check_api(cf, err, errlen) != CD_OK) {
        goto failed;
    }

    /*
     * A mistyped allow list would refuse (or admit) the wrong upstreams:
     * refuse to start, naming the entry. The parsed list and the admin
     * API address are kept for the outbound checks.
     */
    if (cd_outbound_configure(cf, err, errlen) != CD_OK) {
        goto failed;
    }

    return CD_OK;

failed:

    cd_config_free(cf);

    return CD_ERROR;
}


void
cd_config_free(cd_config_t *cf)
{
    size_t   i;
    char   **secrets[] = { &cf->database_url, &cf->migrate_database_url,
                           &cf->api_database_url, &cf->redis_url,
                           &cf->master_key_hex, &cf->admin_key,
                           &cf->metrics_token, &cf->api_tls_key_pem };

    /* passwords and keys: wiped, not only freed */
    for (i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        if (*secrets[i] != NULL) {
            OPENSSL_cleanse(*secrets[i], strlen(*secrets[i]));
        }
    }

    free(cf->database_url);
    free(cf->migrate_database_url);
    free(cf->api_database_url);
    free(cf->redis_url);
    free(cf->api_listen);
    free(cf->api_host);
    free(cf->data_dir);
    free(cf->snapshot_dir);
    free(cf->journal_path);
    free(cf->egress_log);
    free(cf->shadow_org);
    free(cf->master_key_hex);
    free(cf->admin_key);
    free(cf->metrics_token);
    free(cf->migrations_dir);
    free(cf->prices_file);
    free(cf->node_id);
    free(cf->user);
    free(cf->upstream_allow);
    free(cf->api_tls_cert);
    free(cf->api_tls_key);
    free(cf->api_tls_cert_pem);
    free(cf->api_tls_key_pem);
    memset(cf, 0, sizeof(*cf));
}


void
cd_config_default_node_id(const char *hostname, const char *journal,
    char *out, size_t outlen)
{
    uint32_t  hash;

    hash = (uint32_t) sp_hash64(journal, strlen(journal), 0);

    /* the hostname is cut so that the hash always fits */
    snprintf(out, outlen, "%.*s-%08x", (int) (outlen > 10 ? outlen - 10 : 0),
             hostname, hash);
}


static int
cd_dir_exists(const char *path)
{
    struct stat  st;

    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}


char *
cd_config_find_migrations(void)
{
    size_t       i;
    ssize_t      n;
    char         exe[PATH_MAX], candidate[PATH_MAX + 64], *slash;
    const char  *relative[] = { "../migrations", "../../migrations" };

    if (cd_dir_exists("migrations")) {
        return realpath("migrations", NULL);
    }

    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

    if (n > 0) {
        exe[n] = '\0';
        slash = strrchr(exe, '/');

        if (slash != NULL) {
            *slash = '\0';

            for (i = 0; i < sizeof(relative) / sizeof(relative[0]); i++) {
                snprintf(candidate, sizeof(candidate), "%s/%s", exe,
                         relative[i]);

                if (cd_dir_exists(candidate)) {
                    return realpath(candidate, NULL);
                }
            }
        }
    }

    if (cd_dir_exists("/usr/share/spendpol/migrations")) {
        return strdup("/usr/share/spendpol/migrations");
    }

    return NULL;
}
