/*
 * The hallucination score (sp_halluc.h): the answer's text and finish
 * reason read from any of the six providers' answer shapes, its
 * checkable claims (numbers, dates, quoted strings, named entities)
 * looked up in the text the prompt supplied, and a documented formula
 * (docs/hallucination.md) that turns the unsupported share and a few
 * signals into a percentage.
 *
 * Nothing here reads past what it was given: every scan is bounded by
 * an end pointer, and claims longer than the lookup buffers are cut.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "sp_halluc.h"
#include "sp_pii.h"
#include "sp_scan.h"


/*
 * Material: a context text of this many bytes makes the answer
 * grounded; without one, a user turn this long counts as a pasted
 * document.
 */
#define SP_HALLUC_CONTEXT_MIN   200
#define SP_HALLUC_PASTED_MIN    400

/* claim weights: facts weigh more than quotations */
#define SP_HALLUC_W_ENTITY      2
#define SP_HALLUC_W_NUMBER      2
#define SP_HALLUC_W_DATE        2
#define SP_HALLUC_W_QUOTE       1

/* the formula's terms, in percent */
#define SP_HALLUC_LENGTH_GROUNDED  15
#define SP_HALLUC_BASE             10
#define SP_HALLUC_LENGTH           30
#define SP_HALLUC_CUT_SHORT        10
#define SP_HALLUC_HEDGE            10
#define SP_HALLUC_HEDGE_MAX        30

#define SP_HALLUC_NORM_LOCAL    4096    /* context bytes before a malloc */
#define SP_HALLUC_NUM_LOCAL     128
#define SP_HALLUC_DATE_LOCAL    32
#define SP_HALLUC_DIGITS_MAX    24
#define SP_HALLUC_NEEDLE_MAX    256     /* a claim's normalised text */
#define SP_HALLUC_QUOTE_MAX     400     /* bytes to a closing quote */


typedef struct {
    double    value;
    uint8_t   ndigits;
    char      digits[SP_HALLUC_DIGITS_MAX];   /* significant digits */
} sp_halluc_num_t;

typedef struct {
    int16_t   year;
    int8_t    month;
    int8_t    day;          /* 0: "March 2024" */
} sp_halluc_date_t;

/* the supplied text: normalised for lookups, its numbers and dates */
typedef struct {
    char              *norm;
    size_t             norm_len;
    size_t             norm_cap;
    sp_halluc_num_t   *num;
    size_t             nnum;
    size_t             num_cap;
    sp_halluc_date_t  *date;
    size_t             ndate;
    size_t             date_cap;
    size_t             context_max;   /* longest context text */
    size_t             turn_max;      /* longest other text */
    int                nomem;
    char               norm_local[SP_HALLUC_NORM_LOCAL];
    sp_halluc_num_t    num_local[SP_HALLUC_NUM_LOCAL];
    sp_halluc_date_t   date_local[SP_HALLUC_DATE_LOCAL];
} sp_halluc_ctx_t;

typedef struct {
    size_t  claims;
    size_t  unsupported;
    size_t  weight;
    size_t  weight_unsupported;
} sp_halluc_count_t;


static int sp_halluc_tape(sp_json_tape_t *tape, const char *json,
    size_t len, json_t **root);
static void sp_halluc_read(const sp_json_tape_t *tape, size_t i,
    sp_halluc_answer_t *a);
static void sp_halluc_read_object(const sp_json_tape_t *tape, size_t i,
    sp_halluc_answer_t *a);
static size_t sp_halluc_get(const sp_json_tape_t *tape, size_t i,
    const char *name);
static size_t sp_halluc_first(const sp_json_tape_t *tape, size_t i);
static int sp_halluc_is(const sp_json_tape_t *tape, size_t i,
    const char *s);
static void sp_halluc_append(const sp_json_tape_t *tape, size_t i,
    sp_halluc_answer_t *a);
static void sp_halluc_append_parts(const sp_json_tape_t *tape, size_t i,
    const char *type, sp_halluc_answer_t *a);
static void sp_halluc_finish(const sp_json_tape_t *tape, size_t i,
    sp_halluc_answer_t *a);
static void sp_halluc_status(const sp_json_tape_t *tape, size_t i,
    sp_halluc_answer_t *a);

static void sp_halluc_ctx_init(sp_halluc_ctx_t *ctx);
static void sp_halluc_ctx_free(sp_halluc_ctx_t *ctx);
static void sp_halluc_ctx_add(sp_halluc_ctx_t *ctx, const char *text,
    size_t len);
static int sp_halluc_visit(const sp_pii_text_t *text, void *arg);
static void *sp_halluc_grow(void *p, void *local, size_t *cap, size_t n,
    size_t size);
static size_t sp_halluc_normalise(const char *text, size_t len, char *out,
    int space);
static void sp_halluc_claims(const sp_halluc_ctx_t *ctx, const char *text,
    size_t len, sp_halluc_count_t *count);
static void sp_halluc_context_facts(sp_halluc_ctx_t *ctx, const char *text,
    size_t len);
static size_t sp_halluc_number(const char *p, const char *end,
    sp_halluc_num_t *num, int *plain_small);
static size_t sp_halluc_date(const char *p, const char *end,
    sp_halluc_date_t *date);
static int sp_halluc_month(const char *p, const char *end, size_t *len);
static size_t sp_halluc_word(const char *p, const char *end);
static int sp_halluc_has_num(const sp_halluc_ctx_t *ctx,
    const sp_halluc_num_t *num);
static int sp_halluc_has_date(const sp_halluc_ctx_t *ctx,
    const sp_halluc_date_t *date);
static int sp_halluc_has_text(const sp_halluc_ctx_t *ctx, const char *text,
    size_t len);
static int sp_halluc_find(const char *hay, size_t hlen, const char *needle,
    size_t nlen);
static void sp_halluc_count(sp_halluc_count_t *count, size_t weight,
    int supported);
static void sp_halluc_result(const sp_halluc_ctx_t *ctx, int grounded,
    const sp_halluc_answer_t *a, sp_halluc_result_t *out);
static int sp_halluc_hedges(const char *text, size_t len);
static int sp_halluc_digit(const char *p, const char *end);
static int sp_halluc_alpha(char c);
static int sp_halluc_upper(char c);
static int sp_halluc_alnum(char c);
static size_t sp_halluc_digits(const char *p, const char *end, size_t max,
    int *value);
static int sp_halluc_in(const char *words, const char *p, size_t len);
static int sp_halluc_common_acronym(const char *p, size_t len);
static int sp_halluc_connector(const char *p, size_t len);
static size_t sp_halluc_capitalised(const char *p, const char *end);
static int sp_halluc_acronym(const char *p, size_t len);
static const char *sp_halluc_run(const char *p, const char *end,
    size_t *words, const char **second);


/* ---- the answer -------------------------------------------------------- */

