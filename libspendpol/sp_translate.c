/*
 * Cross-provider translation (sp_translate.h): OpenAI chat completions to
 * and from Anthropic Messages, Gemini generateContent, Cohere v2 chat,
 * Mistral and Azure OpenAI.
 *
 * Input is read once onto a tape (sp_json_scan, or jansson's tree where
 * the scanner declines, as sp_request.c does) and written out by copying
 * its values as they were written: strings keep their escapes, numbers
 * their digits, so nothing is decoded and encoded again that need not be.
 * A table of where each tape token starts in the input, built in one pass
 * over it, gives the text of any value whichever reader made the tape
 * (jansson keeps an object's members in document order, and with
 * duplicates refused its tape has the scanner's tokens).
 *
 * One writer serves sp_translate_check() and sp_translate_request(): the
 * check runs the same translation into no buffer, so the two cannot
 * disagree on what is faithful.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sp_translate.h"
#include "sp_scan.h"


/* what a function name may be for targets that repeat it (Gemini's
 * functionResponse names the call): OpenAI, Anthropic and Gemini all cap
 * names at 64 characters, and the bound of the output relies on it */
#define SP_TR_NAME_MAX        64
/* the longest id a caller may give: sp_translate_stream_t.id */
#define SP_TR_ID_MAX          63
/* a raw number longer than this is not read as a value (strtod copy) */
#define SP_TR_NUMBER_MAX      63
/* the most candidates (choices) an answer may hold */
#define SP_TR_CHOICES_MAX     SP_REQUEST_MAX_CHOICES
/* what one chunk costs beside its payload: id, created, the model (any
 * byte of it may need a six-byte escape), names, the usage numbers */
#define SP_TR_CHUNK_OVERHEAD  (320 + SP_TR_ID_MAX + 6 * SP_FIELD_LEN)


/* ---- the writer ----------------------------------------------------- */

typedef struct {
    char    *buf;       /* NULL: only measured (sp_translate_check) */
    size_t   size;
    size_t   len;       /* what was or would have been written: more than
                           size when the buffer was too small */
} sp_tr_out_t;


static void
sp_tr_put(sp_tr_out_t *o, const char *s, size_t n)
{
    if (n == 0) {
        return;
    }

    if (o->buf != NULL && o->len <= o->size && n <= o->size - o->len) {
        memcpy(o->buf + o->len, s, n);
    }

    o->len += n;
}


/* a string literal only: "" s does not compile for a pointer */
#define sp_tr_lit(o, s)  sp_tr_put(o, "" s, sizeof(s) - 1)


static void
sp_tr_cstr(sp_tr_out_t *o, const char *s)
{
    sp_tr_put(o, s, strlen(s));
}


static void
sp_tr_int(sp_tr_out_t *o, int64_t v)
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

    sp_tr_put(o, p, (size_t) (buf + sizeof(buf) - p));
}


/* bytes as the inside of a JSON string: quotes, backslashes, controls */
static void
sp_tr_escape(sp_tr_out_t *o, const char *s, size_t len)
{
    static const char  hex[] = "0123456789abcdef";
    size_t             i, run;
    unsigned char      c;
    char               esc[6];

    run = 0;

    for (i = 0; i < len; i++) {
        c = (unsigned char) s[i];

        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }

        sp_tr_put(o, s + run, i - run);
        run = i + 1;

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char) c;
            sp_tr_put(o, esc, 2);
            continue;
        }

        esc[0] = '\\';
        esc[1] = 'u';
        esc[2] = '0';
        esc[3] = '0';
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 0xf];
        sp_tr_put(o, esc, 6);
    }

    sp_tr_put(o, s + run, len - run);
}


static void
sp_tr_sep(sp_tr_out_t *o, int *first)
{
    if (!*first) {
        sp_tr_lit(o, ",");
    }

    *first = 0;
}


/* ---- the input: a tape and where each token starts ------------------- */

typedef struct {
    const char             *text;
    size_t                  len;
    sp_json_tape_t          tape;
    const sp_json_token_t  *t;
    uint32_t               *pos;
    json_t                 *root;       /* jansson's tree, when used */
    uint32_t                local[SP_JSON_TAPE_LOCAL];
} sp_tr_doc_t;


static int
sp_tr_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}


/* from an opening quote to past the closing one */
static size_t
sp_tr_skip_string(const char *s, size_t p, size_t len)
{
    for (p++; p < len; p++) {
        if (s[p] == '\\') {
            p++;

        } else if (s[p] == '"') {
            return p + 1;
        }
    }

    return len;
}


static size_t
sp_tr_skip_scalar(const char *s, size_t p, size_t len)
{
    while (p < len && s[p] != ',' && s[p] != ']' && s[p] != '}'
           && !sp_tr_space(s[p]))
    {
        p++;
    }

    return p;
}


/* the tokens in document order, as the tape holds them: where each starts */
static int
sp_tr_doc_positions(sp_tr_doc_t *d)
{
    size_t       p, k, n;
    const char  *s;

    n = d->tape.n;

    if (n > SP_JSON_TAPE_LOCAL) {
        d->pos = malloc(n * sizeof(uint32_t));
        if (d->pos == NULL) {
            d->pos = d->local;
            return SP_ERROR;
        }
    }

    s = d->text;
    k = 0;
    p = 0;

    while (p < d->len) {
        switch (s[p]) {
        case ' ': case '\t': case '\n': case '\r':
        case ',': case ':': case '}': case ']':
            p++;
            continue;
        }

        if (k == n) {
            return SP_ERROR;
        }

        d->pos[k++] = (uint32_t) p;

        if (s[p] == '"') {
            p = sp_tr_skip_string(s, p, d->len);

        } else if (s[p] == '{' || s[p] == '[') {
            p++;

        } else {
            p = sp_tr_skip_scalar(s, p, d->len);
        }
    }

    return k == n ? SP_OK : SP_ERROR;
}


static void
sp_tr_doc_free(sp_tr_doc_t *d)
{
    if (d->pos != d->local) {
        free(d->pos);
        d->pos = d->local;
    }

    sp_json_tape_free(&d->tape);

    if (d->root != NULL) {
        json_decref(d->root);
        d->root = NULL;
    }
}


