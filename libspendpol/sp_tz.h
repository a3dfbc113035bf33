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


#endif /* SP_TZ_H */