void
sp_halluc_answer_init(sp_halluc_answer_t *a)
{
    a->len = 0;
    a->truncated = 0;
    a->finish_length = 0;
    a->finished = 0;
    a->text[0] = '\0';
}


int
sp_halluc_answer_json(sp_provider_e provider, const char *json, size_t len,
    sp_halluc_answer_t *a)
{
    size_t           k;
    json_t          *root;
    sp_json_tape_t   tape;

    /*
     * The shape is told by its members, not by the provider: a routed
     * request translated back to the client's provider answers in that
     * provider's shape, and Azure and Mistral answer OpenAI's.
     */
    (void) provider;

    if (sp_halluc_tape(&tape, json, len, &root) != SP_OK) {
        return SP_ERROR;
    }

    if (tape.token[0].type == SP_JSON_ARRAY) {
        /* Google's streamGenerateContent without alt=sse */
        for (k = 1; k < tape.token[0].end; k = tape.token[k].end) {
            sp_halluc_read(&tape, k, a);
        }

    } else {
        sp_halluc_read(&tape, 0, a);
    }

    sp_json_tape_free(&tape);

    if (root != NULL) {
        json_decref(root);
    }

    return SP_OK;
}


int
sp_halluc_answer_event(sp_provider_e provider, const char *data, size_t len,
    sp_halluc_answer_t *a)
{
    /*
     * An event's data is one JSON object of the same families; the
     * events that repeat the whole answer at the end (Responses API
     * response.completed, Cohere v1 stream-end) are told by their type
     * and give only their finish.
     */
    return sp_halluc_answer_json(provider, data, len, a);
}


/* the scanner's tape, or jansson's for what the scanner declines */
static int
sp_halluc_tape(sp_json_tape_t *tape, const char *json, size_t len,
    json_t **root)
{
    json_error_t  jerr;

    *root = NULL;
    sp_json_tape_init(tape);

    if (json == NULL || len == 0) {
        return SP_ERROR;
    }

    if (sp_json_scan(tape, json, len) == SP_OK) {
        return SP_OK;
    }

    sp_json_tape_free(tape);

    *root = json_loadb(json, len, JSON_ALLOW_NUL, &jerr);
    if (*root == NULL) {
        return SP_ERROR;
    }

    if (!json_is_object(*root) && !json_is_array(*root)) {
        json_decref(*root);
        *root = NULL;
        return SP_ERROR;
    }

    if (sp_json_tape_from_tree(tape, *root) != SP_OK) {
        sp_json_tape_free(tape);
        json_decref(*root);
        *root = NULL;
        return SP_ERROR;
    }

    return SP_OK;
}


static void
sp_halluc_read(const sp_json_tape_t *tape, size_t i, sp_halluc_answer_t *a)
{
    if (tape->token[i].type == SP_JSON_OBJECT) {
        sp_halluc_read_object(tape, i, a);
    }
}


static void
sp_halluc_read_object(const sp_json_tape_t *tape, size_t i,
    sp_halluc_answer_t *a)
{
    size_t  v, c, d, m, t;

    /* OpenAI, Azure, Mistral: chat completions, chunks, completions */
    v = sp_halluc_get(tape, i, "choices");
    if (v && tape->token[v].type == SP_JSON_ARRAY) {
        c = sp_halluc_first(tape, v);
        if (c == 0 || tape->token[c].type != SP_JSON_OBJECT) {
            return;
        }

        /* with n > 1 a stream's chunks carry the other choices too */
        d = sp_halluc_get(tape, c, "index");
        if (d && tape->token[d].type == SP_JSON_INTEGER
            && tape->token[d].value != 0)
        {
            return;
        }

        m = sp_halluc_get(tape, c, "message");
        if (m == 0) {
            m = sp_halluc_get(tape, c, "delta");
        }

        if (m && tape->token[m].type == SP_JSON_OBJECT) {
            sp_halluc_append_parts(tape, sp_halluc_get(tape, m, "content"),
                                   "text", a);
        }

        sp_halluc_append(tape, sp_halluc_get(tape, c, "text"), a);
        sp_halluc_finish(tape, sp_halluc_get(tape, c, "finish_reason"), a);
        return;
    }

    t = sp_halluc_get(tape, i, "type");

    if (t && tape->token[t].type == SP_JSON_STRING
        && !sp_halluc_is(tape, t, "message"))
    {
        /* stream events: Responses API, Anthropic, Cohere v2 */

        if (sp_halluc_is(tape, t, "response.output_text.delta")) {
            sp_halluc_append(tape, sp_halluc_get(tape, i, "delta"), a);

        } else if (sp_halluc_is(tape, t, "response.completed")
                   || sp_halluc_is(tape, t, "response.incomplete")
                   || sp_halluc_is(tape, t, "response.failed"))
        {
            d = sp_halluc_get(tape, i, "response");
            if (d) {
                sp_halluc_status(tape, d, a);
            }

        } else if (sp_halluc_is(tape, t, "content_block_delta")) {
            d = sp_halluc_get(tape, i, "delta");
            if (d && sp_halluc_is(tape, sp_halluc_get(tape, d, "type"),
                                  "text_delta"))
            {
                sp_halluc_append(tape, sp_halluc_get(tape, d, "text"), a);
            }

        } else if (sp_halluc_is(tape, t, "message_delta")
                   || sp_halluc_is(tape, t, "message-end"))
        {
            d = sp_halluc_get(tape, i, "delta");
            if (d) {
                sp_halluc_finish(tape, sp_halluc_get(tape, d, "stop_reason"),
                                 a);
                sp_halluc_finish(tape,
                                 sp_halluc_get(tape, d, "finish_reason"), a);
            }

        } else if (sp_halluc_is(tape, t, "content-delta")) {
            d = sp_halluc_get(tape, i, "delta");
            m = d ? sp_halluc_get(tape, d, "message") : 0;
            c = m ? sp_halluc_get(tape, m, "content") : 0;
            if (c) {
                sp_halluc_append(tape, sp_halluc_get(tape, c, "text"), a);
            }

        } else if (sp_halluc_is(tape, t, "response")) {
            /* a Responses API answer read whole */
            goto responses;
        }

        return;
    }

    /* OpenAI and Azure Responses API */
    v = sp_halluc_get(tape, i, "output");
    if (v && tape->token[v].type == SP_JSON_ARRAY) {
        goto responses;
    }

    if (sp_halluc_is(tape, sp_halluc_get(tape, i, "object"), "response")) {
        goto responses;
    }

    /* Anthropic messages */
    v = sp_halluc_get(tape, i, "content");
    if (v && tape->token[v].type == SP_JSON_ARRAY) {
        sp_halluc_append_parts(tape, v, "text", a);
        sp_halluc_finish(tape, sp_halluc_get(tape, i, "stop_reason"), a);
        return;
    }

    /* Google */
    v = sp_halluc_get(tape, i, "candidates");
    if (v && tape->token[v].type == SP_JSON_ARRAY) {
        c = sp_halluc_first(tape, v);
        if (c == 0 || tape->token[c].type != SP_JSON_OBJECT) {
            return;
        }

        m = sp_halluc_get(tape, c, "content");
        if (m && tape->token[m].type == SP_JSON_OBJECT) {
            sp_halluc_append_parts(tape, sp_halluc_get(tape, m, "parts"),
                                   NULL, a);
        }

        sp_halluc_finish(tape, sp_halluc_get(tape, c, "finishReason"), a);
        return;
    }

    /* Cohere v1 stream events */
    t = sp_halluc_get(tape, i, "event_type");
    if (t) {
        if (sp_halluc_is(tape, t, "text-generation")) {
            sp_halluc_append(tape, sp_halluc_get(tape, i, "text"), a);

        } else if (sp_halluc_is(tape, t, "stream-end")) {
            sp_halluc_finish(tape, sp_halluc_get(tape, i, "finish_reason"),
                             a);
        }

        return;
    }

    /* Cohere v2 chat */
    m = sp_halluc_get(tape, i, "message");
    if (m && tape->token[m].type == SP_JSON_OBJECT) {
        sp_halluc_append_parts(tape, sp_halluc_get(tape, m, "content"),
                               "text", a);
        sp_halluc_finish(tape, sp_halluc_get(tape, i, "finish_reason"), a);
        return;
    }

    /* Cohere v1 chat */
    sp_halluc_append(tape, sp_halluc_get(tape, i, "text"), a);
    sp_halluc_finish(tape, sp_halluc_get(tape, i, "finish_reason"), a);
    return;

responses:

    /*
     * output_text is the SDKs' join of the output_text parts; when the
     * body carries it, it is the whole text and the parts would repeat it.
     */
    v = sp_halluc_get(tape, i, "output_text");
    if (v && tape->token[v].type == SP_JSON_STRING) {
        sp_halluc_append(tape, v, a);

    } else {
        v = sp_halluc_get(tape, i, "output");
        if (v && tape->token[v].type == SP_JSON_ARRAY) {
            for (c = v + 1; c < tape->token[v].end; c = tape->token[c].end) {
                if (tape->token[c].type == SP_JSON_OBJECT
                    && sp_halluc_is(tape, sp_halluc_get(tape, c, "type"),
                                    "message"))
                {
                    sp_halluc_append_parts(tape,
                                           sp_halluc_get(tape, c, "content"),
                                           "output_text", a);
                }
            }
        }
    }

    sp_halluc_status(tape, i, a);
}


