/*
 * Journal lines: formatted by nginx workers, parsed by controld.
 */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "sp_journal.h"


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
    sp_out_cstr(&o, "}\n");

    if (o.overflow) {
        return 0;
    }

    return (size_t) (o.p - out);
}


void
sp_field_copy(char *dst, size_t dstlen, const char *src, size_t len)
{
    if (dstlen == 0) {
        return;
    }

    if (len >= dstlen) {
        len = dstlen - 1;

        /* do not cut a UTF-8 sequence: drop continuation bytes and lead */
        while (len > 0 && ((unsigned char) src[len] & 0xc0) == 0x80) {
            len--;
        }
    }

    if (len) {
        memcpy(dst, src, len);
    }

    dst[len] = '\0';
}


static int
sp_journal_get_str(json_t *obj, const char *name, char *dst, size_t dstlen,
    int required, char *err, size_t errlen)
{
    json_t  *v;

    v = json_object_get(obj, name);

    if (v == NULL || json_is_null(v)) {
        dst[0] = '\0';

        if (required) {
            sp_errorf(err, errlen, "field \"%s\" is missing", name);
            return SP_ERROR;
        }

        return SP_OK;
    }

    if (!json_is_string(v)) {
        sp_errorf(err, errlen, "field \"%s\" must be a string",
                          name);
        return SP_ERROR;
    }

    sp_field_copy(dst, dstlen, json_string_value(v), json_string_length(v));

    return SP_OK;
}


static int
sp_journal_get_int(json_t *obj, const char *name, int64_t *dst, char *err,
    size_t errlen)
{
    json_t  *v;

    v = json_object_get(obj, name);

    if (v == NULL || json_is_null(v)) {
        *dst = 0;
        return SP_OK;
    }

    if (!json_is_integer(v)) {
        sp_errorf(err, errlen, "field \"%s\" must be an integer",
                          name);
        return SP_ERROR;
    }

    *dst = (int64_t) json_integer_value(v);

    return SP_OK;
}


#define SP_GET_STR(name, required)                                            \
    if (sp_journal_get_str(root, #name, rec->name, sizeof(rec->name),         \
                           required, err, errlen) != SP_OK)                   \
    {                                                                         \
        goto failed;                                                          \
    }

#define SP_GET_INT(name)                                                      \
    if (sp_journal_get_int(root, #name, &rec->name, err, errlen) != SP_OK) {  \
        goto failed;                                                          \
    }


int
sp_journal_parse(const char *line, size_t len, sp_journal_record_t *rec,
    char *err, size_t errlen)
{
    json_t        *root, *v;
    json_error_t   jerr;
    int64_t        status;

    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
        len--;
    }

    memset(rec, 0, sizeof(sp_journal_record_t));

    root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        sp_errorf(err, errlen, "not JSON: %s at column %d",
                          jerr.text, jerr.column);
        return SP_ERROR;
    }

    if (!json_is_object(root)) {
        sp_errorf(err, errlen, "not a JSON object");
        goto failed;
    }

    v = json_object_get(root, "v");

    if (!json_is_integer(v) || json_integer_value(v) != SP_JOURNAL_VERSION) {
        sp_errorf(err, errlen, "field \"v\" must be %d",
                          SP_JOURNAL_VERSION);
        goto failed;
    }

    SP_GET_STR(id, 1);
    SP_GET_INT(ts_ms);
    SP_GET_STR(org_id, 1);
    SP_GET_STR(api_key_id, 0);
    SP_GET_STR(provider, 0);
    SP_GET_STR(requested_model, 0);
    SP_GET_STR(model, 0);
    SP_GET_INT(input_tokens);
    SP_GET_INT(output_tokens);
    SP_GET_INT(cached_tokens);
    SP_GET_INT(cache_write_tokens);
    SP_GET_INT(cost_nano);
    SP_GET_STR(cache, 0);
    SP_GET_INT(latency_ms);
    SP_GET_INT(gateway_us);
    SP_GET_STR(department, 0);
    SP_GET_STR(project, 0);
    SP_GET_STR(agent_id, 0);
    SP_GET_STR(trace_id, 0);
    SP_GET_STR(span_id, 0);
    SP_GET_STR(parent_id, 0);
    SP_GET_STR(warnings, 0);
    SP_GET_STR(error_code, 0);
    SP_GET_INT(epoch);
    SP_GET_INT(reserved_nano);
    SP_GET_STR(endpoint, 0);

    if (sp_journal_get_int(root, "status", &status, err, errlen) != SP_OK) {
        goto failed;
    }

    if (status < 0 || status > 999) {
        sp_errorf(err, errlen, "field \"status\" must be 0..999");
        goto failed;
    }

    rec->status = (int) status;
    rec->stream = json_is_true(json_object_get(root, "stream"));

    if (strncmp(rec->id, "evt_", 4) != 0) {
        sp_errorf(err, errlen, "field \"id\" must start with evt_");
        goto failed;
    }

    json_decref(root);

    return SP_OK;

failed:

    json_decref(root);

    return SP_ERROR;
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

    return SP_OK;
}
