/*
 * libspendpol outbound addresses (sp_netaddr.c): the allow list, address
 * classes and the decision controld and the module share.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "sp_netaddr.h"


static sp_netaddr_t
addr_of(const char *s)
{
    sp_netaddr_t  a;

    if (sp_netaddr_parse(&a, s, strlen(s)) != SP_OK) {
        fail_msg("%s does not parse", s);
    }

    return a;
}


static sp_netclass_e
class_of(const char *s)
{
    sp_netaddr_t  a;

    a = addr_of(s);
    return sp_netaddr_classify(&a);
}


static void
allow(sp_netallow_t *al, const char *s)
{
    char  err[256];

    if (sp_netallow_parse(al, s, strlen(s), err, sizeof(err)) != SP_OK) {
        fail_msg("%s: %s", s, err);
    }
}


/* the rule name of a decision, "allowed" when allowed */
static const char *
decide(const char *list, int https, const char *host, const char *ip,
    uint16_t port, const char *admin, uint16_t admin_port)
{
    static sp_netallow_t  al;
    static sp_netdecision_t  d;
    sp_netaddr_t          a, ad;

    allow(&al, list);
    a = addr_of(ip);

    if (admin != NULL) {
        ad = addr_of(admin);
    }

    sp_netaddr_decide(&d, &al, https, host, host ? strlen(host) : 0, &a,
                      port, admin ? &ad : NULL, admin_port);

    return sp_netdecision_rule(&d);
}


static void
test_classes(void **state)
{
    static const struct {
        const char     *addr;
        sp_netclass_e   class;
    } cases[] = {
        { "8.8.8.8", SP_NET_PUBLIC },
        { "1.1.1.1", SP_NET_PUBLIC },
        { "2606:4700:4700::1111", SP_NET_PUBLIC },
        { "127.0.0.1", SP_NET_LOOPBACK },
        { "127.255.0.9", SP_NET_LOOPBACK },
        { "::1", SP_NET_LOOPBACK },
        { "10.0.0.5", SP_NET_PRIVATE },
        { "172.16.0.1", SP_NET_PRIVATE },
        { "172.31.255.255", SP_NET_PRIVATE },
        { "172.32.0.1", SP_NET_PUBLIC },
        { "172.15.255.255", SP_NET_PUBLIC },
        { "192.168.1.1", SP_NET_PRIVATE },
        { "100.64.0.1", SP_NET_PRIVATE },
        { "100.127.255.255", SP_NET_PRIVATE },
        { "100.128.0.1", SP_NET_PUBLIC },
        { "fc00::1", SP_NET_PRIVATE },
        { "fd12:3456::1", SP_NET_PRIVATE },
        { "169.254.1.1", SP_NET_LINK_LOCAL },
        { "fe80::1", SP_NET_LINK_LOCAL },
        { "febf::1", SP_NET_LINK_LOCAL },
        { "169.254.169.254", SP_NET_METADATA },
        { "fd00:ec2::254", SP_NET_METADATA },
        { "0.0.0.0", SP_NET_UNSPECIFIED },
        { "0.1.2.3", SP_NET_UNSPECIFIED },
        { "::", SP_NET_UNSPECIFIED },
        { "224.0.0.1", SP_NET_MULTICAST },
        { "239.255.255.250", SP_NET_MULTICAST },
        { "255.255.255.255", SP_NET_MULTICAST },
        { "ff02::1", SP_NET_MULTICAST },
        { "240.0.0.1", SP_NET_RESERVED },
        { "192.0.2.1", SP_NET_RESERVED },
        { "198.18.0.1", SP_NET_RESERVED },
        { "2001:db8::1", SP_NET_RESERVED },
        /* IPv4 inside IPv6: judged by the IPv4 address */
        { "::ffff:127.0.0.1", SP_NET_LOOPBACK },
        { "::ffff:10.0.0.5", SP_NET_PRIVATE },
        { "::ffff:169.254.169.254", SP_NET_METADATA },
        { "::ffff:8.8.8.8", SP_NET_PUBLIC },
        { "::127.0.0.1", SP_NET_LOOPBACK },
        { "::10.0.0.5", SP_NET_PRIVATE },
        { "64:ff9b::10.0.0.5", SP_NET_PRIVATE },
        { "64:ff9b::169.254.169.254", SP_NET_METADATA },
        { "64:ff9b::8.8.8.8", SP_NET_PUBLIC },
    };
    size_t  i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (class_of(cases[i].addr) != cases[i].class) {
            fail_msg("%s: %s, expected %s", cases[i].addr,
                     sp_netclass_name(class_of(cases[i].addr)),
                     sp_netclass_name(cases[i].class));
        }
    }
}


