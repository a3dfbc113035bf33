/* controld input validation: text fields, provider names and URLs, key
 * ids, scopes, migration names, journal strings, COPY escaping and the
 * cache settings of PUT /cache/config */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"
#include "auth.h"
#include "migrate.h"
#include "api.h"


static void
test_text_length_counts_characters_not_bytes(void **state)
{
    char  *s;

    assert_null(cd_validate_text("name", 1, 200));
    assert_string_equal(cd_validate_text("", 1, 200), "too_short");
    assert_null(cd_validate_text("", 0, 200));

    /* 200 two-byte characters fit, 201 do not */
    s = malloc(2 * 201 + 1);
    assert_non_null(s);

    for (size_t i = 0; i < 201; i++) {
        s[2 * i] = (char) 0xc3;
        s[2 * i + 1] = (char) 0xa9;
    }

    s[2 * 201] = '\0';
    assert_string_equal(cd_validate_text(s, 1, 200), "too_long");
    s[2 * 200] = '\0';
    assert_null(cd_validate_text(s, 1, 200));
    free(s);
}


static void
test_text_rejects_control_characters(void **state)
{
    assert_string_equal(cd_validate_text("a\nb", 1, 200),
                        "control_character");
    assert_string_equal(cd_validate_text("a\tb", 1, 200),
                        "control_character");
    assert_string_equal(cd_validate_text("\x7f", 1, 200),
                        "control_character");
}


static void
test_provider_defaults(void **state)
{
    assert_string_equal(cd_provider_default_url("openai"),
                        "https://api.openai.com/v1");
    assert_string_equal(cd_provider_default_url("anthropic"),
                        "https://api.anthropic.com");
    assert_string_equal(cd_provider_default_url("google"),
                        "https://generativelanguage.googleapis.com");
    assert_string_equal(cd_provider_default_url("cohere"),
                        "https://api.cohere.com");
    assert_string_equal(cd_provider_default_url("mistral"),
                        "https://api.mistral.ai");
    assert_string_equal(cd_provider_default_url("azure"), "");
    assert_null(cd_provider_default_url("OpenAI"));
    assert_null(cd_provider_default_url("bedrock"));
}


