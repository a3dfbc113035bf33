/*
 * libspendpol SSE parser: events come out the same however the stream is
 * split.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sp_usage.h"


#define MAX_EVENTS  128

typedef struct {
    char    event[64];
    char    data[256];
    size_t  len;
    int     truncated;
} ev_t;

typedef struct {
    ev_t    ev[MAX_EVENTS];
    int     n;
} evs_t;


static void
record(const sp_sse_t *sse, evs_t *out)
{
    ev_t  *e;

    assert_true(out->n < MAX_EVENTS);
    e = &out->ev[out->n++];

    assert_true(sse->event_len < sizeof(e->event));
    assert_int_equal(strlen(sse->event), sse->event_len);
    memcpy(e->event, sse->event, sse->event_len + 1);

    assert_true(sse->data_len < sse->data_cap || sse->data_cap == 0);
    assert_true(sse->data_len < sizeof(e->data));
    memcpy(e->data, sse->data, sse->data_len);
    e->data[sse->data_len] = '\0';
    e->len = sse->data_len;
    e->truncated = sse->truncated;
}


/* feeds one piece, collecting every event it completes */
static void
feed_piece(sp_sse_t *sse, const char *p, size_t len, evs_t *out)
{
    size_t  n;
    int     done;

    do {
        done = -1;
        n = sp_sse_feed(sse, p, len, &done);
        assert_true(n <= len);
        assert_true(done == 0 || done == 1);

        if (done) {
            assert_true(n > 0);
            record(sse, out);

        } else {
            assert_int_equal(n, len);
        }

        p += n;
        len -= n;
    } while (len);
}


/* the stream cut at the given offsets (ascending) */
static void
parse_split(const char *stream, size_t len, const size_t *cuts, int ncuts,
    size_t cap, evs_t *out)
{
    sp_sse_t   sse;
    char      *buf;
    size_t     at;
    int        i;

    buf = malloc(cap ? cap : 1);
    sp_sse_init(&sse, buf, cap);
    memset(out, 0, sizeof(*out));
    at = 0;

    for (i = 0; i <= ncuts; i++) {
        size_t  end = i < ncuts ? cuts[i] : len;

        feed_piece(&sse, stream + at, end - at, out);
        at = end;
    }

    free(buf);
}


static void
assert_same_events(const evs_t *a, const evs_t *b, const char *how)
{
    int  i;

    if (a->n != b->n) {
        fail_msg("%s: %d events, expected %d", how, b->n, a->n);
    }

    for (i = 0; i < a->n; i++) {
        if (strcmp(a->ev[i].event, b->ev[i].event) != 0
            || a->ev[i].len != b->ev[i].len
            || memcmp(a->ev[i].data, b->ev[i].data, a->ev[i].len) != 0
            || a->ev[i].truncated != b->ev[i].truncated)
        {
            fail_msg("%s: event %d is \"%s\"/\"%s\", expected \"%s\"/\"%s\"",
                     how, i, b->ev[i].event, b->ev[i].data, a->ev[i].event,
                     a->ev[i].data);
        }
    }
}


static const char  stream[] =
    "\n\r\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n"
    "\n"
    "event: ping\n"
    "data: x\n"
    "\n"
    ": a comment line\n"
    "\n"
    "data: line1\n"
    "data:line2\n"
    "data:\n"
    "data: line4\n"
    "\n"
    "data:no-space\r\n"
    "\r\n"
    "data:  two spaces\r"
    "\r"
    "id: 5\n"
    "retry: 10\n"
    ": comment inside\n"
    "data: a:b: c\r\n"
    "\n"
    "data\n"
    "\n"
    "datadata: ignored\n"
    "dat: ignored\n"
    "data : ignored\n"
    "event:message\r\n"
    "data: [DONE]\r\n"
    "\r\n";

