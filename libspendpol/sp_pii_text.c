/*
 * The text a model reads in a provider body (sp_pii_body_text()): the
 * body is read once onto a tape (sp_json_scan(), or jansson for what the
 * scanner declines), then the walk visits, in body order, each string
 * value that a model reads, decoded, with the map from decoded bytes to
 * the body's raw bytes.
 *
 * One walk serves the six providers: the members it follows do not
 * collide between their formats (an OpenAI body has no "contents", a
 * Google body no "messages"), so a body sent to the wrong path is still
 * read whole rather than passed unscanned. provider only narrows what
 * has no prefix to tell it apart (nothing today).
 */

#include <stdlib.h>
#include <strings.h>
#include <jansson.h>

#include "sp_pii.h"
#include "sp_scan.h"


typedef struct {
    const sp_json_tape_t  *tape;
    const char            *body;
    size_t                 len;
    int                  (*visit)(const sp_pii_text_t *text, void *arg);
    void                  *arg;

    /* the decoded copy of an escaped string: grown, freed by the caller */
    char                  *buf;
    uint32_t              *raw;
    size_t                 cap;

    int                    stop;      /* a visit asked to stop */
    int                    error;     /* memory ran out */
} sp_pii_walk_t;


static void sp_pii_walk_content(sp_pii_walk_t *w, size_t i, int context);
static void sp_pii_walk_item(sp_pii_walk_t *w, size_t i, int context);
static void sp_pii_walk_strings(sp_pii_walk_t *w, size_t i, int context);


/* 1 when token k (a key or a string) is name, as decoded */
static int
sp_pii_str_is(const sp_json_token_t *t, const char *name)
{
    size_t  len;
    char    key[64];

    len = strlen(name);

    if (t->type != SP_JSON_STRING || (size_t) t->value != len) {
        return 0;
    }

    if (!t->escaped) {
        return memcmp(t->text, name, len) == 0;
    }

    return len < sizeof(key) && sp_json_decode(t, key, sizeof(key)) == len
           && memcmp(key, name, len) == 0;
}


/* the same, ignoring ASCII case (Cohere v1 writes roles in capitals) */
static int
sp_pii_str_is_nocase(const sp_json_token_t *t, const char *name)
{
    size_t  len, n;
    char    key[64];

    len = strlen(name);

    if (t->type != SP_JSON_STRING || (size_t) t->value != len
        || len >= sizeof(key))
    {
        return 0;
    }

    n = sp_json_decode(t, key, sizeof(key));

    return n == len && strncasecmp(key, name, len) == 0;
}


/*
 * Base64 payloads and data: URLs are not text a model reads as words
 * (images, audio, files): scanning them finds digit runs by chance.
 */
static int
sp_pii_is_payload(const sp_json_token_t *t)
{
    if (t->raw_len >= 5 && memcmp(t->text, "data:", 5) == 0) {
        return 1;
    }

    return 0;
}


static int
sp_pii_is_base64(const sp_json_token_t *t)
{
    size_t          k;
    unsigned char   c;

    if (t->raw_len < 64) {
        return 0;
    }

    for (k = 0; k < t->raw_len; k++) {
        c = (unsigned char) t->text[k];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
              || (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '='
              || c == '_' || c == '-' || c == '\\'))
        {
            return 0;
        }
    }

    return 1;
}


static int
sp_pii_grow(sp_pii_walk_t *w, size_t need)
{
    char      *buf;
    uint32_t  *raw;

    if (need <= w->cap) {
        return SP_OK;
    }

    if (need < 256) {
        need = 256;
    }

    buf = malloc(need);
    raw = malloc(need * sizeof(uint32_t));

    if (buf == NULL || raw == NULL) {
        free(buf);
        free(raw);
        w->error = 1;
        return SP_ERROR;
    }

    free(w->buf);
    free(w->raw);
    w->buf = buf;
    w->raw = raw;
    w->cap = need;

    return SP_OK;
}


