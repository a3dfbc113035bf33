/*
 * Rate limits across nodes, through Redis.
 *
 * Each node's module counts requests and tokens a minute in its own
 * shared zone. For the other nodes' share, ingest pushes what this node's
 * journal lines counted, after their batch committed:
 *
 *   spendpol:rate:{window_ms}:{subject}   hash: r:{node} -> requests,
 *                                               t:{node} -> tokens
 *   spendpol:rate:{window_ms}             set of the window's subjects
 *
 * (subject: sp_rate_hash() in hex; both keys expire after three
 * windows). The spend thread reads the current window's subjects, sums
 * the other nodes' fields and stores them in the spend file's rate slots,
 * which the module adds to its own counts.
 *
 * Only subjects that have a limit are pushed (cd_rates_set_limited(),
 * from each snapshot publish), so this costs nothing for the keys without
 * one. Lines count when they reached the module's rate limit check (they have
 * a key and were not refused before it). Another node's request is seen
 * here once it finished and was ingested, and read at the next spend
 * round: that lag times the other nodes' request rate is the overshoot
 * bound (docs/budgets.md). Redis down or not configured: each node holds
 * the limits on its own, nothing else changes.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "controld.h"
#include "sp_budget.h"


#define CD_RATES_SUBJECT     "rates"
#define CD_RATES_WINDOW_MS   60000
#define CD_RATES_TTL_S       180
#define CD_RATES_RETRY_MS    5000
#define CD_RATES_KEY_MAX     96


/* codes of refusals that happen before the module's rate limit check */
static const char  *cd_rates_not_counted[] = {
    "missing_api_key", "invalid_api_key", "agent_paused", "invalid_json",
    "request_too_large", "unknown_provider", "not_found",
    "provider_not_configured", "unpriced_model", "gateway_not_ready",
    "rate_limit_exceeded", NULL
};


typedef struct {
    uint64_t  hash;
    int64_t   window_ms;
    int64_t   requests;
    int64_t   tokens;
} cd_rates_count_t;


/* the connection, (re)made at most every CD_RATES_RETRY_MS */
static redisContext *
cd_rates_context(cd_rates_conn_t *rc, cd_redis_t *rd)
{
    int64_t  now;

    if (!rd->enabled) {
        return NULL;
    }

    if (rc->ctx != NULL) {
        return rc->ctx;
    }

    now = cd_clock_ms(CLOCK_REALTIME);

    if (now - rc->failed_ms < CD_RATES_RETRY_MS) {
        return NULL;
    }

    rc->ctx = cd_redis_connect(rd, 200);

    if (rc->ctx == NULL) {
        if (!rc->down) {
            cd_log_warn(CD_RATES_SUBJECT, "redis at %s:%d is unreachable; "
                        "rate limits hold per node until it is back",
                        rd->host, rd->port);
        }

        rc->down = 1;
        rc->failed_ms = now;
        return NULL;
    }

    if (rc->down) {
        cd_log_info(CD_RATES_SUBJECT, "redis is back; rate limits are "
                    "global again");
        rc->down = 0;
    }

    return rc->ctx;
}


static void
cd_rates_fail(cd_rates_conn_t *rc, const char *what)
{
    cd_log_warn(CD_RATES_SUBJECT, "%s failed: %s", what,
                rc->ctx && ((redisContext *) rc->ctx)->err
                ? ((redisContext *) rc->ctx)->errstr : "unexpected reply");

    if (rc->ctx != NULL) {
        redisFree(rc->ctx);
        rc->ctx = NULL;
    }

    rc->down = 1;
    rc->failed_ms = cd_clock_ms(CLOCK_REALTIME);
}


void
cd_rates_close(cd_rates_conn_t *rc)
{
    if (rc->ctx != NULL) {
        redisFree(rc->ctx);
        rc->ctx = NULL;
    }
}


static int
cd_rates_counted(const sp_journal_record_t *rec)
{
    size_t  i;

    if (rec->api_key_id[0] == '\0') {
        return 0;
    }

    for (i = 0; cd_rates_not_counted[i] != NULL; i++) {
        if (strcmp(rec->error_code, cd_rates_not_counted[i]) == 0) {
            return 0;
        }
    }

    return 1;
}


static int
cd_rates_hash_cmp(const void *a, const void *b)
{
    uint64_t  x = *(const uint64_t *) a, y = *(const uint64_t *) b;

    return x < y ? -1 : x > y;
}


void
cd_rates_init(cd_app_t *app)
{
    pthread_mutex_init(&app->rates.mutex, NULL);
    app->rates.hashes = NULL;
    app->rates.n = 0;
    app->rates.known = 0;
}


