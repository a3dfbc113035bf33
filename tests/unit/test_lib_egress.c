/*
 * libspendpol egress logs (sp_egress.c): the dnsmasq, BIND, Squid and
 * generic parsers on lines as those programs write them, auto detection,
 * refusals that never quote the line, and the AI service catalogue.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sp_egress.h"


/* 2026-12-05T02:00:00Z */
#define NOW_MS         1796436000000LL
/* 2026-12-05T01:02:03Z */
#define DEC5_MS        1796432523000LL


static int
parse(sp_egress_format_e format, const char *line, int64_t now_ms,
    sp_egress_event_t *ev, char *err)
{
    err[0] = '\0';

    return sp_egress_parse(format, line, strlen(line), now_ms, ev, err,
                           256);
}


/* one query line read by format and by auto the same way */
static void
expect_query(sp_egress_format_e format, const char *line, int64_t ts_ms,
    const char *client, const char *host)
{
    int                fmt;
    char               err[256];
    sp_egress_event_t  ev;

    for (fmt = 0; fmt < 2; fmt++) {
        if (parse(fmt ? SP_EGRESS_AUTO : format, line, NOW_MS, &ev, err)
            != SP_OK)
        {
            fail_msg("%s (%s): %s", line, fmt ? "auto" : "format", err);
        }

        assert_int_equal(ev.format, format);
        assert_string_equal(ev.client, client);
        assert_string_equal(ev.host, host);

        if (ts_ms >= 0 && ev.ts_ms != ts_ms) {
            fail_msg("%s: time %lld, expected %lld", line,
                     (long long) ev.ts_ms, (long long) ts_ms);
        }
    }
}


static void
expect_declined(sp_egress_format_e format, const char *line)
{
    char               err[256];
    sp_egress_event_t  ev;

    if (parse(format, line, NOW_MS, &ev, err) != SP_DECLINED) {
        fail_msg("%s: not declined (%s)", line, err);
    }
}


/* refused with a reason that quotes nothing of the line */
static void
expect_error(sp_egress_format_e format, const char *line)
{
    char               err[256];
    sp_egress_event_t  ev;

    if (parse(format, line, NOW_MS, &ev, err) != SP_ERROR) {
        fail_msg("%s: read as a query or declined", line);
    }

    assert_true(err[0] != '\0');
    assert_null(strstr(err, "openai"));
    assert_null(strstr(err, "10.0.0"));
    assert_null(strstr(err, "secret"));
    assert_string_equal(ev.host, "");
    assert_string_equal(ev.client, "");
}


static void
test_dnsmasq_queries(void **state)
{
    (void) state;

    expect_query(SP_EGRESS_DNSMASQ,
                 "Dec  5 01:02:03 dnsmasq[123]: query[A] api.openai.com"
                 " from 10.0.0.7", DEC5_MS, "10.0.0.7", "api.openai.com");
    expect_query(SP_EGRESS_DNSMASQ,
                 "Dec  5 01:02:03 dnsmasq[123]: query[AAAA]"
                 " Chat.OpenAI.com. from fe80::1", DEC5_MS, "fe80::1",
                 "chat.openai.com");
    /* through syslog: a host name before the tag */
    expect_query(SP_EGRESS_DNSMASQ,
                 "Dec 5 01:02:03 gw dnsmasq[4211]: query[HTTPS] claude.ai"
                 " from 192.168.1.20", DEC5_MS, "192.168.1.20",
                 "claude.ai");
    /* log-queries=extra */
    expect_query(SP_EGRESS_DNSMASQ,
                 "Dec  5 01:02:03 dnsmasq[123]: 17 10.0.0.7/53421"
                 " query[A] api.anthropic.com from 10.0.0.7", DEC5_MS,
                 "10.0.0.7", "api.anthropic.com");
    /* rsyslog's RFC 3339 time */
    expect_query(SP_EGRESS_DNSMASQ,
                 "2026-12-05T01:02:03.250+00:00 gw dnsmasq[9]: query[A]"
                 " x.ai from 10.0.0.9", DEC5_MS + 250, "10.0.0.9", "x.ai");
}


