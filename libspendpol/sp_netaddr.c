/*
 * Outbound addresses: the allow list, address classes and the one
 * decision both controld and the module apply (see sp_netaddr.h).
 */

#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "sp_netaddr.h"


/* ---- addresses ------------------------------------------------------- */

static const uint8_t  sp_v4_mapped_prefix[12] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};


void
sp_netaddr_from_bytes(sp_netaddr_t *addr, const void *bytes, size_t len)
{
    if (len == 4) {
        memcpy(addr->a, sp_v4_mapped_prefix, 12);
        memcpy(addr->a + 12, bytes, 4);

    } else {
        memcpy(addr->a, bytes, 16);
    }
}


int
sp_netaddr_from_sockaddr(sp_netaddr_t *addr, uint16_t *port, const void *sa,
    size_t socklen)
{
    struct sockaddr_in    sin;
    struct sockaddr_in6   sin6;
    sa_family_t           family;

    if (sa == NULL || socklen < sizeof(sa_family_t)) {
        return SP_ERROR;
    }

    /* copies: a sockaddr from a byte buffer need not be aligned */
    memcpy(&family, (const char *) sa + offsetof(struct sockaddr, sa_family),
           sizeof(family));

    if (family == AF_INET && socklen >= sizeof(sin)) {
        memcpy(&sin, sa, sizeof(sin));
        sp_netaddr_from_bytes(addr, &sin.sin_addr, 4);

        if (port != NULL) {
            *port = ntohs(sin.sin_port);
        }

        return SP_OK;
    }

    if (family == AF_INET6 && socklen >= sizeof(sin6)) {
        memcpy(&sin6, sa, sizeof(sin6));
        sp_netaddr_from_bytes(addr, &sin6.sin6_addr, 16);

        if (port != NULL) {
            *port = ntohs(sin6.sin6_port);
        }

        return SP_OK;
    }

    return SP_ERROR;
}


int
sp_netaddr_is_v4(const sp_netaddr_t *addr)
{
    return memcmp(addr->a, sp_v4_mapped_prefix, 12) == 0;
}


int
sp_netaddr_parse(sp_netaddr_t *addr, const char *s, size_t len)
{
    char     buf[64];
    uint8_t  bytes[16];

    /* inet_pton() wants a NUL-terminated string: a bounded copy */
    if (len == 0 || len >= sizeof(buf) || memchr(s, '\0', len) != NULL) {
        return SP_ERROR;
    }

    memcpy(buf, s, len);
    buf[len] = '\0';

    if (inet_pton(AF_INET, buf, bytes) == 1) {
        sp_netaddr_from_bytes(addr, bytes, 4);
        return SP_OK;
    }

    if (memchr(buf, ':', len) != NULL && inet_pton(AF_INET6, buf, bytes) == 1)
    {
        sp_netaddr_from_bytes(addr, bytes, 16);
        return SP_OK;
    }

    return SP_ERROR;
}


size_t
sp_netaddr_format(const sp_netaddr_t *addr, char *out)
{
    const char  *p;

    if (sp_netaddr_is_v4(addr)) {
        p = inet_ntop(AF_INET, addr->a + 12, out, SP_NETADDR_STRLEN);

    } else {
        p = inet_ntop(AF_INET6, addr->a, out, SP_NETADDR_STRLEN);
    }

    if (p == NULL) {
        out[0] = '\0';
        return 0;
    }

    return strlen(out);
}


/*
 * The IPv4 address an IPv6 form stands for: mapped ::ffff:a.b.c.d,
 * compatible ::a.b.c.d (not :: or ::1), NAT64 64:ff9b::a.b.c.d.
 * Returns a pointer to its 4 bytes, or NULL.
 */
static const uint8_t *
sp_netaddr_v4(const sp_netaddr_t *addr)
{
    static const uint8_t  zero[12];
    static const uint8_t  nat64[12] = {
        0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0
    };
    const uint8_t        *a;

    a = addr->a;

    if (memcmp(a, sp_v4_mapped_prefix, 12) == 0
        || memcmp(a, nat64, 12) == 0)
    {
        return a + 12;
    }

    if (memcmp(a, zero, 12) == 0
        && !(a[12] == 0 && a[13] == 0 && a[14] == 0 && a[15] <= 1))
    {
        return a + 12;
    }

    return NULL;
}


