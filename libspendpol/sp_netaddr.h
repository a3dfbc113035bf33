/*
 * Outbound addresses (sp_netaddr.c): which addresses a provider base URL
 * or a webhook may reach. The operator widens the default (https to
 * public addresses) with SPENDPOL_UPSTREAM_ALLOW, a comma-separated list
 * of CIDRs ("10.0.0.0/8", "::1/128", a bare address), exact host names
 * ("vllm.internal") and "*.suffix" (any name below suffix).
 *
 * controld checks a URL when it is stored and before each webhook
 * connection; the module checks the address it is about to connect to,
 * after DNS, so a name that changes its address (DNS rebinding) is
 * judged by what it resolves to. Nothing here allocates.
 */

#ifndef SP_NETADDR_H
#define SP_NETADDR_H

#include "spendpol.h"


#define SP_NETALLOW_ENV          "SPENDPOL_UPSTREAM_ALLOW"
#define SP_NETALLOW_MAX          64       /* entries */
#define SP_NETALLOW_NAMES_MAX    4096     /* bytes of host names, total */
#define SP_NETADDR_NAME_MAX      253

/* an IPv4 or IPv6 address; IPv4 is held as ::ffff:a.b.c.d */
typedef struct {
    uint8_t  a[16];
} sp_netaddr_t;

/* what an address is, and the rule that refuses it by default */
typedef enum {
    SP_NET_PUBLIC = 0,
    SP_NET_LOOPBACK,
    SP_NET_PRIVATE,            /* RFC 1918, fc00::/7, 100.64/10 CGNAT */
    SP_NET_LINK_LOCAL,
    SP_NET_METADATA,           /* cloud instance metadata */
    SP_NET_UNSPECIFIED,        /* 0.0.0.0/8, :: */
    SP_NET_MULTICAST,          /* and 255.255.255.255 */
    SP_NET_RESERVED,           /* 240/4, documentation, benchmarking */
    SP_NET_CLASS_COUNT
} sp_netclass_e;

/* the decision on one (scheme, host, address, port) */
typedef enum {
    SP_NET_ALLOWED = 0,
    SP_NET_REFUSED_CLASS,      /* a non-public address: see class */
    SP_NET_REFUSED_HTTP,       /* plain http to a public address */
    SP_NET_REFUSED_ADMIN_API   /* the admin API's own listen address */
} sp_netverdict_e;

typedef struct {
    sp_netverdict_e  verdict;
    sp_netclass_e    class;    /* of the address (or of the name) */
} sp_netdecision_t;

typedef struct {
    uint8_t   kind;            /* SP_NETALLOW_CIDR, _NAME or _SUFFIX */
    uint8_t   prefix;          /* CIDR bits, on the 128-bit form */
    uint16_t  name_off;        /* into names */
    uint16_t  name_len;
    uint8_t   addr[16];        /* CIDR network, host bits cleared */
} sp_netallow_entry_t;

#define SP_NETALLOW_CIDR    1
#define SP_NETALLOW_NAME    2  /* exact, lowercase, no trailing dot */
#define SP_NETALLOW_SUFFIX  3  /* "*.example": names ending ".example" */

typedef struct {
    uint32_t             n;
    uint32_t             names_len;
    sp_netallow_entry_t  e[SP_NETALLOW_MAX];
    char                 names[SP_NETALLOW_NAMES_MAX];
} sp_netallow_t;


/*
 * Parses an allow list (len bytes, need not be NUL-terminated; empty or
 * only commas and blanks: nothing beyond the default). Blanks around an
 * entry are ignored. On failure returns SP_ERROR with err naming the
 * entry and what was expected; *al is then empty.
 */
int sp_netallow_parse(sp_netallow_t *al, const char *s, size_t len,
    char *err, size_t errlen);

/* 1 when addr is inside one of the list's CIDRs */
int sp_netallow_has_addr(const sp_netallow_t *al, const sp_netaddr_t *addr);

/*
 * 1 when the host name (any case, an optional trailing dot) matches one
 * of the list's names; with exact_only, "*.suffix" entries do not count.
 */
int sp_netallow_has_name(const sp_netallow_t *al, const char *host,
    size_t len, int exact_only);

/* the textual form of an address literal (no brackets) -> SP_OK */
int sp_netaddr_parse(sp_netaddr_t *addr, const char *s, size_t len);

/* from 4 or 16 bytes in network order */
void sp_netaddr_from_bytes(sp_netaddr_t *addr, const void *bytes,
    size_t len);

/*
 * From a struct sockaddr (AF_INET or AF_INET6) of socklen bytes; returns
 * SP_ERROR for any other family. *port (may be NULL) gets its port.
 */
int sp_netaddr_from_sockaddr(sp_netaddr_t *addr, uint16_t *port,
    const void *sa, size_t socklen);

/* 1 when held as IPv4 (::ffff:a.b.c.d) */
int sp_netaddr_is_v4(const sp_netaddr_t *addr);

/*
 * "a.b.c.d" or the RFC 5952 IPv6 form into out (SP_NETADDR_STRLEN bytes,
 * NUL-terminated); returns its length.
 */
#define SP_NETADDR_STRLEN  46
size_t sp_netaddr_format(const sp_netaddr_t *addr, char *out);

/*
 * The class of an address. IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible
 * (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) forms are judged by their IPv4
 * address.
 */
sp_netclass_e sp_netaddr_classify(const sp_netaddr_t *addr);

/*
 * The class a host name implies before it is resolved: SP_NET_METADATA
 * for cloud metadata names (metadata.google.internal ...), SP_NET_LOOPBACK
 * for localhost and *.localhost, else SP_NET_PUBLIC.
 */
sp_netclass_e sp_netaddr_name_class(const char *host, size_t len);

/* "loopback", "private", "link-local", "metadata" ... ("public") */
const char *sp_netclass_name(sp_netclass_e class);

/*
 * A sentence fragment for messages: "a private address", "the admin
 * API's own address", "plain http to a public address" ...
 */
const char *sp_netdecision_text(const sp_netdecision_t *d);

/* the rule's short name: a class name, "http" or "admin-api" */
const char *sp_netdecision_rule(const sp_netdecision_t *d);

/*
 * May a connection go to addr:port? https is 1 for https; host is the
 * URL's host name (host_len bytes), or NULL for an address literal;
 * admin (may be NULL) and admin_port the admin API's listen address,
 * where an unspecified address (0.0.0.0, ::) stands for every local one.
 *
 * https to a public address is allowed. Anything else (plain http, or a
 * non-public address) only when the address is inside an allowed CIDR or
 * the host name matches an allowed name (a metadata name only by an
 * exact entry). The admin API's own address and port are never allowed.
 */
void sp_netaddr_decide(sp_netdecision_t *d, const sp_netallow_t *al,
    int https, const char *host, size_t host_len, const sp_netaddr_t *addr,
    uint16_t port, const sp_netaddr_t *admin, uint16_t admin_port);

/*
 * The check that needs no address, for a URL stored before its name
 * resolves: a metadata name (refused unless listed exactly) or a
 * localhost name (refused unless listed) -> SP_NET_REFUSED_CLASS, else
 * SP_NET_ALLOWED, meaning "now judge each address it resolves to with
 * sp_netaddr_decide()".
 */
void sp_netaddr_decide_name(sp_netdecision_t *d, const sp_netallow_t *al,
    const char *host, size_t host_len);


#endif /* SP_NETADDR_H */
