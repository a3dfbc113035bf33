
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
 * (sp_semantic_quantise()) with their norms, in blocks of up to 256 per
 * group, contiguous so that sp_semantic_search() reads them at memory
 * speed; each with a record holding the prompt text the guard compares
 * and the exact key of its answer, on one least-recently-used queue per
 * organisation, which holds at most its max_vectors (the oldest go
 * first). A vector is removed by moving the group's last one into its
 * place. A vector whose answer has expired or was purged is dropped by
 * the next search of its group; one whose answer was evicted, when met.
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

/* vectors in a group's block at most */
#define NGX_HTTP_SPENDPOL_SEMANTIC_BLOCK   256


typedef struct ngx_http_spendpol_semantic_block_s
    ngx_http_spendpol_semantic_block_t;


typedef struct {
    ngx_str_node_t                   sn;         /* the organisation's id */
    ngx_queue_t                      lru;        /* last used first */
    ngx_uint_t                       count;
    u_char                           id[1];
} ngx_http_spendpol_semantic_org_t;


typedef struct {
    ngx_str_node_t                   sn;         /* the group key */
    ngx_queue_t                      blocks;
    ngx_http_spendpol_semantic_org_t *org;
    ngx_uint_t                       count;
    size_t                           dim;        /* its vectors' */
    u_char                           key[SP_CACHE_KEY_LEN];
} ngx_http_spendpol_semantic_group_t;


/* a stored prompt */
typedef struct {
    ngx_queue_t                      lru;
    ngx_http_spendpol_semantic_group_t *group;
    ngx_http_spendpol_semantic_block_t *block;
    ngx_uint_t                       index;      /* its vector's, in block */
    u_char                           key[SP_CACHE_KEY_LEN];  /* its answer */
    int64_t                          stored_ms;
    size_t                           text_len;
    u_char                           text[1];
} ngx_http_spendpol_semantic_vector_t;


struct ngx_http_spendpol_semantic_block_s {
    ngx_queue_t                      queue;      /* the group's blocks */
    ngx_uint_t                       count;
    ngx_uint_t                       size;       /* room */
    size_t                           bytes;      /* allocated */
    ngx_http_spendpol_semantic_vector_t **records;   /* size of them */
    uint32_t                        *norms;      /* size */
    int8_t                           vectors[1]; /* size x dim */
};


static ngx_http_spendpol_semantic_group_t *ngx_http_spendpol_semantic_group(
    ngx_http_spendpol_cache_sh_t *sh, u_char *key);
static ngx_http_spendpol_semantic_org_t *ngx_http_spendpol_semantic_org(
    ngx_http_spendpol_cache_sh_t *sh, ngx_str_t *id);
static ngx_http_spendpol_semantic_vector_t *ngx_http_spendpol_semantic_best(
    ngx_http_spendpol_semantic_group_t *group, int8_t *query,
    double threshold, ngx_http_spendpol_semantic_vector_t **refused,
    ngx_uint_t n, double *similarity);
static ngx_int_t ngx_http_spendpol_semantic_add(
    ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_semantic_group_t *group,
    ngx_http_spendpol_semantic_vector_t *v, int8_t *vector);
static void ngx_http_spendpol_semantic_drop(
    ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_semantic_vector_t *v);
static void ngx_http_spendpol_semantic_gc(
    ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_semantic_group_t *group);


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

    /*
     * The guard compares the user's texts: the system prompt, when it is
     * embedded, is the same anyway (it is in the group's context)
     */
    ctx->cache_text.data = (u_char *) prompt.user.data;
    ctx->cache_text.len = prompt.user.len;

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
 * With the prompt's vector: the group's expired vectors go, then its
 * most similar ones at or above the threshold, best first, are put to
 * the guard; the first that passes and whose answer is still stored is
 * the hit.
 */
