/*
 * controld's outbound checks (outbound.c): SPENDPOL_UPSTREAM_ALLOW at
 * start, URLs when they are stored, addresses before a webhook connects.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "controld.h"
#include "webhook.h"
#include "outbound.h"


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


/* loads a configuration with that allow list (NULL: unset) */
static int
configure(const char *allow, char *err, size_t errlen)
{
    int           rc;
    cd_config_t   cf;
    const char   *env[] = { "SPENDPOL_DATABASE_URL", "postgresql://x/db",
                            "SPENDPOL_API_LISTEN", "127.0.0.1:8081",
                            allow ? "SPENDPOL_UPSTREAM_ALLOW" : NULL, allow,
                            NULL };

    rc = cd_config_load(&cf, fake_getenv, env, err, errlen);

    if (rc == CD_OK) {
        cd_config_free(&cf);
    }

    return rc;
}


/* "allowed", or the rule that refused url; msg gets the message */
static const char *
check(const char *url, char *msg, size_t msglen)
{
    cd_url_t     u;
    const char  *rule;

    assert_int_equal(cd_url_parse(url, &u), CD_OK);
    msg[0] = '\0';

    if (cd_outbound_check_url(&u, msg, msglen, &rule) == CD_OK) {
        return "allowed";
    }

    return rule;
}


static void
test_config_refuses_a_bad_entry(void **state)
{
    char  err[512];

    assert_int_equal(configure("127.0.0.1/32,10.0.0.0/33", err,
                               sizeof(err)), CD_ERROR);
    assert_non_null(strstr(err, "SPENDPOL_UPSTREAM_ALLOW"));
    assert_non_null(strstr(err, "\"10.0.0.0/33\""));

    assert_int_equal(configure("http://vllm", err, sizeof(err)), CD_ERROR);
    assert_non_null(strstr(err, "\"http://vllm\""));

    assert_int_equal(configure("127.0.0.1/32, vllm.internal, *.test", err,
                               sizeof(err)), CD_OK);
    assert_string_equal(cd_outbound_allow_text(),
                        "127.0.0.1/32, vllm.internal, *.test");
}


static void
test_defaults_refuse_local_addresses(void **state)
{
    char  err[512], msg[512];

    assert_int_equal(configure(NULL, err, sizeof(err)), CD_OK);

    assert_string_equal(check("http://10.0.0.5/v1", msg, sizeof(msg)),
                        "private");
    assert_string_equal(msg, "host 10.0.0.5 is a private address; allow it "
                        "with SPENDPOL_UPSTREAM_ALLOW");
    assert_string_equal(check("https://10.0.0.5", msg, sizeof(msg)),
                        "private");
    assert_string_equal(check("http://127.0.0.1:8000/v1", msg, sizeof(msg)),
                        "loopback");
    assert_string_equal(check("http://[::1]:8000", msg, sizeof(msg)),
                        "loopback");
    assert_string_equal(check("http://169.254.169.254/latest", msg,
                              sizeof(msg)), "metadata");
    assert_string_equal(check("https://metadata.google.internal", msg,
                              sizeof(msg)), "metadata");
    assert_string_equal(check("https://localhost:8000", msg, sizeof(msg)),
                        "loopback");
    assert_string_equal(check("http://[::ffff:10.0.0.5]", msg, sizeof(msg)),
                        "private");
    /* a numeric name resolves to what it spells */
    assert_string_equal(check("https://2130706433", msg, sizeof(msg)),
                        "loopback");
    /* public https is the default */
    assert_string_equal(check("https://8.8.8.8", msg, sizeof(msg)),
                        "allowed");
    assert_string_equal(check("http://8.8.8.8", msg, sizeof(msg)), "http");
    /* a name that does not resolve: https waits, plain http does not */
    assert_string_equal(check("https://nowhere.invalid", msg, sizeof(msg)),
                        "allowed");
    assert_string_equal(check("http://nowhere.invalid", msg, sizeof(msg)),
                        "http");
    assert_non_null(strstr(msg, "nowhere.invalid"));
}


static void
test_allowed_addresses_and_the_admin_api(void **state)
{
    char  err[512], msg[512];

    assert_int_equal(configure("127.0.0.0/8,*.invalid", err, sizeof(err)),
                     CD_OK);

    assert_string_equal(check("http://127.0.0.1:8000/v1", msg, sizeof(msg)),
                        "allowed");
    assert_string_equal(check("http://vllm.invalid:8000", msg, sizeof(msg)),
                        "allowed");
    assert_string_equal(check("http://10.0.0.5", msg, sizeof(msg)),
                        "private");
    /* the admin API is never an upstream */
    assert_string_equal(check("http://127.0.0.1:8081/v1", msg, sizeof(msg)),
                        "admin-api");
    assert_non_null(strstr(msg, "admin API"));
    assert_string_equal(check("http://0.0.0.0:8081", msg, sizeof(msg)),
                        "admin-api");
}


static void
test_connect_time_check(void **state)
{
    char                 err[512];
    cd_url_t             u;
    struct sockaddr_in   sin;

    assert_int_equal(configure("127.0.0.2/32", err, sizeof(err)), CD_OK);
    assert_int_equal(cd_url_parse("http://hook.test:9000/x", &u), CD_OK);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(9000);
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);

    /* the name now resolves outside the list (DNS rebinding) */
    assert_int_equal(cd_outbound_check_addr(&u, (struct sockaddr *) &sin,
                                            sizeof(sin), err, sizeof(err)),
                     CD_ERROR);
    assert_string_equal(err, "address not allowed: loopback (127.0.0.1 is "
                        "a loopback address)");

    inet_pton(AF_INET, "127.0.0.2", &sin.sin_addr);
    assert_int_equal(cd_outbound_check_addr(&u, (struct sockaddr *) &sin,
                                            sizeof(sin), err, sizeof(err)),
                     CD_OK);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_config_refuses_a_bad_entry),
        cmocka_unit_test(test_defaults_refuse_local_addresses),
        cmocka_unit_test(test_allowed_addresses_and_the_admin_api),
        cmocka_unit_test(test_connect_time_check),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
