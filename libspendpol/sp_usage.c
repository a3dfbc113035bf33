/*
 * Responses: usage and model from JSON bodies and SSE events.
 *
 * OpenAI, Azure OpenAI and Mistral share the chat completions shape:
 * usage.prompt_tokens, usage.completion_tokens and
 * usage.prompt_tokens_details.cached_tokens (the Responses API names them
 * input_tokens, output_tokens, input_tokens_details.cached_tokens).
 */

#include <string.h>

#include "sp_scan.h"
#include "sp_usage_internal.h"


static int64_t
sp_json_int(json_t *obj, const char *name)
{
    json_t  *v;

    v = json_object_get(obj, name);

    if (json_is_integer(v) && json_integer_value(v) > 0) {
        return (int64_t) json_integer_value(v);
    }

    return 0;
}


static void
sp_usage_openai(json_t *usage, sp_response_info_t *info)
{
    json_t  *details;

    if (!json_is_object(usage)) {
        return;
    }

    info->has_usage = 1;

    if (json_object_get(usage, "prompt_tokens")) {
        info->usage.input_tokens = sp_json_int(usage, "prompt_tokens");
        info->usage.output_tokens = sp_json_int(usage, "completion_tokens");
        details = json_object_get(usage, "prompt_tokens_details");

    } else {
        info->usage.input_tokens = sp_json_int(usage, "input_tokens");
        info->usage.output_tokens = sp_json_int(usage, "output_tokens");
        details = json_object_get(usage, "input_tokens_details");
    }

    info->usage.cached_tokens = sp_json_int(details, "cached_tokens");
    info->usage.cache_write_tokens = 0;
}


void
sp_response_model(json_t *root, const char *name, sp_response_info_t *info)
{
    json_t  *model;

    model = json_object_get(root, name);

    if (json_is_string(model) && info->model[0] == '\0') {
        sp_field_copy(info->model, sizeof(info->model),
                      json_string_value(model), json_string_length(model));
    }
}


/* generated text in an OpenAI choice: message.content or delta.content */
static int64_t
sp_openai_choice_bytes(json_t *choices)
{
    json_t   *choice, *part, *content;
    size_t    i;
    int64_t   n;

    n = 0;

    json_array_foreach(choices, i, choice) {
        part = json_object_get(choice, "delta");

        if (part == NULL) {
            part = json_object_get(choice, "message");
        }

        content = json_object_get(part, "content");

        if (json_is_string(content)) {
            n += (int64_t) json_string_length(content);
        }

        content = json_object_get(choice, "text");

        if (json_is_string(content)) {
            n += (int64_t) json_string_length(content);
        }
    }

    return n;
}


/*
 * A held chat completion (OpenAI, Azure OpenAI, Mistral) is mostly the
 * generated text, which the cost does not need once the response reports
 * its usage. So the top-level members are located without building a
 * tree, and jansson parses only the "usage" object (and "model" when it
 * has escapes). Anything unusual (not one object, a key with an escape,
 * nesting deeper than SP_JSON_FAST_DEPTH, no usage object) is declined
 * and the whole body is parsed as before, which also counts the text for
 * an estimate. Duplicate members: the last one wins, as in jansson.
 */

#define SP_JSON_FAST_DEPTH  64

