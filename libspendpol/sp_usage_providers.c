/*
 * Usage in the wire formats that are not OpenAI's chat completions:
 *
 * Anthropic Messages: usage.input_tokens counts only uncached input;
 * cache_read_input_tokens and cache_creation_input_tokens are separate
 * and additive. Streamed: message_start carries the message's usage,
 * each message_delta carries cumulative counts (the latest wins).
 *
 * Google Gemini: usageMetadata.promptTokenCount (cached included, see
 * cachedContentTokenCount), candidatesTokenCount plus thoughtsTokenCount
 * billed as output; streamed, every chunk may carry usageMetadata and the
 * last one wins.
 *
 * Cohere v2 chat: usage.billed_units.{input,output}_tokens (what is
 * charged), else usage.tokens; streamed, in the message-end event's delta.
 * Cohere v1 chat, embed and rerank (v1 and v2) report meta.billed_units
 * instead: input_tokens (plus image_tokens for embed-v4.0's images) for
 * embed, search_units for rerank. A search unit is counted as an input
 * token: rerank's list price is per 1M search units.
 *
 * Google's embedContent reports no usage: the caller estimates.
 */

#include <string.h>

#include "sp_usage_internal.h"


static int64_t
sp_int_field(json_t *obj, const char *name, int *present)
{
    json_t  *v;

    v = json_object_get(obj, name);

    if (!json_is_integer(v)) {
        if (present) {
            *present = 0;
        }

        return 0;
    }

    if (present) {
        *present = 1;
    }

    return json_integer_value(v) > 0 ? (int64_t) json_integer_value(v) : 0;
}


/*
 * a + b for counts (both >= 0) that an upstream may send as large as
 * INT64_MAX: saturates instead of overflowing
 */
static int64_t
sp_add_tokens(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}


/* Anthropic: merge a usage object; absent fields keep their value */
void
sp_usage_anthropic(json_t *usage, sp_response_info_t *info)
{
    int64_t  uncached, cached, written, v;
    int      present;

    if (!json_is_object(usage)) {
        return;
    }

    cached = info->usage.cached_tokens;
    written = info->usage.cache_write_tokens;
    uncached = info->usage.input_tokens - cached;
    uncached = uncached > written ? uncached - written : 0;

    v = sp_int_field(usage, "input_tokens", &present);
    if (present) {
        uncached = v;
    }

    v = sp_int_field(usage, "cache_read_input_tokens", &present);
    if (present) {
        cached = v;
    }

    v = sp_int_field(usage, "cache_creation_input_tokens", &present);
    if (present) {
        written = v;
    }

    v = sp_int_field(usage, "output_tokens", &present);
    if (present) {
        info->usage.output_tokens = v;
    }

    info->usage.input_tokens = sp_add_tokens(sp_add_tokens(uncached, cached),
                                             written);
    info->usage.cached_tokens = cached;
    info->usage.cache_write_tokens = written;
    info->has_usage = 1;
}


/* generated text in Anthropic content blocks or a content_block_delta */
int64_t
sp_anthropic_text_bytes(json_t *content)
{
    json_t   *block, *text;
    size_t    i;
    int64_t   n;

    n = 0;

    if (json_is_object(content)) {
        text = json_object_get(content, "text");
        n += json_is_string(text) ? (int64_t) json_string_length(text) : 0;
        text = json_object_get(content, "partial_json");
        n += json_is_string(text) ? (int64_t) json_string_length(text) : 0;
        text = json_object_get(content, "thinking");
        n += json_is_string(text) ? (int64_t) json_string_length(text) : 0;
        return n;
    }

    json_array_foreach(content, i, block) {
        n += sp_anthropic_text_bytes(block);
    }

    return n;
}


void
sp_usage_anthropic_event(json_t *root, sp_response_info_t *info)
{
    json_t      *message, *type;
    const char  *name;

    type = json_object_get(root, "type");
    name = json_is_string(type) ? json_string_value(type) : "";

    if (strcmp(name, "message_start") == 0) {
        message = json_object_get(root, "message");
        sp_response_model(message, "model", info);
        sp_usage_anthropic(json_object_get(message, "usage"), info);

    } else if (strcmp(name, "message_delta") == 0) {
        sp_usage_anthropic(json_object_get(root, "usage"), info);

    } else if (strcmp(name, "content_block_delta") == 0) {
        info->output_bytes +=
                    sp_anthropic_text_bytes(json_object_get(root, "delta"));

    } else if (strcmp(name, "message_stop") == 0) {
        info->done = 1;
    }
}


void
sp_usage_anthropic_json(json_t *root, sp_response_info_t *info)
{
    sp_response_model(root, "model", info);
    info->output_bytes +=
                    sp_anthropic_text_bytes(json_object_get(root, "content"));
    sp_usage_anthropic(json_object_get(root, "usage"), info);
}


