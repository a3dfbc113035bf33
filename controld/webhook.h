/*
 * Webhook URLs, backoff and the HTTP/1.1 POST client (webhook.c). Needs
 * controld.h first.
 */

#ifndef CD_WEBHOOK_H
#define CD_WEBHOOK_H


#define CD_URL_MAX                   2048
#define CD_WEBHOOK_TIMEOUT_MS        5000
#define CD_WEBHOOK_ATTEMPTS          5
#define CD_WEBHOOK_BACKOFF_BASE_MS   1000LL
#define CD_WEBHOOK_BACKOFF_MAX_MS    60000LL

typedef struct {
    int       https;
    int       ipv6;              /* host was [v6] */
    int       explicit_port;
    uint16_t  port;
    char      host[256];
    char      userinfo[256];     /* "user:password" or "" */
    char      path[CD_URL_MAX + 2];   /* path and query, "/" at least */
} cd_url_t;

/* http(s)://[userinfo@]host[:port][/path][?query][#fragment] */
int cd_url_parse(const char *url, cd_url_t *u) CD_CHECK;

/* scheme://host[:port]/path: no userinfo, query or fragment */
void cd_url_redact(const char *url, char *out, size_t outlen);

/* %XX-decodes s into out (NUL-terminated); returns the decoded length */
size_t cd_url_pct_decode(const char *s, char *out, size_t outlen);

/* the wait after failed attempt n (1-based): 1 s, 2 s, 4 s ... capped */
int64_t cd_webhook_backoff_ms(int attempt);

/* the status code of "HTTP/1.x NNN ..." */
int cd_http_status_parse(const char *buf, size_t len, int *status)
    CD_CHECK;

/*
 * POSTs body as application/json within timeout_ms (connect, send and
 * status line). CD_OK with *status set when an answer came, else
 * CD_ERROR with err naming what failed (never the URL's credentials).
 */
int cd_webhook_post(const cd_url_t *u, const char *body, size_t len,
    unsigned timeout_ms, int *status, char *err, size_t errlen) CD_CHECK;


#endif /* CD_WEBHOOK_H */