/* member name of object i, 0 when i is 0, not an object, or has none */
static size_t
sp_halluc_get(const sp_json_tape_t *tape, size_t i, const char *name)
{
    if (i == 0 && tape->token[0].type != SP_JSON_OBJECT) {
        return 0;
    }

    return sp_json_get(tape, i, name);
}


/* the first element of array i, 0 when none */
static size_t
sp_halluc_first(const sp_json_tape_t *tape, size_t i)
{
    if (tape->token[i].type != SP_JSON_ARRAY || tape->token[i].value == 0) {
        return 0;
    }

    return i + 1;
}


static int
sp_halluc_is(const sp_json_tape_t *tape, size_t i, const char *s)
{
    size_t                  len;
    char                    buf[64];
    const sp_json_token_t  *t;

    if (i == 0) {
        return 0;
    }

    t = &tape->token[i];
    len = strlen(s);

    if (t->type != SP_JSON_STRING || (size_t) t->value != len) {
        return 0;
    }

    if (!t->escaped) {
        return memcmp(t->text, s, len) == 0;
    }

    return len < sizeof(buf) && sp_json_decode(t, buf, sizeof(buf)) == len
           && memcmp(buf, s, len) == 0;
}


/* string token i's decoded text onto the answer, as much as fits */
static void
sp_halluc_append(const sp_json_tape_t *tape, size_t i, sp_halluc_answer_t *a)
{
    size_t                  room, n;
    const sp_json_token_t  *t;

    if (i == 0 || tape->token[i].type != SP_JSON_STRING) {
        return;
    }

    t = &tape->token[i];

    /* one byte stays for the NUL that keeps text a C string */
    room = SP_HALLUC_TEXT_MAX - 1 - a->len;

    if ((uint64_t) t->value > room) {
        a->truncated = 1;
    }

    n = sp_json_decode(t, a->text + a->len, room);
    a->len += n;
    a->text[a->len] = '\0';
}


/*
 * A content member: a string, or an array of parts whose text counts
 * when their type is type (NULL: any part with a text, but not
 * Google's thought summaries).
 */
static void
sp_halluc_append_parts(const sp_json_tape_t *tape, size_t i,
    const char *type, sp_halluc_answer_t *a)
{
    size_t  k, th;

    if (i == 0) {
        return;
    }

    if (tape->token[i].type == SP_JSON_STRING) {
        sp_halluc_append(tape, i, a);
        return;
    }

    if (tape->token[i].type != SP_JSON_ARRAY) {
        return;
    }

    for (k = i + 1; k < tape->token[i].end; k = tape->token[k].end) {
        if (tape->token[k].type != SP_JSON_OBJECT) {
            continue;
        }

        if (type != NULL) {
            if (!sp_halluc_is(tape, sp_halluc_get(tape, k, "type"), type)) {
                continue;
            }

        } else {
            th = sp_halluc_get(tape, k, "thought");
            if (th && tape->token[th].type == SP_JSON_TRUE) {
                continue;
            }
        }

        sp_halluc_append(tape, sp_halluc_get(tape, k, "text"), a);
    }
}


/* a finish reason: any string says finished; the lengths say cut off */
static void
sp_halluc_finish(const sp_json_tape_t *tape, size_t i, sp_halluc_answer_t *a)
{
    if (i == 0 || tape->token[i].type != SP_JSON_STRING
        || tape->token[i].value == 0)
    {
        return;
    }

    a->finished = 1;

    if (sp_halluc_is(tape, i, "length")
        || sp_halluc_is(tape, i, "model_length")
        || sp_halluc_is(tape, i, "max_tokens")
        || sp_halluc_is(tape, i, "MAX_TOKENS")
        || sp_halluc_is(tape, i, "max_output_tokens"))
    {
        a->finish_length = 1;
    }
}


/*
 * A Responses API object's status, and why it is incomplete; i may be
 * the root (0), so it is the caller who checks that the member exists.
 */
