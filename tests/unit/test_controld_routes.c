/* controld route table matching */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"
#include "auth.h"
#include "api.h"


static void h_list(cd_request_t *r) { (void) r; }
static void h_get(cd_request_t *r) { (void) r; }
static void h_rotate(cd_request_t *r) { (void) r; }
static void h_delete(cd_request_t *r) { (void) r; }

static const cd_route_t  routes[] = {
    { "GET",    "/api-keys",              h_list,   1 },
    { "GET",    "/api-keys/{id}",         h_get,    1 },
    { "DELETE", "/api-keys/{id}",         h_delete, 1 },
    { "POST",   "/api-keys/{id}/rotate",  h_rotate, 1 },
};

#define N  (sizeof(routes) / sizeof(routes[0]))


static cd_route_match_e
match(const char *method, const char *path, const cd_route_t **route,
    cd_param_t *params, size_t *nparams)
{
    return cd_route_match(routes, N, method, path, route, params, nparams);
}


static void
test_route_exact_path_matches(void **state)
{
    const cd_route_t  *route;
    cd_param_t         params[CD_ROUTE_MAX_PARAMS];
    size_t             n;

    assert_int_equal(match("GET", "/api-keys", &route, params, &n),
                     CD_ROUTE_FOUND);
    assert_ptr_equal(route->handler, h_list);
    assert_int_equal(n, 0);
}


static void
test_route_placeholder_captures_segment(void **state)
{
    const cd_route_t  *route;
    cd_param_t         params[CD_ROUTE_MAX_PARAMS];
    size_t             n;

    assert_int_equal(match("POST", "/api-keys/key_abc/rotate", &route,
                           params, &n), CD_ROUTE_FOUND);
    assert_ptr_equal(route->handler, h_rotate);
    assert_int_equal(n, 1);
    assert_int_equal(params[0].len, 7);
    assert_memory_equal(params[0].data, "key_abc", 7);

    assert_int_equal(match("DELETE", "/api-keys/x", &route, params, &n),
                     CD_ROUTE_FOUND);
    assert_ptr_equal(route->handler, h_delete);
}


static void
test_route_wrong_method_is_405(void **state)
{
    const cd_route_t  *route;
    cd_param_t         params[CD_ROUTE_MAX_PARAMS];
    size_t             n;

    assert_int_equal(match("PUT", "/api-keys/x", &route, params, &n),
                     CD_ROUTE_BAD_METHOD);
    assert_int_equal(match("GET", "/api-keys/x/rotate", &route, params, &n),
                     CD_ROUTE_BAD_METHOD);
}


static void
test_route_head_uses_get(void **state)
{
    const cd_route_t  *route;
    cd_param_t         params[CD_ROUTE_MAX_PARAMS];
    size_t             n;

    assert_int_equal(match("HEAD", "/api-keys", &route, params, &n),
                     CD_ROUTE_FOUND);
    assert_ptr_equal(route->handler, h_list);
}


static void
test_route_unknown_paths_are_404(void **state)
{
    const cd_route_t  *route;
    cd_param_t         params[CD_ROUTE_MAX_PARAMS];
    size_t             n;
    const char        *paths[] = {
        "/", "", "/api", "/api-keys/", "/api-keys//rotate", "/api-keysx",
        "/api-keys/a/b", "/api-keys/a/rotate/", "api-keys", "/API-KEYS",
        "/api-keys/a/rotatex",
    };
    size_t             i;

    for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        assert_int_equal(match("GET", paths[i], &route, params, &n),
                         CD_ROUTE_NOT_FOUND);
    }
}


static void
test_route_daemon_table_has_every_resource(void **state)
{
    const cd_route_t  *route;
    cd_param_t         params[CD_ROUTE_MAX_PARAMS];
    size_t             n;

    assert_int_equal(cd_route_match(cd_routes, cd_routes_count, "GET",
                                    "/healthz", &route, params, &n),
                     CD_ROUTE_FOUND);
    assert_false(route->admin);
    assert_int_equal(cd_route_match(cd_routes, cd_routes_count, "PUT",
                                    "/providers/openai", &route, params, &n),
                     CD_ROUTE_FOUND);
    assert_true(route->admin);
    assert_int_equal(cd_route_match(cd_routes, cd_routes_count, "GET",
                                    "/audit-logs", &route, params, &n),
                     CD_ROUTE_FOUND);
    assert_int_equal(cd_route_match(cd_routes, cd_routes_count, "POST",
                                    "/providers", &route, params, &n),
                     CD_ROUTE_BAD_METHOD);
    assert_int_equal(cd_route_match(cd_routes, cd_routes_count, "PATCH",
                                    "/org", &route, params, &n),
                     CD_ROUTE_FOUND);
    assert_true(route->admin);
    assert_int_equal(cd_route_match(cd_routes, cd_routes_count, "GET",
                                    "/budget-leases", &route, params, &n),
                     CD_ROUTE_FOUND);
    assert_true(route->admin);
    assert_int_equal(cd_route_match(cd_routes, cd_routes_count, "DELETE",
                                    "/budget-leases/node-a", &route, params,
                                    &n),
                     CD_ROUTE_FOUND);
    assert_true(route->admin);
    assert_int_equal(n, 1);
    assert_int_equal(cd_route_match(cd_routes, cd_routes_count, "POST",
                                    "/budget-leases", &route, params, &n),
                     CD_ROUTE_BAD_METHOD);
}


/*
 * The organisations are the operator's: /orgs and only /orgs needs the
 * operator scope; every other route needs no key or an admin key
 */
static void
test_route_orgs_need_operator(void **state)
{
    size_t   i;
    int      orgs;

    for (i = 0; i < cd_routes_count; i++) {
        orgs = strcmp(cd_routes[i].pattern, "/orgs") == 0
               || strncmp(cd_routes[i].pattern, "/orgs/", 6) == 0;

        if (orgs) {
            assert_int_equal(cd_routes[i].admin, CD_ROUTE_OPERATOR);

        } else {
            assert_true(cd_routes[i].admin == CD_ROUTE_PUBLIC
                        || cd_routes[i].admin == CD_ROUTE_ADMIN);
        }
    }

    for (i = 0; i < cd_routes_count; i++) {
        if (strcmp(cd_routes[i].method, "POST") == 0
            && strcmp(cd_routes[i].pattern, "/orgs") == 0)
        {
            return;
        }
    }

    fail_msg("POST /orgs is not in cd_routes");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_route_exact_path_matches),
        cmocka_unit_test(test_route_placeholder_captures_segment),
        cmocka_unit_test(test_route_wrong_method_is_405),
        cmocka_unit_test(test_route_head_uses_get),
        cmocka_unit_test(test_route_unknown_paths_are_404),
        cmocka_unit_test(test_route_daemon_table_has_every_resource),
        cmocka_unit_test(test_route_orgs_need_operator),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
