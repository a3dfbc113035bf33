/*
 * text/event-stream parsing, byte by byte, state kept between calls.
 * Lines end with "\n", "\r\n" or "\r"; a blank line ends an event.
 */

#include <string.h>

#include "sp_usage.h"


enum {
    sw_line_start = 0,
    sw_field,
    sw_value_start,
    sw_value,
    sw_comment
};

enum {
    sp_field_other = 0,
    sp_field_data,
    sp_field_event
};


void
sp_sse_init(sp_sse_t *sse, char *buffer, size_t size)
{
    memset(sse, 0, sizeof(sp_sse_t));
    sse->data = buffer;
    sse->data_cap = size;
}


static void
sp_sse_reset_event(sp_sse_t *sse)
{
    sse->data_len = 0;
    sse->truncated = 0;
    sse->event_len = 0;
    sse->event[0] = '\0';
    sse->has_data = 0;
}


static void
sp_sse_data_byte(sp_sse_t *sse, char c)
{
    if (sse->data_len + 1 < sse->data_cap) {
        sse->data[sse->data_len++] = c;
        sse->data[sse->data_len] = '\0';

    } else {
        sse->truncated = 1;
    }
}


static void
sp_sse_value_byte(sp_sse_t *sse, char c)
{
    if (sse->field == sp_field_data) {
        sp_sse_data_byte(sse, c);

    } else if (sse->field == sp_field_event) {
        if (sse->event_len + 1 < sizeof(sse->event)) {
            sse->event[sse->event_len++] = c;
            sse->event[sse->event_len] = '\0';
        }
    }
}


static void
sp_sse_field_done(sp_sse_t *sse)
{
    if (sse->field_len == 4 && memcmp(sse->field_name, "data", 4) == 0) {
        sse->field = sp_field_data;

        /* several data lines join with "\n" */
        if (sse->has_data) {
            sp_sse_data_byte(sse, '\n');
        }

        sse->has_data = 1;

    } else if (sse->field_len == 5
               && memcmp(sse->field_name, "event", 5) == 0)
    {
        sse->field = sp_field_event;
        sse->event_len = 0;
        sse->event[0] = '\0';

    } else {
        sse->field = sp_field_other;
    }
}


size_t
sp_sse_feed(sp_sse_t *sse, const char *in, size_t len, int *event_done)
{
    size_t  i;
    char    c;

    *event_done = 0;

    if (sse->event_complete) {
        sse->event_complete = 0;
        sp_sse_reset_event(sse);
    }

    for (i = 0; i < len; i++) {
        c = in[i];

        if (sse->after_cr) {
            sse->after_cr = 0;

            if (c == '\n') {
                continue;
            }
        }

        if (c == '\r' || c == '\n') {
            sse->after_cr = (c == '\r');

            if (sse->state == sw_line_start) {
                /* a blank line: the event, if any, is complete */
                if (sse->has_data || sse->event_len) {
                    *event_done = 1;
                    sse->event_complete = 1;
                    sse->field_len = 0;
                    return i + 1;
                }

                continue;
            }

            if (sse->state == sw_field) {
                /* a field name alone: its value is empty */
                sp_sse_field_done(sse);
            }

            sse->state = sw_line_start;
            sse->field_len = 0;
            continue;
        }

        switch (sse->state) {

        case sw_line_start:
            if (c == ':') {
                sse->state = sw_comment;
                break;
            }

            sse->state = sw_field;
            sse->field_len = 0;

            /* fall through */

        case sw_field:
            if (c == ':') {
                sp_sse_field_done(sse);
                sse->state = sw_value_start;
                break;
            }

            if (sse->field_len < sizeof(sse->field_name)) {
                sse->field_name[sse->field_len] = c;
            }

            sse->field_len++;
            break;

        case sw_value_start:
            sse->state = sw_value;

            if (c == ' ') {
                break;
            }

            /* fall through */

        case sw_value:
            sp_sse_value_byte(sse, c);
            break;

        default: /* sw_comment */
            break;
        }
    }

    return len;
}

