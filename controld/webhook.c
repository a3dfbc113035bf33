/*
 * Webhook delivery: a small HTTP/1.1 client (one POST per connection,
 * "Connection: close") on plain sockets for http:// URLs and OpenSSL for
 * https:// (certificate and host name verified), with one deadline for
 * connect, send and the status line. Only the status code is read.
 *
 * URLs are logged and answered redacted: no userinfo, no query, no
 * fragment. Userinfo, when present, is sent as HTTP Basic credentials.
 */

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "controld.h"
#include "webhook.h"
#include "outbound.h"


/* ---- pure helpers (unit tested) --------------------------------------- */

static int
cd_hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    return -1;
}


int
cd_url_parse(const char *url, cd_url_t *u)
{
    size_t       n, len;
    long         port;
    char        *end;
    const char  *p, *auth_end, *host, *at, *colon;

    memset(u, 0, sizeof(cd_url_t));

    len = strlen(url);

    if (len == 0 || len > CD_URL_MAX) {
        return CD_ERROR;
    }

    for (p = url; *p != '\0'; p++) {
        if ((unsigned char) *p <= 0x20 || *p == 0x7f) {
            return CD_ERROR;
        }
    }

    if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
        u->https = 0;
        u->port = 80;

    } else if (strncasecmp(url, "https://", 8) == 0) {
        p = url + 8;
        u->https = 1;
        u->port = 443;

    } else {
        return CD_ERROR;
    }

    auth_end = p + strcspn(p, "/?#");

    /* userinfo: the last '@' before the path */
    at = NULL;

    for (host = p; host < auth_end; host++) {
        if (*host == '@') {
            at = host;
        }
    }

    if (at != NULL) {
        n = (size_t) (at - p);

        if (n >= sizeof(u->userinfo)) {
            return CD_ERROR;
        }

        memcpy(u->userinfo, p, n);
        u->userinfo[n] = '\0';
        p = at + 1;
    }

    host = p;

    if (*host == '[') {
        colon = memchr(host, ']', (size_t) (auth_end - host));
        if (colon == NULL) {
            return CD_ERROR;
        }

        n = (size_t) (colon - host - 1);
        if (n == 0 || n >= sizeof(u->host)) {
            return CD_ERROR;
        }

        memcpy(u->host, host + 1, n);
        u->host[n] = '\0';
        u->ipv6 = 1;
        colon++;

        if (colon < auth_end && *colon != ':') {
            return CD_ERROR;
        }

    } else {
        colon = memchr(host, ':', (size_t) (auth_end - host));
        n = (size_t) ((colon ? colon : auth_end) - host);

        if (n == 0 || n >= sizeof(u->host)) {
            return CD_ERROR;
        }

        memcpy(u->host, host, n);
        u->host[n] = '\0';

        for (p = u->host; *p != '\0'; p++) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                  || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'
                  || *p == '_'))
            {
                return CD_ERROR;
            }
        }
    }

    if (colon != NULL && colon < auth_end) {
        if (colon + 1 == auth_end) {
            return CD_ERROR;
        }

        errno = 0;
        port = strtol(colon + 1, &end, 10);

        if (errno != 0 || end != auth_end || port < 1 || port > 65535
            || colon[1] < '0' || colon[1] > '9')
        {
            return CD_ERROR;
        }

        u->port = (uint16_t) port;
        u->explicit_port = 1;
    }

    /* path and query, without the fragment */
    p = auth_end;
    n = strcspn(p, "#");

    if (n == 0 || *p != '/') {
        if (n + 2 > sizeof(u->path)) {
            return CD_ERROR;
        }

        u->path[0] = '/';
        memcpy(u->path + 1, p, n);
        u->path[n + 1] = '\0';

    } else {
        if (n + 1 > sizeof(u->path)) {
            return CD_ERROR;
        }

        memcpy(u->path, p, n);
        u->path[n] = '\0';
    }

    return CD_OK;
}


