
/*
 * Copyright (C) Spendpol
 *
 * The response cache's second tier: entries are written to Redis as well
 * and looked up there after a miss in the zone, so the nodes of one
 * deployment share their hits. controld publishes REDIS_URL's parts in
 * the snapshot (SP_SETTING_REDIS_*, the host already resolved); without
 * them there is no tier, nor with "spendpol_cache_redis off".
 *
 * Each worker keeps one connection, made and used with hiredis's
 * asynchronous API on nginx's own events (level-triggered, as hiredis's
 * adapters expect), so no call waits. A lookup parks its request for at
 * most spendpol_cache_redis_timeout; whatever comes first, the answer or
 * the timer, wakes it. Redis never turns a working request into an error:
 * while it is unreachable, slow or refusing, every lookup is a miss at
 * once (logged once per outage), stores are dropped, and a new connection
 * is tried at most once a second.
 *
 * A value is the entry as the zone keeps it: "SPC1", the time it was
 * stored and its cost (8 bytes each, big-endian), the lengths of its
 * content type and body (4 bytes each), then both. Its Redis key is
 * "spendpol:cache:v1:" and the hex of the entry's SHA-256, and it expires
 * with the entry (PX).
 */


#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_http_spendpol_module.h"


#define NGX_HTTP_SPENDPOL_REDIS_PREFIX   "spendpol:cache:v1:"
#define NGX_HTTP_SPENDPOL_REDIS_NAME_LEN                                      \
    (sizeof(NGX_HTTP_SPENDPOL_REDIS_PREFIX) - 1 + 2 * SP_CACHE_KEY_LEN)

/* ms between connection attempts, and the most one may take */
#define NGX_HTTP_SPENDPOL_REDIS_RETRY    1000
#define NGX_HTTP_SPENDPOL_REDIS_CONNECT  1000

/* what a worker lets wait on a slow Redis: lookups, and bytes of stores */
#define NGX_HTTP_SPENDPOL_REDIS_GETS     1024
#define NGX_HTTP_SPENDPOL_REDIS_OUT      (8 * 1024 * 1024)

/* a connection with commands in flight and no reply for this long is
   given up on (a partition without a reset, a stuck server) */
#define NGX_HTTP_SPENDPOL_REDIS_STALE    5000


/* a lookup in flight: outlives its request when the timer won */
typedef struct {
    ngx_http_request_t          *request;   /* NULL: no longer waited for */
    ngx_http_spendpol_ctx_t     *ctx;       /* the request's, when it was
                                               sent */
} ngx_http_spendpol_redis_get_t;


/* per worker */
typedef struct {
    redisAsyncContext           *ac;
    ngx_uint_t                   connected;
    ngx_uint_t                   known;      /* settings read from: */
    uint64_t                     generation;  /* this snapshot */
    ngx_uint_t                   configured;
    char                         host[64];
    int                          port;
    int                          db;
    char                         user[256];
    char                         password[1024];
    ngx_msec_t                   retry_at;
    ngx_uint_t                   down_logged;
    ngx_uint_t                   slow_logged;
    ngx_uint_t                   gets;        /* lookups in flight */
    size_t                       out;         /* bytes of stores in flight */
    ngx_uint_t                   setup;       /* AUTH, SELECT unanswered */
    ngx_msec_t                   heard;       /* the last reply, or the
                                                 first command after
                                                 none was in flight */
    ngx_event_t                  connect_timer;
} ngx_http_spendpol_redis_t;


static void ngx_http_spendpol_redis_settings(
    ngx_http_spendpol_main_conf_t *smcf, ngx_log_t *log);
static ngx_int_t ngx_http_spendpol_redis_setting(
    ngx_http_spendpol_main_conf_t *smcf, const char *name, char *buf,
    size_t size);
static void ngx_http_spendpol_redis_connect(ngx_log_t *log);
static void ngx_http_spendpol_redis_close(void);
static void ngx_http_spendpol_redis_down(ngx_log_t *log, const char *why);
static void ngx_http_spendpol_redis_connected(const redisAsyncContext *ac,
    int status);
static void ngx_http_spendpol_redis_disconnected(const redisAsyncContext *ac,
    int status);
