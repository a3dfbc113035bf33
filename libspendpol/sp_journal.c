/*
 * Journal lines: formatted by nginx workers, parsed by controld.
 */

#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "sp_journal.h"
#include "sp_route.h"
#include "sp_scan.h"


#define SP_JOURNAL_ATTEMPTS_MAX          SP_ROUTE_MAX_TARGETS
#define SP_JOURNAL_TEMPLATE_VERSION_MAX  2147483647   /* the audit column
                                                          is an integer */


typedef struct {
    char    *p;
    char    *end;
    int      overflow;
} sp_out_t;


static void
sp_out_bytes(sp_out_t *o, const char *s, size_t n)
{
    if (o->overflow || (size_t) (o->end - o->p) < n) {
        o->overflow = 1;
        return;
    }

    memcpy(o->p, s, n);
    o->p += n;
}


static void
sp_out_cstr(sp_out_t *o, const char *s)
{
    sp_out_bytes(o, s, strlen(s));
}


/* decimal, as "%lld" writes it, without printf's per-call cost */
static void
sp_out_int(sp_out_t *o, int64_t v)
{
    char      buf[24], *p;
    uint64_t  u;

    p = buf + sizeof(buf);
    u = v < 0 ? 0 - (uint64_t) v : (uint64_t) v;

    do {
        *--p = (char) ('0' + u % 10);
        u /= 10;
    } while (u);

    if (v < 0) {
        *--p = '-';
    }

    sp_out_bytes(o, p, (size_t) (buf + sizeof(buf) - p));
}


/* length of the valid UTF-8 sequence at s, or 0 when it is invalid */
static size_t
sp_utf8_sequence(const unsigned char *s)
{
    size_t    n, i;
    uint32_t  cp;

    if (s[0] < 0x80) {
        return 1;
    }

    if ((s[0] & 0xe0) == 0xc0) {
        n = 2;
        cp = s[0] & 0x1f;

    } else if ((s[0] & 0xf0) == 0xe0) {
        n = 3;
        cp = s[0] & 0x0f;

    } else if ((s[0] & 0xf8) == 0xf0) {
        n = 4;
        cp = s[0] & 0x07;

    } else {
        return 0;
    }

    /* the terminating NUL stops this loop: it is not a continuation */
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }

        cp = cp << 6 | (s[i] & 0x3f);
    }

    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800)
        || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))
        || (cp >= 0xd800 && cp <= 0xdfff))
    {
        return 0;
    }

    return n;
}


/*
 * A JSON string: quotes, backslashes and control characters escaped, and
 * invalid UTF-8 replaced by U+FFFD, so that every line parses.
 */
static void
sp_out_json_string(sp_out_t *o, const char *s)
{
    static const char     hex[] = "0123456789abcdef";
    const unsigned char  *p;
    unsigned char         c;
    char                  esc[6];
    size_t                n;

    sp_out_bytes(o, "\"", 1);

    for (p = (const unsigned char *) s; *p; p += n) {

        /* a run of printable ASCII goes out in one copy */
        for (n = 0; p[n] >= 0x20 && p[n] < 0x7f && p[n] != '"'
                    && p[n] != '\\'; n++)
        {
            /* void */
        }

        if (n) {
            sp_out_bytes(o, (const char *) p, n);
            continue;
        }

        c = *p;
        n = 1;

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char) c;
            sp_out_bytes(o, esc, 2);

        } else if (c < 0x20 || c == 0x7f) {
            esc[0] = '\\';
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            sp_out_bytes(o, esc, 6);

        } else {
            n = sp_utf8_sequence(p);

            if (n == 0) {
                sp_out_cstr(o, "\\ufffd");
                n = 1;

            } else {
                sp_out_bytes(o, (const char *) p, n);
            }
        }
    }

    sp_out_bytes(o, "\"", 1);
}


