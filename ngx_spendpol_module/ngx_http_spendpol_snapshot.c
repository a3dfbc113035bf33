
/*
 * Copyright (C) Spendpol
 *
 * The policy snapshot in each worker: mapped read-only from the file
 * controld renames into place, checked every spendpol_snapshot_interval
 * by a cancelable per-worker timer. A bad or missing file never replaces
 * a good one: the worker keeps what it has (fail static) and says so.
 * Nor does an older one: a generation lower than the one loaded is refused.
 */


#include <sys/mman.h>

#include "ngx_http_spendpol_module.h"


#define NGX_HTTP_SPENDPOL_VERIFY_STEP  (4 * 1024 * 1024)


static void ngx_http_spendpol_snapshot_timer(ngx_event_t *ev);
static void ngx_http_spendpol_snapshot_verify(
    ngx_http_spendpol_main_conf_t *smcf, ngx_log_t *log);
static void ngx_http_spendpol_snapshot_drop_pending(
    ngx_http_spendpol_main_conf_t *smcf);


ngx_int_t
ngx_http_spendpol_snapshot_init_worker(ngx_cycle_t *cycle,
    ngx_http_spendpol_main_conf_t *smcf)
{
    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    smcf->snapshot_timer.handler = ngx_http_spendpol_snapshot_timer;
    smcf->snapshot_timer.data = smcf;
    smcf->snapshot_timer.log = cycle->log;
    smcf->snapshot_timer.cancelable = 1;

    ngx_http_spendpol_snapshot_refresh(smcf, cycle->log);
    ngx_http_spendpol_spend_refresh(smcf, cycle->log);
    ngx_http_spendpol_ask_heartbeat(smcf);

    ngx_add_timer(&smcf->snapshot_timer, smcf->snapshot_interval);

    return NGX_OK;
}


void
ngx_http_spendpol_snapshot_exit_worker(ngx_http_spendpol_main_conf_t *smcf)
{
    if (smcf->snapshot_map) {
        munmap(smcf->snapshot_map, smcf->snapshot_size);
        smcf->snapshot_map = NULL;
        smcf->snapshot.base = NULL;
    }

    ngx_http_spendpol_snapshot_drop_pending(smcf);

    if (smcf->spend_map) {
        munmap(smcf->spend_map, smcf->spend_size);
        smcf->spend_map = NULL;
    }
}


static void
ngx_http_spendpol_snapshot_timer(ngx_event_t *ev)
{
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = ev->data;

    ngx_http_spendpol_snapshot_refresh(smcf, ev->log);
    ngx_http_spendpol_spend_refresh(smcf, ev->log);
    ngx_http_spendpol_ask_heartbeat(smcf);

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        /* a snapshot being verified gets the next step at once */
        ngx_add_timer(ev, smcf->pending_map ? 1 : smcf->snapshot_interval);
    }
}


void
ngx_http_spendpol_snapshot_refresh(ngx_http_spendpol_main_conf_t *smcf,
    ngx_log_t *log)
{
    void             *map;
    char              err[256];
    ngx_uint_t        level;
    ngx_file_info_t   fi;

    if (ngx_file_info(smcf->snapshot_path.data, &fi) == NGX_FILE_ERROR) {
        if (!smcf->snapshot_missing_logged) {
            level = smcf->snapshot_map ? NGX_LOG_ERR : NGX_LOG_WARN;

            ngx_log_error(level, log, ngx_errno,
                          "spendpol: snapshot \"%V\" is not available%s",
                          &smcf->snapshot_path,
                          smcf->snapshot_map
                              ? ", keeping the one loaded"
                              : "; requests get 503 until controld "
                                "publishes one");
            smcf->snapshot_missing_logged = 1;
        }

        return;
    }

    smcf->snapshot_missing_logged = 0;

    if (smcf->snapshot_map
        && ngx_file_uniq(&fi) == smcf->snapshot_ino
        && ngx_file_mtime(&fi) == smcf->snapshot_mtime
        && fi.st_mtim.tv_nsec == smcf->snapshot_mtime_ns
        && (size_t) ngx_file_size(&fi) == smcf->snapshot_size)
    {
        ngx_http_spendpol_snapshot_drop_pending(smcf);
        return;
    }

    if (smcf->pending_map
        && ngx_file_uniq(&fi) == smcf->pending_ino
        && (size_t) ngx_file_size(&fi) == smcf->pending_size)
    {
        ngx_http_spendpol_snapshot_verify(smcf, log);
        return;
    }

    if (ngx_file_uniq(&fi) == smcf->snapshot_failed_ino) {
        /* already refused; wait for the next publication */
        return;
    }

    /* a newer publication replaces one still being verified */
    ngx_http_spendpol_snapshot_drop_pending(smcf);

    map = ngx_http_spendpol_map_file(&smcf->snapshot_path, &fi, log);
    if (map == NULL) {
        /* retried at the next check */
        return;
    }

    if (sp_snapshot_open_structure(&smcf->pending, map,
                                   (size_t) ngx_file_size(&fi), err,
                                   sizeof(err))
        != SP_OK)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "spendpol: refused snapshot \"%V\": %s%s",
                      &smcf->snapshot_path, err,
                      smcf->snapshot_map
                          ? "; keeping the one loaded" : "");
        munmap(map, (size_t) ngx_file_size(&fi));
        smcf->snapshot_failed_ino = ngx_file_uniq(&fi);
        return;
    }

    if (smcf->snapshot_map
        && smcf->pending.header->generation
           < smcf->snapshot.header->generation)
    {
        /*
         * An older file renamed over a newer one would bring back revoked
         * keys and lifted budgets. Refused once per file: a later, higher
         * publication is picked up as usual. A new worker (after a reload)
         * holds nothing and takes whatever is there.
         */
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "spendpol: refused snapshot \"%V\": generation %uL "
                      "is older than generation %uL loaded; keeping the "
                      "one loaded (reload nginx to accept it)",
                      &smcf->snapshot_path,
                      smcf->pending.header->generation,
                      smcf->snapshot.header->generation);
        munmap(map, (size_t) ngx_file_size(&fi));
        smcf->snapshot_failed_ino = ngx_file_uniq(&fi);
        return;
    }

    smcf->pending_map = map;
    smcf->pending_size = (size_t) ngx_file_size(&fi);
    smcf->pending_ino = ngx_file_uniq(&fi);
    smcf->pending_mtime = ngx_file_mtime(&fi);
    smcf->pending_mtime_ns = fi.st_mtim.tv_nsec;

    sp_snapshot_verify_begin(&smcf->pending, &smcf->pending_hash);

    ngx_http_spendpol_snapshot_verify(smcf, log);
}


