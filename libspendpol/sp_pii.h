/*
 * PII and secret detection in the request path, with no service to call:
 * a single pass over the text a model will read, in C, that never fails
 * open (a body it cannot read is refused by the caller, never passed
 * unscanned).
 *
 * Two levels:
 *   sp_pii_scan_text()  plain text (one decoded string, an answer's text);
 *   sp_pii_scan_body()  a provider request or answer body: only the JSON
 *                       string values a model reads (message contents,
 *                       system prompts, instructions, tool results and
 *                       tool-call arguments, Google parts[].text, Cohere
 *                       message/preamble/chat_history, embeddings input),
 *                       never keys, never JSON syntax, never members that
 *                       are metadata (model, role, type, ids, urls, base64
 *                       data, mime types). Strings are decoded (escapes,
 *                       \uXXXX and surrogate pairs) before they are
 *                       scanned, and every entity's span is given in the
 *                       raw body's bytes, so that redaction can replace it
 *                       in place.
 *
 * Entities (name in policies and in [REDACTED:TYPE]):
 *   email        EMAIL        RFC 5322 dot-atom local part, a domain with a
 *                             known or 2+ letter TLD
 *   phone        PHONE        E.164 (+ and 8-15 digits) and national formats
 *                             (NANP (xxx) xxx-xxxx, xxx-xxx-xxxx; UK, FR, DE
 *                             groupings), with separators; not bare digit runs
 *                             without phone context
 *   ssn          SSN          US SSN ddd-dd-dddd (or spaced, or 9 digits in
 *                             context): area not 000, 666 or 900-999, group
 *                             not 00, serial not 0000
 *   card         CARD         13-19 digits (spaces or dashes in groups),
 *                             Luhn-valid with an issuer prefix (Visa,
 *                             Mastercard 51-55 and 2221-2720, Amex 34/37,
 *                             Discover, Diners, JCB, UnionPay, Maestro)
 *   iban         IBAN         country code, check digits, BBAN of the
 *                             country's length, mod-97 == 1 (spaces allowed)
 *   ipv4         IPV4         dotted quad, each 0-255, not part of a longer
 *                             dotted run (1.2.3.4.5 is a version)
 *   ipv6         IPV6         RFC 4291 text forms incl. :: and an embedded
 *                             IPv4 tail
 *   api_key      API_KEY      provider and cloud secrets: OpenAI sk-/
 *                             sk-proj-, Anthropic sk-ant-, Google AIza,
 *                             AWS AKIA/ASIA access key ids (and a 40-char
 *                             secret next to one), GitHub ghp_/gho_/ghs_/
 *                             github_pat_, Slack xox?-, Stripe sk_live_/
 *                             rk_live_, Azure storage AccountKey=, Hugging
 *                             Face hf_, Cohere/Mistral keys in context,
 *                             Spendpol sp_key_, GitLab glpat-
 *   jwt          JWT          three base64url segments, the first decoding
 *                             to a JSON object with "alg"
 *   private_key  PRIVATE_KEY  a PEM "-----BEGIN ... PRIVATE KEY-----" block
 *                             (the span covers the whole block when its END
 *                             line is there, else to the end of the text)
 *   dob          DOB          a date within a few words of a birth context
 *                             ("date of birth", "DOB", "born on", "né le",
 *                             "geboren"), in common numeric and month-name
 *                             forms; a date alone is not a DOB
 *
 * The guard score (0 to 1, reported as thousandths here) is the noisy-or
 * of the distinct types found: score = 1 - prod(1 - w(type)), each type
 * counted once, with the weights of sp_pii_weight(); 0 when none. It is
 * documented in docs/pii.md.
 */

#ifndef SP_PII_H
#define SP_PII_H

#include "spendpol.h"
#include "sp_provider.h"


typedef enum {
    SP_PII_EMAIL = 0,
    SP_PII_PHONE,
    SP_PII_SSN,
    SP_PII_CARD,
    SP_PII_IBAN,
    SP_PII_IPV4,
    SP_PII_IPV6,
    SP_PII_API_KEY,
    SP_PII_JWT,
    SP_PII_PRIVATE_KEY,
    SP_PII_DOB,
    SP_PII_COUNT
} sp_pii_type_e;

#define SP_PII_ALL         ((1u << SP_PII_COUNT) - 1)
/* not a detector: a policy pattern's span to redact, "[REDACTED:PATTERN]" */
#define SP_PII_PATTERN     SP_PII_COUNT
#define SP_PII_MAX_ENTITIES  256       /* kept per scan; more are counted */

