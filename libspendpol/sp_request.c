/*
 * Requests: the fields governance needs, read from the body once.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sp_scan.h"
#include "sp_usage.h"


static const char  *sp_provider_names[] = {
    "", "openai", "anthropic", "google", "azure", "cohere", "mistral"
};


sp_provider_e
sp_provider_from_name(const char *name, size_t len)
{
    size_t  i;

    for (i = 1; i < sizeof(sp_provider_names) / sizeof(char *); i++) {
        if (strlen(sp_provider_names[i]) == len
            && memcmp(sp_provider_names[i], name, len) == 0)
        {
            return (sp_provider_e) i;
        }
    }

    return SP_PROVIDER_UNKNOWN;
}


const char *
sp_provider_name(sp_provider_e provider)
{
    if ((size_t) provider >= sizeof(sp_provider_names) / sizeof(char *)) {
        return "";
    }

    return sp_provider_names[provider];
}


int64_t
sp_tokens_estimate(int64_t bytes)
{
    if (bytes <= 0) {
        return 0;
    }

    /* not (bytes + 3) / 4: that overflows near INT64_MAX */
    return bytes / 4 + (bytes % 4 != 0);
}


/* a + b for counts (both >= 0): saturates instead of overflowing */
static int64_t
sp_request_add(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}


/*
 * A request's prompt: its text bytes and the charge for its media, found
 * in one walk over the prompt fields.
 *
 * Media are recognised by the part's "type" (OpenAI chat and Responses,
 * Anthropic, Cohere, Mistral) or by Gemini's inline_data and file_data
 * parts; their data ("data", "file_data", "image_url", "input_audio") is
 * skipped as text, so a base64 blob is charged once, as media. Object
 * keys are not text, except in schemas (tools, functions,
 * response_format, "text"), where the model reads the property names.
 */
typedef struct {
    int64_t  text;
    int64_t  media;
    int      images;     /* an image part was seen */
    int      keys;       /* count object keys as text */
    int      token_ids;  /* integers are token ids (input, prompt) */
} sp_prompt_t;

#define SP_PROMPT_DEPTH  32

enum {
    SP_PROMPT_KEY_TEXT = 0,
    SP_PROMPT_KEY_SKIP,
    SP_PROMPT_KEY_TYPE,
    SP_PROMPT_KEY_INLINE,    /* Gemini inline_data: mime type and bytes */
    SP_PROMPT_KEY_FILE       /* Gemini file_data: mime type, by URI */
};


static int
sp_prompt_key(const char *key)
{
    switch (key[0]) {

    case 'd':
        return strcmp(key, "data") == 0 ? SP_PROMPT_KEY_SKIP
                                        : SP_PROMPT_KEY_TEXT;

    case 'f':
        if (strcmp(key, "file_data") == 0) {
            return SP_PROMPT_KEY_FILE;
        }

        return strcmp(key, "fileData") == 0 ? SP_PROMPT_KEY_FILE
                                            : SP_PROMPT_KEY_TEXT;

    case 'i':
        if (strcmp(key, "id") == 0 || strcmp(key, "image_url") == 0
            || strcmp(key, "input_audio") == 0)
        {
            return SP_PROMPT_KEY_SKIP;
        }

        if (strcmp(key, "inline_data") == 0
            || strcmp(key, "inlineData") == 0)
        {
            return SP_PROMPT_KEY_INLINE;
        }

        return SP_PROMPT_KEY_TEXT;

    case 'r':
        return strcmp(key, "role") == 0 ? SP_PROMPT_KEY_SKIP
                                        : SP_PROMPT_KEY_TEXT;

    case 't':
        return strcmp(key, "type") == 0 ? SP_PROMPT_KEY_TYPE
                                        : SP_PROMPT_KEY_TEXT;
    }

    return SP_PROMPT_KEY_TEXT;
}


/* the charge of a file whose data is v (a string) or v.data; 0: none */
static int64_t
sp_prompt_file_tokens(const sp_json_tape_t *tape, size_t v)
{
    int64_t  bytes;

    if (v && tape->token[v].type == SP_JSON_OBJECT) {
        v = sp_json_get(tape, v, "data");
    }

    bytes = (v && tape->token[v].type == SP_JSON_STRING)
            ? tape->token[v].value : 0;

    return bytes > SP_REQUEST_FILE_TOKENS ? bytes : SP_REQUEST_FILE_TOKENS;
}


/*
 * OpenAI, Anthropic, Cohere, Mistral: a content part of a media type;
 * *image set to 1 when it is an image (routing's has_images)
 */
static int64_t
sp_prompt_part_tokens(const sp_json_tape_t *tape, size_t part,
    const char *type, int *image)
{
    size_t  file;

    switch (type[0]) {

    case 'i':
        if (strcmp(type, "image_url") == 0 || strcmp(type, "image") == 0
            || strcmp(type, "input_image") == 0)
        {
            *image = 1;
            return SP_REQUEST_IMAGE_TOKENS;
        }

        if (strcmp(type, "input_audio") == 0) {
            /* {"data","format"}, or Mistral's base64 string */
            return sp_prompt_file_tokens(tape,
                              sp_json_get(tape, part, "input_audio"));
        }

        if (strcmp(type, "input_file") == 0) {
            return sp_prompt_file_tokens(tape,
                              sp_json_get(tape, part, "file_data"));
        }

        break;

    case 'f':
        if (strcmp(type, "file") == 0) {
            /* 0 is "none" as a result, but the root as an argument */
            file = sp_json_get(tape, part, "file");

            return sp_prompt_file_tokens(tape,
                              file ? sp_json_get(tape, file, "file_data")
                                   : 0);
        }

        break;

    case 'd':
        if (strcmp(type, "document") == 0) {
            /* Anthropic: source {"type":"base64"|"text","data"} */
            return sp_prompt_file_tokens(tape,
                              sp_json_get(tape, part, "source"));
        }

        if (strcmp(type, "document_url") == 0) {
            return SP_REQUEST_FILE_TOKENS;
        }

        break;
    }

    return 0;
}


