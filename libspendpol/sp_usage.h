/*
 * Providers' wire formats: what a request asks for, and what a response
 * (JSON or an SSE stream) says it used.
 */

#ifndef SP_USAGE_H
#define SP_USAGE_H

#include "spendpol.h"
#include "sp_journal.h"
#include "sp_tokenize.h"


typedef enum {
    SP_PROVIDER_UNKNOWN = 0,
    SP_PROVIDER_OPENAI,
    SP_PROVIDER_ANTHROPIC,
    SP_PROVIDER_GOOGLE,
    SP_PROVIDER_AZURE,
    SP_PROVIDER_COHERE,
    SP_PROVIDER_MISTRAL
} sp_provider_e;

/* SP_PROVIDER_UNKNOWN when name is not one of the six */
sp_provider_e sp_provider_from_name(const char *name, size_t len);
const char *sp_provider_name(sp_provider_e provider);


/* ---- requests (sp_request.c) ----------------------------------------- */

/*
 * The largest output limit (max_tokens and its spellings) and the most
 * outputs (n, best_of, candidateCount) a request may ask for. Far above
 * any model's; they exist so that no product of them can overflow.
 */
#define SP_REQUEST_MAX_OUTPUT_TOKENS  100000000
#define SP_REQUEST_MAX_CHOICES        128

/*
 * What an image costs at most, in input tokens, whatever its size: the
 * worst published case is gpt-4o-mini at high detail, 2,833 tokens plus
 * 5,667 per 512 px tile, and an image is cut to at most 768 x 2,000 px,
 * 2 x 4 tiles: 48,169 tokens. (gpt-4o: 85 + 8 x 170 = 1,445; the 4.1 and
 * o4 models cap at 1,536 patches times 1.62 or 2.46; Claude about 1,600;
 * Gemini 258 per 768 px tile.)
 */
#define SP_REQUEST_IMAGE_TOKENS       50000

/*
 * Audio, documents and other files are charged the larger of this and
 * the bytes of their (base64) data, a byte taken as a token: 20,000
 * tokens is 10 minutes of Gemini audio (32 tokens a second) or about 10
 * PDF pages. A file sent by reference (an id or a URL) has no bytes here
 * and is charged this much.
 */
#define SP_REQUEST_FILE_TOKENS        20000

/* tokens of framing a provider adds to any prompt (roles, templates) */
#define SP_REQUEST_FRAMING_TOKENS     64

typedef struct {
    char        model[SP_FIELD_LEN];
    int         stream;             /* "stream": true */
    int         include_usage;      /* the client asked for stream usage */
    int         has_stream_options; /* "stream_options" present */
    int64_t     max_tokens;         /* the largest of max_tokens,
                                       max_completion_tokens,
                                       max_output_tokens and Gemini's
                                       generationConfig.maxOutputTokens;
                                       0 when absent */
    int64_t     choices;            /* outputs asked for: n, best_of (the
                                       larger), Gemini's
                                       generationConfig.candidateCount;
                                       1 when absent */
    int64_t     prompt_bytes;       /* bytes of prompt text (media data
                                       excluded) */
    int64_t     media_tokens;       /* conservative charge for image,
                                       audio and document/file inputs:
                                       SP_REQUEST_IMAGE_TOKENS an image,
                                       at least SP_REQUEST_FILE_TOKENS a
                                       file; saturates at INT64_MAX */
    int64_t     prompt_tokens;      /* set by sp_request_count_prompt():
                                       the prompt's tokens, media
                                       excluded; valid when
                                       prompt_counted */
    int64_t     prompt_bound;       /* of prompt_tokens, the bytes of
                                       parts only bounded (tools, unknown
                                       fields), framing included */
    int         prompt_counted;
    int         temperature_zero;   /* temperature (Gemini's
                                       generationConfig.temperature) is
                                       a number equal to 0 */
    int         has_seed;           /* seed (Mistral random_seed,
                                       Gemini generationConfig.seed) is
                                       present and not null */
    int         has_tools;          /* a non-empty tools (functions,
                                       Gemini functionDeclarations)
                                       array: routing conditions */
    int         has_images;         /* an image input part, any
                                       provider's shape */
    const char *error_code;         /* on SP_ERROR: "invalid_json",
                                       "invalid_field" or
                                       "duplicate_field" (static) */
} sp_request_info_t;

