/*
 * controld shadow AI: the SPENDPOL_EGRESS_LOG setting, batches of log
 * lines (counts, the first unreadable line, the hits' JSON, the line
 * cap, whole lines for a tail) and alert ids.
 */

#include "sp_id.h"
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"
#include "api.h"
#include "shadow_tail.h"


/* 2026-12-05T02:00:00Z */
#define NOW_MS  1796436000000LL


static void
test_egress_log_setting(void **state)
{
    int     formats[CD_SHADOW_TAIL_FILES_MAX];
    char    err[256], *paths[CD_SHADOW_TAIL_FILES_MAX];
    size_t  i, n;

    (void) state;

    assert_int_equal(cd_shadow_tail_parse("/var/log/dnsmasq.log:dnsmasq,"
                                          " /var/log/squid/access.log:squid"
                                          " ,/srv/egress:8080/x.log,"
                                          "/srv/y.log:generic", paths,
                                          formats, &n, err, sizeof(err)),
                     CD_OK);
    assert_int_equal(n, 4);
    assert_string_equal(paths[0], "/var/log/dnsmasq.log");
    assert_int_equal(formats[0], SP_EGRESS_DNSMASQ);
    assert_string_equal(paths[1], "/var/log/squid/access.log");
    assert_int_equal(formats[1], SP_EGRESS_SQUID);
    /* a ':' of the path itself: auto */
    assert_string_equal(paths[2], "/srv/egress:8080/x.log");
    assert_int_equal(formats[2], SP_EGRESS_AUTO);
    assert_int_equal(formats[3], SP_EGRESS_GENERIC);

    for (i = 0; i < n; i++) {
        free(paths[i]);
    }

    assert_int_equal(cd_shadow_tail_parse("/a.log,,/b.log", paths, formats,
                                          &n, err, sizeof(err)), CD_ERROR);
    assert_int_equal(n, 0);
    assert_non_null(strstr(err, "SPENDPOL_EGRESS_LOG: entry 2"));

    assert_int_equal(cd_shadow_tail_parse(":bind", paths, formats, &n, err,
                                          sizeof(err)), CD_ERROR);
    assert_int_equal(cd_shadow_tail_parse("a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,"
                                          "p,q", paths, formats, &n, err,
                                          sizeof(err)), CD_ERROR);
    assert_non_null(strstr(err, "at most 16"));
}


static void
test_batch_counts_and_hits(void **state)
{
    cd_shadow_batch_t  b;

    static const char  text[] =
        "1796432523 10.0.0.7 api.openai.com\r\n"
        "1796432523 10.0.0.7 example.com\n"
        "garbage with a secret-token\n"
        "# comment\n"
        "1796432523 we\"ird\\ claude.ai\n"
        "1796432523 10.0.0.8";

    (void) state;

    cd_shadow_batch_init(&b, SP_EGRESS_GENERIC, NOW_MS);
    assert_int_equal(cd_shadow_batch_text(&b, text, sizeof(text) - 1, NULL),
                     CD_OK);

    assert_int_equal(b.lines, 6);
    assert_int_equal(b.queries, 3);
    assert_int_equal(b.ai_queries, 2);
    assert_int_equal(b.unreadable, 2);
    assert_int_equal(b.first_unreadable, 3);
    assert_null(strstr(b.first_reason, "secret"));
    assert_string_equal(b.hits,
        "[{\"c\":\"10.0.0.7\",\"s\":\"OpenAI\",\"h\":\"api.openai.com\","
        "\"t\":1796432523000},{\"c\":\"we\\\"ird\\\\\",\"s\":\"Claude\","
        "\"h\":\"claude.ai\",\"t\":1796432523000}");

    cd_shadow_batch_free(&b);
}


static void
test_batch_whole_lines_for_a_tail(void **state)
{
    size_t             consumed;
    cd_shadow_batch_t  b;

    static const char  text[] = "1796432523 10.0.0.7 x.ai\n"
                                "1796432523 10.0.0.7 api.mis";

    (void) state;

    cd_shadow_batch_init(&b, SP_EGRESS_GENERIC, NOW_MS);
    assert_int_equal(cd_shadow_batch_text(&b, text, sizeof(text) - 1,
                                          &consumed), CD_OK);
    assert_int_equal(consumed, strlen("1796432523 10.0.0.7 x.ai\n"));
    assert_int_equal(b.lines, 1);
    assert_int_equal(b.ai_queries, 1);
    cd_shadow_batch_free(&b);
}


static void
test_batch_line_cap(void **state)
{
    char               *text;
    size_t              len;
    cd_shadow_batch_t   b;

    (void) state;

    len = CD_SHADOW_LINES_MAX + 1;
    text = malloc(len);
    assert_non_null(text);
    memset(text, '\n', len);

    cd_shadow_batch_init(&b, SP_EGRESS_AUTO, NOW_MS);
    assert_int_equal(cd_shadow_batch_text(&b, text, len - 1, NULL), CD_OK);
    assert_int_equal(b.lines, CD_SHADOW_LINES_MAX);
    assert_int_equal(b.len, 0);
    cd_shadow_batch_free(&b);

    cd_shadow_batch_init(&b, SP_EGRESS_AUTO, NOW_MS);
    assert_int_equal(cd_shadow_batch_text(&b, text, len, NULL),
                     CD_DECLINED);
    cd_shadow_batch_free(&b);

    free(text);
}


static void
test_alert_ids(void **state)
{
    (void) state;

    assert_true(sp_id_valid(SP_ID_SHADOW_ALERT, "sai_0123456789abcdef01234567", strlen("sai_0123456789abcdef01234567")));
    assert_false(sp_id_valid(SP_ID_SHADOW_ALERT, "sai_0123456789abcdef0123456", strlen("sai_0123456789abcdef0123456")));
    assert_false(sp_id_valid(SP_ID_SHADOW_ALERT, "sai_0123456789abcdef012345678", strlen("sai_0123456789abcdef012345678")));
    assert_false(sp_id_valid(SP_ID_SHADOW_ALERT, "sai_0123456789ABCDEF01234567", strlen("sai_0123456789ABCDEF01234567")));
    assert_false(sp_id_valid(SP_ID_SHADOW_ALERT, "alr_0123456789abcdef01234567", strlen("alr_0123456789abcdef01234567")));
    assert_false(sp_id_valid(SP_ID_SHADOW_ALERT, "", strlen("")));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_egress_log_setting),
        cmocka_unit_test(test_batch_counts_and_hits),
        cmocka_unit_test(test_batch_whole_lines_for_a_tail),
        cmocka_unit_test(test_batch_line_cap),
        cmocka_unit_test(test_alert_ids),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
