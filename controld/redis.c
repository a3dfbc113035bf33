/*
 * Redis: the URL, connections, and the health check (connected lazily,
 * reconnected on the next check after a failure, never fatal). Rate
 * limit counts across nodes are in rates.c.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <netdb.h>
#include <sys/socket.h>

#include <hiredis/hiredis.h>

#include "controld.h"


#define CD_REDIS_SUBJECT  "redis"


int
cd_redis_parse_url(const char *url, char **host, int *port, int *db,
    char **user, char **password)
{
    long         n;
    char        *end;
    const char  *p, *at, *colon, *slash, *host_end;

    *host = NULL;
    *user = NULL;
    *password = NULL;
    *port = 6379;
    *db = 0;

    if (strncmp(url, "redis://", 8) != 0) {
        return CD_ERROR;
    }

    p = url + 8;
    slash = strchr(p, '/');
    at = strchr(p, '@');

    if (at != NULL && (slash == NULL || at < slash)) {
        colon = memchr(p, ':', at - p);

        if (colon != NULL) {
            if (colon > p) {
                *user = strndup(p, colon - p);
            }

            *password = strndup(colon + 1, at - colon - 1);

        } else {
            *password = strndup(p, at - p);
        }

        p = at + 1;
    }

    host_end = slash ? slash : p + strlen(p);
    colon = memchr(p, ':', host_end - p);

    if (colon != NULL) {
        errno = 0;
        n = strtol(colon + 1, &end, 10);

        if (errno != 0 || end != host_end || n < 1 || n > 65535) {
            goto failed;
        }

        *port = (int) n;
        host_end = colon;
    }

    if (host_end == p) {
        goto failed;
    }

    *host = strndup(p, host_end - p);
    if (*host == NULL) {
        goto failed;
    }

    if (slash != NULL && slash[1] != '\0') {
        errno = 0;
        n = strtol(slash + 1, &end, 10);

        if (errno != 0 || *end != '\0' || n < 0 || n > 1000000) {
            goto failed;
        }

        *db = (int) n;
    }

    return CD_OK;

failed:

    free(*host);
    free(*user);
    free(*password);
    *host = NULL;
    *user = NULL;
    *password = NULL;

    return CD_ERROR;
}


int
cd_redis_init(cd_redis_t *rd, const char *url)
{
    memset(rd, 0, sizeof(*rd));
    pthread_mutex_init(&rd->mutex, NULL);

    if (url == NULL) {
        return CD_OK;
    }

    if (cd_redis_parse_url(url, &rd->host, &rd->port, &rd->db, &rd->user,
                           &rd->password) != CD_OK)
    {
        return CD_ERROR;
    }

    rd->enabled = 1;

    return CD_OK;
}


void
cd_redis_close(cd_redis_t *rd)
{
    if (rd->ctx != NULL) {
        redisFree(rd->ctx);
    }

    free(rd->host);
    free(rd->user);
    free(rd->password);
    pthread_mutex_destroy(&rd->mutex);
    memset(rd, 0, sizeof(*rd));
}


/*
 * The host as a numeric address for the module's cache tier (a worker
 * must not wait on DNS): resolved here, on controld's own thread, each
 * time a snapshot is built. When it does not resolve, the last address
 * it resolved to stays (logged once until it resolves again); CD_ERROR
 * only when it never did, which leaves the tier off.
 */
int
cd_redis_resolve(cd_redis_t *rd, char *out, size_t len)
{
    int               rc;
    struct addrinfo   hints, *res;
    static int        failed;
    static char       last[NI_MAXHOST];

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;

    rc = getaddrinfo(rd->host, NULL, &hints, &res);

    if (rc == 0) {
        rc = getnameinfo(res->ai_addr, res->ai_addrlen, out, len, NULL, 0,
                         NI_NUMERICHOST);
        freeaddrinfo(res);
    }

    if (rc != 0) {
        if (!failed) {
            cd_log_warn(CD_REDIS_SUBJECT, "cannot resolve %s (%s): %s",
                        rd->host, gai_strerror(rc),
                        last[0] ? "the response cache's Redis tier keeps "
                                  "its last address"
                                : "the response cache has no Redis tier "
                                  "until it resolves");
        }

        failed = 1;

        if (last[0] == '\0' || strlen(last) >= len) {
            return CD_ERROR;
        }

        memcpy(out, last, strlen(last) + 1);

        return CD_OK;
    }

    failed = 0;
    snprintf(last, sizeof(last), "%s", out);

    return CD_OK;
}


static int
cd_redis_command_ok(redisContext *ctx, const char *expect, const char *fmt,
    ...)
{
    int          ok;
    va_list      args;
    redisReply  *reply;

    va_start(args, fmt);
    reply = redisvCommand(ctx, fmt, args);
    va_end(args);

    if (reply == NULL) {
        return 0;
    }

    ok = reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, expect) == 0;
    freeReplyObject(reply);

    return ok;
}


void *
cd_redis_connect(cd_redis_t *rd, unsigned timeout_ms)
{
    redisContext    *ctx;
    struct timeval   timeout;

    timeout.tv_sec = timeout_ms / 1000;
    timeout.tv_usec = (timeout_ms % 1000) * 1000;

    ctx = redisConnectWithTimeout(rd->host, rd->port, timeout);

    if (ctx == NULL || ctx->err) {
        cd_log_debug(CD_REDIS_SUBJECT, "cannot connect to %s:%d: %s",
                     rd->host, rd->port, ctx ? ctx->errstr : "no memory");
        goto failed;
    }

    if (redisSetTimeout(ctx, timeout) != REDIS_OK) {
        goto failed;
    }

    if (rd->password != NULL
        && !(rd->user
             ? cd_redis_command_ok(ctx, "OK", "AUTH %s %s", rd->user,
                                   rd->password)
             : cd_redis_command_ok(ctx, "OK", "AUTH %s", rd->password)))
    {
        cd_log_warn(CD_REDIS_SUBJECT, "authentication to %s:%d failed",
                    rd->host, rd->port);
        goto failed;
    }

    if (rd->db != 0 && !cd_redis_command_ok(ctx, "OK", "SELECT %d", rd->db)) {
        goto failed;
    }

    return ctx;

failed:

    if (ctx != NULL) {
        redisFree(ctx);
    }

    return NULL;
}


const char *
cd_redis_health(cd_redis_t *rd)
{
    int  ok;

    if (!rd->enabled) {
        return "disabled";
    }

    pthread_mutex_lock(&rd->mutex);

    if (rd->ctx == NULL) {
        rd->ctx = cd_redis_connect(rd, 500);
    }

    ok = rd->ctx != NULL && cd_redis_command_ok(rd->ctx, "PONG", "PING");

    if (!ok && rd->ctx != NULL) {
        redisFree(rd->ctx);
        rd->ctx = NULL;
    }

    pthread_mutex_unlock(&rd->mutex);

    return ok ? "ok" : "down";
}