static void
test_dnsmasq_not_queries(void **state)
{
    (void) state;

    expect_declined(SP_EGRESS_DNSMASQ, "Dec  5 01:02:03 dnsmasq[123]:"
                    " forwarded api.openai.com to 1.1.1.1");
    expect_declined(SP_EGRESS_DNSMASQ, "Dec  5 01:02:03 dnsmasq[123]:"
                    " reply api.openai.com is 162.159.140.245");
    expect_declined(SP_EGRESS_DNSMASQ, "Dec  5 01:02:03 dnsmasq[123]:"
                    " cached api.openai.com is <CNAME>");
    expect_declined(SP_EGRESS_DNSMASQ, "Dec  5 01:02:03 dnsmasq[123]:"
                    " config gw.lan is 10.0.0.1");
    expect_declined(SP_EGRESS_DNSMASQ, "Dec  5 01:02:03 dnsmasq[123]:"
                    " /etc/hosts localhost is 127.0.0.1");
    expect_declined(SP_EGRESS_DNSMASQ, "Dec  5 01:02:03 dnsmasq[123]:"
                    " started, version 2.89 cachesize 150");
    expect_declined(SP_EGRESS_DNSMASQ, "Dec  5 01:02:03 dnsmasq-dhcp[123]:"
                    " DHCPACK(eth0) 10.0.0.7 aa:bb:cc:dd:ee:ff laptop");
    expect_declined(SP_EGRESS_DNSMASQ, "");
    expect_declined(SP_EGRESS_DNSMASQ, "  \t ");

    expect_error(SP_EGRESS_DNSMASQ, "api.openai.com from 10.0.0.7");
    expect_error(SP_EGRESS_DNSMASQ, "Dec  5 01:02:03 sshd[1]: query[A]"
                 " api.openai.com from 10.0.0.7");
    expect_error(SP_EGRESS_DNSMASQ, "Dec  5 01:02:03 dnsmasq[1]: query[A]"
                 " api.openai.com to 10.0.0.7");
    expect_error(SP_EGRESS_DNSMASQ, "Dec  5 01:02:03 dnsmasq[1]: query[A]"
                 " api.openai.com from");
    expect_error(SP_EGRESS_DNSMASQ, "Dec 32 01:02:03 dnsmasq[1]: query[A]"
                 " api.openai.com from 10.0.0.7");
    expect_error(SP_EGRESS_DNSMASQ, "Dec  5 25:02:03 dnsmasq[1]: query[A]"
                 " api.openai.com from 10.0.0.7");
    expect_error(SP_EGRESS_DNSMASQ, "Dec  5 01:02:03 dnsmasq[1]: query[A]"
                 " api.openai.com/secret from 10.0.0.7");
    expect_error(SP_EGRESS_DNSMASQ, "Dec  5 01:02:03 dnsmasq[1]: query[A]"
                 " api..openai.com from 10.0.0.7");
}


/* syslog has no year: the one nearest before now + 1 day */
static void
test_syslog_year(void **state)
{
    char               err[256];
    sp_egress_event_t  ev;

    (void) state;

    /* read on 2027-01-01 00:10Z: December's line is from 2026 */
    assert_int_equal(parse(SP_EGRESS_DNSMASQ, "Dec 31 23:59:00 dnsmasq[1]:"
                           " query[A] openai.com from 10.0.0.1",
                           1798762200000LL, &ev, err), SP_OK);
    assert_int_equal(ev.ts_ms, 1798761540000LL);

    /* read on 2026-12-31 23:59Z: a clock a few hours ahead, next year */
    assert_int_equal(parse(SP_EGRESS_DNSMASQ, "Jan  1 03:00:00 dnsmasq[1]:"
                           " query[A] openai.com from 10.0.0.1",
                           1798761540000LL, &ev, err), SP_OK);
    assert_int_equal(ev.ts_ms, 1798772400000LL);

    /* a day of the year before */
    assert_int_equal(parse(SP_EGRESS_DNSMASQ, "Dec  7 01:02:03 dnsmasq[1]:"
                           " query[A] openai.com from 10.0.0.1", NOW_MS,
                           &ev, err), SP_OK);
    assert_int_equal(ev.ts_ms, DEC5_MS + 2 * 86400000LL
                               - 365 * 86400000LL);
}


