/*
 * The audit hash chain (issue 15, docs/compliance.md): each audit row's
 * row_hash covers the previous row of its organisation, so a changed,
 * removed or inserted row breaks every later link. Computed once here
 * and used by controld's ingest (ingest_load.c), GET /compliance/verify
 * (api_compliance.c) and, re-implemented from this description,
 * tools/spendpol-audit-verify, the auditor's offline check of an export.
 *
 *   row_hash       = SHA-256(prev_hash[32] || body_digest[32]
 *                            || subject_digest[32])
 *   body_digest    = SHA-256(canonical text of the body fields)
 *   subject_digest = SHA-256(subject_salt[16] || canonical text of the
 *                            subject fields)
 *
 * Canonical text: for each field, in the order of SP_CHAIN_BODY_FIELDS
 * (or SP_CHAIN_SUBJECT_FIELDS), "name=value\n", where value is
 *   text           its bytes as stored; NULL and "" are both empty
 *                  (ingest stores "" as NULL)
 *   integer        decimal, '-' for negatives; NULL is empty
 *   boolean        "t" or "f"
 *   timestamp      microseconds since 1970-01-01 UTC, decimal
 *   guard_score    thousandths, decimal (0..1000)
 *   text[]         the elements joined by ',' (elements never hold ',')
 *   uuid           lowercase, hyphenated; NULL is empty
 *
 * Erasure clears the subject fields and subject_salt and keeps
 * subject_digest: a row with erased_at set is verified with its stored
 * subject_digest; any other row must reproduce it from its salt.
 */

#ifndef SP_CHAIN_H
#define SP_CHAIN_H

#include "spendpol.h"
#include "sp_journal.h"


#define SP_CHAIN_HASH_LEN  32
#define SP_CHAIN_SALT_LEN  16

/* the audit row's columns the body digest covers, in order */
#define SP_CHAIN_BODY_FIELDS                                                 \
    "id", "org_id", "created_at", "api_key_id", "provider",                  \
    "requested_model", "model", "input_tokens", "output_tokens",             \
    "cached_tokens", "cache_write_tokens", "cost_nano", "reserved_nano",     \
    "saved_nano", "status", "cache", "stream", "endpoint", "department",     \
    "project", "agent_id", "error_code", "routed", "route_rule",             \
    "template_id", "template_version", "guard_score", "pii_types",           \
    "policy_action", "policy_ids", "hallucination_score", "shadow_key_type", \
    "shadow_key_fp"

#define SP_CHAIN_SUBJECT_FIELDS                                              \
    "client_addr", "trace_id", "span_id", "parent_id"


/* the two digests of a journal record as ingest will store it */
void sp_chain_body_digest(const sp_journal_record_t *rec,
    uint8_t out[SP_CHAIN_HASH_LEN]);
void sp_chain_subject_digest(const sp_journal_record_t *rec,
    const uint8_t salt[SP_CHAIN_SALT_LEN], uint8_t out[SP_CHAIN_HASH_LEN]);

/*
 * The same digests from the fields' canonical values as strings (NULL for
 * an SQL NULL), in the order of the field lists above: verify reads them
 * back from the database with this. nvalues must equal the list's length.
 */
int sp_chain_body_digest_values(const char *const *values, size_t nvalues,
    uint8_t out[SP_CHAIN_HASH_LEN]);
int sp_chain_subject_digest_values(const uint8_t salt[SP_CHAIN_SALT_LEN],
    const char *const *values, size_t nvalues,
    uint8_t out[SP_CHAIN_HASH_LEN]);

void sp_chain_link(const uint8_t prev[SP_CHAIN_HASH_LEN],
    const uint8_t body[SP_CHAIN_HASH_LEN],
    const uint8_t subject[SP_CHAIN_HASH_LEN], uint8_t out[SP_CHAIN_HASH_LEN]);

#endif /* SP_CHAIN_H */
