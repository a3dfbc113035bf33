/*
 * Attribution of settled spend to budgets, for controld's ingest: which
 * budgets a journalled call counts against, and in which of their
 * periods. The coverage rule is the module's (sp_budget_covers: provider
 * and model narrowing, "gpt-4o" covering its dated names); the scope rule
 * adds what only ingest knows, a key's own department and project.
 *
 * Period boundaries in a budget's time zone are not computed here: they
 * come from PostgreSQL's spendpol_period_start/_end, the same functions
 * that give the snapshot its period_start_ms and period_end_ms, so the
 * time zone rules (DST, month ends) have one home and ingest and the
 * module agree by construction. This file only decides which known
 * period holds a call's time.
 */

#ifndef SP_ATTRIB_H
#define SP_ATTRIB_H

#include "spendpol.h"


typedef enum {
    SP_SCOPE_ORGANIZATION = 0,
    SP_SCOPE_API_KEY,
    SP_SCOPE_AGENT,
    SP_SCOPE_DEPARTMENT,
    SP_SCOPE_PROJECT
} sp_attrib_scope_e;

typedef struct {
    sp_attrib_scope_e  scope;
    sp_str_t           scope_value;
    sp_str_t           provider;       /* "" = any provider */
    sp_str_t           model;          /* "" = any model */
    int                total;          /* period "total": only calls from
                                          created_us on count */
    int64_t            created_us;
} sp_attrib_budget_t;

/* a journalled call; "" for an absent string */
typedef struct {
    sp_str_t  api_key_id;
    sp_str_t  agent_id;
    sp_str_t  department;
    sp_str_t  project;
    sp_str_t  key_department;   /* the key's own, whatever the call said */
    sp_str_t  key_project;
    sp_str_t  provider;
    sp_str_t  requested_model;
    sp_str_t  model;            /* as the provider answered */
    int64_t   ts_us;            /* request start */
    int64_t   cost_nano;
    int       status;
} sp_attrib_call_t;

/* [start_us, end_us); end_us 0: open ("total") */
typedef struct {
    int64_t  start_us;
    int64_t  end_us;
} sp_attrib_period_t;

/* "organization", "api_key", ... -> scope; SP_ERROR for another name */
int sp_attrib_scope(sp_str_t name, sp_attrib_scope_e *scope);

/*
 * 1 when the call's spend counts against the budget, whatever the
 * period: a call that cost something or did not fail, of the budget's
 * scope (a department or project budget also covers the calls of its
 * keys that attributed themselves elsewhere, as the module holds them),
 * provider and model (the requested one or the one answered).
 */
int sp_attrib_counts(const sp_attrib_budget_t *b,
    const sp_attrib_call_t *call);

/* the index of the period in periods[0..n) holding ts_us, or -1 */
int sp_attrib_period_find(const sp_attrib_period_t *periods, size_t n,
    int64_t ts_us);


#endif /* SP_ATTRIB_H */
