/* controld configuration from the environment, and address parsing */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "controld.h"


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
        const char  *env[6];
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
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
