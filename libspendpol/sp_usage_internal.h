/*
 * Per-provider usage extraction, called by sp_usage.c's dispatch.
 */

#ifndef SP_USAGE_INTERNAL_H
#define SP_USAGE_INTERNAL_H

#include <jansson.h>

#include "sp_usage.h"


/*
 * sp_usage_from_json() without the fast path for chat completions: the
 * whole body parsed by jansson (also the fuzzers' reference for the fast
 * path).
 */
int sp_usage_from_json_tree(sp_provider_e provider, const char *body,
    size_t len, sp_response_info_t *info);

/* copies root[name] into info->model unless a model is already known */
void sp_response_model(json_t *root, const char *name,
    sp_response_info_t *info);

void sp_usage_anthropic(json_t *usage, sp_response_info_t *info);
void sp_usage_anthropic_json(json_t *root, sp_response_info_t *info);
void sp_usage_anthropic_event(json_t *root, sp_response_info_t *info);
int64_t sp_anthropic_text_bytes(json_t *content);

void sp_usage_google(json_t *root, sp_response_info_t *info);

void sp_usage_cohere(json_t *usage, sp_response_info_t *info);
void sp_usage_cohere_json(json_t *root, sp_response_info_t *info);
void sp_usage_cohere_event(json_t *root, sp_response_info_t *info);


#endif /* SP_USAGE_INTERNAL_H */
