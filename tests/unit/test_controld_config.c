/* controld configuration from the environment, and address parsing */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "controld.h"
#include "outbound.h"


/* a fake environment: NULL-terminated name, value pairs */
static const char *
fake_getenv(const char *name, void *data)
{
    const char  **env = data;

    for (; env[0] != NULL; env += 2) {
        if (strcmp(env[0], name) == 0) {
            return env[1];
        }
    }

    return NULL;
}


static int
load(cd_config_t *cf, const char **env, char *err, size_t errlen)
{
    return cd_config_load(cf, fake_getenv, env, err, errlen);
}


static void
test_config_defaults(void **state)
{
    char          err[512];
    cd_config_t   cf;
    const char   *env[] = { "SPENDPOL_DATABASE_URL", "postgresql://x/db",
                            NULL };

    assert_int_equal(load(&cf, env, err, sizeof(err)), CD_OK);
    assert_string_equal(cf.database_url, "postgresql://x/db");
    assert_null(cf.redis_url);
    assert_string_equal(cf.api_host, "127.0.0.1");
    assert_int_equal(cf.api_port, 8081);
    assert_string_equal(cf.data_dir, ".run");
    assert_string_equal(cf.snapshot_dir, "/dev/shm/spendpol");
    assert_int_equal(cf.snapshot_mode, 0640);
    assert_string_equal(cf.journal_path, ".run/journal/journal.log");
    assert_null(cf.master_key_hex);
    assert_null(cf.admin_key);
    assert_null(cf.migrations_dir);
    assert_int_equal(cf.log_level, CD_LOG_INFO);
    assert_int_equal(cf.api_body_max, 1048576);
    assert_int_equal(cf.api_connection_limit, 512);
    assert_int_equal(cf.api_per_ip_connection_limit, 256);
    assert_int_equal(cf.api_connection_timeout, 30);
    assert_null(cf.api_tls_cert);
    assert_null(cf.api_tls_key);
    assert_null(cf.api_tls_cert_pem);
    assert_null(cf.api_tls_key_pem);
    assert_int_equal(cf.api_insecure, 0);
    assert_int_equal(cf.max_keys_per_org, 100000);
    assert_int_equal(cf.max_budgets_per_org, 10000);
    assert_int_equal(cf.max_alert_rules_per_org, 1000);
    assert_int_equal(cf.max_agents_per_org, 100000);
    assert_int_equal(cf.audit_retention_months, 0);
    assert_int_equal(cf.leases, 1);
    assert_int_equal(cf.lease_ttl_ms, 10000);
    assert_int_equal(cf.lease_grace_ms, 5000);
    assert_int_equal(cf.lease_horizon_ms, 10000);
    cd_config_free(&cf);
}


static void
test_config_node_id_defaults_to_host_and_journal(void **state)
{
    char          err[512], expected[CD_ID_MAX], host[256];
    cd_config_t   cf;
    const char   *env[] = { "SPENDPOL_DATABASE_URL", "postgresql://x/db",
                            "SPENDPOL_JOURNAL", "/var/spendpol/j.log",
                            NULL };
    const char   *own[] = { "SPENDPOL_DATABASE_URL", "postgresql://x/db",
                            "SPENDPOL_NODE_ID", "gw-eu-1", NULL };
    const char   *bad[] = { "SPENDPOL_DATABASE_URL", "postgresql://x/db",
                            "SPENDPOL_NODE_ID", "gw\n1", NULL };

    assert_int_equal(load(&cf, env, err, sizeof(err)), CD_OK);
    assert_int_equal(gethostname(host, sizeof(host)), 0);
    host[sizeof(host) - 1] = '\0';
    cd_config_default_node_id(host, "/var/spendpol/j.log", expected,
                              sizeof(expected));
    assert_string_equal(cf.node_id, expected);
    cd_config_free(&cf);

    assert_int_equal(load(&cf, own, err, sizeof(err)), CD_OK);
    assert_string_equal(cf.node_id, "gw-eu-1");
    cd_config_free(&cf);

    assert_int_equal(load(&cf, bad, err, sizeof(err)), CD_ERROR);
    assert_non_null(strstr(err, "SPENDPOL_NODE_ID"));
}