static void
test_parse_addresses(void **state)
{
    sp_netaddr_t  a;
    char          out[SP_NETADDR_STRLEN];

    assert_int_equal(sp_netaddr_parse(&a, "10.0.0.5", 8), SP_OK);
    assert_true(sp_netaddr_is_v4(&a));
    sp_netaddr_format(&a, out);
    assert_string_equal(out, "10.0.0.5");

    assert_int_equal(sp_netaddr_parse(&a, "FD00:EC2::254", 13), SP_OK);
    assert_false(sp_netaddr_is_v4(&a));
    sp_netaddr_format(&a, out);
    assert_string_equal(out, "fd00:ec2::254");

    /* a length, not a NUL, ends the input */
    assert_int_equal(sp_netaddr_parse(&a, "10.0.0.59", 8), SP_OK);
    sp_netaddr_format(&a, out);
    assert_string_equal(out, "10.0.0.5");

    assert_int_equal(sp_netaddr_parse(&a, "", 0), SP_ERROR);
    assert_int_equal(sp_netaddr_parse(&a, "10.0.0", 6), SP_ERROR);
    assert_int_equal(sp_netaddr_parse(&a, "10.0.0.256", 10), SP_ERROR);
    assert_int_equal(sp_netaddr_parse(&a, "example.com", 11), SP_ERROR);
    assert_int_equal(sp_netaddr_parse(&a, "10.0.0.5\0x", 10), SP_ERROR);
}


static void
test_sockaddr(void **state)
{
    struct sockaddr_in   sin;
    struct sockaddr_in6  sin6;
    sp_netaddr_t         a;
    uint16_t             port;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(8081);
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);

    assert_int_equal(sp_netaddr_from_sockaddr(&a, &port, &sin, sizeof(sin)),
                     SP_OK);
    assert_int_equal(port, 8081);
    assert_int_equal(sp_netaddr_classify(&a), SP_NET_LOOPBACK);

    /* short */
    assert_int_equal(sp_netaddr_from_sockaddr(&a, &port, &sin, 4), SP_ERROR);

    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(443);
    inet_pton(AF_INET6, "::ffff:169.254.169.254", &sin6.sin6_addr);

    assert_int_equal(sp_netaddr_from_sockaddr(&a, &port, &sin6,
                                              sizeof(sin6)), SP_OK);
    assert_int_equal(port, 443);
    assert_int_equal(sp_netaddr_classify(&a), SP_NET_METADATA);
}


