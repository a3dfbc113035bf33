/*
 * /compliance: the audit hash chain's check (GET /compliance/verify),
 * erasure of a subject's identifying fields (POST /compliance/erasure,
 * GET /compliance/erasures) and the organisation's retention of its
 * audit rows (GET/PUT /compliance/retention). docs/compliance.md.
 *
 * Verify recomputes what ingest wrote (ingest_load.c, sp_chain.h) from
 * the stored rows through a cursor, so a chain of millions of rows costs
 * one page of rows of memory. It takes no lock that ingest waits for:
 * the head is read first, and the cursor's snapshot, taken after, holds
 * every row up to it (a batch commits its rows and its head together);
 * the shared trim lock keeps retention from moving the chain's start
 * meanwhile (migrations/024).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controld.h"
#include "api.h"
#include "sp_chain.h"
#include "sp_id.h"


#define CD_VERIFY_FETCH       1000
#define CD_RETENTION_MAX      3650
#define CD_ERASURE_ADDR_MAX   (SP_ID_LEN - 1)   /* the journal's field */

/*
 * The chain's fields in their canonical text (sp_chain.h), as
 * sp_chain_body_digest_values() and sp_chain_subject_digest_values()
 * take them, then the chain columns.
 */
#define CD_VERIFY_COLUMNS                                                    \
    "id, org_id, (extract(epoch FROM created_at) * 1000000)::bigint,"        \
    " api_key_id, provider, requested_model, model, input_tokens,"           \
    " output_tokens, cached_tokens, cache_write_tokens, cost_nano,"          \
    " reserved_nano, saved_nano, status, cache,"                             \
    " CASE WHEN stream THEN 't' WHEN NOT stream THEN 'f' END,"               \
    " endpoint, department, project, agent_id, error_code,"                  \
    " CASE WHEN routed THEN 't' WHEN NOT routed THEN 'f' END,"               \
    " route_rule, template_id::text, template_version,"                      \
    " round(guard_score::numeric * 1000)::integer,"                          \
    " array_to_string(pii_types, ','), policy_action,"                       \
    " array_to_string(policy_ids, ','), hallucination_score,"                \
    " shadow_key_type, shadow_key_fp,"                                       \
    " client_addr, trace_id, span_id, parent_id,"                            \
    " chain_seq, prev_hash, row_hash, subject_salt, subject_digest,"         \
    " erased_at IS NOT NULL"

#define CD_VERIFY_NBODY       33
#define CD_VERIFY_NSUBJECT    4

enum {
    CD_VERIFY_SEQ = CD_VERIFY_NBODY + CD_VERIFY_NSUBJECT,
    CD_VERIFY_PREV, CD_VERIFY_ROW, CD_VERIFY_SALT, CD_VERIFY_SUBJECT,
    CD_VERIFY_ERASED
};


typedef struct {
    int64_t      rows;
    int64_t      first_seq;            /* 0: no row */
    int64_t      last_seq;
    int64_t      expect_seq;           /* the next row's, 0: any */
    uint8_t      prev[SP_CHAIN_HASH_LEN];
    int          have_prev;            /* prev is what the next row's
                                          prev_hash must be */
    json_t      *broken;               /* the first broken link */
} cd_verify_t;


static json_t *
cd_hash_json(const uint8_t *hash, size_t len)
{
    char  hex[2 * SP_CHAIN_HASH_LEN + 1];

    sp_hex_encode(hash, len, hex);

    return json_string(hex);
}


/* records the first broken link; expected and found are stolen */
static int
cd_verify_break(cd_verify_t *v, PGresult *res, int row, const char *reason,
    json_t *expected, json_t *found)
{
    v->broken = json_pack("{s:s, s:I, s:s, s:o?, s:o?}",
                          "id", PQgetvalue(res, row, 0),
                          "chain_seq", (json_int_t) strtoll(
                              PQgetvalue(res, row, CD_VERIFY_SEQ), NULL, 10),
                          "reason", reason,
                          "expected", expected, "found", found);

    return v->broken != NULL ? CD_OK : CD_ERROR;
}


/*
 * One row of the chain: its seq, its link to the previous row, its
 * subject digest (a row not erased must reproduce it from its salt) and
 * its row_hash. CD_OK either way (v->broken tells), CD_ERROR when out
 * of memory.
 */