/* Gemini: inline_data or file_data, by mime type; *image as above */
static int64_t
sp_prompt_blob_tokens(const sp_json_tape_t *tape, size_t blob,
    int inline_data, int *image)
{
    char    type[16];
    size_t  mime;

    if (tape->token[blob].type != SP_JSON_OBJECT) {
        /* OpenAI's "file_data" is the file itself, a string */
        return 0;
    }

    mime = sp_json_get(tape, blob, "mime_type");

    if (mime == 0) {
        mime = sp_json_get(tape, blob, "mimeType");
    }

    if (mime && tape->token[mime].type == SP_JSON_STRING
        && strncmp(sp_json_cstr(&tape->token[mime], type, sizeof(type)),
                   "image/", 6) == 0)
    {
        *image = 1;
        return SP_REQUEST_IMAGE_TOKENS;
    }

    return inline_data ? sp_prompt_file_tokens(tape, blob)
                       : SP_REQUEST_FILE_TOKENS;
}


static void
sp_prompt_walk(const sp_json_tape_t *tape, size_t v, int depth,
    sp_prompt_t *prompt)
{
    char                    key[32], type_text[32];
    size_t                  k, item, inline_data, file_data;
    const char             *type;
    const sp_json_token_t  *t;

    if (depth > SP_PROMPT_DEPTH) {
        return;
    }

    t = tape->token;

    switch (t[v].type) {

    case SP_JSON_STRING:
        prompt->text += t[v].value;
        return;

    case SP_JSON_INTEGER:
        /* a token id (input: [[1, 2, 3]]): 4 bytes, one estimated token */
        if (prompt->token_ids) {
            prompt->text += 4;
        }

        return;

    case SP_JSON_ARRAY:
        for (item = v + 1; item < t[v].end; item = t[item].end) {
            sp_prompt_walk(tape, item, depth + 1, prompt);
        }

        return;

    case SP_JSON_OBJECT:
        break;

    default:
        return;
    }

    type = NULL;
    inline_data = 0;
    file_data = 0;

    for (k = v + 1; k < t[v].end; k = t[k + 1].end) {
        item = k + 1;

        if (prompt->keys) {
            /* a schema: property names and every value are read */
            prompt->text += t[k].value;
            sp_prompt_walk(tape, item, depth + 1, prompt);
            continue;
        }

        /* keys longer than the buffer are none of the names looked for */
        switch (sp_prompt_key(sp_json_cstr(&t[k], key, sizeof(key)))) {

        case SP_PROMPT_KEY_SKIP:
            continue;

        case SP_PROMPT_KEY_TYPE:
            type = t[item].type == SP_JSON_STRING
                   ? sp_json_cstr(&t[item], type_text, sizeof(type_text))
                   : NULL;
            continue;

        case SP_PROMPT_KEY_INLINE:
            inline_data = item;
            continue;

        case SP_PROMPT_KEY_FILE:
            file_data = item;
            continue;
        }

        sp_prompt_walk(tape, item, depth + 1, prompt);
    }

    if (type != NULL) {
        prompt->media = sp_request_add(prompt->media,
                              sp_prompt_part_tokens(tape, v, type,
                                                    &prompt->images));
    }

    if (inline_data) {
        prompt->media = sp_request_add(prompt->media,
                              sp_prompt_blob_tokens(tape, inline_data, 1,
                                                    &prompt->images));
    }

    if (file_data) {
        prompt->media = sp_request_add(prompt->media,
                              sp_prompt_blob_tokens(tape, file_data, 0,
                                                    &prompt->images));
    }
}


/*
 * The top-level fields the gateway reads, found in one walk over the
 * body's members.
 */
typedef enum {
    SP_FIELD_OTHER = 0,
    SP_FIELD_MODEL,
    SP_FIELD_STREAM,
    SP_FIELD_STREAM_OPTIONS,
    SP_FIELD_MAX_TOKENS,      /* an output limit */
    SP_FIELD_CHOICES,         /* a number of outputs */
    SP_FIELD_GENERATION,      /* Gemini's generationConfig */
    SP_FIELD_PROMPT,          /* text and media */
    SP_FIELD_PROMPT_IDS,      /* text, media and token ids */
    SP_FIELD_SCHEMA,          /* text with object keys */
    SP_FIELD_IMAGES,          /* Cohere embed: images as data URIs */
    SP_FIELD_TEMPERATURE,
    SP_FIELD_SEED,            /* OpenAI, Azure, Cohere */
    SP_FIELD_RANDOM_SEED      /* Mistral */
} sp_field_e;

typedef struct {
    const char  *name;
    sp_field_e   field;
} sp_field_name_t;