void
cd_url_redact(const char *url, char *out, size_t outlen)
{
    cd_url_t  u;
    size_t    n;

    if (outlen == 0) {
        return;
    }

    if (cd_url_parse(url, &u) != CD_OK) {
        snprintf(out, outlen, "(invalid URL)");
        return;
    }

    n = strcspn(u.path, "?");
    u.path[n] = '\0';

    if (u.explicit_port) {
        snprintf(out, outlen, "%s://%s%s%s:%u%s", u.https ? "https" : "http",
                 u.ipv6 ? "[" : "", u.host, u.ipv6 ? "]" : "",
                 (unsigned) u.port, u.path);

    } else {
        snprintf(out, outlen, "%s://%s%s%s%s", u.https ? "https" : "http",
                 u.ipv6 ? "[" : "", u.host, u.ipv6 ? "]" : "", u.path);
    }
}


int64_t
cd_webhook_backoff_ms(int attempt)
{
    int64_t  ms;

    if (attempt < 1) {
        attempt = 1;
    }

    if (attempt > 16) {
        attempt = 16;
    }

    ms = CD_WEBHOOK_BACKOFF_BASE_MS << (attempt - 1);

    return ms > CD_WEBHOOK_BACKOFF_MAX_MS ? CD_WEBHOOK_BACKOFF_MAX_MS : ms;
}


int
cd_http_status_parse(const char *buf, size_t len, int *status)
{
    /* "HTTP/1.1 200 OK" */
    if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0
        || (buf[7] != '0' && buf[7] != '1') || buf[8] != ' '
        || buf[9] < '1' || buf[9] > '5'
        || buf[10] < '0' || buf[10] > '9'
        || buf[11] < '0' || buf[11] > '9')
    {
        return CD_ERROR;
    }

    *status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');

    return CD_OK;
}


size_t
cd_url_pct_decode(const char *s, char *out, size_t outlen)
{
    int     hi, lo;
    size_t  n;

    for (n = 0; *s != '\0' && n + 1 < outlen; n++) {
        if (s[0] == '%'
            && (hi = cd_hex_value(s[1])) >= 0
            && (lo = cd_hex_value(s[2])) >= 0)
        {
            out[n] = (char) (hi * 16 + lo);
            s += 3;

        } else {
            out[n] = *s++;
        }
    }

    if (outlen > 0) {
        out[n] = '\0';
    }

    return n;
}


/* ---- the client ------------------------------------------------------- */

/* waits for events on fd until the deadline; 0 on timeout */
static int
cd_wait_fd(int fd, short events, int64_t deadline)
{
    int            rc;
    int64_t        left;
    struct pollfd  pfd;

    for ( ;; ) {
        left = deadline - cd_clock_ms(CLOCK_MONOTONIC);
        if (left <= 0) {
            return 0;
        }

        pfd.fd = fd;
        pfd.events = events;
        pfd.revents = 0;

        rc = poll(&pfd, 1, (int) left);

        if (rc < 0 && errno == EINTR) {
            continue;
        }

        return rc;
    }
}


static int
cd_connect(const cd_url_t *u, int64_t deadline, char *err, size_t errlen)
{
    int               fd, rc, soerr;
    socklen_t         slen;
    struct addrinfo  *res, *ai;

    rc = cd_outbound_resolve(u, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", u->host,
                 gai_strerror(rc));
        return -1;
    }

    fd = -1;
    snprintf(err, errlen, "cannot connect");

    for (ai = res; ai != NULL; ai = ai->ai_next) {
        /*
         * Every address, at every delivery: the name may resolve
         * elsewhere now than when the rule was stored (DNS rebinding).
         */
        if (cd_outbound_check_addr(u, ai->ai_addr, ai->ai_addrlen, err,
                                   errlen)
            != CD_OK)
        {
            continue;
        }

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK
                    | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            continue;
        }

        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            break;
        }

        if (errno == EINPROGRESS) {
            rc = cd_wait_fd(fd, POLLOUT, deadline);

            if (rc == 0) {
                snprintf(err, errlen, "connect timed out");
                close(fd);
                fd = -1;
                break;
            }

            soerr = 0;
            slen = sizeof(soerr);

            if (rc > 0
                && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) == 0
                && soerr == 0)
            {
                break;
            }

            errno = soerr ? soerr : errno;
        }

        snprintf(err, errlen, "cannot connect: %s", strerror(errno));
        close(fd);
        fd = -1;
    }

    freeaddrinfo(res);

    return fd;
}


