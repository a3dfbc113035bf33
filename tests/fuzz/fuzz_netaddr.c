/*
 * Outbound addresses (sp_netaddr.c): the allow list parser, address
 * literals and the decision on what they give.
 *
 * Input: "allow list\nhost\naddress literal\n" then any bytes; the tail's
 * first 16 bytes (when there are) are also judged as a raw address.
 */

#include "fuzz_common.h"
#include "sp_netaddr.h"


static void
fuzz_decide(const sp_netallow_t *al, const char *host, size_t hlen,
    const sp_netaddr_t *addr)
{
    static const char  *rules[] = {
        "allowed", "http", "admin-api", "public", "loopback", "private",
        "link-local", "metadata", "unspecified", "multicast", "reserved",
        NULL
    };
    sp_netdecision_t    d, d2;
    sp_netaddr_t        admin;
    sp_netclass_e       class;
    const char         *rule;
    size_t              i;
    int                 https, found;

    class = sp_netaddr_classify(addr);
    FUZZ_CHECK((unsigned) class < SP_NET_CLASS_COUNT);

    sp_netaddr_parse(&admin, "127.0.0.1", 9);

    for (https = 0; https <= 1; https++) {
        sp_netaddr_decide(&d, al, https, host, hlen, addr, 8081, &admin,
                          8081);
        rule = sp_netdecision_rule(&d);
        found = 0;

        for (i = 0; rules[i] != NULL; i++) {
            found |= strcmp(rule, rules[i]) == 0;
        }

        FUZZ_CHECK(found);
        FUZZ_CHECK(strlen(sp_netdecision_text(&d)) > 0);

        /* whatever the list says, the admin API stays out */
        if (memcmp(addr->a, admin.a, 16) == 0) {
            FUZZ_CHECK(d.verdict == SP_NET_REFUSED_ADMIN_API);
        }

        /* https to a public address, not a special name: allowed */
        sp_netaddr_decide(&d2, al, 1, NULL, 0, addr, 443, NULL, 0);

        if (class == SP_NET_PUBLIC) {
            FUZZ_CHECK(d2.verdict == SP_NET_ALLOWED);
        }

        /* a non-public address passes only through the list */
        if (class != SP_NET_PUBLIC && d2.verdict == SP_NET_ALLOWED) {
            FUZZ_CHECK(sp_netallow_has_addr(al, addr));
        }
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sp_netallow_t  al;
    const uint8_t        *p, *end, *nl;
    const char           *parts[3];
    size_t                lens[3], i;
    char                 *copy[3], err[256], text[SP_NETADDR_STRLEN];
    sp_netaddr_t          addr, again;

    p = data;
    end = data + size;

    for (i = 0; i < 3; i++) {
        nl = memchr(p, '\n', (size_t) (end - p));
        lens[i] = nl ? (size_t) (nl - p) : (size_t) (end - p);
        /* each part in its own buffer of exactly its size */
        copy[i] = (char *) fuzz_dup(p, lens[i]);
        parts[i] = copy[i];
        p = nl ? nl + 1 : end;
    }

    if (sp_netallow_parse(&al, parts[0], lens[0], err, sizeof(err))
        != SP_OK)
    {
        FUZZ_CHECK(al.n == 0 && strlen(err) > 0);
    }

    FUZZ_CHECK(al.n <= SP_NETALLOW_MAX
               && al.names_len <= SP_NETALLOW_NAMES_MAX);

    (void) sp_netaddr_name_class(parts[1], lens[1]);
    (void) sp_netallow_has_name(&al, parts[1], lens[1], 0);

    if (sp_netaddr_parse(&addr, parts[2], lens[2]) == SP_OK) {
        /* the formatted form parses back to the same address */
        FUZZ_CHECK(sp_netaddr_format(&addr, text) > 0);
        FUZZ_CHECK(sp_netaddr_parse(&again, text, strlen(text)) == SP_OK);
        FUZZ_CHECK(memcmp(addr.a, again.a, 16) == 0);

        fuzz_decide(&al, lens[1] ? parts[1] : NULL, lens[1], &addr);
    }

    if (end - p >= 16) {
        sp_netaddr_from_bytes(&addr, p, 16);
        fuzz_decide(&al, NULL, 0, &addr);
    }

    for (i = 0; i < 3; i++) {
        free(copy[i]);
    }

    return 0;
}