static int
cd_verify_row(cd_verify_t *v, PGresult *res, int row)
{
    int          i;
    int64_t      seq;
    uint8_t      prev[SP_CHAIN_HASH_LEN], stored[SP_CHAIN_HASH_LEN];
    uint8_t      salt[SP_CHAIN_SALT_LEN], subject[SP_CHAIN_HASH_LEN];
    uint8_t      body[SP_CHAIN_HASH_LEN], hash[SP_CHAIN_HASH_LEN];
    uint8_t      computed[SP_CHAIN_HASH_LEN];
    const char  *values[CD_VERIFY_NBODY];

    seq = strtoll(PQgetvalue(res, row, CD_VERIFY_SEQ), NULL, 10);

    if (v->expect_seq != 0 && seq != v->expect_seq) {
        return cd_verify_break(v, res, row, "seq_gap",
                               json_integer(v->expect_seq),
                               json_integer(seq));
    }

    if (v->first_seq == 0) {
        v->first_seq = seq;
    }

    if (cd_db_bytea(res, row, CD_VERIFY_PREV, prev, sizeof(prev))
        != SP_CHAIN_HASH_LEN)
    {
        return cd_verify_break(v, res, row, "prev_hash_mismatch",
                               v->have_prev
                               ? cd_hash_json(v->prev, SP_CHAIN_HASH_LEN)
                               : NULL,
                               json_null());
    }

    if (v->have_prev && memcmp(prev, v->prev, SP_CHAIN_HASH_LEN) != 0) {
        return cd_verify_break(v, res, row, "prev_hash_mismatch",
                               cd_hash_json(v->prev, SP_CHAIN_HASH_LEN),
                               cd_hash_json(prev, SP_CHAIN_HASH_LEN));
    }

    if (cd_db_bytea(res, row, CD_VERIFY_SUBJECT, subject, sizeof(subject))
        != SP_CHAIN_HASH_LEN)
    {
        return cd_verify_break(v, res, row, "subject_digest_mismatch", NULL,
                               json_null());
    }

    if (!cd_db_bool(res, row, CD_VERIFY_ERASED)) {
        for (i = 0; i < CD_VERIFY_NSUBJECT; i++) {
            values[i] = cd_db_value(res, row, CD_VERIFY_NBODY + i);
        }

        if (cd_db_bytea(res, row, CD_VERIFY_SALT, salt, sizeof(salt))
            != SP_CHAIN_SALT_LEN)
        {
            return cd_verify_break(v, res, row, "subject_digest_mismatch",
                                   NULL, json_null());
        }

        if (sp_chain_subject_digest_values(salt, values, CD_VERIFY_NSUBJECT,
                                           computed) != SP_OK)
        {
            return CD_ERROR;
        }

        if (memcmp(computed, subject, SP_CHAIN_HASH_LEN) != 0) {
            return cd_verify_break(v, res, row, "subject_digest_mismatch",
                                   cd_hash_json(computed, SP_CHAIN_HASH_LEN),
                                   cd_hash_json(subject, SP_CHAIN_HASH_LEN));
        }
    }

    for (i = 0; i < CD_VERIFY_NBODY; i++) {
        values[i] = cd_db_value(res, row, i);
    }

    if (sp_chain_body_digest_values(values, CD_VERIFY_NBODY, body) != SP_OK)
    {
        return CD_ERROR;
    }

    sp_chain_link(prev, body, subject, hash);

    if (cd_db_bytea(res, row, CD_VERIFY_ROW, stored, sizeof(stored))
        != SP_CHAIN_HASH_LEN || memcmp(stored, hash, SP_CHAIN_HASH_LEN) != 0)
    {
        return cd_verify_break(v, res, row, "row_hash_mismatch",
                               cd_hash_json(hash, SP_CHAIN_HASH_LEN),
                               PQgetisnull(res, row, CD_VERIFY_ROW)
                               ? json_null()
                               : cd_hash_json(stored, SP_CHAIN_HASH_LEN));
    }

    memcpy(v->prev, hash, SP_CHAIN_HASH_LEN);
    v->have_prev = 1;
    v->expect_seq = seq + 1;
    v->last_seq = seq;
    v->rows++;

    return CD_OK;
}


