/*
 * controld's audit export (api_audit.c, docs/audit.md): the columns of
 * the contract in order, CSV cells quoted with formula-like text
 * neutralised (text cells only), JSON lines with each value in its kind,
 * and the attachment's file name.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"
#include "api.h"


/* /work/brief/export-format.md */
static const char  *columns[] = {
    "id", "org_id", "created_at", "ingested_at", "api_key_id", "provider",
    "requested_model", "model", "input_tokens", "output_tokens",
    "cached_tokens", "cache_write_tokens", "cost_nano", "reserved_nano",
    "saved_nano", "status", "cache", "stream", "latency_ms", "gateway_us",
    "endpoint", "department", "project", "agent_id", "trace_id", "span_id",
    "parent_id", "warnings", "error_code", "node_id", "routed",
    "route_rule", "attempts", "attempt_log", "route_note", "template_id",
    "template_version", "guard_score", "pii_types", "policy_action",
    "policy_ids", "policy_warnings", "hallucination_score",
    "shadow_key_type", "shadow_key_fp", "client_addr", "chain_seq",
    "prev_hash", "row_hash", "subject_salt", "subject_digest", "erased_at"
};


static int
column(const char *name)
{
    size_t  i;

    for (i = 0; i < CD_EXPORT_COLUMNS; i++) {
        if (strcmp(columns[i], name) == 0) {
            return (int) i;
        }
    }

    fail_msg("no column %s", name);

    return 0;       /* not reached: fail_msg() leaves the test */
}


/* a row of NULLs but for the named values */
typedef struct {
    const char  *values[CD_EXPORT_COLUMNS];
    int          lengths[CD_EXPORT_COLUMNS];
} row_t;


static void
set(row_t *row, const char *name, const char *value)
{
    int  i;

    i = column(name);
    row->values[i] = value;
    row->lengths[i] = value ? (int) strlen(value) : 0;
}


/* the formatted row as a string (owned by the caller) */
static char *
format(row_t *row, cd_export_format_e fmt)
{
    char             *s;
    cd_export_buf_t   b = { NULL, 0, 0 };

    assert_int_equal(cd_export_row(&b, fmt, row->values, row->lengths),
                     CD_OK);

    s = malloc(b.len + 1);
    assert_non_null(s);
    memcpy(s, b.data, b.len);
    s[b.len] = '\0';
    cd_export_buf_free(&b);

    return s;
}


static void
test_columns_are_the_contracts(void **state)
{
    size_t  i;

    (void) state;

    assert_int_equal(sizeof(columns) / sizeof(columns[0]),
                     CD_EXPORT_COLUMNS);

    for (i = 0; i < CD_EXPORT_COLUMNS; i++) {
        assert_string_equal(cd_export_column_name(i), columns[i]);
    }

    assert_null(cd_export_column_name(CD_EXPORT_COLUMNS));
}


static void
test_csv_header_quotes_every_name(void **state)
{
    cd_export_buf_t  b = { NULL, 0, 0 };

    (void) state;

    assert_int_equal(cd_export_header(&b, CD_EXPORT_CSV), CD_OK);
    assert_true(b.len > 20);
    assert_memory_equal(b.data, "\"id\",\"org_id\",\"created_at\",", 27);
    assert_memory_equal(b.data + b.len - 14, ",\"erased_at\"\r\n", 14);
    cd_export_buf_free(&b);

    assert_int_equal(cd_export_header(&b, CD_EXPORT_JSONL), CD_OK);
    assert_int_equal(b.len, 0);
    cd_export_buf_free(&b);
}


/* one cell of a formatted CSV row: the text between its quotes */
static void
assert_csv_cell(const char *line, int index, const char *expected)
{
    int          n;
    const char  *p, *end;

    p = line;

    for (n = 0; n < index; n++) {
        assert_int_equal(*p, '"');

        /* to the closing quote: "" is a quote inside */
        for (p++; !(p[0] == '"' && p[1] != '"'); p += p[0] == '"' ? 2 : 1) {
            /* walk */
        }

        p++;
        assert_true(*p == ',');
        p++;
    }

    assert_int_equal(*p, '"');

    for (end = p + 1; !(end[0] == '"' && end[1] != '"');
         end += end[0] == '"' ? 2 : 1)
    {
        /* walk */
    }

    assert_int_equal((int) (end - p - 1), (int) strlen(expected));
    assert_memory_equal(p + 1, expected, strlen(expected));
}