static void
sp_halluc_status(const sp_json_tape_t *tape, size_t i, sp_halluc_answer_t *a)
{
    size_t  s, d;

    if (tape->token[i].type != SP_JSON_OBJECT) {
        return;
    }

    s = sp_halluc_get(tape, i, "status");

    if (sp_halluc_is(tape, s, "completed") || sp_halluc_is(tape, s, "failed")
        || sp_halluc_is(tape, s, "cancelled"))
    {
        a->finished = 1;

    } else if (sp_halluc_is(tape, s, "incomplete")) {
        a->finished = 1;

        d = sp_halluc_get(tape, i, "incomplete_details");
        if (d && tape->token[d].type == SP_JSON_OBJECT) {
            sp_halluc_finish(tape, sp_halluc_get(tape, d, "reason"), a);
        }
    }
}


/* ---- the score --------------------------------------------------------- */

void
sp_halluc_score(sp_provider_e provider, const char *body, size_t body_len,
    const sp_halluc_answer_t *a, sp_halluc_result_t *out)
{
    int               grounded;
    sp_halluc_ctx_t  *ctx;

    ctx = malloc(sizeof(sp_halluc_ctx_t));
    if (ctx == NULL) {
        /* never fails: a score from the signals alone */
        sp_halluc_result(NULL, 0, a, out);
        return;
    }

    sp_halluc_ctx_init(ctx);

    grounded = 0;

    if (body != NULL
        && sp_pii_body_text(provider, 0, body, body_len, sp_halluc_visit,
                            ctx) == SP_OK
        && !ctx->nomem)
    {
        grounded = ctx->context_max >= SP_HALLUC_CONTEXT_MIN
                   || ctx->turn_max >= SP_HALLUC_PASTED_MIN;
    }

    sp_halluc_result(grounded ? ctx : NULL, grounded, a, out);

    sp_halluc_ctx_free(ctx);
    free(ctx);
}


void
sp_halluc_score_text(const char *context, size_t len,
    const sp_halluc_answer_t *a, sp_halluc_result_t *out)
{
    sp_halluc_ctx_t  *ctx;

    if (context == NULL || len == 0) {
        sp_halluc_result(NULL, 0, a, out);
        return;
    }

    ctx = malloc(sizeof(sp_halluc_ctx_t));
    if (ctx == NULL) {
        sp_halluc_result(NULL, 0, a, out);
        return;
    }

    sp_halluc_ctx_init(ctx);
    sp_halluc_ctx_add(ctx, context, len);

    if (ctx->nomem) {
        sp_halluc_result(NULL, 0, a, out);

    } else {
        sp_halluc_result(ctx, 1, a, out);
    }

    sp_halluc_ctx_free(ctx);
    free(ctx);
}


/*
 * Every text of the request supports claims: the context texts, and
 * the turns too (an answer that repeats the question's names does not
 * invent them). Which of them make the answer grounded is decided by
 * their lengths, once the walk is over.
 */
static int
sp_halluc_visit(const sp_pii_text_t *text, void *arg)
{
    sp_halluc_ctx_t  *ctx = arg;

    if (text->context) {
        if (text->len > ctx->context_max) {
            ctx->context_max = text->len;
        }

    } else if (text->len > ctx->turn_max) {
        ctx->turn_max = text->len;
    }

    sp_halluc_ctx_add(ctx, text->text, text->len);

    return ctx->nomem;
}


static void
sp_halluc_ctx_init(sp_halluc_ctx_t *ctx)
{
    ctx->norm = ctx->norm_local;
    ctx->norm_len = 1;
    ctx->norm_cap = SP_HALLUC_NORM_LOCAL;
    ctx->norm[0] = ' ';
    ctx->num = ctx->num_local;
    ctx->nnum = 0;
    ctx->num_cap = SP_HALLUC_NUM_LOCAL;
    ctx->date = ctx->date_local;
    ctx->ndate = 0;
    ctx->date_cap = SP_HALLUC_DATE_LOCAL;
    ctx->context_max = 0;
    ctx->turn_max = 0;
    ctx->nomem = 0;
}


static void
sp_halluc_ctx_free(sp_halluc_ctx_t *ctx)
{
    if (ctx->norm != ctx->norm_local) {
        free(ctx->norm);
    }

    if (ctx->num != ctx->num_local) {
        free(ctx->num);
    }

    if (ctx->date != ctx->date_local) {
        free(ctx->date);
    }
}


/*
 * Grows an array of cap elements of size bytes to hold n; the first
 * storage is local (not freed). NULL when memory ran out (p is kept).
 */
static void *
sp_halluc_grow(void *p, void *local, size_t *cap, size_t n, size_t size)
{
    size_t  want;
    void   *q;

    if (n <= *cap) {
        return p;
    }

    want = *cap * 2;
    while (want < n) {
        want *= 2;
    }

    if (want > SIZE_MAX / size) {
        return NULL;
    }

    if (p == local) {
        q = malloc(want * size);
        if (q != NULL) {
            memcpy(q, p, *cap * size);
        }

    } else {
        q = realloc(p, want * size);
    }

    if (q == NULL) {
        return NULL;
    }

    *cap = want;

    return q;
}


static void
sp_halluc_ctx_add(sp_halluc_ctx_t *ctx, const char *text, size_t len)
{
    char  *norm;

    if (ctx->nomem || len == 0) {
        return;
    }

    /* normalised text never grows, and a space closes it */
    if (len > SIZE_MAX - ctx->norm_len - 2) {
        ctx->nomem = 1;
        return;
    }

    norm = sp_halluc_grow(ctx->norm, ctx->norm_local, &ctx->norm_cap,
                          ctx->norm_len + len + 2, 1);
    if (norm == NULL) {
        ctx->nomem = 1;
        return;
    }

    ctx->norm = norm;
    ctx->norm_len += sp_halluc_normalise(text, len, ctx->norm + ctx->norm_len,
                                         ctx->norm[ctx->norm_len - 1] == ' ');

    if (ctx->norm[ctx->norm_len - 1] != ' ') {
        ctx->norm[ctx->norm_len++] = ' ';
    }

    sp_halluc_context_facts(ctx, text, len);
}


/*
 * What each byte becomes in normalised text: ASCII letters lowercased,
 * digits and non-ASCII bytes (UTF-8 letters) kept, anything else 0, a
 * separator.
 */
static const unsigned char  sp_halluc_fold[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
    0x38, 0x39, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
    0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f,
    0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77,
    0x78, 0x79, 0x7a, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
    0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f,
    0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77,
    0x78, 0x79, 0x7a, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e, 0x8f,
    0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97,
    0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f,
    0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
    0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7,
    0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf,
    0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
    0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf,
    0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7,
    0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf,
    0xe0, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7,
    0xe8, 0xe9, 0xea, 0xeb, 0xec, 0xed, 0xee, 0xef,
    0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7,
    0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff,
};


/*
 * Normalised text: each run of separators becomes one space (space: the
 * output already ends in one). Returns the bytes written, at most len.
 */
