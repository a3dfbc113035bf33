
/*
 * Copyright (C) Spendpol
 *
 * Ids: every governed request gets an audit id, a trace id and a span
 * id (W3C trace context in and out), from a per-worker generator seeded
 * by the kernel; ids a client sends are checked before they are used.
 */


#include <sys/random.h>

#include "ngx_http_spendpol_module.h"


static ngx_uint_t ngx_http_spendpol_valid_id(ngx_str_t *value);
static ngx_uint_t ngx_http_spendpol_hex(u_char *p, size_t n);
static ngx_uint_t ngx_http_spendpol_valid_traceparent(ngx_str_t *v);
static ngx_uint_t ngx_http_spendpol_uuid(u_char *p, size_t len, u_char *out);


/*
 * The request's ids: its audit id (time, worker, sequence: unique
 * without coordination), its trace id (the client's X-Spendpol-Trace-Id,
 * the trace of a valid W3C traceparent, or a fresh UUID), a fresh span
 * id, and the parent (the client's X-Spendpol-Parent-Id, or the
 * traceparent's span).
 */
void
ngx_http_spendpol_ids(ngx_http_request_t *r, ngx_http_spendpol_ctx_t *ctx,
    ngx_http_spendpol_main_conf_t *smcf)
{
    uint64_t          a, b;
    ngx_table_elt_t  *h, *tp;

    ngx_sprintf(ctx->audit_id, "evt_%012xL%08xD%08xD%Z",
                (uint64_t) ctx->start_ms, smcf->worker_tag,
                ++smcf->sequence);

    h = ngx_http_spendpol_request_header(r, "X-Spendpol-Trace-Id",
                                         sizeof("X-Spendpol-Trace-Id") - 1);

    tp = ngx_http_spendpol_request_header(r, "traceparent",
                                          sizeof("traceparent") - 1);

    if (tp && !ngx_http_spendpol_valid_traceparent(&tp->value)) {
        tp = NULL;
    }

    if (tp) {
        /* W3C: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags> */
        ctx->trace_flags[0] = tp->value.data[53];
        ctx->trace_flags[1] = tp->value.data[54];

    } else {
        ctx->trace_flags[0] = '0';
        ctx->trace_flags[1] = '1';
    }

    if (h && ngx_http_spendpol_uuid(h->value.data, h->value.len,
                                    ctx->trace_id))
    {
        /* the client's own trace, a UUID (or its 32 hex digits) */

    } else if (tp) {
        (void) ngx_http_spendpol_uuid(tp->value.data + 3, 32, ctx->trace_id);
        ngx_memcpy(ctx->parent_id, tp->value.data + 36, 16);
        ctx->parent_id[16] = '\0';

    } else {
        a = ngx_http_spendpol_random(smcf);
        b = ngx_http_spendpol_random(smcf);

        /* a version 4, variant 1 UUID */
        a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
        b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;

        ngx_sprintf(ctx->trace_id, "%08xD-%04xD-%04xD-%04xD-%012xL%Z",
                    (uint32_t) (a >> 32), (uint32_t) (a >> 16) & 0xffff,
                    (uint32_t) a & 0xffff, (uint32_t) (b >> 48),
                    b & 0xffffffffffffULL);
    }

    ngx_sprintf(ctx->span_id, "%016xL%Z", ngx_http_spendpol_random(smcf));

    h = ngx_http_spendpol_request_header(r, "X-Spendpol-Parent-Id",
                                         sizeof("X-Spendpol-Parent-Id") - 1);

    if (h && ngx_http_spendpol_valid_id(&h->value)) {
        ngx_memcpy(ctx->parent_id, h->value.data, h->value.len);
        ctx->parent_id[h->value.len] = '\0';
    }
}


/*
 * The traceparent sent upstream: the trace (our UUID without dashes, or
 * the client's 32 hex digits) with our span as the parent. Empty when the
 * trace id is not expressible in W3C form.
 */