static void ngx_http_spendpol_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_spendpol_redis_checked(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_spendpol_redis_got(redisAsyncContext *ac, void *reply,
    void *privdata);
static void ngx_http_spendpol_redis_stored(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_spendpol_redis_sent(ngx_http_spendpol_redis_t *rd);
static void ngx_http_spendpol_redis_usable(ngx_http_spendpol_redis_t *rd);
static void ngx_http_spendpol_redis_detach(void *data);
static void ngx_http_spendpol_redis_name(u_char *key, u_char *name);
static void ngx_http_spendpol_redis_read(ngx_event_t *ev);
static void ngx_http_spendpol_redis_write(ngx_event_t *ev);
static void ngx_http_spendpol_redis_add_read(void *data);
static void ngx_http_spendpol_redis_del_read(void *data);
static void ngx_http_spendpol_redis_add_write(void *data);
static void ngx_http_spendpol_redis_del_write(void *data);
static void ngx_http_spendpol_redis_cleanup(void *data);


static ngx_http_spendpol_redis_t  ngx_http_spendpol_redis;


/*
 * After a miss in the zone: GET the entry. NGX_AGAIN when the request is
 * to wait for it (the handler's cache wake goes on), NGX_DECLINED
 * when there is nothing to wait for (no tier, or it is down: a miss).
 */
ngx_int_t
ngx_http_spendpol_redis_lookup(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    u_char                          name[NGX_HTTP_SPENDPOL_REDIS_NAME_LEN];
    ngx_pool_cleanup_t             *cln;
    ngx_http_spendpol_redis_t      *rd;
    ngx_http_spendpol_redis_get_t  *get;
    ngx_http_spendpol_main_conf_t  *smcf;

    rd = &ngx_http_spendpol_redis;
    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (!ngx_http_spendpol_redis_ready(smcf, r->connection->log)
        || rd->gets >= NGX_HTTP_SPENDPOL_REDIS_GETS)
    {
        return NGX_DECLINED;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_DECLINED;
    }

    get = ngx_alloc(sizeof(ngx_http_spendpol_redis_get_t),
                    r->connection->log);
    if (get == NULL) {
        return NGX_DECLINED;
    }

    get->request = r;
    get->ctx = ctx;

    ngx_http_spendpol_redis_name(ctx->cache_key, name);

    if (redisAsyncCommand(rd->ac, ngx_http_spendpol_redis_got, get,
                          "GET %b", name, sizeof(name))
        != REDIS_OK)
    {
        ngx_free(get);
        return NGX_DECLINED;
    }

    ngx_http_spendpol_redis_sent(rd);
    rd->gets++;

    ctx->cache_redis = get;
    cln->handler = ngx_http_spendpol_redis_detach;
    cln->data = ctx;

    return NGX_AGAIN;
}


/*
 * The timer won: the request goes on as a miss, and the answer, when it
 * comes, is dropped.
 */
void
ngx_http_spendpol_redis_abandon(ngx_http_spendpol_ctx_t *ctx)
{
    ngx_http_spendpol_redis_get_t  *get;

    get = ctx->cache_redis;

    if (get == NULL) {
        return;
    }

    if (!ngx_http_spendpol_redis.slow_logged) {
        ngx_http_spendpol_redis.slow_logged = 1;

        ngx_log_error(NGX_LOG_WARN, get->request->connection->log, 0,
                      "spendpol: Redis (the cache's second tier) did not "
                      "answer a lookup within spendpol_cache_redis_timeout; "
                      "such lookups are misses (logged once until it "
                      "answers in time again)");
    }

    get->request = NULL;
    ctx->cache_redis = NULL;
}


/*
 * A stored entry goes to Redis too, without waiting for the reply: the
 * value (see the top of this file) expires with the entry.
 */
void
ngx_http_spendpol_redis_store(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, int64_t ttl_ms, u_char *value,
    size_t len)
{
    u_char                          name[NGX_HTTP_SPENDPOL_REDIS_NAME_LEN];
    ngx_http_spendpol_redis_t      *rd;
    ngx_http_spendpol_main_conf_t  *smcf;

    rd = &ngx_http_spendpol_redis;
    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (!ngx_http_spendpol_redis_ready(smcf, r->connection->log)
        || rd->out + len > NGX_HTTP_SPENDPOL_REDIS_OUT
        || ttl_ms <= 0)
    {
        return;
    }

    ngx_http_spendpol_redis_name(ctx->cache_key, name);

    if (redisAsyncCommand(rd->ac, ngx_http_spendpol_redis_stored,
                          (void *) (uintptr_t) len, "SET %b %b PX %lld",
                          name, sizeof(name), value, len,
                          (long long) ttl_ms)
        == REDIS_OK)
    {
        ngx_http_spendpol_redis_sent(rd);
        rd->out += len;
    }
}


void
ngx_http_spendpol_redis_exit_worker(void)
{
    ngx_http_spendpol_redis_close();
}


/* 1 when lookups and stores can go to Redis now */
ngx_uint_t
ngx_http_spendpol_redis_ready(ngx_http_spendpol_main_conf_t *smcf,
    ngx_log_t *log)
{
    ngx_http_spendpol_redis_t  *rd;

    rd = &ngx_http_spendpol_redis;

    if (!smcf->cache_redis) {
        return 0;
    }

    ngx_http_spendpol_redis_settings(smcf, log);

    if (!rd->configured) {
        return 0;
    }

    if (rd->connected
        && (rd->gets || rd->out)
        && ngx_current_msec - rd->heard > NGX_HTTP_SPENDPOL_REDIS_STALE)
    {
        /* its callbacks give back what was in flight */
        ngx_http_spendpol_redis_down(log, "no reply for 5 s; reconnecting");
        ngx_http_spendpol_redis_close();
        rd->retry_at = ngx_current_msec + NGX_HTTP_SPENDPOL_REDIS_RETRY;
        return 0;
    }

    if (rd->connected) {
        return 1;
    }

    if (rd->ac == NULL
        && (ngx_msec_int_t) (ngx_current_msec - rd->retry_at) >= 0)
    {
        ngx_http_spendpol_redis_connect(log);
    }

    /* a lookup never waits for a connection to be made */
    return 0;
}


/* the snapshot's settings, read again when a new snapshot is loaded */
static void
ngx_http_spendpol_redis_settings(ngx_http_spendpol_main_conf_t *smcf,
    ngx_log_t *log)
{
    int                         port, db;
    char                        host[64], num[16], user[256];
    char                        password[1024];
    ngx_int_t                   ok;
    ngx_http_spendpol_redis_t  *rd;

    rd = &ngx_http_spendpol_redis;

    if (smcf->snapshot_map == NULL
        || (rd->known
            && rd->generation == smcf->snapshot.header->generation))
    {
        return;
    }

    rd->known = 1;
    rd->generation = smcf->snapshot.header->generation;

    ok = ngx_http_spendpol_redis_setting(smcf, SP_SETTING_REDIS_HOST, host,
                                         sizeof(host));
    port = 0;
    db = 0;

    if (ok == NGX_OK) {
        ok = ngx_http_spendpol_redis_setting(smcf, SP_SETTING_REDIS_PORT,
                                             num, sizeof(num));
        port = ngx_atoi((u_char *) num, ngx_strlen(num));
    }

    if (ok == NGX_OK) {
        ok = ngx_http_spendpol_redis_setting(smcf, SP_SETTING_REDIS_DB,
                                             num, sizeof(num));
        db = num[0] ? ngx_atoi((u_char *) num, ngx_strlen(num)) : 0;
    }

    if (ok == NGX_OK) {
        ok = ngx_http_spendpol_redis_setting(smcf, SP_SETTING_REDIS_USER,
                                             user, sizeof(user));
    }

    if (ok == NGX_OK) {
        ok = ngx_http_spendpol_redis_setting(smcf, SP_SETTING_REDIS_PASSWORD,
                                             password, sizeof(password));
    }

    if (ok == NGX_OK && host[0] == '\0') {
        /* no REDIS_URL: no tier */
        ok = NGX_DECLINED;

    } else if (ok == NGX_OK && (port < 1 || port > 65535 || db < 0)) {
        ok = NGX_ERROR;
    }

    if (ok == NGX_ERROR) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "spendpol: snapshot %uL: the cache's Redis settings "
                      "are not usable; the cache has no Redis tier",
                      rd->generation);
    }

    if (ok != NGX_OK) {
        if (rd->configured) {
            ngx_http_spendpol_redis_close();
            rd->configured = 0;
        }

        return;
    }

    if (rd->configured
        && ngx_strcmp(host, rd->host) == 0
        && port == rd->port
        && db == rd->db
        && ngx_strcmp(user, rd->user) == 0
        && ngx_strcmp(password, rd->password) == 0)
    {
        return;
    }

    /* a new Redis: the next lookup connects to it */
    ngx_http_spendpol_redis_close();

    ngx_memcpy(rd->host, host, sizeof(host));
    ngx_memcpy(rd->user, user, sizeof(user));
    ngx_memcpy(rd->password, password, sizeof(password));
    rd->port = port;
    rd->db = db;
    rd->configured = 1;
    rd->retry_at = ngx_current_msec;
    rd->down_logged = 0;
}


