/*
 * The semantic cache's library (issue 12, item 4): what of a request is
 * embedded, when two prompts may share an answer whatever their
 * embeddings say, how vectors are stored and compared, and the
 * embeddings endpoints' bodies and answers. Called from an nginx worker:
 * nothing here allocates (output goes into caller buffers), locks or does
 * I/O, and every function is linear in its input.
 *
 * 1. The prompt (sp_semantic_prompt): the text of the LAST message, which
 *    must be the user's, and the system prompt:
 *      openai, azure, mistral  "messages"; system: role "system" or
 *                              "developer" messages, in order
 *      anthropic               "messages"; system: top-level "system"
 *                              (a string or text blocks)
 *      google                  "contents" (a missing role is "user",
 *                              "model" is the assistant); system:
 *                              "systemInstruction" / "system_instruction"
 *      cohere                  v2 "messages" (as openai); v1 "message"
 *                              after "chat_history", system "preamble"
 *    Content is a string or an array of parts: the text of the parts
 *    whose type is absent, "text" or "input_text", joined by "\n";
 *    images, audio, files and tool results are not text. A request whose
 *    last message is not the user's (an assistant prefill, a tool result)
 *    or holds no text is not semantically cached (SP_ERROR).
 *    The earlier turns are not embedded but they change the answer:
 *    prompt->context hashes the system prompt and every message before the
 *    last one as spelled; two requests may share an answer only when
 *    their contexts are equal.
 *
 * 2. The lexical guard (sp_semantic_guard): two prompts may share an
 *    answer only when, for each category below, the multiset of their
 *    tokens is equal (extracted from both, normalised, sorted, compared).
 *    It runs before any semantic hit whatever the similarity: a miss is
 *    cheap, a wrong answer is not.
 *
 *    Text is cut into chunks at ASCII white space and control bytes;
 *    bytes >= 0x80 are word characters (UTF-8 sequences are never split;
 *    non-ASCII letters have no case here). Leading ( [ { < " ' ` * “ ‘ «
 *    and trailing . , ; : ! ? ) ] } > " ' ` * ” ’ » … are punctuation;
 *    a chunk ending in . ! ? : … or followed by a line break ends a
 *    sentence. Then, per chunk:
 *
 *    negation    words (ASCII case folded, ’ read as '):
 *                not, cannot and every word ending in n't (don't, isn't,
 *                won't, ...: all count as "not"), no, never, none,
 *                nothing, nobody, nowhere, neither, nor, without, except,
 *                unless; and the polar words, each one token whatever
 *                its inflection (enable, enables, enabled, enabling):
 *                enable/disable, allow/deny, include/exclude, on/off,
 *                true/false, before/after, above/below,
 *                increase/decrease, min/minimum/max/maximum, more/less/
 *                fewer, most/least, higher/lower
 *    number      a chunk starting with a digit, or with $ € £ ¥ + - and
 *                a digit, whole and case folded ("3", "3.5kg", "10%",
 *                "$5", "1,000", "2FA", "12/03/2026", "10:30"); a word
 *                after a hyphen that starts with a digit ("covid-19":
 *                "19"); spelled numbers as digits: zero..twenty, thirty..
 *                ninety, hundred, thousand, million, billion, trillion
 *                (and plurals), dozen, half, once, twice, first..tenth
 *                ("three" = "3", "first" = "1st")
 *    date, time  month names (not "may": a capitalised May mid-sentence
 *                is a named entity) and their abbreviations, weekdays,
 *                yesterday, today, tomorrow, tonight, morning,
 *                afternoon, evening, noon, midnight, ago, last, next,
 *                previous, recent, the units seconds..centuries and
 *                hourly..annually, am/pm after a number; dates and times
 *                in digits are numbers above
 *    quoted      the bytes between "..", `..` (a run of n backticks
 *                closes at the next run of n), “..”, and '..' or ‘..’
 *                when the opening quote starts a word and the closing one
 *                ends one (so apostrophes are not quotes); an unclosed
 *                ", ` or “ quotes the rest of the text. Exact bytes.
 *    identifier  a chunk holding :// @ / \ _ or a dot between two word
 *                characters (URLs, emails, paths, snake_case,
 *                dotted.names, example.com); a word with a digit
 *                ("gpt4"), in ALLCAPS (2+ ASCII capitals, no lowercase:
 *                "API"), or camelCase (a capital after a lowercase
 *                letter: "getUser", "iPhone"). Exact bytes.
 *    entity      a capitalised word (A-Z then not ALLCAPS) that does not
 *                start a sentence, "I" and "I'm" aside, without a
 *                trailing 's ("Paris", "France's" = "France"). Exact.
 *
 *    Examples: "enable 2FA" / "disable 2FA": negation differs (miss).
 *    "What is the capital of France?" / "what's the capital of France":
 *    may hit (one entity, France, each). "3 apples" / "three apples": may
 *    hit; "3 apples" / "4 apples", "in 'prod'" / "in 'staging'",
 *    "call getUser" / "call getUsers", "Paris" / "Rome" mid-sentence: miss.
 *    Known gaps, left to the embedding and the threshold: a name that
 *    starts a sentence ("France is ..." / "Spain is ..."), non-ASCII
 *    capitals, synonyms outside the lists.
 *
 *    Each prompt holds at most SP_SEMANTIC_GUARD_TOKENS tokens; past
 *    that the guard refuses (a long document is not semantically
 *    cached). The reason names the category; for negation, number and
 *    date it adds the two differing tokens when each is printable ASCII
 *    of at most 8 bytes ("number differs: 3 vs 4"); quoted strings,
 *    identifiers and entities are never quoted (they may be secrets or
 *    personal data).
 *
 * 3. Vectors: an embedding is stored as int8, scaled so that its largest
 *    component is +-127 (round half away from zero), the scale dropped:
 *    cosine does not depend on it, and at 1536 dimensions an L2-unit
 *    vector times 127 would use only about +-12 of the range. Similarity
 *    is dot(a, b) / sqrt(|a|^2 |b|^2) on the integers, computed exactly
 *    (int32), so the only error is quantisation's: each component is off
 *    by at most half a step, 1/254 of the largest; for embedding-like
 *    vectors (1536 dimensions) |similarity - float cosine| stays within
 *    0.005 (the unit test checks <= 0.01 over random vectors and pairs
 *    near 0.95). The search reads a flat array with the norms stored
 *    beside it and is exact (it returns what comparing every vector in
 *    full would): a vector is compared in full only when, after its first
 *    quarter, the Cauchy-Schwarz bound on the rest still lets it reach
 *    the threshold; unrelated vectors cost a quarter. Kernels: AVX-512
 *    VNNI, AVX2, SSE2 or plain C, chosen at run time. 10,000 vectors of
 *    1536 dimensions take about 150 us at 0.95 when most stored prompts
 *    are unrelated (bench: micro semantic); when none can be ruled out (a
 *    threshold below about 0.85, or a store of near-paraphrases) the
 *    search costs 1.25 times comparing all in full, about 450 us.
 *
 * 4. Embeddings endpoints: the body asking for one text's embedding and
 *    the vector in the answer:
 *      openai, azure           {"model", "input", openai:
 *                              "encoding_format": "float"} ->
 *                              data[0].embedding
 *      mistral                 {"model", "input": [..]} -> data[0].embedding
 *      google                  {"model": "models/M", "content": {"parts":
 *                              [{"text"}]}} (embedContent) ->
 *                              embedding.values (batch: embeddings[0].values)
 *      cohere                  v2 {"model", "texts": [..], "input_type":
 *                              "search_query", "embedding_types":
 *                              ["float"]} -> embeddings.float[0] (v1:
 *                              embeddings[0])
 *      anthropic               has no embeddings endpoint (SP_ERROR)
 */

