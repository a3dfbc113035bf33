/*
 * controld's URL parsers, which read what an administrator sends (a
 * provider's base_url, an alert rule's webhook.url) and what the daemon
 * is configured with (redis://):
 *
 * - cd_url_parse (webhook URLs): what it accepts has scheme http or
 *   https, a non-empty host of host-name bytes (or a bracketed literal),
 *   a port in 1..65535 (the scheme's own unless explicit), a path that
 *   starts with '/' and holds no fragment or control byte; rebuilt from
 *   its parts it parses to the same parts. cd_url_redact gives
 *   scheme://host[:port]/path that parses to the same host and port, no
 *   userinfo, no query, and never writes past a short buffer.
 * - cd_base_url_normalize: what it accepts is http(s)://, a host, no
 *   trailing '/', no byte that could split a request line, at most
 *   CD_BASE_URL_MAX (2048) bytes, and normalises to itself.
 * - cd_url_pct_decode: NUL-terminated within any room, never longer than
 *   the input.
 * - cd_redis_parse_url: host, port and db in range; rebuilt, the same.
 * - cd_http_status_parse: a status from 100 to 599.
 *
 * Input: a URL (cut at the first NUL byte).
 */

#include "fuzz_common.h"
#include "controld.h"
#include "outbound.h"
#include "webhook.h"
#include "api.h"


#define FUZZ_BASE_URL_MAX  2048        /* CD_BASE_URL_MAX, api_providers.c */


static int
fuzz_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}


static int
fuzz_clean(const char *s)
{
    for ( ; *s != '\0'; s++) {
        if ((unsigned char) *s <= 0x20 || *s == 0x7f) {
            return 0;
        }
    }

    return 1;
}


/* http(s)://[userinfo@]host[:port]path from the parts; 0 if too long */
static size_t
fuzz_url_build(const cd_url_t *u, int with_userinfo, char *out, size_t len)
{
    int   n;
    char  port[16];

    port[0] = '\0';

    if (u->explicit_port) {
        snprintf(port, sizeof(port), ":%u", (unsigned) u->port);
    }

    n = snprintf(out, len, "%s://%s%s%s%s%s%s%s",
                 u->https ? "https" : "http",
                 with_userinfo && u->userinfo[0] ? u->userinfo : "",
                 with_userinfo && u->userinfo[0] ? "@" : "",
                 u->ipv6 ? "[" : "", u->host, u->ipv6 ? "]" : "", port,
                 u->path);

    FUZZ_CHECK(n > 0);

    return (size_t) n < len ? (size_t) n : 0;
}


static void
fuzz_url(const char *s, size_t len)
{
    static cd_url_t  u, again, red;
    static char      built[CD_URL_MAX * 2 + 600];
    char            *out;
    size_t           n, room, query;
    const char      *p;

    if (cd_url_parse(s, &u) != CD_OK) {
        char  msg[32];

        cd_url_redact(s, msg, sizeof(msg));
        FUZZ_CHECK(strcmp(msg, "(invalid URL)") == 0);
        return;
    }

    FUZZ_CHECK(len > 0 && len <= CD_URL_MAX);
    FUZZ_CHECK(u.https == 0 || u.https == 1);
    FUZZ_CHECK(strncasecmp(s, u.https ? "https://" : "http://",
                           u.https ? 8 : 7) == 0);

    /* a host */
    FUZZ_CHECK(memchr(u.host, '\0', sizeof(u.host)) != NULL);
    FUZZ_CHECK(u.host[0] != '\0');
    FUZZ_CHECK(fuzz_clean(u.host));

    if (u.ipv6) {
        FUZZ_CHECK(strpbrk(u.host, "]/?#@") == NULL);

    } else {
        for (p = u.host; *p != '\0'; p++) {
            FUZZ_CHECK(fuzz_host_char(*p));
        }
    }

    FUZZ_CHECK(u.port >= 1);

    if (!u.explicit_port) {
        FUZZ_CHECK(u.port == (u.https ? 443 : 80));
    }

    FUZZ_CHECK(memchr(u.userinfo, '\0', sizeof(u.userinfo)) != NULL);
    FUZZ_CHECK(strpbrk(u.userinfo, "/?#") == NULL);
    FUZZ_CHECK(fuzz_clean(u.userinfo));

    FUZZ_CHECK(memchr(u.path, '\0', sizeof(u.path)) != NULL);
    FUZZ_CHECK(u.path[0] == '/');
    FUZZ_CHECK(strchr(u.path, '#') == NULL);
    FUZZ_CHECK(fuzz_clean(u.path));

    /* the parts make a URL that parses to the same parts */
    n = fuzz_url_build(&u, 1, built, sizeof(built));
    FUZZ_CHECK(n > 0);

    if (n <= CD_URL_MAX) {
        FUZZ_CHECK(cd_url_parse(built, &again) == CD_OK);
        FUZZ_CHECK(again.https == u.https && again.ipv6 == u.ipv6
                   && again.explicit_port == u.explicit_port
                   && again.port == u.port);
        FUZZ_CHECK(strcmp(again.host, u.host) == 0);
        FUZZ_CHECK(strcmp(again.userinfo, u.userinfo) == 0);
        FUZZ_CHECK(strcmp(again.path, u.path) == 0);
    }

    /* redacted: same host and port, no userinfo, no query */
    n = fuzz_url_build(&u, 0, built, sizeof(built));
    FUZZ_CHECK(n > 0);
    query = strcspn(u.path, "?");
    n -= strlen(u.path) - query;
    room = n + 1;

    out = malloc(room);
    FUZZ_CHECK(out != NULL);
    cd_url_redact(s, out, room);
    FUZZ_CHECK(strlen(out) == n);

    FUZZ_CHECK(cd_url_parse(out, &red) == CD_OK);
    FUZZ_CHECK(red.https == u.https && red.port == u.port
               && red.explicit_port == u.explicit_port);
    FUZZ_CHECK(strcmp(red.host, u.host) == 0);
    FUZZ_CHECK(red.userinfo[0] == '\0');
    FUZZ_CHECK(strchr(red.path, '?') == NULL);
    FUZZ_CHECK(strlen(red.path) == query
               && memcmp(red.path, u.path, query) == 0);

    /* a short buffer is cut, NUL-terminated, never overrun */
    room = 1 + (len % room);
    cd_url_redact(s, out, room);
    FUZZ_CHECK(strlen(out) < room);
    free(out);
}