static void
sp_pii_utf8(uint32_t cp, char *out, uint32_t *raw, uint32_t at, size_t *n)
{
    size_t  k;

    k = *n;

    if (cp < 0x80) {
        out[k++] = (char) cp;

    } else if (cp < 0x800) {
        out[k++] = (char) (0xc0 | (cp >> 6));
        out[k++] = (char) (0x80 | (cp & 0x3f));

    } else if (cp < 0x10000) {
        out[k++] = (char) (0xe0 | (cp >> 12));
        out[k++] = (char) (0x80 | ((cp >> 6) & 0x3f));
        out[k++] = (char) (0x80 | (cp & 0x3f));

    } else {
        out[k++] = (char) (0xf0 | (cp >> 18));
        out[k++] = (char) (0x80 | ((cp >> 12) & 0x3f));
        out[k++] = (char) (0x80 | ((cp >> 6) & 0x3f));
        out[k++] = (char) (0x80 | (cp & 0x3f));
    }

    while (*n < k) {
        raw[(*n)++] = at;
    }
}


static uint32_t
sp_pii_hex4(const char *p)
{
    int       k, d;
    uint32_t  v;

    v = 0;

    for (k = 0; k < 4; k++) {
        d = sp_hex_digit((unsigned char) p[k]);
        v = (v << 4) | (uint32_t) (d < 0 ? 0 : d);
    }

    return v;
}


/*
 * Decodes a string token into w->buf with its raw map. The tape has
 * checked the escapes (the scanner, or jansson); a surrogate without its
 * pair, which neither lets through, would become U+FFFD.
 */
static int
sp_pii_decode(sp_pii_walk_t *w, const sp_json_token_t *t, sp_pii_text_t *out)
{
    size_t       n;
    uint32_t     off, at, cp, low;
    const char  *p, *last;

    off = (uint32_t) (t->text - w->body);

    if (sp_pii_grow(w, (size_t) t->raw_len + 1) != SP_OK) {
        return SP_ERROR;
    }

    p = t->text;
    last = t->text + t->raw_len;
    n = 0;

    if (!t->escaped) {
        /* the body's own bytes; only the map is written */
        for (n = 0; n < t->raw_len; n++) {
            w->raw[n] = off + (uint32_t) n;
        }

        w->raw[n] = off + t->raw_len;
        out->text = t->text;
        out->len = n;
        out->raw = w->raw;
        return SP_OK;
    }

    while (p < last) {
        at = off + (uint32_t) (p - t->text);

        if (*p != '\\') {
            w->buf[n] = *p++;
            w->raw[n++] = at;
            continue;
        }

        if (last - p < 2) {
            break;
        }

        switch (p[1]) {
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u': cp = 0; break;
        default:  cp = (unsigned char) p[1]; break;
        }

        if (p[1] != 'u') {
            w->buf[n] = (char) cp;
            w->raw[n++] = at;
            p += 2;
            continue;
        }

        if (last - p < 6) {
            break;
        }

        cp = sp_pii_hex4(p + 2);
        p += 6;

        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (last - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                low = sp_pii_hex4(p + 2);

                if (low >= 0xdc00 && low <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                    p += 6;

                } else {
                    cp = 0xfffd;
                }

            } else {
                cp = 0xfffd;
            }

        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            cp = 0xfffd;
        }

        sp_pii_utf8(cp, w->buf, w->raw, at, &n);
    }

    w->raw[n] = off + t->raw_len;
    out->text = w->buf;
    out->len = n;
    out->raw = w->raw;

    return SP_OK;
}


static void
sp_pii_emit(sp_pii_walk_t *w, size_t i, int context)
{
    sp_pii_text_t           text;
    const sp_json_token_t  *t;

    t = &w->tape->token[i];

    if (w->stop || t->type != SP_JSON_STRING || t->raw_len == 0
        || sp_pii_is_payload(t))
    {
        return;
    }

    if (sp_pii_decode(w, t, &text) != SP_OK) {
        w->stop = 1;
        return;
    }

    text.context = context;

    if (w->visit(&text, w->arg) != 0) {
        w->stop = 1;
    }
}