#ifndef SP_SEMANTIC_H
#define SP_SEMANTIC_H

#include "spendpol.h"
#include "sp_usage.h"


#define SP_SEMANTIC_DIM_MAX             4096
#define SP_SEMANTIC_DEFAULT_THRESHOLD   0.95
#define SP_SEMANTIC_GUARD_TOKENS        512      /* per prompt */
#define SP_SEMANTIC_NONE                ((size_t) -1)

/* sp_semantic_prompt() flags */
#define SP_SEMANTIC_WITH_SYSTEM         0x01u    /* embed the system too */


/* ---- 1. the prompt ---------------------------------------------------- */

typedef struct {
    sp_str_t   text;        /* what to embed: user, or system "\n\n" user
                               with SP_SEMANTIC_WITH_SYSTEM and a system */
    sp_str_t   user;        /* the last (user) message's text, not empty */
    sp_str_t   system;      /* the system prompt's text, or "" */
    uint32_t   turns;       /* messages before the last, system aside */
    uint64_t   context;     /* hash of the system text and the messages
                               before the last, as spelled */
} sp_semantic_prompt_t;

/* scratch bytes sp_semantic_prompt() needs for a body of body_len bytes */
size_t sp_semantic_prompt_scratch(size_t body_len);

/*
 * The prompt of a request body of provider (sp_usage.h); the texts are
 * decoded (UTF-8) into scratch and point there. SP_ERROR with a reason
 * in err when there is no user text to embed or the body is not a JSON
 * object of that provider's shape: the request is then not semantically
 * cached (it may still be cached exactly).
 */