#define SP_FIELD_STR(name)                                                    \
    sp_out_cstr(&o, ",\"" #name "\":");                                       \
    sp_out_json_string(&o, rec->name)

#define SP_FIELD_INT(name)                                                    \
    sp_out_cstr(&o, ",\"" #name "\":");                                       \
    sp_out_int(&o, (int64_t) rec->name)


size_t
sp_journal_format(const sp_journal_record_t *rec, char *out, size_t outlen)
{
    sp_out_t  o;

    o.p = out;
    o.end = out + outlen;
    o.overflow = 0;

    sp_out_cstr(&o, "{\"v\":1");
    SP_FIELD_STR(id);
    SP_FIELD_INT(ts_ms);
    SP_FIELD_STR(org_id);
    SP_FIELD_STR(api_key_id);
    SP_FIELD_STR(provider);
    SP_FIELD_STR(requested_model);
    SP_FIELD_STR(model);
    SP_FIELD_INT(input_tokens);
    SP_FIELD_INT(output_tokens);
    SP_FIELD_INT(cached_tokens);
    SP_FIELD_INT(cache_write_tokens);
    SP_FIELD_INT(cost_nano);
    SP_FIELD_INT(status);
    SP_FIELD_STR(cache);
    SP_FIELD_INT(saved_nano);
    sp_out_cstr(&o, rec->stream ? ",\"stream\":true" : ",\"stream\":false");
    SP_FIELD_INT(latency_ms);
    SP_FIELD_INT(gateway_us);
    SP_FIELD_STR(department);
    SP_FIELD_STR(project);
    SP_FIELD_STR(agent_id);
    SP_FIELD_STR(trace_id);
    SP_FIELD_STR(span_id);
    SP_FIELD_STR(parent_id);
    SP_FIELD_STR(warnings);
    SP_FIELD_STR(error_code);
    SP_FIELD_INT(epoch);
    SP_FIELD_INT(reserved_nano);
    SP_FIELD_STR(endpoint);

    /*
     * Routing and templates only when set, so that a request no rule or
     * template touched keeps the line it had before them. attempts 1 is
     * no fallback, as 0 is (the reader makes it 0); anything else is
     * written, out of range or not, for sp_journal_check to judge.
     */
    if (rec->routed) {
        sp_out_cstr(&o, ",\"routed\":true");
    }

    if (rec->route_rule[0]) {
        SP_FIELD_STR(route_rule);
    }

    if (rec->attempts != 0 && rec->attempts != 1) {
        SP_FIELD_INT(attempts);
    }

    if (rec->attempt_log[0]) {
        SP_FIELD_STR(attempt_log);
    }

    if (rec->route_note[0]) {
        SP_FIELD_STR(route_note);
    }

    if (rec->template_id[0]) {
        SP_FIELD_STR(template_id);
    }

    if (rec->template_version != 0) {
        SP_FIELD_INT(template_version);
    }

    /*
     * Policies, scores and shadow AI as routing: only when set, so that a
     * request with no PII, no policy and no score keeps its old line. A
     * negative guard score is written, for sp_journal_check to refuse;
     * hallucination_pct -1 is "not scored", and anything else below 0
     * is written for the same reason.
     */
    if (rec->guard_score_milli != 0) {
        SP_FIELD_INT(guard_score_milli);
    }

    if (rec->pii_types[0]) {
        SP_FIELD_STR(pii_types);
    }

    if (rec->policy_action[0]) {
        SP_FIELD_STR(policy_action);
    }

    if (rec->policy_ids[0]) {
        SP_FIELD_STR(policy_ids);
    }

    if (rec->policy_warnings[0]) {
        SP_FIELD_STR(policy_warnings);
    }

    if (rec->hallucination_pct != -1) {
        SP_FIELD_INT(hallucination_pct);
    }

    if (rec->shadow_key_type[0]) {
        SP_FIELD_STR(shadow_key_type);
    }

    if (rec->shadow_key_fp[0]) {
        SP_FIELD_STR(shadow_key_fp);
    }

    if (rec->client_addr[0]) {
        SP_FIELD_STR(client_addr);
    }

    sp_out_cstr(&o, "}\n");

    if (o.overflow) {
        return 0;
    }

    return (size_t) (o.p - out);
}


/*
 * How much of a string of len bytes a field of dstlen bytes keeps: all of
 * it when it fits, else dstlen - 1 bytes less any UTF-8 sequence cut
 * short (its continuation bytes and its lead). Reads s[0..dstlen - 1].
 */
static size_t
sp_field_fit(const char *s, size_t len, size_t dstlen)
{
    if (len < dstlen) {
        return len;
    }

    len = dstlen - 1;

    while (len > 0 && ((unsigned char) s[len] & 0xc0) == 0x80) {
        len--;
    }

    return len;
}


void
sp_field_copy(char *dst, size_t dstlen, const char *src, size_t len)
{
    if (dstlen == 0) {
        return;
    }

    len = sp_field_fit(src, len, dstlen);

    if (len) {
        memcpy(dst, src, len);
    }

    dst[len] = '\0';
}


/*
 * The members a line is read for, in the order they are checked: the
 * first one wrong names the error. The writer puts them in the same
 * order but for status and stream, so the next member is tried first.
 */
typedef enum {
    SP_JF_STRING = 0,
    SP_JF_REQUIRED,                     /* a string, missing is an error */
    SP_JF_INTEGER,
    SP_JF_VERSION,
    SP_JF_STATUS,
    SP_JF_STREAM,
    SP_JF_BOOLEAN,                      /* an int: true 1, false 0 */
    SP_JF_ATTEMPTS,                     /* an int; 1 is read as 0 */
    SP_JF_INT,                          /* an int; absent 0 */
    SP_JF_PERCENT                       /* an int; absent -1 */
} sp_journal_kind_e;

typedef struct {
    const char  *name;
    uint8_t      len;
    uint8_t      kind;                  /* sp_journal_kind_e */
    uint16_t     offset;                /* in sp_journal_record_t */
    uint16_t     size;
} sp_journal_field_t;

#define SP_JF(name, kind)                                                     \
    { #name, sizeof(#name) - 1, kind,                                         \
      offsetof(sp_journal_record_t, name),                                    \
      sizeof(((sp_journal_record_t *) 0)->name) }

#define SP_JF_NAME_MAX  32              /* longer than every name */

static const sp_journal_field_t  sp_journal_fields[] = {
    { "v", 1, SP_JF_VERSION, 0, 0 },
    SP_JF(id, SP_JF_REQUIRED),
    SP_JF(ts_ms, SP_JF_INTEGER),
    SP_JF(org_id, SP_JF_REQUIRED),
    SP_JF(api_key_id, SP_JF_STRING),
    SP_JF(provider, SP_JF_STRING),
    SP_JF(requested_model, SP_JF_STRING),
    SP_JF(model, SP_JF_STRING),
    SP_JF(input_tokens, SP_JF_INTEGER),
    SP_JF(output_tokens, SP_JF_INTEGER),
    SP_JF(cached_tokens, SP_JF_INTEGER),
    SP_JF(cache_write_tokens, SP_JF_INTEGER),
    SP_JF(cost_nano, SP_JF_INTEGER),
    SP_JF(cache, SP_JF_STRING),
    SP_JF(saved_nano, SP_JF_INTEGER),     /* absent: an older writer, 0 */
    SP_JF(latency_ms, SP_JF_INTEGER),
    SP_JF(gateway_us, SP_JF_INTEGER),
    SP_JF(department, SP_JF_STRING),
    SP_JF(project, SP_JF_STRING),
    SP_JF(agent_id, SP_JF_STRING),
    SP_JF(trace_id, SP_JF_STRING),
    SP_JF(span_id, SP_JF_STRING),
    SP_JF(parent_id, SP_JF_STRING),
    SP_JF(warnings, SP_JF_STRING),
    SP_JF(error_code, SP_JF_STRING),
    SP_JF(epoch, SP_JF_INTEGER),
    SP_JF(reserved_nano, SP_JF_INTEGER),
    SP_JF(endpoint, SP_JF_STRING),
    SP_JF(routed, SP_JF_BOOLEAN),         /* absent: an older writer, or */
    SP_JF(route_rule, SP_JF_STRING),      /* no rule, no template */
    SP_JF(attempts, SP_JF_ATTEMPTS),
    SP_JF(attempt_log, SP_JF_STRING),
    SP_JF(route_note, SP_JF_STRING),
    SP_JF(template_id, SP_JF_STRING),
    SP_JF(template_version, SP_JF_INTEGER),
    SP_JF(guard_score_milli, SP_JF_INT),  /* absent: no PII found, no */
    SP_JF(pii_types, SP_JF_STRING),       /* policy matched, no score */
    SP_JF(policy_action, SP_JF_STRING),
    SP_JF(policy_ids, SP_JF_STRING),
    SP_JF(policy_warnings, SP_JF_STRING),
    SP_JF(hallucination_pct, SP_JF_PERCENT),
    SP_JF(shadow_key_type, SP_JF_STRING),
    SP_JF(shadow_key_fp, SP_JF_STRING),
    SP_JF(client_addr, SP_JF_STRING),
    { "status", 6, SP_JF_STATUS, 0, 0 },
    { "stream", 6, SP_JF_STREAM, 0, 0 },
};

#define SP_JF_COUNT  (sizeof(sp_journal_fields) / sizeof(sp_journal_fields[0]))


/* the field a member's key names, trying hint first; -1: none of them */
static int
sp_journal_field(const sp_json_token_t *key, size_t hint)
{
    char                       buf[SP_JF_NAME_MAX];
    size_t                     i, len;
    const char                *name;
    const sp_journal_field_t  *f;

    len = (size_t) key->value;

    if (len >= sizeof(buf)) {
        return -1;
    }

    name = key->text;

    if (key->escaped) {
        sp_json_decode(key, buf, len);
        name = buf;
    }

    f = sp_journal_fields;

    if (hint < SP_JF_COUNT && f[hint].len == len
        && memcmp(f[hint].name, name, len) == 0)
    {
        return (int) hint;
    }

    for (i = 0; i < SP_JF_COUNT; i++) {
        if (f[i].len == len && memcmp(f[i].name, name, len) == 0) {
            return (int) i;
        }
    }

    return -1;
}


/*
 * The record from a line's tape, read in the order of sp_journal_fields
 * and stopping at the first member wrong (what was read stays in rec).
 * Missing and null are alike: "" or 0.
 */
static int
sp_journal_read(const sp_json_tape_t *tape, sp_journal_record_t *rec,
    char *err, size_t errlen)
{
    int                        f, flag;
    char                      *dst;
    size_t                     k, n, keep, hint;
    uint32_t                   at[SP_JF_COUNT];
    const sp_json_token_t     *t, *v;
    const sp_journal_field_t  *jf;

    t = tape->token;

    if (t[0].type != SP_JSON_OBJECT) {
        sp_errorf(err, errlen, "not a JSON object");
        return SP_ERROR;
    }

    memset(at, 0, sizeof(at));
    hint = 0;

    /* no key twice: the scanner and jansson both refuse them */
    for (k = 1; k < t[0].end; k = t[k + 1].end) {
        f = sp_journal_field(&t[k], hint);

        if (f >= 0) {
            at[f] = (uint32_t) k + 1;
            hint = (size_t) f + 1;
        }
    }

    for (f = 0; f < (int) SP_JF_COUNT; f++) {
        jf = &sp_journal_fields[f];
        v = at[f] ? &t[at[f]] : NULL;

        if (v != NULL && v->type == SP_JSON_NULL
            && jf->kind != SP_JF_VERSION)
        {
            v = NULL;
        }

        switch (jf->kind) {

        case SP_JF_VERSION:
            if (v == NULL || v->type != SP_JSON_INTEGER
                || v->value != SP_JOURNAL_VERSION)
            {
                sp_errorf(err, errlen, "field \"v\" must be %d",
                          SP_JOURNAL_VERSION);
                return SP_ERROR;
            }

            break;

        case SP_JF_STRING:
        case SP_JF_REQUIRED:
            if (v == NULL) {
                if (jf->kind == SP_JF_REQUIRED) {
                    sp_errorf(err, errlen, "field \"%s\" is missing",
                              jf->name);
                    return SP_ERROR;
                }

                break;
            }

            if (v->type != SP_JSON_STRING) {
                sp_errorf(err, errlen, "field \"%s\" must be a string",
                          jf->name);
                return SP_ERROR;
            }

            /*
             * Decoded in place, then cut as sp_field_copy would, and
             * nothing of the cut tail left: the same bytes as its copy.
             */
            dst = (char *) rec + jf->offset;
            n = sp_json_decode(v, dst, jf->size);
            keep = sp_field_fit(dst, n, jf->size);
            memset(dst + keep, 0, n - keep);
            dst[keep] = '\0';
            break;

        case SP_JF_STREAM:
            rec->stream = (v != NULL && v->type == SP_JSON_TRUE);
            break;

        case SP_JF_BOOLEAN:
            if (v != NULL && v->type != SP_JSON_TRUE
                && v->type != SP_JSON_FALSE)
            {
                sp_errorf(err, errlen, "field \"%s\" must be a boolean",
                          jf->name);
                return SP_ERROR;
            }

            flag = (v != NULL && v->type == SP_JSON_TRUE);
            memcpy((char *) rec + jf->offset, &flag, sizeof(int));
            break;

        case SP_JF_ATTEMPTS:
            if (v != NULL && v->type != SP_JSON_INTEGER) {
                sp_errorf(err, errlen, "field \"%s\" must be an integer",
                          jf->name);
                return SP_ERROR;
            }

            /* an int: what it cannot hold is no count the gateway made */
            if (v != NULL && (v->value < INT_MIN || v->value > INT_MAX)) {
                sp_errorf(err, errlen, "field \"%s\" must be 0..%d",
                          jf->name, SP_JOURNAL_ATTEMPTS_MAX);
                return SP_ERROR;
            }

            /* 0 and 1 both say that no attempt fell back: one form */
            rec->attempts = (v == NULL || v->value == 1) ? 0 : (int) v->value;
            break;

        case SP_JF_INT:
        case SP_JF_PERCENT:
            if (v != NULL && v->type != SP_JSON_INTEGER) {
                sp_errorf(err, errlen, "field \"%s\" must be an integer",
                          jf->name);
                return SP_ERROR;
            }

            /*
             * An int field: what it cannot hold is refused here, the rest
             * is sp_journal_check's to judge against the field's range.
             */
            if (v != NULL && (v->value < INT_MIN || v->value > INT_MAX)) {
                sp_errorf(err, errlen, "field \"%s\" must be %s",
                          jf->name, jf->kind == SP_JF_INT
                                    ? "0..1000" : "-1..100");
                return SP_ERROR;
            }

            flag = (v != NULL) ? (int) v->value
                               : (jf->kind == SP_JF_PERCENT ? -1 : 0);
            memcpy((char *) rec + jf->offset, &flag, sizeof(int));
            break;

        default: /* SP_JF_INTEGER, SP_JF_STATUS */
            if (v != NULL && v->type != SP_JSON_INTEGER) {
                sp_errorf(err, errlen, "field \"%s\" must be an integer",
                          jf->name);
                return SP_ERROR;
            }

            if (jf->kind == SP_JF_INTEGER) {
                if (v != NULL) {
                    memcpy((char *) rec + jf->offset, &v->value,
                           sizeof(int64_t));
                }

                break;
            }

            if (v != NULL && (v->value < 0 || v->value > 999)) {
                sp_errorf(err, errlen, "field \"status\" must be 0..999");
                return SP_ERROR;
            }

            rec->status = v ? (int) v->value : 0;
            break;
        }
    }

    if (strncmp(rec->id, "evt_", 4) != 0) {
        sp_errorf(err, errlen, "field \"id\" must start with evt_");
        return SP_ERROR;
    }

    return SP_OK;
}


/*
 * The scanner reads the line onto a tape; what it declines (invalid JSON
 * included) jansson reads, for its verdict and its error text, and its
 * tree becomes the same tape. jansson here refuses duplicate keys and
 * \u0000 (no JSON_ALLOW_NUL): the scanner's tape.nul sends those to it.
 */
int
sp_journal_parse(const char *line, size_t len, sp_journal_record_t *rec,
    char *err, size_t errlen)
{
    int              rc;
    json_t          *root;
    json_error_t     jerr;
    sp_json_tape_t   tape;

    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
        len--;
    }

    memset(rec, 0, sizeof(sp_journal_record_t));

    sp_json_tape_init(&tape);
    root = NULL;

    if (sp_json_scan(&tape, line, len) != SP_OK || tape.nul) {
        sp_json_tape_free(&tape);

        root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
        if (root == NULL) {
            sp_errorf(err, errlen, "not JSON: %s at column %d",
                      jerr.text, jerr.column);
            return SP_ERROR;
        }

        if (sp_json_tape_from_tree(&tape, root) != SP_OK) {
            sp_json_tape_free(&tape);
            json_decref(root);
            sp_errorf(err, errlen, "out of memory reading the line");
            return SP_ERROR;
        }
    }

    rc = sp_journal_read(&tape, rec, err, errlen);

    sp_json_tape_free(&tape);

    if (root != NULL) {
        json_decref(root);
    }

    return rc;
}


static int
sp_journal_check_range(const char *name, int64_t v, int64_t max, char *err,
    size_t errlen)
{
    if (v < 0 || v > max) {
        sp_errorf(err, errlen, "field \"%s\" is %lld, expected 0..%lld",
                  name, (long long) v, (long long) max);
        return SP_ERROR;
    }

    return SP_OK;
}


/* "" or 8-4-4-4-12 hex digits, either case: what PostgreSQL's uuid takes */
static int
sp_journal_uuid_or_empty(const char *s)
{
    size_t  i;

    if (s[0] == '\0') {
        return 1;
    }

    for (i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return 0;
            }

        } else if (!((s[i] >= '0' && s[i] <= '9')
                     || (s[i] >= 'a' && s[i] <= 'f')
                     || (s[i] >= 'A' && s[i] <= 'F')))
        {
            return 0;
        }
    }

    return s[36] == '\0';
}