static const sp_field_name_t  sp_request_fields[] = {
    { "model", SP_FIELD_MODEL },
    { "messages", SP_FIELD_PROMPT },
    { "max_tokens", SP_FIELD_MAX_TOKENS },
    { "stream", SP_FIELD_STREAM },
    { "stream_options", SP_FIELD_STREAM_OPTIONS },
    { "max_completion_tokens", SP_FIELD_MAX_TOKENS },
    { "max_output_tokens", SP_FIELD_MAX_TOKENS },
    { "n", SP_FIELD_CHOICES },
    { "best_of", SP_FIELD_CHOICES },
    { "generationConfig", SP_FIELD_GENERATION },
    { "generation_config", SP_FIELD_GENERATION },
    { "input", SP_FIELD_PROMPT_IDS },         /* Responses, embeddings */
    { "prompt", SP_FIELD_PROMPT_IDS },        /* completions, FIM */
    { "suffix", SP_FIELD_PROMPT },            /* completions, FIM */
    { "instructions", SP_FIELD_PROMPT },      /* Responses */
    { "system", SP_FIELD_PROMPT },            /* Anthropic */
    { "contents", SP_FIELD_PROMPT },          /* Gemini */
    { "content", SP_FIELD_PROMPT },           /* Gemini embedContent */
    { "requests", SP_FIELD_PROMPT },          /* Gemini batch embeds */
    { "systemInstruction", SP_FIELD_PROMPT },
    { "system_instruction", SP_FIELD_PROMPT },
    { "message", SP_FIELD_PROMPT },           /* Cohere v1 */
    { "preamble", SP_FIELD_PROMPT },          /* Cohere v1 */
    { "chat_history", SP_FIELD_PROMPT },      /* Cohere v1 */
    { "documents", SP_FIELD_PROMPT },         /* Cohere chat, rerank */
    { "query", SP_FIELD_PROMPT },             /* Cohere rerank */
    { "texts", SP_FIELD_PROMPT },             /* Cohere embed */
    { "inputs", SP_FIELD_PROMPT },            /* Cohere embed v2 */
    { "images", SP_FIELD_IMAGES },            /* Cohere embed */
    { "tools", SP_FIELD_SCHEMA },
    { "functions", SP_FIELD_SCHEMA },         /* OpenAI, deprecated */
    { "response_format", SP_FIELD_SCHEMA },
    { "text", SP_FIELD_SCHEMA },              /* Responses: format */
    { "temperature", SP_FIELD_TEMPERATURE },
    { "seed", SP_FIELD_SEED },
    { "random_seed", SP_FIELD_RANDOM_SEED },
    { NULL, SP_FIELD_OTHER }
};


static sp_field_e
sp_request_field(const char *key)
{
    const sp_field_name_t  *f;

    for (f = sp_request_fields; f->name; f++) {
        if (f->name[0] == key[0] && strcmp(f->name, key) == 0) {
            return f->field;
        }
    }

    return SP_FIELD_OTHER;
}


/* a prompt field's text bytes and media, as its kind says to read them */
static void
sp_prompt_field(const sp_json_tape_t *tape, sp_field_e field, size_t v,
    sp_prompt_t *prompt)
{
    const sp_json_token_t  *t;

    t = tape->token;

    switch (field) {

    case SP_FIELD_PROMPT:
        sp_prompt_walk(tape, v, 0, prompt);
        break;

    case SP_FIELD_PROMPT_IDS:
        prompt->token_ids = 1;
        sp_prompt_walk(tape, v, 0, prompt);
        prompt->token_ids = 0;
        break;

    case SP_FIELD_SCHEMA:
        prompt->keys = 1;
        sp_prompt_walk(tape, v, 0, prompt);
        prompt->keys = 0;
        break;

    case SP_FIELD_IMAGES:
        if (t[v].type == SP_JSON_ARRAY) {
            prompt->images |= (t[v].value > 0);
            prompt->media = sp_request_add(prompt->media,
                                t[v].value < INT64_MAX
                                             / SP_REQUEST_IMAGE_TOKENS
                                ? t[v].value * SP_REQUEST_IMAGE_TOKENS
                                : INT64_MAX);
        }

        break;

    default:
        break;
    }
}


/* what a value is, for "..., not a string" */
static const char *
sp_json_kind(const sp_json_token_t *v)
{
    switch (v->type) {
    case SP_JSON_OBJECT:
        return "an object";
    case SP_JSON_ARRAY:
        return "an array";
    case SP_JSON_STRING:
        return "a string";
    case SP_JSON_INTEGER:
        return "an integer";
    case SP_JSON_REAL:
        return "a number with a fraction or exponent";
    case SP_JSON_TRUE:
    case SP_JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}


/*
 * An integer field in min..max; null is absent. The larger of the value
 * and *out is kept: when a request spells a limit twice (max_tokens and
 * max_completion_tokens), the larger one is the worst case.
 */
static int
sp_request_int(const sp_json_token_t *v, const char *name, int64_t min,
    int64_t max, int64_t *out, sp_request_info_t *info, char *err,
    size_t errlen)
{
    int64_t  n;

    if (v->type == SP_JSON_NULL) {
        return SP_OK;
    }

    if (v->type != SP_JSON_INTEGER) {
        snprintf(err, errlen, "field \"%s\" must be an integer from %lld "
                 "to %lld, not %s", name, (long long) min, (long long) max,
                 sp_json_kind(v));
        info->error_code = "invalid_field";
        return SP_ERROR;
    }

    n = v->value;

    if (n < min || n > max) {
        snprintf(err, errlen, "field \"%s\" must be an integer from %lld "
                 "to %lld, not %lld", name, (long long) min, (long long) max,
                 (long long) n);
        info->error_code = "invalid_field";
        return SP_ERROR;
    }

    if (n > *out) {
        *out = n;
    }

    return SP_OK;
}


/*
 * A temperature that makes sampling deterministic: a number equal to 0,
 * however spelled (0, -0, 0.0, 0e5). null, a string or absent: not.
 */
static int
sp_request_temperature_zero(const sp_json_token_t *v)
{
    return (v->type == SP_JSON_INTEGER || v->type == SP_JSON_REAL)
           && v->value == 0;
}


/*
 * Gemini's generationConfig: maxOutputTokens and candidateCount; for
 * Google, whose generation settings live only there, its temperature and
 * seed too.
 */
static int
sp_request_generation(sp_provider_e provider, const sp_json_tape_t *tape,
    size_t config, const char *config_name, sp_request_info_t *info,
    char *err, size_t errlen)
{
    char                    name[64], key[32];
    size_t                  k;
    const sp_json_token_t  *t;

    t = tape->token;

    if (t[config].type != SP_JSON_OBJECT) {
        return SP_OK;
    }

    for (k = config + 1; k < t[config].end; k = t[k + 1].end) {
        sp_json_cstr(&t[k], key, sizeof(key));

        if (strcmp(key, "maxOutputTokens") == 0
            || strcmp(key, "max_output_tokens") == 0)
        {
            snprintf(name, sizeof(name), "%s.%s", config_name, key);

            if (sp_request_int(&t[k + 1], name, 0,
                               SP_REQUEST_MAX_OUTPUT_TOKENS,
                               &info->max_tokens, info, err, errlen)
                != SP_OK)
            {
                return SP_ERROR;
            }

        } else if (strcmp(key, "candidateCount") == 0
                   || strcmp(key, "candidate_count") == 0)
        {
            snprintf(name, sizeof(name), "%s.%s", config_name, key);

            if (sp_request_int(&t[k + 1], name, 1, SP_REQUEST_MAX_CHOICES,
                               &info->choices, info, err, errlen)
                != SP_OK)
            {
                return SP_ERROR;
            }

        } else if (provider != SP_PROVIDER_GOOGLE) {
            continue;

        } else if (strcmp(key, "temperature") == 0) {
            info->temperature_zero = sp_request_temperature_zero(&t[k + 1]);

        } else if (strcmp(key, "seed") == 0) {
            info->has_seed = (t[k + 1].type != SP_JSON_NULL);
        }
    }

    return SP_OK;
}


/*
 * A control character in a string, raw or escaped. A string from jansson
 * (not escaped) holds its decoded bytes, backslashes included.
 */
static int
sp_json_has_control(const sp_json_token_t *v)
{
    int                   d;
    size_t                i;
    uint32_t              cp;
    const unsigned char  *p;

    p = (const unsigned char *) v->text;

    for (i = 0; i < v->raw_len; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f) {
            return 1;
        }

        if (p[i] != '\\' || !v->escaped) {
            continue;
        }

        /* the scan checked every escape: a letter, or u and four digits */
        i++;

        if (p[i] != 'u') {
            if (p[i] != '"' && p[i] != '\\' && p[i] != '/') {
                return 1;
            }

            continue;
        }

        cp = 0;

        for (d = 1; d <= 4; d++) {
            cp = cp * 16 + (uint32_t) sp_hex_digit(p[i + d]);
        }

        if (cp < 0x20 || cp == 0x7f) {
            return 1;
        }

        i += 4;
    }

    return 0;
}


