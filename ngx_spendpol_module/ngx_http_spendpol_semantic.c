
/*
 * Copyright (C) Spendpol
 *
 * The semantic cache (issue 12, item 4): after an exact miss (zone and
 * Redis), the prompt of a chat request of an organisation in mode
 * "semantic" is embedded (ngx_http_spendpol_embed.c) and compared with
 * the prompts of the answers it stored for the same group: the same
 * organisation, scope, provider, endpoint and parameters (the exact key
 * of everything but the prompt, sp_cache.h's SP_CACHE_KEY_NO_PROMPT), the
 * same earlier turns and system prompt (sp_semantic_prompt()'s context)
 * and the same embedding model. The most similar one at or above the
 * organisation's similarity_threshold whose prompt also passes the
 * lexical guard (sp_semantic_guard(): negation, numbers, dates, quoted
 * strings, identifiers and named entities must be the same) answers, with
 * its exact entry's stored answer. Anything else is a miss, and the
 * answer, once stored, brings its vector in.
 *
 * Vectors live in the cache zone beside the entries: quantised to int8
 * (sp_semantic_quantise()), each with the prompt text the guard compares
 * and the exact key of its answer; on a queue per group (searched by
 * brute force) and on one least-recently-used queue per organisation,
 * which holds at most its max_vectors (the oldest go first). A vector
 * whose answer has expired, was purged or evicted is dropped when met.
 */


#include <openssl/sha.h>

#include <sp_semantic.h>

#include "ngx_http_spendpol_module.h"


/* a prompt longer than this is not semantically cached */
#define NGX_HTTP_SPENDPOL_SEMANTIC_TEXT    4096

/* candidates at or above the threshold the guard is asked about */
#define NGX_HTTP_SPENDPOL_SEMANTIC_TRIES   4

/* vectors evicted at most to make room for one */
#define NGX_HTTP_SPENDPOL_SEMANTIC_EVICT   16


typedef struct {
    ngx_str_node_t                   sn;         /* the organisation's id */
    ngx_queue_t                      lru;        /* last used first */
    ngx_uint_t                       count;
    u_char                           id[1];
} ngx_http_spendpol_semantic_org_t;


typedef struct {
    ngx_str_node_t                   sn;         /* the group key */
    ngx_queue_t                      vectors;    /* newest first */
    ngx_http_spendpol_semantic_org_t *org;
    u_char                           key[SP_CACHE_KEY_LEN];
} ngx_http_spendpol_semantic_group_t;


typedef struct {
    ngx_queue_t                      in_group;
    ngx_queue_t                      lru;
    ngx_http_spendpol_semantic_group_t *group;
    u_char                           key[SP_CACHE_KEY_LEN];  /* its answer */
    int64_t                          stored_ms;
    uint32_t                         dim;
    uint32_t                         text_len;
    int8_t                           data[1];    /* dim, then the text */
} ngx_http_spendpol_semantic_vector_t;


static ngx_http_spendpol_semantic_group_t *ngx_http_spendpol_semantic_group(
    ngx_http_spendpol_cache_sh_t *sh, u_char *key);
static ngx_http_spendpol_semantic_org_t *ngx_http_spendpol_semantic_org(
    ngx_http_spendpol_cache_sh_t *sh, ngx_str_t *id);
static void ngx_http_spendpol_semantic_drop(
    ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_semantic_vector_t *v);
static void ngx_http_spendpol_semantic_gc(
    ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_semantic_group_t *group);
static void ngx_http_spendpol_semantic_free(
    ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_semantic_vector_t *v);


/*
 * The semantic step after the exact ones missed: the prompt, its group,
 * and the embedding call. NGX_AGAIN waits for the call; NGX_DECLINED
 * when the request is not semantically cached (no user text, a prompt
 * too long, no embedding settings) or the call could not be made.
 */