/* SP_OK: text is JSON (an object or an array) on the tape; else SP_ERROR */
static int
sp_tr_doc_load(sp_tr_doc_t *d, const char *text, size_t len)
{
    json_error_t  jerr;

    d->text = text;
    d->len = len;
    d->root = NULL;
    d->pos = d->local;
    d->t = NULL;
    sp_json_tape_init(&d->tape);

    if (len == 0 || len >= UINT32_MAX / 2) {
        return SP_ERROR;
    }

    if (sp_json_scan(&d->tape, text, len) != SP_OK) {
        sp_json_tape_free(&d->tape);

        /* declined or invalid: jansson decides, as sp_request.c does */
        d->root = json_loadb(text, len,
                             JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
        if (d->root == NULL) {
            return SP_ERROR;
        }

        if (sp_json_tape_from_tree(&d->tape, d->root) != SP_OK) {
            return SP_ERROR;
        }
    }

    d->t = d->tape.token;

    return sp_tr_doc_positions(d);
}


/* past the end of value i in the text */
static size_t
sp_tr_end(const sp_tr_doc_t *d, size_t i)
{
    size_t       p, depth;
    const char  *s;

    s = d->text;
    p = d->pos[i];
    depth = 0;

    while (p < d->len) {
        switch (s[p]) {

        case '"':
            p = sp_tr_skip_string(s, p, d->len);
            if (depth == 0) {
                return p;
            }
            continue;

        case '{':
        case '[':
            depth++;
            p++;
            continue;

        case '}':
        case ']':
            p++;
            if (--depth == 0) {
                return p;
            }
            continue;
        }

        if (depth == 0) {
            return sp_tr_skip_scalar(s, p, d->len);
        }

        p++;
    }

    return p;
}


/* value i as written */
static void
sp_tr_raw(sp_tr_out_t *o, const sp_tr_doc_t *d, size_t i)
{
    sp_tr_put(o, d->text + d->pos[i], sp_tr_end(d, i) - d->pos[i]);
}


/* the inside of string i as written (escapes kept) */
static void
sp_tr_inner(sp_tr_out_t *o, const sp_tr_doc_t *d, size_t i)
{
    sp_tr_put(o, d->text + d->pos[i] + 1, sp_tr_end(d, i) - d->pos[i] - 2);
}


/*
 * Value i without the whitespace between tokens; as_string: escaped as
 * the inside of a JSON string (tool arguments are JSON in a string).
 */
static void
sp_tr_compact(sp_tr_out_t *o, const sp_tr_doc_t *d, size_t i, int as_string)
{
    size_t       p, end, run;
    int          in_string;
    const char  *s;

    s = d->text;
    p = d->pos[i];
    end = sp_tr_end(d, i);
    run = p;
    in_string = 0;

    for ( /* void */ ; p < end; p++) {

        if (in_string) {
            if (s[p] == '\\') {
                if (as_string) {
                    sp_tr_put(o, s + run, p - run);
                    sp_tr_lit(o, "\\\\");
                    run = p + 1;
                }

                /* the escaped character: '"' and '\\' need one more */
                p++;

                if (as_string && (s[p] == '"' || s[p] == '\\')) {
                    sp_tr_lit(o, "\\");
                }

                continue;
            }

            if (s[p] == '"') {
                in_string = 0;

                if (as_string) {
                    sp_tr_put(o, s + run, p - run);
                    sp_tr_lit(o, "\\\"");
                    run = p + 1;
                }
            }

            continue;
        }

        if (s[p] == '"') {
            in_string = 1;

            if (as_string) {
                sp_tr_put(o, s + run, p - run);
                sp_tr_lit(o, "\\\"");
                run = p + 1;
            }

            continue;
        }

        if (sp_tr_space(s[p])) {
            sp_tr_put(o, s + run, p - run);
            run = p + 1;
        }
    }

    sp_tr_put(o, s + run, end - run);
}


/* member name of object i, or 0 (i 0 is the root; absent is 0 too) */
static size_t
sp_tr_get(const sp_tr_doc_t *d, size_t i, const char *name)
{
    size_t  v;

    if (d->t[i].type != SP_JSON_OBJECT) {
        return 0;
    }

    v = sp_json_get(&d->tape, i, name);

    /* null is taken as absent, as the providers' SDKs send it */
    return (v && d->t[v].type == SP_JSON_NULL) ? 0 : v;
}


#define sp_tr_member(d, i, name)  ((i) ? sp_tr_get(d, i, name) : 0)


static int
sp_tr_type(const sp_tr_doc_t *d, size_t i, sp_json_type_e type)
{
    return i != 0 && d->t[i].type == type;
}


/* 1 when token i is a string equal to s */
static int
sp_tr_eq(const sp_tr_doc_t *d, size_t i, const char *s)
{
    char                    buf[64];
    size_t                  n;
    const sp_json_token_t  *t;

    if (!sp_tr_type(d, i, SP_JSON_STRING)) {
        return 0;
    }

    t = &d->t[i];
    n = strlen(s);

    if ((size_t) t->value != n) {
        return 0;
    }

    if (!t->escaped) {
        return memcmp(t->text, s, n) == 0;
    }

    return n <= sizeof(buf) && sp_json_decode(t, buf, n) == n
           && memcmp(buf, s, n) == 0;
}


/* 1 when strings a and b (of documents da, db) say the same */
static int
sp_tr_same(const sp_tr_doc_t *d, size_t a, size_t b)
{
    char                    x[256], y[256];
    size_t                  n;
    const sp_json_token_t  *ta, *tb;

    ta = &d->t[a];
    tb = &d->t[b];

    if (ta->value != tb->value) {
        return 0;
    }

    n = (size_t) ta->value;

    if (!ta->escaped && !tb->escaped) {
        return memcmp(ta->text, tb->text, n) == 0;
    }

    if (n <= sizeof(x)) {
        return sp_json_decode(ta, x, n) == n && sp_json_decode(tb, y, n) == n
               && memcmp(x, y, n) == 0;
    }

    /* long and escaped: as written */
    return sp_tr_end(d, a) - d->pos[a] == sp_tr_end(d, b) - d->pos[b]
           && memcmp(d->text + d->pos[a], d->text + d->pos[b],
                     sp_tr_end(d, a) - d->pos[a]) == 0;
}


/* a number's value; SP_ERROR when i is not a number */
static int
sp_tr_number(const sp_tr_doc_t *d, size_t i, double *v)
{
    char    buf[SP_TR_NUMBER_MAX + 1];
    size_t  n;

    if (sp_tr_type(d, i, SP_JSON_INTEGER)) {
        *v = (double) d->t[i].value;
        return SP_OK;
    }

    if (!sp_tr_type(d, i, SP_JSON_REAL)) {
        return SP_ERROR;
    }

    n = sp_tr_end(d, i) - d->pos[i];

    if (n > SP_TR_NUMBER_MAX) {
        return SP_ERROR;
    }

    memcpy(buf, d->text + d->pos[i], n);
    buf[n] = '\0';
    *v = strtod(buf, NULL);

    return SP_OK;
}


/* the first element of array i, and the next after element k */
#define sp_tr_first(d, i)    ((i) + 1)
#define sp_tr_next(d, k)     ((size_t) (d)->t[k].end)
#define sp_tr_in(d, i, k)    ((k) < (size_t) (d)->t[i].end)


/* ---- requests -------------------------------------------------------- */

typedef struct {
    sp_tr_doc_t     d;
    sp_tr_out_t     o;
    sp_provider_e   target;
    const char     *model;
    size_t          model_len;
    const char     *name;           /* the target's name, for reasons */
    char           *why;
    size_t          whylen;

    /* the members read, 0 when absent or null */
    size_t          messages;
    size_t          max_tokens;     /* max_completion_tokens or
                                       max_tokens */
    size_t          temperature;
    size_t          top_p;
    size_t          stop;
    size_t          stream;
    size_t          n;
    size_t          tools;
    size_t          tool_choice;
    size_t          parallel_tool_calls;
    size_t          user;
    size_t          seed;
    size_t          frequency_penalty;
    size_t          presence_penalty;
    int             json_object;    /* response_format json_object */
    int             streaming;
    int             include_usage;
} sp_tr_req_t;


static int
sp_tr_no(sp_tr_req_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
sp_tr_no(sp_tr_req_t *r, const char *fmt, ...)
{
    va_list  args;

    if (r->why != NULL && r->whylen > 0) {
        va_start(args, fmt);
        vsnprintf(r->why, r->whylen, fmt, args);
        va_end(args);
    }

    return SP_ERROR;
}


/* the members every target reads, their types checked */
static int
sp_tr_req_read(sp_tr_req_t *r)
{
    size_t              k, v, type;
    double              x;
    const sp_tr_doc_t  *d;

    d = &r->d;

    if (d->t[0].type != SP_JSON_OBJECT) {
        return sp_tr_no(r, "the body is not a JSON object");
    }

    r->messages = sp_tr_get(d, 0, "messages");

    if (!sp_tr_type(d, r->messages, SP_JSON_ARRAY)) {
        return sp_tr_no(r, "field \"messages\" must be an array");
    }

    for (k = sp_tr_first(d, r->messages); sp_tr_in(d, r->messages, k);
         k = sp_tr_next(d, k))
    {
        v = sp_tr_get(d, k, "role");

        if (!sp_tr_eq(d, v, "system") && !sp_tr_eq(d, v, "developer")
            && !sp_tr_eq(d, v, "user") && !sp_tr_eq(d, v, "assistant")
            && !sp_tr_eq(d, v, "tool"))
        {
            return sp_tr_no(r, "field \"messages[].role\" must be system, "
                            "developer, user, assistant or tool");
        }
    }

    r->max_tokens = sp_tr_get(d, 0, "max_completion_tokens");
    if (r->max_tokens == 0) {
        r->max_tokens = sp_tr_get(d, 0, "max_tokens");
    }

    if (r->max_tokens && (!sp_tr_type(d, r->max_tokens, SP_JSON_INTEGER)
                          || d->t[r->max_tokens].value < 1
                          || d->t[r->max_tokens].value
                             > SP_REQUEST_MAX_OUTPUT_TOKENS))
    {
        return sp_tr_no(r, "field \"max_tokens\" must be an integer from 1 "
                        "to %d", SP_REQUEST_MAX_OUTPUT_TOKENS);
    }

    r->temperature = sp_tr_get(d, 0, "temperature");
    r->top_p = sp_tr_get(d, 0, "top_p");
    r->frequency_penalty = sp_tr_get(d, 0, "frequency_penalty");
    r->presence_penalty = sp_tr_get(d, 0, "presence_penalty");
    r->seed = sp_tr_get(d, 0, "seed");

    if ((r->temperature && sp_tr_number(d, r->temperature, &x) != SP_OK)
        || (r->top_p && sp_tr_number(d, r->top_p, &x) != SP_OK)
        || (r->frequency_penalty
            && sp_tr_number(d, r->frequency_penalty, &x) != SP_OK)
        || (r->presence_penalty
            && sp_tr_number(d, r->presence_penalty, &x) != SP_OK))
    {
        return sp_tr_no(r, "fields \"temperature\", \"top_p\" and the "
                        "penalties must be numbers");
    }

    if (r->seed && !sp_tr_type(d, r->seed, SP_JSON_INTEGER)) {
        return sp_tr_no(r, "field \"seed\" must be an integer");
    }

    r->stop = sp_tr_get(d, 0, "stop");

    if (r->stop && !sp_tr_type(d, r->stop, SP_JSON_STRING)) {
        if (!sp_tr_type(d, r->stop, SP_JSON_ARRAY)) {
            return sp_tr_no(r, "field \"stop\" must be a string or an array "
                            "of strings");
        }

        for (k = sp_tr_first(d, r->stop); sp_tr_in(d, r->stop, k);
             k = sp_tr_next(d, k))
        {
            if (!sp_tr_type(d, k, SP_JSON_STRING)) {
                return sp_tr_no(r, "field \"stop\" must be a string or an "
                                "array of strings");
            }
        }
    }

    r->stream = sp_tr_get(d, 0, "stream");

    if (r->stream && !sp_tr_type(d, r->stream, SP_JSON_TRUE)
        && !sp_tr_type(d, r->stream, SP_JSON_FALSE))
    {
        return sp_tr_no(r, "field \"stream\" must be a boolean");
    }

    r->streaming = sp_tr_type(d, r->stream, SP_JSON_TRUE);
    v = sp_tr_get(d, 0, "stream_options");
    r->include_usage = r->streaming
                       && sp_tr_type(d, sp_tr_member(d, v, "include_usage"),
                                     SP_JSON_TRUE);

    r->n = sp_tr_get(d, 0, "n");

    if (r->n && (!sp_tr_type(d, r->n, SP_JSON_INTEGER)
                 || d->t[r->n].value < 1
                 || d->t[r->n].value > SP_REQUEST_MAX_CHOICES))
    {
        return sp_tr_no(r, "field \"n\" must be an integer from 1 to %d",
                        SP_REQUEST_MAX_CHOICES);
    }

    r->tools = sp_tr_get(d, 0, "tools");

    if (r->tools && !sp_tr_type(d, r->tools, SP_JSON_ARRAY)) {
        return sp_tr_no(r, "field \"tools\" must be an array");
    }

    r->tool_choice = sp_tr_get(d, 0, "tool_choice");
    r->parallel_tool_calls = sp_tr_get(d, 0, "parallel_tool_calls");
    r->user = sp_tr_get(d, 0, "user");

    if (r->user && !sp_tr_type(d, r->user, SP_JSON_STRING)) {
        return sp_tr_no(r, "field \"user\" must be a string");
    }

    if (r->target == SP_PROVIDER_AZURE) {
        /* the same API: everything goes through as it is */
        return SP_OK;
    }

    /* what only OpenAI's API has */

    if (sp_tr_type(d, sp_tr_get(d, 0, "logprobs"), SP_JSON_TRUE)
        || sp_tr_get(d, 0, "top_logprobs"))
    {
        return sp_tr_no(r, "%s does not return logprobs", r->name);
    }

    v = sp_tr_get(d, 0, "modalities");

    if (sp_tr_get(d, 0, "audio")) {
        return sp_tr_no(r, "%s does not answer with audio", r->name);
    }

    if (sp_tr_type(d, v, SP_JSON_ARRAY)) {
        for (k = sp_tr_first(d, v); sp_tr_in(d, v, k); k = sp_tr_next(d, k)) {
            if (sp_tr_eq(d, k, "audio")) {
                return sp_tr_no(r, "%s does not answer with audio", r->name);
            }
        }
    }

    v = sp_tr_get(d, 0, "logit_bias");

    if (sp_tr_type(d, v, SP_JSON_OBJECT) && d->t[v].value > 0) {
        return sp_tr_no(r, "%s does not take logit_bias", r->name);
    }

    v = sp_tr_get(d, 0, "response_format");
    type = sp_tr_member(d, v, "type");

    if (v && !sp_tr_eq(d, type, "text")) {
        if (sp_tr_eq(d, type, "json_object")
            && r->target != SP_PROVIDER_ANTHROPIC)
        {
            r->json_object = 1;

        } else {
            return sp_tr_no(r, "%s does not take response_format %s",
                            r->name, sp_tr_eq(d, type, "json_schema")
                            ? "json_schema" : "json_object");
        }
    }

    if (r->n && d->t[r->n].value > 1 && r->target != SP_PROVIDER_GOOGLE) {
        return sp_tr_no(r, "%s does not take n > 1", r->name);
    }

    return SP_OK;
}


/* "model":"..." with the target's model */
static void
sp_tr_model(sp_tr_req_t *r)
{
    sp_tr_lit(&r->o, "\"model\":\"");
    sp_tr_escape(&r->o, r->model, r->model_len);
    sp_tr_lit(&r->o, "\"");
}


/* "name":value for a member that is copied as written */
static void
sp_tr_copy(sp_tr_req_t *r, const char *name, size_t v, int *first)
{
    if (v == 0) {
        return;
    }

    sp_tr_sep(&r->o, first);
    sp_tr_lit(&r->o, "\"");
    sp_tr_cstr(&r->o, name);
    sp_tr_lit(&r->o, "\":");
    sp_tr_raw(&r->o, &r->d, v);
}


/* stop as an array of strings (Anthropic, Gemini, Cohere) */
static void
sp_tr_stop_array(sp_tr_req_t *r, const char *name, int *first)
{
    if (r->stop == 0) {
        return;
    }

    sp_tr_sep(&r->o, first);
    sp_tr_lit(&r->o, "\"");
    sp_tr_cstr(&r->o, name);
    sp_tr_lit(&r->o, "\":");

    if (sp_tr_type(&r->d, r->stop, SP_JSON_STRING)) {
        sp_tr_lit(&r->o, "[");
        sp_tr_raw(&r->o, &r->d, r->stop);
        sp_tr_lit(&r->o, "]");
        return;
    }

    sp_tr_raw(&r->o, &r->d, r->stop);
}


typedef enum {
    SP_TR_PART_TEXT = 1,
    SP_TR_PART_IMAGE
} sp_tr_part_e;


/*
 * A content part: its kind, and *value its text or its image's URL.
 * SP_ERROR with the reason for any other part.
 */
static int
sp_tr_part(sp_tr_req_t *r, size_t part, int images, size_t *value)
{
    size_t              type, v;
    const sp_tr_doc_t  *d;

    d = &r->d;
    type = sp_tr_get(d, part, "type");

    if (sp_tr_eq(d, type, "text")) {
        v = sp_tr_get(d, part, "text");

        if (!sp_tr_type(d, v, SP_JSON_STRING)) {
            sp_tr_no(r, "field \"messages[].content[].text\" must be a "
                     "string");
            return -1;
        }

        *value = v;
        return SP_TR_PART_TEXT;
    }

    if (sp_tr_eq(d, type, "image_url") && images) {
        v = sp_tr_get(d, part, "image_url");

        if (sp_tr_type(d, v, SP_JSON_OBJECT)) {
            v = sp_tr_get(d, v, "url");
        }

        if (!sp_tr_type(d, v, SP_JSON_STRING)) {
            sp_tr_no(r, "field \"messages[].content[].image_url.url\" must "
                     "be a string");
            return -1;
        }

        *value = v;
        return SP_TR_PART_IMAGE;
    }

    if (sp_tr_eq(d, type, "image_url")) {
        sp_tr_no(r, "%s does not take image inputs", r->name);
        return -1;
    }

    if (!sp_tr_type(d, type, SP_JSON_STRING)) {
        sp_tr_no(r, "field \"messages[].content[].type\" must be a string");
        return -1;
    }

    sp_tr_no(r, "%s does not take this kind of content part (only text%s)",
             r->name, images ? " and image_url" : "");
    return -1;
}


/* an image URL: data:<mime>;base64,<data> or http(s) */
typedef struct {
    const char  *mime;
    size_t       mime_len;
    const char  *data;
    size_t       data_len;
    int          http;
} sp_tr_image_t;


static int
sp_tr_image(sp_tr_req_t *r, size_t url, int http_ok, sp_tr_image_t *img)
{
    char                head[8];
    size_t              n, len;
    const char         *raw, *comma;
    const sp_tr_doc_t  *d;

    d = &r->d;
    n = sp_json_decode(&d->t[url], head, sizeof(head));
    raw = d->text + d->pos[url] + 1;
    len = sp_tr_end(d, url) - d->pos[url] - 2;

    memset(img, 0, sizeof(sp_tr_image_t));

    if ((n >= 7 && memcmp(head, "http://", 7) == 0)
        || (n >= 8 && memcmp(head, "https://", 8) == 0))
    {
        if (!http_ok) {
            return sp_tr_no(r, "%s does not take images by URL, only as "
                            "data: URLs", r->name);
        }

        img->http = 1;
        return SP_OK;
    }

    /* the prefix as written: escapes in it are not worth decoding */
    if (len < 5 || memcmp(raw, "data:", 5) != 0) {
        return sp_tr_no(r, "%s takes images as data: or http(s) URLs only",
                        r->name);
    }

    comma = NULL;

    for (n = 5; n + 8 <= len; n++) {
        if (raw[n] == ';' && memcmp(raw + n, ";base64,", 8) == 0) {
            comma = raw + n;
            break;
        }

        if (raw[n] == ',') {
            break;
        }
    }

    if (comma == NULL || comma == raw + 5) {
        return sp_tr_no(r, "an image data: URL must be "
                        "data:<type>;base64,<data> for %s", r->name);
    }

    img->mime = raw + 5;
    img->mime_len = (size_t) (comma - img->mime);
    img->data = comma + 8;
    img->data_len = (size_t) (raw + len - img->data);

    return SP_OK;
}


/* a message's content: a string, or an array of parts */
static int
sp_tr_content_type(sp_tr_req_t *r, size_t content)
{
    if (content && !sp_tr_type(&r->d, content, SP_JSON_STRING)
        && !sp_tr_type(&r->d, content, SP_JSON_ARRAY))
    {
        return sp_tr_no(r, "field \"messages[].content\" must be a string "
                        "or an array of content parts");
    }

    return SP_OK;
}


/*
 * The text of content (a string or text parts) as the inside of one JSON
 * string, parts joined as written: system prompts, tool results.
 */
static int
sp_tr_text_joined(sp_tr_req_t *r, size_t content)
{
    size_t  k, v;

    if (content == 0) {
        return SP_OK;
    }

    if (sp_tr_type(&r->d, content, SP_JSON_STRING)) {
        sp_tr_inner(&r->o, &r->d, content);
        return SP_OK;
    }

    for (k = sp_tr_first(&r->d, content); sp_tr_in(&r->d, content, k);
         k = sp_tr_next(&r->d, k))
    {
        if (sp_tr_part(r, k, 0, &v) != SP_TR_PART_TEXT) {
            return SP_ERROR;
        }

        sp_tr_inner(&r->o, &r->d, v);
    }

    return SP_OK;
}


/* a tool call's members: SP_ERROR when it is not a function call */
static int
sp_tr_call(sp_tr_req_t *r, size_t call, size_t *id, size_t *name,
    size_t *args)
{
    size_t              type, fn;
    const sp_tr_doc_t  *d;

    d = &r->d;
    type = sp_tr_get(d, call, "type");
    fn = sp_tr_get(d, call, "function");
    *id = sp_tr_get(d, call, "id");
    *name = sp_tr_member(d, fn, "name");
    *args = sp_tr_member(d, fn, "arguments");

    if (type && !sp_tr_eq(d, type, "function")) {
        return sp_tr_no(r, "%s takes function tool calls only", r->name);
    }

    if (!sp_tr_type(d, *id, SP_JSON_STRING)
        || !sp_tr_type(d, *name, SP_JSON_STRING)
        || !sp_tr_type(d, *args, SP_JSON_STRING))
    {
        return sp_tr_no(r, "fields \"messages[].tool_calls[].id\", "
                        "\"function.name\" and \"function.arguments\" must "
                        "be strings");
    }

    return SP_OK;
}


/*
 * A tool call's arguments, a string holding JSON, written as the object
 * it holds (Anthropic's input, Gemini's args): not an object, not
 * translatable.
 */
static int
sp_tr_args_object(sp_tr_req_t *r, size_t args)
{
    int          rc;
    char        *text;
    size_t       n;
    sp_tr_doc_t  a;

    n = (size_t) r->d.t[args].value;
    text = malloc(n ? n : 1);
    if (text == NULL) {
        return sp_tr_no(r, "out of memory");
    }

    n = sp_json_decode(&r->d.t[args], text, n);
    rc = sp_tr_doc_load(&a, text, n);

    if (rc != SP_OK || a.t[0].type != SP_JSON_OBJECT) {
        sp_tr_doc_free(&a);
        free(text);
        return sp_tr_no(r, "a tool call's arguments are not a JSON object: "
                        "%s takes only objects", r->name);
    }

    sp_tr_compact(&r->o, &a, 0, 0);

    sp_tr_doc_free(&a);
    free(text);

    return SP_OK;
}


/* a function tool's members */
static int
sp_tr_tool(sp_tr_req_t *r, size_t tool, size_t *name, size_t *description,
    size_t *parameters)
{
    size_t              fn;
    const sp_tr_doc_t  *d;

    d = &r->d;

    if (!sp_tr_eq(d, sp_tr_get(d, tool, "type"), "function")) {
        return sp_tr_no(r, "%s takes function tools only", r->name);
    }

    fn = sp_tr_get(d, tool, "function");
    *name = sp_tr_member(d, fn, "name");
    *description = sp_tr_member(d, fn, "description");
    *parameters = sp_tr_member(d, fn, "parameters");

    if (!sp_tr_type(d, *name, SP_JSON_STRING)
        || (*description && !sp_tr_type(d, *description, SP_JSON_STRING))
        || (*parameters && !sp_tr_type(d, *parameters, SP_JSON_OBJECT)))
    {
        return sp_tr_no(r, "field \"tools[].function\" must have a string "
                        "name, a string description and object parameters");
    }

    return SP_OK;
}


/* tool_choice: 'a'uto, 'n'one, 'r'equired, 'f'unction (*name), or 0 */
static int
sp_tr_choice(sp_tr_req_t *r, size_t *name)
{
    size_t              v;
    const sp_tr_doc_t  *d;

    d = &r->d;
    v = r->tool_choice;
    *name = 0;

    if (v == 0) {
        return 0;
    }

    if (sp_tr_eq(d, v, "auto")) {
        return 'a';
    }

    if (sp_tr_eq(d, v, "none")) {
        return 'n';
    }

    if (sp_tr_eq(d, v, "required")) {
        return 'r';
    }

    v = sp_tr_member(d, sp_tr_get(d, v, "function"), "name");

    if (sp_tr_type(d, v, SP_JSON_STRING)) {
        *name = v;
        return 'f';
    }

    sp_tr_no(r, "field \"tool_choice\" must be auto, none, required or "
             "{\"type\":\"function\",\"function\":{\"name\":...}}");
    return -1;
}


/* ---- Anthropic Messages ----------------------------------------------- */

/* content parts as Anthropic blocks: text and images */
static int
sp_tr_anthropic_blocks(sp_tr_req_t *r, size_t content, int *first)
{
    int            kind;
    size_t         k, v;
    sp_tr_out_t   *o;
    sp_tr_image_t  img;

    o = &r->o;

    if (sp_tr_type(&r->d, content, SP_JSON_STRING)) {
        sp_tr_sep(o, first);
        sp_tr_lit(o, "{\"type\":\"text\",\"text\":");
        sp_tr_raw(o, &r->d, content);
        sp_tr_lit(o, "}");
        return SP_OK;
    }

    if (content == 0) {
        return SP_OK;
    }

    for (k = sp_tr_first(&r->d, content); sp_tr_in(&r->d, content, k);
         k = sp_tr_next(&r->d, k))
    {
        kind = sp_tr_part(r, k, 1, &v);

        if (kind < 0) {
            return SP_ERROR;
        }

        sp_tr_sep(o, first);

        if (kind == SP_TR_PART_TEXT) {
            sp_tr_lit(o, "{\"type\":\"text\",\"text\":");
            sp_tr_raw(o, &r->d, v);
            sp_tr_lit(o, "}");
            continue;
        }

        if (sp_tr_image(r, v, 1, &img) != SP_OK) {
            return SP_ERROR;
        }

        if (img.http) {
            sp_tr_lit(o, "{\"type\":\"image\",\"source\":{\"type\":\"url\","
                      "\"url\":");
            sp_tr_raw(o, &r->d, v);
            sp_tr_lit(o, "}}");
            continue;
        }

        sp_tr_lit(o, "{\"type\":\"image\",\"source\":{\"type\":\"base64\","
                  "\"media_type\":\"");
        sp_tr_put(o, img.mime, img.mime_len);
        sp_tr_lit(o, "\",\"data\":\"");
        sp_tr_put(o, img.data, img.data_len);
        sp_tr_lit(o, "\"}}");
    }

    return SP_OK;
}


static int
sp_tr_anthropic_messages(sp_tr_req_t *r)
{
    int                 first, blocks, in_tools;
    size_t              m, role, content, calls, k, id, name, args;
    sp_tr_out_t        *o;
    const sp_tr_doc_t  *d;

    d = &r->d;
    o = &r->o;
    first = 1;
    in_tools = 0;

    sp_tr_lit(o, "\"messages\":[");

    for (m = sp_tr_first(d, r->messages); sp_tr_in(d, r->messages, m);
         m = sp_tr_next(d, m))
    {
        role = sp_tr_get(d, m, "role");
        content = sp_tr_get(d, m, "content");

        if (sp_tr_content_type(r, content) != SP_OK) {
            return SP_ERROR;
        }

        if (sp_tr_eq(d, role, "system") || sp_tr_eq(d, role, "developer")) {
            continue;
        }

        if (sp_tr_eq(d, role, "tool")) {
            id = sp_tr_get(d, m, "tool_call_id");

            if (!sp_tr_type(d, id, SP_JSON_STRING)) {
                return sp_tr_no(r, "field \"messages[].tool_call_id\" must "
                                "be a string");
            }

            /* consecutive tool results are one user turn */
            if (!in_tools) {
                sp_tr_sep(o, &first);
                sp_tr_lit(o, "{\"role\":\"user\",\"content\":[");
                in_tools = 1;

            } else {
                sp_tr_lit(o, ",");
            }

            sp_tr_lit(o, "{\"type\":\"tool_result\",\"tool_use_id\":");
            sp_tr_raw(o, d, id);
            sp_tr_lit(o, ",\"content\":\"");

            if (sp_tr_text_joined(r, content) != SP_OK) {
                return SP_ERROR;
            }

            sp_tr_lit(o, "\"}");
            continue;
        }

        if (in_tools) {
            sp_tr_lit(o, "]}");
            in_tools = 0;
        }

        sp_tr_sep(o, &first);

        if (sp_tr_eq(d, role, "user")) {
            sp_tr_lit(o, "{\"role\":\"user\",\"content\":");

            if (content == 0 || sp_tr_type(d, content, SP_JSON_STRING)) {
                if (content) {
                    sp_tr_raw(o, d, content);
                } else {
                    sp_tr_lit(o, "\"\"");
                }

                sp_tr_lit(o, "}");
                continue;
            }

            blocks = 1;
            sp_tr_lit(o, "[");

            if (sp_tr_anthropic_blocks(r, content, &blocks) != SP_OK) {
                return SP_ERROR;
            }

            sp_tr_lit(o, "]}");
            continue;
        }

        /* assistant: text, then tool_use blocks */
        calls = sp_tr_get(d, m, "tool_calls");

        if (calls && !sp_tr_type(d, calls, SP_JSON_ARRAY)) {
            return sp_tr_no(r, "field \"messages[].tool_calls\" must be an "
                            "array");
        }

        sp_tr_lit(o, "{\"role\":\"assistant\",\"content\":");

        if (calls == 0 && sp_tr_type(d, content, SP_JSON_STRING)) {
            sp_tr_raw(o, d, content);
            sp_tr_lit(o, "}");
            continue;
        }

        blocks = 1;
        sp_tr_lit(o, "[");

        if (sp_tr_type(d, content, SP_JSON_STRING) && d->t[content].value) {
            sp_tr_anthropic_blocks(r, content, &blocks);

        } else if (sp_tr_type(d, content, SP_JSON_ARRAY)
                   && sp_tr_anthropic_blocks(r, content, &blocks) != SP_OK)
        {
            return SP_ERROR;
        }

        for (k = sp_tr_first(d, calls); calls && sp_tr_in(d, calls, k);
             k = sp_tr_next(d, k))
        {
            if (sp_tr_call(r, k, &id, &name, &args) != SP_OK) {
                return SP_ERROR;
            }

            sp_tr_sep(o, &blocks);
            sp_tr_lit(o, "{\"type\":\"tool_use\",\"id\":");
            sp_tr_raw(o, d, id);
            sp_tr_lit(o, ",\"name\":");
            sp_tr_raw(o, d, name);
            sp_tr_lit(o, ",\"input\":");

            if (sp_tr_args_object(r, args) != SP_OK) {
                return SP_ERROR;
            }

            sp_tr_lit(o, "}");
        }

        sp_tr_lit(o, "]}");
    }

    if (in_tools) {
        sp_tr_lit(o, "]}");
    }

    sp_tr_lit(o, "]");

    return SP_OK;
}


static int
sp_tr_to_anthropic(sp_tr_req_t *r)
{
    int                 first, blocks, choice;
    size_t              m, role, k, name, description, parameters, fname;
    double              x;
    sp_tr_out_t        *o;
    const sp_tr_doc_t  *d;

    d = &r->d;
    o = &r->o;

    if (r->temperature && sp_tr_number(d, r->temperature, &x) == SP_OK
        && (x < 0 || x > 1))
    {
        return sp_tr_no(r, "anthropic takes temperature from 0 to 1");
    }

    if ((r->frequency_penalty && sp_tr_number(d, r->frequency_penalty, &x)
         == SP_OK && x != 0)
        || (r->presence_penalty && sp_tr_number(d, r->presence_penalty, &x)
            == SP_OK && x != 0))
    {
        return sp_tr_no(r, "anthropic does not take frequency or presence "
                        "penalties");
    }

    sp_tr_lit(o, "{");
    sp_tr_model(r);
    sp_tr_lit(o, ",\"max_tokens\":");

    if (r->max_tokens) {
        sp_tr_raw(o, d, r->max_tokens);

    } else {
        sp_tr_int(o, SP_TRANSLATE_ANTHROPIC_MAX_TOKENS);
    }

    /* system and developer messages, wherever they are, in order */
    blocks = 1;

    for (m = sp_tr_first(d, r->messages); sp_tr_in(d, r->messages, m);
         m = sp_tr_next(d, m))
    {
        role = sp_tr_get(d, m, "role");

        if (!sp_tr_eq(d, role, "system") && !sp_tr_eq(d, role, "developer")) {
            continue;
        }

        if (blocks) {
            sp_tr_lit(o, ",\"system\":[");
        }

        if (sp_tr_content_type(r, sp_tr_get(d, m, "content")) != SP_OK) {
            return SP_ERROR;
        }

        sp_tr_sep(o, &blocks);
        sp_tr_lit(o, "{\"type\":\"text\",\"text\":\"");

        if (sp_tr_text_joined(r, sp_tr_get(d, m, "content")) != SP_OK) {
            return SP_ERROR;
        }

        sp_tr_lit(o, "\"}");
    }

    if (!blocks) {
        sp_tr_lit(o, "]");
    }

    sp_tr_lit(o, ",");

    if (sp_tr_anthropic_messages(r) != SP_OK) {
        return SP_ERROR;
    }

    first = 0;
    sp_tr_copy(r, "temperature", r->temperature, &first);
    sp_tr_copy(r, "top_p", r->top_p, &first);
    sp_tr_stop_array(r, "stop_sequences", &first);
    sp_tr_copy(r, "stream", r->stream, &first);

    if (r->user) {
        sp_tr_lit(o, ",\"metadata\":{\"user_id\":");
        sp_tr_raw(o, d, r->user);
        sp_tr_lit(o, "}");
    }

    if (r->tools && d->t[r->tools].value > 0) {
        sp_tr_lit(o, ",\"tools\":[");
        blocks = 1;

        for (k = sp_tr_first(d, r->tools); sp_tr_in(d, r->tools, k);
             k = sp_tr_next(d, k))
        {
            if (sp_tr_tool(r, k, &name, &description, &parameters) != SP_OK)
            {
                return SP_ERROR;
            }

            sp_tr_sep(o, &blocks);
            sp_tr_lit(o, "{\"name\":");
            sp_tr_raw(o, d, name);

            if (description) {
                sp_tr_lit(o, ",\"description\":");
                sp_tr_raw(o, d, description);
            }

            sp_tr_lit(o, ",\"input_schema\":");

            if (parameters) {
                sp_tr_raw(o, d, parameters);
            } else {
                sp_tr_lit(o, "{\"type\":\"object\",\"properties\":{}}");
            }

            sp_tr_lit(o, "}");
        }

        sp_tr_lit(o, "]");
    }

    choice = sp_tr_choice(r, &fname);

    if (choice < 0) {
        return SP_ERROR;
    }

    if (choice || sp_tr_type(d, r->parallel_tool_calls, SP_JSON_FALSE)) {
        sp_tr_lit(o, ",\"tool_choice\":{\"type\":");

        switch (choice) {
        case 'n':
            sp_tr_lit(o, "\"none\"");
            break;
        case 'r':
            sp_tr_lit(o, "\"any\"");
            break;
        case 'f':
            sp_tr_lit(o, "\"tool\",\"name\":");
            sp_tr_raw(o, d, fname);
            break;
        default:
            sp_tr_lit(o, "\"auto\"");
        }

        if (choice != 'n'
            && sp_tr_type(d, r->parallel_tool_calls, SP_JSON_FALSE))
        {
            sp_tr_lit(o, ",\"disable_parallel_tool_use\":true");
        }

        sp_tr_lit(o, "}");
    }

    sp_tr_lit(o, "}");

    return SP_OK;
}


/* ---- Google Gemini generateContent ------------------------------------ */

/* content as Gemini parts: text and inline images */
static int
sp_tr_google_parts(sp_tr_req_t *r, size_t content, int *first)
{
    int            kind;
    size_t         k, v;
    sp_tr_out_t   *o;
    sp_tr_image_t  img;

    o = &r->o;

    if (sp_tr_type(&r->d, content, SP_JSON_STRING)) {
        sp_tr_sep(o, first);
        sp_tr_lit(o, "{\"text\":");
        sp_tr_raw(o, &r->d, content);
        sp_tr_lit(o, "}");
        return SP_OK;
    }

    if (content == 0) {
        return SP_OK;
    }

    for (k = sp_tr_first(&r->d, content); sp_tr_in(&r->d, content, k);
         k = sp_tr_next(&r->d, k))
    {
        kind = sp_tr_part(r, k, 1, &v);

        if (kind < 0) {
            return SP_ERROR;
        }

        if (kind == SP_TR_PART_TEXT) {
            sp_tr_sep(o, first);
            sp_tr_lit(o, "{\"text\":");
            sp_tr_raw(o, &r->d, v);
            sp_tr_lit(o, "}");
            continue;
        }

        if (sp_tr_image(r, v, 0, &img) != SP_OK) {
            return SP_ERROR;
        }

        sp_tr_sep(o, first);
        sp_tr_lit(o, "{\"inlineData\":{\"mimeType\":\"");
        sp_tr_put(o, img.mime, img.mime_len);
        sp_tr_lit(o, "\",\"data\":\"");
        sp_tr_put(o, img.data, img.data_len);
        sp_tr_lit(o, "\"}}");
    }

    return SP_OK;
}


/* the function an earlier assistant message called with id */
static size_t
sp_tr_google_call_name(sp_tr_req_t *r, size_t before, size_t id)
{
    size_t              m, k, calls, cid, name, found;
    const sp_tr_doc_t  *d;

    d = &r->d;
    found = 0;

    /* the latest earlier call with that id: ids may repeat across turns */
    for (m = sp_tr_first(d, r->messages); m < before; m = sp_tr_next(d, m)) {
        calls = sp_tr_get(d, m, "tool_calls");

        if (!sp_tr_type(d, calls, SP_JSON_ARRAY)) {
            continue;
        }

        for (k = sp_tr_first(d, calls); sp_tr_in(d, calls, k);
             k = sp_tr_next(d, k))
        {
            cid = sp_tr_get(d, k, "id");
            name = sp_tr_member(d, sp_tr_get(d, k, "function"), "name");

            if (sp_tr_type(d, cid, SP_JSON_STRING)
                && sp_tr_type(d, name, SP_JSON_STRING)
                && sp_tr_same(d, cid, id))
            {
                found = name;
            }
        }
    }

    return found;
}


static int
sp_tr_google_contents(sp_tr_req_t *r)
{
    int                 first, parts, in_tools;
    size_t              m, role, content, calls, k, id, name, args;
    sp_tr_out_t        *o;
    const sp_tr_doc_t  *d;

    d = &r->d;
    o = &r->o;
    first = 1;
    in_tools = 0;

    sp_tr_lit(o, "\"contents\":[");

    for (m = sp_tr_first(d, r->messages); sp_tr_in(d, r->messages, m);
         m = sp_tr_next(d, m))
    {
        role = sp_tr_get(d, m, "role");
        content = sp_tr_get(d, m, "content");

        if (sp_tr_content_type(r, content) != SP_OK) {
            return SP_ERROR;
        }

        if (sp_tr_eq(d, role, "system") || sp_tr_eq(d, role, "developer")) {
            continue;
        }

        if (sp_tr_eq(d, role, "tool")) {
            id = sp_tr_get(d, m, "tool_call_id");

            if (!sp_tr_type(d, id, SP_JSON_STRING)) {
                return sp_tr_no(r, "field \"messages[].tool_call_id\" must "
                                "be a string");
            }

            name = sp_tr_google_call_name(r, m, id);

            if (name == 0) {
                return sp_tr_no(r, "google needs the function's name of a "
                                "tool result: no earlier tool call has its "
                                "tool_call_id");
            }

            if (!in_tools) {
                sp_tr_sep(o, &first);
                sp_tr_lit(o, "{\"role\":\"user\",\"parts\":[");
                in_tools = 1;

            } else {
                sp_tr_lit(o, ",");
            }

            sp_tr_lit(o, "{\"functionResponse\":{\"name\":");
            sp_tr_raw(o, d, name);
            sp_tr_lit(o, ",\"response\":{\"content\":\"");

            if (sp_tr_text_joined(r, content) != SP_OK) {
                return SP_ERROR;
            }

            sp_tr_lit(o, "\"}}}");
            continue;
        }

        if (in_tools) {
            sp_tr_lit(o, "]}");
            in_tools = 0;
        }

        sp_tr_sep(o, &first);
        parts = 1;

        if (sp_tr_eq(d, role, "user")) {
            sp_tr_lit(o, "{\"role\":\"user\",\"parts\":[");

            if (sp_tr_google_parts(r, content, &parts) != SP_OK) {
                return SP_ERROR;
            }

            sp_tr_lit(o, "]}");
            continue;
        }

        calls = sp_tr_get(d, m, "tool_calls");

        if (calls && !sp_tr_type(d, calls, SP_JSON_ARRAY)) {
            return sp_tr_no(r, "field \"messages[].tool_calls\" must be an "
                            "array");
        }

        sp_tr_lit(o, "{\"role\":\"model\",\"parts\":[");

        if ((!sp_tr_type(d, content, SP_JSON_STRING) || d->t[content].value)
            && sp_tr_google_parts(r, content, &parts) != SP_OK)
        {
            return SP_ERROR;
        }

        for (k = sp_tr_first(d, calls); calls && sp_tr_in(d, calls, k);
             k = sp_tr_next(d, k))
        {
            if (sp_tr_call(r, k, &id, &name, &args) != SP_OK) {
                return SP_ERROR;
            }

            if (d->t[name].value > SP_TR_NAME_MAX
                || sp_tr_end(d, name) - d->pos[name] > 2 + SP_TR_NAME_MAX)
            {
                return sp_tr_no(r, "google takes function names of at most "
                                "%d characters", SP_TR_NAME_MAX);
            }

            sp_tr_sep(o, &parts);
            sp_tr_lit(o, "{\"functionCall\":{\"name\":");
            sp_tr_raw(o, d, name);
            sp_tr_lit(o, ",\"args\":");

            if (sp_tr_args_object(r, args) != SP_OK) {
                return SP_ERROR;
            }

            sp_tr_lit(o, "}}");
        }

        sp_tr_lit(o, "]}");
    }

    if (in_tools) {
        sp_tr_lit(o, "]}");
    }

    sp_tr_lit(o, "]");

    return SP_OK;
}


static int
sp_tr_to_google(sp_tr_req_t *r)
{
    int                 first, parts, choice;
    size_t              m, role, k, name, description, parameters, fname;
    sp_tr_out_t        *o;
    const sp_tr_doc_t  *d;

    d = &r->d;
    o = &r->o;

    sp_tr_lit(o, "{");

    if (sp_tr_google_contents(r) != SP_OK) {
        return SP_ERROR;
    }

    parts = 1;

    for (m = sp_tr_first(d, r->messages); sp_tr_in(d, r->messages, m);
         m = sp_tr_next(d, m))
    {
        role = sp_tr_get(d, m, "role");

        if (!sp_tr_eq(d, role, "system") && !sp_tr_eq(d, role, "developer")) {
            continue;
        }

        if (parts) {
            sp_tr_lit(o, ",\"systemInstruction\":{\"parts\":[");
        }

        sp_tr_sep(o, &parts);
        sp_tr_lit(o, "{\"text\":\"");

        if (sp_tr_text_joined(r, sp_tr_get(d, m, "content")) != SP_OK) {
            return SP_ERROR;
        }

        sp_tr_lit(o, "\"}");
    }

    if (!parts) {
        sp_tr_lit(o, "]}");
    }

    if (r->tools && d->t[r->tools].value > 0) {
        sp_tr_lit(o, ",\"tools\":[{\"functionDeclarations\":[");
        first = 1;

        for (k = sp_tr_first(d, r->tools); sp_tr_in(d, r->tools, k);
             k = sp_tr_next(d, k))
        {
            if (sp_tr_tool(r, k, &name, &description, &parameters) != SP_OK)
            {
                return SP_ERROR;
            }

            sp_tr_sep(o, &first);
            sp_tr_lit(o, "{\"name\":");
            sp_tr_raw(o, d, name);

            if (description) {
                sp_tr_lit(o, ",\"description\":");
                sp_tr_raw(o, d, description);
            }

            if (parameters) {
                sp_tr_lit(o, ",\"parameters\":");
                sp_tr_raw(o, d, parameters);
            }

            sp_tr_lit(o, "}");
        }

        sp_tr_lit(o, "]}]");
    }

    choice = sp_tr_choice(r, &fname);

    if (choice < 0) {
        return SP_ERROR;
    }

    if (choice) {
        sp_tr_lit(o, ",\"toolConfig\":{\"functionCallingConfig\":{\"mode\":");

        switch (choice) {
        case 'n':
            sp_tr_lit(o, "\"NONE\"");
            break;
        case 'r':
            sp_tr_lit(o, "\"ANY\"");
            break;
        case 'f':
            sp_tr_lit(o, "\"ANY\",\"allowedFunctionNames\":[");
            sp_tr_raw(o, d, fname);
            sp_tr_lit(o, "]");
            break;
        default:
            sp_tr_lit(o, "\"AUTO\"");
        }

        sp_tr_lit(o, "}}");
    }

    if (r->max_tokens || r->temperature || r->top_p || r->stop || r->n
        || r->seed || r->frequency_penalty || r->presence_penalty
        || r->json_object)
    {
        sp_tr_lit(o, ",\"generationConfig\":{");
        first = 1;
        sp_tr_copy(r, "maxOutputTokens", r->max_tokens, &first);
        sp_tr_copy(r, "temperature", r->temperature, &first);
        sp_tr_copy(r, "topP", r->top_p, &first);
        sp_tr_stop_array(r, "stopSequences", &first);
        sp_tr_copy(r, "candidateCount", r->n, &first);
        sp_tr_copy(r, "seed", r->seed, &first);
        sp_tr_copy(r, "frequencyPenalty", r->frequency_penalty, &first);
        sp_tr_copy(r, "presencePenalty", r->presence_penalty, &first);

        if (r->json_object) {
            sp_tr_sep(o, &first);
            sp_tr_lit(o, "\"responseMimeType\":\"application/json\"");
        }

        sp_tr_lit(o, "}");
    }

    sp_tr_lit(o, "}");

    return SP_OK;
}


/* ---- Cohere v2 chat ---------------------------------------------------- */

/* content: a string as written, or its text parts (no images) */
static int
sp_tr_cohere_content(sp_tr_req_t *r, size_t content)
{
    int            first;
    size_t         k, v;
    sp_tr_out_t   *o;

    o = &r->o;

    if (content == 0) {
        sp_tr_lit(o, "\"\"");
        return SP_OK;
    }

    if (sp_tr_type(&r->d, content, SP_JSON_STRING)) {
        sp_tr_raw(o, &r->d, content);
        return SP_OK;
    }

    sp_tr_lit(o, "[");
    first = 1;

    for (k = sp_tr_first(&r->d, content); sp_tr_in(&r->d, content, k);
         k = sp_tr_next(&r->d, k))
    {
        if (sp_tr_part(r, k, 0, &v) != SP_TR_PART_TEXT) {
            return SP_ERROR;
        }

        sp_tr_sep(o, &first);
        sp_tr_lit(o, "{\"type\":\"text\",\"text\":");
        sp_tr_raw(o, &r->d, v);
        sp_tr_lit(o, "}");
    }

    sp_tr_lit(o, "]");

    return SP_OK;
}


/* tool calls as OpenAI writes them: Cohere and Mistral take the shape */
static int
sp_tr_calls_openai(sp_tr_req_t *r, size_t calls)
{
    int                 first;
    size_t              k, id, name, args;
    sp_tr_out_t        *o;
    const sp_tr_doc_t  *d;

    d = &r->d;
    o = &r->o;
    first = 1;

    if (!sp_tr_type(d, calls, SP_JSON_ARRAY)) {
        return sp_tr_no(r, "field \"messages[].tool_calls\" must be an "
                        "array");
    }

    sp_tr_lit(o, "[");

    for (k = sp_tr_first(d, calls); sp_tr_in(d, calls, k);
         k = sp_tr_next(d, k))
    {
        if (sp_tr_call(r, k, &id, &name, &args) != SP_OK) {
            return SP_ERROR;
        }

        sp_tr_sep(o, &first);
        sp_tr_lit(o, "{\"id\":");
        sp_tr_raw(o, d, id);
        sp_tr_lit(o, ",\"type\":\"function\",\"function\":{\"name\":");
        sp_tr_raw(o, d, name);
        sp_tr_lit(o, ",\"arguments\":");
        sp_tr_raw(o, d, args);
        sp_tr_lit(o, "}}");
    }

    sp_tr_lit(o, "]");

    return SP_OK;
}


static int
sp_tr_to_cohere(sp_tr_req_t *r)
{
    int                 first, choice;
    size_t              m, role, content, calls, k, name, description;
    size_t              parameters, fname;
    double              x;
    sp_tr_out_t        *o;
    const sp_tr_doc_t  *d;

    d = &r->d;
    o = &r->o;

    if ((r->frequency_penalty && sp_tr_number(d, r->frequency_penalty, &x)
         == SP_OK && (x < 0 || x > 1))
        || (r->presence_penalty && sp_tr_number(d, r->presence_penalty, &x)
            == SP_OK && (x < 0 || x > 1)))
    {
        return sp_tr_no(r, "cohere takes frequency and presence penalties "
                        "from 0 to 1");
    }

    choice = sp_tr_choice(r, &fname);

    if (choice < 0) {
        return SP_ERROR;
    }

    if (choice == 'f') {
        return sp_tr_no(r, "cohere cannot be made to call one named "
                        "function");
    }

    sp_tr_lit(o, "{");
    sp_tr_model(r);
    sp_tr_lit(o, ",\"messages\":[");
    first = 1;

    for (m = sp_tr_first(d, r->messages); sp_tr_in(d, r->messages, m);
         m = sp_tr_next(d, m))
    {
        role = sp_tr_get(d, m, "role");
        content = sp_tr_get(d, m, "content");

        if (sp_tr_content_type(r, content) != SP_OK) {
            return SP_ERROR;
        }

        sp_tr_sep(o, &first);

        if (sp_tr_eq(d, role, "system") || sp_tr_eq(d, role, "developer")) {
            sp_tr_lit(o, "{\"role\":\"system\",\"content\":");

        } else if (sp_tr_eq(d, role, "user")) {
            sp_tr_lit(o, "{\"role\":\"user\",\"content\":");

        } else if (sp_tr_eq(d, role, "tool")) {
            k = sp_tr_get(d, m, "tool_call_id");

            if (!sp_tr_type(d, k, SP_JSON_STRING)) {
                return sp_tr_no(r, "field \"messages[].tool_call_id\" must "
                                "be a string");
            }

            sp_tr_lit(o, "{\"role\":\"tool\",\"tool_call_id\":");
            sp_tr_raw(o, d, k);
            sp_tr_lit(o, ",\"content\":");

        } else {
            sp_tr_lit(o, "{\"role\":\"assistant\"");
            calls = sp_tr_get(d, m, "tool_calls");

            if (calls) {
                sp_tr_lit(o, ",\"tool_calls\":");

                if (sp_tr_calls_openai(r, calls) != SP_OK) {
                    return SP_ERROR;
                }
            }

            if (content == 0 || (calls && sp_tr_type(d, content,
                                                     SP_JSON_STRING)
                                 && d->t[content].value == 0))
            {
                sp_tr_lit(o, "}");
                continue;
            }

            sp_tr_lit(o, ",\"content\":");
        }

        if (sp_tr_cohere_content(r, content) != SP_OK) {
            return SP_ERROR;
        }

        sp_tr_lit(o, "}");
    }

    sp_tr_lit(o, "]");

    if (r->tools && d->t[r->tools].value > 0) {
        sp_tr_lit(o, ",\"tools\":[");
        first = 1;

        for (k = sp_tr_first(d, r->tools); sp_tr_in(d, r->tools, k);
             k = sp_tr_next(d, k))
        {
            if (sp_tr_tool(r, k, &name, &description, &parameters) != SP_OK)
            {
                return SP_ERROR;
            }

            sp_tr_sep(o, &first);
            sp_tr_lit(o, "{\"type\":\"function\",\"function\":{\"name\":");
            sp_tr_raw(o, d, name);

            if (description) {
                sp_tr_lit(o, ",\"description\":");
                sp_tr_raw(o, d, description);
            }

            if (parameters) {
                sp_tr_lit(o, ",\"parameters\":");
                sp_tr_raw(o, d, parameters);
            }

            sp_tr_lit(o, "}}");
        }

        sp_tr_lit(o, "]");
    }

    if (choice == 'n') {
        sp_tr_lit(o, ",\"tool_choice\":\"NONE\"");

    } else if (choice == 'r') {
        sp_tr_lit(o, ",\"tool_choice\":\"REQUIRED\"");
    }

    first = 0;
    sp_tr_copy(r, "max_tokens", r->max_tokens, &first);
    sp_tr_copy(r, "temperature", r->temperature, &first);

    /* Cohere's p runs from 0.01 to 0.99: the nearest it takes */
    if (r->top_p && sp_tr_number(d, r->top_p, &x) == SP_OK) {
        if (x > 0.99) {
            sp_tr_lit(o, ",\"p\":0.99");

        } else if (x < 0.01) {
            sp_tr_lit(o, ",\"p\":0.01");

        } else {
            sp_tr_copy(r, "p", r->top_p, &first);
        }
    }

    sp_tr_stop_array(r, "stop_sequences", &first);
    sp_tr_copy(r, "stream", r->stream, &first);
    sp_tr_copy(r, "seed", r->seed, &first);
    sp_tr_copy(r, "frequency_penalty", r->frequency_penalty, &first);
    sp_tr_copy(r, "presence_penalty", r->presence_penalty, &first);

    if (r->json_object) {
        sp_tr_lit(o, ",\"response_format\":{\"type\":\"json_object\"}");
    }

    sp_tr_lit(o, "}");

    return SP_OK;
}


/* ---- Mistral ----------------------------------------------------------- */

/*
 * The OpenAI shape rebuilt from the members Mistral knows: its API
 * refuses members it does not (extra inputs are not permitted).
 */
static int
sp_tr_to_mistral(sp_tr_req_t *r)
{
    int                 first, kind;
    size_t              m, role, content, k, v, calls, id;
    sp_tr_out_t        *o;
    const sp_tr_doc_t  *d;

    d = &r->d;
    o = &r->o;

    sp_tr_lit(o, "{");
    sp_tr_model(r);
    sp_tr_lit(o, ",\"messages\":[");
    first = 1;

    for (m = sp_tr_first(d, r->messages); sp_tr_in(d, r->messages, m);
         m = sp_tr_next(d, m))
    {
        role = sp_tr_get(d, m, "role");
        content = sp_tr_get(d, m, "content");

        if (sp_tr_content_type(r, content) != SP_OK) {
            return SP_ERROR;
        }

        /* parts Mistral takes: text and image_url, copied as written */
        if (sp_tr_type(d, content, SP_JSON_ARRAY)) {
            for (k = sp_tr_first(d, content); sp_tr_in(d, content, k);
                 k = sp_tr_next(d, k))
            {
                kind = sp_tr_part(r, k, 1, &v);

                if (kind < 0) {
                    return SP_ERROR;
                }
            }
        }

        sp_tr_sep(o, &first);
        sp_tr_lit(o, "{\"role\":");

        if (sp_tr_eq(d, role, "developer")) {
            sp_tr_lit(o, "\"system\"");
        } else {
            sp_tr_raw(o, d, role);
        }

        if (content) {
            sp_tr_lit(o, ",\"content\":");
            sp_tr_raw(o, d, content);
        }

        calls = sp_tr_get(d, m, "tool_calls");

        if (calls && sp_tr_eq(d, role, "assistant")) {
            sp_tr_lit(o, ",\"tool_calls\":");

            if (sp_tr_calls_openai(r, calls) != SP_OK) {
                return SP_ERROR;
            }
        }

        if (sp_tr_eq(d, role, "tool")) {
            id = sp_tr_get(d, m, "tool_call_id");

            if (!sp_tr_type(d, id, SP_JSON_STRING)) {
                return sp_tr_no(r, "field \"messages[].tool_call_id\" must "
                                "be a string");
            }

            sp_tr_lit(o, ",\"tool_call_id\":");
            sp_tr_raw(o, d, id);

            v = sp_tr_get(d, m, "name");

            if (sp_tr_type(d, v, SP_JSON_STRING)) {
                sp_tr_lit(o, ",\"name\":");
                sp_tr_raw(o, d, v);
            }
        }

        sp_tr_lit(o, "}");
    }

    sp_tr_lit(o, "]");

    first = 0;
    sp_tr_copy(r, "max_tokens", r->max_tokens, &first);
    sp_tr_copy(r, "temperature", r->temperature, &first);
    sp_tr_copy(r, "top_p", r->top_p, &first);
    sp_tr_copy(r, "stop", r->stop, &first);
    sp_tr_copy(r, "stream", r->stream, &first);
    sp_tr_copy(r, "random_seed", r->seed, &first);
    sp_tr_copy(r, "frequency_penalty", r->frequency_penalty, &first);
    sp_tr_copy(r, "presence_penalty", r->presence_penalty, &first);
    sp_tr_copy(r, "tools", r->tools, &first);
    sp_tr_copy(r, "tool_choice", r->tool_choice, &first);
    sp_tr_copy(r, "parallel_tool_calls", r->parallel_tool_calls, &first);
    sp_tr_copy(r, "response_format", sp_tr_get(d, 0, "response_format"),
               &first);

    sp_tr_lit(o, "}");

    return SP_OK;
}


/* ---- OpenAI and Azure: the body as it is, but for its model ------------ */

static int
sp_tr_to_openai(sp_tr_req_t *r)
{
    int                 first, azure;
    size_t              k;
    sp_tr_out_t        *o;
    const sp_tr_doc_t  *d;

    d = &r->d;
    o = &r->o;
    azure = (r->target == SP_PROVIDER_AZURE);

    sp_tr_lit(o, "{");
    first = 1;

    if (!azure) {
        sp_tr_model(r);
        first = 0;
    }

    /* the deployment in the path is the model Azure runs */
    for (k = 1; k < d->t[0].end; k = d->t[k + 1].end) {
        if (sp_tr_eq(d, k, "model")) {
            continue;
        }

        sp_tr_sep(o, &first);
        sp_tr_raw(o, d, k);
        sp_tr_lit(o, ":");
        sp_tr_raw(o, d, k + 1);
    }

    sp_tr_lit(o, "}");

    return SP_OK;
}


/* ---- the request's entry points ---------------------------------------- */

/* a model in a path segment: every byte but A-Za-z0-9-._~ as %XX */
static int
sp_tr_path(sp_translate_request_t *res, const char *prefix,
    const char *model, size_t model_len, const char *suffix)
{
    static const char  hex[] = "0123456789ABCDEF";
    char              *p, *last;
    size_t             i;
    unsigned char      c;

    p = res->path;
    last = res->path + SP_TRANSLATE_PATH_MAX - 1;

    if (strlen(prefix) > (size_t) (last - p)) {
        return SP_ERROR;
    }

    p = stpcpy(p, prefix);

    for (i = 0; i < model_len; i++) {
        c = (unsigned char) model[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
            || c == '~')
        {
            if (p == last) {
                return SP_ERROR;
            }

            *p++ = (char) c;
            continue;
        }

        if (last - p < 3) {
            return SP_ERROR;
        }

        *p++ = '%';
        *p++ = hex[c >> 4];
        *p++ = hex[c & 0xf];
    }

    if (strlen(suffix) > (size_t) (last - p)) {
        return SP_ERROR;
    }

    stpcpy(p, suffix);

    return SP_OK;
}


static int
sp_tr_where(sp_tr_req_t *r, sp_translate_request_t *res)
{
    const char  *model;
    size_t       len;
    int          rc;

    memset(res, 0, sizeof(sp_translate_request_t));
    res->stream = r->streaming;
    res->include_usage = r->include_usage;
    rc = SP_OK;

    switch (r->target) {

    case SP_PROVIDER_ANTHROPIC:
        strcpy(res->path, "/v1/messages");
        break;

    case SP_PROVIDER_GOOGLE:
        model = r->model;
        len = r->model_len;

        /* "models/gemini-..." as the API names them is the same model */
        if (len > 7 && memcmp(model, "models/", 7) == 0) {
            model += 7;
            len -= 7;
        }

        rc = sp_tr_path(res, "/v1beta/models/", model, len,
                        r->streaming ? ":streamGenerateContent"
                                     : ":generateContent");
        if (r->streaming) {
            strcpy(res->query, "alt=sse");
        }

        break;

    case SP_PROVIDER_COHERE:
        strcpy(res->path, "/v2/chat");
        break;

    case SP_PROVIDER_AZURE:
        rc = sp_tr_path(res, "/openai/deployments/", r->model, r->model_len,
                        "/chat/completions");
        strcpy(res->query, "api-version=" SP_TRANSLATE_AZURE_API_VERSION);
        break;

    default:
        strcpy(res->path, "/v1/chat/completions");
        break;
    }

    if (rc != SP_OK) {
        return sp_tr_no(r, "the model's name is too long for the path");
    }

    return SP_OK;
}


static int
sp_tr_request(sp_tr_req_t *r, const char *body, size_t len)
{
    int     rc;
    size_t  v;

    switch (r->target) {
    case SP_PROVIDER_OPENAI:
        r->name = "openai";
        break;
    case SP_PROVIDER_ANTHROPIC:
        r->name = "anthropic";
        break;
    case SP_PROVIDER_GOOGLE:
        r->name = "google";
        break;
    case SP_PROVIDER_AZURE:
        r->name = "azure";
        break;
    case SP_PROVIDER_COHERE:
        r->name = "cohere";
        break;
    case SP_PROVIDER_MISTRAL:
        r->name = "mistral";
        break;
    default:
        return sp_tr_no(r, "no translation to this provider");
    }

    if (r->model_len >= SP_FIELD_LEN) {
        return sp_tr_no(r, "the target model's name is longer than %d bytes",
                        SP_FIELD_LEN - 1);
    }

    if (sp_tr_doc_load(&r->d, body, len) != SP_OK) {
        return sp_tr_no(r, "the body is not JSON");
    }

    if (r->d.t[0].type != SP_JSON_OBJECT) {
        return sp_tr_no(r, "the body is not a JSON object");
    }

    if (r->target == SP_PROVIDER_OPENAI || r->target == SP_PROVIDER_AZURE) {
        /* the same API: only what the caller is told is read */
        r->streaming = sp_tr_type(&r->d, sp_tr_get(&r->d, 0, "stream"),
                                  SP_JSON_TRUE);
        v = sp_tr_get(&r->d, 0, "stream_options");
        r->include_usage = r->streaming
                           && sp_tr_type(&r->d,
                                         sp_tr_member(&r->d, v,
                                                      "include_usage"),
                                         SP_JSON_TRUE);
        return sp_tr_to_openai(r);
    }

    if (sp_tr_req_read(r) != SP_OK) {
        return SP_ERROR;
    }

    switch (r->target) {
    case SP_PROVIDER_ANTHROPIC:
        rc = sp_tr_to_anthropic(r);
        break;
    case SP_PROVIDER_GOOGLE:
        rc = sp_tr_to_google(r);
        break;
    case SP_PROVIDER_COHERE:
        rc = sp_tr_to_cohere(r);
        break;
    default:
        rc = sp_tr_to_mistral(r);
        break;
    }

    return rc;
}


int
sp_translate_check(sp_provider_e target, const char *body, size_t len,
    char *why, size_t whylen)
{
    int          rc;
    sp_tr_req_t  r;

    if (target == SP_PROVIDER_OPENAI) {
        return 1;
    }

    memset(&r, 0, sizeof(sp_tr_req_t));
    r.target = target;
    r.model = "";
    r.why = why;
    r.whylen = whylen;
    r.o.size = (size_t) -1;

    rc = sp_tr_request(&r, body, len);

    sp_tr_doc_free(&r.d);

    return rc == SP_OK;
}


size_t
sp_translate_request_bound(size_t len)
{
    /*
     * Per input byte at most 4 out (a tool result turned into a Gemini
     * functionResponse repeats a name of at most 64 characters: about
     * 3.3 times its message), plus the model escaped, a default
     * max_tokens and the wrappers written once.
     */
    return 4 * len + 6 * SP_FIELD_LEN + 4096;
}


int
sp_translate_request(sp_provider_e target, const char *model,
    size_t model_len, const char *body, size_t len, char *out,
    size_t outsize, sp_translate_request_t *res, char *err, size_t errlen)
{
    int          rc;
    sp_tr_req_t  r;

    memset(&r, 0, sizeof(sp_tr_req_t));
    r.target = target;
    r.model = model;
    r.model_len = model_len;
    r.why = err;
    r.whylen = errlen;
    r.o.buf = out;
    r.o.size = outsize;

    rc = sp_tr_request(&r, body, len);

    if (rc == SP_OK) {
        rc = sp_tr_where(&r, res);
    }

    if (rc == SP_OK && r.o.len > outsize) {
        rc = sp_tr_no(&r, "the translated body does not fit in %zu bytes",
                      outsize);
    }

    if (rc == SP_OK) {
        res->body_len = r.o.len;
    }

    sp_tr_doc_free(&r.d);

    return rc;
}


/* ---- answers: usage, reasons, errors ----------------------------------- */

typedef struct {
    int64_t  input;
    int64_t  output;
    int64_t  cached;
    int64_t  written;       /* Anthropic's cache writes, part of input */
    int      has;
} sp_tr_usage_t;


static int64_t
sp_tr_count(const sp_tr_doc_t *d, size_t obj, const char *name, int *present)
{
    size_t  v;

    v = sp_tr_member(d, obj, name);

    if (present) {
        *present = sp_tr_type(d, v, SP_JSON_INTEGER);
    }

    if (!sp_tr_type(d, v, SP_JSON_INTEGER)) {
        return 0;
    }

    return d->t[v].value > 0 ? d->t[v].value : 0;
}


/* a + b for counts, saturating as sp_usage_providers.c does */
static int64_t
sp_tr_add(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}


/*
 * The usage object of an answer, read as sp_usage_from_json() and
 * sp_usage_from_event() read it (the unit tests hold them to the same
 * numbers); Anthropic's stream merges, absent fields keep their value.
 */
static void
sp_tr_usage(sp_provider_e source, const sp_tr_doc_t *d, size_t usage,
    sp_tr_usage_t *u)
{
    int      present;
    int64_t  uncached, read, written, v;
    size_t   units;

    if (!sp_tr_type(d, usage, SP_JSON_OBJECT)) {
        return;
    }

    switch (source) {

    case SP_PROVIDER_ANTHROPIC:
        read = u->cached;
        written = u->written;
        uncached = u->input - read;
        uncached = uncached > written ? uncached - written : 0;

        v = sp_tr_count(d, usage, "input_tokens", &present);
        if (present) {
            uncached = v;
        }

        v = sp_tr_count(d, usage, "cache_read_input_tokens", &present);
        if (present) {
            read = v;
        }

        v = sp_tr_count(d, usage, "cache_creation_input_tokens", &present);
        if (present) {
            written = v;
        }

        v = sp_tr_count(d, usage, "output_tokens", &present);
        if (present) {
            u->output = v;
        }

        u->input = sp_tr_add(sp_tr_add(uncached, read), written);
        u->cached = read;
        u->written = written;
        break;

    case SP_PROVIDER_GOOGLE:
        u->input = sp_tr_add(sp_tr_count(d, usage, "promptTokenCount", NULL),
                       sp_tr_count(d, usage, "toolUsePromptTokenCount", NULL));
        u->output = sp_tr_add(
                       sp_tr_count(d, usage, "candidatesTokenCount", NULL),
                       sp_tr_count(d, usage, "thoughtsTokenCount", NULL));
        u->cached = sp_tr_count(d, usage, "cachedContentTokenCount", NULL);
        break;

    case SP_PROVIDER_COHERE:
        units = sp_tr_get(d, usage, "billed_units");

        if (!sp_tr_type(d, units, SP_JSON_OBJECT)) {
            units = sp_tr_get(d, usage, "tokens");
        }

        if (!sp_tr_type(d, units, SP_JSON_OBJECT)) {
            return;
        }

        u->input = sp_tr_count(d, units, "input_tokens", NULL);
        u->output = sp_tr_count(d, units, "output_tokens", NULL);
        u->cached = sp_tr_count(d, usage, "cached_tokens", NULL);
        break;

    default:
        u->input = sp_tr_count(d, usage, "prompt_tokens", NULL);
        u->output = sp_tr_count(d, usage, "completion_tokens", NULL);
        u->cached = sp_tr_count(d, sp_tr_get(d, usage,
                                             "prompt_tokens_details"),
                                "cached_tokens", NULL);
        break;
    }

    u->has = 1;
}


static void
sp_tr_usage_write(sp_tr_out_t *o, const sp_tr_usage_t *u)
{
    sp_tr_lit(o, "\"usage\":{\"prompt_tokens\":");
    sp_tr_int(o, u->input);
    sp_tr_lit(o, ",\"completion_tokens\":");
    sp_tr_int(o, u->output);
    sp_tr_lit(o, ",\"total_tokens\":");
    sp_tr_int(o, sp_tr_add(u->input, u->output));
    sp_tr_lit(o, ",\"prompt_tokens_details\":{\"cached_tokens\":");
    sp_tr_int(o, u->cached);
    sp_tr_lit(o, "}}");
}


/* a finish reason of source as OpenAI names it (NULL: none given) */
static const char *
sp_tr_reason(sp_provider_e source, const sp_tr_doc_t *d, size_t v)
{
    if (!sp_tr_type(d, v, SP_JSON_STRING)) {
        return NULL;
    }

    switch (source) {

    case SP_PROVIDER_ANTHROPIC:
        if (sp_tr_eq(d, v, "max_tokens")
            || sp_tr_eq(d, v, "model_context_window_exceeded"))
        {
            return "length";
        }

        if (sp_tr_eq(d, v, "tool_use")) {
            return "tool_calls";
        }

        if (sp_tr_eq(d, v, "refusal")) {
            return "content_filter";
        }

        return "stop";

    case SP_PROVIDER_GOOGLE:
        if (sp_tr_eq(d, v, "MAX_TOKENS")) {
            return "length";
        }

        if (sp_tr_eq(d, v, "SAFETY") || sp_tr_eq(d, v, "RECITATION")
            || sp_tr_eq(d, v, "BLOCKLIST")
            || sp_tr_eq(d, v, "PROHIBITED_CONTENT") || sp_tr_eq(d, v, "SPII")
            || sp_tr_eq(d, v, "IMAGE_SAFETY"))
        {
            return "content_filter";
        }

        return "stop";

    case SP_PROVIDER_COHERE:
        if (sp_tr_eq(d, v, "MAX_TOKENS")) {
            return "length";
        }

        if (sp_tr_eq(d, v, "TOOL_CALL")) {
            return "tool_calls";
        }

        if (sp_tr_eq(d, v, "ERROR_TOXIC")) {
            return "content_filter";
        }

        return "stop";

    default:
        if (sp_tr_eq(d, v, "length")) {
            return "length";
        }

        if (sp_tr_eq(d, v, "tool_calls") || sp_tr_eq(d, v, "function_call")) {
            return "tool_calls";
        }

        if (sp_tr_eq(d, v, "content_filter")) {
            return "content_filter";
        }

        return "stop";
    }
}


/* OpenAI's error type for an HTTP status, as the module's own errors */
static const char *
sp_tr_error_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 429:
        return "rate_limit_error";
    }

    return status >= 500 ? "api_error" : "invalid_request_error";
}


