/*
 * Levelled logging (log.c). Included by controld.h.
 */

#ifndef CD_LOG_H
#define CD_LOG_H


typedef enum {
    CD_LOG_ERROR = 0,
    CD_LOG_WARN,
    CD_LOG_INFO,
    CD_LOG_DEBUG
} cd_log_level_e;

extern int  cd_log_level;

void cd_log_write(int level, const char *subject, const char *fmt, ...)
    CD_PRINTF(3, 4);

#define cd_log(level, subject, ...)                                          \
    do {                                                                     \
        if ((level) <= cd_log_level) {                                       \
            cd_log_write(level, subject, __VA_ARGS__);                       \
        }                                                                    \
    } while (0)

#define cd_log_error(subject, ...)  cd_log(CD_LOG_ERROR, subject, __VA_ARGS__)
#define cd_log_warn(subject, ...)   cd_log(CD_LOG_WARN, subject, __VA_ARGS__)
#define cd_log_info(subject, ...)   cd_log(CD_LOG_INFO, subject, __VA_ARGS__)
#define cd_log_debug(subject, ...)  cd_log(CD_LOG_DEBUG, subject, __VA_ARGS__)

/*
 * Copies s[0..len) into out for a log line: a backslash doubled; C0 and
 * C1 control characters, DEL and bytes that are not UTF-8 as \xNN (a C1
 * character as its two bytes, \xc2\x9b); other UTF-8 as is. Truncates
 * before an escape that does not fit, always NUL-terminates (outlen > 0)
 * and returns the length written. 4 * len + 1 bytes always suffice.
 */
size_t cd_log_escape(const char *s, size_t len, char *out, size_t outlen);

/* "error" ... "debug" -> level, or -1 */
int cd_log_level_parse(const char *name);


#endif /* CD_LOG_H */