/* members that are metadata, never text a model reads */
static int
sp_pii_is_metadata(const sp_json_token_t *key)
{
    static const char  *names[] = {
        "model", "role", "type", "id", "tool_call_id", "tool_use_id",
        "call_id", "url", "image_url", "mime_type", "mimeType",
        "media_type", "inlineData", "inline_data", "fileData", "file_data",
        "file_id", "input_audio", "b64_json", "signature", "cache_control",
        "finish_reason", "stop_reason", "index", "object", "status",
        "encoding_format", "format", "detail", "uri", "fileUri", "file_uri",
        NULL
    };
    const char  **n;

    for (n = names; *n; n++) {
        if (sp_pii_str_is(key, *n)) {
            return 1;
        }
    }

    return 0;
}


/* every string value under i but metadata members: tool data, documents */
static void
sp_pii_walk_strings(sp_pii_walk_t *w, size_t i, int context)
{
    size_t                  k;
    const sp_json_token_t  *t;

    t = w->tape->token;

    switch (t[i].type) {

    case SP_JSON_STRING:
        sp_pii_emit(w, i, context);
        return;

    case SP_JSON_ARRAY:
        for (k = i + 1; k < t[i].end && !w->stop; k = t[k].end) {
            sp_pii_walk_strings(w, k, context);
        }

        return;

    case SP_JSON_OBJECT:
        for (k = i + 1; k < t[i].end && !w->stop; k = t[k + 1].end) {
            if (sp_pii_is_metadata(&t[k])) {
                continue;
            }

            if (sp_pii_str_is(&t[k], "data") && sp_pii_is_base64(&t[k + 1]))
            {
                continue;
            }

            sp_pii_walk_strings(w, k + 1, context);
        }

        return;

    default:
        return;
    }
}


/* a role that supplies material rather than an ask */
static int
sp_pii_role_context(const sp_json_token_t *role)
{
    static const char  *names[] = {
        "system", "developer", "tool", "function", "ipython", NULL
    };
    const char  **n;

    for (n = names; *n; n++) {
        if (sp_pii_str_is_nocase(role, *n)) {
            return 1;
        }
    }

    return 0;
}


/*
 * A content member: a string, an array of strings and parts, or one part.
 */
static void
sp_pii_walk_content(sp_pii_walk_t *w, size_t i, int context)
{
    size_t                  k;
    const sp_json_token_t  *t;

    t = w->tape->token;

    switch (t[i].type) {

    case SP_JSON_STRING:
        sp_pii_emit(w, i, context);
        return;

    case SP_JSON_ARRAY:
        for (k = i + 1; k < t[i].end && !w->stop; k = t[k].end) {
            if (t[k].type == SP_JSON_STRING) {
                sp_pii_emit(w, k, context);

            } else if (t[k].type == SP_JSON_OBJECT) {
                sp_pii_walk_item(w, k, context);
            }
        }

        return;

    case SP_JSON_OBJECT:
        sp_pii_walk_item(w, i, context);
        return;

    default:
        return;
    }
}


/*
 * A message, a content part or block, a Responses input item, a Google
 * content: each member a model reads, whichever of the formats it is.
 */