/*
 * {"error":{...}} from source's error answer: its message kept, its own
 * type (or status name) as the code. SP_ERROR: no message found.
 */
static int
sp_tr_error(sp_tr_out_t *o, sp_provider_e source, const sp_tr_doc_t *d,
    int status)
{
    size_t  err, message, code;

    if (d->t[0].type != SP_JSON_OBJECT) {
        return SP_ERROR;
    }

    err = sp_tr_get(d, 0, "error");
    message = 0;
    code = 0;

    if (sp_tr_type(d, err, SP_JSON_OBJECT)) {
        message = sp_tr_get(d, err, "message");
        code = sp_tr_get(d, err, source == SP_PROVIDER_GOOGLE ? "status"
                                                               : "type");

        if (source == SP_PROVIDER_OPENAI || source == SP_PROVIDER_AZURE) {
            code = sp_tr_get(d, err, "code");
        }

    } else if (sp_tr_type(d, err, SP_JSON_STRING)) {
        message = err;

    } else {
        /* Cohere and Mistral: at the top ("detail" from Mistral's proxy) */
        message = sp_tr_get(d, 0, "message");

        if (message == 0) {
            message = sp_tr_get(d, 0, "detail");
        }

        code = sp_tr_get(d, 0, "type");

        if (code == 0) {
            code = sp_tr_get(d, 0, "code");
        }
    }

    if (message == 0) {
        return SP_ERROR;
    }

    sp_tr_lit(o, "{\"error\":{\"message\":");

    if (sp_tr_type(d, message, SP_JSON_STRING)) {
        sp_tr_raw(o, d, message);

    } else {
        sp_tr_lit(o, "\"");
        sp_tr_compact(o, d, message, 1);
        sp_tr_lit(o, "\"");
    }

    sp_tr_lit(o, ",\"type\":\"");
    sp_tr_cstr(o, sp_tr_error_type(status));
    sp_tr_lit(o, "\",\"param\":null,\"code\":");

    if (sp_tr_type(d, code, SP_JSON_STRING)) {
        sp_tr_raw(o, d, code);
    } else {
        sp_tr_lit(o, "null");
    }

    sp_tr_lit(o, "}}");

    return SP_OK;
}


