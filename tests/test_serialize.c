/*
 * tests/test_serialize.c - suite "serialize": per-host connection slots.
 * Staleness is driven with a fake clock (now passed in), fake boot ids,
 * and a pid that is surely dead (a child that was waited for).
 */
#include "config.h"

#include "q/hints.h"
#include "q/util.h"
#include "tlib.h"

#include <CUnit/CUnit.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BOOT_A "11111111-2222-3333-4444-555555555555"
#define BOOT_B "99999999-8888-7777-6666-555555555555"
#define T0 ((time_t)1700000000)

static char db_path[4096];

static struct q_hints *open_at(const char *path)
{
	struct q_hints *h = NULL;
	const char *err, *notice;

	if (q_hints_open(path, "smtp", &h, &notice, &err) != 0)
		fprintf(stderr, "open: %s\n", err);
	return h;
}

/* A fresh environment; its path stays in db_path. */
static struct q_hints *open_hints(void)
{
	char *t = t_tmpdir();
	struct q_hints *h = NULL;
	const char *err, *notice;

	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	snprintf(db_path, sizeof(db_path), "%s/db", t);
	if (q_hints_open(db_path, "smtp", &h, &notice, &err) != 0)
		fprintf(stderr, "open: %s\n", err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(h);
	return h;
}

/* A pid that is surely dead: a child that exited and was reaped. */
static long dead_pid(void)
{
	int st;
	pid_t pid = fork();

	if (pid == 0)
		_exit(0);
	CU_ASSERT_FATAL(pid > 0);
	waitpid(pid, &st, 0);
	return (long)pid;
}

/* Store a slot record as another process would have written it. */
static void put_slot(struct q_hints *h, const char *key, unsigned slot,
		     long pid, time_t taken, const char *boot)
{
	struct q_buf b = { 0 };
	const char *err;

	CU_ASSERT_EQUAL(q_rec_put_u8(&b, 1), 0);
	CU_ASSERT_EQUAL(q_rec_put_u32(&b, slot), 0);
	CU_ASSERT_EQUAL(q_rec_put_u64(&b, (uint64_t)pid), 0);
	CU_ASSERT_EQUAL(q_rec_put_u64(&b, (uint64_t)taken), 0);
	CU_ASSERT_EQUAL(q_rec_put_str(&b, boot), 0);
	CU_ASSERT_EQUAL(q_hints_put(h, Q_DB_SERIALIZE, key, strlen(key), b.data,
				    b.len, &err), 0);
	q_buf_free(&b);
}

static int get_slot(struct q_hints *h, const char *key, struct q_slot *s)
{
	struct q_buf b = { 0 };
	const char *err;
	int r = q_hints_get(h, Q_DB_SERIALIZE, key, strlen(key), &b, &err);

	if (r == 0)
		r = q_slot_decode(b.data, b.len, s, &err);
	q_buf_free(&b);
	return r;
}

static void test_stale_table(void)
{
	long dead = dead_pid(), me = (long)getpid();
	static const long H6 = Q_SLOT_STALE_SECS;
	const struct {
		long pid;
		time_t taken, now;
		const char *boot, *cur;
		bool stale;
	} cases[] = {
		{ me, T0, T0, BOOT_A, BOOT_A, false },
		{ me, T0, T0 + 1, BOOT_A, BOOT_A, false },
		{ me, T0, T0 + H6, BOOT_A, BOOT_A, false },      /* exactly 6 h */
		{ me, T0, T0 + H6 + 1, BOOT_A, BOOT_A, true },   /* older */
		{ me, T0, T0 - 60, BOOT_A, BOOT_A, false },      /* clock skew */
		{ me, T0 + H6 + 1, T0, BOOT_A, BOOT_A, true },   /* far future */
		{ me, T0, T0, BOOT_A, BOOT_B, true },            /* other boot */
		{ me, T0, T0, "", BOOT_A, true },
		{ dead, T0, T0, BOOT_A, BOOT_A, true },          /* dead pid */
		{ 0, T0, T0, BOOT_A, BOOT_A, true },
		{ -5, T0, T0, BOOT_A, BOOT_A, true },
		{ 1, T0, T0, BOOT_A, BOOT_A, false },            /* init lives */
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		struct q_slot s = { .slot = 0, .pid = cases[i].pid,
				    .taken = cases[i].taken };

		snprintf(s.boot_id, sizeof(s.boot_id), "%s", cases[i].boot);
		if (q_slot_stale(&s, cases[i].now, cases[i].cur) != cases[i].stale)
			fprintf(stderr, "stale case %zu wrong\n", i);
		CU_ASSERT_EQUAL(q_slot_stale(&s, cases[i].now, cases[i].cur),
				cases[i].stale);
	}
	/* NULL boot id: the real one */
	{
		struct q_slot s = { .pid = me, .taken = T0 };
		char cur[40];

		CU_ASSERT_EQUAL_FATAL(q_boot_id(cur, sizeof(cur), NULL), 0);
		snprintf(s.boot_id, sizeof(s.boot_id), "%s", cur);
		CU_ASSERT_FALSE(q_slot_stale(&s, T0, NULL));
		snprintf(s.boot_id, sizeof(s.boot_id), "%s", "not-this-boot");
		CU_ASSERT_TRUE(q_slot_stale(&s, T0, NULL));
	}
}

static void test_take_release(void)
{
	struct q_hints *h = open_hints();
	struct q_slot s;
	const char *err;
	unsigned slot = 99;

	CU_ASSERT_EQUAL(q_serialize_take(h, "mx.example", 1, T0, BOOT_A, &slot,
					 &err), 0);
	CU_ASSERT_EQUAL(slot, 0);
	CU_ASSERT_EQUAL(get_slot(h, "mx.example#0", &s), 0);
	CU_ASSERT_EQUAL(s.pid, (long)getpid());
	CU_ASSERT_EQUAL(s.taken, T0);
	CU_ASSERT_STRING_EQUAL(s.boot_id, BOOT_A);
	/* held by a live pid of this boot, fresh: busy */
	CU_ASSERT_EQUAL(q_serialize_take(h, "mx.example", 1, T0 + 10, BOOT_A,
					 &slot, &err), Q_BUSY);
	/* host names are case-insensitive */
	CU_ASSERT_EQUAL(q_serialize_take(h, "MX.Example", 1, T0 + 10, BOOT_A,
					 &slot, &err), Q_BUSY);
	/* other hosts are independent */
	CU_ASSERT_EQUAL(q_serialize_take(h, "mx2.example", 1, T0, BOOT_A, &slot,
					 &err), 0);
	CU_ASSERT_EQUAL(q_serialize_release(h, "mx.example", 0, &err), 0);
	CU_ASSERT_EQUAL(get_slot(h, "mx.example#0", &s), Q_NOTFOUND);
	CU_ASSERT_EQUAL(q_serialize_release(h, "mx.example", 0, &err), Q_NOTFOUND);
	CU_ASSERT_EQUAL(q_serialize_take(h, "mx.example", 1, T0, BOOT_A, &slot,
					 &err), 0);
	/* bad arguments */
	CU_ASSERT_EQUAL(q_serialize_take(h, "mx.example", 0, T0, BOOT_A, &slot,
					 &err), -1);
	CU_ASSERT_EQUAL(q_serialize_take(h, "", 1, T0, BOOT_A, &slot, &err), -1);
	q_hints_close(&h);
}

static void test_limit_n(void)
{
	struct q_hints *h = open_hints();
	const char *err;
	unsigned slot, i;

	for (i = 0; i < 3; i++) {
		CU_ASSERT_EQUAL(q_serialize_take(h, "mx", 3, T0, BOOT_A, &slot,
						 &err), 0);
		CU_ASSERT_EQUAL(slot, i);
	}
	CU_ASSERT_EQUAL(q_serialize_take(h, "mx", 3, T0, BOOT_A, &slot, &err),
			Q_BUSY);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "3 slots"));
	/* a bigger limit opens more slots */
	CU_ASSERT_EQUAL(q_serialize_take(h, "mx", 4, T0, BOOT_A, &slot, &err), 0);
	CU_ASSERT_EQUAL(slot, 3);
	CU_ASSERT_EQUAL(q_serialize_release(h, "mx", 1, &err), 0);
	CU_ASSERT_EQUAL(q_serialize_take(h, "mx", 3, T0, BOOT_A, &slot, &err), 0);
	CU_ASSERT_EQUAL(slot, 1);
	CU_ASSERT_EQUAL(q_serialize_take(h, "mx", 3, T0, BOOT_A, &slot, &err),
			Q_BUSY);
	q_hints_close(&h);
}

