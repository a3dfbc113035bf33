/*
 * Helpers every subsystem may use (util.c): text checks, files, clocks.
 * Included by controld.h.
 */

#ifndef CD_UTIL_H
#define CD_UTIL_H


/* 1 when s[0..len) is valid UTF-8 without NUL */
int cd_utf8_valid(const char *s, size_t len);

/*
 * NULL when s is min_chars to max_chars characters (UTF-8 code points)
 * without control characters, else the reason: "control_character",
 * "too_short" or "too_long"
 */
const char *cd_validate_text(const char *s, size_t min_chars,
    size_t max_chars);

/* 1 when the comma-separated list holds exactly the word name */
int cd_warnings_has(const char *warnings, const char *name);

/* writes a file with O_EXCL and mode; CD_ERROR with errno set */
int cd_write_new_file(const char *path, const char *data, size_t len,
    unsigned mode) CD_CHECK;

/* mkdir -p with mode for the directories it creates */
int cd_mkdir_p(const char *path, unsigned mode) CD_CHECK;

/* CLOCK_REALTIME now plus ms, for pthread_cond_timedwait */
void cd_deadline_after(struct timespec *deadline, unsigned ms);


#endif /* CD_UTIL_H */
