/*
 * The endpoint catalogue: per provider, the calls Spendpol meters. The
 * module forwards nothing else (403 endpoint_not_governed) unless the
 * organisation allowed the pattern itself; controld checks those patterns
 * with the same syntax.
 *
 * Patterns are relative to the provider's base URL as the official SDKs
 * call it through /v1/{provider}: OpenAI's base URL ends in /v1, the
 * others' at the host (Azure's paths start with /openai).
 */

#include <string.h>

#include "sp_endpoint.h"


#define SP_TEXT           (SP_ENDPOINT_STREAMS | SP_ENDPOINT_JSON_BODY)
#define SP_OPENAI_CHAT    (SP_TEXT | SP_ENDPOINT_CHAT)


static const sp_endpoint_t  sp_endpoints_openai[] = {
    { "POST", "/chat/completions", "chat.completions", SP_METER_TOKENS,
      SP_OPENAI_CHAT },
    { "POST", "/completions", "completions", SP_METER_TOKENS,
      SP_OPENAI_CHAT },
    { "POST", "/responses", "responses", SP_METER_TOKENS, SP_TEXT },
    { "POST", "/embeddings", "embeddings", SP_METER_EMBED,
      SP_ENDPOINT_JSON_BODY },
    { "GET", "/models", "models.list", SP_METER_FREE, 0 },
    { "GET", "/models/*", "models.retrieve", SP_METER_FREE, 0 },
    { NULL, NULL, NULL, 0, 0 }
};


static const sp_endpoint_t  sp_endpoints_azure[] = {
    { "POST", "/openai/deployments/*/chat/completions", "chat.completions",
      SP_METER_TOKENS, SP_OPENAI_CHAT },
    { "POST", "/openai/deployments/*/completions", "completions",
      SP_METER_TOKENS, SP_OPENAI_CHAT },
    { "POST", "/openai/deployments/*/embeddings", "embeddings",
      SP_METER_EMBED, SP_ENDPOINT_JSON_BODY },
    /* the v1 API: the model in the body, no deployment in the path */
    { "POST", "/openai/v1/chat/completions", "chat.completions",
      SP_METER_TOKENS, SP_OPENAI_CHAT },
    { "POST", "/openai/v1/completions", "completions", SP_METER_TOKENS,
      SP_OPENAI_CHAT },
    { "POST", "/openai/v1/responses", "responses", SP_METER_TOKENS,
      SP_TEXT },
    { "POST", "/openai/v1/embeddings", "embeddings", SP_METER_EMBED,
      SP_ENDPOINT_JSON_BODY },
    { "POST", "/openai/responses", "responses", SP_METER_TOKENS, SP_TEXT },
    { "GET", "/openai/models", "models.list", SP_METER_FREE, 0 },
    { "GET", "/openai/v1/models", "models.list", SP_METER_FREE, 0 },
    { NULL, NULL, NULL, 0, 0 }
};


static const sp_endpoint_t  sp_endpoints_anthropic[] = {
    { "POST", "/v1/messages", "messages", SP_METER_TOKENS, SP_TEXT },
    { "POST", "/v1/messages/count_tokens", "messages.count_tokens",
      SP_METER_FREE, SP_ENDPOINT_JSON_BODY },
    { "GET", "/v1/models", "models.list", SP_METER_FREE, 0 },
    { "GET", "/v1/models/*", "models.retrieve", SP_METER_FREE, 0 },
    { NULL, NULL, NULL, 0, 0 }
};


/*
 * batchEmbedContents is synchronous (the SDK's embedContent sends it for
 * several texts); batchGenerateContent is an asynchronous batch job and
 * stays out.
 */