/* walks the rows first..last through a cursor; CD_ERROR: answered */
static int
cd_verify_walk(cd_request_t *r, cd_db_conn_t *c, cd_verify_t *v,
    const char *first, const char *last)
{
    int          i, n;
    PGresult    *res;
    const char  *params[3];

    params[0] = r->org_id;
    params[1] = first;
    params[2] = last;

    if (cd_db_command(c, "DECLARE cd_verify NO SCROLL CURSOR FOR"
                         " SELECT " CD_VERIFY_COLUMNS " FROM audit_logs"
                         " WHERE org_id = $1 AND chain_seq >= $2::bigint"
                         " AND chain_seq <= $3::bigint"
                         " ORDER BY chain_seq", 3, params) != CD_OK)
    {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    for ( ;; ) {
        res = cd_db_exec(c, "FETCH " CD_STRINGIFY(CD_VERIFY_FETCH)
                            " FROM cd_verify", 0, NULL);
        if (res == NULL) {
            cd_respond_statement_error(r, c);
            return CD_ERROR;
        }

        n = PQntuples(res);

        for (i = 0; i < n && v->broken == NULL; i++) {
            if (cd_verify_row(v, res, i) != CD_OK) {
                PQclear(res);
                cd_respond_db_error(r);
                return CD_ERROR;
            }
        }

        PQclear(res);

        if (n < CD_VERIFY_FETCH || v->broken != NULL) {
            return CD_OK;
        }
    }
}


void
cd_api_compliance_verify(cd_request_t *r)
{
    int64_t        head_seq, anchor_seq, first, last, unchained;
    char           from[CD_INT_TEXT], to[CD_INT_TEXT];
    char           first_text[CD_INT_TEXT], last_text[CD_INT_TEXT];
    uint8_t        head_hash[SP_CHAIN_HASH_LEN];
    json_t        *json;
    PGresult      *res;
    const char    *params[3];
    cd_verify_t    v;
    cd_db_conn_t  *c;

    if (cd_query_time_text(r, "from", from, sizeof(from)) != CD_OK
        || cd_query_time_text(r, "to", to, sizeof(to)) != CD_OK)
    {
        return;
    }

    if (from[0] && to[0] && strtoll(from, NULL, 10) > strtoll(to, NULL, 10)) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_range",
                         "from", "from must not be after to");
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    memset(&v, 0, sizeof(v));
    memset(head_hash, 0, sizeof(head_hash));
    head_seq = 0;
    anchor_seq = 0;

    params[0] = r->org_id;

    /* held to the end of the transaction: retention waits, ingest not */
    if (cd_db_command(c, "SELECT spendpol_chain_trim_lock($1, true)", 1,
                      params)
        != CD_OK)
    {
        goto failed;
    }

    res = cd_db_exec(c, "SELECT seq, hash, anchor_seq, anchor_hash"
                        " FROM audit_chain_heads WHERE org_id = $1",
                     1, params);
    if (res == NULL) {
        goto failed;
    }

    if (PQntuples(res) == 1) {
        head_seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        anchor_seq = strtoll(PQgetvalue(res, 0, 2), NULL, 10);

        if (cd_db_bytea(res, 0, 1, head_hash, sizeof(head_hash))
            != SP_CHAIN_HASH_LEN)
        {
            PQclear(res);
            goto failed;
        }

        /* the whole chain starts after the anchor (retention) */
        if (!PQgetisnull(res, 0, 3)
            && cd_db_bytea(res, 0, 3, v.prev, sizeof(v.prev))
               != SP_CHAIN_HASH_LEN)
        {
            PQclear(res);
            goto failed;
        }
    }

    PQclear(res);

    params[1] = from[0] ? from : NULL;
    params[2] = to[0] ? to : NULL;

    /*
     * The range is of request times; the chain is in ingest order. The
     * rows verified are the chain from the range's lowest seq to its
     * highest, so a row ingested in between is never skipped.
     */
    if (!from[0] && !to[0]) {
        /* the whole chain: only the unchained rows to count, by index */
        res = cd_db_exec(c, "SELECT 1, 1, count(*) FROM audit_logs"
                            " WHERE org_id = $1 AND chain_seq IS NULL",
                         1, params);

    } else {
        res = cd_db_exec(c, "SELECT min(chain_seq), max(chain_seq),"
                            " count(*) FILTER (WHERE chain_seq IS NULL)"
                            " FROM audit_logs WHERE org_id = $1"
                            " AND ($2::bigint IS NULL OR created_at >="
                            " 'epoch'::timestamptz"
                            " + $2::bigint * interval '1 microsecond')"
                            " AND ($3::bigint IS NULL OR created_at <"
                            " 'epoch'::timestamptz"
                            " + $3::bigint * interval '1 microsecond')",
                         3, params);
    }

    if (res == NULL) {
        goto failed;
    }

    unchained = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    first = from[0] ? strtoll(PQgetvalue(res, 0, 0), NULL, 10)
                    : anchor_seq + 1;
    last = to[0] ? strtoll(PQgetvalue(res, 0, 1), NULL, 10) : head_seq;

    if (PQgetisnull(res, 0, 0)) {
        /* no chained row in the range: nothing to walk */
        first = from[0] || to[0] ? 1 : first;
        last = from[0] || to[0] ? 0 : last;
    }

    PQclear(res);

    if (from[0]) {
        /* a range's first row links to its predecessor when there is one,
           else its own prev_hash is the anchor */
        v.expect_seq = first;
        v.have_prev = 0;

        snprintf(first_text, sizeof(first_text), "%lld",
                 (long long) (first - 1));
        params[1] = first_text;

        res = cd_db_exec(c, "SELECT row_hash FROM audit_logs"
                            " WHERE org_id = $1 AND chain_seq = $2::bigint",
                         2, params);
        if (res == NULL) {
            goto failed;
        }

        if (PQntuples(res) == 1
            && cd_db_bytea(res, 0, 0, v.prev, sizeof(v.prev))
               == SP_CHAIN_HASH_LEN)
        {
            v.have_prev = 1;
        }

        PQclear(res);

    } else {
        v.expect_seq = anchor_seq + 1;
        v.have_prev = 1;                /* the anchor, or 32 zero bytes */
    }

    if (first <= last) {
        snprintf(first_text, sizeof(first_text), "%lld", (long long) first);
        snprintf(last_text, sizeof(last_text), "%lld", (long long) last);

        if (cd_verify_walk(r, c, &v, first_text, last_text) != CD_OK) {
            json_decref(v.broken);
            cd_request_end(r, c);
            return;
        }
    }

    /* rows missing at the end (the head, or the range, names them): no
       row where one was expected */
    if (v.broken == NULL && first <= last && v.last_seq != last) {
        v.broken = json_pack("{s:n, s:I, s:s, s:I, s:n}", "id", "chain_seq",
                             (json_int_t) (v.rows ? v.last_seq + 1 : first),
                             "reason", "seq_gap", "expected",
                             (json_int_t) (v.rows ? v.last_seq + 1 : first),
                             "found");
        if (v.broken == NULL) {
            goto failed;
        }
    }

    /* the head itself must be the last row's hash: a forged head would
       let the next batch link to it */
    if (v.broken == NULL && !to[0] && v.rows > 0 && v.last_seq == head_seq
        && memcmp(v.prev, head_hash, SP_CHAIN_HASH_LEN) != 0)
    {
        v.broken = json_pack("{s:n, s:I, s:s, s:o, s:o}", "id", "chain_seq",
                             (json_int_t) head_seq, "reason",
                             "row_hash_mismatch", "expected",
                             cd_hash_json(v.prev, SP_CHAIN_HASH_LEN),
                             "found",
                             cd_hash_json(head_hash, SP_CHAIN_HASH_LEN));
        if (v.broken == NULL) {
            goto failed;
        }
    }

    cd_request_end(r, c);

    json = json_pack("{s:b, s:I, s:o, s:o, s:{s:I, s:o}, s:I, s:o}",
                     "verified", v.broken == NULL,
                     "rows", (json_int_t) v.rows,
                     "first_seq", v.first_seq ? json_integer(v.first_seq)
                                              : json_null(),
                     "last_seq", v.rows ? json_integer(v.last_seq)
                                        : json_null(),
                     "head", "seq", (json_int_t) head_seq,
                     "hash", cd_hash_json(head_hash, SP_CHAIN_HASH_LEN),
                     "unchained_rows", (json_int_t) unchained,
                     "first_broken", v.broken ? v.broken : json_null());

    if (json == NULL) {
        cd_respond_db_error(r);
        return;
    }

    cd_respond(r, 200, json);

    return;

failed:

    json_decref(v.broken);
    cd_respond_statement_error(r, c);
    cd_request_end(r, c);
}