static void
test_allow_list(void **state)
{
    sp_netallow_t  al;
    sp_netaddr_t   a;

    allow(&al, " 10.0.0.0/8, fd00::/8,127.0.0.1 ,vllm.Internal.,*.test,,");
    assert_int_equal(al.n, 5);

    a = addr_of("10.200.3.4");
    assert_true(sp_netallow_has_addr(&al, &a));
    a = addr_of("::ffff:10.200.3.4");
    assert_true(sp_netallow_has_addr(&al, &a));
    a = addr_of("11.0.0.1");
    assert_false(sp_netallow_has_addr(&al, &a));
    a = addr_of("127.0.0.1");
    assert_true(sp_netallow_has_addr(&al, &a));
    a = addr_of("127.0.0.2");
    assert_false(sp_netallow_has_addr(&al, &a));
    a = addr_of("fd12::1");
    assert_true(sp_netallow_has_addr(&al, &a));
    a = addr_of("fc00::1");
    assert_false(sp_netallow_has_addr(&al, &a));

    assert_true(sp_netallow_has_name(&al, "VLLM.internal", 13, 0));
    assert_true(sp_netallow_has_name(&al, "vllm.internal.", 14, 0));
    assert_false(sp_netallow_has_name(&al, "x.vllm.internal", 15, 0));
    assert_true(sp_netallow_has_name(&al, "alpha.test", 10, 0));
    assert_true(sp_netallow_has_name(&al, "a.b.TEST", 8, 0));
    assert_false(sp_netallow_has_name(&al, "alpha.test", 10, 1));
    assert_false(sp_netallow_has_name(&al, "test", 4, 0));
    assert_false(sp_netallow_has_name(&al, "atest", 5, 0));

    /* a CIDR's host bits do not matter */
    allow(&al, "192.168.1.77/24");
    a = addr_of("192.168.1.200");
    assert_true(sp_netallow_has_addr(&al, &a));
    a = addr_of("192.168.2.1");
    assert_false(sp_netallow_has_addr(&al, &a));

    allow(&al, "0.0.0.0/0");
    a = addr_of("8.8.8.8");
    assert_true(sp_netallow_has_addr(&al, &a));
    a = addr_of("2606:4700::1");
    assert_false(sp_netallow_has_addr(&al, &a));

    allow(&al, "");
    assert_int_equal(al.n, 0);
    allow(&al, " , ");
    assert_int_equal(al.n, 0);
}


static void
test_allow_list_errors(void **state)
{
    static const char  *bad[] = {
        "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/08", "::1/129", "10.0.0.300",
        "*", "*.", "*.a..b", "http://10.0.0.1", "a b", "10.0.0.0/8x",
        "host:8080", "-/8", "a..b", NULL
    };
    sp_netallow_t       al;
    char                err[256], list[128];
    size_t              i;

    for (i = 0; bad[i] != NULL; i++) {
        snprintf(list, sizeof(list), "127.0.0.1/32, %s", bad[i]);

        if (sp_netallow_parse(&al, list, strlen(list), err, sizeof(err))
            != SP_ERROR)
        {
            fail_msg("\"%s\" was accepted", bad[i]);
        }

        /* the message names the entry and the variable */
        assert_non_null(strstr(err, bad[i]));
        assert_non_null(strstr(err, "SPENDPOL_UPSTREAM_ALLOW"));
        assert_int_equal(al.n, 0);
    }
}


static void
test_name_class(void **state)
{
    assert_int_equal(sp_netaddr_name_class("metadata.google.internal", 24),
                     SP_NET_METADATA);
    assert_int_equal(sp_netaddr_name_class("Metadata.Google.Internal.", 25),
                     SP_NET_METADATA);
    assert_int_equal(sp_netaddr_name_class("localhost", 9), SP_NET_LOOPBACK);
    assert_int_equal(sp_netaddr_name_class("a.localhost", 11),
                     SP_NET_LOOPBACK);
    assert_int_equal(sp_netaddr_name_class("notlocalhost", 12),
                     SP_NET_PUBLIC);
    assert_int_equal(sp_netaddr_name_class("api.openai.com", 14),
                     SP_NET_PUBLIC);
}


