/*
 * Prompt templates (sp_template.h): a version validated for controld, the
 * X-Spendpol-Template reference, and a version applied to a request body.
 *
 * Applying splices bytes, as sp_request_add_stream_usage() does: the
 * client's members are copied as written, and only the values that
 * change ("messages", Anthropic's "system") are rewritten, members the
 * request lacks are added after its opening brace and
 * "spendpol_variables" is cut out with one of its commas. Every text put
 * into a JSON string is JSON string text already (a validated template,
 * body or header), so the output is valid JSON whatever the variables
 * hold; U+2028 and U+2029 are written escaped as well, for readers that
 * take JSON for JavaScript.
 *
 * A placeholder is "{{", optional spaces, a name, optional spaces, "}}",
 * as decoded text ("\u007b\u007bx}}" is one too). A "{{" with no "}}"
 * anywhere after it is text; a "{{" whose next "}}" closes something
 * other than a name ("{{bad-name}}", "{{{x}}}", "{{ }}") is refused by
 * validation rather than sent as text, so a typo cannot reach a model
 * unnoticed. There is no escape for literal "{{...}}".
 *
 * Beyond the header: a snapshot record that is not what controld writes
 * is refused with code "template_invalid" (a 500 for the module to
 * answer: the client did nothing wrong), and an output that does not fit
 * outsize (out may be NULL) with code "output_too_small" and *out_len
 * the size it needs, so that a caller may try a smaller buffer than
 * sp_template_apply_bound() first, then the exact size.
 *
 * Anthropic: system and developer messages go to "system", the others to
 * "messages". Mistral and Cohere have no developer role: it becomes
 * system there. Azure gets no "model": the deployment in the path
 * decides, and a model in the body would only mislead the pricing.
 *
 * Limits of a version: SP_TPL_MESSAGES_MAX messages,
 * SP_TEMPLATE_VARIABLE_MAX declared variables, SP_TPL_PARAMETERS_MAX
 * parameters and SP_TPL_PLACEHOLDERS_MAX placeholders in all; the last
 * is what keeps sp_template_apply_bound() finite.
 */

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "sp_scan.h"
#include "sp_template.h"


#define SP_TPL_MESSAGES_MAX      128
#define SP_TPL_PARAMETERS_MAX    32
#define SP_TPL_PLACEHOLDERS_MAX  64
#define SP_TPL_MODEL_MAX         255
#define SP_TPL_VERSION_MAX       2147483648LL      /* 2^31 */

/* an iterator's end, beside SP_OK and SP_ERROR */
#define SP_TPL_END               1

/* the most of a client's or record's text quoted in an error */
#define SP_TPL_QUOTE_MAX         64


typedef enum {
    SP_TPL_SYSTEM = 0,
    SP_TPL_DEVELOPER,
    SP_TPL_USER,
    SP_TPL_ASSISTANT
} sp_tpl_role_e;

static const char  *sp_tpl_roles[] = {
    "system", "developer", "user", "assistant"
};


/* a member of an object as written: key text without its quotes */
typedef struct {
    const char  *start;         /* the key's opening quote */
    sp_str_t     key;           /* raw, escapes as written */
    const char  *value;         /* the value's first byte */
    const char  *end;           /* one past the value */
} sp_tpl_member_t;

typedef struct {
    const char  *p;
    const char  *last;          /* the container's closing bracket */
    size_t       n;             /* items read */
} sp_tpl_iter_t;

typedef struct {
    sp_tpl_role_e  role;
    sp_str_t       content;     /* raw string text, without quotes */
} sp_tpl_message_t;

/* a value as it is written into a string: raw JSON string text */
typedef struct {
    sp_str_t     text;
    int          given;
} sp_tpl_value_t;

typedef struct {
    char            name[SP_TEMPLATE_VARIABLE_MAX + 1];
    size_t          name_len;
    int             required;
    sp_tpl_value_t  def;        /* default; given 0: none */
} sp_tpl_variable_t;

typedef struct {
    sp_str_t         key;       /* raw */
    sp_str_t         member;    /* "key": value, as written */
} sp_tpl_param_t;

typedef struct {
    int64_t            version;         /* a record's; 0 otherwise */
    size_t             nmessages;
    size_t             nvariables;
    size_t             nparameters;
    sp_str_t           model;           /* raw; data NULL: none */
    sp_tpl_message_t   messages[SP_TPL_MESSAGES_MAX];
    sp_tpl_variable_t  variables[SP_TEMPLATE_VARIABLE_MAX];
    sp_tpl_param_t     parameters[SP_TPL_PARAMETERS_MAX];
} sp_tpl_version_t;

/*
 * The output: writes what fits and counts everything, so that a buffer
 * too small is found out at the end with the size it needed.
 */
typedef struct {
    char    *p;
    size_t   len;
    size_t   size;
} sp_tpl_out_t;

/* the pieces of a body that applying changes */
typedef struct {
    const char       *open;             /* one past the '{' */
    size_t            members;
    int               has_messages;
    int               has_system;
    int               has_model;
    int               has_vars;
    sp_tpl_member_t   messages;
    sp_tpl_member_t   system;
    sp_tpl_member_t   vars;
    const char       *vars_prev_end;    /* NULL: vars is the first */
    const char       *vars_next_start;  /* NULL: vars is the last */
    uint64_t          present;          /* parameters the body has */
} sp_tpl_body_t;

/* the edits of a body, applied in the order of their positions */
typedef enum {
    SP_TPL_EDIT_INSERT = 0,             /* members added after '{' */
    SP_TPL_EDIT_MESSAGES,
    SP_TPL_EDIT_SYSTEM,
    SP_TPL_EDIT_CUT
} sp_tpl_edit_e;

typedef struct {
    const char     *from;
    const char     *to;
    sp_tpl_edit_e   kind;
} sp_tpl_edit_t;


static const char *sp_tpl_space(const char *p, const char *last);
static const char *sp_tpl_string_end(const char *p, const char *last);
static const char *sp_tpl_value_end(const char *p, const char *last);
static void sp_tpl_iter_init(sp_tpl_iter_t *it, const char *value,
    const char *end);
static int sp_tpl_next_member(sp_tpl_iter_t *it, sp_tpl_member_t *m);
static int sp_tpl_next_element(sp_tpl_iter_t *it, const char **value,
    const char **end);
static size_t sp_tpl_char(const char **pp, const char *last,
    unsigned char *out);
static int sp_tpl_raw_equal(sp_str_t a, sp_str_t b);
static int sp_tpl_key_is(const sp_tpl_member_t *m, const char *name);
static size_t sp_tpl_decode_name(sp_str_t raw, char *name, size_t size);
static int sp_tpl_name_valid(const char *name, size_t len);
static int sp_tpl_string_ok(const char *p, const char *last);
static int sp_tpl_int(const char *value, const char *end, int64_t *n);
static void sp_tpl_quote(char *buf, size_t size, const char *s, size_t len);
static int sp_tpl_json_valid(const char *text, size_t len, int allow_nul,
    char *err, size_t errlen);
static int sp_tpl_next_placeholder(const char *p, const char *last,
    const char **from, const char **to, char *name, size_t *name_len);
static int sp_tpl_parse_version(const char *json, size_t len, int record,
    sp_tpl_version_t *v, char *field, size_t fieldlen, char *err,
    size_t errlen);
static int sp_tpl_parse_messages(const sp_tpl_member_t *m,
    sp_tpl_version_t *v, char *field, size_t fieldlen, char *err,
    size_t errlen);
static int sp_tpl_parse_variables(const sp_tpl_member_t *m,
    sp_tpl_version_t *v, char *field, size_t fieldlen, char *err,
    size_t errlen);
static int sp_tpl_parse_parameters(const sp_tpl_member_t *m,
    sp_tpl_version_t *v, char *field, size_t fieldlen, char *err,
    size_t errlen);
static int sp_tpl_check_placeholders(sp_tpl_version_t *v, char *field,
    size_t fieldlen, char *err, size_t errlen);
static int sp_tpl_scalar(const char *value, const char *end,
    sp_tpl_value_t *out);
static void sp_tpl_put(sp_tpl_out_t *o, const char *s, size_t n);
static void sp_tpl_put_text(sp_tpl_out_t *o, const char *s, size_t n);
static void sp_tpl_put_content(sp_tpl_out_t *o, sp_str_t content,
    const sp_tpl_version_t *v, const sp_tpl_value_t *values);
static void sp_tpl_clear(char *s, size_t size);
static void sp_tpl_code(char *code, size_t codelen, const char *s);
static int sp_tpl_vars_take(const char *value, const char *end,
    const char *what, const sp_tpl_version_t *v, sp_tpl_value_t *values,
    char *code, size_t codelen, char *err, size_t errlen);
static int sp_tpl_vars_diagnose(const char *value, const char *last,
    const char *what, char *code, size_t codelen, char *err, size_t errlen);
static const char *sp_tpl_find(const char *value, const char *end,
    const char *name, size_t len, const char **vend);
static int sp_tpl_model_valid(const char *p, const char *last);
static int sp_tpl_id_valid(const char *p, const char *last);
static int sp_tpl_select(const char *record, size_t record_len,
    int64_t *resolved, sp_str_t label, const char **vstart,
    const char **vend, char *slug, size_t slugsize, char *id, size_t idsize,
    char *code, size_t codelen, char *err, size_t errlen);