static void
test_config_generic_names_are_fallbacks(void **state)
{
    char          err[512];
    cd_config_t   cf;
    const char   *env[] = { "DATABASE_URL", "postgresql://generic/db",
                            "REDIS_URL", "redis://r:6380/2", NULL };
    const char   *both[] = { "DATABASE_URL", "postgresql://generic/db",
                             "SPENDPOL_DATABASE_URL", "postgresql://own/db",
                             NULL };

    assert_int_equal(load(&cf, env, err, sizeof(err)), CD_OK);
    assert_string_equal(cf.database_url, "postgresql://generic/db");
    assert_string_equal(cf.redis_url, "redis://r:6380/2");
    cd_config_free(&cf);

    assert_int_equal(load(&cf, both, err, sizeof(err)), CD_OK);
    assert_string_equal(cf.database_url, "postgresql://own/db");
    cd_config_free(&cf);
}


static void
test_config_journal_follows_data_dir(void **state)
{
    char          err[512];
    cd_config_t   cf;
    const char   *env[] = { "DATABASE_URL", "x", "SPENDPOL_DATA_DIR",
                            "/var/lib/spendpol", "SPENDPOL_SNAPSHOT_MODE",
                            "0600", "SPENDPOL_API_LISTEN", "[::1]:0",
                            "SPENDPOL_LOG_LEVEL", "DEBUG", NULL };

    assert_int_equal(load(&cf, env, err, sizeof(err)), CD_OK);
    assert_string_equal(cf.journal_path,
                        "/var/lib/spendpol/journal/journal.log");
    assert_int_equal(cf.snapshot_mode, 0600);
    assert_string_equal(cf.api_host, "::1");
    assert_int_equal(cf.api_port, 0);
    assert_int_equal(cf.log_level, CD_LOG_DEBUG);
    cd_config_free(&cf);
}


