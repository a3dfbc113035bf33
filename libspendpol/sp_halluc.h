/*
 * The hallucination score: a documented heuristic, not a model. It is
 * computed on the answer (X-Spendpol-Hallucination-Score, a percentage,
 * in a header for JSON answers and a trailer for streams; and in the
 * audit row).
 *
 * When the prompt supplies context (system prompt or instructions of
 * some length, tool results, documents: the context texts of
 * sp_pii_body_text()), the score is mostly the share of the answer's
 * checkable claims that the context does not contain: numbers (with
 * their units and separators normalised), dates, quoted strings, and
 * named entities (capitalised multi-word names, not sentence starts),
 * combined with signals (finish_reason length, an answer cut short,
 * hedges). Without context the score comes from the signals alone and is
 * documented as such (result.grounded 0). docs/hallucination.md gives
 * the formula, the labelled set (tests/halluc/) and how well it
 * separates grounded from ungrounded answers.
 */

#ifndef SP_HALLUC_H
#define SP_HALLUC_H

#include "spendpol.h"
#include "sp_provider.h"


#define SP_HALLUC_TEXT_MAX  (16 * 1024)   /* of the answer, kept */

/* the answer, accumulated from a JSON answer or SSE events */
typedef struct {
    char    text[SP_HALLUC_TEXT_MAX];
    size_t  len;
    int     truncated;          /* more text came than was kept */
    int     finish_length;      /* finish reason length / max_tokens /
                                   MAX_TOKENS */
    int     finished;           /* a finish reason came at all */
} sp_halluc_answer_t;

typedef struct {
    int     pct;                /* 0..100 */
    int     grounded;           /* 1: the prompt supplied context */
    size_t  claims;             /* checkable claims in the answer */
    size_t  unsupported;        /* of them, not in the context */
    char    basis[64];          /* "context 2/9 unsupported",
                                   "signals only: finish length" */
} sp_halluc_result_t;


/* a answer reset to empty */
void sp_halluc_answer_init(sp_halluc_answer_t *a);

/*
 * Appends the text and finish reason of a whole JSON answer of the
 * provider (chat shapes of the six providers and OpenAI's Responses
 * API). SP_ERROR when it is not JSON (a is unchanged).
 */
int sp_halluc_answer_json(sp_provider_e provider, const char *json,
    size_t len, sp_halluc_answer_t *a);

/* the same for one SSE event's data (deltas of text, the finish) */
int sp_halluc_answer_event(sp_provider_e provider, const char *data,
    size_t len, sp_halluc_answer_t *a);

/*
 * Scores the answer against the request body (the one forwarded, JSON).
 * Never fails: a body it cannot read gives a signals-only score.
 */
void sp_halluc_score(sp_provider_e provider, const char *body,
    size_t body_len, const sp_halluc_answer_t *a, sp_halluc_result_t *out);

/*
 * The same with the context given as plain text (len bytes, need not be
 * NUL-terminated): grounded when len > 0, signals only otherwise. For
 * callers that hold the material themselves, the bench and the tests.
 */
void sp_halluc_score_text(const char *context, size_t len,
    const sp_halluc_answer_t *a, sp_halluc_result_t *out);


#endif /* SP_HALLUC_H */