/* Stale slots are taken over: dead pid, other boot, fake clock. */
static void test_takeover(void)
{
	struct q_hints *h = open_hints();
	struct q_slot s;
	const char *err;
	unsigned slot = 99;
	long dead = dead_pid();

	/* fake pid: surely dead */
	put_slot(h, "a#0", 0, dead, T0, BOOT_A);
	CU_ASSERT_EQUAL(q_serialize_take(h, "a", 1, T0, BOOT_A, &slot, &err), 0);
	CU_ASSERT_EQUAL(slot, 0);
	CU_ASSERT_EQUAL(get_slot(h, "a#0", &s), 0);
	CU_ASSERT_EQUAL(s.pid, (long)getpid());

	/* fake boot id: the holder (a live pid, pid 1) is from another boot */
	put_slot(h, "b#0", 0, 1, T0, BOOT_B);
	CU_ASSERT_EQUAL(q_serialize_take(h, "b", 1, T0, BOOT_A, &slot, &err), 0);
	CU_ASSERT_EQUAL(get_slot(h, "b#0", &s), 0);
	CU_ASSERT_STRING_EQUAL(s.boot_id, BOOT_A);
	/* ... but the same record is busy for its own boot */
	put_slot(h, "b#0", 0, 1, T0, BOOT_B);
	CU_ASSERT_EQUAL(q_serialize_take(h, "b", 1, T0, BOOT_B, &slot, &err),
			Q_BUSY);

	/* fake clock: live pid 1, this boot; 6 h is not stale, 6 h + 1 is */
	put_slot(h, "c#0", 0, 1, T0, BOOT_A);
	CU_ASSERT_EQUAL(q_serialize_take(h, "c", 1, T0 + Q_SLOT_STALE_SECS,
					 BOOT_A, &slot, &err), Q_BUSY);
	CU_ASSERT_EQUAL(q_serialize_take(h, "c", 1, T0 + Q_SLOT_STALE_SECS + 1,
					 BOOT_A, &slot, &err), 0);
	CU_ASSERT_EQUAL(get_slot(h, "c#0", &s), 0);
	CU_ASSERT_EQUAL(s.taken, T0 + Q_SLOT_STALE_SECS + 1);

	/* limit 2, first slot live and second stale: the second is taken */
	put_slot(h, "d#0", 0, 1, T0, BOOT_A);
	put_slot(h, "d#1", 1, dead, T0, BOOT_A);
	CU_ASSERT_EQUAL(q_serialize_take(h, "d", 2, T0, BOOT_A, &slot, &err), 0);
	CU_ASSERT_EQUAL(slot, 1);

	/* release only what is ours */
	put_slot(h, "e#0", 0, 1, T0, BOOT_A);
	CU_ASSERT_EQUAL(q_serialize_release(h, "e", 0, &err), Q_NOTFOUND);
	CU_ASSERT_EQUAL(get_slot(h, "e#0", &s), 0);
	CU_ASSERT_EQUAL(s.pid, 1);
	q_hints_close(&h);
}