static const struct {
    const char  *event;
    const char  *data;
} expected[] = {
    { "", "{\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}" },
    { "ping", "x" },
    { "", "line1\nline2\n\nline4" },
    { "", "no-space" },
    { "", " two spaces" },
    { "", "a:b: c" },
    { "", "" },
    { "message", "[DONE]" },
};

#define NEXPECTED  (int) (sizeof(expected) / sizeof(expected[0]))


static void
test_sse_whole_stream_yields_expected_events(void **state)
{
    evs_t  evs;
    int    i;

    (void) state;

    parse_split(stream, sizeof(stream) - 1, NULL, 0, 256, &evs);

    assert_int_equal(evs.n, NEXPECTED);

    for (i = 0; i < NEXPECTED; i++) {
        assert_string_equal(evs.ev[i].event, expected[i].event);
        assert_string_equal(evs.ev[i].data, expected[i].data);
        assert_int_equal(evs.ev[i].len, strlen(expected[i].data));
        assert_int_equal(evs.ev[i].truncated, 0);
    }
}


static void
test_sse_one_byte_at_a_time_yields_same_events(void **state)
{
    evs_t   whole, split;
    size_t  cuts[sizeof(stream)];
    size_t  i, len;

    (void) state;

    len = sizeof(stream) - 1;
    parse_split(stream, len, NULL, 0, 256, &whole);

    for (i = 0; i + 1 < len; i++) {
        cuts[i] = i + 1;
    }

    parse_split(stream, len, cuts, (int) (len - 1), 256, &split);
    assert_same_events(&whole, &split, "1 byte at a time");
}


static void
test_sse_every_two_piece_split_yields_same_events(void **state)
{
    evs_t   whole, split;
    size_t  cut, len;
    char    how[64];

    (void) state;

    len = sizeof(stream) - 1;
    parse_split(stream, len, NULL, 0, 256, &whole);

    for (cut = 0; cut <= len; cut++) {
        parse_split(stream, len, &cut, 1, 256, &split);
        snprintf(how, sizeof(how), "split at %zu", cut);
        assert_same_events(&whole, &split, how);
    }
}


static void
test_sse_every_three_piece_split_yields_same_events(void **state)
{
    evs_t   whole, split;
    size_t  cuts[2], len;
    char    how[64];

    (void) state;

    len = sizeof(stream) - 1;
    parse_split(stream, len, NULL, 0, 256, &whole);

    for (cuts[0] = 0; cuts[0] <= len; cuts[0]++) {
        for (cuts[1] = cuts[0]; cuts[1] <= len; cuts[1]++) {
            parse_split(stream, len, cuts, 2, 256, &split);
            snprintf(how, sizeof(how), "split at %zu and %zu", cuts[0],
                     cuts[1]);
            assert_same_events(&whole, &split, how);
        }
    }
}


static uint64_t
next_random(uint64_t *x)
{
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;

    return *x * 0x2545f4914f6cdd1dULL;
}


/* random streams of SSE-ish tokens: random splits change nothing */
static void
test_sse_random_streams_split_randomly_yield_same_events(void **state)
{
    static const char  *tokens[] = {
        "data", "event", "id", ":", ": ", " ", "\r", "\n", "\r\n", "x",
        "yz", "data: ", "event: ", "\n\n", "\r\r", "datum", "\xff"
    };
    char                s[512];
    size_t              cuts[8], len, n, i;
    evs_t               whole, split;
    uint64_t            x;
    int                 round, ncuts, j;
    char                how[64];

    (void) state;

    x = 0x13198a2e03707344ULL;

    for (round = 0; round < 5000; round++) {
        len = 0;

        while (len < 200) {
            const char  *t = tokens[next_random(&x)
                                    % (sizeof(tokens) / sizeof(tokens[0]))];

            n = strlen(t);
            memcpy(s + len, t, n);
            len += n;
        }

        parse_split(s, len, NULL, 0, 32, &whole);

        ncuts = (int) (next_random(&x) % 8);

        for (j = 0; j < ncuts; j++) {
            cuts[j] = next_random(&x) % (len + 1);
        }

        /* ascending */
        for (j = 1; j < ncuts; j++) {
            for (i = (size_t) j; i > 0 && cuts[i - 1] > cuts[i]; i--) {
                size_t  t = cuts[i];

                cuts[i] = cuts[i - 1];
                cuts[i - 1] = t;
            }
        }

        parse_split(s, len, cuts, ncuts, 32, &split);
        snprintf(how, sizeof(how), "round %d", round);
        assert_same_events(&whole, &split, how);
    }
}