static sp_netclass_e
sp_netaddr_classify_v4(const uint8_t *b)
{
    if (b[0] == 169 && b[1] == 254 && b[2] == 169 && b[3] == 254) {
        return SP_NET_METADATA;
    }

    if (b[0] == 0) {
        return SP_NET_UNSPECIFIED;
    }

    if (b[0] == 127) {
        return SP_NET_LOOPBACK;
    }

    if (b[0] == 10
        || (b[0] == 172 && (b[1] & 0xf0) == 16)
        || (b[0] == 192 && b[1] == 168)
        || (b[0] == 100 && (b[1] & 0xc0) == 64))
    {
        return SP_NET_PRIVATE;
    }

    if (b[0] == 169 && b[1] == 254) {
        return SP_NET_LINK_LOCAL;
    }

    if ((b[0] & 0xf0) == 224
        || (b[0] == 255 && b[1] == 255 && b[2] == 255 && b[3] == 255))
    {
        return SP_NET_MULTICAST;
    }

    /* 240/4, IETF 192.0.0/24, TEST-NETs, benchmarking 198.18/15 */
    if ((b[0] & 0xf0) == 240
        || (b[0] == 192 && b[1] == 0 && (b[2] == 0 || b[2] == 2))
        || (b[0] == 198 && (b[1] & 0xfe) == 18)
        || (b[0] == 198 && b[1] == 51 && b[2] == 100)
        || (b[0] == 203 && b[1] == 0 && b[2] == 113))
    {
        return SP_NET_RESERVED;
    }

    return SP_NET_PUBLIC;
}


sp_netclass_e
sp_netaddr_classify(const sp_netaddr_t *addr)
{
    static const uint8_t  zero[15];
    static const uint8_t  ec2[16] = {
        0xfd, 0, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54
    };
    static const uint8_t  discard[8] = { 0x01, 0, 0, 0, 0, 0, 0, 0 };
    const uint8_t        *a, *v4;

    v4 = sp_netaddr_v4(addr);

    if (v4 != NULL) {
        return sp_netaddr_classify_v4(v4);
    }

    a = addr->a;

    if (memcmp(a, zero, 15) == 0) {
        return a[15] == 0 ? SP_NET_UNSPECIFIED : SP_NET_LOOPBACK;
    }

    if (memcmp(a, ec2, 16) == 0) {
        return SP_NET_METADATA;
    }

    /* unique local fc00::/7, deprecated site-local fec0::/10, local NAT64 */
    if ((a[0] & 0xfe) == 0xfc
        || (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0)
        || (a[0] == 0 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b
            && a[4] == 0 && a[5] == 1))
    {
        return SP_NET_PRIVATE;
    }

    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) {
        return SP_NET_LINK_LOCAL;
    }

    if (a[0] == 0xff) {
        return SP_NET_MULTICAST;
    }

    /* documentation 2001:db8::/32, discard 100::/64 */
    if ((a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8)
        || memcmp(a, discard, 8) == 0)
    {
        return SP_NET_RESERVED;
    }

    return SP_NET_PUBLIC;
}


/* ---- names ----------------------------------------------------------- */

static unsigned char
sp_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char) (c | 0x20) : c;
}


/* case-insensitive equality of a name with a lowercase string */
static int
sp_name_eq(const char *name, size_t len, const char *lower, size_t llen)
{
    size_t  i;

    if (len != llen) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (sp_lower((unsigned char) name[i]) != (unsigned char) lower[i]) {
            return 0;
        }
    }

    return 1;
}


/* "name." -> "name": the root label is not part of the match */
static size_t
sp_name_trim(const char *host, size_t len)
{
    if (len > 1 && host[len - 1] == '.') {
        len--;
    }

    return len;
}


