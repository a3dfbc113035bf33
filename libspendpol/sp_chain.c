/*
 * The audit hash chain's digests (sp_chain.h, docs/compliance.md): the
 * canonical text of a row's fields, hashed with SHA-256.
 *
 * Both entry points build the same text: the record's fields are first
 * turned into the canonical strings the database gives back, so ingest
 * (from the journal record) and verify (from the stored row) cannot
 * disagree on a field's form.
 */

#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "spendpol.h"
#include "sp_chain.h"


#define SP_CHAIN_TEXT_STACK  16384
#define SP_CHAIN_NUM_LEN     24          /* an int64 in decimal, and NUL */
#define SP_CHAIN_UUID_LEN    37

static const char  *sp_chain_body_names[] = { SP_CHAIN_BODY_FIELDS };
static const char  *sp_chain_subject_names[] = { SP_CHAIN_SUBJECT_FIELDS };

#define SP_CHAIN_NBODY                                                       \
    (sizeof(sp_chain_body_names) / sizeof(sp_chain_body_names[0]))
#define SP_CHAIN_NSUBJECT                                                    \
    (sizeof(sp_chain_subject_names) / sizeof(sp_chain_subject_names[0]))

/*
 * A record's canonical text always fits the stack buffer: every string
 * is shorter than its field of the record, a number than
 * SP_CHAIN_NUM_LEN, and each field adds its name, '=' and '\n'.
 */
_Static_assert(sizeof(sp_journal_record_t) + SP_CHAIN_SALT_LEN
               + 33 * (SP_CHAIN_NUM_LEN + 24) < SP_CHAIN_TEXT_STACK,
               "a journal record's canonical text fits on the stack");


/*
 * SHA-256 of prefix (plen bytes) followed by "name=value\n" for each
 * field; NULL values are empty. The text is built whole and hashed once:
 * the one-shot SHA256() is the API OpenSSL 3 keeps undeprecated, and a
 * few hundred bytes copy faster than a digest context is allocated.
 */
static int
sp_chain_digest(const uint8_t *prefix, size_t plen, const char **names,
    const char *const *values, size_t n, uint8_t out[SP_CHAIN_HASH_LEN])
{
    char     stack[SP_CHAIN_TEXT_STACK], *text;
    size_t   i, len, nl, vl, total;

    total = plen;

    for (i = 0; i < n; i++) {
        total += strlen(names[i]) + 2
                 + (values[i] != NULL ? strlen(values[i]) : 0);
    }

    text = stack;

    if (total > sizeof(stack)) {
        /* only a stored row far larger than ingest writes gets here */
        text = malloc(total);
        if (text == NULL) {
            return SP_ERROR;
        }
    }

    if (plen > 0) {
        memcpy(text, prefix, plen);
    }

    len = plen;

    for (i = 0; i < n; i++) {
        nl = strlen(names[i]);
        memcpy(text + len, names[i], nl);
        len += nl;
        text[len++] = '=';

        if (values[i] != NULL) {
            vl = strlen(values[i]);
            memcpy(text + len, values[i], vl);
            len += vl;
        }

        text[len++] = '\n';
    }

    SHA256((const unsigned char *) text, len, out);

    if (text != stack) {
        free(text);
    }

    return SP_OK;
}


int
sp_chain_body_digest_values(const char *const *values, size_t nvalues,
    uint8_t out[SP_CHAIN_HASH_LEN])
{
    if (nvalues != SP_CHAIN_NBODY) {
        return SP_ERROR;
    }

    return sp_chain_digest(NULL, 0, sp_chain_body_names, values, nvalues,
                           out);
}


int
sp_chain_subject_digest_values(const uint8_t salt[SP_CHAIN_SALT_LEN],
    const char *const *values, size_t nvalues,
    uint8_t out[SP_CHAIN_HASH_LEN])
{
    if (nvalues != SP_CHAIN_NSUBJECT) {
        return SP_ERROR;
    }

    return sp_chain_digest(salt, SP_CHAIN_SALT_LEN, sp_chain_subject_names,
                           values, nvalues, out);
}


/* decimal by hand: thirteen snprintf() calls a row cost more than the
   row's SHA-256 on a CPU with SHA extensions */
static const char *
sp_chain_int(char *buf, int64_t v)
{
    char      tmp[SP_CHAIN_NUM_LEN];
    size_t    n, i;
    uint64_t  u;

    u = v < 0 ? (uint64_t) 0 - (uint64_t) v : (uint64_t) v;
    n = 0;

    do {
        tmp[n++] = (char) ('0' + u % 10);
        u /= 10;
    } while (u != 0);

    i = 0;

    if (v < 0) {
        buf[i++] = '-';
    }

    while (n > 0) {
        buf[i++] = tmp[--n];
    }

    buf[i] = '\0';

    return buf;
}


