/*
 * GET /openapi.json cannot drift from the route table: the embedded
 * document (controld/openapi.json) has an operation for every row of
 * cd_routes, with the same method, path template and path parameter
 * names, no operation the table lacks, and security that matches the
 * row's key column.
 *
 * An operation marked "x-spendpol-pending": "<branch>" describes a route
 * another branch of this session adds: while its row is missing it is
 * reported, not failed; once the row exists it is checked like any other.
 * Drift is collected and printed whole before the test fails, so one run
 * tells every route that changed.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>

#include "controld.h"
#include "api.h"


#define MAX_NAMES  8

static const char  *methods[] = {
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
    NULL
};


static json_t *
load(void)
{
    json_t        *doc;
    json_error_t   error;

    doc = json_loadb(cd_openapi_json, cd_openapi_json_len,
                     JSON_REJECT_DUPLICATES, &error);

    if (doc == NULL) {
        fail_msg("controld/openapi.json line %d column %d: %s", error.line,
                 error.column, error.text);
    }

    return doc;
}


/* "{id}" names of a path template, in order; -1 when malformed */
static int
template_names(const char *pattern, char names[][64])
{
    int          n;
    size_t       len;
    const char  *p, *end;

    n = 0;

    for (p = strchr(pattern, '{'); p != NULL; p = strchr(end, '{')) {
        end = strchr(p, '}');
        len = end ? (size_t) (end - p - 1) : 0;

        if (end == NULL || len == 0 || len >= 64 || n == MAX_NAMES
            || p[-1] != '/' || (end[1] != '/' && end[1] != '\0'))
        {
            return -1;
        }

        memcpy(names[n], p + 1, len);
        names[n][len] = '\0';
        n++;
    }

    return n;
}


/* a parameter object, through "$ref": "#/components/parameters/X" */
static json_t *
resolve_parameter(json_t *doc, json_t *param)
{
    const char  *ref;

    ref = json_string_value(json_object_get(param, "$ref"));

    if (ref == NULL) {
        return param;
    }

    if (strncmp(ref, "#/components/parameters/", 24) != 0) {
        return NULL;
    }

    return json_object_get(json_object_get(json_object_get(doc,
                           "components"), "parameters"), ref + 24);
}


/*
 * Checks the "in": "path" parameters of op (with the path item's) against
 * the template's names: the same set, each once, each required. Appends
 * what differs to problems; returns the number of problems found.
 */
static int
check_path_parameters(json_t *doc, const char *path, const char *method,
    json_t *item, json_t *op)
{
    int          i, n, found, problems;
    char         names[MAX_NAMES][64];
    int          seen[MAX_NAMES];
    size_t       k, s;
    json_t      *lists[2], *param;
    const char  *in, *name;

    problems = 0;
    n = template_names(path, names);

    if (n < 0) {
        print_error("openapi: %s %s: malformed path template\n", method,
                    path);
        return 1;
    }

    memset(seen, 0, sizeof(seen));
    lists[0] = json_object_get(item, "parameters");
    lists[1] = json_object_get(op, "parameters");

    for (s = 0; s < 2; s++) {
        json_array_foreach(lists[s], k, param) {
            param = resolve_parameter(doc, param);
            in = json_string_value(json_object_get(param, "in"));
            name = json_string_value(json_object_get(param, "name"));

            if (param == NULL || in == NULL || name == NULL) {
                print_error("openapi: %s %s: a parameter does not resolve "
                            "to one with \"in\" and \"name\"\n", method,
                            path);
                problems++;
                continue;
            }

            if (strcmp(in, "path") != 0) {
                continue;
            }

            found = 0;

            for (i = 0; i < n; i++) {
                if (strcmp(names[i], name) == 0) {
                    found = 1;
                    seen[i]++;
                }
            }

            if (!found) {
                print_error("openapi: %s %s: path parameter \"%s\" is not "
                            "in the template\n", method, path, name);
                problems++;
            }

            if (!json_is_true(json_object_get(param, "required"))) {
                print_error("openapi: %s %s: path parameter \"%s\" must be "
                            "required\n", method, path, name);
                problems++;
            }
        }
    }

    for (i = 0; i < n; i++) {
        if (seen[i] != 1) {
            print_error("openapi: %s %s: path parameter \"%s\" is "
                        "described %d times (once expected)\n", method,
                        path, names[i], seen[i]);
            problems++;
        }
    }

    return problems;
}


/*
 * The row's last column says which key the route needs: 0 none, 1 an
 * admin key, 2 an operator key (the orgs branch). The document says the
 * same: "security": [] for none, the default bearer otherwise, and
 * "x-spendpol-scope": "operator" exactly on the operator routes. A row
 * of 0 whose handler checks a credential itself (GET /metrics) is marked
 * "x-spendpol-auth": "handler" and documents what it takes.
 */
static int
check_security(json_t *doc, const cd_route_t *route, json_t *op)
{
    int          open, handler, operator_doc, problems;
    json_t      *security;
    unsigned     level;
    const char  *scope, *auth;

    /* a plain unsigned: the column is 1 bit wide before the orgs branch */
    level = route->admin;
    problems = 0;

    security = json_object_get(op, "security");

    if (security == NULL) {
        security = json_object_get(doc, "security");
    }

    open = security == NULL || json_array_size(security) == 0;
    auth = json_string_value(json_object_get(op, "x-spendpol-auth"));
    handler = auth != NULL && strcmp(auth, "handler") == 0;
    scope = json_string_value(json_object_get(op, "x-spendpol-scope"));
    operator_doc = scope != NULL && strcmp(scope, "operator") == 0;

    if (handler && (level != 0 || open)) {
        print_error("openapi: %s %s: x-spendpol-auth handler needs a row of "
                    "0 and a security requirement\n", route->method,
                    route->pattern);
        problems++;

    } else if (!handler && open != (level == 0)) {
        print_error("openapi: %s %s: the table %s, the document %s\n",
                    route->method, route->pattern,
                    level ? "asks for a key" : "asks for none",
                    open ? "asks for none" : "asks for a key");
        problems++;
    }

    if (operator_doc != (level == 2)) {
        print_error("openapi: %s %s: the table %s the operator scope, the "
                    "document %s\n", route->method, route->pattern,
                    level == 2 ? "asks for" : "does not ask for",
                    operator_doc ? "does" : "does not");
        problems++;
    }

    return problems;
}