static int sp_tpl_read_body(const char *body, size_t body_len,
    const sp_tpl_version_t *v, sp_tpl_body_t *b, char *code, size_t codelen,
    char *err, size_t errlen);
static int sp_tpl_to_messages(sp_provider_e provider, sp_tpl_role_e role);
static void sp_tpl_put_messages(sp_tpl_out_t *o, sp_provider_e provider,
    const sp_tpl_version_t *v, const sp_tpl_value_t *values);
static void sp_tpl_put_system(sp_tpl_out_t *o, const sp_tpl_version_t *v,
    const sp_tpl_value_t *values);
static sp_str_t sp_tpl_inner(const sp_tpl_member_t *m);


/* ---- reading JSON text as written ----------------------------------- */

/*
 * A small cursor over JSON text, so that members can be copied and cut
 * as the client wrote them (the tape of sp_scan.h keeps no offsets for
 * numbers and containers). It finds where values end and nothing more:
 * text it is given is checked by sp_json_scan() or jansson first where
 * its bytes reach the output, and on anything else it stays inside
 * [p, last) and fails cleanly, without recursion.
 */

static const char *
sp_tpl_space(const char *p, const char *last)
{
    while (p < last
           && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
    {
        p++;
    }

    return p;
}


/* p at an opening quote: one past the closing one, or NULL */
static const char *
sp_tpl_string_end(const char *p, const char *last)
{
    const char  *start, *q, *b;

    start = p + 1;
    q = start;

    for ( ;; ) {
        q = memchr(q, '"', last - q);

        if (q == NULL) {
            return NULL;
        }

        /* an even run of backslashes before it: the quote ends it */
        for (b = q; b > start && b[-1] == '\\'; b--) {
            /* void */
        }

        if (((q - b) & 1) == 0) {
            return q + 1;
        }

        q++;
    }
}


static const char *
sp_tpl_value_end(const char *p, const char *last)
{
    size_t       depth;
    const char  *start;

    if (p >= last) {
        return NULL;
    }

    switch (*p) {

    case '"':
        return sp_tpl_string_end(p, last);

    case '{':
    case '[':
        depth = 0;

        while (p < last) {
            switch (*p) {

            case '"':
                p = sp_tpl_string_end(p, last);
                if (p == NULL) {
                    return NULL;
                }

                continue;

            case '{':
            case '[':
                depth++;
                break;

            case '}':
            case ']':
                if (--depth == 0) {
                    return p + 1;
                }

                break;

            default:
                break;
            }

            p++;
        }

        return NULL;

    default:
        start = p;

        while (p < last && *p != ',' && *p != '}' && *p != ']'
               && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
        {
            p++;
        }

        return p == start ? NULL : p;
    }
}


/* value .. end: an object or an array as sp_tpl_value_end() found it */
static void
sp_tpl_iter_init(sp_tpl_iter_t *it, const char *value, const char *end)
{
    it->p = value + 1;
    it->last = end - 1;
    it->n = 0;
}


static int
sp_tpl_next_member(sp_tpl_iter_t *it, sp_tpl_member_t *m)
{
    const char  *p, *q;

    p = sp_tpl_space(it->p, it->last);

    if (p == it->last) {
        return SP_TPL_END;
    }

    if (it->n) {
        if (*p != ',') {
            return SP_ERROR;
        }

        p = sp_tpl_space(p + 1, it->last);
    }

    if (p == it->last || *p != '"') {
        return SP_ERROR;
    }

    q = sp_tpl_string_end(p, it->last);
    if (q == NULL) {
        return SP_ERROR;
    }

    m->start = p;
    m->key.data = p + 1;
    m->key.len = (size_t) (q - 1 - (p + 1));

    p = sp_tpl_space(q, it->last);

    if (p == it->last || *p != ':') {
        return SP_ERROR;
    }

    m->value = sp_tpl_space(p + 1, it->last);
    m->end = sp_tpl_value_end(m->value, it->last);

    if (m->end == NULL) {
        return SP_ERROR;
    }

    it->p = m->end;
    it->n++;

    return SP_OK;
}


static int
sp_tpl_next_element(sp_tpl_iter_t *it, const char **value, const char **end)
{
    const char  *p;

    p = sp_tpl_space(it->p, it->last);

    if (p == it->last) {
        return SP_TPL_END;
    }

    if (it->n) {
        if (*p != ',') {
            return SP_ERROR;
        }

        p = sp_tpl_space(p + 1, it->last);
    }

    *value = p;
    *end = sp_tpl_value_end(p, it->last);

    if (*end == NULL) {
        return SP_ERROR;
    }

    it->p = *end;
    it->n++;

    return SP_OK;
}


/*
 * One character of raw string text decoded: its bytes into out (up to 4;
 * a raw byte is taken as it is), *pp moved past it. 0: a malformed
 * escape, which only text no scanner checked can hold.
 */
static size_t
sp_tpl_char(const char **pp, const char *last, unsigned char *out)
{
    int          i, d;
    uint32_t     cp, low;
    const char  *p;

    p = *pp;

    if (*p != '\\') {
        *out = (unsigned char) *p;
        *pp = p + 1;
        return 1;
    }

    if (last - p < 2) {
        return 0;
    }

    *pp = p + 2;

    switch (p[1]) {
    case '"': case '\\': case '/':
        *out = (unsigned char) p[1];
        return 1;
    case 'b':
        *out = '\b';
        return 1;
    case 'f':
        *out = '\f';
        return 1;
    case 'n':
        *out = '\n';
        return 1;
    case 'r':
        *out = '\r';
        return 1;
    case 't':
        *out = '\t';
        return 1;
    case 'u':
        break;
    default:
        return 0;
    }

    if (last - p < 6) {
        return 0;
    }

    cp = 0;

    for (i = 2; i < 6; i++) {
        d = sp_hex_digit((unsigned char) p[i]);
        if (d < 0) {
            return 0;
        }

        cp = cp * 16 + (uint32_t) d;
    }

    *pp = p + 6;

    if (cp >= 0xdc00 && cp <= 0xdfff) {
        return 0;
    }

    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (last - p < 12 || p[6] != '\\' || p[7] != 'u') {
            return 0;
        }

        low = 0;

        for (i = 8; i < 12; i++) {
            d = sp_hex_digit((unsigned char) p[i]);
            if (d < 0) {
                return 0;
            }

            low = low * 16 + (uint32_t) d;
        }

        if (low < 0xdc00 || low > 0xdfff) {
            return 0;
        }

        *pp = p + 12;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);

        out[0] = (unsigned char) (0xf0 | (cp >> 18));
        out[1] = (unsigned char) (0x80 | ((cp >> 12) & 0x3f));
        out[2] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
        out[3] = (unsigned char) (0x80 | (cp & 0x3f));
        return 4;
    }

    if (cp < 0x80) {
        out[0] = (unsigned char) cp;
        return 1;
    }

    if (cp < 0x800) {
        out[0] = (unsigned char) (0xc0 | (cp >> 6));
        out[1] = (unsigned char) (0x80 | (cp & 0x3f));
        return 2;
    }

    out[0] = (unsigned char) (0xe0 | (cp >> 12));
    out[1] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
    out[2] = (unsigned char) (0x80 | (cp & 0x3f));
    return 3;
}


/* two raw string texts that decode to the same bytes */
static int
sp_tpl_raw_equal(sp_str_t a, sp_str_t b)
{
    size_t         n, k;
    const char    *p, *q, *plast, *qlast;
    unsigned char  c[4], d[4];

    if (a.len == b.len && memcmp(a.data, b.data, a.len) == 0) {
        return 1;
    }

    /* the usual answer: the first characters differ, neither escaped */
    if (a.len && b.len && a.data[0] != b.data[0] && a.data[0] != '\\'
        && b.data[0] != '\\')
    {
        return 0;
    }

    if (memchr(a.data, '\\', a.len) == NULL
        && memchr(b.data, '\\', b.len) == NULL)
    {
        return 0;
    }

    p = a.data;
    plast = a.data + a.len;
    q = b.data;
    qlast = b.data + b.len;

    while (p < plast && q < qlast) {
        n = sp_tpl_char(&p, plast, c);
        k = sp_tpl_char(&q, qlast, d);

        if (n == 0 || n != k || memcmp(c, d, n) != 0) {
            return 0;
        }
    }

    return p == plast && q == qlast;
}


static int
sp_tpl_key_is(const sp_tpl_member_t *m, const char *name)
{
    return sp_tpl_raw_equal(m->key, sp_str_from(name));
}


/* raw text decoded into name (size bytes, NUL-terminated); its length,
 * or size when it does not fit or is malformed */
static size_t
sp_tpl_decode_name(sp_str_t raw, char *name, size_t size)
{
    size_t         n, len;
    const char    *p, *last;
    unsigned char  c[4];

    p = raw.data;
    last = raw.data + raw.len;
    len = 0;

    while (p < last) {
        n = sp_tpl_char(&p, last, c);

        if (n == 0 || len + n >= size) {
            return size;
        }

        memcpy(name + len, c, n);
        len += n;
    }

    name[len] = '\0';

    return len;
}