sp_netclass_e
sp_netaddr_name_class(const char *host, size_t len)
{
    static const char  *metadata[] = {
        "metadata.google.internal", "metadata", "instance-data",
        "instance-data.ec2.internal", "metadata.azure.internal", NULL
    };
    size_t              i;

    len = sp_name_trim(host, len);

    for (i = 0; metadata[i] != NULL; i++) {
        if (sp_name_eq(host, len, metadata[i], strlen(metadata[i]))) {
            return SP_NET_METADATA;
        }
    }

    if (sp_name_eq(host, len, "localhost", 9)
        || (len > 10 && sp_name_eq(host + len - 10, 10, ".localhost", 10)))
    {
        return SP_NET_LOOPBACK;
    }

    return SP_NET_PUBLIC;
}


/* ---- the allow list -------------------------------------------------- */

static int
sp_is_blank(char c)
{
    return c == ' ' || c == '\t';
}


/* "10.0.0.300" is a mistyped address, not a name */
static int
sp_all_digits_dots(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if ((s[i] < '0' || s[i] > '9') && s[i] != '.') {
            return 0;
        }
    }

    return 1;
}


/* a DNS name: labels of [A-Za-z0-9_-], 1-63 bytes, dots between */
static int
sp_name_valid(const char *s, size_t len)
{
    size_t  i, label;
    char    c;

    if (len == 0 || len > SP_NETADDR_NAME_MAX) {
        return 0;
    }

    label = 0;

    for (i = 0; i < len; i++) {
        c = s[i];

        if (c == '.') {
            if (label == 0) {
                return 0;
            }

            label = 0;
            continue;
        }

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '-' || c == '_'))
        {
            return 0;
        }

        if (++label > 63) {
            return 0;
        }
    }

    return label > 0;
}


static int
sp_netallow_add_name(sp_netallow_t *al, uint8_t kind, const char *s,
    size_t len)
{
    sp_netallow_entry_t  *e;
    size_t                i;

    if (al->names_len + len > SP_NETALLOW_NAMES_MAX) {
        return SP_ERROR;
    }

    e = &al->e[al->n++];
    e->kind = kind;
    e->prefix = 0;
    e->name_off = (uint16_t) al->names_len;
    e->name_len = (uint16_t) len;

    for (i = 0; i < len; i++) {
        al->names[al->names_len++] = (char) sp_lower((unsigned char) s[i]);
    }

    return SP_OK;
}


static int
sp_netallow_add_cidr(sp_netallow_t *al, const char *s, size_t len)
{
    sp_netallow_entry_t  *e;
    sp_netaddr_t          addr;
    const char           *slash;
    size_t                alen, i;
    unsigned              bits, max;

    slash = memchr(s, '/', len);
    alen = slash ? (size_t) (slash - s) : len;

    if (sp_netaddr_parse(&addr, s, alen) != SP_OK) {
        return SP_ERROR;
    }

    /* an IPv4 CIDR is on the ::ffff:0:0/96 form */
    max = memchr(s, ':', alen) == NULL ? 32 : 128;
    bits = max;

    if (slash != NULL) {
        if (len - alen < 2 || len - alen > 4) {
            return SP_ERROR;
        }

        bits = 0;

        for (i = alen + 1; i < len; i++) {
            if (s[i] < '0' || s[i] > '9' || (i == alen + 1 && s[i] == '0'
                                             && len - alen > 2))
            {
                return SP_ERROR;
            }

            bits = bits * 10 + (unsigned) (s[i] - '0');
        }

        if (bits > max) {
            return SP_ERROR;
        }
    }

    if (max == 32) {
        bits += 96;
    }

    e = &al->e[al->n++];
    e->kind = SP_NETALLOW_CIDR;
    e->prefix = (uint8_t) bits;
    e->name_off = 0;
    e->name_len = 0;

    /* the network: host bits cleared, so matching is a masked compare */
    for (i = 0; i < 16; i++) {
        if (bits >= 8) {
            e->addr[i] = addr.a[i];
            bits -= 8;

        } else {
            e->addr[i] = (uint8_t) (addr.a[i] & (0xff00u >> bits));
            bits = 0;
        }
    }

    return SP_OK;
}