/* 1 when s (len bytes) can be written between quotes as it is */
static int
sp_tr_plain(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] > 0x7e
            || s[i] == '"' || s[i] == '\\')
        {
            return 0;
        }
    }

    return 1;
}


/* a generated tool call id: "call_" + the completion's id + "_" + n */
static void
sp_tr_call_id(sp_tr_out_t *o, const char *id, int64_t n)
{
    sp_tr_lit(o, "\"call_");
    sp_tr_cstr(o, id);
    sp_tr_lit(o, "_");
    sp_tr_int(o, n);
    sp_tr_lit(o, "\"");
}


/* a tool call of OpenAI's shape from name and a JSON value of arguments */
static void
sp_tr_call_out(sp_tr_out_t *o, const sp_tr_doc_t *d, size_t id,
    const char *gen_id, int64_t n, size_t name, size_t args, int with_index)
{
    sp_tr_lit(o, "{");

    if (with_index) {
        sp_tr_lit(o, "\"index\":");
        sp_tr_int(o, n);
        sp_tr_lit(o, ",");
    }

    sp_tr_lit(o, "\"id\":");

    if (sp_tr_type(d, id, SP_JSON_STRING)) {
        sp_tr_raw(o, d, id);
    } else {
        sp_tr_call_id(o, gen_id, n);
    }

    sp_tr_lit(o, ",\"type\":\"function\",\"function\":{\"name\":");
    sp_tr_raw(o, d, name);
    sp_tr_lit(o, ",\"arguments\":\"");

    if (args) {
        sp_tr_compact(o, d, args, 1);

    } else {
        sp_tr_lit(o, "{}");
    }

    sp_tr_lit(o, "\"}}");
}