/*
 * A setting into buf as a C string ("" when absent): NGX_OK, or
 * NGX_ERROR when it does not fit or holds a NUL.
 */
static ngx_int_t
ngx_http_spendpol_redis_setting(ngx_http_spendpol_main_conf_t *smcf,
    const char *name, char *buf, size_t size)
{
    sp_str_t                      n, value;
    const sp_snapshot_setting_t  *setting;

    n.data = (char *) name;
    n.len = ngx_strlen(name);

    buf[0] = '\0';

    setting = sp_snapshot_find_setting(&smcf->snapshot, n);

    if (setting == NULL) {
        return NGX_OK;
    }

    value = sp_snapshot_str(&smcf->snapshot, setting->value);

    if (value.len >= size || ngx_strlchr((u_char *) value.data,
                                         (u_char *) value.data + value.len,
                                         '\0'))
    {
        return NGX_ERROR;
    }

    ngx_memcpy(buf, value.data, value.len);
    buf[value.len] = '\0';

    return NGX_OK;
}


/*
 * A connection, made without waiting: hiredis connects a non-blocking
 * socket to the numeric address; the connection is usable once its
 * callback says so, within NGX_HTTP_SPENDPOL_REDIS_CONNECT ms or never.
 * AUTH and SELECT are queued first, so they precede every lookup.
 */
