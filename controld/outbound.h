/*
 * Outbound addresses in controld (outbound.c): provider base URLs and
 * webhook URLs are judged by sp_netaddr_decide() against
 * SPENDPOL_UPSTREAM_ALLOW and the admin API's own address, when they are
 * stored and before every webhook connection. Needs controld.h first.
 */

#ifndef CD_OUTBOUND_H
#define CD_OUTBOUND_H

#include <sys/socket.h>

#include "sp_netaddr.h"
#include "webhook.h"


/*
 * Takes the allow list and the admin API address from cf (validated by
 * cd_config_load()); called once at start, before any thread, and again
 * by tests. Returns CD_ERROR with err when the list does not parse.
 */
int cd_outbound_configure(const cd_config_t *cf, char *err, size_t errlen)
    CD_CHECK;

/*
 * Before a URL is stored: an address literal is judged directly; a name
 * by name (metadata, localhost), then every address it resolves to. A
 * name that does not resolve is accepted for https (judged again when
 * it is used) and refused for plain http unless the list names it.
 * CD_OK when allowed, else CD_ERROR with msg ("host 10.0.0.5 is a private
 * address; allow it with SPENDPOL_UPSTREAM_ALLOW") and *rule ("private").
 */
/* getaddrinfo of u's host and port for a TCP stream (its return code) */
struct addrinfo;
int cd_outbound_resolve(const cd_url_t *u, struct addrinfo **res);

int cd_outbound_check_url(const cd_url_t *u, char *msg, size_t msglen,
    const char **rule);

/*
 * Before connecting to sa (a resolved address of u): CD_OK, or CD_ERROR
 * with err ("address not allowed: private (10.0.0.5)").
 */
int cd_outbound_check_addr(const cd_url_t *u, const struct sockaddr *sa,
    size_t socklen, char *err, size_t errlen);

/*
 * The allow list as configured ("" when unset) and the admin API
 * address, for the snapshot the module reads.
 */
const char *cd_outbound_allow_text(void);

/*
 * The admin API's address as "addr:port" or "[v6]:port" for the module
 * ("" when unknown); port is the bound one (the configured may be 0).
 */
void cd_outbound_admin_listen(uint16_t port, char *out, size_t outlen);


#endif /* CD_OUTBOUND_H */