/* ---- answers: JSON ----------------------------------------------------- */

static void
sp_tr_head(sp_tr_out_t *o, const char *object, const char *id,
    int64_t created)
{
    sp_tr_lit(o, "{\"id\":\"");
    sp_tr_cstr(o, id);
    sp_tr_lit(o, "\",\"object\":\"");
    sp_tr_cstr(o, object);
    sp_tr_lit(o, "\",\"created\":");
    sp_tr_int(o, created);
    sp_tr_lit(o, ",\"model\":");
}


/* the answer's model when it names one as a string, else requested */
static void
sp_tr_answer_model(sp_tr_out_t *o, const sp_tr_doc_t *d, size_t model,
    const char *requested, size_t requested_len)
{
    if (sp_tr_type(d, model, SP_JSON_STRING) && d->t[model].value > 0) {
        sp_tr_raw(o, d, model);
        return;
    }

    sp_tr_lit(o, "\"");
    sp_tr_escape(o, requested, requested_len);
    sp_tr_lit(o, "\"");
}


static void
sp_tr_choice_close(sp_tr_out_t *o, const char *reason)
{
    sp_tr_lit(o, "},\"logprobs\":null,\"finish_reason\":\"");
    sp_tr_cstr(o, reason ? reason : "stop");
    sp_tr_lit(o, "\"}");
}