/* [A-Za-z_][A-Za-z0-9_]*, at most SP_TEMPLATE_VARIABLE_MAX */
static int
sp_tpl_name_valid(const char *name, size_t len)
{
    size_t         i;
    unsigned char  c;

    if (len == 0 || len > SP_TEMPLATE_VARIABLE_MAX
        || (name[0] >= '0' && name[0] <= '9'))
    {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = (unsigned char) name[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_'))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * Raw string text as JSON allows it: escapes well formed (surrogates in
 * pairs), no control character, UTF-8 in its shortest form. Only for
 * naming the culprit in text the scanner refused.
 */
static int
sp_tpl_string_ok(const char *p, const char *last)
{
    size_t                n;
    unsigned char         c[4];
    const unsigned char  *u;

    while (p < last) {
        u = (const unsigned char *) p;

        if (*u == '\\') {
            if (sp_tpl_char(&p, last, c) == 0) {
                return 0;
            }

            continue;
        }

        if (*u < 0x20) {
            return 0;
        }

        if (*u < 0x80) {
            p++;
            continue;
        }

        n = (*u >= 0xc2 && *u <= 0xdf) ? 2
            : (*u >= 0xe0 && *u <= 0xef) ? 3
            : (*u >= 0xf0 && *u <= 0xf4) ? 4 : 0;

        if (n == 0 || (size_t) (last - p) < n
            || (u[1] & 0xc0) != 0x80
            || (n > 2 && (u[2] & 0xc0) != 0x80)
            || (n > 3 && (u[3] & 0xc0) != 0x80)
            || (*u == 0xe0 && u[1] < 0xa0)
            || (*u == 0xed && u[1] > 0x9f)
            || (*u == 0xf0 && u[1] < 0x90)
            || (*u == 0xf4 && u[1] > 0x8f))
        {
            return 0;
        }

        p += n;
    }

    return 1;
}


/* an integer written in plain digits (and '-'), at most 18 digits */
static int
sp_tpl_int(const char *value, const char *end, int64_t *n)
{
    int          negative;
    int64_t      v;
    const char  *p;

    p = value;
    negative = 0;

    if (p < end && *p == '-') {
        negative = 1;
        p++;
    }

    if (p == end || end - p > 18) {
        return SP_ERROR;
    }

    for (v = 0; p < end; p++) {
        if (*p < '0' || *p > '9') {
            return SP_ERROR;
        }

        v = v * 10 + (*p - '0');
    }

    *n = negative ? -v : v;

    return SP_OK;
}


/* at most SP_TPL_QUOTE_MAX bytes of s for an error, odd bytes as '?' */
static void
sp_tpl_quote(char *buf, size_t size, const char *s, size_t len)
{
    size_t  i, n;

    n = len < size - 4 ? len : size - 4;

    for (i = 0; i < n; i++) {
        buf[i] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"') ? s[i] : '?';
    }

    if (n < len) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }

    buf[n] = '\0';
}


/*
 * JSON as jansson reads it (JSON_REJECT_DUPLICATES; NUL in strings only
 * when allow_nul): the scanner, or jansson for what it declines.
 */
static int
sp_tpl_json_valid(const char *text, size_t len, int allow_nul, char *err,
    size_t errlen)
{
    int             rc;
    json_t         *root;
    json_error_t    jerr;
    sp_json_tape_t  tape;

    sp_json_tape_init(&tape);
    rc = sp_json_scan(&tape, text, len);

    if (rc == SP_OK && (allow_nul || !tape.nul)) {
        sp_json_tape_free(&tape);
        return SP_OK;
    }

    sp_json_tape_free(&tape);

    root = json_loadb(text, len,
                      JSON_REJECT_DUPLICATES | (allow_nul ? JSON_ALLOW_NUL
                                                          : 0),
                      &jerr);
    if (root != NULL) {
        json_decref(root);
        return SP_OK;
    }

    sp_errorf(err, errlen, "%s (line %d, column %d)", jerr.text, jerr.line,
              jerr.column);

    return SP_ERROR;
}


/* ---- slugs and references ------------------------------------------- */

int
sp_template_slug_valid(const char *s, size_t len)
{
    size_t         i;
    unsigned char  c;

    if (s == NULL || len == 0 || len > SP_TEMPLATE_SLUG_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = (unsigned char) s[i];

        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
            continue;
        }

        if (i > 0 && (c == '-' || c == '_')) {
            continue;
        }

        return 0;
    }

    return 1;
}


int
sp_template_ref_parse(const char *ref, size_t len, sp_str_t *slug,
    int64_t *version, sp_str_t *label, char *err, size_t errlen)
{
    size_t       i, n;
    int64_t      v;
    const char  *at, *tail;
    char         quoted[SP_TPL_QUOTE_MAX + 4];

    slug->data = ref;
    slug->len = 0;
    label->data = ref;
    label->len = 0;
    *version = 0;

    if (ref == NULL || len == 0) {
        sp_errorf(err, errlen, "the template reference is empty: give "
                  "\"slug\", \"slug@3\" or \"slug@label\"");
        return SP_ERROR;
    }

    at = memchr(ref, '@', len);
    n = at ? (size_t) (at - ref) : len;

    if (n == 0) {
        sp_errorf(err, errlen, "the template reference has no slug before "
                  "'@': give \"slug\", \"slug@3\" or \"slug@label\"");
        return SP_ERROR;
    }

    if (!sp_template_slug_valid(ref, n)) {
        sp_tpl_quote(quoted, sizeof(quoted), ref, n);
        sp_errorf(err, errlen, "\"%s\" is not a template slug: lowercase "
                  "letters, digits, '-' and '_', starting with a letter or "
                  "a digit, at most %d characters", quoted,
                  SP_TEMPLATE_SLUG_MAX);
        return SP_ERROR;
    }

    if (at == NULL) {
        slug->len = n;
        return SP_OK;
    }

    tail = at + 1;
    n = len - (size_t) (tail - ref);

    if (memchr(tail, '@', n) != NULL) {
        sp_errorf(err, errlen, "the template reference has more than one "
                  "'@': give \"slug\", \"slug@3\" or \"slug@label\"");
        return SP_ERROR;
    }

    if (n == 0) {
        sp_errorf(err, errlen, "nothing after '@' in the template "
                  "reference: give a version number or a label");
        return SP_ERROR;
    }

    for (i = 0; i < n && tail[i] >= '0' && tail[i] <= '9'; i++) {
        /* void */
    }

    if (i == n) {
        /* all digits: a version number (so a label is never all digits) */
        v = 0;

        for (i = 0; i < n && v <= SP_TPL_VERSION_MAX; i++) {
            v = v * 10 + (tail[i] - '0');
        }

        if (tail[0] == '0' || v > SP_TPL_VERSION_MAX) {
            sp_tpl_quote(quoted, sizeof(quoted), tail, n);
            sp_errorf(err, errlen, "version \"%s\" is not a version number: "
                      "1 to %lld, without leading zeros", quoted,
                      (long long) SP_TPL_VERSION_MAX);
            return SP_ERROR;
        }

        slug->len = (size_t) (at - ref);
        *version = v;
        return SP_OK;
    }

    if (!sp_template_slug_valid(tail, n)) {
        sp_tpl_quote(quoted, sizeof(quoted), tail, n);
        sp_errorf(err, errlen, "\"%s\" is neither a version number nor a "
                  "label: a label is lowercase letters, digits, '-' and "
                  "'_', starting with a letter or a digit, at most %d "
                  "characters", quoted, SP_TEMPLATE_LABEL_MAX);
        return SP_ERROR;
    }

    slug->len = (size_t) (at - ref);
    label->data = tail;
    label->len = n;

    return SP_OK;
}


/* ---- a version ------------------------------------------------------ */

/*
 * The next placeholder of raw content [p, last). SP_OK: *from .. *to is
 * it as written, its name decoded into name (SP_TEMPLATE_VARIABLE_MAX + 1
 * bytes). SP_TPL_END: there is none. SP_ERROR: *from .. *to is a "{{"
 * closed by a "}}" that holds something else than a name, or the text
 * is malformed (*from: where).
 */
static int
sp_tpl_next_placeholder(const char *p, const char *last, const char **from,
    const char **to, char *name, size_t *name_len)
{
    int            state;
    size_t         n;
    const char    *open, *q, *s;
    unsigned char  c[4], d[4];

    enum { sw_lead = 0, sw_name, sw_trail, sw_bad };

    while (p < last) {
        open = p;

        /* the common case: plain text up to the next '{' or escape */
        if (*p != '{' && *p != '\\') {
            p++;
            continue;
        }

        n = sp_tpl_char(&p, last, c);

        if (n == 0) {
            *from = open;
            *to = p;
            return SP_ERROR;
        }

        if (n != 1 || c[0] != '{' || p == last) {
            continue;
        }

        q = p;

        if (sp_tpl_char(&q, last, d) != 1 || d[0] != '{') {
            continue;
        }

        /* "{{" at open: what is there up to the next "}}" */
        state = sw_lead;
        *name_len = 0;

        while (q < last) {
            s = q;
            n = sp_tpl_char(&q, last, c);

            if (n == 0) {
                *from = s;
                *to = q;
                return SP_ERROR;
            }

            if (n == 1 && c[0] == '}') {
                s = q;

                if (s < last && sp_tpl_char(&s, last, d) == 1 && d[0] == '}')
                {
                    *from = open;
                    *to = s;
                    name[*name_len] = '\0';

                    return (state == sw_name || state == sw_trail)
                           ? SP_OK : SP_ERROR;
                }

                state = sw_bad;
                continue;
            }

            if (n == 1 && c[0] == ' ') {
                state = (state == sw_name) ? sw_trail : state;
                continue;
            }

            if (n == 1 && (state == sw_lead || state == sw_name)
                && ((c[0] >= 'a' && c[0] <= 'z')
                    || (c[0] >= 'A' && c[0] <= 'Z') || c[0] == '_'
                    || (c[0] >= '0' && c[0] <= '9' && *name_len > 0))
                && *name_len < SP_TEMPLATE_VARIABLE_MAX)
            {
                name[(*name_len)++] = (char) c[0];
                state = sw_name;
                continue;
            }

            state = sw_bad;
        }

        /* no "}}" after it: this and the rest are text */
        return SP_TPL_END;
    }

    return SP_TPL_END;
}


