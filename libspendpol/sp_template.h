/*
 * Versioned prompt templates (/prompts): validated by controld, published
 * one record per (organisation, slug) in the snapshot (SP_TABLE_TEMPLATES),
 * applied by the module at stage 4 to a request that names one with
 * X-Spendpol-Template: slug, slug@3 or slug@production.
 *
 * A version, as POST /prompts and POST /prompts/{slug}/versions take it:
 *
 *   {"messages": [{"role": "system", "content": "You answer {{product}}
 *                  questions in {{tone}} tone."},
 *                 {"role": "user", "content": "{{question}}"}],
 *    "variables": {"product": {"required": true},
 *                  "tone": {"default": "a friendly"},
 *                  "question": {"required": true}},
 *    "model": "gpt-4o-mini",                      optional default
 *    "parameters": {"temperature": 0.2, "max_tokens": 300}}   optional
 *
 * Roles are system, developer, user and assistant; every {{name}} in a
 * content must be declared; a name is [A-Za-z_][A-Za-z0-9_]*, at most 64
 * characters; a variable is required or has a default, not both.
 * parameters may not set messages, model, stream or spendpol_variables.
 *
 * The snapshot record of a template, as controld writes it:
 *
 *   {"id": "<uuid>", "slug": "...", "latest": 3,
 *    "labels": {"production": 2, ...},
 *    "versions": [{"version": 1, <a version as above>}, ...]}
 *
 * Applying: the version's messages, variables substituted (values are
 * strings, numbers or booleans, written as text and JSON-escaped), come
 * first, then the request's own messages (possibly none); the version's
 * model and parameters fill members the request lacks; the request's
 * "spendpol_variables" object is taken out. Variables come from that
 * object, else from the X-Spendpol-Template-Variables header (a JSON
 * object); the body's win when both name one.
 *
 * Providers: openai, azure and mistral (messages), anthropic (system
 * messages go to "system", joined by a blank line, before the request's
 * own), cohere v2 (messages). Google is refused (code
 * "template_provider_unsupported").
 */

#ifndef SP_TEMPLATE_H
#define SP_TEMPLATE_H

#include "spendpol.h"
#include "sp_usage.h"


#define SP_TEMPLATE_SLUG_MAX      64     /* [a-z0-9][a-z0-9_-]* */
#define SP_TEMPLATE_LABEL_MAX     64     /* [a-z0-9][a-z0-9_-]* */
#define SP_TEMPLATE_VARIABLE_MAX  64
#define SP_TEMPLATE_CODE_LEN      48


/* 1 when s is a valid slug (or label: the same alphabet) */
int sp_template_slug_valid(const char *s, size_t len);

/*
 * Validates one version object. SP_ERROR: field gets the member's path
 * ("messages[1].content", "variables.tone") and err what was expected
 * ("{{question}} is used but not declared in variables").
 */
int sp_template_validate(const char *json, size_t len, char *field,
    size_t fieldlen, char *err, size_t errlen);

/*
 * "slug", "slug@3" or "slug@production" (X-Spendpol-Template). version 0
 * and label of length 0 mean the latest version. SP_ERROR with a reason
 * when malformed.
 */
int sp_template_ref_parse(const char *ref, size_t len, sp_str_t *slug,
    int64_t *version, sp_str_t *label, char *err, size_t errlen);

typedef struct {
    char     id[SP_ID_LEN];       /* the template's UUID */
    int64_t  version;             /* the version applied */
} sp_template_result_t;

/* an outsize for sp_template_apply() that always suffices */
size_t sp_template_apply_bound(size_t record_len, size_t body_len,
    size_t vars_len);

/*
 * Writes body with the template applied into out. record is the
 * template's snapshot record; version and label as sp_template_ref_parse()
 * gave them; header_vars the X-Spendpol-Template-Variables header (len 0:
 * none). SP_ERROR: code gets "template_version_not_found",
 * "template_label_not_found", "template_variable_missing",
 * "invalid_template_variables", "template_provider_unsupported" or
 * "invalid_json", err a message naming the version, label or variable.
 */
int sp_template_apply(sp_provider_e provider, const char *record,
    size_t record_len, int64_t version, sp_str_t label, const char *body,
    size_t body_len, const char *header_vars, size_t header_vars_len,
    char *out, size_t outsize, size_t *out_len, sp_template_result_t *res,
    char *code, size_t codelen, char *err, size_t errlen);


#endif /* SP_TEMPLATE_H */
