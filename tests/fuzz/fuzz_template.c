/*
 * Prompt templates (sp_template.c): validation, references and applying.
 *
 * Input: one byte of choices, then up to four parts separated by NUL:
 * a version object (or, when bit 3 of the choices is set, a whole
 * snapshot record taken as it is), a request body, the
 * X-Spendpol-Template-Variables header and an X-Spendpol-Template value.
 * The choices' low 3 bits pick the provider.
 *
 * Checks: sp_template_validate() accepts only a JSON object (jansson
 * agrees) and names a field when it refuses; sp_template_ref_parse()
 * accepts only what it can give back (slug + '@' + version or label);
 * a valid version, put into a record, applied to the body: a refusal
 * has one of the header's codes and a message, and an output is a JSON
 * object (jansson, duplicates refused) that fits the bound, fits a
 * buffer of exactly its size and is refused (not overrun) one byte
 * short, has no "spendpol_variables", and holds every other member of
 * the body, except "messages" and "system", as the body had it.
 */

#include <jansson.h>

#include "fuzz_common.h"
#include "sp_template.h"


#define FUZZ_PARTS  4


static void
fuzz_check_ref(const char *ref, size_t len)
{
    int       rc;
    char      err[256], again[256];
    int64_t   version;
    sp_str_t  slug, label;

    err[0] = '\0';
    rc = sp_template_ref_parse(ref, len, &slug, &version, &label, err,
                               sizeof(err));

    if (rc != SP_OK) {
        FUZZ_CHECK(rc == SP_ERROR && err[0] != '\0');
        return;
    }

    FUZZ_CHECK(sp_template_slug_valid(slug.data, slug.len));
    FUZZ_CHECK(version >= 0 && version <= 2147483648LL);
    FUZZ_CHECK(version == 0 || label.len == 0);

    if (label.len) {
        FUZZ_CHECK(sp_template_slug_valid(label.data, label.len));
        snprintf(again, sizeof(again), "%.*s@%.*s", (int) slug.len,
                 slug.data, (int) label.len, label.data);

    } else if (version) {
        snprintf(again, sizeof(again), "%.*s@%lld", (int) slug.len,
                 slug.data, (long long) version);

    } else {
        snprintf(again, sizeof(again), "%.*s", (int) slug.len, slug.data);
    }

    FUZZ_CHECK(strlen(again) == len && memcmp(again, ref, len) == 0);
}


/* the body's members, bar those a template rewrites, kept as they were */
static void
fuzz_check_output(const char *body, size_t body_len, const char *out,
    size_t len)
{
    json_t       *in, *root, *value;
    const char   *key;
    json_error_t  jerr;

    root = json_loadb(out, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                      &jerr);
    if (root == NULL) {
        fprintf(stderr, "not JSON: %s: %.*s\n", jerr.text, (int) len, out);
    }

    FUZZ_CHECK(root != NULL);
    FUZZ_CHECK(json_is_object(root));
    FUZZ_CHECK(json_object_get(root, "spendpol_variables") == NULL);

    in = json_loadb(body, body_len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                    &jerr);
    FUZZ_CHECK(json_is_object(in));

    json_object_foreach(in, key, value) {
        if (strcmp(key, "messages") == 0 || strcmp(key, "system") == 0
            || strcmp(key, "spendpol_variables") == 0)
        {
            continue;
        }

        FUZZ_CHECK(json_equal(value, json_object_get(root, key)));
    }

    FUZZ_CHECK(json_is_array(json_object_get(root, "messages"))
               || json_object_get(root, "system") != NULL);

    json_decref(in);
    json_decref(root);
}


