/*
 * The journal line parser as it was before it read the scanner's tape
 * (libspendpol/sp_journal.c at 4c13498): a jansson tree, members read
 * from it. Kept as the oracle the new parser must agree with, field for
 * field, on every decision and every error text (tests/unit/
 * test_lib_journal.c and fuzz_journal.c). Not to be changed, but for
 * members added to the line since, read the same jansson way (issue 13:
 * routed .. template_version; issue 14: guard_score_milli .. client_addr).
 */

#ifndef FUZZ_JOURNAL_ORACLE_H
#define FUZZ_JOURNAL_ORACLE_H

#include <limits.h>
#include <string.h>

#include <jansson.h>

#include "sp_journal.h"


static int
oracle_journal_get_str(json_t *obj, const char *name, char *dst, size_t dstlen,
    int required, char *err, size_t errlen)
{
    json_t  *v;

    v = json_object_get(obj, name);

    if (v == NULL || json_is_null(v)) {
        dst[0] = '\0';

        if (required) {
            sp_errorf(err, errlen, "field \"%s\" is missing", name);
            return SP_ERROR;
        }

        return SP_OK;
    }

    if (!json_is_string(v)) {
        sp_errorf(err, errlen, "field \"%s\" must be a string",
                          name);
        return SP_ERROR;
    }

    sp_field_copy(dst, dstlen, json_string_value(v), json_string_length(v));

    return SP_OK;
}


static int
oracle_journal_get_int(json_t *obj, const char *name, int64_t *dst, char *err,
    size_t errlen)
{
    json_t  *v;

    v = json_object_get(obj, name);

    if (v == NULL || json_is_null(v)) {
        *dst = 0;
        return SP_OK;
    }

    if (!json_is_integer(v)) {
        sp_errorf(err, errlen, "field \"%s\" must be an integer",
                          name);
        return SP_ERROR;
    }

    *dst = (int64_t) json_integer_value(v);

    return SP_OK;
}


#define ORACLE_GET_STR(name, required)                                        \
    if (oracle_journal_get_str(root, #name, rec->name, sizeof(rec->name),     \
                           required, err, errlen) != SP_OK)                   \
    {                                                                         \
        goto failed;                                                          \
    }

#define ORACLE_GET_INT(name)                                                  \
    if (oracle_journal_get_int(root, #name, &rec->name, err, errlen)           \
        != SP_OK)                                                             \
    {                                                                         \
        goto failed;                                                          \
    }


static int
oracle_journal_parse(const char *line, size_t len, sp_journal_record_t *rec,
    char *err, size_t errlen)
{
    json_t        *root, *v;
    json_error_t   jerr;
    int64_t        status, attempts;

    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
        len--;
    }

    memset(rec, 0, sizeof(sp_journal_record_t));

    root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        sp_errorf(err, errlen, "not JSON: %s at column %d",
                          jerr.text, jerr.column);
        return SP_ERROR;
    }

    if (!json_is_object(root)) {
        sp_errorf(err, errlen, "not a JSON object");
        goto failed;
    }

    v = json_object_get(root, "v");

    if (!json_is_integer(v) || json_integer_value(v) != SP_JOURNAL_VERSION) {
        sp_errorf(err, errlen, "field \"v\" must be %d",
                          SP_JOURNAL_VERSION);
        goto failed;
    }

    ORACLE_GET_STR(id, 1);
    ORACLE_GET_INT(ts_ms);
    ORACLE_GET_STR(org_id, 1);
    ORACLE_GET_STR(api_key_id, 0);
    ORACLE_GET_STR(provider, 0);
    ORACLE_GET_STR(requested_model, 0);
    ORACLE_GET_STR(model, 0);
    ORACLE_GET_INT(input_tokens);
    ORACLE_GET_INT(output_tokens);
    ORACLE_GET_INT(cached_tokens);
    ORACLE_GET_INT(cache_write_tokens);
    ORACLE_GET_INT(cost_nano);
    ORACLE_GET_STR(cache, 0);
    ORACLE_GET_INT(saved_nano);
    ORACLE_GET_INT(latency_ms);
    ORACLE_GET_INT(gateway_us);
    ORACLE_GET_STR(department, 0);
    ORACLE_GET_STR(project, 0);
    ORACLE_GET_STR(agent_id, 0);
    ORACLE_GET_STR(trace_id, 0);
    ORACLE_GET_STR(span_id, 0);
    ORACLE_GET_STR(parent_id, 0);
    ORACLE_GET_STR(warnings, 0);
    ORACLE_GET_STR(error_code, 0);
    ORACLE_GET_INT(epoch);
    ORACLE_GET_INT(reserved_nano);
    ORACLE_GET_STR(endpoint, 0);

    v = json_object_get(root, "routed");

    if (v != NULL && !json_is_null(v) && !json_is_boolean(v)) {
        sp_errorf(err, errlen, "field \"routed\" must be a boolean");
        goto failed;
    }

    rec->routed = json_is_true(v);
    ORACLE_GET_STR(route_rule, 0);

    if (oracle_journal_get_int(root, "attempts", &attempts, err, errlen)
        != SP_OK)
    {
        goto failed;
    }

    if (attempts < INT_MIN || attempts > INT_MAX) {
        sp_errorf(err, errlen, "field \"attempts\" must be 0..8");
        goto failed;
    }

    rec->attempts = attempts == 1 ? 0 : (int) attempts;
    ORACLE_GET_STR(attempt_log, 0);
    ORACLE_GET_STR(route_note, 0);
    ORACLE_GET_STR(template_id, 0);
    ORACLE_GET_INT(template_version);

    if (oracle_journal_get_int(root, "guard_score_milli", &attempts, err,
                               errlen)
        != SP_OK)
    {
        goto failed;
    }

    if (attempts < INT_MIN || attempts > INT_MAX) {
        sp_errorf(err, errlen, "field \"guard_score_milli\" must be 0..1000");
        goto failed;
    }

    rec->guard_score_milli = (int) attempts;
    ORACLE_GET_STR(pii_types, 0);
    ORACLE_GET_STR(policy_action, 0);
    ORACLE_GET_STR(policy_ids, 0);
    ORACLE_GET_STR(policy_warnings, 0);

    v = json_object_get(root, "hallucination_pct");

    if (v == NULL || json_is_null(v)) {
        rec->hallucination_pct = -1;

    } else {
        if (oracle_journal_get_int(root, "hallucination_pct", &attempts,
                                   err, errlen)
            != SP_OK)
        {
            goto failed;
        }

        if (attempts < INT_MIN || attempts > INT_MAX) {
            sp_errorf(err, errlen, "field \"hallucination_pct\" must be "
                      "-1..100");
            goto failed;
        }

        rec->hallucination_pct = (int) attempts;
    }

    ORACLE_GET_STR(shadow_key_type, 0);
    ORACLE_GET_STR(shadow_key_fp, 0);
    ORACLE_GET_STR(client_addr, 0);

    if (oracle_journal_get_int(root, "status", &status, err, errlen) != SP_OK) {
        goto failed;
    }

    if (status < 0 || status > 999) {
        sp_errorf(err, errlen, "field \"status\" must be 0..999");
        goto failed;
    }

    rec->status = (int) status;
    rec->stream = json_is_true(json_object_get(root, "stream"));

    if (strncmp(rec->id, "evt_", 4) != 0) {
        sp_errorf(err, errlen, "field \"id\" must start with evt_");
        goto failed;
    }

    json_decref(root);

    return SP_OK;

failed:

    json_decref(root);

    return SP_ERROR;
}


#endif /* FUZZ_JOURNAL_ORACLE_H */