static void
test_bind_queries(void **state)
{
    (void) state;

    /* 9.16-9.18 with print-category and print-severity */
    expect_query(SP_EGRESS_BIND,
                 "05-Dec-2026 01:02:03.456 queries: info: client"
                 " @0x7f3c2c0a8b68 10.0.0.7#5353 (api.openai.com): query:"
                 " api.openai.com IN A +E(0) (10.0.0.1)", DEC5_MS + 456,
                 "10.0.0.7", "api.openai.com");
    /* without the category and severity */
    expect_query(SP_EGRESS_BIND,
                 "05-Dec-2026 01:02:03.456 client @0x7f3c2c0a8b68"
                 " 10.0.0.7#5353 (api.openai.com): query: api.openai.com"
                 " IN A +E(0) (10.0.0.1)", DEC5_MS + 456, "10.0.0.7",
                 "api.openai.com");
    /* 9.9 and 9.11: no @0x pointer */
    expect_query(SP_EGRESS_BIND,
                 "05-Dec-2026 01:02:03.000 client 10.0.0.8#41000"
                 " (claude.ai): query: claude.ai IN AAAA + (10.0.0.1)",
                 DEC5_MS, "10.0.0.8", "claude.ai");
    /* views, an IPv6 client */
    expect_query(SP_EGRESS_BIND,
                 "05-Dec-2026 01:02:03.000 queries: info: client @0x1"
                 " 2001:db8::7#5353 (GEMINI.google.com): view internal:"
                 " query: GEMINI.google.com IN HTTPS +E(0)K (::1)",
                 DEC5_MS, "2001:db8::7", "gemini.google.com");
    /* through syslog */
    expect_query(SP_EGRESS_BIND,
                 "Dec  5 01:02:03 ns1 named[812]: client @0x7f 10.0.0.7#53"
                 " (mistral.ai): query: mistral.ai IN A +E(0) (10.0.0.1)",
                 DEC5_MS, "10.0.0.7", "mistral.ai");
}


static void
test_bind_not_queries(void **state)
{
    (void) state;

    expect_declined(SP_EGRESS_BIND, "05-Dec-2026 01:02:03.456 lame-servers:"
                    " info: host unreachable resolving 'x/A/IN'");
    expect_declined(SP_EGRESS_BIND, "05-Dec-2026 01:02:03.456 general:"
                    " notice: running");
    expect_declined(SP_EGRESS_BIND, "05-Dec-2026 01:02:03.456 client @0x1"
                    " 10.0.0.7#5353 (x.com): query (cache) 'x.com/A/IN'"
                    " denied");

    expect_error(SP_EGRESS_BIND, "5-Dec-2026 01:02:03 client 10.0.0.7#1"
                 " (openai.com): query: openai.com IN A");
    expect_error(SP_EGRESS_BIND, "05-Dec-2026 01:02:03.456 client @0x1"
                 " 10.0.0.7 (openai.com): query: openai.com IN A");
    expect_error(SP_EGRESS_BIND, "05-Dec-2026 01:02:03.456 client @0x1"
                 " 10.0.0.7#1 (openai.com): query:");
    expect_error(SP_EGRESS_BIND, "31-Feb-2026 01:02:03.456 client @0x1"
                 " 10.0.0.7#1 (openai.com): query: openai.com IN A");
}