static void
test_base_url_normalization(void **state)
{
    size_t  i;
    char    url[256];
    struct {
        const char  *in;
        const char  *out;     /* NULL: refused */
    } cases[] = {
        { "https://api.openai.com/v1/", "https://api.openai.com/v1" },
        { "http://127.0.0.1:9000///", "http://127.0.0.1:9000" },
        { "https://r.openai.azure.com/openai/",
          "https://r.openai.azure.com/openai" },
        { "https://", NULL },
        { "https:///path", NULL },
        { "ftp://host", NULL },
        { "host.example", NULL },
        { "https://h/x?y=1", NULL },
        { "https://h/x#f", NULL },
        { "https://h/a b", NULL },
        { "https://h/a\r\nX: y", NULL },
        { "HTTPS://h", NULL },
        /* what comes before the path must be a host (found by fuzzing) */
        { "https://:80", NULL },
        { "https://user@host", NULL },
        { "https://user:pw@host/v1", NULL },
        { "https://a^b", NULL },
        { "https://[::1", NULL },
        { "http://[::1]:8080/v1", "http://[::1]:8080/v1" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        strcpy(url, cases[i].in);

        if (cases[i].out == NULL) {
            assert_false(cd_base_url_normalize(url));
        } else {
            assert_true(cd_base_url_normalize(url));
            assert_string_equal(url, cases[i].out);
        }
    }
}


static void
test_scopes(void **state)
{
    json_t    *a;
    uint32_t   bits;
    size_t     bad;

    a = json_loads("[\"proxy\", \"admin\", \"proxy\"]", 0, NULL);
    assert_int_equal(cd_scopes_parse(a, &bits, &bad), CD_OK);
    assert_int_equal(bits, SP_SCOPE_PROXY | SP_SCOPE_ADMIN);
    json_decref(a);

    a = json_loads("[\"admin\", \"root\"]", 0, NULL);
    assert_int_equal(cd_scopes_parse(a, &bits, &bad), CD_ERROR);
    assert_int_equal(bad, 1);
    json_decref(a);

    a = json_loads("[1]", 0, NULL);
    assert_int_equal(cd_scopes_parse(a, &bits, &bad), CD_ERROR);
    assert_int_equal(bad, 0);
    json_decref(a);

    a = json_loads("[]", 0, NULL);
    assert_int_equal(cd_scopes_parse(a, &bits, &bad), CD_OK);
    assert_int_equal(bits, 0);
    json_decref(a);

    /* the operator scope is controld's own bit, beside the snapshot's */
    a = json_loads("[\"operator\", \"admin\"]", 0, NULL);
    assert_int_equal(cd_scopes_parse(a, &bits, &bad), CD_OK);
    assert_int_equal(bits, CD_SCOPE_OPERATOR | SP_SCOPE_ADMIN);
    assert_int_equal(CD_SCOPE_OPERATOR & (SP_SCOPE_PROXY | SP_SCOPE_ADMIN),
                     0);
    json_decref(a);

    a = json_loads("[\"Operator\"]", 0, NULL);
    assert_int_equal(cd_scopes_parse(a, &bits, &bad), CD_ERROR);
    assert_int_equal(bad, 0);
    json_decref(a);
}


static void
test_migration_names(void **state)
{
    assert_true(cd_migration_name_valid("001_schema.sql"));
    assert_true(cd_migration_name_valid("123_x.sql"));
    assert_false(cd_migration_name_valid("01_schema.sql"));
    assert_false(cd_migration_name_valid("001-schema.sql"));
    assert_false(cd_migration_name_valid("001_schema.sql~"));
    assert_false(cd_migration_name_valid("abc_schema.sql"));
    assert_false(cd_migration_name_valid("001_.sq"));
    assert_false(cd_migration_name_valid(".001_schema.sql.swp"));
}


static void
test_utf8_validation(void **state)
{
    assert_true(cd_utf8_valid("plain", 5));
    assert_true(cd_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
    assert_false(cd_utf8_valid("\xc3", 1));
    assert_false(cd_utf8_valid("\xc0\xaf", 2));          /* overlong */
    assert_false(cd_utf8_valid("\xed\xa0\x80", 3));      /* surrogate */
    assert_false(cd_utf8_valid("\xf4\x90\x80\x80", 4));  /* > U+10FFFF */
    assert_false(cd_utf8_valid("\xff", 1));
    assert_false(cd_utf8_valid("a\0b", 3));
}


static void
test_copy_escaping(void **state)
{
    char    out[64];
    size_t  n;

    n = cd_copy_escape(out, 0, sizeof(out), "a\tb\\c\nd\re");
    assert_int_equal(n, 13);
    assert_memory_equal(out, "a\\tb\\\\c\\nd\\re", 13);

    /* appends after pos */
    n = cd_copy_escape(out, 13, sizeof(out), "x");
    assert_int_equal(n, 14);

    /* overflow is 0, never a write past outlen */
    assert_int_equal(cd_copy_escape(out, 0, 4, "abcdef"), 0);
}


/* body is JSON text; returns the parse's result, err filled on refusal */
static int
cache_parse(const char *body, sp_cache_config_t *config, unsigned *given,
    cd_field_error_t *err)
{
    int      rc;
    json_t  *json;

    json = json_loads(body, 0, NULL);
    assert_non_null(json);

    sp_cache_config_default(config);
    memset(err, 0, sizeof(*err));
    rc = cd_cache_config_parse(json, config, given, err);
    json_decref(json);

    return rc;
}


static void
test_cache_config_partial_body_changes_only_its_fields(void **state)
{
    unsigned           given;
    json_t            *json;
    cd_field_error_t   err;
    sp_cache_config_t  config, defaults;

    (void) state;

    sp_cache_config_default(&defaults);

    assert_int_equal(cache_parse("{}", &config, &given, &err), CD_OK);
    assert_int_equal(given, 0);
    assert_memory_equal(&config, &defaults, sizeof(config));

    assert_int_equal(cache_parse("{\"ttl_seconds\": 60, \"scope\": "
                                 "\"api_key\"}", &config, &given, &err),
                     CD_OK);
    assert_int_equal(given, CD_CACHE_TTL | CD_CACHE_SCOPE);
    assert_int_equal(config.ttl_s, 60);
    assert_int_equal(config.scope, SP_CACHE_SCOPE_API_KEY);
    assert_int_equal(config.mode, defaults.mode);

    assert_int_equal(cache_parse("{\"mode\": \"off\", "
                                 "\"only_deterministic\": false, "
                                 "\"max_entry_bytes\": 16777216, "
                                 "\"ttl_seconds\": 2592000, "
                                 "\"scope\": \"department\"}",
                                 &config, &given, &err), CD_OK);
    assert_int_equal(given, CD_CACHE_MODE | CD_CACHE_TTL | CD_CACHE_SCOPE
                            | CD_CACHE_DETERMINISTIC | CD_CACHE_MAX_ENTRY);
    assert_int_equal(config.mode, SP_CACHE_OFF);
    assert_int_equal(config.only_deterministic, 0);
    assert_int_equal(config.max_entry_bytes, 16777216);

    json = cd_cache_config_json(&config);
    assert_non_null(json);
    assert_string_equal(json_string_value(json_object_get(json, "mode")),
                        "off");
    assert_string_equal(json_string_value(json_object_get(json, "scope")),
                        "department");
    assert_true(json_is_false(json_object_get(json, "only_deterministic")));
    assert_int_equal(json_integer_value(json_object_get(json,
                                                        "ttl_seconds")),
                     2592000);
    json_decref(json);
}


static void
test_cache_config_refusals_name_their_field(void **state)
{
    size_t             i;
    unsigned           given;
    cd_field_error_t   err;
    sp_cache_config_t  config;
    const struct {
        const char  *body;
        unsigned     status;
        const char  *field;
        const char  *says;
    } cases[] = {
        { "{\"mode\": \"fuzzy\"}", 422, "mode", "fuzzy" },
        { "{\"mode\": 1}", 400, "mode", "string" },
        { "{\"mode\": null}", 400, "mode", "string" },
        { "{\"ttl_seconds\": 0}", 422, "ttl_seconds", "1 to 2592000" },
        { "{\"ttl_seconds\": 2592001}", 422, "ttl_seconds", "2592001" },
        { "{\"ttl_seconds\": 1.5}", 400, "ttl_seconds", "integer" },
        { "{\"ttl_seconds\": \"60\"}", 400, "ttl_seconds", "integer" },
        { "{\"scope\": \"team\"}", 422, "scope", "team" },
        { "{\"scope\": true}", 400, "scope", "string" },
        { "{\"only_deterministic\": \"yes\"}", 400,
          "only_deterministic", "true or false" },
        { "{\"max_entry_bytes\": 0}", 422, "max_entry_bytes", "1 to" },
        { "{\"max_entry_bytes\": 16777217}", 422, "max_entry_bytes",
          "16777216" },
        { "{\"max_entry_bytes\": -1}", 422, "max_entry_bytes", "-1" },
        { "{\"similarity_threshold\": 0.4999999}", 422,
          "similarity_threshold", "0.5 to 1.0" },
        { "{\"similarity_threshold\": 1.01}", 422, "similarity_threshold",
          "0.5 to 1.0" },
        { "{\"similarity_threshold\": 0}", 422, "similarity_threshold",
          "0.5 to 1.0" },
        { "{\"similarity_threshold\": 0.9500001}", 422,
          "similarity_threshold", "at most 6 decimals" },
        { "{\"similarity_threshold\": \"0.9\"}", 400,
          "similarity_threshold", "number" },
        { "{\"similarity_threshold\": null}", 400, "similarity_threshold",
          "number" },
        { "{\"embedding_provider\": \"anthropic\"}", 422,
          "embedding_provider", "anthropic has no embeddings endpoint" },
        { "{\"embedding_provider\": \"OpenAI\"}", 422, "embedding_provider",
          "\"openai\", \"azure\", \"google\", \"cohere\" or \"mistral\"" },
        { "{\"embedding_provider\": 3}", 400, "embedding_provider",
          "string" },
        { "{\"embedding_model\": \"\"}", 422, "embedding_model",
          "1 to 127 printable ASCII characters without spaces" },
        { "{\"embedding_model\": \"text embedding\"}", 422,
          "embedding_model", "without spaces" },
        { "{\"embedding_model\": \"mod\u00e8le\"}", 422,
          "embedding_model", "ASCII" },
        { "{\"embedding_model\": [\"m\"]}", 400, "embedding_model",
          "string" },
        { "{\"embed_system_prompt\": 1}", 400, "embed_system_prompt",
          "true or false" },
        { "{\"embedding_timeout_ms\": 49}", 422, "embedding_timeout_ms",
          "50 to 30000" },
        { "{\"embedding_timeout_ms\": 30001}", 422, "embedding_timeout_ms",
          "30001" },
        { "{\"embedding_timeout_ms\": 100.5}", 400, "embedding_timeout_ms",
          "integer" },
        { "{\"max_vectors\": 0}", 422, "max_vectors", "1 to 100000" },
        { "{\"max_vectors\": 100001}", 422, "max_vectors", "100001" },
        { "{\"max_vectors\": \"10\"}", 400, "max_vectors", "integer" },
    };

    (void) state;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(cache_parse(cases[i].body, &config, &given, &err),
                         CD_ERROR);
        assert_int_equal(err.status, cases[i].status);
        assert_string_equal(err.field, cases[i].field);

        if (strstr(err.message, cases[i].says) == NULL) {
            fail_msg("%s: \"%s\" does not say \"%s\"", cases[i].body,
                     err.message, cases[i].says);
        }
    }
}


static void
test_cache_config_semantic_settings_parse(void **state)
{
    char               model[200], m[128];
    unsigned           given;
    json_t            *json;
    cd_field_error_t   err;
    sp_cache_config_t  config;

    (void) state;

    assert_int_equal(cache_parse("{\"mode\": \"semantic\", "
                                 "\"similarity_threshold\": 0.912345, "
                                 "\"embedding_provider\": \"mistral\", "
                                 "\"embedding_model\": \"mistral-embed\", "
                                 "\"embed_system_prompt\": true, "
                                 "\"embedding_timeout_ms\": 50, "
                                 "\"max_vectors\": 100000}",
                                 &config, &given, &err), CD_OK);
    assert_int_equal(given, CD_CACHE_MODE | CD_CACHE_THRESHOLD
                            | CD_CACHE_EMBED_PROVIDER | CD_CACHE_EMBED_MODEL
                            | CD_CACHE_EMBED_SYSTEM | CD_CACHE_EMBED_TIMEOUT
                            | CD_CACHE_MAX_VECTORS);
    assert_int_equal(config.mode, SP_CACHE_SEMANTIC);
    assert_int_equal(config.threshold_ppm, 912345);
    assert_int_equal(config.embed_provider, SP_PROVIDER_MISTRAL);
    assert_string_equal(config.embed_model, "mistral-embed");
    assert_int_equal(config.embed_system, 1);
    assert_int_equal(config.embed_timeout_ms, 50);
    assert_int_equal(config.max_vectors, 100000);

    json = cd_cache_config_json(&config);
    assert_non_null(json);
    assert_true(json_real_value(json_object_get(json,
                                                "similarity_threshold"))
                == 0.912345);
    assert_string_equal(json_string_value(json_object_get(json,
                            "embedding_provider")), "mistral");
    assert_string_equal(json_string_value(json_object_get(json,
                            "embedding_model")), "mistral-embed");
    assert_true(json_is_true(json_object_get(json, "embed_system_prompt")));
    assert_int_equal(json_integer_value(json_object_get(json,
                         "embedding_timeout_ms")), 50);
    assert_int_equal(json_integer_value(json_object_get(json,
                         "max_vectors")), 100000);
    json_decref(json);

    /* the bounds, an integer threshold, and null unsetting */
    assert_int_equal(cache_parse("{\"similarity_threshold\": 1, "
                                 "\"embedding_provider\": null, "
                                 "\"embedding_model\": null}",
                                 &config, &given, &err), CD_OK);
    assert_int_equal(config.threshold_ppm, 1000000);
    assert_int_equal(config.embed_provider, SP_PROVIDER_UNKNOWN);
    assert_string_equal(config.embed_model, "");
    assert_int_equal(given, CD_CACHE_THRESHOLD | CD_CACHE_EMBED_PROVIDER
                            | CD_CACHE_EMBED_MODEL);

    assert_int_equal(cache_parse("{\"similarity_threshold\": 0.5, "
                                 "\"embedding_provider\": \"azure\", "
                                 "\"embedding_model\": \"x\"}",
                                 &config, &given, &err), CD_OK);
    assert_int_equal(config.threshold_ppm, 500000);
    assert_int_equal(config.embed_provider, SP_PROVIDER_AZURE);

    /* 0.95 is not exactly representable: still 950000 */
    assert_int_equal(cache_parse("{\"similarity_threshold\": 0.95}",
                                 &config, &given, &err), CD_OK);
    assert_int_equal(config.threshold_ppm, 950000);
    assert_int_equal(cache_parse("{\"similarity_threshold\": 0.999999}",
                                 &config, &given, &err), CD_OK);
    assert_int_equal(config.threshold_ppm, 999999);

    /* 127 bytes are accepted, 128 are not */
    memset(m, 'm', sizeof(m));
    snprintf(model, sizeof(model), "{\"embedding_model\": \"%.127s\"}", m);
    assert_int_equal(cache_parse(model, &config, &given, &err), CD_OK);
    assert_int_equal(strlen(config.embed_model), 127);

    snprintf(model, sizeof(model), "{\"embedding_model\": \"%.128s\"}", m);
    assert_int_equal(cache_parse(model, &config, &given, &err), CD_ERROR);
    assert_string_equal(err.field, "embedding_model");

    /* the defaults show provider and model as null */
    sp_cache_config_default(&config);
    json = cd_cache_config_json(&config);
    assert_non_null(json);
    assert_true(json_is_null(json_object_get(json, "embedding_provider")));
    assert_true(json_is_null(json_object_get(json, "embedding_model")));
    assert_true(json_real_value(json_object_get(json,
                                                "similarity_threshold"))
                == 0.95);
    assert_true(json_is_false(json_object_get(json, "embed_system_prompt")));
    assert_int_equal(json_integer_value(json_object_get(json,
                         "embedding_timeout_ms")), 1000);
    assert_int_equal(json_integer_value(json_object_get(json,
                         "max_vectors")), 10000);
    json_decref(json);
}


/* put's given members over stored, then the semantic rule */
static int
cache_merge(const char *stored_body, const char *put_body,
    sp_cache_config_t *merged, cd_field_error_t *err)
{
    unsigned           given;
    sp_cache_config_t  put;

    assert_int_equal(cache_parse(stored_body, merged, &given, err), CD_OK);
    assert_int_equal(cache_parse(put_body, &put, &given, err), CD_OK);
    memset(err, 0, sizeof(*err));

    return cd_cache_config_merge(merged, &put, given, err);
}


static void
test_cache_config_semantic_needs_embedding_settings(void **state)
{
    cd_field_error_t   err;
    sp_cache_config_t  merged;

    (void) state;

    /* nothing stored, nothing given: the model is named first */
    assert_int_equal(cache_merge("{}", "{\"mode\": \"semantic\"}",
                                 &merged, &err), CD_ERROR);
    assert_int_equal(err.status, 422);
    assert_string_equal(err.code, "missing_field");
    assert_string_equal(err.field, "embedding_model");
    assert_non_null(strstr(err.message, "embedding_provider and "
                                        "embedding_model"));

    assert_int_equal(cache_merge("{}", "{\"mode\": \"semantic\", "
                                 "\"embedding_model\": \"m\"}",
                                 &merged, &err), CD_ERROR);
    assert_string_equal(err.field, "embedding_provider");

    assert_int_equal(cache_merge("{}", "{\"mode\": \"semantic\", "
                                 "\"embedding_provider\": \"openai\"}",
                                 &merged, &err), CD_ERROR);
    assert_string_equal(err.field, "embedding_model");

    /* both in the same PUT */
    assert_int_equal(cache_merge("{}", "{\"mode\": \"semantic\", "
                                 "\"embedding_provider\": \"openai\", "
                                 "\"embedding_model\": \"m\"}",
                                 &merged, &err), CD_OK);
    assert_int_equal(merged.mode, SP_CACHE_SEMANTIC);

    /* stored before */
    assert_int_equal(cache_merge("{\"embedding_provider\": \"google\", "
                                 "\"embedding_model\": \"text-embedding-004\","
                                 " \"ttl_seconds\": 60}",
                                 "{\"mode\": \"semantic\"}",
                                 &merged, &err), CD_OK);
    assert_int_equal(merged.mode, SP_CACHE_SEMANTIC);
    assert_int_equal(merged.embed_provider, SP_PROVIDER_GOOGLE);
    assert_string_equal(merged.embed_model, "text-embedding-004");
    assert_int_equal(merged.ttl_s, 60);

    /* unsetting one while semantic stays */
    assert_int_equal(cache_merge("{\"mode\": \"semantic\", "
                                 "\"embedding_provider\": \"google\", "
                                 "\"embedding_model\": \"e\"}",
                                 "{\"embedding_provider\": null}",
                                 &merged, &err), CD_ERROR);
    assert_string_equal(err.field, "embedding_provider");

    /* ... but leaving semantic in the same PUT is fine */
    assert_int_equal(cache_merge("{\"mode\": \"semantic\", "
                                 "\"embedding_provider\": \"google\", "
                                 "\"embedding_model\": \"e\"}",
                                 "{\"mode\": \"exact\", "
                                 "\"embedding_model\": null}",
                                 &merged, &err), CD_OK);
    assert_int_equal(merged.mode, SP_CACHE_EXACT);
    assert_string_equal(merged.embed_model, "");
    assert_int_equal(merged.embed_provider, SP_PROVIDER_GOOGLE);

    /* other modes need nothing */
    assert_int_equal(cache_merge("{}", "{\"mode\": \"off\"}", &merged,
                                 &err), CD_OK);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_text_length_counts_characters_not_bytes),
        cmocka_unit_test(test_text_rejects_control_characters),
        cmocka_unit_test(test_provider_defaults),
        cmocka_unit_test(test_base_url_normalization),
        cmocka_unit_test(test_scopes),
        cmocka_unit_test(test_migration_names),
        cmocka_unit_test(test_utf8_validation),
        cmocka_unit_test(test_copy_escaping),
        cmocka_unit_test(
            test_cache_config_partial_body_changes_only_its_fields),
        cmocka_unit_test(test_cache_config_refusals_name_their_field),
        cmocka_unit_test(test_cache_config_semantic_settings_parse),
        cmocka_unit_test(test_cache_config_semantic_needs_embedding_settings),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
