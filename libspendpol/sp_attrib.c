/*
 * Attribution of settled spend to budgets (see sp_attrib.h).
 */

#include <string.h>

#include "sp_attrib.h"
#include "sp_budget.h"


static int
sp_attrib_eq(sp_str_t a, sp_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}


/* an absent value never matches, as SQL's NULL = 'x' */
static int
sp_attrib_is(sp_str_t value, sp_str_t wanted)
{
    return value.len > 0 && sp_attrib_eq(value, wanted);
}


int
sp_attrib_scope(sp_str_t name, sp_attrib_scope_e *scope)
{
    size_t              i;
    static const char  *names[] = {
        "organization", "api_key", "agent", "department", "project"
    };

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (name.len == strlen(names[i])
            && memcmp(name.data, names[i], name.len) == 0)
        {
            *scope = (sp_attrib_scope_e) i;
            return SP_OK;
        }
    }

    return SP_ERROR;
}


int
sp_attrib_counts(const sp_attrib_budget_t *b, const sp_attrib_call_t *call)
{
    int  in_scope;

    /* a failed call that cost nothing is no spend */
    if (call->cost_nano <= 0 && call->status >= 400) {
        return 0;
    }

    if (b->total && call->ts_us < b->created_us) {
        return 0;
    }

    switch (b->scope) {

    case SP_SCOPE_ORGANIZATION:
        in_scope = 1;
        break;

    case SP_SCOPE_API_KEY:
        in_scope = sp_attrib_is(call->api_key_id, b->scope_value);
        break;

    case SP_SCOPE_AGENT:
        in_scope = sp_attrib_is(call->agent_id, b->scope_value);
        break;

    case SP_SCOPE_DEPARTMENT:
        in_scope = sp_attrib_is(call->department, b->scope_value)
                   || sp_attrib_is(call->key_department, b->scope_value);
        break;

    default: /* SP_SCOPE_PROJECT */
        in_scope = sp_attrib_is(call->project, b->scope_value)
                   || sp_attrib_is(call->key_project, b->scope_value);
        break;
    }

    if (!in_scope) {
        return 0;
    }

    if (b->provider.len && !sp_attrib_eq(b->provider, call->provider)) {
        return 0;
    }

    if (b->model.len == 0) {
        return 1;
    }

    /* an absent model is covered by no narrowing */
    return (call->requested_model.len
            && sp_budget_model_covers(b->model, call->requested_model))
           || (call->model.len
               && sp_budget_model_covers(b->model, call->model));
}


int
sp_attrib_period_find(const sp_attrib_period_t *periods, size_t n,
    int64_t ts_us)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (ts_us >= periods[i].start_us
            && (periods[i].end_us == 0 || ts_us < periods[i].end_us))
        {
            return (int) i;
        }
    }

    return -1;
}