static const sp_endpoint_t  sp_endpoints_google[] = {
    { "POST", "/v1beta/models/*:generateContent", "generateContent",
      SP_METER_TOKENS, SP_ENDPOINT_JSON_BODY },
    { "POST", "/v1beta/models/*:streamGenerateContent",
      "streamGenerateContent", SP_METER_TOKENS, SP_TEXT },
    { "POST", "/v1beta/models/*:countTokens", "countTokens", SP_METER_FREE,
      SP_ENDPOINT_JSON_BODY },
    { "POST", "/v1beta/models/*:embedContent", "embedContent",
      SP_METER_EMBED, SP_ENDPOINT_JSON_BODY },
    { "POST", "/v1beta/models/*:batchEmbedContents", "batchEmbedContents",
      SP_METER_EMBED, SP_ENDPOINT_JSON_BODY },
    { "POST", "/v1/models/*:generateContent", "generateContent",
      SP_METER_TOKENS, SP_ENDPOINT_JSON_BODY },
    { "POST", "/v1/models/*:streamGenerateContent",
      "streamGenerateContent", SP_METER_TOKENS, SP_TEXT },
    { "POST", "/v1/models/*:countTokens", "countTokens", SP_METER_FREE,
      SP_ENDPOINT_JSON_BODY },
    { "POST", "/v1/models/*:embedContent", "embedContent", SP_METER_EMBED,
      SP_ENDPOINT_JSON_BODY },
    { "POST", "/v1/models/*:batchEmbedContents", "batchEmbedContents",
      SP_METER_EMBED, SP_ENDPOINT_JSON_BODY },
    { "GET", "/v1beta/models", "models.list", SP_METER_FREE, 0 },
    { "GET", "/v1beta/models/*", "models.get", SP_METER_FREE, 0 },
    { "GET", "/v1/models", "models.list", SP_METER_FREE, 0 },
    { "GET", "/v1/models/*", "models.get", SP_METER_FREE, 0 },
    { NULL, NULL, NULL, 0, 0 }
};


static const sp_endpoint_t  sp_endpoints_cohere[] = {
    { "POST", "/v2/chat", "chat", SP_METER_TOKENS, SP_TEXT },
    { "POST", "/v1/chat", "chat", SP_METER_TOKENS, SP_TEXT },
    { "POST", "/v2/embed", "embed", SP_METER_EMBED, SP_ENDPOINT_JSON_BODY },
    { "POST", "/v1/embed", "embed", SP_METER_EMBED, SP_ENDPOINT_JSON_BODY },
    { "POST", "/v2/rerank", "rerank", SP_METER_SEARCH,
      SP_ENDPOINT_JSON_BODY },
    { "POST", "/v1/rerank", "rerank", SP_METER_SEARCH,
      SP_ENDPOINT_JSON_BODY },
    { "GET", "/v1/models", "models.list", SP_METER_FREE, 0 },
    { "GET", "/v1/models/*", "models.get", SP_METER_FREE, 0 },
    { NULL, NULL, NULL, 0, 0 }
};


/* Mistral reports usage in streams unasked: no SP_ENDPOINT_CHAT */
static const sp_endpoint_t  sp_endpoints_mistral[] = {
    { "POST", "/v1/chat/completions", "chat.completions", SP_METER_TOKENS,
      SP_TEXT },
    { "POST", "/v1/fim/completions", "fim.completions", SP_METER_TOKENS,
      SP_TEXT },
    { "POST", "/v1/embeddings", "embeddings", SP_METER_EMBED,
      SP_ENDPOINT_JSON_BODY },
    { "GET", "/v1/models", "models.list", SP_METER_FREE, 0 },
    { "GET", "/v1/models/*", "models.retrieve", SP_METER_FREE, 0 },
    { NULL, NULL, NULL, 0, 0 }
};


const sp_endpoint_t *
sp_endpoint_catalogue(sp_provider_e provider)
{
    switch (provider) {
    case SP_PROVIDER_OPENAI:
        return sp_endpoints_openai;
    case SP_PROVIDER_AZURE:
        return sp_endpoints_azure;
    case SP_PROVIDER_ANTHROPIC:
        return sp_endpoints_anthropic;
    case SP_PROVIDER_GOOGLE:
        return sp_endpoints_google;
    case SP_PROVIDER_COHERE:
        return sp_endpoints_cohere;
    case SP_PROVIDER_MISTRAL:
        return sp_endpoints_mistral;
    default:
        return NULL;
    }
}


const sp_endpoint_t *
sp_endpoint_find(sp_provider_e provider, const char *method,
    size_t method_len, const char *path, size_t len)
{
    const sp_endpoint_t  *e;

    e = sp_endpoint_catalogue(provider);
    if (e == NULL) {
        return NULL;
    }

    for (/* void */; e->method; e++) {
        if (strlen(e->method) == method_len
            && memcmp(e->method, method, method_len) == 0
            && sp_endpoint_match(e->pattern, strlen(e->pattern), path, len))
        {
            return e;
        }
    }

    return NULL;
}


/*
 * One segment: '*' matches one or more bytes. On a mismatch the last '*'
 * takes one byte more and matching resumes after it, so the work is at
 * most the product of the two lengths, both short and bounded.
 */