static void
test_csv_neutralises_text_cells_only(void **state)
{
    char   *line;
    row_t   row;

    (void) state;

    memset(&row, 0, sizeof(row));
    set(&row, "id", "evt_1");
    set(&row, "department", "=HYPERLINK(\"x\")");
    set(&row, "project", "@SUM(A1)");
    set(&row, "agent_id", "-2+3");
    set(&row, "trace_id", "+1");
    set(&row, "span_id", "\tx");
    set(&row, "parent_id", "\rx");
    set(&row, "error_code", "'already");
    set(&row, "cache", "miss");
    set(&row, "model", "a \"quote\", a comma\nand a newline");
    set(&row, "cost_nano", "-5");
    set(&row, "guard_score", "0.850");
    set(&row, "created_at", "2026-12-05T03:58:12.123456Z");
    set(&row, "stream", "t");
    set(&row, "routed", "f");
    set(&row, "warnings", "[\"=a\",\"b\"]");
    set(&row, "prev_hash", "00ff");
    set(&row, "node_id", "");

    line = format(&row, CD_EXPORT_CSV);

    assert_csv_cell(line, column("id"), "evt_1");
    assert_csv_cell(line, column("department"), "'=HYPERLINK(\"\"x\"\")");
    assert_csv_cell(line, column("project"), "'@SUM(A1)");
    assert_csv_cell(line, column("agent_id"), "'-2+3");
    assert_csv_cell(line, column("trace_id"), "'+1");
    assert_csv_cell(line, column("span_id"), "'\tx");
    assert_csv_cell(line, column("parent_id"), "'\rx");
    assert_csv_cell(line, column("error_code"), "''already");
    assert_csv_cell(line, column("cache"), "miss");
    assert_csv_cell(line, column("model"),
                    "a \"\"quote\"\", a comma\nand a newline");
    /* numbers, booleans, timestamps, hex, JSON: as they are */
    assert_csv_cell(line, column("cost_nano"), "-5");
    assert_csv_cell(line, column("guard_score"), "0.850");
    assert_csv_cell(line, column("created_at"),
                    "2026-12-05T03:58:12.123456Z");
    assert_csv_cell(line, column("stream"), "true");
    assert_csv_cell(line, column("routed"), "false");
    assert_csv_cell(line, column("warnings"), "[\"\"=a\"\",\"\"b\"\"]");
    assert_csv_cell(line, column("prev_hash"), "00ff");
    /* NULL and "" alike: an empty cell */
    assert_csv_cell(line, column("node_id"), "");
    assert_csv_cell(line, column("erased_at"), "");
    assert_string_equal(line + strlen(line) - 5, ",\"\"\r\n");

    free(line);
}


static void
test_jsonl_values_in_their_kinds(void **state)
{
    char   *line;
    row_t   row;

    (void) state;

    memset(&row, 0, sizeof(row));
    set(&row, "id", "evt_1");
    set(&row, "department", "=x \"q\" \\ \n\t\001");
    set(&row, "input_tokens", "12");
    set(&row, "guard_score", "0.850");
    set(&row, "stream", "f");
    set(&row, "routed", "t");
    set(&row, "pii_types", "[\"email\"]");
    set(&row, "template_id", "0b0e4b5c-6b7e-4a3f-9b1e-2a9c0d8e7f61");
    set(&row, "chain_seq", "7");
    set(&row, "row_hash", "ab01");

    line = format(&row, CD_EXPORT_JSONL);

    assert_non_null(strstr(line, "{\"id\":\"evt_1\",\"org_id\":null,"));
    /* JSON lines are never neutralised: JSON has no formulas */
    assert_non_null(strstr(line, "\"department\":\"=x \\\"q\\\" \\\\ \\n\\t"
                                 "\\u0001\","));
    assert_non_null(strstr(line, "\"input_tokens\":12,"));
    assert_non_null(strstr(line, "\"guard_score\":0.850,"));
    assert_non_null(strstr(line, "\"stream\":false,"));
    assert_non_null(strstr(line, "\"routed\":true,"));
    assert_non_null(strstr(line, "\"pii_types\":[\"email\"],"));
    assert_non_null(strstr(line, "\"template_id\":\"0b0e4b5c-6b7e-4a3f-"
                                 "9b1e-2a9c0d8e7f61\","));
    assert_non_null(strstr(line, "\"chain_seq\":7,\"prev_hash\":null,"
                                 "\"row_hash\":\"ab01\","));
    assert_string_equal(line + strlen(line) - 19,
                        ",\"erased_at\":null}\n");
    /* one line: the newline of a value is escaped */
    assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1);

    free(line);
}


static void
test_rows_share_one_buffer(void **state)
{
    int               i;
    row_t             row;
    size_t            one;
    cd_export_buf_t   b = { NULL, 0, 0 };

    (void) state;

    memset(&row, 0, sizeof(row));
    set(&row, "id", "evt_1");

    assert_int_equal(cd_export_row(&b, CD_EXPORT_CSV, row.values,
                                   row.lengths), CD_OK);
    one = b.len;

    for (i = 1; i < 100; i++) {
        assert_int_equal(cd_export_row(&b, CD_EXPORT_CSV, row.values,
                                       row.lengths), CD_OK);
    }

    assert_int_equal(b.len, 100 * one);
    cd_export_buf_free(&b);
    assert_null(b.data);
}


static void
test_filename(void **state)
{
    char  name[128];

    (void) state;

    /* 2026-12-01T00:00:00Z .. 2027-01-01T00:00:00Z */
    cd_export_filename(name, sizeof(name), "org_default",
                       1796083200000000LL, 1798761600000000LL, 0,
                       CD_EXPORT_CSV);
    assert_string_equal(name, "audit-logs-org_default-20261201T000000Z-"
                              "20270101T000000Z.csv");

    /* no from: "start"; no to: now; a fraction of a second kept */
    cd_export_filename(name, sizeof(name), "org_a\"b/c", -1, -1,
                       1796083200500000LL, CD_EXPORT_JSONL);
    assert_string_equal(name, "audit-logs-org_a_b_c-start-"
                              "20261201T000000.500000Z.jsonl");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_columns_are_the_contracts),
        cmocka_unit_test(test_csv_header_quotes_every_name),
        cmocka_unit_test(test_csv_neutralises_text_cells_only),
        cmocka_unit_test(test_jsonl_values_in_their_kinds),
        cmocka_unit_test(test_rows_share_one_buffer),
        cmocka_unit_test(test_filename),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