typedef struct {
    int       fd;
    SSL_CTX  *ctx;
    SSL      *ssl;
    int64_t   deadline;
} cd_conn_t;


/* 1 done, 0 timeout or error */
static int
cd_tls_wait(cd_conn_t *cn, int rc)
{
    switch (SSL_get_error(cn->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        return cd_wait_fd(cn->fd, POLLIN, cn->deadline) > 0;
    case SSL_ERROR_WANT_WRITE:
        return cd_wait_fd(cn->fd, POLLOUT, cn->deadline) > 0;
    default:
        return 0;
    }
}


static int
cd_tls_start(cd_conn_t *cn, const cd_url_t *u, char *err, size_t errlen)
{
    int            rc, is_ip;
    unsigned char  addr[16];

    cn->ctx = SSL_CTX_new(TLS_client_method());
    if (cn->ctx == NULL) {
        snprintf(err, errlen, "TLS: out of memory");
        return CD_ERROR;
    }

    SSL_CTX_set_min_proto_version(cn->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(cn->ctx, SSL_VERIFY_PEER, NULL);

    if (SSL_CTX_set_default_verify_paths(cn->ctx) != 1) {
        snprintf(err, errlen, "TLS: no trusted certificates");
        return CD_ERROR;
    }

    cn->ssl = SSL_new(cn->ctx);
    is_ip = inet_pton(AF_INET, u->host, addr) == 1
            || inet_pton(AF_INET6, u->host, addr) == 1;

    /* an address is checked against the certificate's IP names */
    if (cn->ssl == NULL
        || SSL_set_fd(cn->ssl, cn->fd) != 1
        || (is_ip
            ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(cn->ssl),
                                            u->host) != 1
            : (SSL_set1_host(cn->ssl, u->host) != 1
               || SSL_set_tlsext_host_name(cn->ssl, u->host) != 1)))
    {
        snprintf(err, errlen, "TLS: cannot set up the connection");
        return CD_ERROR;
    }

    for ( ;; ) {
        ERR_clear_error();
        rc = SSL_connect(cn->ssl);

        if (rc == 1) {
            return CD_OK;
        }

        if (!cd_tls_wait(cn, rc)) {
            long  verify = SSL_get_verify_result(cn->ssl);

            if (verify != X509_V_OK) {
                snprintf(err, errlen, "TLS: certificate: %s",
                         X509_verify_cert_error_string(verify));
            } else {
                snprintf(err, errlen, "TLS handshake failed or timed out");
            }

            return CD_ERROR;
        }
    }
}


static int
cd_conn_write(cd_conn_t *cn, const char *buf, size_t len)
{
    int      rc;
    ssize_t  n;

    while (len > 0) {
        if (cn->ssl != NULL) {
            ERR_clear_error();
            rc = SSL_write(cn->ssl, buf, len > 65536 ? 65536 : (int) len);

            if (rc <= 0) {
                if (!cd_tls_wait(cn, rc)) {
                    return CD_ERROR;
                }

                continue;
            }

            n = rc;

        } else {
            n = send(cn->fd, buf, len, MSG_NOSIGNAL);

            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }

                if (errno != EAGAIN && errno != EWOULDBLOCK) {
                    return CD_ERROR;
                }

                if (cd_wait_fd(cn->fd, POLLOUT, cn->deadline) <= 0) {
                    return CD_ERROR;
                }

                continue;
            }
        }

        buf += n;
        len -= (size_t) n;
    }

    return CD_OK;
}


/* bytes read, 0 at end of stream, -1 on error or timeout */
static ssize_t
cd_conn_read(cd_conn_t *cn, char *buf, size_t len)
{
    int      rc;
    ssize_t  n;

    for ( ;; ) {
        if (cn->ssl != NULL) {
            ERR_clear_error();
            rc = SSL_read(cn->ssl, buf, (int) len);

            if (rc > 0) {
                return rc;
            }

            if (SSL_get_error(cn->ssl, rc) == SSL_ERROR_ZERO_RETURN) {
                return 0;
            }

            if (!cd_tls_wait(cn, rc)) {
                return -1;
            }

            continue;
        }

        n = recv(cn->fd, buf, len, 0);

        if (n >= 0) {
            return n;
        }

        if (errno == EINTR) {
            continue;
        }

        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            return -1;
        }

        if (cd_wait_fd(cn->fd, POLLIN, cn->deadline) <= 0) {
            return -1;
        }
    }
}