static const char *const  cd_erasure_fields[] = {
    "api_key_id", "client_addr", NULL
};


void
cd_api_compliance_erase(cd_request_t *r)
{
    json_t            *body, *json;
    PGresult          *res, *erasure;
    const char        *key_id, *addr, *params[3];
    cd_db_conn_t      *c;
    cd_field_error_t   err;

    body = cd_request_json(r, cd_erasure_fields);
    if (body == NULL) {
        return;
    }

    if (cd_json_string(r, body, "api_key_id", 0, 1, CD_ID_MAX - 1, &key_id)
        != CD_OK
        || cd_json_string(r, body, "client_addr", 0, 1, CD_ERASURE_ADDR_MAX,
                          &addr) != CD_OK)
    {
        json_decref(body);
        return;
    }

    if (key_id == NULL && addr == NULL) {
        cd_respond_error(r, 422, "invalid_request_error", "missing_field",
                         "api_key_id", "give the subject to erase: "
                         "api_key_id (a key's id) or client_addr");
        json_decref(body);
        return;
    }

    if (key_id != NULL && addr != NULL) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         "client_addr", "give one of api_key_id and "
                         "client_addr, not both: one erasure per subject");
        json_decref(body);
        return;
    }

    if (key_id != NULL && cd_id_field(key_id, SP_ID_KEY, "api_key_id", &err)
                          != CD_OK)
    {
        cd_respond_field_error(r, &err);
        json_decref(body);
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        json_decref(body);
        return;
    }

    if (key_id != NULL) {
        params[0] = key_id;
        res = cd_db_exec(c, "SELECT 1 FROM api_keys WHERE id = $1",
                         1, params);

        if (cd_request_found(r, c, res, "api_key_not_found", "api_key_id",
                             "no API key %s in this organisation", key_id)
            != CD_OK)
        {
            PQclear(res);
            goto done;
        }

        PQclear(res);
    }

    params[0] = r->key_id;
    params[1] = key_id;
    params[2] = addr;

    res = cd_db_exec(c, "SELECT erasure_id FROM"
                        " spendpol_audit_erase($1, $2, $3)", 3, params);

    if (res == NULL || PQntuples(res) != 1) {
        PQclear(res);
        cd_respond_statement_error(r, c);
        goto done;
    }

    /* a statement of its own: the function's INSERT is after the
       snapshot of the statement that called it */
    params[0] = PQgetvalue(res, 0, 0);
    erasure = cd_db_exec(c, "SELECT id, rows, selector, fingerprint, "
                            CD_SQL_TS("created_at")
                            " FROM audit_erasures WHERE id = $1",
                         1, params);
    PQclear(res);
    res = erasure;

    if (res == NULL || PQntuples(res) != 1) {
        PQclear(res);
        cd_respond_statement_error(r, c);
        goto done;
    }

    json = json_pack("{s:s, s:s, s:s, s:I, s:s}",
                     "id", PQgetvalue(res, 0, 0),
                     "selector", PQgetvalue(res, 0, 2),
                     "fingerprint", PQgetvalue(res, 0, 3),
                     "rows", (json_int_t) strtoll(PQgetvalue(res, 0, 1),
                                                  NULL, 10),
                     "created_at", PQgetvalue(res, 0, 4));
    PQclear(res);

    if (json == NULL) {
        cd_respond_db_error(r);
        goto done;
    }

    if (cd_request_commit_respond(r, c, 0, 200, json) == CD_OK) {
        /* never the value erased */
        cd_log_info("compliance", "erasure by %s org=%s", r->key_id,
                    r->org_id);
    }