static int
sp_tr_anthropic_answer(sp_tr_out_t *o, const sp_tr_doc_t *d, const char *id)
{
    int     text, first;
    size_t  content, k, type;
    int64_t n;

    content = sp_tr_get(d, 0, "content");

    if (!sp_tr_type(d, content, SP_JSON_ARRAY)) {
        return SP_ERROR;
    }

    sp_tr_lit(o, ",\"choices\":[{\"index\":0,\"message\":{\"role\":"
              "\"assistant\",\"content\":");
    text = 0;

    for (k = sp_tr_first(d, content); sp_tr_in(d, content, k);
         k = sp_tr_next(d, k))
    {
        type = sp_tr_get(d, k, "type");

        if (sp_tr_eq(d, type, "text")
            && sp_tr_type(d, sp_tr_get(d, k, "text"), SP_JSON_STRING))
        {
            if (!text) {
                sp_tr_lit(o, "\"");
                text = 1;
            }

            sp_tr_inner(o, d, sp_tr_get(d, k, "text"));
        }
    }

    if (text) {
        sp_tr_lit(o, "\"");
    } else {
        sp_tr_lit(o, "null");
    }

    sp_tr_lit(o, ",\"refusal\":null");
    first = 1;
    n = 0;

    for (k = sp_tr_first(d, content); sp_tr_in(d, content, k);
         k = sp_tr_next(d, k))
    {
        type = sp_tr_get(d, k, "type");

        if (!sp_tr_eq(d, type, "tool_use")
            || !sp_tr_type(d, sp_tr_get(d, k, "name"), SP_JSON_STRING))
        {
            continue;
        }

        if (first) {
            sp_tr_lit(o, ",\"tool_calls\":[");
        }

        sp_tr_sep(o, &first);
        sp_tr_call_out(o, d, sp_tr_get(d, k, "id"), id, n++,
                       sp_tr_get(d, k, "name"), sp_tr_get(d, k, "input"), 0);
    }

    if (!first) {
        sp_tr_lit(o, "]");
    }

    sp_tr_choice_close(o, sp_tr_reason(SP_PROVIDER_ANTHROPIC, d,
                                       sp_tr_get(d, 0, "stop_reason")));
    sp_tr_lit(o, "]");

    return SP_OK;
}


/* a Gemini part that is text the answer shows (thoughts are not) */
static size_t
sp_tr_google_text(const sp_tr_doc_t *d, size_t part)
{
    size_t  text;

    text = sp_tr_get(d, part, "text");

    if (!sp_tr_type(d, text, SP_JSON_STRING)
        || sp_tr_type(d, sp_tr_get(d, part, "thought"), SP_JSON_TRUE))
    {
        return 0;
    }

    return text;
}


static size_t
sp_tr_google_call(const sp_tr_doc_t *d, size_t part)
{
    size_t  call;

    call = sp_tr_get(d, part, "functionCall");

    return sp_tr_type(d, sp_tr_member(d, call, "name"), SP_JSON_STRING)
           ? call : 0;
}