static void
ngx_http_spendpol_redis_connect(ngx_log_t *log)
{
    redisAsyncContext          *ac;
    ngx_connection_t           *c;
    ngx_http_spendpol_redis_t  *rd;

    rd = &ngx_http_spendpol_redis;
    rd->retry_at = ngx_current_msec + NGX_HTTP_SPENDPOL_REDIS_RETRY;

    ac = redisAsyncConnect(rd->host, rd->port);

    if (ac == NULL) {
        ngx_http_spendpol_redis_down(log, "no memory");
        return;
    }

    if (ac->err) {
        ngx_http_spendpol_redis_down(log, ac->errstr);
        redisAsyncFree(ac);
        return;
    }

    c = ngx_get_connection(ac->c.fd, ngx_cycle->log);
    if (c == NULL) {
        ngx_http_spendpol_redis_down(log, "no free connection");
        redisAsyncFree(ac);
        return;
    }

    c->data = ac;
    c->log = ngx_cycle->log;
    c->read->handler = ngx_http_spendpol_redis_read;
    c->write->handler = ngx_http_spendpol_redis_write;
    c->read->log = c->log;
    c->write->log = c->log;

    ac->ev.data = c;
    ac->ev.addRead = ngx_http_spendpol_redis_add_read;
    ac->ev.delRead = ngx_http_spendpol_redis_del_read;
    ac->ev.addWrite = ngx_http_spendpol_redis_add_write;
    ac->ev.delWrite = ngx_http_spendpol_redis_del_write;
    ac->ev.cleanup = ngx_http_spendpol_redis_cleanup;

    rd->ac = ac;
    rd->connected = 0;

    /* after the adapter: this waits for the socket to become writable */
    redisAsyncSetConnectCallback(ac, ngx_http_spendpol_redis_connected);
    redisAsyncSetDisconnectCallback(ac, ngx_http_spendpol_redis_disconnected);

    /* usable once AUTH and SELECT said OK: nothing goes to another db */
    rd->setup = (rd->password[0] ? 1 : 0) + (rd->db ? 1 : 0);

    if (rd->password[0]) {
        if (rd->user[0]) {
            (void) redisAsyncCommand(ac, ngx_http_spendpol_redis_checked,
                                     (void *) "AUTH", "AUTH %s %s",
                                     rd->user, rd->password);

        } else {
            (void) redisAsyncCommand(ac, ngx_http_spendpol_redis_checked,
                                     (void *) "AUTH", "AUTH %s",
                                     rd->password);
        }
    }

    if (rd->db) {
        (void) redisAsyncCommand(ac, ngx_http_spendpol_redis_checked,
                                 (void *) "SELECT", "SELECT %d", rd->db);
    }

    rd->connect_timer.handler = ngx_http_spendpol_redis_connect_timeout;
    rd->connect_timer.log = ngx_cycle->log;
    rd->connect_timer.data = rd;
    rd->connect_timer.cancelable = 1;

    ngx_add_timer(&rd->connect_timer, NGX_HTTP_SPENDPOL_REDIS_CONNECT);
}