static void
test_sse_crlf_and_cr_and_lf_endings_are_equivalent(void **state)
{
    static const char  *streams[] = {
        "event: e\ndata: a\ndata: b\n\n",
        "event: e\r\ndata: a\r\ndata: b\r\n\r\n",
        "event: e\rdata: a\rdata: b\r\r",
        "event: e\r\ndata: a\rdata: b\n\r\n",
    };
    evs_t               evs;
    size_t              i;

    (void) state;

    for (i = 0; i < sizeof(streams) / sizeof(streams[0]); i++) {
        parse_split(streams[i], strlen(streams[i]), NULL, 0, 64, &evs);
        assert_int_equal(evs.n, 1);
        assert_string_equal(evs.ev[0].event, "e");
        assert_string_equal(evs.ev[0].data, "a\nb");
    }

    /* "\r\n" is one line end, not a line end and a blank line */
    parse_split("data: a\r\ndata: b\r\n\r\n", 20, NULL, 0, 64, &evs);
    assert_int_equal(evs.n, 1);
    assert_string_equal(evs.ev[0].data, "a\nb");

    /* "\n\r" is two line ends: the event ends there */
    parse_split("data: a\n\rdata: b\n\n", 18, NULL, 0, 64, &evs);
    assert_int_equal(evs.n, 2);
    assert_string_equal(evs.ev[0].data, "a");
    assert_string_equal(evs.ev[1].data, "b");
}


static void
test_sse_comments_and_blank_lines_alone_yield_nothing(void **state)
{
    static const char  s[] = ": hi\n\n\n\r\n:\n: x: y\r\n\r\r\n";
    evs_t              evs;

    (void) state;

    parse_split(s, sizeof(s) - 1, NULL, 0, 64, &evs);
    assert_int_equal(evs.n, 0);
}


static void
test_sse_unfinished_event_is_not_reported(void **state)
{
    evs_t  evs;

    (void) state;

    parse_split("data: a\n", 8, NULL, 0, 64, &evs);
    assert_int_equal(evs.n, 0);

    parse_split("data: a\n\ndata: b", 16, NULL, 0, 64, &evs);
    assert_int_equal(evs.n, 1);
    assert_string_equal(evs.ev[0].data, "a");
}


static void
test_sse_event_name_resets_between_events(void **state)
{
    static const char  s[] = "event: first\ndata: 1\n\ndata: 2\n\n"
                             "event: a\nevent: b\ndata: 3\n\n";
    evs_t              evs;

    (void) state;

    parse_split(s, sizeof(s) - 1, NULL, 0, 64, &evs);
    assert_int_equal(evs.n, 3);
    assert_string_equal(evs.ev[0].event, "first");
    assert_string_equal(evs.ev[1].event, "");
    assert_string_equal(evs.ev[2].event, "b");
    assert_string_equal(evs.ev[2].data, "3");
}


