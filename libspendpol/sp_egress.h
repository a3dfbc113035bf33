/*
 * Shadow AI from egress logs: controld reads DNS and proxy logs (a file
 * it tails, or lines posted to POST /shadow-ai/logs) and flags clients
 * that reach AI services directly instead of through the gateway.
 *
 * Formats (one line each):
 *   dnsmasq   "Dec  5 01:02:03 dnsmasq[123]: query[A] api.openai.com from
 *             10.0.0.7" (syslog time, no year: the year is the one that
 *             puts the time nearest before now + 1 day); reply, forwarded
 *             and cached lines are not queries (SP_DECLINED)
 *   bind      "05-Dec-2026 01:02:03.456 client @0x7f.. 10.0.0.7#5353
 *             (api.openai.com): query: api.openai.com IN A +E(0) (10.0.0.1)"
 *             (with or without the "queries: info:" category prefix and
 *             the @0x.. pointer)
 *   squid     native access.log: "1764896523.123    45 10.0.0.7
 *             TCP_TUNNEL/200 3456 CONNECT api.openai.com:443 - HIER_DIRECT
 *             /1.2.3.4 -" (CONNECT host:port or a URL)
 *   generic   "<time> <client> <host>" separated by spaces or tabs: time
 *             as unix seconds (with fraction) or ISO 8601 / RFC 3339; the
 *             host may be a URL
 * SP_EGRESS_AUTO tries each in turn.
 *
 * The catalogue (sp_egress_catalogue()) is compiled in: at least 60 AI
 * service domains (model providers, chat apps, coding assistants, image
 * and voice services), each with its service and category; a host matches
 * a domain when it equals it or ends in "." + domain (api.openai.com
 * matches openai.com; notopenai.com does not).
 */

#ifndef SP_EGRESS_H
#define SP_EGRESS_H

#include "spendpol.h"


/* a line of a known format that is no query (nginx's NGX_DECLINED) */
#ifndef SP_DECLINED
#define SP_DECLINED       -5
#endif

typedef enum {
    SP_EGRESS_AUTO = 0,
    SP_EGRESS_DNSMASQ,
    SP_EGRESS_BIND,
    SP_EGRESS_SQUID,
    SP_EGRESS_GENERIC
} sp_egress_format_e;

typedef struct {
    int64_t  ts_ms;
    char     client[64];            /* an address or a name, as logged */
    char     host[256];             /* lower case, no trailing dot, no
                                       port */
    int      format;                /* the format that read the line */
} sp_egress_event_t;

typedef struct {
    const char  *domain;            /* "openai.com" */
    const char  *service;           /* "OpenAI" */
    const char  *category;          /* "provider", "chat", "coding",
                                       "image", "voice", "search", ... */
} sp_ai_service_t;


/* "auto", "dnsmasq", "bind", "squid", "generic"; -1 when unknown */
int sp_egress_format(const char *name, size_t len);
const char *sp_egress_format_name(sp_egress_format_e format);

/*
 * Reads one line (without its '\n'). SP_OK: ev filled. SP_DECLINED: a
 * line of a known format that is no query (a reply, a cache line, a
 * comment). SP_ERROR: unreadable, a reason in err (never the line).
 * now_ms fixes year-less times.
 */
int sp_egress_parse(sp_egress_format_e format, const char *line,
    size_t len, int64_t now_ms, sp_egress_event_t *ev, char *err,
    size_t errlen);

/* the AI service of a host, or NULL */
const sp_ai_service_t *sp_egress_service(const char *host, size_t len);

/* the whole catalogue: *n entries */
const sp_ai_service_t *sp_egress_catalogue(size_t *n);


#endif /* SP_EGRESS_H */