static int
sp_request_model(const sp_json_token_t *v, sp_request_info_t *info,
    char *err, size_t errlen)
{
    char  text[SP_FIELD_LEN];

    if (v->type != SP_JSON_STRING) {
        snprintf(err, errlen, "field \"model\" must be a string, not %s",
                 sp_json_kind(v));
        info->error_code = "invalid_field";
        return SP_ERROR;
    }

    /* the model is written into response headers and the journal */
    if (sp_json_has_control(v)) {
        snprintf(err, errlen, "field \"model\" contains a control "
                 "character");
        info->error_code = "invalid_field";
        return SP_ERROR;
    }

    /* a longer model is cut to the room it has: text holds enough */
    sp_field_copy(info->model, sizeof(info->model), text,
                  sp_json_decode(v, text, sizeof(text)));

    return SP_OK;
}


/*
 * The key whose closing quote is body[end - 1], or NULL. An escaped
 * quote inside it has an odd run of backslashes before it.
 */
static const char *
sp_json_key_before(const char *body, size_t end, size_t *len)
{
    size_t  i, k;

    if (end == 0 || body[end - 1] != '"') {
        return NULL;
    }

    for (i = end - 1; i > 0; i--) {
        if (body[i - 1] != '"') {
            continue;
        }

        for (k = i - 1; k > 0 && body[k - 1] == '\\'; k--) {
            /* count the backslashes */
        }

        if ((i - 1 - k) % 2 == 0) {
            *len = end - 1 - i;
            return body + i;
        }
    }

    return NULL;
}


static int
sp_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}


static int
sp_json_number_char(char c)
{
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.'
           || c == 'e' || c == 'E';
}


/* a key as it can be quoted in a message: printable, at most 64 bytes */
static void
sp_json_key_print(const char *key, size_t len, char *out, size_t outlen)
{
    size_t  i;

    if (len > 64) {
        len = 64;
    }

    for (i = 0; i < len && i + 1 < outlen; i++) {
        out[i] = (key[i] < 0x20 || key[i] > 0x7e || key[i] == '"'
                  || key[i] == '\\') ? '?' : key[i];
    }

    out[i] = '\0';
}


/*
 * jansson's error as the client's: a duplicate key and a number outside
 * int64 (or a double) name the field, from the text before the error's
 * position; anything else is not valid JSON.
 */
static int
sp_request_json_error(const char *body, size_t len, json_error_t *jerr,
    sp_request_info_t *info, char *err, size_t errlen)
{
    char         name[72];
    size_t       end, klen;
    const char  *key;

    end = jerr->position > 0 ? (size_t) jerr->position : 0;

    if (end > len) {
        end = len;
    }

    switch (json_error_code(jerr)) {

    case json_error_duplicate_key:
        key = sp_json_key_before(body, end, &klen);

        if (key == NULL) {
            break;
        }

        sp_json_key_print(key, klen, name, sizeof(name));
        snprintf(err, errlen, "field \"%s\" appears twice in one object of "
                 "the request body; send each field once", name);
        info->error_code = "duplicate_field";
        return SP_ERROR;

    case json_error_numeric_overflow:
        /* back over the number and the colon to the key */
        while (end > 0 && sp_json_number_char(body[end - 1])) {
            end--;
        }

        while (end > 0 && sp_json_space(body[end - 1])) {
            end--;
        }

        key = NULL;

        if (end > 0 && body[end - 1] == ':') {
            end--;

            while (end > 0 && sp_json_space(body[end - 1])) {
                end--;
            }

            key = sp_json_key_before(body, end, &klen);
        }

        if (key != NULL) {
            sp_json_key_print(key, klen, name, sizeof(name));
            snprintf(err, errlen, "field \"%s\" is a number too large for "
                     "the gateway to read (at most a 64-bit integer)", name);

        } else {
            snprintf(err, errlen, "the request body has a number too large "
                     "for the gateway to read (at most a 64-bit integer) at "
                     "line %d column %d", jerr->line, jerr->column);
        }

        info->error_code = "invalid_field";
        return SP_ERROR;

    default:
        break;
    }

    snprintf(err, errlen, "request body is not valid JSON: %s at line %d "
             "column %d", jerr->text, jerr->line, jerr->column);
    info->error_code = "invalid_json";

    return SP_ERROR;
}