/*
 * A version object into v. record: it comes from a snapshot record, has
 * a "version" member and may have members this code does not know
 * (written by a newer controld); otherwise unknown members are refused.
 */
static int
sp_tpl_parse_version(const char *json, size_t len, int record,
    sp_tpl_version_t *v, char *field, size_t fieldlen, char *err,
    size_t errlen)
{
    int              rc, has_messages;
    char             quoted[SP_TPL_QUOTE_MAX + 4];
    const char      *p, *last, *end;
    sp_tpl_iter_t    it;
    sp_tpl_member_t  m;

    v->version = 0;
    v->nmessages = 0;
    v->nvariables = 0;
    v->nparameters = 0;
    v->model.data = NULL;
    v->model.len = 0;
    has_messages = 0;

    sp_tpl_clear(field, fieldlen);

    if (sp_tpl_json_valid(json, len, 0, err, errlen) != SP_OK) {
        return SP_ERROR;
    }

    last = json + len;
    p = sp_tpl_space(json, last);
    end = sp_tpl_value_end(p, last);

    if (p == last || *p != '{' || end == NULL) {
        sp_errorf(err, errlen, "expected a JSON object with messages, "
                  "variables, model and parameters");
        return SP_ERROR;
    }

    sp_tpl_iter_init(&it, p, end);

    while ((rc = sp_tpl_next_member(&it, &m)) == SP_OK) {

        if (sp_tpl_key_is(&m, "messages")) {
            if (sp_tpl_parse_messages(&m, v, field, fieldlen, err, errlen)
                != SP_OK)
            {
                return SP_ERROR;
            }

            has_messages = 1;

        } else if (sp_tpl_key_is(&m, "variables")) {
            if (sp_tpl_parse_variables(&m, v, field, fieldlen, err, errlen)
                != SP_OK)
            {
                return SP_ERROR;
            }

        } else if (sp_tpl_key_is(&m, "parameters")) {
            if (sp_tpl_parse_parameters(&m, v, field, fieldlen, err, errlen)
                != SP_OK)
            {
                return SP_ERROR;
            }

        } else if (sp_tpl_key_is(&m, "model")) {
            /* it may end up in X-Spendpol-Model: printable, unescaped */
            if (*m.value != '"' || m.end - m.value < 3
                || m.end - m.value - 2 > SP_TPL_MODEL_MAX
                || !sp_tpl_model_valid(m.value + 1, m.end - 1))
            {
                sp_errorf(field, fieldlen, "model");
                sp_errorf(err, errlen, "expected a model name: 1 to %d "
                          "printable ASCII characters, no space, quote or "
                          "backslash", SP_TPL_MODEL_MAX);
                return SP_ERROR;
            }

            v->model.data = m.value + 1;
            v->model.len = (size_t) (m.end - m.value - 2);

        } else if (record && sp_tpl_key_is(&m, "version")) {
            if (sp_tpl_int(m.value, m.end, &v->version) != SP_OK
                || v->version < 1 || v->version > SP_TPL_VERSION_MAX)
            {
                sp_errorf(field, fieldlen, "version");
                sp_errorf(err, errlen, "expected an integer from 1");
                return SP_ERROR;
            }

        } else if (!record) {
            sp_tpl_quote(quoted, sizeof(quoted), m.key.data, m.key.len);
            sp_errorf(field, fieldlen, "%s", quoted);
            sp_errorf(err, errlen, "unknown member: a version has "
                      "messages, variables, model and parameters");
            return SP_ERROR;
        }
    }

    if (rc != SP_TPL_END) {
        sp_errorf(err, errlen, "malformed JSON");
        return SP_ERROR;
    }

    if (!has_messages) {
        sp_errorf(field, fieldlen, "messages");
        sp_errorf(err, errlen, "required: an array of messages with role "
                  "and content");
        return SP_ERROR;
    }

    return sp_tpl_check_placeholders(v, field, fieldlen, err, errlen);
}


static int
sp_tpl_parse_messages(const sp_tpl_member_t *m, sp_tpl_version_t *v,
    char *field, size_t fieldlen, char *err, size_t errlen)
{
    int              rc, erc, has_role, has_content;
    size_t           i, r;
    char             quoted[SP_TPL_QUOTE_MAX + 4];
    const char      *value, *end;
    sp_tpl_iter_t    it, mit;
    sp_tpl_member_t  mm;

    if (*m->value != '[') {
        sp_errorf(field, fieldlen, "messages");
        sp_errorf(err, errlen, "expected an array of messages with role "
                  "and content");
        return SP_ERROR;
    }

    sp_tpl_iter_init(&it, m->value, m->end);

    for (i = 0; (rc = sp_tpl_next_element(&it, &value, &end)) == SP_OK; i++)
    {
        if (i == SP_TPL_MESSAGES_MAX) {
            sp_errorf(field, fieldlen, "messages");
            sp_errorf(err, errlen, "at most %d messages",
                      SP_TPL_MESSAGES_MAX);
            return SP_ERROR;
        }

        if (*value != '{') {
            sp_errorf(field, fieldlen, "messages[%zu]", i);
            sp_errorf(err, errlen, "expected an object with role and "
                      "content");
            return SP_ERROR;
        }

        has_role = 0;
        has_content = 0;
        sp_tpl_iter_init(&mit, value, end);

        while ((erc = sp_tpl_next_member(&mit, &mm)) == SP_OK) {

            if (sp_tpl_key_is(&mm, "role")) {
                for (r = 0; r < sizeof(sp_tpl_roles) / sizeof(char *); r++) {
                    if (*mm.value == '"'
                        && sp_tpl_raw_equal((sp_str_t) {
                                                mm.value + 1,
                                                (size_t) (mm.end - mm.value
                                                          - 2) },
                                            sp_str_from(sp_tpl_roles[r])))
                    {
                        break;
                    }
                }

                if (r == sizeof(sp_tpl_roles) / sizeof(char *)) {
                    sp_errorf(field, fieldlen, "messages[%zu].role", i);
                    sp_errorf(err, errlen, "expected system, developer, "
                              "user or assistant");
                    return SP_ERROR;
                }

                v->messages[i].role = (sp_tpl_role_e) r;
                has_role = 1;

            } else if (sp_tpl_key_is(&mm, "content")) {
                if (*mm.value != '"') {
                    sp_errorf(field, fieldlen, "messages[%zu].content", i);
                    sp_errorf(err, errlen, "expected a string");
                    return SP_ERROR;
                }

                v->messages[i].content.data = mm.value + 1;
                v->messages[i].content.len = (size_t) (mm.end - mm.value
                                                       - 2);
                has_content = 1;

            } else {
                sp_tpl_quote(quoted, sizeof(quoted), mm.key.data,
                             mm.key.len);
                sp_errorf(field, fieldlen, "messages[%zu].%s", i, quoted);
                sp_errorf(err, errlen, "unknown member: a message has role "
                          "and content");
                return SP_ERROR;
            }
        }

        if (erc != SP_TPL_END) {
            sp_errorf(field, fieldlen, "messages[%zu]", i);
            sp_errorf(err, errlen, "malformed JSON");
            return SP_ERROR;
        }

        if (!has_role || !has_content) {
            sp_errorf(field, fieldlen, "messages[%zu].%s", i,
                      has_role ? "content" : "role");
            sp_errorf(err, errlen, "required");
            return SP_ERROR;
        }
    }

    if (rc != SP_TPL_END) {
        sp_errorf(field, fieldlen, "messages");
        sp_errorf(err, errlen, "malformed JSON");
        return SP_ERROR;
    }

    if (i == 0) {
        sp_errorf(field, fieldlen, "messages");
        sp_errorf(err, errlen, "expected at least one message");
        return SP_ERROR;
    }

    v->nmessages = i;

    return SP_OK;
}