static void
fuzz_apply(sp_provider_e provider, const char *record, size_t record_len,
    const char *body, size_t body_len, const char *header, size_t header_len,
    int64_t version, sp_str_t label)
{
    int                   rc;
    char                  code[SP_TEMPLATE_CODE_LEN], err[256], *out;
    size_t                bound, len, again;
    sp_template_result_t  res;

    bound = sp_template_apply_bound(record_len, body_len, header_len);
    FUZZ_CHECK(bound >= body_len && bound < (size_t) 1 << 32);

    out = malloc(bound);
    FUZZ_CHECK(out != NULL);

    code[0] = '\0';
    err[0] = '\0';
    rc = sp_template_apply(provider, record, record_len, version, label,
                           body, body_len, header, header_len, out, bound,
                           &len, &res, code, sizeof(code), err, sizeof(err));

    if (rc != SP_OK) {
        FUZZ_CHECK(rc == SP_ERROR && err[0] != '\0');
        FUZZ_CHECK(strcmp(code, "template_version_not_found") == 0
                   || strcmp(code, "template_label_not_found") == 0
                   || strcmp(code, "template_variable_missing") == 0
                   || strcmp(code, "invalid_template_variables") == 0
                   || strcmp(code, "template_provider_unsupported") == 0
                   || strcmp(code, "invalid_json") == 0
                   || strcmp(code, "template_invalid") == 0);
        free(out);
        return;
    }

    FUZZ_CHECK(len <= bound);
    FUZZ_CHECK(res.version >= 1);
    FUZZ_CHECK(memchr(res.id, '\0', sizeof(res.id)) != NULL);

    fuzz_check_output(body, body_len, out, len);

    /* exactly its size, then one byte short: refused, nothing overrun */
    free(out);
    out = malloc(len);
    FUZZ_CHECK(out != NULL);

    FUZZ_CHECK(sp_template_apply(provider, record, record_len, version,
                                 label, body, body_len, header, header_len,
                                 out, len, &again, &res, code, sizeof(code),
                                 err, sizeof(err))
               == SP_OK && again == len);

    FUZZ_CHECK(sp_template_apply(provider, record, record_len, version,
                                 label, body, body_len, header, header_len,
                                 out, len - 1, &again, &res, code,
                                 sizeof(code), err, sizeof(err))
               == SP_ERROR && again == len
               && strcmp(code, "output_too_small") == 0);

    free(out);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int            choices;
    char           field[128], err[256], *record, *copy[FUZZ_PARTS];
    size_t         n, i, len[FUZZ_PARTS], record_len;
    int64_t        version;
    sp_str_t       slug, label;
    json_t        *root;
    json_error_t   jerr;
    const uint8_t *p, *last, *nul;

    if (size == 0) {
        return 0;
    }

    choices = data[0];
    p = data + 1;
    last = data + size;

    for (n = 0; n < FUZZ_PARTS; n++) {
        nul = (n < FUZZ_PARTS - 1) ? memchr(p, '\0', last - p) : NULL;
        len[n] = nul ? (size_t) (nul - p) : (size_t) (last - p);
        copy[n] = (char *) fuzz_dup(p, len[n]);
        p = nul ? nul + 1 : last;
    }

    fuzz_check_ref(copy[3], len[3]);

    if (sp_template_ref_parse(copy[3], len[3], &slug, &version, &label, err,
                              sizeof(err))
        != SP_OK)
    {
        version = 0;
        label.data = "";
        label.len = 0;
    }

    if (choices & 0x08) {
        /* a record as it is: the reader must hold on any bytes */
        fuzz_apply((sp_provider_e) (choices & 0x07), copy[0], len[0],
                   copy[1], len[1], copy[2], len[2], version, label);
        goto done;
    }

    field[0] = '\0';
    err[0] = '\0';

    if (sp_template_validate(copy[0], len[0], field, sizeof(field), err,
                             sizeof(err))
        != SP_OK)
    {
        FUZZ_CHECK(err[0] != '\0');
        goto done;
    }

    root = json_loadb(copy[0], len[0], JSON_REJECT_DUPLICATES, &jerr);
    FUZZ_CHECK(json_is_object(root));
    json_decref(root);

    /* the version as controld publishes it: the only one, latest */
    for (i = 0; copy[0][i] != '{'; i++) {
        /* void */
    }

    record_len = len[0] + 128;
    record = malloc(record_len);
    FUZZ_CHECK(record != NULL);

    record_len = (size_t) snprintf(record, record_len,
                                   "{\"id\":\"0a1b\",\"slug\":\"s\","
                                   "\"latest\":1,\"labels\":{\"l\":1},"
                                   "\"versions\":[{\"version\":1,");
    memcpy(record + record_len, copy[0] + i + 1, len[0] - i - 1);
    record_len += len[0] - i - 1;

    /* a valid version has messages: at least one member follows ',' */
    memcpy(record + record_len, "]}", 2);
    record_len += 2;

    fuzz_apply((sp_provider_e) (choices & 0x07), record, record_len,
               copy[1], len[1], copy[2], len[2], version, label);

    free(record);

done:

    for (n = 0; n < FUZZ_PARTS; n++) {
        free(copy[n]);
    }

    return 0;
}
