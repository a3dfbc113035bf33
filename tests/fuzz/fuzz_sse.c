/*
 * The SSE parser, fed a stream in random-sized pieces, and every event it
 * yields passed to sp_usage_from_event for every provider.
 *
 * Input: the raw text/event-stream bytes. Split points and the data
 * buffer's size are drawn from a hash of the input, so the same input
 * always replays the same way. The stream is parsed twice, whole and in
 * pieces: both must yield the same events.
 */

#include "fuzz_common.h"
#include "sp_usage.h"


#define FUZZ_SSE_MAX_EVENTS  4096

typedef struct {
    uint64_t  hash;
    size_t    data_len;
    int       truncated;
} fuzz_sse_event_t;


static void
fuzz_check_event(const sp_sse_t *sse)
{
    FUZZ_CHECK(sse->data_len < sse->data_cap);
    /* data is (data, data_len); terminated only once it has a byte */
    FUZZ_CHECK(sse->data_len == 0 || sse->data[sse->data_len] == '\0');
    FUZZ_CHECK(sse->event_len < sizeof(sse->event));
    FUZZ_CHECK(sse->event[sse->event_len] == '\0');
}


static uint64_t
fuzz_event_hash(const sp_sse_t *sse)
{
    return sp_hash64(sse->data, sse->data_len,
                     sp_hash64(sse->event, sse->event_len, 0));
}


/* parses in pieces of at most max bytes (0: all at once) */
static size_t
fuzz_parse(const uint8_t *data, size_t size, char *buf, size_t cap,
    uint64_t seed, size_t max, fuzz_sse_event_t *events,
    sp_response_info_t *infos)
{
    sp_sse_t     sse;
    size_t       pos, piece, used, n;
    uint64_t     rnd;
    int          done, p;

    sp_sse_init(&sse, buf, cap);
    rnd = seed;
    pos = 0;
    n = 0;

    while (pos < size) {
        piece = size - pos;

        if (max && piece > 1) {
            piece = 1 + fuzz_next(&rnd) % (piece < max ? piece : max);
        }

        /* one piece may hold several events */
        while (piece) {
            used = sp_sse_feed(&sse, (const char *) data + pos, piece, &done);

            FUZZ_CHECK(used <= piece);
            FUZZ_CHECK(used == piece || done);

            pos += used;
            piece -= used;

            if (!done) {
                break;
            }

            fuzz_check_event(&sse);

            if (n < FUZZ_SSE_MAX_EVENTS) {
                events[n].hash = fuzz_event_hash(&sse);
                events[n].data_len = sse.data_len;
                events[n].truncated = sse.truncated;
            }

            n++;

            if (infos == NULL) {
                continue;
            }

            /* as the module does: one response info per stream */
            for (p = SP_PROVIDER_UNKNOWN; p <= SP_PROVIDER_MISTRAL; p++) {
                (void) sp_usage_from_event((sp_provider_e) p, sse.event,
                                           sse.data, sse.data_len,
                                           &infos[p]);
            }
        }
    }

    return n;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_sse_event_t  whole[FUZZ_SSE_MAX_EVENTS];
    static fuzz_sse_event_t  pieces[FUZZ_SSE_MAX_EVENTS];
    sp_response_info_t       infos[SP_PROVIDER_MISTRAL + 1];
    sp_usage_t              *u;
    sp_price_t               price;
    int64_t                  cost;
    uint64_t                 seed;
    size_t                   cap, n1, n2, i;
    char                    *buf;
    int                      p;

    seed = sp_hash64(data, size, 0x535345);

    /* mostly a roomy buffer, sometimes one small enough to truncate */
    switch (seed % 4) {
    case 0:
        cap = 1 + (seed >> 8) % 64;
        break;
    default:
        cap = 65536;
        break;
    }

    buf = malloc(cap);
    FUZZ_CHECK(buf != NULL);

    memset(infos, 0, sizeof(infos));

    n1 = fuzz_parse(data, size, buf, cap, seed, 0, whole, infos);
    n2 = fuzz_parse(data, size, buf, cap, seed, 1 + (seed >> 16) % 64,
                    pieces, NULL);

    /* splitting the stream anywhere must not change what it says */
    FUZZ_CHECK(n1 == n2);

    for (i = 0; i < n1 && i < FUZZ_SSE_MAX_EVENTS; i++) {
        FUZZ_CHECK(whole[i].hash == pieces[i].hash);
        FUZZ_CHECK(whole[i].data_len == pieces[i].data_len);
        FUZZ_CHECK(whole[i].truncated == pieces[i].truncated);
    }

    price.input = 2500000000LL;
    price.output = 10000000000LL;
    price.cached_input = 1250000000LL;
    price.cache_write = 3750000000LL;

    for (p = SP_PROVIDER_UNKNOWN; p <= SP_PROVIDER_MISTRAL; p++) {
        u = &infos[p].usage;

        FUZZ_CHECK(strlen(infos[p].model) < sizeof(infos[p].model));
        FUZZ_CHECK(u->input_tokens >= 0 && u->output_tokens >= 0);
        FUZZ_CHECK(u->cached_tokens >= 0 && u->cache_write_tokens >= 0);
        FUZZ_CHECK(infos[p].output_bytes >= 0);

        (void) sp_cost_nano(&price, u, &cost);
        (void) sp_tokens_estimate(infos[p].output_bytes);
    }

    free(buf);

    return 0;
}