ngx_int_t
ngx_http_spendpol_semantic_begin(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    u_char                *scratch, *p;
    u_char                 mix[SP_CACHE_KEY_LEN + 16 + SP_CACHE_EMBED_MODEL_LEN];
    char                   err[160];
    size_t                 n, model_len;
    sp_cache_config_t     *config;
    sp_semantic_prompt_t   prompt;

    config = ctx->cache_config;

    if (config->embed_provider == SP_PROVIDER_UNKNOWN
        || config->embed_model[0] == '\0'
        || ctx->presented_key.len == 0)
    {
        return NGX_DECLINED;
    }

    n = sp_semantic_prompt_scratch(ctx->body.len);

    scratch = ngx_palloc(r->pool, n);
    if (scratch == NULL) {
        return NGX_DECLINED;
    }

    if (sp_semantic_prompt(ctx->provider, (char *) ctx->body.data,
                           ctx->body.len,
                           config->embed_system ? SP_SEMANTIC_WITH_SYSTEM : 0,
                           (char *) scratch, n, &prompt, err, sizeof(err))
        != SP_OK)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "spendpol semantic: not embedded: %s", err);
        return NGX_DECLINED;
    }

    if (prompt.text.len > NGX_HTTP_SPENDPOL_SEMANTIC_TEXT) {
        return NGX_DECLINED;
    }

    ctx->cache_text.data = (u_char *) prompt.text.data;
    ctx->cache_text.len = prompt.text.len;

    /*
     * The group: the parameters' key (computed with the exact key), the
     * earlier turns, and what embeds the prompt (vectors of two models
     * are not comparable)
     */
    model_len = ngx_strlen(config->embed_model);

    p = ngx_cpymem(mix, ctx->cache_group, SP_CACHE_KEY_LEN);
    p = ngx_cpymem(p, &prompt.context, sizeof(uint64_t));
    *p++ = (u_char) config->embed_system;
    *p++ = (u_char) config->embed_provider;
    p = ngx_cpymem(p, config->embed_model, model_len);

    SHA256(mix, p - mix, ctx->cache_group);

    return ngx_http_spendpol_embed_start(r, ctx, config, prompt.text);
}


/*
 * With the prompt's vector: the group's most similar stored prompts at
 * or above the threshold, best first, each put to the guard; the first
 * that passes and whose answer is still stored is the hit.
 */
void
ngx_http_spendpol_semantic_search(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    char                                 reason[96];
    double                               sim, threshold;
    double                               best_sim[NGX_HTTP_SPENDPOL_SEMANTIC_TRIES];
    int64_t                              now_ms, purged_ms;
    ngx_int_t                            rc;
    ngx_uint_t                           i, j, n;
    ngx_queue_t                         *q, *next;
    ngx_http_spendpol_semantic_group_t  *group;
    ngx_http_spendpol_semantic_vector_t *v;
    ngx_http_spendpol_semantic_vector_t *best[NGX_HTTP_SPENDPOL_SEMANTIC_TRIES];
    ngx_http_spendpol_main_conf_t       *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (smcf->snapshot_map == NULL) {
        return;
    }

    threshold = ctx->cache_config->threshold_ppm / 1e6;

    purged_ms = ngx_http_spendpol_cache_purged_ms(r, ctx);
    now_ms = ngx_http_spendpol_cache_now_ms();

    ngx_shmtx_lock(&smcf->cache_shpool->mutex);

    group = ngx_http_spendpol_semantic_group(smcf->cache_sh,
                                             ctx->cache_group);

    if (group == NULL) {
        ngx_shmtx_unlock(&smcf->cache_shpool->mutex);
        return;
    }

    n = 0;

    for (q = ngx_queue_head(&group->vectors);
         q != ngx_queue_sentinel(&group->vectors);
         q = next)
    {
        next = ngx_queue_next(q);
        v = ngx_queue_data(q, ngx_http_spendpol_semantic_vector_t, in_group);

        if (now_ms - v->stored_ms >= ctx->cache_ttl_ms
            || v->stored_ms <= purged_ms)
        {
            /* its answer is gone too */
            ngx_http_spendpol_semantic_drop(smcf, v);
            continue;
        }

        if (v->dim != ctx->cache_dim) {
            continue;
        }

        sim = sp_semantic_similarity(v->data, ctx->cache_vector,
                                     ctx->cache_dim);

        if (sim < threshold) {
            continue;
        }

        /* kept best first, at most NGX_HTTP_SPENDPOL_SEMANTIC_TRIES */
        for (i = 0; i < n && best_sim[i] >= sim; i++) { /* void */ }

        if (i == NGX_HTTP_SPENDPOL_SEMANTIC_TRIES) {
            continue;
        }

        if (n < NGX_HTTP_SPENDPOL_SEMANTIC_TRIES) {
            n++;
        }

        for (j = n - 1; j > i; j--) {
            best[j] = best[j - 1];
            best_sim[j] = best_sim[j - 1];
        }

        best[i] = v;
        best_sim[i] = sim;
    }

    for (i = 0; i < n; i++) {
        v = best[i];

        if (!sp_semantic_guard((char *) v->data + v->dim, v->text_len,
                               (char *) ctx->cache_text.data,
                               ctx->cache_text.len, reason, sizeof(reason)))
        {
            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "spendpol semantic: %.4f, refused: %s",
                           best_sim[i], reason);
            continue;
        }

        rc = ngx_http_spendpol_cache_fetch_locked(r, ctx, v->key, now_ms,
                                                  purged_ms);

        if (rc == NGX_OK) {
            ctx->cache_similarity = best_sim[i];

            ngx_queue_remove(&v->lru);
            ngx_queue_insert_head(&v->group->org->lru, &v->lru);
            break;
        }

        if (rc == NGX_ERROR) {
            break;
        }

        /* its answer was evicted */
        ngx_http_spendpol_semantic_drop(smcf, v);
    }

    ngx_http_spendpol_semantic_gc(smcf, group);

    ngx_shmtx_unlock(&smcf->cache_shpool->mutex);
}


