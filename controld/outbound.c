/*
 * Outbound addresses: which hosts provider base URLs and webhooks may
 * reach (see outbound.h and libspendpol/sp_netaddr.h).
 *
 * The parsed list lives in process globals written once at start (before
 * any thread) by cd_outbound_configure(), so the webhook deliverer, which
 * has no app at hand, judges connections by the same list.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/socket.h>

#include "controld.h"
#include "webhook.h"
#include "outbound.h"


#define CD_OUTBOUND_ADMIN_MAX  8

static sp_netallow_t  cd_outbound_allow;
static char           cd_outbound_text[4096];
static sp_netaddr_t   cd_outbound_admin[CD_OUTBOUND_ADMIN_MAX];
static size_t         cd_outbound_nadmin;
static uint16_t       cd_outbound_admin_port;


int
cd_outbound_configure(const cd_config_t *cf, char *err, size_t errlen)
{
    const char       *list;
    struct addrinfo   hints, *res, *ai;

    list = cf->upstream_allow ? cf->upstream_allow : "";

    if (sp_netallow_parse(&cd_outbound_allow, list, strlen(list), err,
                          errlen)
        != SP_OK)
    {
        return CD_ERROR;
    }

    snprintf(cd_outbound_text, sizeof(cd_outbound_text), "%s", list);

    cd_outbound_nadmin = 0;
    cd_outbound_admin_port = cf->api_port;

    if (cf->api_host == NULL) {
        return CD_OK;
    }

    if (sp_netaddr_parse(&cd_outbound_admin[0], cf->api_host,
                         strlen(cf->api_host))
        == SP_OK)
    {
        cd_outbound_nadmin = 1;
        return CD_OK;
    }

    /* a listen name ("localhost"): every address it stands for */
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;

    if (getaddrinfo(cf->api_host, NULL, &hints, &res) != 0) {
        return CD_OK;
    }

    for (ai = res; ai != NULL && cd_outbound_nadmin < CD_OUTBOUND_ADMIN_MAX;
         ai = ai->ai_next)
    {
        if (sp_netaddr_from_sockaddr(&cd_outbound_admin[cd_outbound_nadmin],
                                     NULL, ai->ai_addr, ai->ai_addrlen)
            == SP_OK)
        {
            cd_outbound_nadmin++;
        }
    }

    freeaddrinfo(res);

    return CD_OK;
}


const char *
cd_outbound_allow_text(void)
{
    return cd_outbound_text;
}


void
cd_outbound_admin_listen(uint16_t port, char *out, size_t outlen)
{
    char  text[SP_NETADDR_STRLEN];

    if (cd_outbound_nadmin == 0 || port == 0) {
        snprintf(out, outlen, "%s", "");
        return;
    }

    sp_netaddr_format(&cd_outbound_admin[0], text);
    snprintf(out, outlen, sp_netaddr_is_v4(&cd_outbound_admin[0])
                          ? "%s:%u" : "[%s]:%u", text, (unsigned) port);
}


/* the decision on one address of u, against every admin API address */
static void
cd_outbound_decide(sp_netdecision_t *d, const cd_url_t *u,
    const sp_netaddr_t *addr, uint16_t port, int literal)
{
    size_t  i;

    for (i = 0; i < cd_outbound_nadmin; i++) {
        sp_netaddr_decide(d, &cd_outbound_allow, u->https,
                          literal ? NULL : u->host, strlen(u->host), addr,
                          port, &cd_outbound_admin[i],
                          cd_outbound_admin_port);

        if (d->verdict == SP_NET_REFUSED_ADMIN_API) {
            return;
        }
    }

    sp_netaddr_decide(d, &cd_outbound_allow, u->https,
                      literal ? NULL : u->host, strlen(u->host), addr, port,
                      NULL, 0);
}


