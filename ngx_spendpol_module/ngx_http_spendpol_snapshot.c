
/*
 * Copyright (C) Spendpol
 *
 * The policy snapshot in each worker: mapped read-only from the file
 * controld renames into place, checked every spendpol_snapshot_interval
 * by a cancelable per-worker timer. A bad or missing file never replaces
 * a good one: the worker keeps what it has (fail static) and says so.
 */


#include <sys/mman.h>

#include "ngx_http_spendpol_module.h"


static void ngx_http_spendpol_snapshot_timer(ngx_event_t *ev);


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

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_add_timer(ev, smcf->snapshot_interval);
    }
}


void
ngx_http_spendpol_snapshot_refresh(ngx_http_spendpol_main_conf_t *smcf,
    ngx_log_t *log)
{
    void             *map;
    char              err[256];
    ngx_uint_t        level;
    sp_snapshot_t     snapshot;
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
        return;
    }

    if (ngx_file_uniq(&fi) == smcf->snapshot_failed_ino) {
        /* already refused; wait for the next publication */
        return;
    }

    map = ngx_http_spendpol_map_file(&smcf->snapshot_path, &fi, log);
    if (map == NULL) {
        /* retried at the next check */
        return;
    }

    if (sp_snapshot_open(&snapshot, map, (size_t) ngx_file_size(&fi), err,
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

    /* requests copy what they use, so the old mapping can go now */
    if (smcf->snapshot_map) {
        munmap(smcf->snapshot_map, smcf->snapshot_size);
    }

    ngx_log_error(NGX_LOG_INFO, log, 0,
                  "spendpol: snapshot generation %uL loaded (%uL keys)",
                  snapshot.header->generation,
                  snapshot.header->entries[SP_TABLE_KEYS]);

    smcf->snapshot = snapshot;
    smcf->snapshot_map = map;
    smcf->snapshot_size = (size_t) ngx_file_size(&fi);
    smcf->snapshot_ino = ngx_file_uniq(&fi);
    smcf->snapshot_mtime = ngx_file_mtime(&fi);
    smcf->snapshot_mtime_ns = fi.st_mtim.tv_nsec;
    smcf->snapshot_failed_ino = 0;
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