/*
 * Parses a request body. On failure returns SP_ERROR with a message for
 * the client in err that names the field and what was expected ("field
 * \"max_tokens\" must be an integer from 0 to 100000000, not a string")
 * and the error's code in info->error_code:
 *   invalid_json     not JSON, or not one object
 *   invalid_field    max_tokens, max_completion_tokens, max_output_tokens,
 *                    generationConfig.maxOutputTokens not an integer in
 *                    0..SP_REQUEST_MAX_OUTPUT_TOKENS; n, best_of,
 *                    generationConfig.candidateCount not an integer in
 *                    1..SP_REQUEST_MAX_CHOICES; a number anywhere outside
 *                    int64; "model" not a string or holding a control
 *                    character (it ends up in headers and the journal);
 *                    "stream" not a boolean
 *   duplicate_field  a key twice in one object (whichever object: the
 *                    gateway and the provider could read different ones)
 * Gemini's snake_case spellings (generation_config, max_output_tokens,
 * candidate_count) are read too. An empty body is valid (GET-like calls).
 */
int sp_request_parse(sp_provider_e provider, const char *body, size_t len,
    sp_request_info_t *info, char *err, size_t errlen);

/*
 * The same answers with jansson reading every body (sp_request_parse
 * scans without a tree and asks jansson only about bodies its scanner
 * declines): the reference the tests and the fuzzer hold it to.
 */
int sp_request_parse_tree(sp_provider_e provider, const char *body,
    size_t len, sp_request_info_t *info, char *err, size_t errlen);

/*
 * What the path says when the body does not: Google's
 * ".../models/{model}:generateContent" (and ":streamGenerateContent",
 * which streams), Azure's ".../deployments/{deployment}/...". Fills
 * info->model when it is empty (for Google always: the path names the
 * model that runs, a body's "model" cannot lower the price) and sets
 * info->stream for Google's streaming method.
 */
void sp_request_from_path(sp_provider_e provider, const char *path,
    size_t len, sp_request_info_t *info);

/*
 * For an OpenAI-shaped streamed request without stream_options, writes
 * the body with "stream_options":{"include_usage":true} added after the
 * opening brace into out. Returns the new length, or 0 when it does not
 * apply or does not fit.
 */
size_t sp_request_add_stream_usage(const char *body, size_t len, char *out,
    size_t outlen);

/*
 * The same when "stream_options" is present but does not ask for usage:
 * the body is re-serialised (compact) with include_usage set to true.
 * Returns the new length, or 0 when the body is not an object or out is
 * too small.
 */
size_t sp_request_set_stream_usage(const char *body, size_t len, char *out,
    size_t outlen);

/*
 * The tokenizers sp_request_count_prompt() uses: the encodings, built
 * once before workers start, and one worker's (or thread's) context.
 * enc[e] may be NULL: that encoding's models keep the bytes bound.
 */
typedef struct {
    const sp_tok_enc_t  *enc[SP_TOK_ENCODINGS];
    sp_tok_ctx_t        *ctx;
} sp_request_tokenizer_t;

/*
 * The exact prompt tokens of an OpenAI model's request, where the
 * tokenizer is public: provider openai or azure and a model whose
 * encoding sp_tok_encoding_for_model() knows (for Azure, the model the
 * deployment runs). embeddings: the body is an embeddings request (its
 * "input" is a list of texts, not the Responses API's items).
 *
 * Counted exactly, as OpenAI bills them:
 *   chat "messages"       per message SP_TOK_CHAT_PER_MESSAGE, its role,
 *                         content and name (SP_TOK_CHAT_PER_NAME more),
 *                         and SP_TOK_CHAT_PER_REPLY once
 *   Responses "input"     a string is one user message; items with a
 *                         role are messages as above; "instructions" a
 *                         developer message
 *   completions "prompt", "suffix", embeddings "input"
 *                         the text of each string, one token per token id
 * Bounded (the provider's rendering is not public): tools, functions and
 * response formats, message members other than role, content and name
 * (tool calls), items without a role, content parts that are neither
 * text nor media, and fields of other providers: their bytes, keys
 * included, a token each, plus SP_REQUEST_FRAMING_TOKENS once. A content
 * array's text parts count each on its own plus one token per part after
 * the first (how parts are joined is not documented). Media keep
 * media_tokens. A piece the tokenizer cannot count exactly counts a
 * token a byte. So prompt_tokens + media_tokens is an upper bound of
 * what the provider bills as input, and equal to it for text prompts.
 *
 * Sets info->prompt_tokens, prompt_bound and prompt_counted and returns
 * SP_OK; SP_ERROR (nothing set) when the tokenizer does not apply, the
 * body is not an object or memory ran out. info must be what
 * sp_request_parse() made of the same body.
 */
