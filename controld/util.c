/*
 * Helpers shared across subsystems: text checks (UTF-8, printable names,
 * comma-separated lists), files created once, deadlines.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "controld.h"


int
cd_utf8_valid(const char *s, size_t len)
{
    size_t               i, n, k;
    uint32_t             cp;
    const unsigned char  *p;

    p = (const unsigned char *) s;

    for (i = 0; i < len; i += n) {
        if (p[i] == 0) {
            return 0;
        }

        if (p[i] < 0x80) {
            n = 1;
            continue;
        }

        if ((p[i] & 0xe0) == 0xc0) {
            n = 2;
            cp = p[i] & 0x1f;
        } else if ((p[i] & 0xf0) == 0xe0) {
            n = 3;
            cp = p[i] & 0x0f;
        } else if ((p[i] & 0xf8) == 0xf0) {
            n = 4;
            cp = p[i] & 0x07;
        } else {
            return 0;
        }

        if (i + n > len) {
            return 0;
        }

        for (k = 1; k < n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return 0;
            }

            cp = cp << 6 | (p[i + k] & 0x3f);
        }

        /* overlong forms, surrogates and beyond U+10FFFF */
        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800)
            || (n == 4 && cp < 0x10000) || cp > 0x10ffff
            || (cp >= 0xd800 && cp <= 0xdfff))
        {
            return 0;
        }
    }

    return 1;
}


const char *
cd_validate_text(const char *s, size_t min_chars, size_t max_chars)
{
    size_t               chars;
    const unsigned char  *p;

    chars = 0;

    for (p = (const unsigned char *) s; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            return "control_character";
        }

        /* count code points: continuation bytes are 10xxxxxx */
        if ((*p & 0xc0) != 0x80) {
            chars++;
        }
    }

    if (chars < min_chars) {
        return "too_short";
    }

    if (chars > max_chars) {
        return "too_long";
    }

    return NULL;
}


int
cd_warnings_has(const char *warnings, const char *name)
{
    size_t       len, n;
    const char  *p;

    len = strlen(name);

    if (len == 0) {
        return 0;
    }

    for (p = warnings; *p != '\0'; p += n + (p[n] == ',')) {
        n = strcspn(p, ",");

        if (n == len && memcmp(p, name, len) == 0) {
            return 1;
        }
    }

    return 0;
}


int
cd_write_new_file(const char *path, const char *data, size_t len,
    unsigned mode)
{
    int      fd, saved;
    ssize_t  n;
    size_t   done;

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        return CD_ERROR;
    }

    for (done = 0; done < len; done += n) {
        n = write(fd, data + done, len - done);

        if (n < 0) {
            if (errno == EINTR) {
                n = 0;
                continue;
            }

            saved = errno;
            close(fd);
            unlink(path);
            errno = saved;
            return CD_ERROR;
        }
    }

    if (fsync(fd) != 0 || close(fd) != 0) {
        saved = errno;
        unlink(path);
        errno = saved;
        return CD_ERROR;
    }

    return CD_OK;
}


int
cd_mkdir_p(const char *path, unsigned mode)
{
    char    *copy, *p;
    size_t   len;

    copy = strdup(path);
    if (copy == NULL) {
        errno = ENOMEM;
        return CD_ERROR;
    }

    len = strlen(copy);

    while (len > 1 && copy[len - 1] == '/') {
        copy[--len] = '\0';
    }

    for (p = copy + 1; ; p++) {
        if (*p != '/' && *p != '\0') {
            continue;
        }

        char  saved = *p;

        *p = '\0';

        if (mkdir(copy, mode) != 0 && errno != EEXIST) {
            free(copy);
            return CD_ERROR;
        }

        if (saved == '\0') {
            break;
        }

        *p = saved;
    }

    free(copy);

    return CD_OK;
}


void
cd_deadline_after(struct timespec *deadline, unsigned ms)
{
    clock_gettime(CLOCK_REALTIME, deadline);
    deadline->tv_sec += ms / 1000;
    deadline->tv_nsec += (long) (ms % 1000) * 1000000;

    if (deadline->tv_nsec >= 1000000000) {
        deadline->tv_sec++;
        deadline->tv_nsec -= 1000000000;
    }
}
