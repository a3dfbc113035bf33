/*
 * Requests: the fields governance needs, read from the body once.
 */

#include <stdio.h>
#include <string.h>

#include <jansson.h>

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


/* bytes of every string under v, depth-limited against hostile nesting */
static int64_t
sp_text_bytes(json_t *v, int depth)
{
    const char  *key;
    json_t      *item;
    size_t       i;
    int64_t      n;

    if (depth > 32) {
        return 0;
    }

    n = 0;

    if (json_is_string(v)) {
        return (int64_t) json_string_length(v);
    }

    if (json_is_array(v)) {
        json_array_foreach(v, i, item) {
            n += sp_text_bytes(item, depth + 1);
        }

    } else if (json_is_object(v)) {
        json_object_foreach(v, key, item) {
            /* image data and ids are not prompt text */
            if (strcmp(key, "image_url") == 0 || strcmp(key, "data") == 0
                || strcmp(key, "id") == 0 || strcmp(key, "role") == 0
                || strcmp(key, "type") == 0)
            {
                continue;
            }

            n += sp_text_bytes(item, depth + 1);
        }
    }

    return n;
}


static const char  *sp_prompt_fields[] = {
    "messages", "input", "prompt", "system", "contents", "message",
    "chat_history", "documents", "tools", "systemInstruction", NULL
};


static const char  *sp_max_tokens_fields[] = {
    "max_tokens", "max_completion_tokens", "max_output_tokens", NULL
};


int
sp_request_parse(sp_provider_e provider, const char *body, size_t len,
    sp_request_info_t *info, char *err, size_t errlen)
{
    json_t        *root, *v, *options;
    json_error_t   jerr;
    size_t         i;

    memset(info, 0, sizeof(sp_request_info_t));

    if (len == 0) {
        return SP_OK;
    }

    root = json_loadb(body, len, 0, &jerr);
    if (root == NULL) {
        snprintf(err, errlen, "request body is not valid JSON: %s at line "
                 "%d column %d", jerr.text, jerr.line, jerr.column);
        return SP_ERROR;
    }

    if (!json_is_object(root)) {
        snprintf(err, errlen, "request body must be a JSON object");
        json_decref(root);
        return SP_ERROR;
    }

    v = json_object_get(root, "model");

    if (v != NULL && !json_is_string(v)) {
        snprintf(err, errlen, "field \"model\" must be a string");
        json_decref(root);
        return SP_ERROR;
    }

    if (v) {
        sp_field_copy(info->model, sizeof(info->model), json_string_value(v),
                      json_string_length(v));
    }

    v = json_object_get(root, "stream");

    if (v != NULL && !json_is_boolean(v) && !json_is_null(v)) {
        snprintf(err, errlen, "field \"stream\" must be a boolean");
        json_decref(root);
        return SP_ERROR;
    }

    info->stream = json_is_true(v);

    options = json_object_get(root, "stream_options");

    if (options != NULL) {
        info->has_stream_options = 1;
        info->include_usage =
            json_is_true(json_object_get(options, "include_usage"));
    }

    for (i = 0; sp_max_tokens_fields[i]; i++) {
        v = json_object_get(root, sp_max_tokens_fields[i]);

        if (v == NULL || json_is_null(v)) {
            continue;
        }

        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            snprintf(err, errlen, "field \"%s\" must be a non-negative "
                     "integer", sp_max_tokens_fields[i]);
            json_decref(root);
            return SP_ERROR;
        }

        info->max_tokens = (int64_t) json_integer_value(v);
        break;
    }

    for (i = 0; sp_prompt_fields[i]; i++) {
        info->prompt_bytes += sp_text_bytes(
                                  json_object_get(root, sp_prompt_fields[i]),
                                  0);
    }

    (void) provider;

    json_decref(root);

    return SP_OK;
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

    if (info->model[0] == '\0' && end > start) {
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

    root = json_loadb(body, len, 0, &jerr);
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