size_t
ngx_http_spendpol_traceparent(ngx_http_spendpol_ctx_t *ctx, u_char *buf)
{
    u_char      trace[32], *p, *q;
    ngx_uint_t  n;

    n = 0;

    for (q = ctx->trace_id; *q && n < 32; q++) {
        if (*q == '-') {
            continue;
        }

        trace[n++] = *q;
    }

    if (n != 32 || *q != '\0' || !ngx_http_spendpol_hex(trace, 32)) {
        return 0;
    }

    p = ngx_cpymem(buf, "00-", 3);
    p = ngx_cpymem(p, trace, 32);
    *p++ = '-';
    p = ngx_cpymem(p, ctx->span_id, 16);
    *p++ = '-';
    *p++ = ctx->trace_flags[0];
    *p++ = ctx->trace_flags[1];

    return p - buf;
}


/* 1..64 characters of [A-Za-z0-9._-], as trace ids from clients must be */
static ngx_uint_t
ngx_http_spendpol_valid_id(ngx_str_t *value)
{
    u_char      c;
    ngx_uint_t  i;

    if (value->len == 0 || value->len >= SP_ID_LEN) {
        return 0;
    }

    for (i = 0; i < value->len; i++) {
        c = value->data[i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
              || (c >= 'A' && c <= 'Z') || c == '-' || c == '_' || c == '.'))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * A trace id as the docs promise it, a UUID in lowercase 8-4-4-4-12 form,
 * from a UUID in either case or 32 hex digits (W3C's trace id) into out
 * (37 bytes); 0 when p is neither.
 */
static ngx_uint_t
ngx_http_spendpol_uuid(u_char *p, size_t len, u_char *out)
{
    u_char      c;
    size_t      i, n;
    ngx_uint_t  dashed;

    if (len == 36) {
        dashed = 1;

    } else if (len == 32) {
        dashed = 0;

    } else {
        return 0;
    }

    n = 0;

    for (i = 0; i < len; i++) {
        c = p[i];

        if (dashed && (i == 8 || i == 13 || i == 18 || i == 23)) {
            if (c != '-') {
                return 0;
            }

            continue;
        }

        c = ngx_tolower(c);

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }

        if (n == 8 || n == 13 || n == 18 || n == 23) {
            out[n++] = '-';
        }

        out[n++] = c;
    }

    out[n] = '\0';

    return 1;
}


/* n lowercase hex digits, as W3C trace context writes them */
static ngx_uint_t
ngx_http_spendpol_hex(u_char *p, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) {
            return 0;
        }
    }

    return 1;
}


static ngx_uint_t
ngx_http_spendpol_valid_traceparent(ngx_str_t *v)
{
    static u_char  zeros[32] = "00000000000000000000000000000000";

    return v->len == 55
           && ngx_strncmp(v->data, "00-", 3) == 0
           && ngx_http_spendpol_hex(v->data + 3, 32)
           && v->data[35] == '-'
           && ngx_http_spendpol_hex(v->data + 36, 16)
           && v->data[52] == '-'
           && ngx_http_spendpol_hex(v->data + 53, 2)
           && ngx_memcmp(v->data + 3, zeros, 32) != 0
           && ngx_memcmp(v->data + 36, zeros, 16) != 0;
}


uint64_t
ngx_http_spendpol_random(ngx_http_spendpol_main_conf_t *smcf)
{
    uint64_t  s0, s1, result;

    s0 = smcf->random[0];
    s1 = smcf->random[1];
    result = s0 + s1;

    s1 ^= s0;
    smcf->random[0] = ((s0 << 24) | (s0 >> 40)) ^ s1 ^ (s1 << 16);
    smcf->random[1] = (s1 << 37) | (s1 >> 27);

    return result;
}


/* xoroshiro128+, seeded per worker from the kernel */
void
ngx_http_spendpol_random_init(ngx_http_spendpol_main_conf_t *smcf)
{
    uint64_t  seed[2];

    if (getrandom(seed, sizeof(seed), 0) != sizeof(seed)) {
        seed[0] = (uint64_t) ngx_pid << 32 ^ (uint64_t) ngx_time();
        seed[1] = (uint64_t) (uintptr_t) smcf ^ 0x9e3779b97f4a7c15ULL;
    }

    smcf->random[0] = seed[0] | 1;
    smcf->random[1] = seed[1];
    smcf->worker_tag = (uint32_t) ngx_http_spendpol_random(smcf);
    smcf->sequence = 0;
}