int sp_semantic_prompt(sp_provider_e provider, const char *body, size_t len,
    unsigned flags, char *scratch, size_t scratch_len,
    sp_semantic_prompt_t *prompt, char *err, size_t errlen);


/* ---- 2. the lexical guard --------------------------------------------- */

/*
 * 1 when prompts a and b may share an answer, 0 when they differ in a
 * category above, with the reason in reason (NUL-terminated; may be
 * NULL). About 16 KB of stack (the token lists).
 */
int sp_semantic_guard(const char *a, size_t alen, const char *b,
    size_t blen, char *reason, size_t reasonlen);


/* ---- 3. vectors ------------------------------------------------------- */

/*
 * v[0..dim) into out[0..dim) as above. SP_ERROR for dim 0 or above
 * SP_SEMANTIC_DIM_MAX, a NaN or infinite component, or a zero vector.
 */
int sp_semantic_quantise(const float *v, size_t dim, int8_t *out);

/* cosine of two quantised vectors, in [-1, 1]; 0 when either is zero */
double sp_semantic_similarity(const int8_t *a, const int8_t *b,
    size_t dim);

/*
 * A quantised vector's squared norm (sum of squares, exact), to store
 * beside it: the search then reads only the vectors' bytes once.
 */
uint32_t sp_semantic_norm(const int8_t *v, size_t dim);

/*
 * The most similar of count vectors of dim components stored one after
 * the other, to query: SP_OK with its index in *best and its similarity
 * when that is at least threshold; SP_ERROR otherwise (none, bad dim),
 * *best then SP_SEMANTIC_NONE and *similarity below the threshold: the
 * best of the vectors compared in full, or -1 when none was (a vector
 * ruled out early is not compared in full). Ties go to the lowest index.
 * norms[i] is sp_semantic_norm() of vector i, or norms is NULL and every
 * vector is compared in full with its norm computed (several times the
 * work). Components are in [-127, 127], as sp_semantic_quantise() writes
 * them.
 */
int sp_semantic_search(const int8_t *vectors, const uint32_t *norms,
    size_t count, size_t dim, const int8_t *query, double threshold,
    size_t *best, double *similarity);


/* ---- 4. embeddings endpoints ------------------------------------------ */

/*
 * The JSON body asking provider's embeddings endpoint for the embedding
 * of text with model (azure: may be empty, the deployment is in the
 * path), NUL-terminated in out; *written its length. SP_ERROR with a
 * reason: anthropic, an empty model, text or model not UTF-8, out too
 * small (at most 6 bytes per byte of text and model, plus 160).
 */
int sp_semantic_embed_body(sp_provider_e provider, sp_str_t model,
    sp_str_t text, char *out, size_t outlen, size_t *written, char *err,
    size_t errlen);

/*
 * The embedding in an answer of provider's embeddings endpoint, into
 * out[0..*dim), at most max_dim values. SP_ERROR with a reason naming
 * what was expected: not JSON, the vector's member missing, base64
 * (encoding_format), an element not a number or out of float range,
 * more than max_dim values, none.
 */
int sp_semantic_embedding(sp_provider_e provider, const char *body,
    size_t len, float *out, size_t max_dim, size_t *dim, char *err,
    size_t errlen);


#endif /* SP_SEMANTIC_H */