void
ngx_http_spendpol_semantic_search(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    char                                 reason[96];
    double                               sim, threshold;
    int64_t                              now_ms, purged_ms;
    ngx_int_t                            rc;
    ngx_uint_t                           t, n, k;
    ngx_queue_t                         *q, *prev;
    ngx_http_spendpol_semantic_block_t  *b;
    ngx_http_spendpol_semantic_group_t  *group;
    ngx_http_spendpol_semantic_vector_t *v;
    ngx_http_spendpol_semantic_vector_t *refused[NGX_HTTP_SPENDPOL_SEMANTIC_TRIES];
    ngx_http_spendpol_main_conf_t       *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    threshold = ctx->cache_config->threshold_ppm / 1e6;

    purged_ms = ngx_http_spendpol_cache_purged_ms(r, ctx);
    now_ms = ngx_http_spendpol_cache_now_ms();

    ngx_shmtx_lock(&smcf->cache_shpool->mutex);

    group = ngx_http_spendpol_semantic_group(smcf->cache_sh,
                                             ctx->cache_group);

    if (group == NULL || group->dim != ctx->cache_dim) {
        ngx_shmtx_unlock(&smcf->cache_shpool->mutex);
        return;
    }

    /*
     * Expired or purged ones go, from the end: a removal moves the
     * group's last vector (already looked at) into the gap, and frees
     * only the last block when it empties (this one, or one passed).
     */
    for (q = ngx_queue_last(&group->blocks);
         q != ngx_queue_sentinel(&group->blocks);
         q = prev)
    {
        prev = ngx_queue_prev(q);
        b = ngx_queue_data(q, ngx_http_spendpol_semantic_block_t, queue);

        for (k = b->count; k > 0; k--) {
            v = b->records[k - 1];

            if (now_ms - v->stored_ms >= ctx->cache_ttl_ms
                || v->stored_ms <= purged_ms)
            {
                ngx_http_spendpol_semantic_drop(smcf, v);
            }
        }
    }

    /*
     * The most similar at or above the threshold; refused by the guard,
     * it is left out and the next most similar is looked for, at most
     * NGX_HTTP_SPENDPOL_SEMANTIC_TRIES times (near twins such as "3
     * apples" and "4 apples" must not hide each other)
     */
    n = 0;

    for (t = 0; t < NGX_HTTP_SPENDPOL_SEMANTIC_TRIES; t++) {

        v = ngx_http_spendpol_semantic_best(group, ctx->cache_vector,
                                            threshold, refused, n, &sim);
        if (v == NULL) {
            break;
        }

        if (!sp_semantic_guard((char *) v->text, v->text_len,
                               (char *) ctx->cache_text.data,
                               ctx->cache_text.len, reason, sizeof(reason)))
        {
            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "spendpol semantic: %.4f, refused: %s",
                           sim, reason);
            refused[n++] = v;
            continue;
        }

        rc = ngx_http_spendpol_cache_fetch_locked(r, ctx, v->key, now_ms,
                                                  purged_ms);

        if (rc == NGX_OK) {
            ctx->cache_similarity = sim;

            ngx_queue_remove(&v->lru);
            ngx_queue_insert_head(&group->org->lru, &v->lru);
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
    ngx_uint_t                           i, k;
    ngx_queue_t                         *q;
    ngx_http_spendpol_cache_sh_t        *sh;
    ngx_http_spendpol_semantic_org_t    *org;
    ngx_http_spendpol_semantic_block_t  *b;
    ngx_http_spendpol_semantic_group_t  *group, *other;
    ngx_http_spendpol_semantic_vector_t *v, *oldest;
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
        ngx_queue_init(&group->blocks);
        group->org = org;
        group->count = 0;
        group->dim = ctx->cache_dim;

        ngx_rbtree_insert(&sh->groups, &group->sn.node);

    } else if (group->dim != ctx->cache_dim) {
        /* the model answered another size: not comparable */
        goto done;

    } else {
        /* the same answer stored again: its old vector goes */
        for (q = ngx_queue_head(&group->blocks);
             q != ngx_queue_sentinel(&group->blocks);
             q = ngx_queue_next(q))
        {
            b = ngx_queue_data(q, ngx_http_spendpol_semantic_block_t, queue);

            for (k = 0; k < b->count; k++) {
                if (ngx_memcmp(b->records[k]->key, ctx->cache_key,
                               SP_CACHE_KEY_LEN) == 0)
                {
                    ngx_http_spendpol_semantic_drop(smcf, b->records[k]);
                    goto dropped;
                }
            }
        }

    dropped:

        ;
    }

    /*
     * Room: within the organisation's max_vectors, and vectors take at
     * most half the zone (the answers keep the rest); the organisation's
     * least recently used go first, a few at most. A slab that cannot
     * give the memory after that is only a later miss.
     */
    size = offsetof(ngx_http_spendpol_semantic_vector_t, text)
           + ctx->cache_text.len;

    for (i = 0; i < NGX_HTTP_SPENDPOL_SEMANTIC_EVICT; i++) {

        if (org->count < ctx->cache_config->max_vectors
            && sh->vector_bytes + size + 2 * group->dim
               <= smcf->cache_size / 2)
        {
            break;
        }

        q = ngx_queue_last(&org->lru);

        if (q == ngx_queue_sentinel(&org->lru)) {
            break;
        }

        oldest = ngx_queue_data(q, ngx_http_spendpol_semantic_vector_t, lru);
        other = oldest->group;

        ngx_http_spendpol_semantic_drop(smcf, oldest);

        if (other != group) {
            ngx_http_spendpol_semantic_gc(smcf, other);
        }
    }

    if (i == NGX_HTTP_SPENDPOL_SEMANTIC_EVICT
        || org->count >= ctx->cache_config->max_vectors
        || sh->vector_bytes + size + 2 * group->dim > smcf->cache_size / 2)
    {
        ngx_http_spendpol_semantic_gc(smcf, group);
        goto done;
    }

    v = ngx_slab_alloc_locked(smcf->cache_shpool, size);

    if (v == NULL) {
        ngx_http_spendpol_semantic_gc(smcf, group);
        goto done;
    }

    ngx_memcpy(v->key, ctx->cache_key, SP_CACHE_KEY_LEN);
    v->stored_ms = stored_ms;
    v->text_len = ctx->cache_text.len;
    ngx_memcpy(v->text, ctx->cache_text.data, ctx->cache_text.len);

    if (ngx_http_spendpol_semantic_add(smcf, group, v, ctx->cache_vector)
        != NGX_OK)
    {
        ngx_slab_free_locked(smcf->cache_shpool, v);
        ngx_http_spendpol_semantic_gc(smcf, group);
        goto done;
    }

    ngx_queue_insert_head(&org->lru, &v->lru);
    org->count++;
    sh->vectors++;
    sh->vector_bytes += size;

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


/*
 * Under the zone's mutex: the group's most similar vector to query at or
 * above threshold, the n refused ones left out (each block searched in
 * the ranges between them); NULL when there is none.
 */
static ngx_http_spendpol_semantic_vector_t *
ngx_http_spendpol_semantic_best(ngx_http_spendpol_semantic_group_t *group,
    int8_t *query, double threshold,
    ngx_http_spendpol_semantic_vector_t **refused, ngx_uint_t n,
    double *similarity)
{
    size_t                               at, start, end, cut;
    double                               sim, best_sim;
    ngx_uint_t                           i;
    ngx_queue_t                         *q;
    ngx_http_spendpol_semantic_block_t  *b;
    ngx_http_spendpol_semantic_vector_t *best;

    best = NULL;
    best_sim = -2;

    for (q = ngx_queue_head(&group->blocks);
         q != ngx_queue_sentinel(&group->blocks);
         q = ngx_queue_next(q))
    {
        b = ngx_queue_data(q, ngx_http_spendpol_semantic_block_t, queue);

        for (start = 0; start < b->count; start = end + 1) {

            /* the range up to the next refused index of this block */
            end = b->count;

            for (i = 0; i < n; i++) {
                cut = refused[i]->index;

                if (refused[i]->block == b && cut >= start && cut < end) {
                    end = cut;
                }
            }

            if (end > start
                && sp_semantic_search(b->vectors + start * group->dim,
                                      b->norms + start, end - start,
                                      group->dim, query, threshold, &at,
                                      &sim)
                   == SP_OK
                && sim > best_sim)
            {
                best = b->records[start + at];
                best_sim = sim;
            }
        }
    }

    *similarity = best_sim;

    return best;
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


/*
 * Under the zone's mutex: v's vector into the group's last block, or a
 * new one (as large as the group already is, from 8 up to 256 vectors).
 * NGX_DECLINED when the zone has no room.
 */
static ngx_int_t
ngx_http_spendpol_semantic_add(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_semantic_group_t *group,
    ngx_http_spendpol_semantic_vector_t *v, int8_t *vector)
{
    u_char                              *p;
    size_t                               size;
    ngx_uint_t                           room;
    ngx_http_spendpol_semantic_block_t  *b;

    b = NULL;

    if (!ngx_queue_empty(&group->blocks)) {
        b = ngx_queue_data(ngx_queue_last(&group->blocks),
                           ngx_http_spendpol_semantic_block_t, queue);

        if (b->count == b->size) {
            b = NULL;
        }
    }

    if (b == NULL) {
        /* as large as the group already is, within 256 KB of vectors */
        room = ngx_min(ngx_max(group->count, 8),
                       NGX_HTTP_SPENDPOL_SEMANTIC_BLOCK);
        room = ngx_min(room, ngx_max(262144 / group->dim, 8));

        size = ngx_align(offsetof(ngx_http_spendpol_semantic_block_t, vectors)
                         + room * group->dim, sizeof(void *))
               + room * sizeof(void *) + room * sizeof(uint32_t);

        b = ngx_slab_alloc_locked(smcf->cache_shpool, size);
        if (b == NULL) {
            return NGX_DECLINED;
        }

        p = ngx_align_ptr((u_char *) b->vectors + room * group->dim,
                          sizeof(void *));

        b->records = (ngx_http_spendpol_semantic_vector_t **) p;
        b->norms = (uint32_t *) (p + room * sizeof(void *));
        b->count = 0;
        b->size = room;
        b->bytes = size;

        smcf->cache_sh->vector_bytes += size;

        ngx_queue_insert_tail(&group->blocks, &b->queue);
    }

    ngx_memcpy(b->vectors + b->count * group->dim, vector, group->dim);
    b->norms[b->count] = sp_semantic_norm(vector, group->dim);
    b->records[b->count] = v;

    v->group = group;
    v->block = b;
    v->index = b->count;

    b->count++;
    group->count++;

    return NGX_OK;
}


/*
 * Under the zone's mutex: a vector goes; the group's last one takes its
 * place, and the last block goes when it empties. Its group stays, maybe
 * empty (ngx_http_spendpol_semantic_gc()).
 */
static void
ngx_http_spendpol_semantic_drop(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_semantic_vector_t *v)
{
    ngx_uint_t                           k;
    ngx_http_spendpol_semantic_block_t  *b, *last;
    ngx_http_spendpol_semantic_group_t  *group;
    ngx_http_spendpol_semantic_vector_t *moved;

    group = v->group;
    b = v->block;

    last = ngx_queue_data(ngx_queue_last(&group->blocks),
                          ngx_http_spendpol_semantic_block_t, queue);
    k = last->count - 1;

    if (last != b || k != v->index) {
        moved = last->records[k];

        ngx_memcpy(b->vectors + v->index * group->dim,
                   last->vectors + k * group->dim, group->dim);
        b->norms[v->index] = last->norms[k];
        b->records[v->index] = moved;

        moved->block = b;
        moved->index = v->index;
    }

    last->count--;

    if (last->count == 0) {
        ngx_queue_remove(&last->queue);
        smcf->cache_sh->vector_bytes -= last->bytes;
        ngx_slab_free_locked(smcf->cache_shpool, last);
    }

    group->count--;
    group->org->count--;
    smcf->cache_sh->vectors--;

    smcf->cache_sh->vector_bytes -= offsetof(ngx_http_spendpol_semantic_vector_t,
                                             text)
                                    + v->text_len;

    ngx_queue_remove(&v->lru);
    ngx_slab_free_locked(smcf->cache_shpool, v);
}


/* under the zone's mutex: a group without vectors goes */
static void
ngx_http_spendpol_semantic_gc(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_semantic_group_t *group)
{
    if (group->count == 0) {
        ngx_rbtree_delete(&smcf->cache_sh->groups, &group->sn.node);
        ngx_slab_free_locked(smcf->cache_shpool, group);
    }
}