done:

    json_decref(body);
    cd_request_end(r, c);
}


static json_t *
cd_erasure_json(PGresult *res, int row)
{
    json_t  *obj;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    if (cd_json_set_column(obj, "id", res, row, 0)
        || cd_json_set_column(obj, "admin_key_id", res, row, 1)
        || cd_json_set_column(obj, "selector", res, row, 2)
        || cd_json_set_column(obj, "fingerprint", res, row, 3)
        || json_object_set_new(obj, "rows", json_integer((json_int_t)
               strtoll(PQgetvalue(res, row, 4), NULL, 10)))
        || cd_json_set_column(obj, "created_at", res, row, 5))
    {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


void
cd_api_compliance_erasures(cd_request_t *r)
{
    static const cd_page_t  page = {
        .sql = CD_PAGE_SQL("id, admin_key_id, selector, fingerprint, rows, "
                           CD_SQL_TS("created_at") ", "
                           CD_SQL_US("created_at"),
                           "audit_erasures", ""),
        .default_limit = 50,
        .id_column = 0,
        .created_us_column = 6,
        .row_json = cd_erasure_json,
    };

    cd_page_respond(r, &page);
}


static json_t *
cd_retention_json(PGresult *res, int row)
{
    return json_pack("{s:o}", "audit_retention_days",
                     PQgetisnull(res, row, 0)
                     ? json_null()
                     : json_integer((json_int_t) strtoll(
                           PQgetvalue(res, row, 0), NULL, 10)));
}


void
cd_api_compliance_retention_get(cd_request_t *r)
{
    json_t        *json;
    PGresult      *res;
    cd_db_conn_t  *c;

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    res = cd_db_exec(c, "SELECT audit_retention_days FROM orgs", 0, NULL);

    if (res == NULL || PQntuples(res) != 1) {
        PQclear(res);
        cd_respond_statement_error(r, c);
        cd_request_end(r, c);
        return;
    }

    json = cd_retention_json(res, 0);
    PQclear(res);
    cd_request_end(r, c);

    if (json == NULL) {
        cd_respond_db_error(r);
        return;
    }

    cd_respond(r, 200, json);
}


static const char *const  cd_retention_fields[] = {
    "audit_retention_days", NULL
};


void
cd_api_compliance_retention_put(cd_request_t *r)
{
    int            keep_all;
    char           days[CD_INT_TEXT];
    json_t        *body, *value, *json;
    PGresult      *res;
    const char    *params[1];
    json_int_t     n;
    cd_db_conn_t  *c;

    body = cd_request_json(r, cd_retention_fields);
    if (body == NULL) {
        return;
    }

    value = json_object_get(body, "audit_retention_days");

    if (value == NULL) {
        cd_respond_error(r, 422, "invalid_request_error", "missing_field",
                         "audit_retention_days", "audit_retention_days is "
                         "required: days of audit rows to keep, 1 to %d, "
                         "or null to keep them all", CD_RETENTION_MAX);
        json_decref(body);
        return;
    }

    if (!json_is_null(value) && !json_is_integer(value)) {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_type",
                         "audit_retention_days", "audit_retention_days must "
                         "be an integer (days) or null");
        json_decref(body);
        return;
    }

    /* null keeps every row: n 0 */
    n = json_is_integer(value) ? json_integer_value(value) : 0;
    keep_all = json_is_null(value);
    json_decref(body);

    if (!keep_all && (n < 1 || n > CD_RETENTION_MAX)) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         "audit_retention_days", "audit_retention_days must "
                         "be 1 to %d days, or null to keep every row",
                         CD_RETENTION_MAX);
        return;
    }

    snprintf(days, sizeof(days), "%lld", (long long) n);
    params[0] = n > 0 ? days : NULL;

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    res = cd_db_exec(c, "UPDATE orgs SET audit_retention_days = $1::integer,"
                        " updated_at = clock_timestamp()"
                        " RETURNING audit_retention_days", 1, params);

    if (res == NULL || PQntuples(res) != 1) {
        PQclear(res);
        cd_respond_statement_error(r, c);
        cd_request_end(r, c);
        return;
    }

    json = cd_retention_json(res, 0);
    PQclear(res);

    /* applied at once; the hourly job (ingest_load.c) keeps it so */
    res = cd_db_exec(c, "SELECT spendpol_audit_retain_own()", 0, NULL);

    if (res == NULL || json == NULL) {
        PQclear(res);
        json_decref(json);
        cd_respond_statement_error(r, c);
        cd_request_end(r, c);
        return;
    }

    n = (json_int_t) strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);

    if (json_object_set_new(json, "deleted_rows", json_integer(n)) != 0) {
        json_decref(json);
        cd_respond_db_error(r);
        cd_request_end(r, c);
        return;
    }

    if (cd_request_commit_respond(r, c, 0, 200, json) == CD_OK) {
        cd_log_info("compliance", "audit retention of %s set by %s: %s "
                    "(%lld rows deleted)", r->org_id, r->key_id,
                    params[0] ? params[0] : "none", (long long) n);
    }
    cd_request_end(r, c);
}