/* the members of the body's object, in the order written */
static int
sp_request_members(sp_provider_e provider, const sp_json_tape_t *tape,
    sp_request_info_t *info, char *err, size_t errlen)
{
    int                     rc;
    char                    key[32];
    size_t                  k, v;
    sp_field_e              field;
    sp_prompt_t             prompt;
    const sp_json_token_t  *t;

    t = tape->token;

    if (t[0].type != SP_JSON_OBJECT) {
        snprintf(err, errlen, "request body must be a JSON object");
        info->error_code = "invalid_json";
        return SP_ERROR;
    }

    memset(&prompt, 0, sizeof(sp_prompt_t));
    rc = SP_OK;

    for (k = 1; k < t[0].end; k = t[v].end) {
        v = k + 1;

        /* keys longer than the buffer are none of the fields */
        field = sp_request_field(sp_json_cstr(&t[k], key, sizeof(key)));

        switch (field) {

        case SP_FIELD_MODEL:
            rc = sp_request_model(&t[v], info, err, errlen);
            break;

        case SP_FIELD_STREAM:
            if (t[v].type != SP_JSON_TRUE && t[v].type != SP_JSON_FALSE
                && t[v].type != SP_JSON_NULL)
            {
                snprintf(err, errlen, "field \"stream\" must be a boolean, "
                         "not %s", sp_json_kind(&t[v]));
                info->error_code = "invalid_field";
                rc = SP_ERROR;
                break;
            }

            info->stream = (t[v].type == SP_JSON_TRUE);
            break;

        case SP_FIELD_STREAM_OPTIONS:
            info->has_stream_options = 1;
            v = sp_json_get(tape, v, "include_usage");
            info->include_usage = (v && t[v].type == SP_JSON_TRUE);
            v = k + 1;
            break;

        case SP_FIELD_MAX_TOKENS:
            rc = sp_request_int(&t[v], key, 0, SP_REQUEST_MAX_OUTPUT_TOKENS,
                                &info->max_tokens, info, err, errlen);
            break;

        case SP_FIELD_CHOICES:
            rc = sp_request_int(&t[v], key, 1, SP_REQUEST_MAX_CHOICES,
                                &info->choices, info, err, errlen);
            break;

        case SP_FIELD_GENERATION:
            rc = sp_request_generation(provider, tape, v, key, info, err,
                                       errlen);
            break;

        case SP_FIELD_TEMPERATURE:
            /* Gemini's is in generationConfig */
            if (provider != SP_PROVIDER_GOOGLE
                && provider != SP_PROVIDER_UNKNOWN)
            {
                info->temperature_zero = sp_request_temperature_zero(&t[v]);
            }

            break;

        case SP_FIELD_SEED:
            if (provider == SP_PROVIDER_OPENAI
                || provider == SP_PROVIDER_AZURE
                || provider == SP_PROVIDER_COHERE)
            {
                info->has_seed = (t[v].type != SP_JSON_NULL);
            }

            break;

        case SP_FIELD_RANDOM_SEED:
            if (provider == SP_PROVIDER_MISTRAL) {
                info->has_seed = (t[v].type != SP_JSON_NULL);
            }

            break;

        case SP_FIELD_SCHEMA:
            /*
             * tools (every provider's, Gemini's functionDeclarations
             * inside them) or OpenAI's deprecated functions, not empty:
             * routing's has_tools
             */
            if (t[v].type == SP_JSON_ARRAY && t[v].value > 0
                && (strcmp(key, "tools") == 0
                    || strcmp(key, "functions") == 0))
            {
                info->has_tools = 1;
            }

            sp_prompt_field(tape, field, v, &prompt);
            break;

        case SP_FIELD_PROMPT:
        case SP_FIELD_PROMPT_IDS:
        case SP_FIELD_IMAGES:
            sp_prompt_field(tape, field, v, &prompt);
            break;

        default:
            break;
        }

        if (rc != SP_OK) {
            return SP_ERROR;
        }
    }

    info->prompt_bytes = prompt.text;
    info->media_tokens = prompt.media;
    info->has_images = prompt.images;

    return SP_OK;
}


/*
 * The body onto an initialised tape: the scanner, or (scan 0, or a body
 * it declines) jansson, whose tree *root then holds the strings the tape
 * points to and is the caller's to release after sp_json_tape_free().
 * SP_ERROR: jansson's error in jerr; SP_REQUEST_NO_MEMORY.
 */
#define SP_REQUEST_NO_MEMORY  -2

static int
sp_request_tape(sp_json_tape_t *tape, const char *body, size_t len, int scan,
    json_t **root, json_error_t *jerr)
{
    *root = NULL;

    if (scan && sp_json_scan(tape, body, len) == SP_OK) {
        return SP_OK;
    }

    sp_json_tape_free(tape);

    /*
     * Invalid, or declined by the scanner: jansson decides, and its
     * errors are the client's. Duplicates refused: the provider might
     * read the other one. NUL is let through to be refused where it
     * matters, naming the field.
     */
    *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                       jerr);
    if (*root == NULL) {
        return SP_ERROR;
    }

    if (sp_json_tape_from_tree(tape, *root) != SP_OK) {
        sp_json_tape_free(tape);
        json_decref(*root);
        *root = NULL;
        return SP_REQUEST_NO_MEMORY;
    }

    return SP_OK;
}