static void
test_config_errors_name_the_variable(void **state)
{
    char          err[512];
    cd_config_t   cf;
    size_t        i;
    struct {
        const char  *env[8];
        const char  *name;
    } cases[] = {
        { { NULL }, "SPENDPOL_DATABASE_URL" },
        { { "DATABASE_URL", "x", "SPENDPOL_SNAPSHOT_MODE", "rw", NULL },
          "SPENDPOL_SNAPSHOT_MODE" },
        { { "DATABASE_URL", "x", "SPENDPOL_SNAPSHOT_MODE", "0999", NULL },
          "SPENDPOL_SNAPSHOT_MODE" },
        { { "DATABASE_URL", "x", "SPENDPOL_API_LISTEN", "8081", NULL },
          "SPENDPOL_API_LISTEN" },
        { { "DATABASE_URL", "x", "SPENDPOL_API_LISTEN", "h:99999", NULL },
          "SPENDPOL_API_LISTEN" },
        { { "DATABASE_URL", "x", "SPENDPOL_LOG_LEVEL", "loud", NULL },
          "SPENDPOL_LOG_LEVEL" },
        { { "DATABASE_URL", "x", "SPENDPOL_MASTER_KEY", "abc", NULL },
          "SPENDPOL_MASTER_KEY" },
        { { "DATABASE_URL", "x", "SPENDPOL_ADMIN_KEY", "sp_key_short",
            NULL }, "SPENDPOL_ADMIN_KEY" },
        { { "DATABASE_URL", "x", "SPENDPOL_API_BODY_MAX", "1m", NULL },
          "SPENDPOL_API_BODY_MAX" },
        { { "DATABASE_URL", "x", "SPENDPOL_API_BODY_MAX", "1023", NULL },
          "SPENDPOL_API_BODY_MAX" },
        { { "DATABASE_URL", "x", "SPENDPOL_API_BODY_MAX", "67108865",
            NULL }, "SPENDPOL_API_BODY_MAX" },
        { { "DATABASE_URL", "x", "SPENDPOL_API_CONNECTION_LIMIT", "0",
            NULL }, "SPENDPOL_API_CONNECTION_LIMIT" },
        { { "DATABASE_URL", "x", "SPENDPOL_API_PER_IP_CONNECTION_LIMIT",
            "-1", NULL }, "SPENDPOL_API_PER_IP_CONNECTION_LIMIT" },
        { { "DATABASE_URL", "x", "SPENDPOL_API_CONNECTION_TIMEOUT", "0",
            NULL }, "SPENDPOL_API_CONNECTION_TIMEOUT" },
        { { "DATABASE_URL", "x", "SPENDPOL_API_CONNECTION_TIMEOUT",
            "99999999999999999999", NULL },
          "SPENDPOL_API_CONNECTION_TIMEOUT" },
        { { "DATABASE_URL", "x", "SPENDPOL_API_INSECURE", "yes", NULL },
          "SPENDPOL_API_INSECURE" },
        { { "DATABASE_URL", "x", "SPENDPOL_MAX_KEYS_PER_ORG", "0", NULL },
          "SPENDPOL_MAX_KEYS_PER_ORG" },
        { { "DATABASE_URL", "x", "SPENDPOL_MAX_BUDGETS_PER_ORG", "+5",
            NULL }, "SPENDPOL_MAX_BUDGETS_PER_ORG" },
        { { "DATABASE_URL", "x", "SPENDPOL_MAX_ALERT_RULES_PER_ORG", "5 ",
            NULL }, "SPENDPOL_MAX_ALERT_RULES_PER_ORG" },
        { { "DATABASE_URL", "x", "SPENDPOL_MAX_AGENTS_PER_ORG", "x", NULL },
          "SPENDPOL_MAX_AGENTS_PER_ORG" },
        { { "DATABASE_URL", "x", "SPENDPOL_AUDIT_RETENTION_MONTHS", "-1",
            NULL }, "SPENDPOL_AUDIT_RETENTION_MONTHS" },
        { { "DATABASE_URL", "x", "SPENDPOL_LEASES", "yes", NULL },
          "SPENDPOL_LEASES" },
        { { "DATABASE_URL", "x", "SPENDPOL_LEASE_TTL_MS", "10", NULL },
          "SPENDPOL_LEASE_TTL_MS" },
        { { "DATABASE_URL", "x", "SPENDPOL_LEASE_GRACE_MS", "-1", NULL },
          "SPENDPOL_LEASE_GRACE_MS" },
        { { "DATABASE_URL", "x", "SPENDPOL_LEASE_HORIZON_MS", "0", NULL },
          "SPENDPOL_LEASE_HORIZON_MS" },
        { { "DATABASE_URL", "x", "SPENDPOL_API_TLS_CERT", "/c.pem", NULL },
          "SPENDPOL_API_TLS_KEY" },
        { { "DATABASE_URL", "x", "SPENDPOL_API_TLS_KEY", "/k.pem", NULL },
          "SPENDPOL_API_TLS_CERT" },
        { { "DATABASE_URL", "x", "SPENDPOL_API_TLS_CERT", "/nonexistent/c",
            "SPENDPOL_API_TLS_KEY", "/nonexistent/k", NULL },
          "SPENDPOL_API_TLS_CERT" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(load(&cf, cases[i].env, err, sizeof(err)),
                         CD_ERROR);
        assert_non_null(strstr(err, cases[i].name));
    }
}


static void
test_config_secrets_are_never_echoed(void **state)
{
    char          err[512];
    cd_config_t   cf;
    const char   *env[] = { "DATABASE_URL", "x", "SPENDPOL_MASTER_KEY",
                            "secretsecretsecret", NULL };
    const char   *env2[] = { "DATABASE_URL", "x", "SPENDPOL_ADMIN_KEY",
                             "sp_key_SECRETVALUE", NULL };

    assert_int_equal(load(&cf, env, err, sizeof(err)), CD_ERROR);
    assert_null(strstr(err, "secretsecret"));
    assert_int_equal(load(&cf, env2, err, sizeof(err)), CD_ERROR);
    assert_null(strstr(err, "SECRETVALUE"));
}


static void
test_config_accepts_wellformed_keys(void **state)
{
    char          err[512];
    cd_config_t   cf;
    const char   *env[] = { "DATABASE_URL", "x", "SPENDPOL_MASTER_KEY",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "SPENDPOL_ADMIN_KEY",
        "sp_key_000102030405060708090a0b0c0d0e0f1011121314151617", NULL };

    assert_int_equal(load(&cf, env, err, sizeof(err)), CD_OK);
    assert_non_null(cf.master_key_hex);
    assert_non_null(cf.admin_key);
    cd_config_free(&cf);
}


static void
test_config_api_limits_are_set(void **state)
{
    char          err[512];
    cd_config_t   cf;
    const char   *env[] = { "DATABASE_URL", "x",
                            "SPENDPOL_API_BODY_MAX", "2048",
                            "SPENDPOL_API_CONNECTION_LIMIT", "16",
                            "SPENDPOL_API_PER_IP_CONNECTION_LIMIT", "0",
                            "SPENDPOL_API_CONNECTION_TIMEOUT", "5",
                            "SPENDPOL_MAX_KEYS_PER_ORG", "3",
                            "SPENDPOL_MAX_BUDGETS_PER_ORG", "4",
                            "SPENDPOL_MAX_ALERT_RULES_PER_ORG", "5",
                            "SPENDPOL_MAX_AGENTS_PER_ORG", "6",
                            "SPENDPOL_AUDIT_RETENTION_MONTHS", "13", NULL };

    assert_int_equal(load(&cf, env, err, sizeof(err)), CD_OK);
    assert_int_equal(cf.api_body_max, 2048);
    assert_int_equal(cf.api_connection_limit, 16);
    assert_int_equal(cf.api_per_ip_connection_limit, 0);
    assert_int_equal(cf.api_connection_timeout, 5);
    assert_int_equal(cf.max_keys_per_org, 3);
    assert_int_equal(cf.max_budgets_per_org, 4);
    assert_int_equal(cf.max_alert_rules_per_org, 5);
    assert_int_equal(cf.max_agents_per_org, 6);
    assert_int_equal(cf.audit_retention_months, 13);
    cd_config_free(&cf);
}


static void
test_config_range_error_names_the_bounds(void **state)
{
    char          err[512];
    cd_config_t   cf;
    const char   *env[] = { "DATABASE_URL", "x",
                            "SPENDPOL_API_BODY_MAX", "10", NULL };

    assert_int_equal(load(&cf, env, err, sizeof(err)), CD_ERROR);
    assert_non_null(strstr(err, "SPENDPOL_API_BODY_MAX=\"10\""));
    assert_non_null(strstr(err, "1024"));
    assert_non_null(strstr(err, "67108864"));
}


static void
test_config_refuses_plain_http_off_loopback(void **state)
{
    char          err[512];
    size_t        i;
    cd_config_t   cf;
    const char   *refused[] = { "0.0.0.0:8081", "[::]:8081",
                                "10.0.0.5:8081", "admin.example.com:8081",
                                "[::ffff:10.0.0.1]:80" };
    const char   *allowed[] = { "127.0.0.1:0", "127.0.0.2:8081",
                                "[::1]:8081", "localhost:8081",
                                "[::ffff:127.0.0.1]:80" };
    const char   *env[] = { "DATABASE_URL", "x", "SPENDPOL_API_LISTEN", NULL,
                            NULL, NULL, NULL };

    for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        env[3] = refused[i];
        env[4] = NULL;
        assert_int_equal(load(&cf, env, err, sizeof(err)), CD_ERROR);
        assert_non_null(strstr(err, refused[i]));
        assert_non_null(strstr(err, "SPENDPOL_API_TLS_CERT"));
        assert_non_null(strstr(err, "SPENDPOL_API_INSECURE=1"));

        /* asked for by name: plain HTTP there */
        env[4] = "SPENDPOL_API_INSECURE";
        env[5] = "1";
        assert_int_equal(load(&cf, env, err, sizeof(err)), CD_OK);
        assert_int_equal(cf.api_insecure, 1);
        cd_config_free(&cf);
    }

    env[4] = NULL;

    for (i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++) {
        env[3] = allowed[i];
        assert_int_equal(load(&cf, env, err, sizeof(err)), CD_OK);
        cd_config_free(&cf);
    }
}