void
cd_rates_destroy(cd_app_t *app)
{
    free(app->rates.hashes);
    app->rates.hashes = NULL;
    pthread_mutex_destroy(&app->rates.mutex);
}


void
cd_rates_set_limited(cd_app_t *app, uint64_t *hashes, size_t n)
{
    size_t     i, m;
    uint64_t  *old;

    qsort(hashes, n, sizeof(uint64_t), cd_rates_hash_cmp);

    for (i = 0, m = 0; i < n; i++) {
        if (m == 0 || hashes[m - 1] != hashes[i]) {
            hashes[m++] = hashes[i];
        }
    }

    pthread_mutex_lock(&app->rates.mutex);
    old = app->rates.hashes;
    app->rates.hashes = hashes;
    app->rates.n = m;
    app->rates.known = 1;
    pthread_mutex_unlock(&app->rates.mutex);

    free(old);
}


/* called with app->rates.mutex held */
static int
cd_rates_is_limited(cd_app_t *app, uint64_t hash)
{
    return !app->rates.known
           || bsearch(&hash, app->rates.hashes, app->rates.n,
                      sizeof(uint64_t), cd_rates_hash_cmp) != NULL;
}


/* adds a line's request and tokens to its subject's count */
static void
cd_rates_add(cd_app_t *app, cd_rates_count_t *counts, size_t size,
    size_t *n, const char *kind, const char *id, int64_t window_ms,
    int64_t tokens)
{
    size_t            i;
    uint64_t          hash;
    sp_str_t          s;
    cd_rates_count_t  *c;

    if (id[0] == '\0') {
        return;
    }

    s.data = (char *) id;
    s.len = strlen(id);
    hash = sp_rate_hash(kind, s);

    if (!cd_rates_is_limited(app, hash)) {
        return;
    }

    for (i = (size_t) (hash ^ (uint64_t) window_ms) % size; ;
         i = (i + 1) % size)
    {
        c = &counts[i];

        if (c->hash == 0) {
            c->hash = hash;
            c->window_ms = window_ms;
            (*n)++;
            break;
        }

        if (c->hash == hash && c->window_ms == window_ms) {
            break;
        }
    }

    c->requests++;
    c->tokens += tokens;
}


void
cd_rates_push(cd_app_t *app, cd_rates_conn_t *rc,
    const sp_journal_record_t *records, size_t count)
{
    int                 ok;
    char                set[CD_RATES_KEY_MAX];
    char                key[CD_RATES_KEY_MAX + 24];
    char                rfield[CD_ID_MAX + 2], tfield[CD_ID_MAX + 2];
    char                member[24];
    size_t              i, n, size, queued;
    int64_t             now, oldest, window, tokens;
    redisReply         *reply;
    redisContext       *ctx;
    cd_rates_count_t   *counts;
    const sp_journal_record_t  *rec;

    ctx = cd_rates_context(rc, &app->redis);
    if (ctx == NULL || count == 0) {
        return;
    }

    /* key, agent and organisation of each line, open addressing */
    size = count * 6 + 1;
    counts = calloc(size, sizeof(cd_rates_count_t));
    if (counts == NULL) {
        return;
    }

    now = cd_clock_ms(CLOCK_REALTIME);
    oldest = now - now % CD_RATES_WINDOW_MS - CD_RATES_WINDOW_MS;
    n = 0;

    pthread_mutex_lock(&app->rates.mutex);

    for (i = 0; i < count; i++) {
        rec = &records[i];

        /* only the current and the previous window still matter */
        if (rec->ts_ms < oldest || !cd_rates_counted(rec)) {
            continue;
        }

        window = rec->ts_ms - rec->ts_ms % CD_RATES_WINDOW_MS;
        tokens = rec->input_tokens + rec->output_tokens;

        if (tokens < 0) {
            tokens = 0;
        }

        cd_rates_add(app, counts, size, &n, "key", rec->api_key_id, window,
                     tokens);
        cd_rates_add(app, counts, size, &n, "agent", rec->agent_id, window,
                     tokens);
        cd_rates_add(app, counts, size, &n, "org", rec->org_id, window,
                     tokens);
    }

    pthread_mutex_unlock(&app->rates.mutex);

    snprintf(rfield, sizeof(rfield), "r:%s", app->config.node_id);
    snprintf(tfield, sizeof(tfield), "t:%s", app->config.node_id);
    queued = 0;

    for (i = 0; i < size && n > 0; i++) {
        if (counts[i].hash == 0) {
            continue;
        }

        snprintf(member, sizeof(member), "%016llx",
                 (unsigned long long) counts[i].hash);
        snprintf(set, sizeof(set), "spendpol:rate:%lld",
                 (long long) counts[i].window_ms);
        snprintf(key, sizeof(key), "%s:%s", set, member);

        redisAppendCommand(ctx, "HINCRBY %s %s %lld", key, rfield,
                           (long long) counts[i].requests);
        redisAppendCommand(ctx, "HINCRBY %s %s %lld", key, tfield,
                           (long long) counts[i].tokens);
        redisAppendCommand(ctx, "EXPIRE %s %d", key, CD_RATES_TTL_S);
        redisAppendCommand(ctx, "SADD %s %s", set, member);
        redisAppendCommand(ctx, "EXPIRE %s %d", set, CD_RATES_TTL_S);
        queued += 5;
    }

    free(counts);

    ok = 1;

    for (i = 0; i < queued; i++) {
        if (redisGetReply(ctx, (void **) &reply) != REDIS_OK) {
            ok = 0;
            break;
        }

        if (reply->type == REDIS_REPLY_ERROR) {
            ok = 0;
        }

        freeReplyObject(reply);
    }

    if (!ok) {
        cd_rates_fail(rc, "pushing rate counts");
    }
}