static int
sp_tpl_parse_variables(const sp_tpl_member_t *m, sp_tpl_version_t *v,
    char *field, size_t fieldlen, char *err, size_t errlen)
{
    int                 rc, erc, has_required;
    size_t              n;
    char                quoted[SP_TPL_QUOTE_MAX + 4];
    sp_tpl_iter_t       it, vit;
    sp_tpl_member_t     vm, mm;
    sp_tpl_variable_t  *var;

    if (*m->value != '{') {
        sp_errorf(field, fieldlen, "variables");
        sp_errorf(err, errlen, "expected an object: {\"name\": "
                  "{\"required\": true} or {\"default\": \"...\"}}");
        return SP_ERROR;
    }

    sp_tpl_iter_init(&it, m->value, m->end);

    while ((rc = sp_tpl_next_member(&it, &vm)) == SP_OK) {

        if (v->nvariables == SP_TEMPLATE_VARIABLE_MAX) {
            sp_errorf(field, fieldlen, "variables");
            sp_errorf(err, errlen, "at most %d variables",
                      SP_TEMPLATE_VARIABLE_MAX);
            return SP_ERROR;
        }

        var = &v->variables[v->nvariables];
        n = sp_tpl_decode_name(vm.key, var->name, sizeof(var->name));

        if (n == sizeof(var->name) || !sp_tpl_name_valid(var->name, n)) {
            sp_tpl_quote(quoted, sizeof(quoted), vm.key.data, vm.key.len);
            sp_errorf(field, fieldlen, "variables.%s", quoted);
            sp_errorf(err, errlen, "not a variable name: letters, digits "
                      "and '_', not starting with a digit, at most %d "
                      "characters", SP_TEMPLATE_VARIABLE_MAX);
            return SP_ERROR;
        }

        var->name_len = n;
        var->required = 0;
        var->def.given = 0;
        has_required = 0;

        if (*vm.value != '{') {
            sp_errorf(field, fieldlen, "variables.%s", var->name);
            sp_errorf(err, errlen, "expected {\"required\": true} or "
                      "{\"default\": a string, number or boolean}");
            return SP_ERROR;
        }

        sp_tpl_iter_init(&vit, vm.value, vm.end);

        while ((erc = sp_tpl_next_member(&vit, &mm)) == SP_OK) {

            if (sp_tpl_key_is(&mm, "required")) {
                if (*mm.value != 't' && *mm.value != 'f') {
                    sp_errorf(field, fieldlen, "variables.%s.required",
                              var->name);
                    sp_errorf(err, errlen, "expected true or false");
                    return SP_ERROR;
                }

                var->required = (*mm.value == 't');
                has_required = 1;

            } else if (sp_tpl_key_is(&mm, "default")) {
                if (sp_tpl_scalar(mm.value, mm.end, &var->def) != SP_OK) {
                    sp_errorf(field, fieldlen, "variables.%s.default",
                              var->name);
                    sp_errorf(err, errlen, "expected a string, a number or "
                              "a boolean");
                    return SP_ERROR;
                }

            } else {
                sp_tpl_quote(quoted, sizeof(quoted), mm.key.data,
                             mm.key.len);
                sp_errorf(field, fieldlen, "variables.%s.%s", var->name,
                          quoted);
                sp_errorf(err, errlen, "unknown member: a variable has "
                          "required or default");
                return SP_ERROR;
            }
        }

        if (erc != SP_TPL_END) {
            sp_errorf(field, fieldlen, "variables.%s", var->name);
            sp_errorf(err, errlen, "malformed JSON");
            return SP_ERROR;
        }

        if (var->required == var->def.given) {
            sp_errorf(field, fieldlen, "variables.%s", var->name);
            sp_errorf(err, errlen, var->required
                      ? "a variable is required or has a default, not both"
                      : (has_required
                         ? "not required and without a default: give "
                           "\"required\": true or a \"default\""
                         : "give \"required\": true or a \"default\""));
            return SP_ERROR;
        }

        v->nvariables++;
    }

    if (rc != SP_TPL_END) {
        sp_errorf(field, fieldlen, "variables");
        sp_errorf(err, errlen, "malformed JSON");
        return SP_ERROR;
    }

    return SP_OK;
}


static int
sp_tpl_parse_parameters(const sp_tpl_member_t *m, sp_tpl_version_t *v,
    char *field, size_t fieldlen, char *err, size_t errlen)
{
    int              rc;
    size_t           i;
    char             quoted[SP_TPL_QUOTE_MAX + 4];
    sp_tpl_iter_t    it;
    sp_tpl_member_t  pm;

    static const char  *reserved[] = {
        "messages", "model", "stream", "spendpol_variables"
    };

    if (*m->value != '{') {
        sp_errorf(field, fieldlen, "parameters");
        sp_errorf(err, errlen, "expected an object of request members, "
                  "such as {\"temperature\": 0.2, \"max_tokens\": 300}");
        return SP_ERROR;
    }

    sp_tpl_iter_init(&it, m->value, m->end);

    while ((rc = sp_tpl_next_member(&it, &pm)) == SP_OK) {

        for (i = 0; i < sizeof(reserved) / sizeof(char *); i++) {
            if (sp_tpl_key_is(&pm, reserved[i])) {
                sp_tpl_quote(quoted, sizeof(quoted), pm.key.data,
                             pm.key.len);
                sp_errorf(field, fieldlen, "parameters.%s", quoted);
                sp_errorf(err, errlen, "a template may not set %s in its "
                          "parameters%s", reserved[i],
                          i < 2 ? ": it has its own member for it" : "");
                return SP_ERROR;
            }
        }

        if (v->nparameters == SP_TPL_PARAMETERS_MAX) {
            sp_errorf(field, fieldlen, "parameters");
            sp_errorf(err, errlen, "at most %d parameters",
                      SP_TPL_PARAMETERS_MAX);
            return SP_ERROR;
        }

        v->parameters[v->nparameters].key = pm.key;
        v->parameters[v->nparameters].member.data = pm.start;
        v->parameters[v->nparameters].member.len = (size_t) (pm.end
                                                             - pm.start);
        v->nparameters++;
    }

    if (rc != SP_TPL_END) {
        sp_errorf(field, fieldlen, "parameters");
        sp_errorf(err, errlen, "malformed JSON");
        return SP_ERROR;
    }

    return SP_OK;
}


/* every placeholder well formed and declared, and not too many */
static int
sp_tpl_check_placeholders(sp_tpl_version_t *v, char *field,
    size_t fieldlen, char *err, size_t errlen)
{
    int          rc;
    size_t       i, k, count, name_len;
    char         name[SP_TEMPLATE_VARIABLE_MAX + 1];
    char         quoted[SP_TPL_QUOTE_MAX + 4];
    const char  *p, *last, *from, *to;

    count = 0;

    for (i = 0; i < v->nmessages; i++) {
        p = v->messages[i].content.data;
        last = p + v->messages[i].content.len;

        for ( ;; ) {
            rc = sp_tpl_next_placeholder(p, last, &from, &to, name,
                                         &name_len);
            if (rc == SP_TPL_END) {
                break;
            }

            if (rc != SP_OK) {
                sp_errorf(field, fieldlen, "messages[%zu].content", i);
                sp_tpl_quote(quoted, sizeof(quoted), from,
                             (size_t) (to - from));
                sp_errorf(err, errlen, "\"%s\" is not a placeholder: write "
                          "{{name}}, a name being letters, digits and '_', "
                          "not starting with a digit, at most %d "
                          "characters", quoted, SP_TEMPLATE_VARIABLE_MAX);
                return SP_ERROR;
            }

            for (k = 0; k < v->nvariables; k++) {
                if (v->variables[k].name_len == name_len
                    && memcmp(v->variables[k].name, name, name_len) == 0)
                {
                    break;
                }
            }

            if (k == v->nvariables) {
                sp_errorf(field, fieldlen, "messages[%zu].content", i);
                sp_errorf(err, errlen, "{{%s}} is used but not declared in "
                          "variables", name);
                return SP_ERROR;
            }

            if (++count > SP_TPL_PLACEHOLDERS_MAX) {
                sp_errorf(field, fieldlen, "messages[%zu].content", i);
                sp_errorf(err, errlen, "at most %d placeholders in a "
                          "version", SP_TPL_PLACEHOLDERS_MAX);
                return SP_ERROR;
            }

            p = to;
        }
    }

    sp_tpl_clear(field, fieldlen);

    return SP_OK;
}


/* a string, number or boolean as text for a string; SP_ERROR otherwise */
static int
sp_tpl_scalar(const char *value, const char *end, sp_tpl_value_t *out)
{
    switch (*value) {

    case '"':
        out->text.data = value + 1;
        out->text.len = (size_t) (end - value - 2);
        break;

    case '{':
    case '[':
    case 'n':
        return SP_ERROR;

    default:
        /* a number, true or false: its text as written */
        out->text.data = value;
        out->text.len = (size_t) (end - value);
        break;
    }

    out->given = 1;

    return SP_OK;
}


int
sp_template_validate(const char *json, size_t len, char *field,
    size_t fieldlen, char *err, size_t errlen)
{
    sp_tpl_version_t  v;

    return sp_tpl_parse_version(json, len, 0, &v, field, fieldlen, err,
                                errlen);
}


/* ---- applying ------------------------------------------------------- */

static void
sp_tpl_put(sp_tpl_out_t *o, const char *s, size_t n)
{
    if (o->len <= o->size && n <= o->size - o->len) {
        memcpy(o->p + o->len, s, n);
    }

    o->len += n;
}


#define sp_tpl_put_lit(o, s)  sp_tpl_put(o, s, sizeof(s) - 1)


/* JSON string text, with U+2028 and U+2029 escaped */
static void
sp_tpl_put_text(sp_tpl_out_t *o, const char *s, size_t n)
{
    const char  *p, *last, *e;

    p = s;
    last = s + n;

    while ((e = memchr(p, 0xe2, last - p)) != NULL) {
        if (last - e >= 3 && (unsigned char) e[1] == 0x80
            && ((unsigned char) e[2] == 0xa8 || (unsigned char) e[2] == 0xa9))
        {
            sp_tpl_put(o, p, (size_t) (e - p));
            sp_tpl_put(o, (unsigned char) e[2] == 0xa8 ? "\\u2028"
                                                       : "\\u2029", 6);
            p = e + 3;
            continue;
        }

        sp_tpl_put(o, p, (size_t) (e + 1 - p));
        p = e + 1;
    }

    sp_tpl_put(o, p, (size_t) (last - p));
}