static void
test_loopback_hosts(void **state)
{
    assert_true(cd_config_host_is_loopback("127.0.0.1"));
    assert_true(cd_config_host_is_loopback("127.255.0.9"));
    assert_true(cd_config_host_is_loopback("::1"));
    assert_true(cd_config_host_is_loopback("LocalHost"));
    assert_true(cd_config_host_is_loopback("::ffff:127.0.0.1"));
    assert_false(cd_config_host_is_loopback("0.0.0.0"));
    assert_false(cd_config_host_is_loopback("::"));
    assert_false(cd_config_host_is_loopback("128.0.0.1"));
    assert_false(cd_config_host_is_loopback("::2"));
    assert_false(cd_config_host_is_loopback("localhost.example.com"));
    assert_false(cd_config_host_is_loopback("127.0.0.1.nip.io"));
}


static char *
write_temp(const char *text)
{
    int    fd;
    char  *path;

    path = strdup("/tmp/test_controld_config.XXXXXX");
    assert_non_null(path);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t) strlen(text));
    close(fd);

    return path;
}


static void
test_config_tls_files_are_read(void **state)
{
    char          err[512], *cert, *key, *junk;
    cd_config_t   cf;
    const char   *cert_pem = "-----BEGIN CERTIFICATE-----\nMIIB\n"
                             "-----END CERTIFICATE-----\n";
    const char   *key_pem = "-----BEGIN PRIVATE KEY-----\nSECRETKEYBYTES\n"
                            "-----END PRIVATE KEY-----\n";
    const char   *env[] = { "DATABASE_URL", "x",
                            "SPENDPOL_API_LISTEN", "0.0.0.0:8443",
                            "SPENDPOL_API_TLS_CERT", NULL,
                            "SPENDPOL_API_TLS_KEY", NULL, NULL };

    cert = write_temp(cert_pem);
    key = write_temp(key_pem);
    junk = write_temp("not a pem file SECRETKEYBYTES\n");

    /* TLS: any address is allowed without SPENDPOL_API_INSECURE */
    env[5] = cert;
    env[7] = key;
    assert_int_equal(load(&cf, env, err, sizeof(err)), CD_OK);
    assert_string_equal(cf.api_tls_cert, cert);
    assert_string_equal(cf.api_tls_key, key);
    assert_string_equal(cf.api_tls_cert_pem, cert_pem);
    assert_string_equal(cf.api_tls_key_pem, key_pem);
    cd_config_free(&cf);

    /* a key file that is not PEM: named, never echoed */
    env[7] = junk;
    assert_int_equal(load(&cf, env, err, sizeof(err)), CD_ERROR);
    assert_non_null(strstr(err, "SPENDPOL_API_TLS_KEY"));
    assert_non_null(strstr(err, "not a PEM file"));
    assert_null(strstr(err, "SECRETKEYBYTES"));

    unlink(cert);
    unlink(key);
    unlink(junk);
    free(cert);
    free(key);
    free(junk);
}