/* the connection goes; lookups in flight are answered as misses */
static void
ngx_http_spendpol_redis_close(void)
{
    redisAsyncContext          *ac;
    ngx_http_spendpol_redis_t  *rd;

    rd = &ngx_http_spendpol_redis;

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    ac = rd->ac;
    rd->ac = NULL;
    rd->connected = 0;

    if (ac) {
        redisAsyncFree(ac);
    }
}


/* once per outage: the address, never the credentials */
static void
ngx_http_spendpol_redis_down(ngx_log_t *log, const char *why)
{
    ngx_http_spendpol_redis_t  *rd;

    rd = &ngx_http_spendpol_redis;

    if (rd->down_logged) {
        return;
    }

    rd->down_logged = 1;

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "spendpol: Redis at %s:%d (the cache's second tier) is "
                  "unreachable: %s; lookups are misses and a connection is "
                  "tried again each second (logged once until it is back)",
                  rd->host, rd->port, why);
}


static void
ngx_http_spendpol_redis_connected(const redisAsyncContext *ac, int status)
{
    ngx_http_spendpol_redis_t  *rd;

    rd = &ngx_http_spendpol_redis;

    if (ac != rd->ac) {
        return;
    }

    if (status != REDIS_OK) {
        if (rd->connect_timer.timer_set) {
            ngx_del_timer(&rd->connect_timer);
        }

        /* hiredis frees the context after this */
        ngx_http_spendpol_redis_down(ngx_cycle->log, ac->errstr);
        rd->ac = NULL;
        rd->connected = 0;
        return;
    }

    (void) redisEnableKeepAlive(&((redisAsyncContext *) ac)->c);

    if (rd->setup == 0) {
        ngx_http_spendpol_redis_usable(rd);
    }
}


static void
ngx_http_spendpol_redis_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_http_spendpol_redis_t  *rd;

    rd = &ngx_http_spendpol_redis;

    if (ac != rd->ac) {
        return;
    }

    if (status != REDIS_OK) {
        ngx_http_spendpol_redis_down(ngx_cycle->log, ac->errstr);
    }

    rd->ac = NULL;
    rd->connected = 0;
    rd->retry_at = ngx_current_msec + NGX_HTTP_SPENDPOL_REDIS_RETRY;
}


static void
ngx_http_spendpol_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_spendpol_redis_t  *rd;

    rd = ev->data;

    if (rd->ac == NULL || rd->connected) {
        return;
    }

    ngx_http_spendpol_redis_down(ev->log, "not connected (or AUTH and "
                                 "SELECT not answered) within 1 s");
    ngx_http_spendpol_redis_close();
    rd->retry_at = ngx_current_msec + NGX_HTTP_SPENDPOL_REDIS_RETRY;
}


/* AUTH or SELECT: refused, the connection goes (and is tried again) */
static void
ngx_http_spendpol_redis_checked(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    redisReply                 *rr = reply;
    ngx_http_spendpol_redis_t  *rd;

    rd = &ngx_http_spendpol_redis;

    if (rr == NULL) {
        return;
    }

    if (rr->type != REDIS_REPLY_ERROR) {
        if (ac == rd->ac && rd->setup && --rd->setup == 0) {
            ngx_http_spendpol_redis_usable(rd);
        }

        return;
    }

    /* Redis's own words name no secret ("WRONGPASS invalid username...") */
    ngx_http_spendpol_redis_down(ngx_cycle->log, privdata);

    if (ac == ngx_http_spendpol_redis.ac) {
        ngx_http_spendpol_redis.ac = NULL;
        ngx_http_spendpol_redis.connected = 0;
    }

    redisAsyncFree(ac);
}