typedef struct {
    uint32_t  type;         /* sp_pii_type_e */
    uint32_t  start;        /* byte offsets [start, end) in what was
                               scanned: the text, or the raw body */
    uint32_t  end;
} sp_pii_entity_t;

typedef struct {
    sp_pii_entity_t  entities[SP_PII_MAX_ENTITIES];  /* in order of start,
                                                        not overlapping */
    size_t           nentities;   /* kept */
    size_t           total;       /* found, kept or not */
    uint32_t         counts[SP_PII_COUNT];   /* found, per type */
    uint32_t         types;       /* bit per type found */
    int              score_milli; /* 0..1000, sp_pii_score(types) */
    size_t           scanned;     /* bytes of text scanned */
} sp_pii_result_t;


/*
 * The text a model reads, one decoded JSON string at a time, in body
 * order (the walk sp_pii_scan_body() makes; policies' patterns and the
 * hallucination score use it too). raw[i] is the body offset of the
 * first raw byte that decoded into text[i] (raw[len]: the string's
 * closing quote), so a span [a, b) of text is [raw[a], raw[b]) of the
 * body. context: 1 for text the prompt supplies as material rather than
 * as an ask (system prompts and instructions, tool results, documents),
 * 0 for user and assistant turns and for answers.
 */
typedef struct {
    const char      *text;
    size_t           len;
    const uint32_t  *raw;
    int              context;
} sp_pii_text_t;

/*
 * Visits each text of the body (answer: as sp_pii_scan_body()); a
 * visit that returns non-zero stops the walk. SP_ERROR when the body is
 * not JSON, SP_OK otherwise. The texts live until the visit returns.
 */
int sp_pii_body_text(sp_provider_e provider, int answer, const char *body,
    size_t len, int (*visit)(const sp_pii_text_t *text, void *arg),
    void *arg);

/*
 * When the whole token is a provider or cloud secret presented as a key:
 * its kind ("openai", "anthropic", "google", "aws", "github", "stripe",
 * "huggingface", "slack", "gitlab", "cohere", "mistral", ...); NULL
 * otherwise. provider is the path's provider (SP_PROVIDER_UNKNOWN when
 * none): Cohere and Mistral keys have no prefix and count only there.
 * A Spendpol key (sp_key_) is not a secret of this kind.
 */
const char *sp_pii_secret_kind(sp_provider_e provider, const char *token,
    size_t len);

/* "email" .. "dob"; NULL when out of range */
const char *sp_pii_name(sp_pii_type_e type);
/* "EMAIL" .. "DOB", "PATTERN", as in [REDACTED:TYPE] */
const char *sp_pii_label(sp_pii_type_e type);
/* by name ("card"); -1 when unknown */
int sp_pii_type(const char *name, size_t len);
/* the type's weight in the score, in thousandths */
int sp_pii_weight(sp_pii_type_e type);
/* the noisy-or of the types in the mask, in thousandths */
int sp_pii_score(uint32_t types);

/*
 * Scans len bytes of text (UTF-8, need not be NUL-terminated) for the
 * types in mask; res is reset first. Never fails: invalid UTF-8 is text
 * like any other.
 */
void sp_pii_scan_text(const char *text, size_t len, uint32_t mask,
    sp_pii_result_t *res);

/*
 * Scans what a model reads in a provider's request body (or, with
 * answer set, in its JSON answer or one SSE event's data: choices[].
 * message.content / delta.content, Anthropic content[].text and
 * text_delta, Google candidates[].content.parts[].text, Cohere text).
 * Spans are raw-body offsets covering the escaped form. SP_ERROR when
 * the body is not JSON (the caller refuses it: never fail open).
 */
int sp_pii_scan_body(sp_provider_e provider, int answer, const char *body,
    size_t len, uint32_t mask, sp_pii_result_t *res);

/*
 * Writes body with each kept entity of res whose type is in redact_mask
 * replaced by "[REDACTED:LABEL]" (res from sp_pii_scan_body() on this
 * body, so spans lie inside JSON strings and the output stays valid
 * JSON). Returns the output length, or 0 when out (outlen bytes) is too
 * small; len + 32 * res->nentities always suffices.
 */
size_t sp_pii_redact(const char *body, size_t len, const sp_pii_result_t *res,
    uint32_t redact_mask, char *out, size_t outlen);


#endif /* SP_PII_H */