int
sp_netallow_parse(sp_netallow_t *al, const char *s, size_t len, char *err,
    size_t errlen)
{
    size_t       start, end, n;
    const char  *entry;
    int          rc;

    al->n = 0;
    al->names_len = 0;
    start = 0;

    while (start <= len) {
        end = start;

        while (end < len && s[end] != ',') {
            end++;
        }

        entry = s + start;
        n = end - start;

        while (n > 0 && sp_is_blank(entry[0])) {
            entry++;
            n--;
        }

        while (n > 0 && sp_is_blank(entry[n - 1])) {
            n--;
        }

        start = end + 1;

        if (n == 0) {
            continue;
        }

        if (al->n == SP_NETALLOW_MAX) {
            sp_errorf(err, errlen, SP_NETALLOW_ENV " holds at most %d "
                      "entries", SP_NETALLOW_MAX);
            goto failed;
        }

        if (n > 2 && entry[0] == '*' && entry[1] == '.') {
            rc = sp_name_valid(entry + 2, sp_name_trim(entry + 2, n - 2))
                 ? sp_netallow_add_name(al, SP_NETALLOW_SUFFIX, entry + 2,
                                        sp_name_trim(entry + 2, n - 2))
                 : SP_ERROR;

        } else if (sp_netallow_add_cidr(al, entry, n) == SP_OK) {
            rc = SP_OK;

        } else if (memchr(entry, ':', n) == NULL
                   && memchr(entry, '/', n) == NULL
                   && sp_name_valid(entry, sp_name_trim(entry, n))
                   && !sp_all_digits_dots(entry, n))
        {
            rc = sp_netallow_add_name(al, SP_NETALLOW_NAME, entry,
                                      sp_name_trim(entry, n));

        } else {
            rc = SP_ERROR;
        }

        if (rc != SP_OK) {
            sp_errorf(err, errlen, SP_NETALLOW_ENV ": entry \"%.*s\" is not "
                      "a CIDR (10.0.0.0/8, fd00::/8, 127.0.0.1), a host name "
                      "(vllm.internal) or *.suffix (*.internal)",
                      n > 80 ? 80 : (int) n, entry);
            goto failed;
        }
    }

    return SP_OK;

failed:

    al->n = 0;
    al->names_len = 0;
    return SP_ERROR;
}


int
sp_netallow_has_addr(const sp_netallow_t *al, const sp_netaddr_t *addr)
{
    const sp_netallow_entry_t  *e;
    uint32_t                    i;
    unsigned                    bits, full, rest;

    for (i = 0; i < al->n; i++) {
        e = &al->e[i];

        if (e->kind != SP_NETALLOW_CIDR) {
            continue;
        }

        bits = e->prefix;
        full = bits / 8;
        rest = bits % 8;

        if (memcmp(e->addr, addr->a, full) != 0) {
            continue;
        }

        if (rest != 0
            && (addr->a[full] & (0xff00u >> rest)) != e->addr[full])
        {
            continue;
        }

        return 1;
    }

    return 0;
}


int
sp_netallow_has_name(const sp_netallow_t *al, const char *host, size_t len,
    int exact_only)
{
    const sp_netallow_entry_t  *e;
    const char                 *name;
    uint32_t                    i;

    len = sp_name_trim(host, len);

    for (i = 0; i < al->n; i++) {
        e = &al->e[i];
        name = al->names + e->name_off;

        if (e->kind == SP_NETALLOW_NAME) {
            if (sp_name_eq(host, len, name, e->name_len)) {
                return 1;
            }

        } else if (e->kind == SP_NETALLOW_SUFFIX && !exact_only) {
            if (len > (size_t) e->name_len + 1
                && host[len - e->name_len - 1] == '.'
                && sp_name_eq(host + len - e->name_len, e->name_len, name,
                              e->name_len))
            {
                return 1;
            }
        }
    }

    return 0;
}


/* ---- the decision ---------------------------------------------------- */

const char *
sp_netclass_name(sp_netclass_e class)
{
    static const char  *names[SP_NET_CLASS_COUNT] = {
        "public", "loopback", "private", "link-local", "metadata",
        "unspecified", "multicast", "reserved"
    };

    return (unsigned) class < SP_NET_CLASS_COUNT ? names[class] : "unknown";
}