static void
test_listen_parsing(void **state)
{
    char      *host;
    uint16_t   port;

    assert_int_equal(cd_config_parse_listen("0.0.0.0:80", &host, &port),
                     CD_OK);
    assert_string_equal(host, "0.0.0.0");
    assert_int_equal(port, 80);
    free(host);

    assert_int_equal(cd_config_parse_listen("localhost:8081", &host, &port),
                     CD_OK);
    free(host);

    assert_int_equal(cd_config_parse_listen(":80", &host, &port), CD_ERROR);
    assert_int_equal(cd_config_parse_listen("h:", &host, &port), CD_ERROR);
    assert_int_equal(cd_config_parse_listen("h:-1", &host, &port), CD_ERROR);
    assert_int_equal(cd_config_parse_listen("::1:80", &host, &port),
                     CD_ERROR);
    assert_int_equal(cd_config_parse_listen("[::1]80", &host, &port),
                     CD_ERROR);
}


static void
test_redis_url_parsing(void **state)
{
    int    port, db;
    char  *host, *user, *password;

    assert_int_equal(cd_redis_parse_url("redis://127.0.0.1:6380/3", &host,
                                        &port, &db, &user, &password), CD_OK);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6380);
    assert_int_equal(db, 3);
    assert_null(password);
    free(host);

    assert_int_equal(cd_redis_parse_url("redis://u:p%40ss@h", &host, &port,
                                        &db, &user, &password), CD_OK);
    assert_string_equal(host, "h");
    assert_int_equal(port, 6379);
    assert_string_equal(user, "u");
    assert_string_equal(password, "p%40ss");
    free(host);
    free(user);
    free(password);

    assert_int_equal(cd_redis_parse_url("http://h", &host, &port, &db, &user,
                                        &password), CD_ERROR);
    assert_int_equal(cd_redis_parse_url("redis://h:0", &host, &port, &db,
                                        &user, &password), CD_ERROR);
    assert_int_equal(cd_redis_parse_url("redis://h/x", &host, &port, &db,
                                        &user, &password), CD_ERROR);
    assert_int_equal(cd_redis_parse_url("redis://", &host, &port, &db,
                                        &user, &password), CD_ERROR);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_generic_names_are_fallbacks),
        cmocka_unit_test(test_config_journal_follows_data_dir),
        cmocka_unit_test(test_config_errors_name_the_variable),
        cmocka_unit_test(test_config_secrets_are_never_echoed),
        cmocka_unit_test(test_config_accepts_wellformed_keys),
        cmocka_unit_test(test_listen_parsing),
        cmocka_unit_test(test_config_node_id_defaults_to_host_and_journal),
        cmocka_unit_test(test_redis_url_parsing),
        cmocka_unit_test(test_config_api_limits_are_set),
        cmocka_unit_test(test_config_range_error_names_the_bounds),
        cmocka_unit_test(test_config_refuses_plain_http_off_loopback),
        cmocka_unit_test(test_loopback_hosts),
        cmocka_unit_test(test_config_tls_files_are_read),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
