/*
 * Money: integer nano-USD, no floating point anywhere.
 */

#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spendpol.h"


#define SP_NANO_PER_USD   1000000000LL
#define SP_TOKENS_PER_M   1000000


static int64_t
sp_nonnegative(int64_t v)
{
    return v < 0 ? 0 : v;
}


void
sp_usage_normalize(sp_usage_t *usage)
{
    usage->input_tokens = sp_nonnegative(usage->input_tokens);
    usage->output_tokens = sp_nonnegative(usage->output_tokens);
    usage->cached_tokens = sp_nonnegative(usage->cached_tokens);
    usage->cache_write_tokens = sp_nonnegative(usage->cache_write_tokens);

    if (usage->cached_tokens > usage->input_tokens) {
        usage->cached_tokens = usage->input_tokens;
    }

    if (usage->cache_write_tokens
        > usage->input_tokens - usage->cached_tokens)
    {
        usage->cache_write_tokens = usage->input_tokens
                                    - usage->cached_tokens;
    }
}


int
sp_cost_nano(const sp_price_t *price, const sp_usage_t *usage, int64_t *cost)
{
    __int128    total;
    int64_t     input, cached, written, uncached, output;
    sp_usage_t  u;

    u = *usage;
    sp_usage_normalize(&u);

    input = u.input_tokens;
    output = u.output_tokens;
    cached = u.cached_tokens;
    written = u.cache_write_tokens;
    uncached = input - cached - written;

    total = (__int128) uncached * price->input
            + (__int128) cached * price->cached_input
            + (__int128) written * price->cache_write
            + (__int128) output * price->output;

    /* round half up to a whole nano-USD */
    total = (total + SP_TOKENS_PER_M / 2) / SP_TOKENS_PER_M;

    if (total > INT64_MAX || total < 0) {
        return SP_ERROR;
    }

    *cost = (int64_t) total;

    return SP_OK;
}


size_t
sp_money_format(int64_t nano, char *out)
{
    char      digits[24], *p;
    uint64_t  magnitude, whole, frac;
    size_t    n, decimals;
    int       i;

    p = out;

    if (nano < 0) {
        *p++ = '-';
        magnitude = (uint64_t) -(nano + 1) + 1;

    } else {
        magnitude = (uint64_t) nano;
    }

    whole = magnitude / SP_NANO_PER_USD;
    frac = magnitude % SP_NANO_PER_USD;

    n = 0;

    do {
        digits[n++] = (char) ('0' + whole % 10);
        whole /= 10;
    } while (whole);

    while (n) {
        *p++ = digits[--n];
    }

    *p++ = '.';

    for (i = 8; i >= 0; i--) {
        digits[i] = (char) ('0' + frac % 10);
        frac /= 10;
    }

    /* at least 6 decimals, at most 9, no trailing zeros past the sixth */
    decimals = 9;

    while (decimals > 6 && digits[decimals - 1] == '0') {
        decimals--;
    }

    memcpy(p, digits, decimals);
    p += decimals;
    *p = '\0';

    return (size_t) (p - out);
}


int
sp_money_parse(const char *s, size_t len, int64_t *nano)
{
    const char  *end;
    uint64_t     whole, frac, magnitude;
    int          negative, decimals, digits;

    end = s + len;
    negative = 0;

    if (s < end && *s == '-') {
        negative = 1;
        s++;
    }

    whole = 0;
    digits = 0;

    while (s < end && *s >= '0' && *s <= '9') {
        whole = whole * 10 + (uint64_t) (*s++ - '0');

        /* checked after each digit: whole * 1e9 below must not wrap */
        if (whole > (uint64_t) (INT64_MAX / SP_NANO_PER_USD) + 1) {
            return SP_ERROR;
        }

        digits++;
    }

    frac = 0;
    decimals = 0;

    if (s < end && *s == '.') {
        s++;

        while (s < end && *s >= '0' && *s <= '9') {
            if (++decimals > 9) {
                return SP_ERROR;
            }

            frac = frac * 10 + (uint64_t) (*s++ - '0');
            digits++;
        }

        if (decimals == 0) {
            return SP_ERROR;
        }
    }

    if (s != end || digits == 0) {
        return SP_ERROR;
    }

    while (decimals++ < 9) {
        frac *= 10;
    }

    /* a negative amount may reach INT64_MIN, which sp_money_format prints */
    if (whole * SP_NANO_PER_USD > (uint64_t) INT64_MAX + negative - frac) {
        return SP_ERROR;
    }

    magnitude = whole * SP_NANO_PER_USD + frac;

    if (negative && magnitude) {
        *nano = -(int64_t) (magnitude - 1) - 1;

    } else {
        *nano = (int64_t) magnitude;
    }

    return SP_OK;
}


int
sp_money_number_text(double v, char *out, size_t outlen)
{
    int          decimals, significant;
    const char  *p;

    for (decimals = 0; decimals <= 9; decimals++) {
        snprintf(out, outlen, "%.*f", decimals, v);

        if (strtod(out, NULL) != v) {
            continue;
        }

        significant = 0;

        for (p = out; *p != '\0'; p++) {
            if ((*p >= '1' && *p <= '9') || (*p == '0' && significant > 0)) {
                significant++;
            }
        }

        return significant <= DBL_DIG ? SP_OK : SP_ERROR;
    }

    return SP_ERROR;
}