/* a message's content with its placeholders replaced */
static void
sp_tpl_put_content(sp_tpl_out_t *o, sp_str_t content,
    const sp_tpl_version_t *v, const sp_tpl_value_t *values)
{
    size_t       k, name_len;
    char         name[SP_TEMPLATE_VARIABLE_MAX + 1];
    const char  *p, *last, *from, *to;

    p = content.data;
    last = p + content.len;

    /* checked when the version was parsed: each is SP_OK and declared */
    while (sp_tpl_next_placeholder(p, last, &from, &to, name, &name_len)
           == SP_OK)
    {
        sp_tpl_put_text(o, p, (size_t) (from - p));

        for (k = 0; k < v->nvariables; k++) {
            if (v->variables[k].name_len == name_len
                && memcmp(v->variables[k].name, name, name_len) == 0)
            {
                sp_tpl_put_text(o, values[k].text.data, values[k].text.len);
                break;
            }
        }

        p = to;
    }

    sp_tpl_put_text(o, p, (size_t) (last - p));
}


size_t
sp_template_apply_bound(size_t record_len, size_t body_len,
    size_t vars_len)
{
    size_t  value, placeholders, fixed;

    /*
     * Each placeholder is at least 5 bytes of the record ("{{a}}") and
     * becomes one value at most twice its length (U+2028: 3 bytes, 6
     * written), a value being in the body, the header or the record.
     * The rest is the body, the record's text (twice, for escapes) and
     * a little JSON around them.
     */
    value = body_len;
    value = vars_len > value ? vars_len : value;
    value = record_len > value ? record_len : value;

    placeholders = record_len / 5 + 1;
    placeholders = placeholders < SP_TPL_PLACEHOLDERS_MAX
                   ? placeholders : SP_TPL_PLACEHOLDERS_MAX;

    if (value > (SIZE_MAX / 4 - 4096) / (2 * SP_TPL_PLACEHOLDERS_MAX + 4)) {
        return SIZE_MAX;
    }

    fixed = body_len + 3 * record_len + 1024;

    return fixed + placeholders * 2 * value;
}


static void
sp_tpl_clear(char *s, size_t size)
{
    if (s != NULL && size > 0) {
        s[0] = '\0';
    }
}


static void
sp_tpl_code(char *code, size_t codelen, const char *s)
{
    if (code != NULL && codelen > 0) {
        snprintf(code, codelen, "%s", s);
    }
}


/*
 * The variables object of the body or the header, from value .. end,
 * in one pass: every value a string, number or boolean, and those of the
 * version's variables not given yet taken into values. what names the
 * source.
 */
static int
sp_tpl_vars_take(const char *value, const char *end, const char *what,
    const sp_tpl_version_t *v, sp_tpl_value_t *values, char *code,
    size_t codelen, char *err, size_t errlen)
{
    int              rc;
    size_t           k;
    char             quoted[SP_TPL_QUOTE_MAX + 4];
    const char      *type;
    sp_tpl_iter_t    it;
    sp_tpl_member_t  m;
    sp_tpl_value_t   scalar;

    if (*value != '{') {
        sp_tpl_code(code, codelen, "invalid_template_variables");
        sp_errorf(err, errlen, "%s must be a JSON object of variable "
                  "values", what);
        return SP_ERROR;
    }

    sp_tpl_iter_init(&it, value, end);

    while ((rc = sp_tpl_next_member(&it, &m)) == SP_OK) {
        if (sp_tpl_scalar(m.value, m.end, &scalar) == SP_OK) {
            for (k = 0; k < v->nvariables; k++) {
                if (!values[k].given
                    && sp_tpl_raw_equal(m.key,
                                        (sp_str_t) { v->variables[k].name,
                                                     v->variables[k].name_len
                                                   }))
                {
                    values[k] = scalar;
                    break;
                }
            }

            continue;
        }

        type = *m.value == '{' ? "an object"
               : (*m.value == '[' ? "an array" : "null");

        sp_tpl_quote(quoted, sizeof(quoted), m.key.data, m.key.len);
        sp_tpl_code(code, codelen, "invalid_template_variables");
        sp_errorf(err, errlen, "variable \"%s\" in %s is %s: a value is a "
                  "string, a number or a boolean", quoted, what, type);
        return SP_ERROR;
    }

    if (rc != SP_TPL_END) {
        sp_tpl_code(code, codelen, "invalid_template_variables");
        sp_errorf(err, errlen, "%s is not valid JSON", what);
        return SP_ERROR;
    }

    return SP_OK;
}


/*
 * Text the scanner refused that holds variables at value .. last: the
 * first variable whose string is not JSON text (invalid UTF-8, a control
 * character, a lone surrogate) named in err. SP_OK: none found.
 */
static int
sp_tpl_vars_diagnose(const char *value, const char *last, const char *what,
    char *code, size_t codelen, char *err, size_t errlen)
{
    char             quoted[SP_TPL_QUOTE_MAX + 4];
    const char      *end;
    sp_tpl_iter_t    it;
    sp_tpl_member_t  m;

    end = sp_tpl_value_end(value, last);

    if (end == NULL || *value != '{') {
        return SP_OK;
    }

    sp_tpl_iter_init(&it, value, end);

    while (sp_tpl_next_member(&it, &m) == SP_OK) {
        if (*m.value == '"' && !sp_tpl_string_ok(m.value + 1, m.end - 1)) {
            sp_tpl_quote(quoted, sizeof(quoted), m.key.data, m.key.len);
            sp_tpl_code(code, codelen, "invalid_template_variables");
            sp_errorf(err, errlen, "the value of variable \"%s\" in %s is "
                      "not valid JSON text (invalid UTF-8, a raw control "
                      "character or a lone surrogate)", quoted, what);
            return SP_ERROR;
        }
    }

    return SP_OK;
}


/* the value of name in the object value .. end, or NULL */
static const char *
sp_tpl_find(const char *value, const char *end, const char *name,
    size_t len, const char **vend)
{
    sp_tpl_iter_t    it;
    sp_tpl_member_t  m;

    sp_tpl_iter_init(&it, value, end);

    while (sp_tpl_next_member(&it, &m) == SP_OK) {
        if (sp_tpl_raw_equal(m.key, (sp_str_t) { name, len })) {
            *vend = m.end;
            return m.value;
        }
    }

    return NULL;
}


/* 0x21..0x7e but '"' and '\\' */
static int
sp_tpl_model_valid(const char *p, const char *last)
{
    for ( ; p < last; p++) {
        if (*p < 0x21 || *p > 0x7e || *p == '"' || *p == '\\') {
            return 0;
        }
    }

    return 1;
}


/* [0-9A-Za-z-]+ */
static int
sp_tpl_id_valid(const char *p, const char *last)
{
    if (p == last) {
        return 0;
    }

    for ( ; p < last; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z')
              || (*p >= 'A' && *p <= 'Z') || *p == '-'))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * The record's version to apply, as text: *vstart .. *vend. The record
 * is the snapshot's, written by controld; it is not trusted further than
 * the cursor's bounds, and the version found is parsed in full.
 */
static int
sp_tpl_select(const char *record, size_t record_len, int64_t *resolved,
    sp_str_t label, const char **vstart, const char **vend, char *slug,
    size_t slugsize, char *id, size_t idsize, char *code, size_t codelen,
    char *err, size_t errlen)
{
    int              rc;
    int64_t          latest, n, version;
    char             quoted[SP_TPL_QUOTE_MAX + 4];
    const char      *p, *last, *end, *value, *vlast;
    sp_tpl_iter_t    it, vit;
    sp_tpl_member_t  m, vm, labels, versions, idm;

    version = *resolved;
    last = record + record_len;
    vlast = NULL;
    quoted[0] = '\0';
    memset(&labels, 0, sizeof(sp_tpl_member_t));
    memset(&versions, 0, sizeof(sp_tpl_member_t));
    memset(&idm, 0, sizeof(sp_tpl_member_t));
    p = sp_tpl_space(record, last);
    end = sp_tpl_value_end(p, last);
    latest = 0;
    memcpy(slug, "?", 2);
    id[0] = '\0';

    if (p == last || *p != '{' || end == NULL) {
        goto malformed;
    }

    sp_tpl_iter_init(&it, p, end);

    while ((rc = sp_tpl_next_member(&it, &m)) == SP_OK) {
        if (sp_tpl_key_is(&m, "id")) {
            idm = m;

        } else if (sp_tpl_key_is(&m, "slug") && *m.value == '"') {
            sp_tpl_quote(slug, slugsize, m.value + 1,
                         (size_t) (m.end - m.value - 2));

        } else if (sp_tpl_key_is(&m, "latest")) {
            if (sp_tpl_int(m.value, m.end, &latest) != SP_OK) {
                goto malformed;
            }

        } else if (sp_tpl_key_is(&m, "labels") && *m.value == '{') {
            labels = m;

        } else if (sp_tpl_key_is(&m, "versions") && *m.value == '[') {
            versions = m;
        }
    }

    if (rc != SP_TPL_END || versions.value == NULL) {
        goto malformed;
    }

    /* a UUID, bound for a response header: nothing else passes */
    if (idm.value == NULL || *idm.value != '"'
        || (size_t) (idm.end - idm.value - 2) >= idsize
        || !sp_tpl_id_valid(idm.value + 1, idm.end - 1))
    {
        goto malformed;
    }

    memcpy(id, idm.value + 1, idm.end - idm.value - 2);
    id[idm.end - idm.value - 2] = '\0';

    if (label.len) {
        value = labels.value ? sp_tpl_find(labels.value, labels.end,
                                           label.data, label.len, &vlast)
                             : NULL;

        sp_tpl_quote(quoted, sizeof(quoted), label.data, label.len);

        if (value == NULL) {
            sp_tpl_code(code, codelen, "template_label_not_found");
            sp_errorf(err, errlen, "template %s has no label \"%s\"", slug,
                      quoted);
            return SP_ERROR;
        }

        if (sp_tpl_int(value, vlast, &version) != SP_OK || version < 1) {
            goto malformed;
        }

    } else if (version == 0) {
        version = latest;
    }

    *resolved = version;

    sp_tpl_iter_init(&it, versions.value, versions.end);

    while ((rc = sp_tpl_next_element(&it, &value, &vlast)) == SP_OK) {
        if (*value != '{') {
            goto malformed;
        }

        sp_tpl_iter_init(&vit, value, vlast);

        while (sp_tpl_next_member(&vit, &vm) == SP_OK) {
            if (sp_tpl_key_is(&vm, "version")) {
                if (sp_tpl_int(vm.value, vm.end, &n) == SP_OK
                    && n == version)
                {
                    *vstart = value;
                    *vend = vlast;
                    return SP_OK;
                }

                break;
            }
        }
    }

    if (rc != SP_TPL_END) {
        goto malformed;
    }

    sp_tpl_code(code, codelen, "template_version_not_found");

    if (label.len) {
        sp_errorf(err, errlen, "label \"%s\" of template %s points to "
                  "version %lld, which does not exist", quoted, slug,
                  (long long) version);

    } else {
        sp_errorf(err, errlen, "template %s has no version %lld (the "
                  "latest is %lld)", slug, (long long) version,
                  (long long) latest);
    }

    return SP_ERROR;

malformed:

    sp_tpl_code(code, codelen, "template_invalid");
    sp_errorf(err, errlen, "the snapshot record of template %s is "
              "malformed", slug);

    return SP_ERROR;
}