static void
fuzz_base_url(const char *s, size_t len)
{
    static cd_url_t  u;
    char            *url, *again;
    size_t   n, scheme;

    url = strdup(s);
    FUZZ_CHECK(url != NULL);

    if (!cd_base_url_normalize(url)) {
        free(url);
        return;
    }

    n = strlen(url);
    FUZZ_CHECK(n <= len && n <= FUZZ_BASE_URL_MAX);
    FUZZ_CHECK(memcmp(url, s, n) == 0);     /* only '/' cut at the end */

    if (strncmp(url, "https://", 8) == 0) {
        scheme = 8;
    } else {
        FUZZ_CHECK(strncmp(url, "http://", 7) == 0);
        scheme = 7;
    }

    FUZZ_CHECK(n > scheme);
    FUZZ_CHECK(url[n - 1] != '/');
    FUZZ_CHECK(fuzz_clean(url));
    FUZZ_CHECK(strpbrk(url, "?#\\") == NULL);

    /* a host comes first: not a path, userinfo or port */
    FUZZ_CHECK(url[scheme] != '/' && url[scheme] != '@');

    /*
     * The gateway takes the authority (up to the first '/') as host[:port]
     * for ngx_parse_url, the Host header and the TLS name: a base URL the
     * control plane accepts parses as a URL with a host, without userinfo.
     */
    FUZZ_CHECK(cd_url_parse(url, &u) == CD_OK);
    FUZZ_CHECK(u.userinfo[0] == '\0');

    /* normalised: again is the same */
    again = strdup(url);
    FUZZ_CHECK(again != NULL);
    FUZZ_CHECK(cd_base_url_normalize(again) == 1);
    FUZZ_CHECK(strcmp(again, url) == 0);

    free(again);
    free(url);
}


static void
fuzz_pct_decode(const char *s, size_t len)
{
    char    *out;
    size_t   n, room;

    room = len + 1;
    out = malloc(room);
    FUZZ_CHECK(out != NULL);

    n = cd_url_pct_decode(s, out, room);
    FUZZ_CHECK(n <= len && out[n] == '\0');

    if (strchr(s, '%') == NULL) {
        FUZZ_CHECK(n == len && memcmp(out, s, len) == 0);
    }

    /* any smaller room: cut, terminated, in bounds */
    room = 1 + len / 2;
    n = cd_url_pct_decode(s, out, room);
    FUZZ_CHECK(n < room && out[n] == '\0');

    FUZZ_CHECK(cd_url_pct_decode(s, out, 0) == 0);
    free(out);
}


static void
fuzz_redis(const char *s)
{
    char    *host, *user, *password, *host2, *user2, *password2, *built;
    int      port, db, port2, db2;
    size_t   n;

    if (cd_redis_parse_url(s, &host, &port, &db, &user, &password)
        != CD_OK)
    {
        FUZZ_CHECK(host == NULL && user == NULL && password == NULL);
        return;
    }

    FUZZ_CHECK(host != NULL && host[0] != '\0');
    FUZZ_CHECK(strpbrk(host, ":/") == NULL);
    FUZZ_CHECK(port >= 1 && port <= 65535);
    FUZZ_CHECK(db >= 0 && db <= 1000000);
    FUZZ_CHECK(user == NULL || password != NULL);

    /* a user has no ':', a password no '@' or '/', both none without '@' */
    if (user != NULL) {
        FUZZ_CHECK(user[0] != '\0' && strpbrk(user, ":/@") == NULL);
    }

    if (password != NULL) {
        FUZZ_CHECK(strpbrk(password, "@/") == NULL);
    } else {
        FUZZ_CHECK(strchr(host, '@') == NULL);
    }

    n = strlen(s) + 64;
    built = malloc(n);
    FUZZ_CHECK(built != NULL);

    snprintf(built, n, "redis://%s%s%s%s%s:%d/%d", user ? user : "",
             password ? ":" : "", password ? password : "",
             password ? "@" : "", host, port, db);

    FUZZ_CHECK(cd_redis_parse_url(built, &host2, &port2, &db2, &user2,
                                  &password2) == CD_OK);
    FUZZ_CHECK(strcmp(host2, host) == 0 && port2 == port && db2 == db);
    FUZZ_CHECK((user == NULL) == (user2 == NULL));
    FUZZ_CHECK(user == NULL || strcmp(user, user2) == 0);
    FUZZ_CHECK((password == NULL) == (password2 == NULL));
    FUZZ_CHECK(password == NULL || strcmp(password, password2) == 0);

    free(built);
    free(host);
    free(user);
    free(password);
    free(host2);
    free(user2);
    free(password2);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char    *s;
    size_t   len;
    int      status;

    s = malloc(size + 1);
    FUZZ_CHECK(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';
    len = strlen(s);

    fuzz_url(s, len);
    fuzz_base_url(s, len);
    fuzz_pct_decode(s, len);
    fuzz_redis(s);

    if (cd_http_status_parse((const char *) data, size, &status) == CD_OK) {
        FUZZ_CHECK(status >= 100 && status <= 599);
    }

    free(s);

    return 0;
}