/* the other nodes' share of one subject's hash reply */
static void
cd_rates_sum(cd_app_t *app, redisReply *reply, int64_t *requests,
    int64_t *tokens)
{
    size_t       i;
    const char  *field;

    *requests = 0;
    *tokens = 0;

    if (reply->type != REDIS_REPLY_ARRAY) {
        return;
    }

    for (i = 0; i + 1 < reply->elements; i += 2) {
        if (reply->element[i]->type != REDIS_REPLY_STRING
            || reply->element[i + 1]->type != REDIS_REPLY_STRING
            || reply->element[i]->len < 2
            || reply->element[i]->str[1] != ':')
        {
            continue;
        }

        field = reply->element[i]->str;

        /* this node's own lines are in its module's counts already */
        if (strcmp(field + 2, app->config.node_id) == 0) {
            continue;
        }

        if (field[0] == 'r') {
            *requests += strtoll(reply->element[i + 1]->str, NULL, 10);

        } else if (field[0] == 't') {
            *tokens += strtoll(reply->element[i + 1]->str, NULL, 10);
        }
    }
}


int
cd_rates_fetch(cd_app_t *app, cd_rates_conn_t *rc, cd_rate_t **out,
    size_t *nout, int64_t *window_ms)
{
    char           set[CD_RATES_KEY_MAX];
    size_t         i, n;
    int64_t        now;
    cd_rate_t     *rates;
    redisReply    *members, *reply;
    redisContext  *ctx;

    *out = NULL;
    *nout = 0;

    ctx = cd_rates_context(rc, &app->redis);
    if (ctx == NULL) {
        return CD_OK;
    }

    now = cd_clock_ms(CLOCK_REALTIME);
    *window_ms = now - now % CD_RATES_WINDOW_MS;

    snprintf(set, sizeof(set), "spendpol:rate:%lld", (long long) *window_ms);

    members = redisCommand(ctx, "SMEMBERS %s", set);

    if (members == NULL || members->type != REDIS_REPLY_ARRAY) {
        if (members != NULL) {
            freeReplyObject(members);
        }

        cd_rates_fail(rc, "reading rate counts");
        return CD_ERROR;
    }

    n = members->elements;

    if (n == 0) {
        freeReplyObject(members);
        return CD_OK;
    }

    rates = calloc(n, sizeof(cd_rate_t));
    if (rates == NULL) {
        freeReplyObject(members);
        return CD_ERROR;
    }

    for (i = 0; i < n; i++) {
        redisAppendCommand(ctx, "HGETALL %s:%s", set,
                           members->element[i]->type == REDIS_REPLY_STRING
                           ? members->element[i]->str : "-");
    }

    for (i = 0; i < n; i++) {
        if (redisGetReply(ctx, (void **) &reply) != REDIS_OK) {
            free(rates);
            freeReplyObject(members);
            cd_rates_fail(rc, "reading rate counts");
            return CD_ERROR;
        }

        rates[i].hash = members->element[i]->type == REDIS_REPLY_STRING
                        ? strtoull(members->element[i]->str, NULL, 16) : 0;
        cd_rates_sum(app, reply, &rates[i].requests, &rates[i].tokens);

        freeReplyObject(reply);
    }

    freeReplyObject(members);

    *out = rates;
    *nout = n;

    return CD_OK;
}