/* Google: the whole usageMetadata replaces what an earlier chunk said */
void
sp_usage_google(json_t *root, sp_response_info_t *info)
{
    json_t   *meta, *candidate, *parts, *part, *text;
    size_t    i, j;

    sp_response_model(root, "modelVersion", info);

    json_array_foreach(json_object_get(root, "candidates"), i, candidate) {
        parts = json_object_get(json_object_get(candidate, "content"),
                                "parts");

        json_array_foreach(parts, j, part) {
            text = json_object_get(part, "text");

            if (json_is_string(text)) {
                info->output_bytes += (int64_t) json_string_length(text);
            }
        }

        if (json_object_get(candidate, "finishReason")) {
            info->done = 1;
        }
    }

    meta = json_object_get(root, "usageMetadata");

    if (!json_is_object(meta)) {
        return;
    }

    info->usage.input_tokens = sp_add_tokens(
                          sp_int_field(meta, "promptTokenCount", NULL),
                          sp_int_field(meta, "toolUsePromptTokenCount", NULL));
    info->usage.output_tokens = sp_add_tokens(
                          sp_int_field(meta, "candidatesTokenCount", NULL),
                          sp_int_field(meta, "thoughtsTokenCount", NULL));
    info->usage.cached_tokens = sp_int_field(meta, "cachedContentTokenCount",
                                             NULL);
    info->usage.cache_write_tokens = 0;
    info->has_usage = 1;
}


/* Cohere: billed units are what is charged; tokens when they are absent */
void
sp_usage_cohere(json_t *usage, sp_response_info_t *info)
{
    json_t  *units;

    if (!json_is_object(usage)) {
        return;
    }

    units = json_object_get(usage, "billed_units");

    if (!json_is_object(units)) {
        units = json_object_get(usage, "tokens");
    }

    if (!json_is_object(units)) {
        return;
    }

    info->usage.input_tokens = sp_int_field(units, "input_tokens", NULL);
    info->usage.output_tokens = sp_int_field(units, "output_tokens", NULL);
    info->usage.cached_tokens = sp_int_field(usage, "cached_tokens", NULL);
    info->usage.cache_write_tokens = 0;
    info->has_usage = 1;
}


static int64_t
sp_cohere_text_bytes(json_t *message)
{
    json_t   *content, *item, *text;
    size_t    i;
    int64_t   n;

    content = json_object_get(message, "content");

    if (json_is_object(content)) {
        text = json_object_get(content, "text");
        return json_is_string(text) ? (int64_t) json_string_length(text) : 0;
    }

    n = 0;

    json_array_foreach(content, i, item) {
        text = json_object_get(item, "text");
        n += json_is_string(text) ? (int64_t) json_string_length(text) : 0;
    }

    return n;
}


/* meta.billed_units of Cohere's v1 chat, embed and rerank */
static void
sp_usage_cohere_meta(json_t *meta, sp_response_info_t *info)
{
    json_t  *units;
    int      input, images, output, search;
    int64_t  n, out;

    units = json_object_get(meta, "billed_units");

    if (!json_is_object(units)) {
        return;
    }

    n = sp_add_tokens(sp_int_field(units, "input_tokens", &input),
                      sp_int_field(units, "image_tokens", &images));
    n = sp_add_tokens(n, sp_int_field(units, "search_units", &search));
    out = sp_int_field(units, "output_tokens", &output);

    if (!input && !images && !search && !output) {
        return;
    }

    info->usage.input_tokens = n;
    info->usage.output_tokens = out;
    info->usage.cached_tokens = 0;
    info->usage.cache_write_tokens = 0;
    info->has_usage = 1;
}


void
sp_usage_cohere_json(json_t *root, sp_response_info_t *info)
{
    json_t  *usage;

    info->output_bytes += sp_cohere_text_bytes(json_object_get(root,
                                                               "message"));
    usage = json_object_get(root, "usage");

    if (json_is_object(usage)) {
        sp_usage_cohere(usage, info);
        return;
    }

    sp_usage_cohere_meta(json_object_get(root, "meta"), info);
}


void
sp_usage_cohere_event(json_t *root, sp_response_info_t *info)
{
    json_t      *type, *delta;
    const char  *name;

    type = json_object_get(root, "type");
    name = json_is_string(type) ? json_string_value(type) : "";
    delta = json_object_get(root, "delta");

    if (strcmp(name, "content-delta") == 0) {
        info->output_bytes += sp_cohere_text_bytes(json_object_get(delta,
                                                                 "message"));

    } else if (strcmp(name, "message-end") == 0) {
        sp_usage_cohere(json_object_get(delta, "usage"), info);
        info->done = 1;
    }
}