static void
test_squid_lines(void **state)
{
    (void) state;

    expect_query(SP_EGRESS_SQUID,
                 "1796432523.123     45 10.0.0.7 TCP_TUNNEL/200 3456"
                 " CONNECT api.openai.com:443 - HIER_DIRECT/1.2.3.4 -",
                 DEC5_MS + 123, "10.0.0.7", "api.openai.com");
    expect_query(SP_EGRESS_SQUID,
                 "1796432523.5 12 10.0.0.8 TCP_MISS/200 812 GET"
                 " http://User:Secret@Copilot-Proxy.GithubUserContent.com"
                 ":8080/v1/x?token=secret alice HIER_DIRECT/1.2.3.4"
                 " text/html", DEC5_MS + 500, "10.0.0.8",
                 "copilot-proxy.githubusercontent.com");
    expect_query(SP_EGRESS_SQUID,
                 "1796432523.000\t3\t10.0.0.9\tTCP_DENIED/403\t0\tCONNECT"
                 "\t[2001:db8::1]:443\t-\tHIER_NONE/-\t-", DEC5_MS,
                 "10.0.0.9", "2001:db8::1");

    expect_declined(SP_EGRESS_SQUID, "1796432523.000 0 10.0.0.7 NONE/000 0"
                    " NONE error:transaction-end-before-headers - HIER_NONE/-"
                    " -");

    expect_error(SP_EGRESS_SQUID, "1796432523.000 0 10.0.0.7 NONE/000 0");
    expect_error(SP_EGRESS_SQUID, "yesterday 45 10.0.0.7 TCP_TUNNEL/200 1"
                 " CONNECT api.openai.com:443 - HIER_DIRECT/1.2.3.4 -");
    expect_error(SP_EGRESS_SQUID, "1796432523.123 45 10.0.0.7 TCP_TUNNEL"
                 " 1 CONNECT api.openai.com:443 - HIER_DIRECT/1.2.3.4 -");
    expect_error(SP_EGRESS_SQUID, "1796432523.123 45 10.0.0.7 TCP_MISS/200"
                 " 1 GET http://[::1/secret - HIER_DIRECT/1.2.3.4 -");
}


static void
test_generic_lines(void **state)
{
    (void) state;

    expect_query(SP_EGRESS_GENERIC, "1796432523 10.0.0.7 api.openai.com",
                 DEC5_MS, "10.0.0.7", "api.openai.com");
    expect_query(SP_EGRESS_GENERIC, "1796432523.25\tlaptop-42\tclaude.ai.",
                 DEC5_MS + 250, "laptop-42", "claude.ai");
    expect_query(SP_EGRESS_GENERIC,
                 "2026-12-05T01:02:03Z 10.0.0.7"
                 " https://chatgpt.com/c/abc?x=1", DEC5_MS, "10.0.0.7",
                 "chatgpt.com");
    expect_query(SP_EGRESS_GENERIC,
                 "2026-12-05T02:02:03.5+01:00 10.0.0.7 cursor.sh:443",
                 DEC5_MS + 500, "10.0.0.7", "cursor.sh");
    expect_query(SP_EGRESS_GENERIC, "2026-12-05 01:02:03 10.0.0.7 poe.com",
                 DEC5_MS, "10.0.0.7", "poe.com");

    expect_declined(SP_EGRESS_GENERIC, "# time client host");

    expect_error(SP_EGRESS_GENERIC, "1796432523 10.0.0.7");
    expect_error(SP_EGRESS_GENERIC, "soon 10.0.0.7 api.openai.com");
    expect_error(SP_EGRESS_GENERIC, "2026-13-05T01:02:03Z 10.0.0.7 x.ai");
    expect_error(SP_EGRESS_GENERIC, "1796432523 10.0.0.7 api.open$ai.com");
    expect_error(SP_EGRESS_GENERIC, "1796432523 "
                 "0123456789012345678901234567890123456789012345678901234567"
                 "890123456789 api.openai.com");
    expect_error(SP_EGRESS_AUTO, "hello world, this is no log line");
}