/* the body's members that applying changes; SP_ERROR: invalid_json */
static int
sp_tpl_read_body(const char *body, size_t body_len,
    const sp_tpl_version_t *v, sp_tpl_body_t *b, char *code,
    size_t codelen, char *err, size_t errlen)
{
    int              rc;
    size_t           k;
    char             jerr[160];
    const char      *p, *last, *end, *prev_end;
    sp_tpl_iter_t    it;
    sp_tpl_member_t  m;

    memset(b, 0, sizeof(sp_tpl_body_t));

    last = body + body_len;
    p = sp_tpl_space(body, last);

    if (p == last || *p != '{') {
        sp_tpl_code(code, codelen, "invalid_json");
        sp_errorf(err, errlen, "the request body is not a JSON object");
        return SP_ERROR;
    }

    if (sp_tpl_json_valid(body, body_len, 1, jerr, sizeof(jerr)) != SP_OK) {

        /* a variable that is not JSON text is named, if one is the cause */
        end = sp_tpl_value_end(p, last);

        if (end != NULL) {
            sp_tpl_iter_init(&it, p, end);

            while (sp_tpl_next_member(&it, &m) == SP_OK) {
                if (sp_tpl_key_is(&m, "spendpol_variables")
                    && sp_tpl_vars_diagnose(m.value, m.end,
                                            "spendpol_variables", code,
                                            codelen, err, errlen)
                       != SP_OK)
                {
                    return SP_ERROR;
                }
            }
        }

        sp_tpl_code(code, codelen, "invalid_json");
        sp_errorf(err, errlen, "the request body is not valid JSON: %s",
                  jerr);
        return SP_ERROR;
    }

    end = sp_tpl_value_end(p, last);
    b->open = p + 1;
    prev_end = NULL;

    sp_tpl_iter_init(&it, p, end);

    while ((rc = sp_tpl_next_member(&it, &m)) == SP_OK) {
        b->members++;

        if (b->has_vars && b->vars_next_start == NULL) {
            b->vars_next_start = m.start;
        }

        if (sp_tpl_key_is(&m, "messages")) {
            b->has_messages = 1;
            b->messages = m;

        } else if (sp_tpl_key_is(&m, "system")) {
            b->has_system = 1;
            b->system = m;

        } else if (sp_tpl_key_is(&m, "model")) {
            b->has_model = 1;

        } else if (sp_tpl_key_is(&m, "spendpol_variables")) {
            b->has_vars = 1;
            b->vars = m;
            b->vars_prev_end = prev_end;

        } else {
            for (k = 0; k < v->nparameters; k++) {
                if (sp_tpl_raw_equal(m.key, v->parameters[k].key)) {
                    b->present |= (uint64_t) 1 << k;
                }
            }
        }

        prev_end = m.end;
    }

    if (rc != SP_TPL_END) {
        /* the scanner accepted it: only a bug here could get this far */
        sp_tpl_code(code, codelen, "invalid_json");
        sp_errorf(err, errlen, "the request body is not valid JSON");
        return SP_ERROR;
    }

    return SP_OK;
}


/* template messages for "messages": those not sent to "system" */
static int
sp_tpl_to_messages(sp_provider_e provider, sp_tpl_role_e role)
{
    return provider != SP_PROVIDER_ANTHROPIC
           || (role != SP_TPL_SYSTEM && role != SP_TPL_DEVELOPER);
}


static void
sp_tpl_put_messages(sp_tpl_out_t *o, sp_provider_e provider,
    const sp_tpl_version_t *v, const sp_tpl_value_t *values)
{
    size_t         i, n;
    sp_tpl_role_e  role;

    for (i = 0, n = 0; i < v->nmessages; i++) {
        role = v->messages[i].role;

        if (!sp_tpl_to_messages(provider, role)) {
            continue;
        }

        /* Mistral and Cohere know no developer role: it is system there */
        if (role == SP_TPL_DEVELOPER && (provider == SP_PROVIDER_MISTRAL
                                         || provider == SP_PROVIDER_COHERE))
        {
            role = SP_TPL_SYSTEM;
        }

        if (n++) {
            sp_tpl_put_lit(o, ",");
        }

        sp_tpl_put_lit(o, "{\"role\":\"");
        sp_tpl_put(o, sp_tpl_roles[role], strlen(sp_tpl_roles[role]));
        sp_tpl_put_lit(o, "\",\"content\":\"");
        sp_tpl_put_content(o, v->messages[i].content, v, values);
        sp_tpl_put_lit(o, "\"}");
    }
}


/* Anthropic: the system and developer messages, a blank line apart */
static void
sp_tpl_put_system(sp_tpl_out_t *o, const sp_tpl_version_t *v,
    const sp_tpl_value_t *values)
{
    size_t  i, n;

    for (i = 0, n = 0; i < v->nmessages; i++) {
        if (sp_tpl_to_messages(SP_PROVIDER_ANTHROPIC, v->messages[i].role)) {
            continue;
        }

        if (n++) {
            sp_tpl_put_lit(o, "\\n\\n");
        }

        sp_tpl_put_content(o, v->messages[i].content, v, values);
    }
}


/* an array's elements as written, length 0 when it has none */
static sp_str_t
sp_tpl_inner(const sp_tpl_member_t *m)
{
    sp_str_t     inner;
    const char  *p;

    p = sp_tpl_space(m->value + 1, m->end - 1);

    /* up to the closing bracket: the text after the last element too */
    inner.data = p;
    inner.len = (size_t) (m->end - 1 - p);

    return inner;
}