static void
sp_pii_walk_item(sp_pii_walk_t *w, size_t i, int context)
{
    size_t                  k, v, a, f;
    const sp_json_token_t  *t;

    t = w->tape->token;

    v = sp_json_get(w->tape, i, "role");
    if (v && sp_pii_role_context(&t[v])) {
        context = 1;
    }

    v = sp_json_get(w->tape, i, "type");
    if (v && (sp_pii_str_is(&t[v], "tool_result")
              || sp_pii_str_is(&t[v], "function_call_output")
              || sp_pii_str_is(&t[v], "document")))
    {
        context = 1;
    }

    for (k = i + 1; k < t[i].end && !w->stop; k = t[k + 1].end) {
        v = k + 1;

        if (sp_pii_str_is(&t[k], "text")) {
            if (t[v].type == SP_JSON_STRING) {
                sp_pii_emit(w, v, context);

            } else if (t[v].type == SP_JSON_OBJECT) {
                /* Cohere v2 stream: delta.message.content.text */
                sp_pii_walk_item(w, v, context);
            }

        } else if (sp_pii_str_is(&t[k], "content")
                   || sp_pii_str_is(&t[k], "parts")
                   || sp_pii_str_is(&t[k], "message"))
        {
            sp_pii_walk_content(w, v, context);

        } else if (sp_pii_str_is(&t[k], "tool_calls")
                   && t[v].type == SP_JSON_ARRAY)
        {
            for (a = v + 1; a < t[v].end && !w->stop; a = t[a].end) {
                f = sp_json_get(w->tape, a, "function");
                f = f ? sp_json_get(w->tape, f, "arguments") : 0;

                if (f) {
                    sp_pii_walk_strings(w, f, context);
                }
            }

        } else if (sp_pii_str_is(&t[k], "arguments")
                   || sp_pii_str_is(&t[k], "input")
                   || sp_pii_str_is(&t[k], "refusal")
                   || sp_pii_str_is(&t[k], "thinking"))
        {
            /* tool calls the model made: what it reads back next turn */
            sp_pii_walk_strings(w, v, context);

        } else if (sp_pii_str_is(&t[k], "output")
                   || sp_pii_str_is(&t[k], "tool_results")
                   || sp_pii_str_is(&t[k], "document"))
        {
            sp_pii_walk_strings(w, v, 1);

        } else if (sp_pii_str_is(&t[k], "functionCall")
                   || sp_pii_str_is(&t[k], "function_call"))
        {
            a = sp_json_get(w->tape, v, "args");
            if (a) {
                sp_pii_walk_strings(w, a, context);
            }

            a = sp_json_get(w->tape, v, "arguments");
            if (a) {
                sp_pii_walk_strings(w, a, context);
            }

        } else if (sp_pii_str_is(&t[k], "functionResponse")
                   || sp_pii_str_is(&t[k], "function_response"))
        {
            a = sp_json_get(w->tape, v, "response");
            if (a) {
                sp_pii_walk_strings(w, a, 1);
            }

        } else if (sp_pii_str_is(&t[k], "source")
                   && t[v].type == SP_JSON_OBJECT)
        {
            /* Anthropic documents: plain text or content blocks */
            a = sp_json_get(w->tape, v, "type");

            if (a && sp_pii_str_is(&t[a], "text")) {
                a = sp_json_get(w->tape, v, "data");
                if (a) {
                    sp_pii_emit(w, a, 1);
                }

            } else if (a && sp_pii_str_is(&t[a], "content")) {
                a = sp_json_get(w->tape, v, "content");
                if (a) {
                    sp_pii_walk_content(w, a, 1);
                }
            }
        }
    }
}


/* a string, or an array of strings (prompts, embeddings' texts) */
static void
sp_pii_walk_texts(sp_pii_walk_t *w, size_t i, int context)
{
    size_t                  k;
    const sp_json_token_t  *t;

    t = w->tape->token;

    if (t[i].type == SP_JSON_STRING) {
        sp_pii_emit(w, i, context);
        return;
    }

    if (t[i].type != SP_JSON_ARRAY) {
        return;
    }

    for (k = i + 1; k < t[i].end && !w->stop; k = t[k].end) {
        if (t[k].type == SP_JSON_STRING) {
            sp_pii_emit(w, k, context);

        } else if (t[k].type == SP_JSON_OBJECT) {
            /* Responses API input items */
            sp_pii_walk_item(w, k, context);
        }
    }
}


