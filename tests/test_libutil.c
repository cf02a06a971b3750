/* test_libutil.c - libutil (apr_util.h), the helpers every library shares:
 * the string table keeps the first value of a key and finds every key it
 * holds, the byte buffer writes little-endian and pads, the cursor reads all
 * of a value or none of it, and apr_threads_run runs every item exactly once
 * (also past APR_THREADS_MAX items). */
#include "test_util.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "apr_util.h"

static void test_fnv1a64_reference_values(void **state)
{
    (void)state;
    /* the published FNV-1a 64 test vectors */
    assert_true(apr_fnv1a64("", 0) == 0xcbf29ce484222325ull);
    assert_true(apr_fnv1a64("a", 1) == 0xaf63dc4c8601ec8cull);
    assert_true(apr_fnv1a64("foobar", 6) == 0x85944171f73967e8ull);
}

static void test_strmap_first_value_wins(void **state)
{
    (void)state;
    enum { N = 5000 };
    static char keys[N][16];
    apr_strmap m;
    assert_int_equal(apr_strmap_init(&m, N + 1), 0);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        assert_true(apr_strmap_put(&m, keys[i], (uint32_t)strlen(keys[i]), i));
    }
    assert_false(apr_strmap_put(&m, "k7", 2, 99)); /* present: the first value stays */
    for (int i = 0; i < N; i++)
        assert_int_equal(apr_strmap_get(&m, keys[i], strlen(keys[i])), i);
    assert_int_equal(apr_strmap_get(&m, "k", 1), -1);
    assert_int_equal(apr_strmap_get(&m, "k70", 2), 7); /* length, not NUL, ends a key */
    const char with_nul[3] = {'k', 0, '1'};
    assert_true(apr_strmap_put(&m, with_nul, 3, -5));
    assert_int_equal(apr_strmap_get(&m, with_nul, 3), -5);
    apr_strmap_free(&m);
    apr_strmap none = {0};
    assert_int_equal(apr_strmap_get(&none, "k1", 2), -1);
}

static void test_buf_little_endian_and_pad(void **state)
{
    (void)state;
    apr_buf b = {0};
    apr_buf_u8(&b, 0x01);
    apr_buf_u16(&b, 0x0302);
    apr_buf_u32(&b, 0x07060504);
    apr_buf_u64(&b, 0x0f0e0d0c0b0a0908ull);
    apr_buf_pad(&b, 32);
    assert_false(b.oom);
    assert_int_equal(b.len, 32);
    for (int i = 0; i < 15; i++)
        assert_int_equal(b.p[i], i + 1);
    for (int i = 15; i < 32; i++)
        assert_int_equal(b.p[i], 0);
    static uint8_t big[100000];
    apr_buf_put(&b, big, sizeof big); /* grows past its first 4 KiB */
    assert_int_equal(b.len, 32 + sizeof big);
    apr_buf_free(&b);
    assert_null(b.p);
}

static void test_cursor_all_or_nothing(void **state)
{
    (void)state;
    const uint8_t bytes[7] = {1, 0, 0, 0, 0xff, 0xff, 0xff};
    apr_cursor c = {bytes, sizeof bytes, 0};
    uint32_t u;
    uint64_t v;
    int32_t i;
    assert_true(apr_cur_u32(&c, &u));
    assert_int_equal(u, 1);
    assert_false(apr_cur_u64(&c, &v)); /* 3 bytes left */
    assert_false(apr_cur_i32(&c, &i));
    assert_int_equal(c.pos, 4);        /* untouched by the failed reads */
    uint8_t out[3];
    assert_true(apr_cur_bytes(&c, out, 3));
    assert_int_equal(apr_cur_left(&c), 0);
    assert_true(apr_cur_bytes(&c, out, 0));
    const uint8_t neg[4] = {0xfe, 0xff, 0xff, 0xff};
    apr_cursor d = {neg, 4, 0};
    assert_true(apr_cur_i32(&d, &i));
    assert_int_equal(i, -2);
}

typedef struct counts {
    atomic_int ran[APR_THREADS_MAX + 40];
} counts;

static void count_item(void *ctx, int i)
{
    counts *c = ctx;
    atomic_fetch_add(&c->ran[i], 1);
}

static void test_threads_run_each_item_once(void **state)
{
    (void)state;
    static counts c;
    const int ns[] = {0, 1, 2, 7, APR_THREADS_MAX + 40};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        memset(&c, 0, sizeof c);
        apr_threads_run(ns[k], count_item, &c);
        for (int i = 0; i < APR_THREADS_MAX + 40; i++)
            assert_int_equal(atomic_load(&c.ran[i]), i < ns[k] ? 1 : 0);
    }
    /* start, then join: the items given run once each */
    apr_threads t;
    memset(&c, 0, sizeof c);
    int started = apr_threads_start(&t, 3, 4, count_item, &c);
    apr_threads_join(&t);
    for (int i = 0; i < 10; i++)
        assert_int_equal(atomic_load(&c.ran[i]), i >= 3 && i < 3 + started ? 1 : 0);
    assert_int_equal(started, 4);
}

/* apr_threads_for: at least 1 (nothing asked, negative, no items), at most
 * the items and APR_THREADS_MAX. */
static void test_threads_for_clamps(void **state)
{
    (void)state;
    assert_int_equal(apr_threads_for(4, 100), 4);
    assert_int_equal(apr_threads_for(4, 3), 3);
    assert_int_equal(apr_threads_for(4, 1), 1);
    assert_int_equal(apr_threads_for(4, 0), 1);
    assert_int_equal(apr_threads_for(0, 100), 1);
    assert_int_equal(apr_threads_for(-3, 100), 1);
    assert_int_equal(apr_threads_for(APR_THREADS_MAX + 5, UINT64_MAX), APR_THREADS_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fnv1a64_reference_values),
        cmocka_unit_test(test_strmap_first_value_wins),
        cmocka_unit_test(test_buf_little_endian_and_pad),
        cmocka_unit_test(test_cursor_all_or_nothing),
        cmocka_unit_test(test_threads_run_each_item_once),
        cmocka_unit_test(test_threads_for_clamps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