static void
test_sse_oversize_data_is_truncated_without_overflow(void **state)
{
    static const char  s[] = "data: 0123456789\n\ndata: 0123456\n\n"
                             "data: 01234567\n\ndata: 0123\ndata: 4567\n\n"
                             "data: ok\n\n";
    size_t             cuts[sizeof(s)], i, len;
    evs_t              evs;

    (void) state;

    len = sizeof(s) - 1;

    for (i = 0; i + 1 < len; i++) {
        cuts[i] = i + 1;
    }

    /* an exact-size heap buffer: ASan sees any write past it */
    parse_split(s, len, cuts, (int) (len - 1), 8, &evs);

    assert_int_equal(evs.n, 5);
    assert_string_equal(evs.ev[0].data, "0123456");
    assert_int_equal(evs.ev[0].truncated, 1);
    /* 7 bytes and the NUL fit in 8 */
    assert_string_equal(evs.ev[1].data, "0123456");
    assert_int_equal(evs.ev[1].truncated, 0);
    assert_string_equal(evs.ev[2].data, "0123456");
    assert_int_equal(evs.ev[2].truncated, 1);
    assert_string_equal(evs.ev[3].data, "0123\n45");
    assert_int_equal(evs.ev[3].truncated, 1);
    /* the flag does not stick to the next event */
    assert_string_equal(evs.ev[4].data, "ok");
    assert_int_equal(evs.ev[4].truncated, 0);
}


static void
test_sse_tiny_buffers_never_overflow(void **state)
{
    static const char  s[] = "data: abc\n\nevent: x\ndata: d\n\n";
    evs_t              evs;
    size_t             cap;

    (void) state;

    for (cap = 0; cap < 4; cap++) {
        parse_split(s, sizeof(s) - 1, NULL, 0, cap, &evs);
        assert_int_equal(evs.n, 2);
        assert_int_equal(evs.ev[0].len, cap ? cap - 1 : 0);
        assert_int_equal(evs.ev[0].truncated, 1);
        assert_string_equal(evs.ev[1].event, "x");
    }
}


static void
test_sse_long_event_name_is_cut_without_overflow(void **state)
{
    char    s[512];
    evs_t   evs;
    size_t  n;

    (void) state;

    memcpy(s, "event: ", 7);
    memset(s + 7, 'e', 200);
    n = 207;
    memcpy(s + n, "\ndata: 1\n\n", 10);
    n += 10;

    parse_split(s, n, NULL, 0, 64, &evs);
    assert_int_equal(evs.n, 1);
    assert_int_equal(strlen(evs.ev[0].event), 63);
    assert_string_equal(evs.ev[0].data, "1");
}


static void
test_sse_feed_after_event_with_nothing_resets(void **state)
{
    sp_sse_t  sse;
    char      buf[32];
    int       done;

    (void) state;

    sp_sse_init(&sse, buf, sizeof(buf));
    assert_int_equal(sp_sse_feed(&sse, "data: a\n\n", 9, &done), 9);
    assert_int_equal(done, 1);
    assert_int_equal(sse.data_len, 1);

    assert_int_equal(sp_sse_feed(&sse, "", 0, &done), 0);
    assert_int_equal(done, 0);
    assert_int_equal(sse.data_len, 0);

    assert_int_equal(sp_sse_feed(&sse, "data: b\n\n", 9, &done), 9);
    assert_int_equal(done, 1);
    assert_memory_equal(sse.data, "b", 2);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_sse_whole_stream_yields_expected_events),
        cmocka_unit_test(test_sse_one_byte_at_a_time_yields_same_events),
        cmocka_unit_test(test_sse_every_two_piece_split_yields_same_events),
        cmocka_unit_test(
            test_sse_every_three_piece_split_yields_same_events),
        cmocka_unit_test(
            test_sse_random_streams_split_randomly_yield_same_events),
        cmocka_unit_test(test_sse_crlf_and_cr_and_lf_endings_are_equivalent),
        cmocka_unit_test(
            test_sse_comments_and_blank_lines_alone_yield_nothing),
        cmocka_unit_test(test_sse_unfinished_event_is_not_reported),
        cmocka_unit_test(test_sse_event_name_resets_between_events),
        cmocka_unit_test(
            test_sse_oversize_data_is_truncated_without_overflow),
        cmocka_unit_test(test_sse_tiny_buffers_never_overflow),
        cmocka_unit_test(test_sse_long_event_name_is_cut_without_overflow),
        cmocka_unit_test(test_sse_feed_after_event_with_nothing_resets),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