static int
sp_tr_google_answer(sp_tr_out_t *o, const sp_tr_doc_t *d, const char *id)
{
    int          text, first, calls;
    size_t       cands, c, parts, k, call;
    int64_t      index, n;
    const char  *reason;

    cands = sp_tr_get(d, 0, "candidates");

    if (cands && (!sp_tr_type(d, cands, SP_JSON_ARRAY)
                  || d->t[cands].value > SP_TR_CHOICES_MAX))
    {
        return SP_ERROR;
    }

    sp_tr_lit(o, ",\"choices\":[");

    if (cands == 0 || d->t[cands].value == 0) {
        /* the prompt was blocked (promptFeedback.blockReason) */
        if (sp_tr_get(d, 0, "promptFeedback") == 0) {
            return SP_ERROR;
        }

        sp_tr_lit(o, "{\"index\":0,\"message\":{\"role\":\"assistant\","
                  "\"content\":null,\"refusal\":null");
        sp_tr_choice_close(o, "content_filter");
        sp_tr_lit(o, "]");
        return SP_OK;
    }

    index = 0;
    n = 0;

    for (c = sp_tr_first(d, cands); sp_tr_in(d, cands, c);
         c = sp_tr_next(d, c), index++)
    {
        parts = sp_tr_member(d, sp_tr_get(d, c, "content"), "parts");

        if (!sp_tr_type(d, parts, SP_JSON_ARRAY)) {
            parts = 0;
        }

        if (index) {
            sp_tr_lit(o, ",");
        }

        sp_tr_lit(o, "{\"index\":");
        sp_tr_int(o, index);
        sp_tr_lit(o, ",\"message\":{\"role\":\"assistant\",\"content\":");
        text = 0;

        for (k = sp_tr_first(d, parts); parts && sp_tr_in(d, parts, k);
             k = sp_tr_next(d, k))
        {
            if (sp_tr_google_text(d, k)) {
                if (!text) {
                    sp_tr_lit(o, "\"");
                    text = 1;
                }

                sp_tr_inner(o, d, sp_tr_google_text(d, k));
            }
        }

        if (text) {
            sp_tr_lit(o, "\"");
        } else {
            sp_tr_lit(o, "null");
        }

        sp_tr_lit(o, ",\"refusal\":null");
        first = 1;
        calls = 0;

        for (k = sp_tr_first(d, parts); parts && sp_tr_in(d, parts, k);
             k = sp_tr_next(d, k))
        {
            call = sp_tr_google_call(d, k);

            if (call == 0) {
                continue;
            }

            if (first) {
                sp_tr_lit(o, ",\"tool_calls\":[");
            }

            sp_tr_sep(o, &first);
            sp_tr_call_out(o, d, sp_tr_get(d, call, "id"), id, n++,
                           sp_tr_get(d, call, "name"),
                           sp_tr_get(d, call, "args"), 0);
            calls = 1;
        }

        if (!first) {
            sp_tr_lit(o, "]");
        }

        reason = sp_tr_reason(SP_PROVIDER_GOOGLE, d,
                              sp_tr_get(d, c, "finishReason"));

        if (calls && (reason == NULL || strcmp(reason, "stop") == 0)) {
            reason = "tool_calls";
        }

        sp_tr_choice_close(o, reason);
    }

    sp_tr_lit(o, "]");

    return SP_OK;
}


static int
sp_tr_cohere_answer(sp_tr_out_t *o, const sp_tr_doc_t *d)
{
    int     text, first;
    size_t  message, content, calls, k, fn, args;

    message = sp_tr_get(d, 0, "message");

    if (!sp_tr_type(d, message, SP_JSON_OBJECT)) {
        return SP_ERROR;
    }

    content = sp_tr_get(d, message, "content");
    calls = sp_tr_get(d, message, "tool_calls");

    sp_tr_lit(o, ",\"choices\":[{\"index\":0,\"message\":{\"role\":"
              "\"assistant\",\"content\":");
    text = 0;

    for (k = sp_tr_first(d, content);
         sp_tr_type(d, content, SP_JSON_ARRAY) && sp_tr_in(d, content, k);
         k = sp_tr_next(d, k))
    {
        if (sp_tr_eq(d, sp_tr_get(d, k, "type"), "text")
            && sp_tr_type(d, sp_tr_get(d, k, "text"), SP_JSON_STRING))
        {
            if (!text) {
                sp_tr_lit(o, "\"");
                text = 1;
            }

            sp_tr_inner(o, d, sp_tr_get(d, k, "text"));
        }
    }

    if (text) {
        sp_tr_lit(o, "\"");
    } else {
        sp_tr_lit(o, "null");
    }

    sp_tr_lit(o, ",\"refusal\":null");
    first = 1;

    for (k = sp_tr_first(d, calls);
         sp_tr_type(d, calls, SP_JSON_ARRAY) && sp_tr_in(d, calls, k);
         k = sp_tr_next(d, k))
    {
        fn = sp_tr_get(d, k, "function");
        args = sp_tr_member(d, fn, "arguments");

        if (!sp_tr_type(d, sp_tr_member(d, fn, "name"), SP_JSON_STRING)
            || !sp_tr_type(d, sp_tr_get(d, k, "id"), SP_JSON_STRING))
        {
            continue;
        }

        if (first) {
            sp_tr_lit(o, ",\"tool_calls\":[");
        }

        sp_tr_sep(o, &first);
        sp_tr_lit(o, "{\"id\":");
        sp_tr_raw(o, d, sp_tr_get(d, k, "id"));
        sp_tr_lit(o, ",\"type\":\"function\",\"function\":{\"name\":");
        sp_tr_raw(o, d, sp_tr_get(d, fn, "name"));
        sp_tr_lit(o, ",\"arguments\":");

        if (sp_tr_type(d, args, SP_JSON_STRING)) {
            sp_tr_raw(o, d, args);
        } else {
            sp_tr_lit(o, "\"{}\"");
        }

        sp_tr_lit(o, "}}");
    }

    if (!first) {
        sp_tr_lit(o, "]");
    }

    sp_tr_choice_close(o, sp_tr_reason(SP_PROVIDER_COHERE, d,
                                       sp_tr_get(d, 0, "finish_reason")));
    sp_tr_lit(o, "]");

    return SP_OK;
}


static int
sp_tr_answer(sp_tr_out_t *o, sp_provider_e source, int status,
    const sp_tr_doc_t *d, const char *id, int64_t created,
    const char *model, size_t model_len)
{
    int            rc;
    size_t         usage, choices;
    sp_tr_usage_t  u;

    if (status < 200 || status > 299) {
        return sp_tr_error(o, source, d, status);
    }

    if (d->t[0].type != SP_JSON_OBJECT) {
        return SP_ERROR;
    }

    memset(&u, 0, sizeof(sp_tr_usage_t));
    sp_tr_head(o, "chat.completion", id, created);

    switch (source) {

    case SP_PROVIDER_ANTHROPIC:
        sp_tr_answer_model(o, d, sp_tr_get(d, 0, "model"), model, model_len);
        rc = sp_tr_anthropic_answer(o, d, id);
        usage = sp_tr_get(d, 0, "usage");
        break;

    case SP_PROVIDER_GOOGLE:
        sp_tr_answer_model(o, d, sp_tr_get(d, 0, "modelVersion"), model,
                           model_len);
        rc = sp_tr_google_answer(o, d, id);
        usage = sp_tr_get(d, 0, "usageMetadata");
        break;

    case SP_PROVIDER_COHERE:
        /* Cohere's answer names no model */
        sp_tr_answer_model(o, d, 0, model, model_len);
        rc = sp_tr_cohere_answer(o, d);
        usage = sp_tr_get(d, 0, "usage");
        break;

    default:
        sp_tr_answer_model(o, d, sp_tr_get(d, 0, "model"), model, model_len);
        choices = sp_tr_get(d, 0, "choices");

        if (!sp_tr_type(d, choices, SP_JSON_ARRAY)) {
            return SP_ERROR;
        }

        sp_tr_lit(o, ",\"choices\":");
        sp_tr_raw(o, d, choices);
        rc = SP_OK;
        usage = sp_tr_get(d, 0, "usage");
        break;
    }

    if (rc != SP_OK) {
        return SP_ERROR;
    }

    sp_tr_usage(source, d, usage, &u);

    if (u.has) {
        sp_tr_lit(o, ",");
        sp_tr_usage_write(o, &u);
    }

    sp_tr_lit(o, "}");

    return SP_OK;
}


size_t
sp_translate_response_bound(size_t len)
{
    /*
     * Tool arguments become escaped strings (at most twice their bytes)
     * and each generated call id costs the completion's id; a Gemini
     * candidate of a few bytes becomes a whole choice: at most
     * SP_TR_CHOICES_MAX of them.
     */
    return 6 * len + SP_TR_CHOICES_MAX * 256 + 4096;
}


int
sp_translate_response_model(sp_provider_e source, int status,
    const char *body, size_t len, const char *id, int64_t created,
    const char *model, size_t model_len, char *out, size_t outsize,
    size_t *out_len)
{
    int          rc;
    sp_tr_doc_t  d;
    sp_tr_out_t  o;

    *out_len = 0;

    if (id == NULL || strlen(id) > SP_TR_ID_MAX || !sp_tr_plain(id,
                                                                strlen(id))
        || model_len >= SP_FIELD_LEN || (model == NULL && model_len))
    {
        return SP_ERROR;
    }

    if (sp_tr_doc_load(&d, body, len) != SP_OK) {
        sp_tr_doc_free(&d);
        return SP_ERROR;
    }

    o.buf = out;
    o.size = outsize;
    o.len = 0;

    rc = sp_tr_answer(&o, source, status, &d, id, created,
                      model ? model : "", model_len);

    sp_tr_doc_free(&d);

    if (rc != SP_OK || o.len > outsize) {
        return SP_ERROR;
    }

    *out_len = o.len;

    return SP_OK;
}


int
sp_translate_response(sp_provider_e source, int status, const char *body,
    size_t len, const char *id, int64_t created, char *out, size_t outsize,
    size_t *out_len)
{
    return sp_translate_response_model(source, status, body, len, id,
                                       created, NULL, 0, out, outsize,
                                       out_len);
}


/* ---- answers: streams -------------------------------------------------- */

void
sp_translate_stream_init(sp_translate_stream_t *st, sp_provider_e source,
    int include_usage, const char *id, int64_t created)
{
    size_t  n;

    memset(st, 0, sizeof(sp_translate_stream_t));
    st->source = source;
    st->include_usage = include_usage;
    st->created = created;
    st->tool_index = -1;

    /* written between quotes as it is: anything else is not kept */
    n = id ? strlen(id) : 0;

    if (n < sizeof(st->id) && sp_tr_plain(id, n)) {
        memcpy(st->id, id, n);
    }
}


size_t
sp_translate_stream_bound(size_t data_len)
{
    /* a content chunk, a finish chunk, the usage chunk and [DONE], each
     * with its id and model; tool arguments escaped (twice their bytes)
     * with a generated id each */
    return 6 * data_len + 6 * SP_TR_CHUNK_OVERHEAD;
}


static void
sp_tr_set_model(sp_translate_stream_t *st, const sp_tr_doc_t *d, size_t v)
{
    size_t  n;

    if (!sp_tr_type(d, v, SP_JSON_STRING) || d->t[v].value == 0
        || (size_t) d->t[v].value >= sizeof(st->model))
    {
        return;
    }

    n = sp_json_decode(&d->t[v], st->model, sizeof(st->model) - 1);
    st->model[n] = '\0';
}


static void
sp_tr_chunk_open(sp_tr_out_t *o, const sp_translate_stream_t *st)
{
    sp_tr_lit(o, "data: {\"id\":\"");
    sp_tr_cstr(o, st->id);
    sp_tr_lit(o, "\",\"object\":\"chat.completion.chunk\",\"created\":");
    sp_tr_int(o, st->created);
    sp_tr_lit(o, ",\"model\":\"");
    sp_tr_escape(o, st->model, strnlen(st->model, sizeof(st->model)));
    sp_tr_lit(o, "\",\"choices\":[");
}


static void
sp_tr_chunk_close(sp_tr_out_t *o, const sp_translate_stream_t *st)
{
    /* with include_usage OpenAI writes "usage":null in every other chunk */
    if (st->include_usage) {
        sp_tr_lit(o, "],\"usage\":null}\n\n");
    } else {
        sp_tr_lit(o, "]}\n\n");
    }
}


static void
sp_tr_delta_open(sp_tr_out_t *o, int64_t index)
{
    sp_tr_lit(o, "{\"index\":");
    sp_tr_int(o, index);
    sp_tr_lit(o, ",\"delta\":{");
}


static void
sp_tr_delta_close(sp_tr_out_t *o, const char *reason)
{
    sp_tr_lit(o, "},\"logprobs\":null,\"finish_reason\":");

    if (reason) {
        sp_tr_lit(o, "\"");
        sp_tr_cstr(o, reason);
        sp_tr_lit(o, "\"}");
    } else {
        sp_tr_lit(o, "null}");
    }
}


static void
sp_tr_role(sp_tr_out_t *o, sp_translate_stream_t *st)
{
    if (st->role_sent) {
        return;
    }

    sp_tr_chunk_open(o, st);
    sp_tr_delta_open(o, 0);
    sp_tr_lit(o, "\"role\":\"assistant\",\"content\":\"\"");
    sp_tr_delta_close(o, NULL);
    sp_tr_chunk_close(o, st);
    st->role_sent = 1;
}


/* a content delta from string v */
static void
sp_tr_text_chunk(sp_tr_out_t *o, sp_translate_stream_t *st,
    const sp_tr_doc_t *d, size_t v)
{
    if (!sp_tr_type(d, v, SP_JSON_STRING) || d->t[v].value == 0) {
        return;
    }

    sp_tr_role(o, st);
    sp_tr_chunk_open(o, st);
    sp_tr_delta_open(o, 0);
    sp_tr_lit(o, "\"content\":");
    sp_tr_raw(o, d, v);
    sp_tr_delta_close(o, NULL);
    sp_tr_chunk_close(o, st);
}


/* a tool call's start (id and name) or a piece of its arguments */
static void
sp_tr_tool_chunk(sp_tr_out_t *o, sp_translate_stream_t *st,
    const sp_tr_doc_t *d, size_t id, size_t name, size_t args)
{
    sp_tr_role(o, st);
    sp_tr_chunk_open(o, st);
    sp_tr_delta_open(o, 0);
    sp_tr_lit(o, "\"tool_calls\":[{\"index\":");
    sp_tr_int(o, st->tool_index);

    if (name) {
        sp_tr_lit(o, ",\"id\":");

        if (sp_tr_type(d, id, SP_JSON_STRING)) {
            sp_tr_raw(o, d, id);
        } else {
            sp_tr_call_id(o, st->id, st->tool_index);
        }

        sp_tr_lit(o, ",\"type\":\"function\",\"function\":{\"name\":");
        sp_tr_raw(o, d, name);
        sp_tr_lit(o, ",\"arguments\":");

    } else {
        sp_tr_lit(o, ",\"function\":{\"arguments\":");
    }

    if (sp_tr_type(d, args, SP_JSON_STRING)) {
        sp_tr_raw(o, d, args);
    } else {
        sp_tr_lit(o, "\"\"");
    }

    sp_tr_lit(o, "}}]");
    sp_tr_delta_close(o, NULL);
    sp_tr_chunk_close(o, st);
}


static void
sp_tr_set_reason(sp_translate_stream_t *st, const char *reason)
{
    if (reason) {
        strncpy(st->finish_reason, reason, sizeof(st->finish_reason) - 1);
    }
}


static void
sp_tr_finish_chunk(sp_tr_out_t *o, sp_translate_stream_t *st)
{
    if (st->finish_sent) {
        return;
    }

    if (st->finish_reason[0] == '\0') {
        sp_tr_set_reason(st, st->tool_index >= 0 ? "tool_calls" : "stop");
    }

    sp_tr_role(o, st);
    sp_tr_chunk_open(o, st);
    sp_tr_delta_open(o, 0);
    sp_tr_delta_close(o, st->finish_reason);
    sp_tr_chunk_close(o, st);
    st->finish_sent = 1;
}