static void
cd_outbound_message(const sp_netdecision_t *d, const cd_url_t *u,
    const sp_netaddr_t *addr, char *msg, size_t msglen)
{
    char         text[SP_NETADDR_STRLEN], resolved[SP_NETADDR_STRLEN + 32];
    const char  *hint;

    resolved[0] = '\0';

    if (addr != NULL) {
        sp_netaddr_format(addr, text);

        if (strcmp(text, u->host) != 0) {
            snprintf(resolved, sizeof(resolved), " (resolves to %s)", text);
        }
    }

    hint = d->verdict == SP_NET_REFUSED_ADMIN_API
           ? "; it is never allowed"
           : "; allow it with " SP_NETALLOW_ENV;

    snprintf(msg, msglen, "host %s%s is %s%s", u->host, resolved,
             sp_netdecision_text(d), hint);
}


int
cd_outbound_resolve(const cd_url_t *u, struct addrinfo **res)
{
    char             port[8];
    struct addrinfo  hints;

    snprintf(port, sizeof(port), "%u", (unsigned) u->port);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;

    return getaddrinfo(u->host, port, &hints, res);
}


int
cd_outbound_check_url(const cd_url_t *u, char *msg, size_t msglen,
    const char **rule)
{
    int               rc;
    sp_netaddr_t      addr;
    sp_netdecision_t  d;
    struct addrinfo  *res, *ai;

    if (sp_netaddr_parse(&addr, u->host, strlen(u->host)) == SP_OK) {
        cd_outbound_decide(&d, u, &addr, u->port, 1);

        if (d.verdict == SP_NET_ALLOWED) {
            return CD_OK;
        }

        cd_outbound_message(&d, u, NULL, msg, msglen);
        *rule = sp_netdecision_rule(&d);
        return CD_ERROR;
    }

    sp_netaddr_decide_name(&d, &cd_outbound_allow, u->host, strlen(u->host));

    if (d.verdict != SP_NET_ALLOWED) {
        cd_outbound_message(&d, u, NULL, msg, msglen);
        *rule = sp_netdecision_rule(&d);
        return CD_ERROR;
    }

    rc = cd_outbound_resolve(u, &res);

    if (rc != 0) {
        /* judged again where it is used: the module, the deliverer */
        if (u->https
            || sp_netallow_has_name(&cd_outbound_allow, u->host,
                                    strlen(u->host), 0))
        {
            return CD_OK;
        }

        snprintf(msg, msglen, "host %s does not resolve here, and plain "
                 "http is allowed only to names or addresses in "
                 SP_NETALLOW_ENV "; use https", u->host);
        *rule = "http";
        return CD_ERROR;
    }

    rc = CD_OK;

    for (ai = res; ai != NULL; ai = ai->ai_next) {
        if (sp_netaddr_from_sockaddr(&addr, NULL, ai->ai_addr,
                                     ai->ai_addrlen)
            != SP_OK)
        {
            continue;
        }

        cd_outbound_decide(&d, u, &addr, u->port, 0);

        if (d.verdict != SP_NET_ALLOWED) {
            cd_outbound_message(&d, u, &addr, msg, msglen);
            *rule = sp_netdecision_rule(&d);
            rc = CD_ERROR;
            break;
        }
    }

    freeaddrinfo(res);

    return rc;
}


int
cd_outbound_check_addr(const cd_url_t *u, const struct sockaddr *sa,
    size_t socklen, char *err, size_t errlen)
{
    char              text[SP_NETADDR_STRLEN];
    uint16_t          port;
    sp_netaddr_t      addr, literal;
    sp_netdecision_t  d;

    if (sp_netaddr_from_sockaddr(&addr, &port, sa, socklen) != SP_OK) {
        snprintf(err, errlen, "address not allowed: not IPv4 or IPv6");
        return CD_ERROR;
    }

    cd_outbound_decide(&d, u, &addr, port,
                       sp_netaddr_parse(&literal, u->host, strlen(u->host))
                       == SP_OK);

    if (d.verdict == SP_NET_ALLOWED) {
        return CD_OK;
    }

    sp_netaddr_format(&addr, text);
    snprintf(err, errlen, "address not allowed: %s (%s is %s)",
             sp_netdecision_rule(&d), text, sp_netdecision_text(&d));

    return CD_ERROR;
}