static const char  *sp_journal_policy_actions[] = {
    "", "log", "warn", "redact", "block"
};


int
sp_journal_check(const sp_journal_record_t *rec, char *err, size_t errlen)
{
    size_t  i;
    const struct {
        const char  *name;
        int64_t      value;
        int64_t      max;
    } ranges[] = {
        { "input_tokens", rec->input_tokens, SP_JOURNAL_TOKENS_MAX },
        { "output_tokens", rec->output_tokens, SP_JOURNAL_TOKENS_MAX },
        { "cached_tokens", rec->cached_tokens, SP_JOURNAL_TOKENS_MAX },
        { "cache_write_tokens", rec->cache_write_tokens,
          SP_JOURNAL_TOKENS_MAX },
        { "cost_nano", rec->cost_nano, SP_JOURNAL_NANO_MAX },
        { "reserved_nano", rec->reserved_nano, SP_JOURNAL_NANO_MAX },
        { "saved_nano", rec->saved_nano, SP_JOURNAL_NANO_MAX },
        { "attempts", rec->attempts, SP_JOURNAL_ATTEMPTS_MAX },
        { "template_version", rec->template_version,
          SP_JOURNAL_TEMPLATE_VERSION_MAX },
    };

    for (i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
        if (sp_journal_check_range(ranges[i].name, ranges[i].value,
                                   ranges[i].max, err, errlen)
            != SP_OK)
        {
            return SP_ERROR;
        }
    }

    /* each is at most 1e12, so the sum cannot overflow */
    if (rec->cached_tokens + rec->cache_write_tokens > rec->input_tokens) {
        sp_errorf(err, errlen, "fields \"cached_tokens\" (%lld) and "
                  "\"cache_write_tokens\" (%lld) exceed \"input_tokens\" "
                  "(%lld)", (long long) rec->cached_tokens,
                  (long long) rec->cache_write_tokens,
                  (long long) rec->input_tokens);
        return SP_ERROR;
    }

    /* 0: the client left before any response (nginx logs no status) */
    if (rec->status != 0
        && (rec->status < SP_JOURNAL_STATUS_MIN
            || rec->status > SP_JOURNAL_STATUS_MAX))
    {
        sp_errorf(err, errlen, "field \"status\" is %d, expected 0 or "
                  "%d..%d", rec->status, SP_JOURNAL_STATUS_MIN,
                  SP_JOURNAL_STATUS_MAX);
        return SP_ERROR;
    }

    /* the audit column is a uuid: anything else would fail its batch */
    if (!sp_journal_uuid_or_empty(rec->template_id)) {
        sp_errorf(err, errlen, "field \"template_id\" must be a UUID "
                  "(8-4-4-4-12 hex digits)");
        return SP_ERROR;
    }

    if (rec->guard_score_milli < 0 || rec->guard_score_milli > 1000) {
        sp_errorf(err, errlen, "field \"guard_score_milli\" is %d, "
                  "expected 0..1000", rec->guard_score_milli);
        return SP_ERROR;
    }

    /* -1: not scored; the audit column is NULL then */
    if (rec->hallucination_pct < -1 || rec->hallucination_pct > 100) {
        sp_errorf(err, errlen, "field \"hallucination_pct\" is %d, "
                  "expected -1..100", rec->hallucination_pct);
        return SP_ERROR;
    }

    /* what /audit-logs filters on: the decision names and nothing else */
    for (i = 0; i < sizeof(sp_journal_policy_actions)
                    / sizeof(sp_journal_policy_actions[0]); i++)
    {
        if (strcmp(rec->policy_action, sp_journal_policy_actions[i]) == 0) {
            break;
        }
    }

    if (i == sizeof(sp_journal_policy_actions)
             / sizeof(sp_journal_policy_actions[0]))
    {
        sp_errorf(err, errlen, "field \"policy_action\" must be \"\", "
                  "\"log\", \"warn\", \"redact\" or \"block\"");
        return SP_ERROR;
    }

    return SP_OK;
}
