/*
 * Cross-provider translation: a request in OpenAI chat-completions form
 * sent to Anthropic, Google, Cohere, Mistral or Azure, and the answer
 * (JSON or SSE) written back in OpenAI form, so that the official openai
 * SDK cannot tell. The routing stage (sp_route.h) uses it: a target that
 * cannot take a request faithfully is not routed to.
 *
 * What the gateway meters is the target's own answer (sp_usage.h reads it
 * before it is translated): usage and cost are the target's, at the
 * target's prices.
 *
 * Nothing here allocates per byte or reads past its input; outputs go to
 * caller buffers sized by the *_bound() functions.
 */

#ifndef SP_TRANSLATE_H
#define SP_TRANSLATE_H

#include "spendpol.h"
#include "sp_usage.h"


#define SP_TRANSLATE_PATH_MAX   512
#define SP_TRANSLATE_QUERY_MAX  64
/* the Azure API version a translated request asks for */
#define SP_TRANSLATE_AZURE_API_VERSION  "2024-10-21"
/*
 * Anthropic requires max_tokens: a request that sets neither max_tokens
 * nor max_completion_tokens asks Anthropic for this many (the budget
 * reservation of the translated request counts it as its limit).
 */
#define SP_TRANSLATE_ANTHROPIC_MAX_TOKENS  4096


/* what a translated request is sent as, after the target's base URL */
typedef struct {
    char     path[SP_TRANSLATE_PATH_MAX];     /* "/v1/messages", ...,
                                                 re-encoded (a model in
                                                 the path is escaped) */
    char     query[SP_TRANSLATE_QUERY_MAX];   /* "alt=sse",
                                                 "api-version=...", "" */
    size_t   body_len;
    int      stream;                          /* the request streams */
    int      include_usage;                   /* the client asked for
                                                 stream usage */
} sp_translate_request_t;


/*
 * What each target gets (model: the target's, in the path for Google and
 * Azure):
 *   anthropic  POST /v1/messages: system and developer messages joined
 *              into "system" (one text block each), tool messages as
 *              tool_result blocks (consecutive ones one user turn),
 *              tool_calls as tool_use blocks (arguments must hold a JSON
 *              object), tools, tool_choice (auto, none, required -> any,
 *              a function -> tool; parallel_tool_calls false ->
 *              disable_parallel_tool_use), max_tokens (default above),
 *              stop -> stop_sequences, images (data: URLs base64, http(s)
 *              by URL), user -> metadata.user_id; seed is dropped.
 *              Not faithful: n > 1, response_format json_object or
 *              json_schema, temperature above 1, non-zero penalties.
 *   google     POST /v1beta/models/{model}:generateContent, or
 *              :streamGenerateContent?alt=sse: contents (user, model),
 *              systemInstruction, generationConfig (maxOutputTokens,
 *              temperature, topP, stopSequences, candidateCount, seed,
 *              penalties, responseMimeType for json_object), tools
 *              functionDeclarations, toolConfig, functionCall and
 *              functionResponse parts (the name from the earlier call
 *              with the tool_call_id), images from data: URLs. Not
 *              faithful: http(s) images, json_schema, a tool result
 *              without its call, function names over 64 characters.
 *   cohere     POST /v2/chat: messages nearly as they are, max_tokens,
 *              temperature, p (top_p, held within Cohere's 0.01..0.99),
 *              stop_sequences, seed, penalties, tools, tool_choice
 *              REQUIRED or NONE. Not faithful: images, n > 1, a named
 *              tool_choice, json_schema, penalties outside 0..1.
 *   mistral    POST /v1/chat/completions: the members Mistral knows
 *              (max_completion_tokens -> max_tokens, seed -> random_seed,
 *              developer -> system; stream_options and the rest
 *              dropped: Mistral refuses members it does not know and
 *              reports usage in its last chunk anyway). Not faithful:
 *              n > 1, json_schema.
 *   azure      POST /openai/deployments/{model}/chat/completions
 *              ?api-version=SP_TRANSLATE_AZURE_API_VERSION: the body as
 *              it is without "model".
 *   openai     the body as it is, "model" replaced.
 * For every target but OpenAI and Azure, logprobs, audio output and
 * logit_bias are not faithful, nor content parts other than text and
 * image_url.
 *
 * 1 when body (an OpenAI chat-completions request) can be sent to target
 * faithfully; 0 with the reason in why ("anthropic does not take n > 1",
 * "cohere does not take image inputs", ...) when a feature the target
 * lacks is used. target SP_PROVIDER_OPENAI is always 1.
 */