/* qhints reboot: records of other boots go, current ones stay. */
static void test_clean(void)
{
	struct q_hints *h = open_hints();
	struct q_slot s;
	const char *err;
	size_t removed = 99, n;
	long dead = dead_pid();
	char cur[40];

	put_slot(h, "a#0", 0, 1, T0, BOOT_A);
	put_slot(h, "a#1", 1, 1, T0, BOOT_B);
	put_slot(h, "b#0", 0, dead, T0, BOOT_A);        /* stale, this boot */
	put_slot(h, "c#0", 0, 1, T0 - 7 * 3600, BOOT_A); /* stale by age */
	put_slot(h, "d#0", 0, 1, T0, BOOT_B);
	CU_ASSERT_EQUAL(q_hints_put(h, Q_DB_SERIALIZE, "x#0", 3, "\x07zz", 3,
				    &err), 0);       /* unknown version */
	CU_ASSERT_EQUAL(q_serialize_clean(h, BOOT_A, false, T0, &removed, &err), 0);
	CU_ASSERT_EQUAL(removed, 2);
	CU_ASSERT_EQUAL(get_slot(h, "a#0", &s), 0);
	CU_ASSERT_EQUAL(get_slot(h, "a#1", &s), Q_NOTFOUND);
	CU_ASSERT_EQUAL(get_slot(h, "d#0", &s), Q_NOTFOUND);
	CU_ASSERT_EQUAL(get_slot(h, "b#0", &s), 0);
	CU_ASSERT_EQUAL(q_hints_count(h, Q_DB_SERIALIZE, &n, &err), 0);
	CU_ASSERT_EQUAL(n, 4);
	/* also the stale ones of this boot */
	CU_ASSERT_EQUAL(q_serialize_clean(h, BOOT_A, true, T0, &removed, &err), 0);
	CU_ASSERT_EQUAL(removed, 2);
	CU_ASSERT_EQUAL(get_slot(h, "a#0", &s), 0);
	CU_ASSERT_EQUAL(get_slot(h, "b#0", &s), Q_NOTFOUND);
	CU_ASSERT_EQUAL(get_slot(h, "c#0", &s), Q_NOTFOUND);
	CU_ASSERT_EQUAL(q_hints_count(h, Q_DB_SERIALIZE, &n, &err), 0);
	CU_ASSERT_EQUAL(n, 2);                       /* a#0 and x#0 */
	/* boot_id NULL: the real boot; BOOT_A is another boot then */
	CU_ASSERT_EQUAL_FATAL(q_boot_id(cur, sizeof(cur), NULL), 0);
	put_slot(h, "now#0", 0, (long)getpid(), time(NULL), cur);
	CU_ASSERT_EQUAL(q_serialize_clean(h, NULL, false, time(NULL), &removed,
					  &err), 0);
	CU_ASSERT_EQUAL(removed, 1);
	CU_ASSERT_EQUAL(get_slot(h, "now#0", &s), 0);
	CU_ASSERT_EQUAL(get_slot(h, "a#0", &s), Q_NOTFOUND);
	q_hints_close(&h);
}