static void
test_decide(void **state)
{
    /* defaults: public https only */
    assert_string_equal(decide("", 1, "api.openai.com", "104.18.6.192", 443,
                               "127.0.0.1", 8081), "allowed");
    assert_string_equal(decide("", 0, "api.openai.com", "104.18.6.192", 80,
                               "127.0.0.1", 8081), "http");
    assert_string_equal(decide("", 1, NULL, "10.0.0.5", 443, NULL, 0),
                        "private");
    assert_string_equal(decide("", 1, NULL, "127.0.0.1", 443, NULL, 0),
                        "loopback");
    assert_string_equal(decide("", 0, NULL, "169.254.169.254", 80, NULL, 0),
                        "metadata");
    assert_string_equal(decide("", 1, NULL, "::ffff:169.254.169.254", 443,
                               NULL, 0), "metadata");
    assert_string_equal(decide("", 1, "localhost", "127.0.0.1", 443, NULL,
                               0), "loopback");
    assert_string_equal(decide("", 1, "metadata.google.internal",
                               "8.8.8.8", 443, NULL, 0), "metadata");
    /* a public name resolving to a private address (DNS rebinding) */
    assert_string_equal(decide("", 1, "evil.example", "10.1.2.3", 443, NULL,
                               0), "private");

    /* an allowed CIDR admits http and non-public addresses */
    assert_string_equal(decide("127.0.0.1/32", 0, NULL, "127.0.0.1", 8000,
                               "127.0.0.1", 8081), "allowed");
    assert_string_equal(decide("127.0.0.1/32", 0, NULL, "127.0.0.2", 8000,
                               NULL, 0), "loopback");
    assert_string_equal(decide("8.8.8.0/24", 0, NULL, "8.8.8.8", 80, NULL,
                               0), "allowed");
    assert_string_equal(decide("10.0.0.0/8", 0, NULL, "::ffff:10.0.0.5", 80,
                               NULL, 0), "allowed");

    /* an allowed name admits whatever it resolves to */
    assert_string_equal(decide("vllm.internal", 0, "vllm.internal",
                               "10.9.9.9", 8000, NULL, 0), "allowed");
    assert_string_equal(decide("*.test", 0, "alpha.test", "127.0.0.1", 8000,
                               NULL, 0), "allowed");
    /* ... but a name that resolves outside the list does not pass */
    assert_string_equal(decide("127.0.0.2/32", 0, "alpha.test", "127.0.0.1",
                               8000, NULL, 0), "loopback");
    /* localhost and metadata names need their own entry */
    assert_string_equal(decide("127.0.0.0/8", 0, "localhost", "127.0.0.1",
                               8000, NULL, 0), "loopback");
    assert_string_equal(decide("localhost", 0, "localhost", "127.0.0.1",
                               8000, NULL, 0), "allowed");
    assert_string_equal(decide("*.internal", 1, "metadata.google.internal",
                               "169.254.169.254", 443, NULL, 0), "metadata");
    assert_string_equal(decide("*.test", 1, "x.test", "169.254.169.254",
                               443, NULL, 0), "metadata");
    assert_string_equal(decide("169.254.169.254/32", 0, NULL,
                               "169.254.169.254", 80, NULL, 0), "allowed");

    /* the admin API, whatever the list says */
    assert_string_equal(decide("127.0.0.0/8", 0, NULL, "127.0.0.1", 8081,
                               "127.0.0.1", 8081), "admin-api");
    assert_string_equal(decide("127.0.0.0/8,*.test", 0, "a.test",
                               "127.0.0.1", 8081, "127.0.0.1", 8081),
                        "admin-api");
    assert_string_equal(decide("0.0.0.0/0", 0, NULL, "0.0.0.0", 8081,
                               "127.0.0.1", 8081), "admin-api");
    assert_string_equal(decide("10.0.0.0/8", 0, NULL, "10.0.0.5", 8081,
                               "0.0.0.0", 8081), "admin-api");
    assert_string_equal(decide("::1/128", 0, NULL, "::1", 8081, "::", 8081),
                        "admin-api");
    /* another port, or another address, is not the admin API */
    assert_string_equal(decide("127.0.0.0/8", 0, NULL, "127.0.0.1", 8082,
                               "127.0.0.1", 8081), "allowed");
    assert_string_equal(decide("127.0.0.0/8", 0, NULL, "127.0.0.9", 8081,
                               "127.0.0.1", 8081), "allowed");
}


static void
test_texts(void **state)
{
    sp_netdecision_t  d;

    d.verdict = SP_NET_REFUSED_CLASS;
    d.class = SP_NET_PRIVATE;
    assert_string_equal(sp_netdecision_text(&d), "a private address");
    assert_string_equal(sp_netdecision_rule(&d), "private");

    d.verdict = SP_NET_REFUSED_ADMIN_API;
    assert_string_equal(sp_netdecision_rule(&d), "admin-api");

    d.verdict = SP_NET_REFUSED_HTTP;
    assert_string_equal(sp_netdecision_rule(&d), "http");
    assert_non_null(strstr(sp_netdecision_text(&d), "https"));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_classes),
        cmocka_unit_test(test_parse_addresses),
        cmocka_unit_test(test_sockaddr),
        cmocka_unit_test(test_allow_list),
        cmocka_unit_test(test_allow_list_errors),
        cmocka_unit_test(test_name_class),
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_texts),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