static void
lower(const char *in, char *out, size_t len)
{
    size_t  i;

    for (i = 0; in[i] != '\0' && i + 1 < len; i++) {
        out[i] = (char) (in[i] >= 'A' && in[i] <= 'Z' ? in[i] + 32 : in[i]);
    }

    out[i] = '\0';
}


static void
test_openapi_is_3_1(void **state)
{
    json_t      *doc;
    const char  *version;

    doc = load();
    version = json_string_value(json_object_get(doc, "openapi"));

    assert_non_null(version);
    assert_int_equal(strncmp(version, "3.1.", 4), 0);
    assert_non_null(json_object_get(json_object_get(json_object_get(doc,
                    "components"), "securitySchemes"), "bearer"));

    json_decref(doc);
}


static void
test_openapi_documents_every_route(void **state)
{
    int                problems;
    char               method[16];
    size_t             i;
    json_t            *doc, *paths, *item, *op;
    const cd_route_t  *route;

    doc = load();
    paths = json_object_get(doc, "paths");
    assert_non_null(paths);
    problems = 0;

    for (i = 0; i < cd_routes_count; i++) {
        route = &cd_routes[i];
        lower(route->method, method, sizeof(method));
        item = json_object_get(paths, route->pattern);
        op = json_object_get(item, method);

        if (op == NULL) {
            print_error("openapi: %s %s is in cd_routes but not in "
                        "controld/openapi.json\n", route->method,
                        route->pattern);
            problems++;
            continue;
        }

        problems += check_path_parameters(doc, route->pattern,
                                          route->method, item, op);
        problems += check_security(doc, route, op);
    }

    json_decref(doc);

    if (problems) {
        fail_msg("%d difference(s) between cd_routes and "
                 "controld/openapi.json (listed above)", problems);
    }
}


static void
test_openapi_documents_no_other_route(void **state)
{
    int                problems, pending, found;
    char               upper[16];
    size_t             i, m;
    json_t            *doc, *paths, *item, *op, *branch;
    const char        *path;
    const cd_route_t  *route;

    doc = load();
    paths = json_object_get(doc, "paths");
    problems = 0;
    pending = 0;

    json_object_foreach(paths, path, item) {
        for (m = 0; methods[m] != NULL; m++) {
            op = json_object_get(item, methods[m]);
            if (op == NULL) {
                continue;
            }

            for (i = 0; methods[m][i] != '\0'; i++) {
                upper[i] = (char) (methods[m][i] - 32);
            }

            upper[i] = '\0';
            found = 0;

            for (i = 0; i < cd_routes_count; i++) {
                route = &cd_routes[i];

                if (strcmp(route->method, upper) == 0
                    && strcmp(route->pattern, path) == 0)
                {
                    found = 1;
                    break;
                }
            }

            /* the names are checked for pending routes too */
            problems += check_path_parameters(doc, path, upper, item, op);
            branch = json_object_get(op, "x-spendpol-pending");

            if (found) {
                if (json_is_string(branch)) {
                    print_message("openapi: %s %s has landed (branch %s): "
                                  "its x-spendpol-pending can go\n", upper,
                                  path, json_string_value(branch));
                }

                continue;
            }

            if (json_is_string(branch)) {
                print_message("openapi: pending (branch %s): %s %s is "
                              "documented, not yet in cd_routes\n",
                              json_string_value(branch), upper, path);
                pending++;
                continue;
            }

            print_error("openapi: %s %s is in controld/openapi.json but "
                        "not in cd_routes\n", upper, path);
            problems++;
        }
    }

    json_decref(doc);

    if (pending) {
        print_message("openapi: %d documented operation(s) wait for their "
                      "branch\n", pending);
    }

    if (problems) {
        fail_msg("%d difference(s) between controld/openapi.json and "
                 "cd_routes (listed above)", problems);
    }
}


static void
test_openapi_operation_ids_are_unique(void **state)
{
    size_t       m;
    json_t      *doc, *item, *op, *seen;
    const char  *path, *id;

    doc = load();
    seen = json_object();
    assert_non_null(seen);

    json_object_foreach(json_object_get(doc, "paths"), path, item) {
        for (m = 0; methods[m] != NULL; m++) {
            op = json_object_get(item, methods[m]);
            if (op == NULL) {
                continue;
            }

            id = json_string_value(json_object_get(op, "operationId"));

            if (id == NULL) {
                fail_msg("openapi: %s %s has no operationId", methods[m],
                         path);
            }

            if (json_object_get(seen, id) != NULL) {
                fail_msg("openapi: operationId %s is used twice", id);
            }

            assert_int_equal(json_object_set_new(seen, id, json_true()), 0);

            if (json_object_get(op, "responses") == NULL) {
                fail_msg("openapi: %s %s has no responses", methods[m],
                         path);
            }
        }
    }

    json_decref(seen);
    json_decref(doc);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openapi_is_3_1),
        cmocka_unit_test(test_openapi_documents_every_route),
        cmocka_unit_test(test_openapi_documents_no_other_route),
        cmocka_unit_test(test_openapi_operation_ids_are_unique),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