/*
 * The uuid as PostgreSQL prints it (lowercase, hyphenated), or NULL when
 * s is none: ingest stores such a template_id as NULL (cd_copy_uuid).
 */
static const char *
sp_chain_uuid(char *buf, const char *s)
{
    size_t  i;

    for (i = 0; i < SP_CHAIN_UUID_LEN - 1; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return NULL;
            }

            buf[i] = '-';
            continue;
        }

        if (sp_hex_digit((unsigned char) s[i]) < 0) {
            return NULL;
        }

        buf[i] = (char) (s[i] | ((s[i] >= 'A' && s[i] <= 'F') ? 0x20 : 0));
    }

    if (s[i] != '\0') {
        return NULL;
    }

    buf[i] = '\0';

    return buf;
}


void
sp_chain_body_digest(const sp_journal_record_t *rec,
    uint8_t out[SP_CHAIN_HASH_LEN])
{
    char         num[13][SP_CHAIN_NUM_LEN], uuid[SP_CHAIN_UUID_LEN];
    const char  *v[SP_CHAIN_NBODY];

    /* in the order of SP_CHAIN_BODY_FIELDS; the columns as ingest stores
       them (ingest_load.c, cd_ingest_copy_row) */
    v[0] = rec->id;
    v[1] = rec->org_id;
    v[2] = sp_chain_int(num[0], rec->ts_ms * 1000);
    v[3] = rec->api_key_id;
    v[4] = rec->provider;
    v[5] = rec->requested_model;
    v[6] = rec->model;
    v[7] = sp_chain_int(num[1], rec->input_tokens);
    v[8] = sp_chain_int(num[2], rec->output_tokens);
    v[9] = sp_chain_int(num[3], rec->cached_tokens);
    v[10] = sp_chain_int(num[4], rec->cache_write_tokens);
    v[11] = sp_chain_int(num[5], rec->cost_nano);
    v[12] = sp_chain_int(num[6], rec->reserved_nano);
    v[13] = sp_chain_int(num[7], rec->saved_nano);
    v[14] = sp_chain_int(num[8], rec->status);
    v[15] = rec->cache;
    v[16] = rec->stream ? "t" : "f";
    v[17] = rec->endpoint;
    v[18] = rec->department;
    v[19] = rec->project;
    v[20] = rec->agent_id;
    v[21] = rec->error_code;
    v[22] = rec->routed ? "t" : "f";
    v[23] = rec->route_rule;
    v[24] = rec->template_id[0] ? sp_chain_uuid(uuid, rec->template_id)
                                : NULL;
    v[25] = rec->template_version > 0
            ? sp_chain_int(num[9], rec->template_version) : NULL;
    v[26] = sp_chain_int(num[10], rec->guard_score_milli);
    v[27] = rec->pii_types;
    v[28] = rec->policy_action;
    v[29] = rec->policy_ids;
    v[30] = rec->hallucination_pct >= 0
            ? sp_chain_int(num[11], rec->hallucination_pct) : NULL;
    v[31] = rec->shadow_key_type;
    v[32] = rec->shadow_key_fp;

    /* bounded by the record's arrays: the stack buffer always holds it */
    (void) sp_chain_digest(NULL, 0, sp_chain_body_names, v, SP_CHAIN_NBODY,
                           out);
}


void
sp_chain_subject_digest(const sp_journal_record_t *rec,
    const uint8_t salt[SP_CHAIN_SALT_LEN], uint8_t out[SP_CHAIN_HASH_LEN])
{
    const char  *v[SP_CHAIN_NSUBJECT];

    v[0] = rec->client_addr;
    v[1] = rec->trace_id;
    v[2] = rec->span_id;
    v[3] = rec->parent_id;

    (void) sp_chain_digest(salt, SP_CHAIN_SALT_LEN, sp_chain_subject_names,
                           v, SP_CHAIN_NSUBJECT, out);
}


void
sp_chain_link(const uint8_t prev[SP_CHAIN_HASH_LEN],
    const uint8_t body[SP_CHAIN_HASH_LEN],
    const uint8_t subject[SP_CHAIN_HASH_LEN], uint8_t out[SP_CHAIN_HASH_LEN])
{
    uint8_t  buf[3 * SP_CHAIN_HASH_LEN];

    memcpy(buf, prev, SP_CHAIN_HASH_LEN);
    memcpy(buf + SP_CHAIN_HASH_LEN, body, SP_CHAIN_HASH_LEN);
    memcpy(buf + 2 * SP_CHAIN_HASH_LEN, subject, SP_CHAIN_HASH_LEN);

    SHA256(buf, sizeof(buf), out);
}