static int
sp_endpoint_segment_match(const char *p, size_t plen, const char *s,
    size_t slen)
{
    size_t  pi, si, star, mark;
    int     starred;

    pi = 0;
    si = 0;
    star = 0;
    mark = 0;
    starred = 0;

    while (si < slen) {
        if (pi < plen && p[pi] == '*') {
            starred = 1;
            star = pi++;
            mark = ++si;
            continue;
        }

        if (pi < plen && p[pi] == s[si]) {
            pi++;
            si++;
            continue;
        }

        if (!starred) {
            return 0;
        }

        pi = star + 1;
        si = ++mark;
    }

    return pi == plen;
}


int
sp_endpoint_match(const char *pattern, size_t plen, const char *path,
    size_t len)
{
    const char  *pe, *se;
    size_t       pi, si, pend, send;

    if (plen == 0 || len == 0 || pattern[0] != '/' || path[0] != '/') {
        return 0;
    }

    pi = 1;
    si = 1;

    for ( ;; ) {
        pe = memchr(pattern + pi, '/', plen - pi);
        pend = pe ? (size_t) (pe - pattern) : plen;

        if (pend == plen && pend - pi == 2
            && pattern[pi] == '*' && pattern[pi + 1] == '*')
        {
            /* the final "**": one or more bytes after the '/' */
            return si < len;
        }

        se = memchr(path + si, '/', len - si);
        send = se ? (size_t) (se - path) : len;

        if (!sp_endpoint_segment_match(pattern + pi, pend - pi, path + si,
                                       send - si))
        {
            return 0;
        }

        if (pend == plen || send == len) {
            return pend == plen && send == len;
        }

        pi = pend + 1;
        si = send + 1;
    }
}


int
sp_endpoint_pattern_valid(const char *pattern, size_t len, char *err,
    size_t errlen)
{
    unsigned char  c;
    size_t         i, j, seg;
    int            stars;

    if (len == 0 || pattern[0] != '/') {
        sp_errorf(err, errlen, "an endpoint pattern must start with '/' "
                  "(a path relative to the provider's base URL)");
        return SP_ERROR;
    }

    if (len > SP_ENDPOINT_PATTERN_MAX) {
        sp_errorf(err, errlen, "an endpoint pattern is at most %d bytes, "
                  "this one is %zu", SP_ENDPOINT_PATTERN_MAX, len);
        return SP_ERROR;
    }

    for (i = 0; i < len; i++) {
        c = (unsigned char) pattern[i];

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
            || (c >= '0' && c <= '9')
            || (c != '\0' && strchr("-._~:@!$&'()+,;=*/", c) != NULL))
        {
            continue;
        }

        if (c < 0x20 || c >= 0x7f) {
            sp_errorf(err, errlen, "an endpoint pattern may not contain "
                      "byte 0x%02x; expected letters, digits, "
                      "-._~:@!$&'()+,;= and '*' between '/'", c);

        } else {
            sp_errorf(err, errlen, "an endpoint pattern may not contain "
                      "'%c'; expected letters, digits, -._~:@!$&'()+,;= "
                      "and '*' between '/'", c);
        }

        return SP_ERROR;
    }

    /* segment by segment: each starts after a '/' */
    for (seg = 1; seg <= len; seg = i + 1) {
        for (i = seg; i < len && pattern[i] != '/'; i++) {
            /* void */
        }

        if (i == seg && i < len) {
            sp_errorf(err, errlen, "an endpoint pattern may not contain an "
                      "empty segment (\"//\")");
            return SP_ERROR;
        }

        if ((i - seg == 1 && pattern[seg] == '.')
            || (i - seg == 2 && pattern[seg] == '.'
                && pattern[seg + 1] == '.'))
        {
            sp_errorf(err, errlen, "an endpoint pattern may not contain a "
                      "\"%.*s\" segment", (int) (i - seg), pattern + seg);
            return SP_ERROR;
        }

        stars = 0;

        for (j = seg; j + 1 < i; j++) {
            if (pattern[j] == '*' && pattern[j + 1] == '*') {
                stars = 1;
            }
        }

        if (stars && !(i == len && i - seg == 2)) {
            sp_errorf(err, errlen, "\"**\" may only be an endpoint "
                      "pattern's whole last segment (\"/v1/files/**\")");
            return SP_ERROR;
        }
    }

    return SP_OK;
}


int
sp_endpoint_method_valid(const char *method, size_t len)
{
    static const char *const  methods[] = {
        "GET", "POST", "PUT", "PATCH", "DELETE", NULL
    };
    const char *const        *m;

    for (m = methods; *m; m++) {
        if (strlen(*m) == len && memcmp(*m, method, len) == 0) {
            return 1;
        }
    }

    return 0;
}