int sp_request_count_prompt(const sp_request_tokenizer_t *tokenizer,
    sp_provider_e provider, const char *model, int embeddings,
    const char *body, size_t len, sp_request_info_t *info);

/*
 * The most a request may use, for a budget reservation:
 *   prompt_tokens = the counted prompt_tokens + media_tokens, when
 *                   sp_request_count_prompt() counted them; else
 *                   prompt_bytes + SP_REQUEST_FRAMING_TOKENS + media_tokens
 *                   (every byte of text taken as a token: no tokenizer
 *                   makes more tokens than bytes; the tokenizers of the
 *                   other providers are not public)
 *   output_tokens = choices * (max_tokens, or model_max_output when the
 *                   request sets no limit)
 * Both saturate at INT64_MAX instead of overflowing.
 */
void sp_request_worst_case(const sp_request_info_t *info,
    int64_t model_max_output, int64_t *prompt_tokens,
    int64_t *output_tokens);

/* tokens estimated from text bytes (about 4 bytes a token, rounded up) */
int64_t sp_tokens_estimate(int64_t bytes);

/*
 * The prompt's input tokens when the provider's answer never says: the
 * counted prompt_tokens, else sp_tokens_estimate(prompt_bytes).
 */
int64_t sp_request_prompt_estimate(const sp_request_info_t *info);


/* ---- SSE (sp_sse.c) -------------------------------------------------- */

/*
 * An incremental text/event-stream parser. Feed it bytes as they arrive,
 * split anywhere; it stops at each event boundary so the caller can look
 * at the event. The data buffer is the caller's (no allocation); an event
 * whose data does not fit is flagged truncated and its excess dropped.
 */
typedef struct {
    char     *data;          /* caller's buffer */
    size_t    data_cap;
    size_t    data_len;
    int       truncated;
    char      event[64];
    size_t    event_len;

    /* parser state */
    int       state;
    int       field;
    size_t    field_len;
    char      field_name[8];
    int       after_cr;
    int       has_data;
    int       event_complete;
} sp_sse_t;

void sp_sse_init(sp_sse_t *sse, char *buffer, size_t size);

/*
 * Consumes bytes up to and including the end of the next event, or all of
 * them. Returns the number consumed; *event_done is 1 when an event
 * (sse->event, sse->data) is complete. The next call starts a new event.
 */
size_t sp_sse_feed(sp_sse_t *sse, const char *in, size_t len,
    int *event_done);


/* ---- responses (sp_usage.c) ------------------------------------------ */

typedef struct {
    sp_usage_t  usage;
    int         has_usage;
    char        model[SP_FIELD_LEN];
    int64_t     output_bytes;    /* generated text seen, for estimates */
    int         done;            /* the stream said it finished */
} sp_response_info_t;

/*
 * A whole JSON response body. Returns SP_OK when it was JSON (usage or
 * not), SP_ERROR when it was not.
 */
int sp_usage_from_json(sp_provider_e provider, const char *body, size_t len,
    sp_response_info_t *info);

/*
 * One SSE event of a streamed response. Returns 1 when the event exists
 * only to carry usage the client did not ask for (OpenAI's final chunk
 * with empty choices), else 0.
 */
int sp_usage_from_event(sp_provider_e provider, const char *event,
    const char *data, size_t len, sp_response_info_t *info);


#endif /* SP_USAGE_H */