/* each element of an array member as an item */
static void
sp_pii_walk_items(sp_pii_walk_t *w, size_t i, int context)
{
    size_t                  k;
    const sp_json_token_t  *t;

    t = w->tape->token;

    if (t[i].type == SP_JSON_OBJECT) {
        sp_pii_walk_item(w, i, context);
        return;
    }

    if (t[i].type != SP_JSON_ARRAY) {
        return;
    }

    for (k = i + 1; k < t[i].end && !w->stop; k = t[k].end) {
        if (t[k].type == SP_JSON_OBJECT) {
            sp_pii_walk_item(w, k, context);

        } else if (t[k].type == SP_JSON_STRING) {
            sp_pii_emit(w, k, context);
        }
    }
}


static void
sp_pii_walk_request(sp_pii_walk_t *w, size_t i)
{
    size_t                  k, v, c;
    const sp_json_token_t  *t;

    t = w->tape->token;

    for (k = i + 1; k < t[i].end && !w->stop; k = t[k + 1].end) {
        v = k + 1;

        if (sp_pii_str_is(&t[k], "messages")
            || sp_pii_str_is(&t[k], "contents")
            || sp_pii_str_is(&t[k], "chat_history"))
        {
            sp_pii_walk_items(w, v, 0);

        } else if (sp_pii_str_is(&t[k], "system")
                   || sp_pii_str_is(&t[k], "systemInstruction")
                   || sp_pii_str_is(&t[k], "system_instruction"))
        {
            sp_pii_walk_content(w, v, 1);

        } else if (sp_pii_str_is(&t[k], "instructions")
                   || sp_pii_str_is(&t[k], "preamble"))
        {
            sp_pii_walk_texts(w, v, 1);

        } else if (sp_pii_str_is(&t[k], "documents")
                   || sp_pii_str_is(&t[k], "tool_results"))
        {
            sp_pii_walk_strings(w, v, 1);

        } else if (sp_pii_str_is(&t[k], "input")
                   || sp_pii_str_is(&t[k], "prompt")
                   || sp_pii_str_is(&t[k], "suffix")
                   || sp_pii_str_is(&t[k], "message")
                   || sp_pii_str_is(&t[k], "texts")
                   || sp_pii_str_is(&t[k], "query"))
        {
            sp_pii_walk_texts(w, v, 0);

        } else if (sp_pii_str_is(&t[k], "content")) {
            /* Google embedContent */
            sp_pii_walk_content(w, v, 0);

        } else if (sp_pii_str_is(&t[k], "requests")
                   && t[v].type == SP_JSON_ARRAY)
        {
            /* Google batchEmbedContents */
            for (c = v + 1; c < t[v].end && !w->stop; c = t[c].end) {
                if (t[c].type == SP_JSON_OBJECT) {
                    sp_pii_walk_request(w, c);
                }
            }
        }
    }
}


static void
sp_pii_walk_answer(sp_pii_walk_t *w, size_t i)
{
    size_t                  k, v, c, m;
    const sp_json_token_t  *t;

    t = w->tape->token;

    for (k = i + 1; k < t[i].end && !w->stop; k = t[k + 1].end) {
        v = k + 1;

        if (sp_pii_str_is(&t[k], "choices") && t[v].type == SP_JSON_ARRAY) {
            for (c = v + 1; c < t[v].end && !w->stop; c = t[c].end) {
                m = sp_json_get(w->tape, c, "message");
                if (m) {
                    sp_pii_walk_item(w, m, 0);
                }

                m = sp_json_get(w->tape, c, "delta");
                if (m) {
                    sp_pii_walk_item(w, m, 0);
                }

                m = sp_json_get(w->tape, c, "text");
                if (m) {
                    sp_pii_emit(w, m, 0);
                }
            }

        } else if (sp_pii_str_is(&t[k], "candidates")
                   && t[v].type == SP_JSON_ARRAY)
        {
            for (c = v + 1; c < t[v].end && !w->stop; c = t[c].end) {
                m = sp_json_get(w->tape, c, "content");
                if (m) {
                    sp_pii_walk_content(w, m, 0);
                }
            }

        } else if (sp_pii_str_is(&t[k], "content")
                   || sp_pii_str_is(&t[k], "content_block")
                   || sp_pii_str_is(&t[k], "message")
                   || sp_pii_str_is(&t[k], "output")
                   || sp_pii_str_is(&t[k], "item"))
        {
            sp_pii_walk_content(w, v, 0);

        } else if (sp_pii_str_is(&t[k], "delta")) {
            /* Anthropic text_delta, Cohere v2, Responses' text deltas */
            sp_pii_walk_content(w, v, 0);

        } else if (sp_pii_str_is(&t[k], "text")) {
            /* Cohere v1 answers and stream events */
            sp_pii_emit(w, v, 0);

        } else if (sp_pii_str_is(&t[k], "response")
                   && t[v].type == SP_JSON_OBJECT)
        {
            /* Responses API: response.completed carries the answer */
            sp_pii_walk_answer(w, v);
        }
    }
}


