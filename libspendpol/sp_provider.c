/*
 * The provider catalogue of sp_provider.h.
 */

#include "sp_provider.h"


/* indexed by sp_provider_e - 1 */
static const sp_provider_t  sp_providers[SP_PROVIDER_COUNT] = {
    { SP_PROVIDER_OPENAI, "https://api.openai.com/v1",
      "authorization", "Bearer " },
    { SP_PROVIDER_ANTHROPIC, "https://api.anthropic.com",
      "x-api-key", "" },
    { SP_PROVIDER_GOOGLE, "https://generativelanguage.googleapis.com",
      "x-goog-api-key", "" },
    { SP_PROVIDER_AZURE, "",
      "api-key", "" },
    { SP_PROVIDER_COHERE, "https://api.cohere.com",
      "authorization", "Bearer " },
    { SP_PROVIDER_MISTRAL, "https://api.mistral.ai",
      "authorization", "Bearer " },
};


const sp_provider_t *
sp_provider(sp_provider_e provider)
{
    if (provider < SP_PROVIDER_OPENAI
        || provider > (sp_provider_e) SP_PROVIDER_COUNT)
    {
        return NULL;
    }

    return &sp_providers[provider - 1];
}


const sp_provider_t *
sp_provider_find(const char *name, size_t len)
{
    return sp_provider(sp_provider_from_name(name, len));
}