static void
ngx_http_spendpol_redis_got(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    redisReply                     *rr = reply;
    ngx_http_request_t             *r;
    ngx_http_spendpol_ctx_t        *ctx;
    ngx_http_spendpol_redis_get_t  *get;

    get = privdata;
    r = get->request;
    ctx = get->ctx;

    ngx_free(get);
    ngx_http_spendpol_redis.gets--;

    if (rr != NULL) {
        ngx_http_spendpol_redis.heard = ngx_current_msec;
        ngx_http_spendpol_redis.slow_logged = 0;
    }

    if (r == NULL) {
        /* the request went on without it, or is gone */
        return;
    }

    ctx->cache_redis = NULL;

    if (ngx_http_get_module_ctx(r, ngx_http_spendpol_module) != ctx) {
        /* the request was redirected meanwhile (an error_page): not ours */
        return;
    }

    if (rr != NULL && rr->type == REDIS_REPLY_STRING) {
        ngx_http_spendpol_cache_found(r, ctx, (u_char *) rr->str,
                                      (size_t) rr->len);

    } else if (rr != NULL && rr->type == REDIS_REPLY_ERROR) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "spendpol cache: Redis: %s", rr->str);
    }

    ngx_http_spendpol_unpark(r);
}


static void
ngx_http_spendpol_redis_stored(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    if (reply != NULL) {
        ngx_http_spendpol_redis.heard = ngx_current_msec;
    }

    ngx_http_spendpol_redis.out -= (size_t) (uintptr_t) privdata;
}


/* a command goes out: with none in flight before, its wait starts now */
static void
ngx_http_spendpol_redis_sent(ngx_http_spendpol_redis_t *rd)
{
    if (rd->gets == 0 && rd->out == 0) {
        rd->heard = ngx_current_msec;
    }
}


/* connected, and AUTH and SELECT (if any) said OK */
static void
ngx_http_spendpol_redis_usable(ngx_http_spendpol_redis_t *rd)
{
    /* the connect timer covers AUTH and SELECT too */
    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    if (rd->down_logged) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "spendpol: Redis at %s:%d (the cache's second tier) "
                      "is reachable again", rd->host, rd->port);
    }

    rd->down_logged = 0;
    rd->connected = 1;
    rd->heard = ngx_current_msec;
}


/* the request's pool goes: its lookup, if still in flight, is orphaned */
static void
ngx_http_spendpol_redis_detach(void *data)
{
    ngx_http_spendpol_ctx_t  *ctx = data;

    ngx_http_spendpol_redis_get_t  *get;

    get = ctx->cache_redis;

    if (get) {
        get->request = NULL;
        ctx->cache_redis = NULL;
    }
}


static void
ngx_http_spendpol_redis_name(u_char *key, u_char *name)
{
    u_char  *p;

    p = ngx_cpymem(name, NGX_HTTP_SPENDPOL_REDIS_PREFIX,
                   sizeof(NGX_HTTP_SPENDPOL_REDIS_PREFIX) - 1);

    ngx_hex_dump(p, key, SP_CACHE_KEY_LEN);
}


/* hiredis on nginx's events (its adapters' contract) */

static void
ngx_http_spendpol_redis_read(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    redisAsyncHandleRead(c->data);
}


static void
ngx_http_spendpol_redis_write(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    redisAsyncHandleWrite(c->data);
}


static void
ngx_http_spendpol_redis_add_read(void *data)
{
    ngx_connection_t  *c = data;

    if (!c->read->active
        && ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "spendpol: cannot watch the Redis connection");
    }
}


static void
ngx_http_spendpol_redis_del_read(void *data)
{
    ngx_connection_t  *c = data;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_spendpol_redis_add_write(void *data)
{
    ngx_connection_t  *c = data;

    if (!c->write->active
        && ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "spendpol: cannot watch the Redis connection");
    }
}


static void
ngx_http_spendpol_redis_del_write(void *data)
{
    ngx_connection_t  *c = data;

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


/*
 * hiredis frees the context (and then closes the socket): the nginx
 * connection goes first, its fd marked closed so a stale event of the
 * same epoll round is skipped.
 */
static void
ngx_http_spendpol_redis_cleanup(void *data)
{
    ngx_connection_t  *c = data;

    ngx_http_spendpol_redis_del_read(c);
    ngx_http_spendpol_redis_del_write(c);

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;
}