/* what the stream still owes: finish, usage, [DONE] */
static void
sp_tr_close(sp_tr_out_t *o, sp_translate_stream_t *st)
{
    sp_tr_usage_t  u;

    if (st->done) {
        return;
    }

    sp_tr_finish_chunk(o, st);

    if (st->include_usage && st->has_usage) {
        u.input = st->input_tokens;
        u.output = st->output_tokens;
        u.cached = st->cached_tokens;

        sp_tr_lit(o, "data: {\"id\":\"");
        sp_tr_cstr(o, st->id);
        sp_tr_lit(o, "\",\"object\":\"chat.completion.chunk\",\"created\":");
        sp_tr_int(o, st->created);
        sp_tr_lit(o, ",\"model\":\"");
        sp_tr_escape(o, st->model, strnlen(st->model, sizeof(st->model)));
        sp_tr_lit(o, "\",\"choices\":[],");
        sp_tr_usage_write(o, &u);
        sp_tr_lit(o, "}\n\n");
    }

    sp_tr_lit(o, "data: [DONE]\n\n");
    st->done = 1;
}


static void
sp_tr_stream_usage(sp_translate_stream_t *st, const sp_tr_doc_t *d,
    size_t usage)
{
    sp_tr_usage_t  u;

    u.input = st->input_tokens;
    u.output = st->output_tokens;
    u.cached = st->cached_tokens;
    u.written = st->cache_write_tokens;
    u.has = st->has_usage;

    sp_tr_usage(st->source, d, usage, &u);

    st->input_tokens = u.input;
    st->output_tokens = u.output;
    st->cached_tokens = u.cached;
    st->cache_write_tokens = u.written;
    st->has_usage = u.has;
}


/* an error in the stream: OpenAI's SDKs raise it; nothing follows */
static int
sp_tr_stream_error(sp_tr_out_t *o, sp_translate_stream_t *st,
    const sp_tr_doc_t *d)
{
    sp_tr_lit(o, "data: ");

    if (sp_tr_error(o, st->source, d, 500) != SP_OK) {
        return SP_ERROR;
    }

    sp_tr_lit(o, "\n\n");
    st->done = 1;

    return SP_OK;
}


static int
sp_tr_anthropic_event(sp_tr_out_t *o, sp_translate_stream_t *st,
    const sp_tr_doc_t *d)
{
    size_t  type, v, block, delta;

    type = sp_tr_get(d, 0, "type");

    if (sp_tr_eq(d, type, "message_start")) {
        v = sp_tr_get(d, 0, "message");
        sp_tr_set_model(st, d, sp_tr_member(d, v, "model"));
        sp_tr_stream_usage(st, d, sp_tr_member(d, v, "usage"));
        sp_tr_role(o, st);

    } else if (sp_tr_eq(d, type, "content_block_start")) {
        block = sp_tr_get(d, 0, "content_block");
        st->block_is_tool = 0;

        if (sp_tr_eq(d, sp_tr_member(d, block, "type"), "tool_use")
            && sp_tr_type(d, sp_tr_get(d, block, "name"), SP_JSON_STRING))
        {
            st->tool_index++;
            st->block_is_tool = 1;
            sp_tr_tool_chunk(o, st, d, sp_tr_get(d, block, "id"),
                             sp_tr_get(d, block, "name"), 0);
        }

    } else if (sp_tr_eq(d, type, "content_block_delta")) {
        delta = sp_tr_get(d, 0, "delta");
        v = sp_tr_member(d, delta, "type");

        if (sp_tr_eq(d, v, "text_delta")) {
            sp_tr_text_chunk(o, st, d, sp_tr_get(d, delta, "text"));

        } else if (sp_tr_eq(d, v, "input_json_delta") && st->block_is_tool) {
            v = sp_tr_get(d, delta, "partial_json");

            if (sp_tr_type(d, v, SP_JSON_STRING) && d->t[v].value > 0) {
                sp_tr_tool_chunk(o, st, d, 0, 0, v);
            }
        }

    } else if (sp_tr_eq(d, type, "content_block_stop")) {
        st->block_is_tool = 0;

    } else if (sp_tr_eq(d, type, "message_delta")) {
        sp_tr_set_reason(st, sp_tr_reason(SP_PROVIDER_ANTHROPIC, d,
                             sp_tr_member(d, sp_tr_get(d, 0, "delta"),
                                          "stop_reason")));
        sp_tr_stream_usage(st, d, sp_tr_get(d, 0, "usage"));

        if (st->finish_reason[0]) {
            sp_tr_finish_chunk(o, st);
        }

    } else if (sp_tr_eq(d, type, "message_stop")) {
        sp_tr_close(o, st);

    } else if (sp_tr_eq(d, type, "error")) {
        return sp_tr_stream_error(o, st, d);

    } else if (!sp_tr_type(d, type, SP_JSON_STRING)) {
        return SP_ERROR;
    }

    return SP_OK;
}


static int
sp_tr_google_event(sp_tr_out_t *o, sp_translate_stream_t *st,
    const sp_tr_doc_t *d)
{
    int          any;
    size_t       cands, c, parts, k, call;
    int64_t      index;
    const char  *reason;

    if (sp_tr_get(d, 0, "error")) {
        return sp_tr_stream_error(o, st, d);
    }

    cands = sp_tr_get(d, 0, "candidates");

    if (cands && (!sp_tr_type(d, cands, SP_JSON_ARRAY)
                  || d->t[cands].value > SP_TR_CHOICES_MAX))
    {
        return SP_ERROR;
    }

    sp_tr_set_model(st, d, sp_tr_get(d, 0, "modelVersion"));
    sp_tr_stream_usage(st, d, sp_tr_get(d, 0, "usageMetadata"));
    sp_tr_role(o, st);

    if (cands == 0) {
        if (sp_tr_get(d, 0, "promptFeedback")) {
            sp_tr_set_reason(st, "content_filter");
            sp_tr_finish_chunk(o, st);
        }

        return SP_OK;
    }

    /* the deltas of every candidate in one chunk, then the finishes */
    any = 0;
    index = 0;

    for (c = sp_tr_first(d, cands); sp_tr_in(d, cands, c);
         c = sp_tr_next(d, c), index++)
    {
        parts = sp_tr_member(d, sp_tr_get(d, c, "content"), "parts");

        if (!sp_tr_type(d, parts, SP_JSON_ARRAY) || d->t[parts].value == 0) {
            continue;
        }

        if (!any) {
            sp_tr_chunk_open(o, st);
            any = 1;

        } else {
            sp_tr_lit(o, ",");
        }

        sp_tr_delta_open(o, index);
        sp_tr_lit(o, "\"content\":\"");

        for (k = sp_tr_first(d, parts); sp_tr_in(d, parts, k);
             k = sp_tr_next(d, k))
        {
            if (sp_tr_google_text(d, k)) {
                sp_tr_inner(o, d, sp_tr_google_text(d, k));
            }
        }

        sp_tr_lit(o, "\"");
        call = 0;

        for (k = sp_tr_first(d, parts); sp_tr_in(d, parts, k);
             k = sp_tr_next(d, k))
        {
            if (sp_tr_google_call(d, k) == 0) {
                continue;
            }

            if (call) {
                sp_tr_lit(o, ",");
            } else {
                sp_tr_lit(o, ",\"tool_calls\":[");
            }

            call = sp_tr_google_call(d, k);
            st->tool_index++;
            sp_tr_call_out(o, d, sp_tr_get(d, call, "id"), st->id,
                           st->tool_index, sp_tr_get(d, call, "name"),
                           sp_tr_get(d, call, "args"), 1);
        }

        if (call) {
            sp_tr_lit(o, "]");
        }

        sp_tr_delta_close(o, NULL);
    }

    if (any) {
        sp_tr_chunk_close(o, st);
    }

    any = 0;
    index = 0;

    for (c = sp_tr_first(d, cands); sp_tr_in(d, cands, c);
         c = sp_tr_next(d, c), index++)
    {
        reason = sp_tr_reason(SP_PROVIDER_GOOGLE, d,
                              sp_tr_get(d, c, "finishReason"));

        if (reason == NULL) {
            continue;
        }

        if (strcmp(reason, "stop") == 0 && st->tool_index >= 0) {
            reason = "tool_calls";
        }

        if (!any) {
            sp_tr_chunk_open(o, st);
            any = 1;

        } else {
            sp_tr_lit(o, ",");
        }

        sp_tr_delta_open(o, index);
        sp_tr_delta_close(o, reason);
        sp_tr_set_reason(st, reason);
    }

    if (any) {
        sp_tr_chunk_close(o, st);
        st->finish_sent = 1;
    }

    return SP_OK;
}


static int
sp_tr_cohere_event(sp_tr_out_t *o, sp_translate_stream_t *st,
    const sp_tr_doc_t *d)
{
    size_t  type, delta, message, calls, fn;

    type = sp_tr_get(d, 0, "type");
    delta = sp_tr_get(d, 0, "delta");
    message = sp_tr_member(d, delta, "message");

    if (sp_tr_eq(d, type, "message-start")) {
        sp_tr_role(o, st);

    } else if (sp_tr_eq(d, type, "content-delta")) {
        sp_tr_text_chunk(o, st, d,
                         sp_tr_member(d, sp_tr_member(d, message, "content"),
                                      "text"));

    } else if (sp_tr_eq(d, type, "tool-call-start")) {
        calls = sp_tr_member(d, message, "tool_calls");
        fn = sp_tr_member(d, calls, "function");

        if (sp_tr_type(d, sp_tr_member(d, fn, "name"), SP_JSON_STRING)) {
            st->tool_index++;
            sp_tr_tool_chunk(o, st, d, sp_tr_get(d, calls, "id"),
                             sp_tr_get(d, fn, "name"),
                             sp_tr_get(d, fn, "arguments"));
        }

    } else if (sp_tr_eq(d, type, "tool-call-delta")) {
        calls = sp_tr_member(d, message, "tool_calls");
        fn = sp_tr_member(d, sp_tr_member(d, calls, "function"),
                          "arguments");

        if (st->tool_index >= 0 && sp_tr_type(d, fn, SP_JSON_STRING)
            && d->t[fn].value > 0)
        {
            sp_tr_tool_chunk(o, st, d, 0, 0, fn);
        }

    } else if (sp_tr_eq(d, type, "message-end")) {
        sp_tr_set_reason(st, sp_tr_reason(SP_PROVIDER_COHERE, d,
                             sp_tr_member(d, delta, "finish_reason")));
        sp_tr_stream_usage(st, d, sp_tr_member(d, delta, "usage"));
        sp_tr_close(o, st);

    } else if (!sp_tr_type(d, type, SP_JSON_STRING)) {
        return SP_ERROR;
    }

    return SP_OK;
}


/* OpenAI's own chunks (OpenAI, Azure, Mistral): rewritten as ours */
static int
sp_tr_openai_event(sp_tr_out_t *o, sp_translate_stream_t *st,
    const sp_tr_doc_t *d)
{
    int           first;
    size_t        choices, c, v, usage;
    int64_t       index;
    const char   *reason;

    if (sp_tr_get(d, 0, "error")) {
        return sp_tr_stream_error(o, st, d);
    }

    choices = sp_tr_get(d, 0, "choices");

    if (!sp_tr_type(d, choices, SP_JSON_ARRAY)) {
        return SP_ERROR;
    }

    sp_tr_set_model(st, d, sp_tr_get(d, 0, "model"));
    usage = sp_tr_get(d, 0, "usage");

    /* Mistral's usage rides on the finish chunk: it moves to its own */
    sp_tr_stream_usage(st, d, usage);

    if (d->t[choices].value == 0) {
        /* Azure's prompt filter results, or the usage chunk */
        return SP_OK;
    }

    if (!st->role_sent) {
        st->role_sent = 1;
    }

    sp_tr_chunk_open(o, st);
    first = 1;
    index = 0;

    for (c = sp_tr_first(d, choices); sp_tr_in(d, choices, c);
         c = sp_tr_next(d, c), index++)
    {
        sp_tr_sep(o, &first);
        v = sp_tr_get(d, c, "index");
        sp_tr_lit(o, "{\"index\":");

        if (sp_tr_type(d, v, SP_JSON_INTEGER)) {
            sp_tr_int(o, d->t[v].value);
        } else {
            sp_tr_int(o, index);
        }

        sp_tr_lit(o, ",\"delta\":");
        v = sp_tr_get(d, c, "delta");

        if (sp_tr_type(d, v, SP_JSON_OBJECT)) {
            sp_tr_raw(o, d, v);
        } else {
            sp_tr_lit(o, "{}");
        }

        reason = sp_tr_reason(st->source, d, sp_tr_get(d, c, "finish_reason"));
        sp_tr_lit(o, ",\"logprobs\":null,\"finish_reason\":");

        if (reason) {
            sp_tr_lit(o, "\"");
            sp_tr_cstr(o, reason);
            sp_tr_lit(o, "\"}");
            sp_tr_set_reason(st, reason);
            st->finish_sent = 1;

        } else {
            sp_tr_lit(o, "null}");
        }
    }

    sp_tr_chunk_close(o, st);

    return SP_OK;
}


size_t
sp_translate_stream_event(sp_translate_stream_t *st, const char *event,
    size_t event_len, const char *data, size_t data_len, char *out,
    size_t outsize)
{
    int          rc;
    sp_tr_doc_t  d;
    sp_tr_out_t  o;

    o.buf = out;
    o.size = outsize;
    o.len = 0;

    if (st->done) {
        return 0;
    }

    if (data_len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        sp_tr_close(&o, st);
        return o.len <= outsize ? o.len : (size_t) -1;
    }

    if (sp_tr_doc_load(&d, data, data_len) != SP_OK
        || d.t[0].type != SP_JSON_OBJECT)
    {
        sp_tr_doc_free(&d);
        return (size_t) -1;
    }

    switch (st->source) {
    case SP_PROVIDER_ANTHROPIC:
        rc = sp_tr_anthropic_event(&o, st, &d);
        break;
    case SP_PROVIDER_GOOGLE:
        rc = sp_tr_google_event(&o, st, &d);
        break;
    case SP_PROVIDER_COHERE:
        rc = sp_tr_cohere_event(&o, st, &d);
        break;
    case SP_PROVIDER_OPENAI:
    case SP_PROVIDER_AZURE:
    case SP_PROVIDER_MISTRAL:
        rc = sp_tr_openai_event(&o, st, &d);
        break;
    default:
        rc = SP_ERROR;
    }

    sp_tr_doc_free(&d);

    if (rc != SP_OK || o.len > outsize) {
        return (size_t) -1;
    }

    return o.len;
}


size_t
sp_translate_stream_end(sp_translate_stream_t *st, char *out,
    size_t outsize)
{
    sp_tr_out_t  o;

    o.buf = out;
    o.size = outsize;
    o.len = 0;

    sp_tr_close(&o, st);

    return o.len <= outsize ? o.len : (size_t) -1;
}