int
sp_template_apply(sp_provider_e provider, const char *record,
    size_t record_len, int64_t version, sp_str_t label, const char *body,
    size_t body_len, const char *header_vars, size_t header_vars_len,
    char *out, size_t outsize, size_t *out_len, sp_template_result_t *res,
    char *code, size_t codelen, char *err, size_t errlen)
{
    int                to_messages, to_system, first;
    size_t             i, k, nedits, kept;
    char               slug[SP_TPL_QUOTE_MAX + 4], id[SP_ID_LEN];
    char               field[96], why[160];
    const char        *vstart, *vend, *hp, *hlast, *hend;
    const char        *pos;
    sp_str_t           inner;
    sp_tpl_out_t       o;
    sp_tpl_body_t      b;
    sp_tpl_edit_t      edits[4], swap;
    sp_tpl_value_t     values[SP_TEMPLATE_VARIABLE_MAX];
    sp_tpl_version_t   v;

    *out_len = 0;
    sp_tpl_clear(code, codelen);
    sp_tpl_clear(err, errlen);

    if (provider != SP_PROVIDER_OPENAI && provider != SP_PROVIDER_AZURE
        && provider != SP_PROVIDER_MISTRAL && provider != SP_PROVIDER_COHERE
        && provider != SP_PROVIDER_ANTHROPIC)
    {
        sp_tpl_code(code, codelen, "template_provider_unsupported");
        sp_errorf(err, errlen, "prompt templates apply to chat messages of "
                  "openai, azure, mistral, cohere (v2) and anthropic, not "
                  "to %s", provider == SP_PROVIDER_UNKNOWN
                           ? "this provider" : sp_provider_name(provider));
        return SP_ERROR;
    }

    if (record == NULL || body == NULL) {
        record_len = record ? record_len : 0;
        body_len = body ? body_len : 0;
        record = record ? record : "";
        body = body ? body : "";
    }

    /* the version */
    if (sp_tpl_select(record, record_len, &version, label, &vstart, &vend,
                      slug, sizeof(slug), id, sizeof(id), code, codelen, err,
                      errlen)
        != SP_OK)
    {
        return SP_ERROR;
    }

    if (sp_tpl_parse_version(vstart, (size_t) (vend - vstart), 1, &v, field,
                             sizeof(field), why, sizeof(why))
        != SP_OK)
    {
        sp_tpl_code(code, codelen, "template_invalid");
        sp_errorf(err, errlen, "template %s version %lld in the snapshot is "
                  "malformed: %s%s%s", slug, (long long) version, field,
                  field[0] ? ": " : "", why);
        return SP_ERROR;
    }

    to_messages = 0;
    to_system = 0;

    for (i = 0; i < v.nmessages; i++) {
        if (sp_tpl_to_messages(provider, v.messages[i].role)) {
            to_messages = 1;

        } else {
            to_system = 1;
        }
    }

    /* the body */
    if (sp_tpl_read_body(body, body_len, &v, &b, code, codelen, err, errlen)
        != SP_OK)
    {
        return SP_ERROR;
    }

    if (to_messages && b.has_messages && *b.messages.value != '['
        && *b.messages.value != 'n')
    {
        sp_tpl_code(code, codelen, "invalid_json");
        sp_errorf(err, errlen, "\"messages\" must be an array to add the "
                  "template's messages to");
        return SP_ERROR;
    }

    if (to_system && b.has_system && *b.system.value != '"'
        && *b.system.value != '[' && *b.system.value != 'n')
    {
        sp_tpl_code(code, codelen, "invalid_json");
        sp_errorf(err, errlen, "\"system\" must be a string or an array of "
                  "content blocks to add the template's system text to");
        return SP_ERROR;
    }

    /* the variables: the body's, then the header's, then the defaults */
    for (k = 0; k < v.nvariables; k++) {
        values[k].given = 0;
    }

    if (b.has_vars
        && sp_tpl_vars_take(b.vars.value, b.vars.end, "spendpol_variables",
                            &v, values, code, codelen, err, errlen)
           != SP_OK)
    {
        return SP_ERROR;
    }

    hp = NULL;
    hend = NULL;

    if (header_vars != NULL && header_vars_len > 0) {
        hlast = header_vars + header_vars_len;
        hp = sp_tpl_space(header_vars, hlast);

        if (hp == hlast || *hp != '{') {
            sp_tpl_code(code, codelen, "invalid_template_variables");
            sp_errorf(err, errlen, "X-Spendpol-Template-Variables must be a "
                      "JSON object of variable values");
            return SP_ERROR;
        }

        if (sp_tpl_json_valid(header_vars, header_vars_len, 1, why,
                              sizeof(why))
            != SP_OK)
        {
            if (sp_tpl_vars_diagnose(hp, hlast,
                                     "X-Spendpol-Template-Variables", code,
                                     codelen, err, errlen)
                != SP_OK)
            {
                return SP_ERROR;
            }

            sp_tpl_code(code, codelen, "invalid_template_variables");
            sp_errorf(err, errlen, "X-Spendpol-Template-Variables is not "
                      "valid JSON: %s", why);
            return SP_ERROR;
        }

        hend = sp_tpl_value_end(hp, hlast);

        if (sp_tpl_vars_take(hp, hend, "X-Spendpol-Template-Variables",
                             &v, values, code, codelen, err, errlen)
            != SP_OK)
        {
            return SP_ERROR;
        }
    }

    for (k = 0; k < v.nvariables; k++) {
        if (values[k].given) {
            continue;
        }

        if (v.variables[k].def.given) {
            values[k] = v.variables[k].def;
            continue;
        }

        sp_tpl_code(code, codelen, "template_variable_missing");
        sp_errorf(err, errlen, "variable \"%s\" is required by template %s "
                  "version %lld and was not given", v.variables[k].name,
                  slug, (long long) v.version);
        return SP_ERROR;
    }

    /*
     * The edits, by position: members added after '{', "messages" and
     * "system" rewritten, "spendpol_variables" cut with the comma after
     * it (or, last, the one before it).
     */
    nedits = 0;
    edits[nedits++] = (sp_tpl_edit_t) { b.open, b.open, SP_TPL_EDIT_INSERT };

    if (to_messages && b.has_messages) {
        edits[nedits++] = (sp_tpl_edit_t) { b.messages.value, b.messages.end,
                                            SP_TPL_EDIT_MESSAGES };
    }

    if (to_system && b.has_system) {
        edits[nedits++] = (sp_tpl_edit_t) { b.system.value, b.system.end,
                                            SP_TPL_EDIT_SYSTEM };
    }

    kept = b.members;

    if (b.has_vars) {
        kept--;

        if (b.vars_next_start != NULL) {
            edits[nedits++] = (sp_tpl_edit_t) { b.vars.start,
                                                b.vars_next_start,
                                                SP_TPL_EDIT_CUT };

        } else {
            edits[nedits++] = (sp_tpl_edit_t) {
                                  b.vars_prev_end ? b.vars_prev_end
                                                  : b.vars.start,
                                  b.vars.end, SP_TPL_EDIT_CUT };
        }
    }

    for (i = 1; i < nedits; i++) {
        for (k = i; k > 0 && edits[k].from < edits[k - 1].from; k--) {
            swap = edits[k];
            edits[k] = edits[k - 1];
            edits[k - 1] = swap;
        }
    }

    o.p = out;
    o.len = 0;
    o.size = out ? outsize : 0;
    pos = body;

    for (i = 0; i < nedits; i++) {
        sp_tpl_put(&o, pos, (size_t) (edits[i].from - pos));
        pos = edits[i].to;

        switch (edits[i].kind) {

        case SP_TPL_EDIT_INSERT:
            first = 1;

            if (to_messages && !b.has_messages) {
                sp_tpl_put_lit(&o, "\"messages\":[");
                sp_tpl_put_messages(&o, provider, &v, values);
                sp_tpl_put_lit(&o, "]");
                first = 0;
            }

            if (to_system && !b.has_system) {
                sp_tpl_put(&o, ",", !first);
                sp_tpl_put_lit(&o, "\"system\":\"");
                sp_tpl_put_system(&o, &v, values);
                sp_tpl_put_lit(&o, "\"");
                first = 0;
            }

            /* Azure: the deployment in the path decides the model */
            if (v.model.data != NULL && !b.has_model
                && provider != SP_PROVIDER_AZURE)
            {
                sp_tpl_put(&o, ",", !first);
                sp_tpl_put_lit(&o, "\"model\":\"");
                sp_tpl_put_text(&o, v.model.data, v.model.len);
                sp_tpl_put_lit(&o, "\"");
                first = 0;
            }

            for (k = 0; k < v.nparameters; k++) {
                if (b.present & ((uint64_t) 1 << k)) {
                    continue;
                }

                /*
                 * "system" is read apart from the other members: the
                 * request's own, or the template's system messages,
                 * win over a "system" parameter
                 */
                if ((b.has_system || to_system)
                    && sp_tpl_raw_equal(v.parameters[k].key,
                                        sp_str_from("system")))
                {
                    continue;
                }

                sp_tpl_put(&o, ",", !first);
                sp_tpl_put(&o, v.parameters[k].member.data,
                           v.parameters[k].member.len);
                first = 0;
            }

            if (!first && kept > 0) {
                sp_tpl_put_lit(&o, ",");
            }

            break;

        case SP_TPL_EDIT_MESSAGES:
            sp_tpl_put_lit(&o, "[");
            sp_tpl_put_messages(&o, provider, &v, values);

            if (*b.messages.value == '[') {
                inner = sp_tpl_inner(&b.messages);

                if (inner.len) {
                    sp_tpl_put_lit(&o, ",");
                    sp_tpl_put(&o, inner.data, inner.len);
                }
            }

            sp_tpl_put_lit(&o, "]");
            break;

        case SP_TPL_EDIT_SYSTEM:
            if (*b.system.value == '[') {
                sp_tpl_put_lit(&o, "[{\"type\":\"text\",\"text\":\"");
                sp_tpl_put_system(&o, &v, values);
                sp_tpl_put_lit(&o, "\"}");
                inner = sp_tpl_inner(&b.system);

                if (inner.len) {
                    sp_tpl_put_lit(&o, ",");
                    sp_tpl_put(&o, inner.data, inner.len);
                }

                sp_tpl_put_lit(&o, "]");
                break;
            }

            sp_tpl_put_lit(&o, "\"");
            sp_tpl_put_system(&o, &v, values);

            if (*b.system.value == '"' && b.system.end - b.system.value > 2)
            {
                sp_tpl_put_lit(&o, "\\n\\n");
                sp_tpl_put(&o, b.system.value + 1,
                           (size_t) (b.system.end - b.system.value - 2));
            }

            sp_tpl_put_lit(&o, "\"");
            break;

        case SP_TPL_EDIT_CUT:
            break;
        }
    }

    sp_tpl_put(&o, pos, (size_t) (body + body_len - pos));

    *out_len = o.len;

    if (out == NULL || o.len > outsize) {
        sp_tpl_code(code, codelen, "output_too_small");
        sp_errorf(err, errlen, "the body with the template applied needs "
                  "%zu bytes, %zu given", o.len, outsize);
        return SP_ERROR;
    }

    if (res != NULL) {
        memcpy(res->id, id, sizeof(id));
        res->version = v.version;
    }

    return SP_OK;
}
