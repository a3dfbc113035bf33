/*
 * The provider catalogue: the six providers Spendpol governs, each with
 * its default base URL and how the gateway authenticates to it. Which
 * endpoints each has and how each is metered is the endpoint catalogue
 * (sp_endpoint_catalogue(), sp_endpoint.h); names and their enum are
 * sp_provider_from_name() and sp_provider_name() (sp_usage.h).
 * controld validates provider names, fills default base URLs and names
 * the providers in its errors from here; the module sets the upstream's
 * credential header from here.
 */

#ifndef SP_PROVIDER_H
#define SP_PROVIDER_H

#include "spendpol.h"
#include "sp_usage.h"


#define SP_PROVIDER_COUNT  6     /* SP_PROVIDER_OPENAI .. _MISTRAL */

/* for messages: every name, in catalogue order (a unit test checks) */
#define SP_PROVIDER_NAMES_TEXT \
    "openai, anthropic, google, azure, cohere, mistral"

typedef struct {
    sp_provider_e   provider;
    const char     *default_base_url;   /* "": none (Azure: per resource) */
    const char     *auth_header;        /* lowercase header name */
    const char     *auth_scheme;        /* "Bearer " before the key, or "" */
} sp_provider_t;

/* NULL for SP_PROVIDER_UNKNOWN or out of range */
const sp_provider_t *sp_provider(sp_provider_e provider);

/* NULL when name[0..len) is not one of the six */
const sp_provider_t *sp_provider_find(const char *name, size_t len);


#endif /* SP_PROVIDER_H */