int
cd_webhook_post(const cd_url_t *u, const char *body, size_t len,
    unsigned timeout_ms, int *status, char *err, size_t errlen)
{
    int         rc, n;
    char        head[CD_URL_MAX + 1024], auth[512], hostport[300];
    char        resp[512];
    size_t      got;
    ssize_t     r;
    cd_conn_t   cn;

    *status = 0;
    rc = CD_ERROR;

    memset(&cn, 0, sizeof(cn));
    cn.deadline = cd_clock_ms(CLOCK_MONOTONIC) + timeout_ms;

    auth[0] = '\0';

    if (u->userinfo[0] != '\0') {
        char    plain[sizeof(u->userinfo)];
        char    b64[4 * ((sizeof(u->userinfo) + 2) / 3) + 1];
        size_t  n_plain;

        /* "user:p%40ss" is sent as "user:p@ss" */
        n_plain = cd_url_pct_decode(u->userinfo, plain, sizeof(plain));
        EVP_EncodeBlock((unsigned char *) b64, (unsigned char *) plain,
                        (int) n_plain);
        snprintf(auth, sizeof(auth), "Authorization: Basic %s\r\n", b64);
        OPENSSL_cleanse(plain, sizeof(plain));
        OPENSSL_cleanse(b64, sizeof(b64));
    }

    if (u->explicit_port) {
        snprintf(hostport, sizeof(hostport), "%s%s%s:%u",
                 u->ipv6 ? "[" : "", u->host, u->ipv6 ? "]" : "",
                 (unsigned) u->port);
    } else {
        snprintf(hostport, sizeof(hostport), "%s%s%s", u->ipv6 ? "[" : "",
                 u->host, u->ipv6 ? "]" : "");
    }

    n = snprintf(head, sizeof(head),
                 "POST %s HTTP/1.1\r\n"
                 "Host: %s\r\n"
                 "User-Agent: spendpol-controld\r\n"
                 "Content-Type: application/json\r\n"
                 "Content-Length: %zu\r\n"
                 "%s"
                 "Connection: close\r\n"
                 "\r\n", u->path, hostport, len, auth);

    OPENSSL_cleanse(auth, sizeof(auth));

    if (n < 0 || (size_t) n >= sizeof(head)) {
        snprintf(err, errlen, "request head too long");
        OPENSSL_cleanse(head, sizeof(head));
        return CD_ERROR;
    }

    cn.fd = cd_connect(u, cn.deadline, err, errlen);
    if (cn.fd < 0) {
        OPENSSL_cleanse(head, sizeof(head));
        return CD_ERROR;
    }

    if (u->https && cd_tls_start(&cn, u, err, errlen) != CD_OK) {
        goto done;
    }

    if (cd_conn_write(&cn, head, (size_t) n) != CD_OK
        || cd_conn_write(&cn, body, len) != CD_OK)
    {
        snprintf(err, errlen, "cannot send the request (timed out or "
                 "connection closed)");
        goto done;
    }

    got = 0;

    while (got < 12) {
        r = cd_conn_read(&cn, resp + got, sizeof(resp) - 1 - got);

        if (r <= 0) {
            snprintf(err, errlen, r == 0 ? "connection closed before the "
                     "status line" : "no answer (timed out or reset)");
            goto done;
        }

        got += (size_t) r;
    }

    if (cd_http_status_parse(resp, got, status) != CD_OK) {
        snprintf(err, errlen, "not an HTTP/1.x answer");
        goto done;
    }

    rc = CD_OK;

done:

    OPENSSL_cleanse(head, sizeof(head));

    if (cn.ssl != NULL) {
        SSL_free(cn.ssl);
    }

    if (cn.ctx != NULL) {
        SSL_CTX_free(cn.ctx);
    }

    close(cn.fd);

    return rc;
}