int sp_translate_check(sp_provider_e target, const char *body, size_t len,
    char *why, size_t whylen);

/* an outsize for sp_translate_request() that always suffices */
size_t sp_translate_request_bound(size_t len);

/*
 * Writes body translated for target, asking for model, into out (outsize
 * bytes); res gets the path, query and length. SP_ERROR with a reason
 * when the body cannot be translated (sp_translate_check() says why) or
 * out is too small.
 */
int sp_translate_request(sp_provider_e target, const char *model,
    size_t model_len, const char *body, size_t len, char *out,
    size_t outsize, sp_translate_request_t *res, char *err, size_t errlen);


/* an outsize for sp_translate_response() that always suffices */
size_t sp_translate_response_bound(size_t len);

/*
 * A complete JSON answer of source (2xx) as an OpenAI chat.completion
 * object, written into out; *out_len its length. id is the completion's
 * id ("chatcmpl-..."), created unix seconds. An error answer (4xx, 5xx)
 * is written in OpenAI's error shape {"error":{"message","type","code"}},
 * its message kept. SP_ERROR when body is not an answer of source's shape
 * or out is too small.
 */
int sp_translate_response(sp_provider_e source, int status,
    const char *body, size_t len, const char *id, int64_t created,
    char *out, size_t outsize, size_t *out_len);

/*
 * The same, with the model the client asked for (model_len bytes, less
 * than SP_FIELD_LEN): the answer's "model" when the target's answer names
 * none (Cohere's never does). sp_translate_response() writes "" then.
 * id must be at most 63 printable ASCII bytes without '"' or '\\'.
 */
int sp_translate_response_model(sp_provider_e source, int status,
    const char *body, size_t len, const char *id, int64_t created,
    const char *model, size_t model_len, char *out, size_t outsize,
    size_t *out_len);


/*
 * A streamed answer, one SSE event at a time: source's events in, OpenAI
 * chat.completion.chunk events out ("data: {...}\n\n"), the last one
 * followed by "data: [DONE]\n\n". Usage goes in a final chunk with empty
 * choices when include_usage was asked, as OpenAI does.
 */
typedef struct {
    sp_provider_e  source;
    int            include_usage;
    int            done;                /* [DONE] written */
    int            role_sent;
    int            finish_sent;
    int64_t        created;
    char           id[64];
    char           model[SP_FIELD_LEN];
    int64_t        input_tokens;
    int64_t        output_tokens;
    int64_t        cached_tokens;
    char           finish_reason[32];
    int            tool_index;          /* OpenAI tool_calls index */
    int            block_is_tool;       /* Anthropic: the open block */
    int64_t        cache_write_tokens;  /* Anthropic: part of input */
    int            has_usage;           /* the source reported usage */
} sp_translate_stream_t;

/*
 * id: at most 63 printable ASCII bytes without '"' or '\\' (else the
 * chunks carry ""). model is "" until the source names one; the caller
 * may copy the requested model into it after init (a C string), which
 * the chunks carry until then. The usage chunk is written only when the
 * source reported usage.
 */
void sp_translate_stream_init(sp_translate_stream_t *st,
    sp_provider_e source, int include_usage, const char *id,
    int64_t created);

/* an outsize that always suffices for one event of data_len bytes */
size_t sp_translate_stream_bound(size_t data_len);

/*
 * One complete event of source's stream (its "event:" name, may be empty,
 * and its "data:" joined) -> zero or more OpenAI events in out. Returns
 * the bytes written, or (size_t) -1 when the event is not of source's
 * shape (the caller ends the stream with an error event), or out is too
 * small. A source's error event becomes OpenAI's {"error":{...}} event,
 * after which nothing more is written; "[DONE]" (Cohere, Mistral) ends
 * the stream as sp_translate_stream_end() does.
 */
size_t sp_translate_stream_event(sp_translate_stream_t *st,
    const char *event, size_t event_len, const char *data, size_t data_len,
    char *out, size_t outsize);

/*
 * The source stream ended: what OpenAI's stream still owes (the finish
 * chunk if not sent, the usage chunk, "data: [DONE]"), nothing if done.
 */
size_t sp_translate_stream_end(sp_translate_stream_t *st, char *out,
    size_t outsize);


#endif /* SP_TRANSLATE_H */