const char *
sp_netdecision_rule(const sp_netdecision_t *d)
{
    switch (d->verdict) {
    case SP_NET_ALLOWED:
        return "allowed";
    case SP_NET_REFUSED_HTTP:
        return "http";
    case SP_NET_REFUSED_ADMIN_API:
        return "admin-api";
    default:
        return sp_netclass_name(d->class);
    }
}


const char *
sp_netdecision_text(const sp_netdecision_t *d)
{
    static const char  *texts[SP_NET_CLASS_COUNT] = {
        "a public address", "a loopback address", "a private address",
        "a link-local address", "a cloud metadata address",
        "an unspecified (this-network) address",
        "a multicast or broadcast address", "a reserved address"
    };

    switch (d->verdict) {
    case SP_NET_ALLOWED:
        return "allowed";
    case SP_NET_REFUSED_HTTP:
        return "plain http to a public address (use https)";
    case SP_NET_REFUSED_ADMIN_API:
        return "the admin API's own address";
    default:
        return (unsigned) d->class < SP_NET_CLASS_COUNT ? texts[d->class]
                                                         : "not allowed";
    }
}


/* the loopback and private classes a wildcard listen address covers */
static int
sp_netclass_local(sp_netclass_e class)
{
    return class == SP_NET_LOOPBACK || class == SP_NET_UNSPECIFIED
           || class == SP_NET_PRIVATE || class == SP_NET_LINK_LOCAL;
}


static int
sp_netaddr_is_admin(const sp_netaddr_t *addr, uint16_t port,
    const sp_netaddr_t *admin, uint16_t admin_port)
{
    sp_netclass_e  ac, class;

    if (admin == NULL || port != admin_port) {
        return 0;
    }

    if (memcmp(addr->a, admin->a, 16) == 0) {
        return 1;
    }

    ac = sp_netaddr_classify(admin);
    class = sp_netaddr_classify(addr);

    /* 0.0.0.0 or :: listens on every local address */
    if (ac == SP_NET_UNSPECIFIED) {
        return sp_netclass_local(class);
    }

    /* connecting to 0.0.0.0 or :: reaches the local host */
    return class == SP_NET_UNSPECIFIED && sp_netclass_local(ac);
}


void
sp_netaddr_decide_name(sp_netdecision_t *d, const sp_netallow_t *al,
    const char *host, size_t host_len)
{
    sp_netclass_e  nc;

    d->verdict = SP_NET_ALLOWED;
    d->class = SP_NET_PUBLIC;

    if (host == NULL) {
        return;
    }

    nc = sp_netaddr_name_class(host, host_len);

    if (nc != SP_NET_PUBLIC
        && !sp_netallow_has_name(al, host, host_len, nc == SP_NET_METADATA))
    {
        d->verdict = SP_NET_REFUSED_CLASS;
        d->class = nc;
    }
}


void
sp_netaddr_decide(sp_netdecision_t *d, const sp_netallow_t *al, int https,
    const char *host, size_t host_len, const sp_netaddr_t *addr,
    uint16_t port, const sp_netaddr_t *admin, uint16_t admin_port)
{
    sp_netclass_e  class;

    if (sp_netaddr_is_admin(addr, port, admin, admin_port)) {
        d->verdict = SP_NET_REFUSED_ADMIN_API;
        d->class = sp_netaddr_classify(addr);
        return;
    }

    sp_netaddr_decide_name(d, al, host, host_len);

    if (d->verdict != SP_NET_ALLOWED) {
        return;
    }

    class = sp_netaddr_classify(addr);
    d->class = class;

    if (class == SP_NET_PUBLIC && https) {
        return;
    }

    if (sp_netallow_has_addr(al, addr)) {
        return;
    }

    /* a wildcard name does not reach the metadata service */
    if (host != NULL
        && sp_netallow_has_name(al, host, host_len, class == SP_NET_METADATA))
    {
        return;
    }

    d->verdict = class == SP_NET_PUBLIC ? SP_NET_REFUSED_HTTP
                                        : SP_NET_REFUSED_CLASS;
}
