/*
 * IANA time zones for routing rules' time windows: a TZif file of the
 * system's zoneinfo read once (at validation, or when a worker compiles
 * a snapshot's rules), then local time computed without a system call,
 * a lock or the process's TZ (localtime_r would read TZ and take glibc's
 * lock on every request).
 *
 * The file's transitions answer for the instants they cover; past the
 * last one, the POSIX TZ rule of the file's footer ("CET-1CEST,M3.5.0,
 * M10.5.0/3") does, so a "slim" file (transitions only until the rule
 * took over) and a "fat" one agree.
 */

#ifndef SP_TZ_H
#define SP_TZ_H

#include <jansson.h>

#include "spendpol.h"


#define SP_TZ_DIR        "/usr/share/zoneinfo"
#define SP_TZ_NAME_MAX   128
#define SP_TZ_FILE_MAX   (256 * 1024)   /* the largest zone is 4 KB */


typedef struct sp_tz_s  sp_tz_t;


/*
 * 1 when name[0..len) may name a zone file: 1..SP_TZ_NAME_MAX bytes of
 * letters, digits, '/', '_', '-' and '+', no "..", no leading '/' (the
 * name is appended to SP_TZ_DIR: nothing may leave it).
 */
int sp_tz_name_valid(const char *name, size_t len);

/*
 * Loads zone name from dir (NULL: SP_TZ_DIR) in one allocation. "UTC"
 * is known without a file. NULL with a reason in err when the name is
 * not valid, the file is missing or is not TZif, or memory ran out.
 */
sp_tz_t *sp_tz_load(const char *dir, const char *name, size_t len,
    char *err, size_t errlen);

/* the same from a TZif file's bytes (tests, fuzzing) */
sp_tz_t *sp_tz_parse(const unsigned char *data, size_t len, char *err,
    size_t errlen);

void sp_tz_free(sp_tz_t *tz);

/* seconds east of UTC at the instant unix_s */
int32_t sp_tz_offset(const sp_tz_t *tz, int64_t unix_s);

/*
 * Local time at now_ms: the weekday (0 Sunday .. 6 Saturday) and the
 * minute of the day (0..1439).
 */
void sp_tz_local(const sp_tz_t *tz, int64_t now_ms, int *weekday,
    int *minute);



/*
 * A weekly time window in a zone's local time, the one form routing
 * rules' conditions and time_window policies share:
 * {"timezone": "Europe/Paris", "days": ["mon", ...], "start": "09:00",
 *  "end": "18:00"}, every member optional (UTC, every day, all day).
 */
typedef struct {
    uint16_t  start;            /* minutes of the local day, 0..1439 */
    uint16_t  end;              /* 1..1440; not after start: past midnight */
    uint8_t   days;             /* bit 0 Sunday .. bit 6 Saturday */
} sp_tz_window_t;

/*
 * Parses a window object. *zone gets the timezone member's text ("UTC"
 * when absent; valid while w lives), checked with sp_tz_name_valid()
 * only: the caller loads it (sp_tz_load()), once per distinct name.
 * SP_ERROR: member gets the path below the window ("days[1]", "start";
 * "" for the window itself) and err what was expected.
 */
int sp_tz_window_parse(json_t *w, sp_tz_window_t *win, const char **zone,
    size_t *zone_len, char *member, size_t memberlen, char *err,
    size_t errlen);

/*
 * 1 when the local weekday and minute (sp_tz_local()) lie in the window:
 * from start (inclusive) to end (exclusive) of a listed day; a window
 * whose end is not after its start runs past midnight and belongs to the
 * day it starts on.
 */
int sp_tz_window_contains(const sp_tz_window_t *win, int weekday,
    int minute);


#endif /* SP_TZ_H */
