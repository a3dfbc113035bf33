/*
 * Journal lines: anything sp_journal_parse accepts must format and parse
 * back to the same record (and the same line). Also the other way: a
 * record of arbitrary bytes must format to a line that parses, and
 * sp_field_copy must cut only at UTF-8 boundaries. And differential: the
 * parser (the scanner's tape, jansson when it declines) must agree with
 * the jansson-only parser it replaced on every line, in verdict, error
 * text and record bytes.
 *
 * Input: one journal line. The same bytes also fill a record's fields.
 */

#include "fuzz_common.h"
#include "sp_journal.h"
#include "fuzz_journal_oracle.h"


static void
fuzz_differ(const char *line, size_t len)
{
    static sp_journal_record_t  a, b;
    int                         ra, rb;
    char                        ea[256], eb[256];

    memset(&a, 0x5a, sizeof(a));
    memset(&b, 0xa5, sizeof(b));
    ea[0] = eb[0] = '\0';

    ra = oracle_journal_parse(line, len, &a, ea, sizeof(ea));
    rb = sp_journal_parse(line, len, &b, eb, sizeof(eb));

    FUZZ_CHECK(ra == rb);
    FUZZ_CHECK(ra == SP_OK || strcmp(ea, eb) == 0);
    FUZZ_CHECK(memcmp(&a, &b, sizeof(a)) == 0);
}


static void
fuzz_round_trip(const char *line, size_t len)
{
    static sp_journal_record_t  rec, again, third;
    static char                 out[SP_JOURNAL_LINE_MAX];
    static char                 out2[SP_JOURNAL_LINE_MAX];
    size_t                      n, n2;
    char                        err[256];

    err[0] = '\0';

    if (sp_journal_parse(line, len, &rec, err, sizeof(err)) != SP_OK) {
        FUZZ_CHECK(err[0] != '\0');
        return;
    }

    n = sp_journal_format(&rec, out, sizeof(out));
    FUZZ_CHECK(n > 0 && n <= sizeof(out));
    FUZZ_CHECK(out[n - 1] == '\n');
    FUZZ_CHECK(memchr(out, '\n', n - 1) == NULL);

    FUZZ_CHECK(sp_journal_parse(out, n, &again, err, sizeof(err)) == SP_OK);
    FUZZ_CHECK(memcmp(&rec, &again, sizeof(rec)) == 0);

    n2 = sp_journal_format(&again, out2, sizeof(out2));
    FUZZ_CHECK(n2 == n && memcmp(out, out2, n) == 0);

    /* without the newline too */
    FUZZ_CHECK(sp_journal_parse(out, n - 1, &third, err, sizeof(err))
               == SP_OK);
    FUZZ_CHECK(memcmp(&rec, &third, sizeof(rec)) == 0);

    /* a buffer one byte short does not fit */
    FUZZ_CHECK(sp_journal_format(&rec, out2, n - 1) == 0);
}


/* a valid UTF-8 prefix of src, and no longer than it */
static void
fuzz_check_copy(const char *dst, size_t dstlen, const char *src,
    size_t len)
{
    size_t  n;

    n = strlen(dst);

    FUZZ_CHECK(n < dstlen);
    FUZZ_CHECK(n <= len && memcmp(dst, src, n) == 0);

    if (len < dstlen) {
        /* it fits: nothing is cut (up to an embedded NUL) */
        FUZZ_CHECK(n == len || src[n] == '\0');

    } else if (n > 0 && src[n] != '\0') {
        /* cut: never before a continuation byte (nothing left is no cut) */
        FUZZ_CHECK(((unsigned char) src[n] & 0xc0) != 0x80);
    }
}


#define FUZZ_FILL(field)                                                      \
    do {                                                                      \
        take = (pos < size) ? (size - pos) % (2 * sizeof(rec->field)) : 0;    \
        sp_field_copy(rec->field, sizeof(rec->field),                         \
                      (const char *) data + pos, take);                       \
        fuzz_check_copy(rec->field, sizeof(rec->field),                       \
                        (const char *) data + pos, take);                     \
        pos += take;                                                          \
    } while (0)

#define FUZZ_INT(field)                                                       \
    do {                                                                      \
        v = 0;                                                                \
        if (pos + 8 <= size) {                                                \
            memcpy(&v, data + pos, 8);                                        \
            pos += 8;                                                         \
        }                                                                     \
        rec->field = v;                                                       \
    } while (0)


static void
fuzz_format_bytes(const uint8_t *data, size_t size)
{
    static sp_journal_record_t   r;
    static char                  out[SP_JOURNAL_LINE_MAX];
    sp_journal_record_t         *rec = &r;
    size_t                       pos, take, n;
    int64_t                      v;
    char                         err[256];

    memset(rec, 0, sizeof(*rec));
    pos = 0;

    FUZZ_FILL(org_id);
    FUZZ_FILL(api_key_id);
    FUZZ_FILL(provider);
    FUZZ_FILL(requested_model);
    FUZZ_FILL(model);
    FUZZ_FILL(cache);
    FUZZ_FILL(department);
    FUZZ_FILL(project);
    FUZZ_FILL(agent_id);
    FUZZ_FILL(trace_id);
    FUZZ_FILL(span_id);
    FUZZ_FILL(parent_id);
    FUZZ_FILL(warnings);
    FUZZ_FILL(error_code);
    FUZZ_INT(ts_ms);
    FUZZ_INT(input_tokens);
    FUZZ_INT(output_tokens);
    FUZZ_INT(cost_nano);
    FUZZ_INT(epoch);
    FUZZ_INT(reserved_nano);
    FUZZ_INT(saved_nano);
    FUZZ_INT(latency_ms);

    memcpy(rec->id, "evt_", 4);
    sp_field_copy(rec->id + 4, sizeof(rec->id) - 4, (const char *) data,
                  size);
    rec->status = (int) (size % 1000);
    rec->stream = (int) (size & 1);

    n = sp_journal_format(rec, out, sizeof(out));

    /* the widest record (every byte escaped) fits the line maximum */
    FUZZ_CHECK(n > 0);
    fuzz_differ(out, n);

    /* the writer escapes and replaces so that every line parses */
    FUZZ_CHECK(sp_journal_parse(out, n, rec, err, sizeof(err)) == SP_OK);

    fuzz_round_trip(out, n);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char  *line;

    line = (char *) fuzz_dup(data, size);

    fuzz_differ(line, size);
    fuzz_round_trip(line, size);
    fuzz_format_bytes(data, size);

    free(line);

    return 0;
}