/* Five processes ask for two slots at once: exactly two get one. */
static void test_concurrent_take(void)
{
	struct q_hints *h = open_hints();
	int res[2], hold[2], i, got = 0, busy = 0, st;
	pid_t pids[5];

	q_hints_close(&h);
	CU_ASSERT_EQUAL_FATAL(pipe(res), 0);
	CU_ASSERT_EQUAL_FATAL(pipe(hold), 0);
	for (i = 0; i < 5; i++) {
		pids[i] = fork();
		CU_ASSERT_FATAL(pids[i] >= 0);
		if (pids[i] == 0) {
			const char *err;
			unsigned slot;
			char c;
			int r;

			close(res[0]);
			close(hold[1]);
			if ((h = open_at(db_path)) == NULL)
				_exit(2);
			r = q_serialize_take(h, "busy.example", 2, time(NULL),
					     BOOT_A, &slot, &err);
			c = r == 0 ? 'y' : r == Q_BUSY ? 'n' : 'e';
			if (write(res[1], &c, 1) != 1)
				_exit(3);
			/* hold the slot (stay alive) until the parent says */
			(void)read(hold[0], &c, 1);
			_exit(0);
		}
	}
	close(res[1]);
	close(hold[0]);
	for (i = 0; i < 5; i++) {
		char c;

		CU_ASSERT_EQUAL(read(res[0], &c, 1), 1);
		got += c == 'y';
		busy += c == 'n';
	}
	close(hold[1]);
	for (i = 0; i < 5; i++)
		waitpid(pids[i], &st, 0);
	close(res[0]);
	CU_ASSERT_EQUAL(got, 2);
	CU_ASSERT_EQUAL(busy, 3);
}

void suite_serialize(void)
{
	CU_pSuite s = CU_add_suite("serialize", NULL, NULL);

	CU_add_test(s, "staleness table (pid, boot id, clock)", test_stale_table);
	CU_add_test(s, "take and release", test_take_release);
	CU_add_test(s, "limit N > 1", test_limit_n);
	CU_add_test(s, "take over stale slots", test_takeover);
	CU_add_test(s, "clean by boot id", test_clean);
	CU_add_test(s, "concurrent takers", test_concurrent_take);
}