static int
sp_request_parse_body(sp_provider_e provider, const char *body, size_t len,
    int scan, sp_request_info_t *info, char *err, size_t errlen)
{
    int             rc;
    json_t         *root;
    json_error_t    jerr;
    sp_json_tape_t  tape;

    memset(info, 0, sizeof(sp_request_info_t));
    info->choices = 1;

    if (len == 0) {
        return SP_OK;
    }

    sp_json_tape_init(&tape);

    rc = sp_request_tape(&tape, body, len, scan, &root, &jerr);

    if (rc == SP_ERROR) {
        return sp_request_json_error(body, len, &jerr, info, err, errlen);
    }

    if (rc != SP_OK) {
        snprintf(err, errlen, "the gateway ran out of memory reading "
                 "the request body");
        info->error_code = "invalid_json";
        return SP_ERROR;
    }

    rc = sp_request_members(provider, &tape, info, err, errlen);

    sp_json_tape_free(&tape);

    if (root != NULL) {
        json_decref(root);
    }

    return rc;
}


int
sp_request_parse(sp_provider_e provider, const char *body, size_t len,
    sp_request_info_t *info, char *err, size_t errlen)
{
    return sp_request_parse_body(provider, body, len, 1, info, err, errlen);
}


int
sp_request_parse_tree(sp_provider_e provider, const char *body, size_t len,
    sp_request_info_t *info, char *err, size_t errlen)
{
    return sp_request_parse_body(provider, body, len, 0, info, err, errlen);
}


/*
 * Exact prompt tokens (sp_request_count_prompt): a second walk over the
 * body's tape, with the tokenizer, once the model is known.
 */
typedef struct {
    const sp_tok_enc_t  *enc;
    sp_tok_ctx_t        *ctx;
    const char          *model;
    char                *buf;       /* escaped strings, decoded */
    size_t               buf_size;
    int64_t              tokens;    /* counted exactly */
    int64_t              bound;     /* bytes of parts only bounded */
    int                  no_memory;
} sp_count_t;


/* tokens of a string token's text, decoded */
static void
sp_count_string(sp_count_t *c, const sp_json_token_t *v)
{
    char    *p;
    size_t   n, size;

    if (!v->escaped) {
        c->tokens += (int64_t) sp_tok_count(c->enc, c->ctx, v->text,
                                            (size_t) v->value, NULL);
        return;
    }

    n = (size_t) v->value;

    if (n > c->buf_size) {
        size = n < 4096 ? 4096 : n;
        p = realloc(c->buf, size);

        if (p == NULL) {
            /* every token is at least one byte */
            c->no_memory = 1;
            c->bound += (int64_t) n;
            return;
        }

        c->buf = p;
        c->buf_size = size;
    }

    n = sp_json_decode(v, c->buf, n);
    c->tokens += (int64_t) sp_tok_count(c->enc, c->ctx, c->buf, n, NULL);
}


static void
sp_count_literal(sp_count_t *c, const char *text)
{
    c->tokens += (int64_t) sp_tok_count(c->enc, c->ctx, text, strlen(text),
                                        NULL);
}


/* a part whose rendering is not public: its text and keys, a token a byte */
static void
sp_count_bound(sp_count_t *c, const sp_json_tape_t *tape, size_t v)
{
    sp_prompt_t  prompt;

    memset(&prompt, 0, sizeof(sp_prompt_t));
    prompt.keys = 1;
    prompt.token_ids = 1;

    sp_prompt_walk(tape, v, 0, &prompt);

    c->bound = sp_request_add(c->bound, prompt.text);
}


/* a text type of a content part: chat, Responses input and output */
static int
sp_count_text_part(const char *type)
{
    return strcmp(type, "text") == 0 || strcmp(type, "input_text") == 0
           || strcmp(type, "output_text") == 0;
}


/* a message's content: a string, or parts (text counted, media skipped) */
static void
sp_count_content(sp_count_t *c, const sp_json_tape_t *tape, size_t v)
{
    int                     image;      /* not needed here */
    char                    type[32];
    size_t                  part, type_v, text_v, k;
    int64_t                 parts;
    const sp_json_token_t  *t;

    t = tape->token;

    switch (t[v].type) {

    case SP_JSON_STRING:
        sp_count_string(c, &t[v]);
        return;

    case SP_JSON_NULL:
        return;

    case SP_JSON_ARRAY:
        break;

    default:
        sp_count_bound(c, tape, v);
        return;
    }

    parts = 0;

    for (part = v + 1; part < t[v].end; part = t[part].end) {

        if (parts++) {
            /* parts are joined as the provider does: slack at the seam */
            c->tokens++;
        }

        if (t[part].type == SP_JSON_STRING) {
            sp_count_string(c, &t[part]);
            continue;
        }

        type_v = sp_json_get(tape, part, "type");

        if (type_v == 0 || t[type_v].type != SP_JSON_STRING) {
            sp_count_bound(c, tape, part);
            continue;
        }

        sp_json_cstr(&t[type_v], type, sizeof(type));
        text_v = sp_json_get(tape, part, "text");

        if (sp_count_text_part(type) && text_v
            && t[text_v].type == SP_JSON_STRING)
        {
            sp_count_string(c, &t[text_v]);

            /* annotations, cache hints: not text the model reads, bounded */
            for (k = part + 1; k < t[part].end; k = t[k + 1].end) {
                if (k + 1 != type_v && k + 1 != text_v) {
                    c->bound = sp_request_add(c->bound, t[k].value);
                    sp_count_bound(c, tape, k + 1);
                }
            }

            continue;
        }

        /* media are media_tokens already */
        if (sp_prompt_part_tokens(tape, part, type, &image) == 0) {
            sp_count_bound(c, tape, part);
        }
    }
}


/*
 * A chat message, or a Responses input item: with a role it is a message
 * (overhead, role, content, name); anything else is bounded.
 */