static void
test_nul_and_newline(void **state)
{
    char               err[256];
    sp_egress_event_t  ev;
    static const char  line[] = "1796432523 10.0.0.7 openai.com\n";
    static const char  nul[] = "1796432523 10.0.0.7 openai.com\0evil";

    (void) state;

    assert_int_equal(sp_egress_parse(SP_EGRESS_GENERIC, line,
                                     sizeof(line) - 1, NOW_MS, &ev, err,
                                     sizeof(err)), SP_OK);
    assert_string_equal(ev.host, "openai.com");

    assert_int_equal(sp_egress_parse(SP_EGRESS_GENERIC, nul, sizeof(nul) - 1,
                                     NOW_MS, &ev, err, sizeof(err)),
                     SP_ERROR);

    /* a length short of the line: nothing past it is read */
    assert_int_equal(sp_egress_parse(SP_EGRESS_GENERIC, line, 22, NOW_MS,
                                     &ev, err, sizeof(err)), SP_OK);
    assert_string_equal(ev.host, "op");
}


static void
test_format_names(void **state)
{
    (void) state;

    assert_int_equal(sp_egress_format("auto", 4), SP_EGRESS_AUTO);
    assert_int_equal(sp_egress_format("dnsmasq", 7), SP_EGRESS_DNSMASQ);
    assert_int_equal(sp_egress_format("bind", 4), SP_EGRESS_BIND);
    assert_int_equal(sp_egress_format("squid", 5), SP_EGRESS_SQUID);
    assert_int_equal(sp_egress_format("generic", 7), SP_EGRESS_GENERIC);
    assert_int_equal(sp_egress_format("bin", 3), -1);
    assert_int_equal(sp_egress_format("squids", 6), -1);
    assert_string_equal(sp_egress_format_name(SP_EGRESS_SQUID), "squid");
    assert_null(sp_egress_format_name((sp_egress_format_e) 9));
}


static const char *
service_of(const char *host)
{
    const sp_ai_service_t  *s;

    s = sp_egress_service(host, strlen(host));

    return s ? s->service : NULL;
}


static void
test_catalogue_matching(void **state)
{
    (void) state;

    assert_string_equal(service_of("openai.com"), "OpenAI");
    assert_string_equal(service_of("api.openai.com"), "OpenAI");
    assert_string_equal(service_of("API.OpenAI.com."), "OpenAI");
    assert_string_equal(service_of("chatgpt.com"), "ChatGPT");
    assert_string_equal(service_of("files.oaiusercontent.com"), "ChatGPT");
    assert_string_equal(service_of("myres.openai.azure.com"),
                        "Azure OpenAI");
    assert_string_equal(service_of("generativelanguage.googleapis.com"),
                        "Google Gemini API");
    assert_string_equal(service_of("copilot-proxy.githubusercontent.com"),
                        "GitHub Copilot");
    assert_string_equal(service_of("api.individual.githubcopilot.com"),
                        "GitHub Copilot");
    assert_string_equal(service_of("bedrock-runtime.us-east-1.amazonaws.com"),
                        "Amazon Bedrock");
    assert_string_equal(service_of("bedrock.eu-west-3.amazonaws.com"),
                        "Amazon Bedrock");
    assert_string_equal(service_of("x.ai"), "xAI");
    assert_string_equal(service_of("api.x.ai"), "xAI");

    /* only whole labels */
    assert_null(service_of("notopenai.com"));
    assert_null(service_of("api.openai.com.evil.net"));
    assert_null(service_of("openai.com.evil.net"));
    assert_null(service_of("openai.co"));
    assert_null(service_of("penai.com"));
    assert_null(service_of("ai"));
    assert_null(service_of("google.com"));
    assert_null(service_of("mail.google.com"));
    assert_null(service_of("googleapis.com"));
    assert_null(service_of("storage.googleapis.com"));
    assert_null(service_of("githubusercontent.com"));
    assert_null(service_of("s3.us-east-1.amazonaws.com"));
    assert_null(service_of("bedrockx.us-east-1.amazonaws.com"));
    assert_null(service_of("bedrock-runtime.amazonaws.com.evil.net"));
    assert_null(service_of("bedrock*.amazonaws.com"));
    assert_null(service_of("azure.com"));
    assert_null(service_of("box.com"));
    assert_null(service_of(""));
    assert_null(service_of("."));
}