/*
 * A miss's answer was stored under its exact key: its prompt's vector
 * joins the group, within the organisation's max_vectors (its least
 * recently used go first). A failure is only a later miss.
 */
void
ngx_http_spendpol_semantic_store(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, int64_t stored_ms)
{
    size_t                               size;
    ngx_uint_t                           i;
    ngx_queue_t                         *q;
    ngx_http_spendpol_cache_sh_t        *sh;
    ngx_http_spendpol_semantic_org_t    *org;
    ngx_http_spendpol_semantic_group_t  *group;
    ngx_http_spendpol_semantic_vector_t *v;
    ngx_http_spendpol_main_conf_t       *smcf;

    if (ctx->cache_vector == NULL || ctx->cache_config == NULL) {
        return;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);
    sh = smcf->cache_sh;

    ngx_shmtx_lock(&smcf->cache_shpool->mutex);

    org = ngx_http_spendpol_semantic_org(sh, &ctx->org_id);

    if (org == NULL) {
        org = ngx_slab_alloc_locked(smcf->cache_shpool,
                         offsetof(ngx_http_spendpol_semantic_org_t, id)
                         + ctx->org_id.len);
        if (org == NULL) {
            goto done;
        }

        ngx_memcpy(org->id, ctx->org_id.data, ctx->org_id.len);
        org->sn.str.data = org->id;
        org->sn.str.len = ctx->org_id.len;
        org->sn.node.key = ngx_crc32_short(org->id, ctx->org_id.len);
        ngx_queue_init(&org->lru);
        org->count = 0;

        ngx_rbtree_insert(&sh->orgs, &org->sn.node);
    }

    group = ngx_http_spendpol_semantic_group(sh, ctx->cache_group);

    if (group == NULL) {
        group = ngx_slab_alloc_locked(smcf->cache_shpool,
                               sizeof(ngx_http_spendpol_semantic_group_t));
        if (group == NULL) {
            goto done;
        }

        ngx_memcpy(group->key, ctx->cache_group, SP_CACHE_KEY_LEN);
        group->sn.str.data = group->key;
        group->sn.str.len = SP_CACHE_KEY_LEN;
        group->sn.node.key = ngx_crc32_short(group->key, SP_CACHE_KEY_LEN);
        ngx_queue_init(&group->vectors);
        group->org = org;

        ngx_rbtree_insert(&sh->groups, &group->sn.node);

    } else {
        /* the same answer stored again: its old vector goes */
        for (q = ngx_queue_head(&group->vectors);
             q != ngx_queue_sentinel(&group->vectors);
             q = ngx_queue_next(q))
        {
            v = ngx_queue_data(q, ngx_http_spendpol_semantic_vector_t,
                               in_group);

            if (ngx_memcmp(v->key, ctx->cache_key, SP_CACHE_KEY_LEN) == 0) {
                ngx_http_spendpol_semantic_drop(smcf, v);
                break;
            }
        }
    }

    size = offsetof(ngx_http_spendpol_semantic_vector_t, data)
           + ctx->cache_dim + ctx->cache_text.len;

    v = NULL;

    for (i = 0; i < NGX_HTTP_SPENDPOL_SEMANTIC_EVICT; i++) {

        if (org->count < ctx->cache_config->max_vectors) {
            v = ngx_slab_alloc_locked(smcf->cache_shpool, size);

            if (v) {
                break;
            }
        }

        /* the organisation's least recently used vector makes room */
        q = ngx_queue_last(&org->lru);

        if (q == ngx_queue_sentinel(&org->lru)) {
            break;
        }

        v = ngx_queue_data(q, ngx_http_spendpol_semantic_vector_t, lru);

        if (v->group == group) {
            /* the group stays for the new one */
            ngx_http_spendpol_semantic_drop(smcf, v);

        } else {
            ngx_http_spendpol_semantic_free(smcf, v);
        }

        v = NULL;
    }

    if (v == NULL) {
        ngx_http_spendpol_semantic_gc(smcf, group);
        goto done;
    }

    ngx_memcpy(v->key, ctx->cache_key, SP_CACHE_KEY_LEN);
    v->group = group;
    v->stored_ms = stored_ms;
    v->dim = (uint32_t) ctx->cache_dim;
    v->text_len = (uint32_t) ctx->cache_text.len;
    ngx_memcpy(v->data, ctx->cache_vector, ctx->cache_dim);
    ngx_memcpy((u_char *) v->data + ctx->cache_dim, ctx->cache_text.data,
               ctx->cache_text.len);

    ngx_queue_insert_head(&group->vectors, &v->in_group);
    ngx_queue_insert_head(&org->lru, &v->lru);
    org->count++;
    sh->vectors++;

done:

    ngx_shmtx_unlock(&smcf->cache_shpool->mutex);
}