static void
sp_count_message(sp_count_t *c, const sp_json_tape_t *tape, size_t m)
{
    char                    key[16], type[16];
    size_t                  k, v, role;
    const sp_json_token_t  *t;

    t = tape->token;
    role = sp_json_get(tape, m, "role");

    if (role == 0 || t[role].type != SP_JSON_STRING) {
        sp_count_bound(c, tape, m);
        return;
    }

    c->tokens += SP_TOK_CHAT_PER_MESSAGE;

    for (k = m + 1; k < t[m].end; k = t[v].end) {
        v = k + 1;
        sp_json_cstr(&t[k], key, sizeof(key));

        if (strcmp(key, "role") == 0) {
            sp_count_string(c, &t[v]);

        } else if (strcmp(key, "content") == 0) {
            sp_count_content(c, tape, v);

        } else if (strcmp(key, "name") == 0 && t[v].type == SP_JSON_STRING) {
            c->tokens += SP_TOK_CHAT_PER_NAME;
            sp_count_string(c, &t[v]);

        } else if (strcmp(key, "type") == 0 && t[v].type == SP_JSON_STRING
                   && strcmp(sp_json_cstr(&t[v], type, sizeof(type)),
                             "message") == 0)
        {
            /* the Responses API's item type: not rendered */
            continue;

        } else {
            /* tool calls, tool call ids, audio, refusals */
            c->bound = sp_request_add(c->bound, t[k].value);
            sp_count_bound(c, tape, v);
        }
    }
}


/* chat "messages" or Responses "input" items, and the reply's priming */
static void
sp_count_messages(sp_count_t *c, const sp_json_tape_t *tape, size_t v)
{
    size_t                  m;
    const sp_json_token_t  *t;

    t = tape->token;

    if (t[v].type != SP_JSON_ARRAY) {
        sp_count_bound(c, tape, v);
        return;
    }

    for (m = v + 1; m < t[v].end; m = t[m].end) {
        if (t[m].type == SP_JSON_OBJECT) {
            sp_count_message(c, tape, m);

        } else {
            sp_count_bound(c, tape, m);
        }
    }
}


/* a string as one message of a role: Responses' input and instructions */
static void
sp_count_string_message(sp_count_t *c, const sp_json_token_t *v,
    const char *role)
{
    c->tokens += SP_TOK_CHAT_PER_MESSAGE;
    sp_count_literal(c, role);
    sp_count_string(c, v);
}


/*
 * Completions' "prompt" and embeddings' "input": a string, or an array of
 * strings, token ids, or arrays of token ids; each is billed.
 */
static void
sp_count_texts(sp_count_t *c, const sp_json_tape_t *tape, size_t v)
{
    size_t                  item, id;
    const sp_json_token_t  *t;

    t = tape->token;

    if (t[v].type == SP_JSON_STRING) {
        sp_count_string(c, &t[v]);
        return;
    }

    if (t[v].type != SP_JSON_ARRAY) {
        sp_count_bound(c, tape, v);
        return;
    }

    for (item = v + 1; item < t[v].end; item = t[item].end) {

        switch (t[item].type) {

        case SP_JSON_STRING:
            sp_count_string(c, &t[item]);
            break;

        case SP_JSON_INTEGER:
            c->tokens++;
            break;

        case SP_JSON_ARRAY:
            for (id = item + 1; id < t[item].end; id = t[id].end) {
                if (t[id].type == SP_JSON_INTEGER) {
                    c->tokens++;

                } else {
                    sp_count_bound(c, tape, id);
                }
            }

            break;

        default:
            sp_count_bound(c, tape, item);
            break;
        }
    }
}


static void
sp_count_members(sp_count_t *c, const sp_json_tape_t *tape, int embeddings)
{
    int                     reply;
    char                    key[32];
    size_t                  k, v;
    sp_field_e              field;
    sp_prompt_t             prompt;
    const sp_json_token_t  *t;

    t = tape->token;
    reply = 0;

    for (k = 1; k < t[0].end; k = t[v].end) {
        v = k + 1;
        sp_json_cstr(&t[k], key, sizeof(key));
        field = sp_request_field(key);

        if (field != SP_FIELD_PROMPT && field != SP_FIELD_PROMPT_IDS
            && field != SP_FIELD_SCHEMA)
        {
            continue;
        }

        if (strcmp(key, "messages") == 0) {
            sp_count_messages(c, tape, v);
            reply = 1;

        } else if (strcmp(key, "prompt") == 0 || strcmp(key, "suffix") == 0
                   || (strcmp(key, "input") == 0 && embeddings))
        {
            sp_count_texts(c, tape, v);

        } else if (strcmp(key, "input") == 0) {
            if (t[v].type == SP_JSON_STRING) {
                sp_count_string_message(c, &t[v], "user");

            } else {
                sp_count_messages(c, tape, v);
            }

            reply = 1;

        } else if (strcmp(key, "instructions") == 0
                   && t[v].type == SP_JSON_STRING)
        {
            sp_count_string_message(c, &t[v], "developer");
            reply = 1;

        } else {
            /* schemas, and what the provider reads but does not document */
            memset(&prompt, 0, sizeof(sp_prompt_t));
            sp_prompt_field(tape, field, v, &prompt);
            c->bound = sp_request_add(c->bound, prompt.text);
        }
    }

    if (reply) {
        c->tokens += SP_TOK_CHAT_PER_REPLY;
    }
}