static void
test_catalogue_sorted_and_complete(void **state)
{
    size_t                  i, n;
    const sp_ai_service_t  *cat;

    static const char  *required[] = {
        "openai.com", "chatgpt.com", "oaiusercontent.com", "anthropic.com",
        "claude.ai", "generativelanguage.googleapis.com",
        "gemini.google.com", "aistudio.google.com", "openai.azure.com",
        "cognitiveservices.azure.com", "cohere.com", "cohere.ai",
        "mistral.ai", "perplexity.ai", "groq.com", "x.ai", "grok.com",
        "deepseek.com", "together.xyz", "together.ai", "fireworks.ai",
        "replicate.com", "huggingface.co", "character.ai", "poe.com",
        "you.com", "phind.com", "githubcopilot.com", "cursor.sh",
        "cursor.com", "codeium.com", "windsurf.com", "tabnine.com",
        "sourcegraph.com", "replit.com", "midjourney.com", "stability.ai",
        "elevenlabs.io", "runwayml.com", "jasper.ai", "writesonic.com",
        "copy.ai", "openrouter.ai", "ai21.com", "aleph-alpha.com",
        "voyageai.com", "assemblyai.com", "deepgram.com", "meta.ai",
        "pi.ai", "inflection.ai", "moonshot.cn", "zhipuai.cn",
        "baichuan-ai.com", NULL
    };

    (void) state;

    cat = sp_egress_catalogue(&n);
    assert_true(n >= 60);

    for (i = 0; i < n; i++) {
        assert_non_null(cat[i].service);
        assert_non_null(cat[i].category);

        if (i > 0 && strcmp(cat[i - 1].domain, cat[i].domain) >= 0) {
            fail_msg("%s before %s", cat[i - 1].domain, cat[i].domain);
        }

        /* every plain entry finds itself and its subdomains */
        if (strchr(cat[i].domain, '*') == NULL) {
            char  sub[300];

            assert_ptr_equal(sp_egress_service(cat[i].domain,
                                               strlen(cat[i].domain)),
                             &cat[i]);
            snprintf(sub, sizeof(sub), "api.%s", cat[i].domain);
            assert_ptr_equal(sp_egress_service(sub, strlen(sub)), &cat[i]);
            snprintf(sub, sizeof(sub), "not%s", cat[i].domain);
            assert_null(sp_egress_service(sub, strlen(sub)));
        }
    }

    for (i = 0; required[i] != NULL; i++) {
        if (sp_egress_service(required[i], strlen(required[i])) == NULL) {
            fail_msg("%s is missing", required[i]);
        }
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_dnsmasq_queries),
        cmocka_unit_test(test_dnsmasq_not_queries),
        cmocka_unit_test(test_syslog_year),
        cmocka_unit_test(test_bind_queries),
        cmocka_unit_test(test_bind_not_queries),
        cmocka_unit_test(test_squid_lines),
        cmocka_unit_test(test_generic_lines),
        cmocka_unit_test(test_nul_and_newline),
        cmocka_unit_test(test_format_names),
        cmocka_unit_test(test_catalogue_matching),
        cmocka_unit_test(test_catalogue_sorted_and_complete),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