static size_t
sp_halluc_normalise(const char *text, size_t len, char *out, int space)
{
    size_t         i, n;
    unsigned char  c;

    n = 0;

    for (i = 0; i < len; i++) {
        c = sp_halluc_fold[(unsigned char) text[i]];

        if (c != 0) {
            out[n++] = (char) c;
            space = 0;

        } else if (!space) {
            out[n++] = ' ';
            space = 1;
        }
    }

    return n;
}


/* ---- claims ------------------------------------------------------------ */

static int
sp_halluc_digit(const char *p, const char *end)
{
    return p < end && *p >= '0' && *p <= '9';
}


static int
sp_halluc_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}


static int
sp_halluc_upper(char c)
{
    return c >= 'A' && c <= 'Z';
}


static int
sp_halluc_alnum(char c)
{
    return sp_halluc_alpha(c) || (c >= '0' && c <= '9');
}


/*
 * A number at p: digits with group or decimal separators (1,234.5;
 * 1.234,5; 1 234,5), an optional scale (k, M, bn, million ...) or
 * percent. plain_small: an integer below 10 with nothing around it, a
 * list marker or a count too common to be a claim. Returns the bytes
 * read, 0 when p starts no number.
 */
static size_t
sp_halluc_number(const char *p, const char *end, sp_halluc_num_t *num,
    int *plain_small)
{
    int          ncomma, ndot, last_sep, after_last, decimal, scaled;
    size_t       k, n;
    double       value, frac, scale;
    const char  *start, *q, *w;
    char         sep;

    static const struct {
        const char  *word;
        size_t       len;
        double       scale;
        int          letter;     /* a one-letter suffix, no space */
    } scales[] = {
        { "thousand", 8, 1e3, 0 }, { "million", 7, 1e6, 0 },
        { "billion", 7, 1e9, 0 }, { "trillion", 8, 1e12, 0 },
        { "percent", 7, 1, 0 },
        { "mn", 2, 1e6, 0 }, { "bn", 2, 1e9, 0 }, { "tn", 2, 1e12, 0 },
        { "k", 1, 1e3, 1 }, { "K", 1, 1e3, 1 }, { "m", 1, 1e6, 1 },
        { "M", 1, 1e6, 1 }, { "b", 1, 1e9, 1 }, { "B", 1, 1e9, 1 },
        { "T", 1, 1e12, 1 },
        { NULL, 0, 0, 0 }
    };

    start = p;

    if (!sp_halluc_digit(p, end)) {
        return 0;
    }

    /* groups and separators: where they are decides their meaning */
    ncomma = 0;
    ndot = 0;
    last_sep = 0;
    after_last = 0;

    while (p < end && *p >= '0' && *p <= '9') {
        p++;
        after_last++;
    }

    while (p + 1 < end) {
        sep = *p;

        if (sep != ',' && sep != '.' && sep != ' ') {
            break;
        }

        q = p + 1;
        n = 0;
        while (q < end && *q >= '0' && *q <= '9') {
            q++;
            n++;
        }

        if (n == 0) {
            break;
        }

        /* a space groups thousands only: 1 234, never 2023 15 */
        if (sep == ' '
            && (n != 3 || after_last > 3 || ncomma + ndot > 0
                || last_sep == '.'))
        {
            break;
        }

        if (sep == ',') {
            ncomma++;

        } else if (sep == '.') {
            ndot++;
        }

        last_sep = sep;
        after_last = (int) n;
        p = q;
    }

    /*
     * The decimal separator: the last of two kinds; a single one unless
     * a comma is followed by three digits (1,234 is a thousand in
     * English); digit strings make up for the other reading.
     */
    decimal = 0;

    if (ncomma && ndot) {
        decimal = (last_sep == ',' && ncomma == 1)
                  || (last_sep == '.' && ndot == 1) ? last_sep : 0;

    } else if (ndot == 1) {
        decimal = '.';

    } else if (ncomma == 1 && after_last != 3) {
        decimal = ',';
    }

    value = 0;
    frac = 0;
    scale = 1;
    n = 0;

    for (q = start; q < p; q++) {
        if (*q == decimal) {
            frac = 1;
            continue;
        }

        if (*q < '0' || *q > '9') {
            continue;
        }

        if (frac) {
            frac /= 10;
            value += (*q - '0') * frac;

        } else {
            value = value * 10 + (*q - '0');
        }

        if ((n > 0 || *q != '0') && n < SP_HALLUC_DIGITS_MAX) {
            num->digits[n++] = *q;
        }
    }

    /* 12.50 and 12.5 are one figure */
    if (decimal) {
        while (n > 0 && num->digits[n - 1] == '0') {
            n--;
        }
    }

    num->ndigits = (uint8_t) n;

    /* the scale or percent, and ordinal endings, after the figure */
    scaled = 0;
    w = p;

    if (w < end && *w == '%') {
        scaled = 1;
        w++;

    } else {
        q = (w < end && *w == ' ') ? w + 1 : w;

        for (k = 0; q < end && sp_halluc_alpha(*q) && scales[k].word != NULL;
             k++)
        {
            n = scales[k].len;

            if ((scales[k].letter && q != w)
                || (*q | 0x20) != (scales[k].word[0] | 0x20))
            {
                continue;
            }

            if ((size_t) (end - q) >= n
                && strncasecmp(q, scales[k].word, n) == 0
                && (q + n == end || !sp_halluc_alnum(q[n]))
                && (!scales[k].letter || *q == scales[k].word[0]))
            {
                scale = scales[k].scale;
                scaled = 1;
                w = q + n;
                break;
            }
        }

        if (!scaled && q == w && end - w >= 2
            && (strncmp(w, "st", 2) == 0 || strncmp(w, "nd", 2) == 0
                || strncmp(w, "rd", 2) == 0 || strncmp(w, "th", 2) == 0)
            && (w + 2 == end || !sp_halluc_alnum(w[2])))
        {
            w += 2;
        }
    }

    num->value = value * scale;

    *plain_small = !decimal && !scaled && value < 10;

    return (size_t) (w - start);
}


static const struct {
    char    name[10];
    size_t  len;
} sp_halluc_months[12] = {
    { "january", 7 }, { "february", 8 }, { "march", 5 }, { "april", 5 },
    { "may", 3 }, { "june", 4 }, { "july", 4 }, { "august", 6 },
    { "september", 9 }, { "october", 7 }, { "november", 8 },
    { "december", 8 }
};


/*
 * A month name (or its three-letter form, with or without a dot; Sept.)
 * at p: 1..12, and its length; 0 when none. Called at every capitalised
 * word: the first three letters decide before any longer compare.
 */