/*
 * One bounded step of the checksum of the pending snapshot: a large one
 * is verified over several timer ticks, never stalling the event loop,
 * and swapped in once it is whole.
 */
static void
ngx_http_spendpol_snapshot_verify(ngx_http_spendpol_main_conf_t *smcf,
    ngx_log_t *log)
{
    char  err[256];
    int   rc;

    rc = sp_snapshot_verify(&smcf->pending, &smcf->pending_hash,
                            NGX_HTTP_SPENDPOL_VERIFY_STEP, err, sizeof(err));

    if (rc == SP_AGAIN) {
        return;
    }

    if (rc != SP_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "spendpol: refused snapshot \"%V\": %s%s",
                      &smcf->snapshot_path, err,
                      smcf->snapshot_map
                          ? "; keeping the one loaded" : "");
        smcf->snapshot_failed_ino = smcf->pending_ino;
        ngx_http_spendpol_snapshot_drop_pending(smcf);
        return;
    }

    /* requests copy what they use, so the old mapping can go now */
    if (smcf->snapshot_map) {
        munmap(smcf->snapshot_map, smcf->snapshot_size);
    }

    smcf->snapshot = smcf->pending;
    smcf->snapshot_map = smcf->pending_map;
    smcf->snapshot_size = smcf->pending_size;
    smcf->snapshot_ino = smcf->pending_ino;
    smcf->snapshot_mtime = smcf->pending_mtime;
    smcf->snapshot_mtime_ns = smcf->pending_mtime_ns;
    smcf->snapshot_failed_ino = 0;
    smcf->pending_map = NULL;

    ngx_log_error(NGX_LOG_INFO, log, 0,
                  "spendpol: snapshot generation %uL loaded (%uL keys)",
                  smcf->snapshot.header->generation,
                  smcf->snapshot.header->entries[SP_TABLE_KEYS]);
}


static void
ngx_http_spendpol_snapshot_drop_pending(ngx_http_spendpol_main_conf_t *smcf)
{
    if (smcf->pending_map) {
        munmap(smcf->pending_map, smcf->pending_size);
        smcf->pending_map = NULL;
    }
}


/*
 * Maps a file read-only and shared; fi gets the identity and size of
 * what was mapped (taken from the descriptor, not the name). NULL, logged,
 * when it cannot be opened or mapped or is empty.
 */
void *
ngx_http_spendpol_map_file(ngx_str_t *path, ngx_file_info_t *fi,
    ngx_log_t *log)
{
    void      *map;
    ngx_fd_t   fd;

    fd = ngx_open_file(path->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      ngx_open_file_n " \"%V\" failed", path);
        return NULL;
    }

    if (ngx_fd_info(fd, fi) == NGX_FILE_ERROR || ngx_file_size(fi) <= 0) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "spendpol: \"%V\" is empty or unreadable", path);
        ngx_close_file(fd);
        return NULL;
    }

    map = mmap(NULL, (size_t) ngx_file_size(fi), PROT_READ, MAP_SHARED, fd,
               0);

    ngx_close_file(fd);

    if (map == MAP_FAILED) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "spendpol: mmap(\"%V\") failed", path);
        return NULL;
    }

    return map;
}
