/*
 * GET /openapi.json: the OpenAPI 3.1 description of this API, without a
 * key (like /healthz: it tells what the routes take, nothing of any
 * organisation). The document is controld/openapi.json, embedded at
 * build time (the Makefile's gen rule); tests/unit/test_controld_openapi.c
 * holds it to cd_routes, so a route cannot be added, removed or renamed
 * without the document following.
 */

#include "controld.h"
#include "api.h"


void
cd_api_openapi(cd_request_t *r)
{
    json_t  *doc;

    /*
     * Parsed per request rather than once: the answer goes out through
     * the same JSON path as every route (cd_http_send dumps r->response),
     * and a parse of the embedded text is a millisecond on a route that
     * is read rarely, without a shared object across the HTTP threads.
     */
    doc = json_loadb(cd_openapi_json, cd_openapi_json_len, 0, NULL);

    if (doc == NULL) {
        cd_respond_error(r, 500, "api_error", "internal_error", NULL,
                         "the embedded OpenAPI document does not parse");
        return;
    }

    cd_respond(r, 200, doc);
}