static int
sp_halluc_month(const char *p, const char *end, size_t *len)
{
    int     m;
    size_t  w;
    char    c[3];

    /* capitalised, as in dates: "may" and "march" are also words */
    if (p >= end || !sp_halluc_upper(*p)) {
        return 0;
    }

    w = sp_halluc_word(p, end);

    if (w < 3) {
        return 0;
    }

    c[0] = (char) (p[0] | 0x20);
    c[1] = (char) (p[1] | 0x20);
    c[2] = (char) (p[2] | 0x20);

    for (m = 0; m < 12; m++) {
        if (memcmp(c, sp_halluc_months[m].name, 3) != 0) {
            continue;
        }

        if (w == sp_halluc_months[m].len
            && strncasecmp(p + 3, sp_halluc_months[m].name + 3, w - 3) == 0)
        {
            *len = w;
            return m + 1;
        }

        /* the whole word: not "Mar" inside "Marco" */
        if (w == 3 || (m == 8 && w == 4 && (p[3] | 0x20) == 't')) {
            *len = (p + w < end && p[w] == '.') ? w + 1 : w;
            return m + 1;
        }

        return 0;
    }

    return 0;
}


/* the length of the word of letters at p */
static size_t
sp_halluc_word(const char *p, const char *end)
{
    const char  *q;

    for (q = p; q < end && sp_halluc_alpha(*q); q++) {
        /* void */
    }

    return (size_t) (q - p);
}


/* a run of 1..max digits at p as a number; its length, 0 when none */
static size_t
sp_halluc_digits(const char *p, const char *end, size_t max, int *value)
{
    size_t  n;

    *value = 0;

    for (n = 0; p + n < end && p[n] >= '0' && p[n] <= '9'; n++) {
        if (n == max) {
            return 0;
        }

        *value = *value * 10 + (p[n] - '0');
    }

    return n;
}


/*
 * A date at p: 2024-03-03, 3 March 2024, March 3, 2024 (and 3rd, Mar.),
 * March 2024. Returns the bytes read, 0 when p starts no date.
 */
static size_t
sp_halluc_date(const char *p, const char *end, sp_halluc_date_t *date)
{
    int          y, m, d;
    size_t       n, len;
    const char  *q;

    /* ISO */
    if (sp_halluc_digits(p, end, 4, &y) == 4 && p + 10 <= end
        && p[4] == '-' && sp_halluc_digits(p + 5, end, 2, &m) == 2
        && p[7] == '-' && sp_halluc_digits(p + 8, end, 2, &d) == 2
        && (p + 10 == end || !sp_halluc_alnum(p[10]))
        && y >= 1000 && y <= 2999 && m >= 1 && m <= 12 && d >= 1 && d <= 31)
    {
        date->year = (int16_t) y;
        date->month = (int8_t) m;
        date->day = (int8_t) d;
        return 10;
    }

    /* 3 March 2024 */
    n = sp_halluc_digits(p, end, 2, &d);
    if (n > 0) {
        q = p + n;

        if (end - q >= 2 && (strncmp(q, "st", 2) == 0
                             || strncmp(q, "nd", 2) == 0
                             || strncmp(q, "rd", 2) == 0
                             || strncmp(q, "th", 2) == 0))
        {
            q += 2;
        }

        if (q < end && *q == ' ' && d >= 1 && d <= 31) {
            q++;
            m = sp_halluc_month(q, end, &len);

            if (m && q + len + 1 < end && q[len] == ' '
                && sp_halluc_digits(q + len + 1, end, 4, &y) == 4
                && y >= 1000 && y <= 2999
                && (q + len + 5 == end || !sp_halluc_alnum(q[len + 5])))
            {
                date->year = (int16_t) y;
                date->month = (int8_t) m;
                date->day = (int8_t) d;
                return (size_t) (q + len + 5 - p);
            }
        }

        return 0;
    }

    /* March 3, 2024; March 3 2024; March 2024 */
    m = sp_halluc_month(p, end, &len);
    if (m == 0 || p + len + 1 >= end || p[len] != ' ') {
        return 0;
    }

    q = p + len + 1;
    n = sp_halluc_digits(q, end, 4, &d);

    if (n == 4) {
        if (d < 1000 || d > 2999 || (q + 4 < end && sp_halluc_alnum(q[4]))) {
            return 0;
        }

        date->year = (int16_t) d;
        date->month = (int8_t) m;
        date->day = 0;
        return (size_t) (q + 4 - p);
    }

    if (n == 0 || d < 1 || d > 31) {
        return 0;
    }

    q += n;

    if (end - q >= 2 && (strncmp(q, "st", 2) == 0 || strncmp(q, "nd", 2) == 0
                         || strncmp(q, "rd", 2) == 0
                         || strncmp(q, "th", 2) == 0))
    {
        q += 2;
    }

    if (q < end && *q == ',') {
        q++;
    }

    if (q + 5 <= end && *q == ' ' && sp_halluc_digits(q + 1, end, 4, &y) == 4
        && y >= 1000 && y <= 2999
        && (q + 5 == end || !sp_halluc_alnum(q[5])))
    {
        date->year = (int16_t) y;
        date->month = (int8_t) m;
        date->day = (int8_t) d;
        return (size_t) (q + 5 - p);
    }

    return 0;
}


/*
 * The context's numbers and dates, for lookups by value. The numbers
 * inside a date count as numbers too (an answer may give the year
 * alone).
 */
static void
sp_halluc_context_facts(sp_halluc_ctx_t *ctx, const char *text, size_t len)
{
    int                small;
    size_t             n;
    void              *q;
    const char        *p, *end;
    sp_halluc_num_t    num;
    sp_halluc_date_t   date;

    p = text;
    end = text + len;

    while (p < end && !ctx->nomem) {
        if (!sp_halluc_alnum(*p)) {
            p++;
            continue;
        }

        /* dates start with a digit or a capital */
        if (!(*p >= 'a' && *p <= 'z') && sp_halluc_date(p, end, &date)) {
            q = sp_halluc_grow(ctx->date, ctx->date_local, &ctx->date_cap,
                               ctx->ndate + 1, sizeof(sp_halluc_date_t));
            if (q == NULL) {
                ctx->nomem = 1;
                return;
            }

            ctx->date = q;
            ctx->date[ctx->ndate++] = date;
        }

        if (sp_halluc_alpha(*p)) {
            /* a word, digits in it (Q3, GPT-4o) are part of it */
            while (p < end && (sp_halluc_alnum(*p) || *p == '-')) {
                p++;
            }

            continue;
        }

        n = sp_halluc_number(p, end, &num, &small);

        q = sp_halluc_grow(ctx->num, ctx->num_local, &ctx->num_cap,
                           ctx->nnum + 1, sizeof(sp_halluc_num_t));
        if (q == NULL) {
            ctx->nomem = 1;
            return;
        }

        ctx->num = q;
        ctx->num[ctx->nnum++] = num;
        p += n;
    }
}