/*
 * A tape built from jansson's tree holds decoded strings in the tree;
 * the walk needs them as written in the body. The tree keeps members in
 * document order, so its string tokens (keys and values) are the body's
 * string literals in order: pointing each at its literal needs only the
 * quotes found, the tree having already checked the body.
 */
static int
sp_pii_tape_to_body(sp_json_tape_t *tape, const char *body, size_t len)
{
    size_t           k, pos, start;
    int              escaped;
    sp_json_token_t  *t;

    pos = 0;

    for (k = 0; k < tape->n; k++) {
        t = &tape->token[k];

        if (t->type != SP_JSON_STRING) {
            continue;
        }

        while (pos < len && body[pos] != '"') {
            pos++;
        }

        if (pos == len) {
            return SP_ERROR;
        }

        start = ++pos;
        escaped = 0;

        while (pos < len && body[pos] != '"') {
            if (body[pos] == '\\') {
                escaped = 1;
                pos++;
            }

            pos++;
        }

        if (pos >= len) {
            return SP_ERROR;
        }

        t->text = body + start;
        t->raw_len = (uint32_t) (pos - start);
        t->escaped = (uint8_t) escaped;
        pos++;
    }

    return SP_OK;
}


int
sp_pii_body_text(sp_provider_e provider, int answer, const char *body,
    size_t len, int (*visit)(const sp_pii_text_t *text, void *arg),
    void *arg)
{
    size_t          k;
    json_t         *root;
    json_error_t    jerr;
    sp_pii_walk_t   w;
    sp_json_tape_t  tape;

    if (len >= UINT32_MAX / 2) {
        return SP_ERROR;
    }

    sp_json_tape_init(&tape);

    if (sp_json_scan(&tape, body, len) != SP_OK) {
        sp_json_tape_free(&tape);
        sp_json_tape_init(&tape);

        root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                          &jerr);
        if (root == NULL) {
            return SP_ERROR;
        }

        if (sp_json_tape_from_tree(&tape, root) != SP_OK
            || sp_pii_tape_to_body(&tape, body, len) != SP_OK)
        {
            json_decref(root);
            sp_json_tape_free(&tape);
            return SP_ERROR;
        }

        /* every string token now points into the body */
        json_decref(root);
    }

    memset(&w, 0, sizeof(sp_pii_walk_t));
    w.tape = &tape;
    w.body = body;
    w.len = len;
    w.visit = visit;
    w.arg = arg;

    if (tape.token[0].type == SP_JSON_ARRAY) {
        /* Google's streamGenerateContent without alt=sse; batches */
        for (k = 1; k < tape.token[0].end && !w.stop; k = tape.token[k].end) {
            if (tape.token[k].type != SP_JSON_OBJECT) {
                continue;
            }

            if (answer) {
                sp_pii_walk_answer(&w, k);

            } else {
                sp_pii_walk_request(&w, k);
            }
        }

    } else if (answer) {
        sp_pii_walk_answer(&w, 0);

    } else {
        sp_pii_walk_request(&w, 0);
    }

    free(w.buf);
    free(w.raw);
    sp_json_tape_free(&tape);

    return w.error ? SP_ERROR : SP_OK;
}