static const char *
sp_json_ws(const char *p, const char *last)
{
    while (p < last
           && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    {
        p++;
    }

    return p;
}


/* past the string that starts at p ('"'), or NULL; *escaped if any '\\' */
static const char *
sp_json_string_end(const char *p, const char *last, int *escaped)
{
    const char  *quote, *backslash;

    p++;

    while (p < last) {
        quote = memchr(p, '"', (size_t) (last - p));

        if (quote == NULL) {
            return NULL;
        }

        backslash = memchr(p, '\\', (size_t) (quote - p));

        if (backslash == NULL) {
            return quote + 1;
        }

        /* step over the escaped character, then look again */
        *escaped = 1;
        p = backslash + 2;
    }

    return NULL;
}


/* past the value that starts at p, or NULL when it is not well nested */
static const char *
sp_json_value_end(const char *p, const char *last)
{
    int  depth, escaped;

    if (p < last && *p == '"') {
        return sp_json_string_end(p, last, &escaped);
    }

    if (p < last && (*p == '{' || *p == '[')) {
        depth = 0;

        while (p < last) {
            switch (*p) {

            case '"':
                p = sp_json_string_end(p, last, &escaped);
                if (p == NULL) {
                    return NULL;
                }
                continue;

            case '{':
            case '[':
                if (++depth > SP_JSON_FAST_DEPTH) {
                    return NULL;
                }
                break;

            case '}':
            case ']':
                if (--depth == 0) {
                    return p + 1;
                }
                break;
            }

            p++;
        }

        return NULL;
    }

    /* a number, true, false or null */
    while (p < last && *p != ',' && *p != '}' && *p != ']' && *p != ' '
           && *p != '\t' && *p != '\n' && *p != '\r')
    {
        p++;
    }

    return p;
}


/* a member's integer value when above 0, else 0, as sp_json_int() */
static int64_t
sp_tape_int(const sp_json_tape_t *tape, size_t object, const char *name)
{
    size_t  v;

    v = sp_json_get(tape, object, name);

    return (v && tape->token[v].type == SP_JSON_INTEGER
            && tape->token[v].value > 0) ? tape->token[v].value : 0;
}


/*
 * sp_usage_openai() of a usage object's text, read without a tree: the
 * object is most of what a held chat completion costs to meter. SP_ERROR
 * when the validating scanner declines it (then jansson decides).
 */
static int
sp_usage_openai_scan(const char *text, size_t len, sp_response_info_t *info)
{
    size_t          details;
    sp_json_tape_t  tape;

    sp_json_tape_init(&tape);

    /* as json_loadb(text, len, 0) reads it: NUL in a string refused */
    if (sp_json_scan(&tape, text, len) != SP_OK
        || tape.token[0].type != SP_JSON_OBJECT || tape.nul)
    {
        sp_json_tape_free(&tape);
        return SP_ERROR;
    }

    info->has_usage = 1;

    if (sp_json_get(&tape, 0, "prompt_tokens")) {
        info->usage.input_tokens = sp_tape_int(&tape, 0, "prompt_tokens");
        info->usage.output_tokens = sp_tape_int(&tape, 0,
                                                "completion_tokens");
        details = sp_json_get(&tape, 0, "prompt_tokens_details");

    } else {
        info->usage.input_tokens = sp_tape_int(&tape, 0, "input_tokens");
        info->usage.output_tokens = sp_tape_int(&tape, 0, "output_tokens");
        details = sp_json_get(&tape, 0, "input_tokens_details");
    }

    info->usage.cached_tokens = details
                                ? sp_tape_int(&tape, details, "cached_tokens")
                                : 0;
    info->usage.cache_write_tokens = 0;

    sp_json_tape_free(&tape);

    return SP_OK;
}


static int
sp_usage_openai_fast(const char *body, size_t len, sp_response_info_t *info)
{
    int            escaped;
    size_t         klen;
    json_t        *v;
    const char    *p, *last, *key, *value, *end;
    const char    *usage, *usage_end, *model, *model_end;
    json_error_t   jerr;

    p = body;
    last = body + len;
    usage = usage_end = model = model_end = NULL;

    p = sp_json_ws(p, last);

    if (p == last || *p != '{') {
        return SP_ERROR;
    }

    p = sp_json_ws(p + 1, last);

    for ( ;; ) {
        if (p == last || *p != '"') {
            return SP_ERROR;
        }

        escaped = 0;
        key = p + 1;
        p = sp_json_string_end(p, last, &escaped);

        if (p == NULL || escaped) {
            return SP_ERROR;
        }

        klen = (size_t) (p - key - 1);

        p = sp_json_ws(p, last);

        if (p == last || *p != ':') {
            return SP_ERROR;
        }

        value = sp_json_ws(p + 1, last);
        end = sp_json_value_end(value, last);

        if (end == NULL || end == value) {
            return SP_ERROR;
        }

        if (klen == 5 && memcmp(key, "usage", 5) == 0) {
            usage = value;
            usage_end = end;

        } else if (klen == 5 && memcmp(key, "model", 5) == 0) {
            model = value;
            model_end = end;
        }

        p = sp_json_ws(end, last);

        if (p == last || *p != ',') {
            break;
        }

        p = sp_json_ws(p + 1, last);
    }

    /* one object and nothing after it, with a usage object */
    if (p == last || *p != '}' || sp_json_ws(p + 1, last) != last
        || usage == NULL || *usage != '{')
    {
        return SP_ERROR;
    }

    if (sp_usage_openai_scan(usage, (size_t) (usage_end - usage), info)
        != SP_OK)
    {
        /* declined by the scanner (a key twice, say): jansson reads it */
        v = json_loadb(usage, (size_t) (usage_end - usage), 0, &jerr);
        if (v == NULL) {
            return SP_ERROR;
        }

        sp_usage_openai(v, info);
        json_decref(v);
    }

    if (model != NULL && *model == '"' && info->model[0] == '\0') {
        for (p = model + 1; p < model_end - 1; p++) {
            if (*p < 0x20 || *p > 0x7e || *p == '\\') {
                break;
            }
        }

        if (p == model_end - 1) {
            sp_field_copy(info->model, sizeof(info->model), model + 1,
                          (size_t) (model_end - model - 2));

        } else {
            v = json_loadb(model, (size_t) (model_end - model),
                           JSON_DECODE_ANY, &jerr);

            if (json_is_string(v)) {
                sp_field_copy(info->model, sizeof(info->model),
                              json_string_value(v), json_string_length(v));
            }

            json_decref(v);
        }
    }

    info->done = 1;

    return SP_OK;
}


int
sp_usage_from_json(sp_provider_e provider, const char *body, size_t len,
    sp_response_info_t *info)
{
    if ((provider == SP_PROVIDER_OPENAI || provider == SP_PROVIDER_AZURE
         || provider == SP_PROVIDER_MISTRAL)
        && sp_usage_openai_fast(body, len, info) == SP_OK)
    {
        return SP_OK;
    }

    return sp_usage_from_json_tree(provider, body, len, info);
}


int
sp_usage_from_json_tree(sp_provider_e provider, const char *body, size_t len,
    sp_response_info_t *info)
{
    json_t        *root, *item;
    json_error_t   jerr;
    size_t         i;

    root = json_loadb(body, len, 0, &jerr);
    if (root == NULL) {
        return SP_ERROR;
    }

    if (provider == SP_PROVIDER_GOOGLE && json_is_array(root)) {
        /* streamGenerateContent without alt=sse: an array of chunks */
        json_array_foreach(root, i, item) {
            if (json_is_object(item)) {
                sp_usage_google(item, info);
            }
        }

        info->done = 1;
        json_decref(root);

        return SP_OK;
    }

    if (!json_is_object(root)) {
        json_decref(root);
        return SP_ERROR;
    }

    switch (provider) {

    case SP_PROVIDER_ANTHROPIC:
        sp_usage_anthropic_json(root, info);
        break;

    case SP_PROVIDER_GOOGLE:
        sp_usage_google(root, info);
        break;

    case SP_PROVIDER_COHERE:
        sp_usage_cohere_json(root, info);
        break;

    default: /* OpenAI, Azure OpenAI, Mistral */
        sp_response_model(root, "model", info);
        info->output_bytes += sp_openai_choice_bytes(
                                  json_object_get(root, "choices"));
        sp_usage_openai(json_object_get(root, "usage"), info);
        break;
    }

    info->done = 1;

    json_decref(root);

    return SP_OK;
}


/*
 * The Responses API streams typed events instead of chunks: text arrives
 * in "response.output_text.delta", and the model and usage under
 * "response" in "response.created" and in the final "response.completed"
 * (or "response.incomplete" or "response.failed"); there is no [DONE].
 */
static void
sp_usage_responses_event(json_t *root, sp_response_info_t *info)
{
    const char  *type;
    json_t      *response, *delta;

    type = json_string_value(json_object_get(root, "type"));

    if (type == NULL || strncmp(type, "response.", 9) != 0) {
        return;
    }

    if (strcmp(type, "response.output_text.delta") == 0) {
        delta = json_object_get(root, "delta");

        if (json_is_string(delta)) {
            info->output_bytes += (int64_t) json_string_length(delta);
        }

        return;
    }

    response = json_object_get(root, "response");

    if (!json_is_object(response)) {
        return;
    }

    sp_response_model(response, "model", info);
    sp_usage_openai(json_object_get(response, "usage"), info);

    if (strcmp(type, "response.completed") == 0
        || strcmp(type, "response.incomplete") == 0
        || strcmp(type, "response.failed") == 0)
    {
        info->done = 1;
    }
}


static const char *
sp_find_bytes(const char *p, const char *last, const char *needle, size_t n)
{
    for (; (size_t) (last - p) >= n; p++) {
        if (*p == *needle && memcmp(p, needle, n) == 0) {
            return p;
        }
    }

    return NULL;
}


/*
 * Most events of a streamed chat completion carry a few characters of
 * content and no usage: they are counted without parsing the JSON. Once
 * the model is known, a chat.completion.chunk without a usage object
 * only adds its "content" strings' bytes (escapes counted as written).
 * Returns 1 when the event was handled so.
 */
static int
sp_usage_chunk_fast(sp_provider_e provider, const char *data, size_t len,
    sp_response_info_t *info)
{
    const char  *p, *last;

    if (provider == SP_PROVIDER_ANTHROPIC || provider == SP_PROVIDER_GOOGLE
        || provider == SP_PROVIDER_COHERE || info->model[0] == '\0')
    {
        return 0;
    }

    last = data + len;

    if (sp_find_bytes(data, last, "\"chat.completion.chunk\"", 23) == NULL
        || sp_find_bytes(data, last, "\"usage\":{", 9) != NULL
        || sp_find_bytes(data, last, "\"usage\": {", 10) != NULL)
    {
        return 0;
    }

    for (p = data; (p = sp_find_bytes(p, last, "\"content\":\"", 11)); ) {
        for (p += 11; p < last && *p != '"'; p++) {
            if (*p == '\\') {
                p++;
            }

            info->output_bytes++;
        }
    }

    return 1;
}


int
sp_usage_from_event(sp_provider_e provider, const char *event,
    const char *data, size_t len, sp_response_info_t *info)
{
    json_t        *root, *choices, *usage;
    json_error_t   jerr;
    int            usage_only;

    (void) event;

    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        info->done = 1;
        return 0;
    }

    if (sp_usage_chunk_fast(provider, data, len, info)) {
        return 0;
    }

    root = json_loadb(data, len, 0, &jerr);
    if (root == NULL) {
        return 0;
    }

    if (!json_is_object(root)) {
        json_decref(root);
        return 0;
    }

    usage_only = 0;

    switch (provider) {

    case SP_PROVIDER_ANTHROPIC:
        sp_usage_anthropic_event(root, info);
        break;

    case SP_PROVIDER_GOOGLE:
        sp_usage_google(root, info);
        break;

    case SP_PROVIDER_COHERE:
        sp_usage_cohere_event(root, info);
        break;

    default: /* OpenAI, Azure OpenAI, Mistral */
        sp_response_model(root, "model", info);

        choices = json_object_get(root, "choices");
        info->output_bytes += sp_openai_choice_bytes(choices);

        usage = json_object_get(root, "usage");
        sp_usage_openai(usage, info);

        usage_only = json_is_object(usage) && json_is_array(choices)
                     && json_array_size(choices) == 0;

        sp_usage_responses_event(root, info);
        break;
    }

    json_decref(root);

    return usage_only;
}