static int
sp_halluc_has_num(const sp_halluc_ctx_t *ctx, const sp_halluc_num_t *num)
{
    size_t                  i;
    double                  d, m;
    const sp_halluc_num_t  *c;

    for (i = 0; i < ctx->nnum; i++) {
        c = &ctx->num[i];

        d = c->value - num->value;
        m = c->value > num->value ? c->value : num->value;

        if ((d < 0 ? -d : d) <= m * 1e-9) {
            return 1;
        }

        /* loosely: 1.234 in one locale is 1,234 in the other */
        if (c->ndigits == num->ndigits && num->ndigits > 1
            && memcmp(c->digits, num->digits, num->ndigits) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static int
sp_halluc_has_date(const sp_halluc_ctx_t *ctx, const sp_halluc_date_t *date)
{
    size_t                   i;
    const sp_halluc_date_t  *c;

    for (i = 0; i < ctx->ndate; i++) {
        c = &ctx->date[i];

        if (c->year == date->year && c->month == date->month
            && (date->day == 0 || c->day == date->day))
        {
            return 1;
        }
    }

    return 0;
}


/*
 * needle in haystack (memmem() is a GNU extension the nginx build
 * lacks). Needles start with a space, the commonest byte: the search
 * runs on their second.
 */
static int
sp_halluc_find(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
    const char  *p, *end;

    if (nlen < 2 || nlen > hlen) {
        return nlen == 0 || (nlen == 1 && memchr(hay, needle[0], hlen));
    }

    p = hay + 1;
    end = hay + hlen - (nlen - 1);

    while (p <= end) {
        p = memchr(p, needle[1], (size_t) (end - p) + 1);
        if (p == NULL) {
            return 0;
        }

        if (p[-1] == needle[0] && memcmp(p, needle + 1, nlen - 1) == 0) {
            return 1;
        }

        p++;
    }

    return 0;
}


/* the claim's words in the context, whole words, case and spacing aside */
static int
sp_halluc_has_text(const sp_halluc_ctx_t *ctx, const char *text, size_t len)
{
    int     cut;
    size_t  n;
    char    needle[SP_HALLUC_NEEDLE_MAX + 2];

    needle[0] = ' ';
    cut = len > SP_HALLUC_NEEDLE_MAX;

    if (cut) {
        /* a long quotation: its start, which may end inside a word */
        len = SP_HALLUC_NEEDLE_MAX;
    }

    n = 1 + sp_halluc_normalise(text, len, needle + 1, 1);

    if (n == 1) {
        /* nothing checkable in it: punctuation only */
        return 1;
    }

    if (needle[n - 1] != ' ' && !cut) {
        needle[n++] = ' ';
    }

    return sp_halluc_find(ctx->norm, ctx->norm_len, needle, n);
}


static void
sp_halluc_count(sp_halluc_count_t *count, size_t weight, int supported)
{
    count->claims++;
    count->weight += weight;

    if (!supported) {
        count->unsupported++;
        count->weight_unsupported += weight;
    }
}


/* one of the words (NUL-separated, an empty one last) is p[0..len) */
static int
sp_halluc_in(const char *words, const char *p, size_t len)
{
    size_t  n;

    for ( ;; ) {
        n = strlen(words);

        if (n == 0) {
            return 0;
        }

        if (n == len && memcmp(words, p, len) == 0) {
            return 1;
        }

        words += n + 1;
    }
}


/* acronyms that state nothing checkable */
static int
sp_halluc_common_acronym(const char *p, size_t len)
{
    return len <= 3
           && sp_halluc_in("OK\0AM\0PM\0ID\0NB\0PS\0TL\0DR\0AI\0FAQ\0"
                           "USD\0EUR\0GBP\0", p, len);
}


/* the lowercase words that may join a name: Bank of America */
static int
sp_halluc_connector(const char *p, size_t len)
{
    return len <= 3
           && sp_halluc_in("of\0de\0da\0di\0du\0del\0der\0van\0von\0la\0"
                           "le\0y\0and\0", p, len);
}


/*
 * A capitalised word at p (Acme, McKinsey, O'Brien, Jean-Luc, IBM):
 * its length, 0 when p starts none. Words of one letter (I, A) are
 * not names.
 */
static size_t
sp_halluc_capitalised(const char *p, const char *end)
{
    const char  *q;

    if (p >= end || !sp_halluc_upper(*p)) {
        return 0;
    }

    for (q = p + 1; q < end; q++) {
        if (sp_halluc_alnum(*q)) {
            continue;
        }

        if ((*q == '-' || *q == '\'') && q + 1 < end
            && sp_halluc_alpha(q[1]))
        {
            continue;
        }

        break;
    }

    return q - p >= 2 ? (size_t) (q - p) : 0;
}


/* 2..6 capitals and nothing else */
static int
sp_halluc_acronym(const char *p, size_t len)
{
    size_t  i;

    if (len < 2 || len > 6) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!sp_halluc_upper(p[i])) {
            return 0;
        }
    }

    return 1;
}


/*
 * A run of capitalised words from p (words separated by one space,
 * connectors between two of them). Returns the end of the run; *words:
 * how many capitalised words, *second: where the second one starts.
 */
static const char *
sp_halluc_run(const char *p, const char *end, size_t *words,
    const char **second)
{
    size_t       n, c, m;
    const char  *q, *last;

    *words = 0;
    *second = NULL;
    last = p;
    q = p;

    for ( ;; ) {
        n = sp_halluc_capitalised(q, end);
        if (n == 0) {
            break;
        }

        if (*words > 0 && sp_halluc_month(q, end, &m)) {
            /* March in "Acme Corp March 3": a date's, not the name's */
            break;
        }

        if (*words == 1) {
            *second = q;
        }

        (*words)++;
        last = q + n;

        if (last + 1 >= end || *last != ' ') {
            break;
        }

        q = last + 1;

        c = sp_halluc_word(q, end);
        if (c > 0 && !sp_halluc_upper(*q) && sp_halluc_connector(q, c)
            && q + c + 1 < end && q[c] == ' '
            && sp_halluc_capitalised(q + c + 1, end))
        {
            q += c + 1;
        }
    }

    return last;
}


/*
 * The answer's claims, each looked up in the context as it is found.
 * Claims are taken left to right and do not overlap: a date's numbers
 * are not claims of their own, a quotation's words are one claim.
 */
static void
sp_halluc_claims(const sp_halluc_ctx_t *ctx, const char *text, size_t len,
    sp_halluc_count_t *count)
{
    int                sentence, small;
    size_t             n, words;
    const char        *p, *end, *q, *run, *second, *close;
    unsigned char      c;
    sp_halluc_num_t    num;
    sp_halluc_date_t   date;

    p = text;
    end = text + len;
    sentence = 1;

    while (p < end) {
        c = (unsigned char) *p;

        /* quotations: "..." and the curly pair U+201C U+201D */
        if (c == '"' || (c == 0xe2 && end - p >= 3
                         && (unsigned char) p[1] == 0x80
                         && (unsigned char) p[2] == 0x9c))
        {
            q = p + (c == '"' ? 1 : 3);
            close = NULL;

            for (n = 0; q + n < end && n < SP_HALLUC_QUOTE_MAX; n++) {
                if (c == '"' ? q[n] == '"'
                    : (end - (q + n) >= 3 && (unsigned char) q[n] == 0xe2
                       && (unsigned char) q[n + 1] == 0x80
                       && (unsigned char) q[n + 2] == 0x9d))
                {
                    close = q + n;
                    break;
                }
            }

            if (close != NULL && close - q >= 3) {
                sp_halluc_count(count, SP_HALLUC_W_QUOTE,
                                sp_halluc_has_text(ctx, q, close - q));
                p = close + (c == '"' ? 1 : 3);
                sentence = 0;
                continue;
            }

            p++;
            continue;
        }

        if (c == '.' || c == '!' || c == '?' || c == '\n') {
            sentence = 1;
            p++;
            continue;
        }

        if (!sp_halluc_alnum((char) c)) {
            p++;
            continue;
        }

        n = (c >= 'a' && c <= 'z') ? 0 : sp_halluc_date(p, end, &date);
        if (n > 0) {
            sp_halluc_count(count, SP_HALLUC_W_DATE,
                            sp_halluc_has_date(ctx, &date));
            p += n;
            sentence = 0;
            continue;
        }

        if (sp_halluc_digit(p, end)) {
            n = sp_halluc_number(p, end, &num, &small);

            /* money is a claim however small */
            if (small && p > text && p[-1] == '$') {
                small = 0;
            }

            /* a figure glued to a word: GPT-4 is a name */
            if (!small && !(p - text >= 2 && p[-1] == '-'
                            && sp_halluc_alpha(p[-2])))
            {
                sp_halluc_count(count, SP_HALLUC_W_NUMBER,
                                sp_halluc_has_num(ctx, &num));
            }

            p += n;
            sentence = 0;
            continue;
        }

        run = sp_halluc_run(p, end, &words, &second);

        if (words == 0) {
            /* a lowercase word, or one letter */
            while (p < end && (sp_halluc_alnum(*p) || *p == '-'
                               || *p == '\''))
            {
                p++;
            }

            sentence = 0;
            continue;
        }

        q = p;

        if (sentence && !(words == 1 && sp_halluc_acronym(p, run - p))) {
            /* "The Board" at a sentence start: the first word may be */
            q = second;
            words--;
        }

        if (words >= 2) {
            sp_halluc_count(count, SP_HALLUC_W_ENTITY,
                            sp_halluc_has_text(ctx, q, run - q));

        } else if (words == 1 && q != NULL
                   && sp_halluc_acronym(q, run - q)
                   && !sp_halluc_common_acronym(q, run - q))
        {
            sp_halluc_count(count, SP_HALLUC_W_ENTITY,
                            sp_halluc_has_text(ctx, q, run - q));
        }

        p = run;
        sentence = 0;
    }
}


/* ---- signals and the formula ------------------------------------------- */

/* the distinct hedges in the answer (normalised phrases, whole words) */
static int
sp_halluc_hedges(const char *text, size_t len)
{
    static const char  *hedges[] = {
        " as of my knowledge cutoff ", " as of my last update ",
        " my training data ", " i believe ", " i think ", " probably ",
        " i m not sure ", " i am not sure ", " if i recall ",
        " to the best of my knowledge ", " it is possible that ",
        " i cannot verify ", " i can t verify ", " may have been ",
        " might be ", " likely ", NULL
    };
    int     found;
    size_t  i, n;
    char    norm[SP_HALLUC_TEXT_MAX + 2];

    if (len > SP_HALLUC_TEXT_MAX) {
        len = SP_HALLUC_TEXT_MAX;
    }

    norm[0] = ' ';
    n = 1 + sp_halluc_normalise(text, len, norm + 1, 1);

    if (norm[n - 1] != ' ') {
        norm[n++] = ' ';
    }

    found = 0;

    for (i = 0; hedges[i] != NULL; i++) {
        if (sp_halluc_find(norm, n, hedges[i], strlen(hedges[i]))) {
            found++;
        }
    }

    return found;
}


/*
 * The formula (docs/hallucination.md):
 *   grounded, claims > 0:
 *     pct = round(100 * unsupported weight / claims weight)
 *           + 15 when the answer stopped at its length limit, at most 100
 *   otherwise (no context, or no claim to check): signals only
 *     pct = 10 + 30 length limit + 10 cut short (kept text truncated or
 *           no finish reason) + 10 per distinct hedge (at most 30),
 *           at most 100
 */
static void
sp_halluc_result(const sp_halluc_ctx_t *ctx, int grounded,
    const sp_halluc_answer_t *a, sp_halluc_result_t *out)
{
    int                pct, hedges, cut;
    char               list[40];
    size_t             len;
    sp_halluc_count_t  count;

    memset(out, 0, sizeof(sp_halluc_result_t));
    memset(&count, 0, sizeof(sp_halluc_count_t));

    len = a->len < SP_HALLUC_TEXT_MAX ? a->len : SP_HALLUC_TEXT_MAX;

    out->grounded = grounded;

    if (grounded) {
        sp_halluc_claims(ctx, a->text, len, &count);
        out->claims = count.claims;
        out->unsupported = count.unsupported;
    }

    if (grounded && count.weight > 0) {
        pct = (int) ((100 * count.weight_unsupported + count.weight / 2)
                     / count.weight);

        if (a->finish_length) {
            pct += SP_HALLUC_LENGTH_GROUNDED;
        }

        out->pct = pct > 100 ? 100 : pct;

        snprintf(out->basis, sizeof(out->basis),
                 "context %zu/%zu unsupported%s",
                 count.unsupported, count.claims,
                 a->finish_length ? ", finish length" : "");
        return;
    }

    hedges = sp_halluc_hedges(a->text, len);
    cut = a->truncated || !a->finished;

    pct = SP_HALLUC_BASE;

    if (a->finish_length) {
        pct += SP_HALLUC_LENGTH;
    }

    if (cut) {
        pct += SP_HALLUC_CUT_SHORT;
    }

    pct += hedges * SP_HALLUC_HEDGE > SP_HALLUC_HEDGE_MAX
           ? SP_HALLUC_HEDGE_MAX : hedges * SP_HALLUC_HEDGE;

    out->pct = pct > 100 ? 100 : pct;

    snprintf(list, sizeof(list), "%s%s",
             a->finish_length ? ", finish length" : "",
             cut ? ", cut short" : "");

    if (hedges) {
        len = strlen(list);
        snprintf(list + len, sizeof(list) - len, ", hedges %c",
                 hedges > 9 ? '9' : '0' + hedges);
    }

    snprintf(out->basis, sizeof(out->basis), "%s%s",
             grounded ? "context, 0 claims: " : "signals only: ",
             list[0] ? list + 2 : "none");
}