void
ngx_http_spendpol_semantic_init_zone(ngx_http_spendpol_cache_sh_t *sh)
{
    ngx_rbtree_init(&sh->groups, &sh->groups_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_rbtree_init(&sh->orgs, &sh->orgs_sentinel,
                    ngx_str_rbtree_insert_value);
}


/* under the zone's mutex */
static ngx_http_spendpol_semantic_group_t *
ngx_http_spendpol_semantic_group(ngx_http_spendpol_cache_sh_t *sh,
    u_char *key)
{
    ngx_str_t  name;

    name.data = key;
    name.len = SP_CACHE_KEY_LEN;

    return (ngx_http_spendpol_semantic_group_t *)
           ngx_str_rbtree_lookup(&sh->groups, &name,
                                 ngx_crc32_short(key, SP_CACHE_KEY_LEN));
}


/* under the zone's mutex */
static ngx_http_spendpol_semantic_org_t *
ngx_http_spendpol_semantic_org(ngx_http_spendpol_cache_sh_t *sh,
    ngx_str_t *id)
{
    return (ngx_http_spendpol_semantic_org_t *)
           ngx_str_rbtree_lookup(&sh->orgs, id,
                                 ngx_crc32_short(id->data, id->len));
}


/* under the zone's mutex: a vector; its group stays, maybe empty */
static void
ngx_http_spendpol_semantic_drop(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_semantic_vector_t *v)
{
    ngx_queue_remove(&v->in_group);
    ngx_queue_remove(&v->lru);
    v->group->org->count--;
    smcf->cache_sh->vectors--;
    ngx_slab_free_locked(smcf->cache_shpool, v);
}


/* under the zone's mutex: a group without vectors goes */
static void
ngx_http_spendpol_semantic_gc(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_semantic_group_t *group)
{
    if (ngx_queue_empty(&group->vectors)) {
        ngx_rbtree_delete(&smcf->cache_sh->groups, &group->sn.node);
        ngx_slab_free_locked(smcf->cache_shpool, group);
    }
}


/* under the zone's mutex: a vector, and its group when it was the last */
static void
ngx_http_spendpol_semantic_free(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_semantic_vector_t *v)
{
    ngx_http_spendpol_semantic_group_t  *group;

    group = v->group;

    ngx_http_spendpol_semantic_drop(smcf, v);
    ngx_http_spendpol_semantic_gc(smcf, group);
}