int
sp_request_count_prompt(const sp_request_tokenizer_t *tokenizer,
    sp_provider_e provider, const char *model, int embeddings,
    const char *body, size_t len, sp_request_info_t *info)
{
    int             rc, encoding;
    json_t         *root;
    json_error_t    jerr;
    sp_count_t      count;
    sp_json_tape_t  tape;

    if (provider != SP_PROVIDER_OPENAI && provider != SP_PROVIDER_AZURE) {
        return SP_ERROR;
    }

    encoding = sp_tok_encoding_for_model(model, strlen(model));

    if (encoding < 0 || tokenizer == NULL || tokenizer->ctx == NULL
        || tokenizer->enc[encoding] == NULL || len == 0)
    {
        return SP_ERROR;
    }

    sp_json_tape_init(&tape);

    if (sp_request_tape(&tape, body, len, 1, &root, &jerr) != SP_OK) {
        return SP_ERROR;
    }

    rc = SP_ERROR;

    if (tape.token[0].type == SP_JSON_OBJECT) {
        memset(&count, 0, sizeof(sp_count_t));
        count.enc = tokenizer->enc[encoding];
        count.ctx = tokenizer->ctx;

        sp_count_members(&count, &tape, embeddings);

        free(count.buf);

        if (count.bound > 0) {
            count.bound = sp_request_add(count.bound,
                                         SP_REQUEST_FRAMING_TOKENS);
        }

        info->prompt_tokens = sp_request_add(count.tokens, count.bound);
        info->prompt_bound = count.bound;
        info->prompt_counted = 1;
        rc = SP_OK;
    }

    sp_json_tape_free(&tape);

    if (root != NULL) {
        json_decref(root);
    }

    return rc;
}


int64_t
sp_request_prompt_estimate(const sp_request_info_t *info)
{
    if (info->prompt_counted) {
        return info->prompt_tokens;
    }

    return sp_tokens_estimate(info->prompt_bytes);
}


void
sp_request_worst_case(const sp_request_info_t *info,
    int64_t model_max_output, int64_t *prompt_tokens,
    int64_t *output_tokens)
{
    int64_t  limit, choices;

    if (info->prompt_counted) {
        *prompt_tokens = sp_request_add(
                             info->prompt_tokens > 0 ? info->prompt_tokens
                                                     : 0,
                             info->media_tokens > 0 ? info->media_tokens
                                                    : 0);

    } else {
        *prompt_tokens = sp_request_add(sp_request_add(
                             info->prompt_bytes > 0 ? info->prompt_bytes : 0,
                             SP_REQUEST_FRAMING_TOKENS),
                             info->media_tokens > 0 ? info->media_tokens
                                                    : 0);
    }

    limit = info->max_tokens > 0 ? info->max_tokens : model_max_output;
    limit = limit > 0 ? limit : 0;
    choices = info->choices > 1 ? info->choices : 1;

    *output_tokens = limit > INT64_MAX / choices ? INT64_MAX
                                                 : limit * choices;
}


size_t
sp_request_add_stream_usage(const char *body, size_t len, char *out,
    size_t outlen)
{
    static const char  insert[] = "\"stream_options\":{\"include_usage\":true}";
    size_t             i, n, rest;

    for (i = 0; i < len && (body[i] == ' ' || body[i] == '\t'
                            || body[i] == '\r' || body[i] == '\n'); i++)
    {
        /* skip whitespace before the object */
    }

    if (i == len || body[i] != '{') {
        return 0;
    }

    i++;
    n = sizeof(insert) - 1;
    rest = len - i;

    /* an empty object needs no comma */
    for (; rest && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r'
                    || body[i] == '\n'); i++, rest--)
    {
        /* skip whitespace inside the object */
    }

    if (outlen < i + n + 1 + rest) {
        return 0;
    }

    memcpy(out, body, i);
    memcpy(out + i, insert, n);

    if (rest && body[i] != '}') {
        out[i + n] = ',';
        memcpy(out + i + n + 1, body + i, rest);
        return i + n + 1 + rest;
    }

    memcpy(out + i + n, body + i, rest);

    return i + n + rest;
}


static const char *
sp_find(const char *p, const char *last, const char *needle)
{
    size_t  n;

    n = strlen(needle);

    for (; (size_t) (last - p) >= n; p++) {
        if (memcmp(p, needle, n) == 0) {
            return p;
        }
    }

    return NULL;
}


void
sp_request_from_path(sp_provider_e provider, const char *path, size_t len,
    sp_request_info_t *info)
{
    const char  *last, *start, *end, *query;

    last = path + len;
    query = memchr(path, '?', len);

    if (query) {
        last = query;
    }

    if (provider == SP_PROVIDER_GOOGLE) {
        start = sp_find(path, last, "/models/");

        if (start == NULL) {
            return;
        }

        start += sizeof("/models/") - 1;
        end = memchr(start, ':', last - start);

        if (end == NULL) {
            return;
        }

        if (last - end >= (long) sizeof(":streamGenerateContent") - 1
            && memcmp(end, ":streamGenerateContent",
                      sizeof(":streamGenerateContent") - 1) == 0)
        {
            info->stream = 1;
        }

    } else if (provider == SP_PROVIDER_AZURE) {
        start = sp_find(path, last, "/deployments/");

        if (start == NULL) {
            return;
        }

        start += sizeof("/deployments/") - 1;
        end = memchr(start, '/', last - start);

        if (end == NULL) {
            end = last;
        }

    } else {
        return;
    }

    /*
     * Google and Azure run the model (the deployment) the path names,
     * whatever the body says (embedContent's body may carry "models/...";
     * an Azure body's "model" is ignored by Azure): the path wins, so a
     * cheaper name in the body cannot lower the reservation.
     */
    if (end > start)
    {
        sp_field_copy(info->model, sizeof(info->model), start, end - start);
    }
}


size_t
sp_request_set_stream_usage(const char *body, size_t len, char *out,
    size_t outlen)
{
    json_t        *root, *options;
    json_error_t   jerr;
    size_t         n;

    root = json_loadb(body, len, JSON_ALLOW_NUL, &jerr);
    if (root == NULL) {
        return 0;
    }

    if (!json_is_object(root)) {
        json_decref(root);
        return 0;
    }

    options = json_object_get(root, "stream_options");

    if (!json_is_object(options)) {
        options = json_object();

        if (json_object_set_new(root, "stream_options", options) != 0) {
            json_decref(root);
            return 0;
        }
    }

    if (json_object_set_new(options, "include_usage", json_true()) != 0) {
        json_decref(root);
        return 0;
    }

    n = json_dumpb(root, out, outlen, JSON_COMPACT | JSON_PRESERVE_ORDER);

    json_decref(root);

    return n <= outlen ? n : 0;
}
