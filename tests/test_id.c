/*
 * tests/test_id.c - message ids: form (a validity table), order within a
 * process, uniqueness across threads and across forked processes, the
 * time they encode and the split character.
 */
#include "config.h"
#include "q/spool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

static void test_valid_table(void)
{
	static const struct {
		const char *id;
		bool valid;
	} cases[] = {
		{ "1a2B3c-0AbC-00Zz", true },
		{ "000000-0000-0000", true },
		{ "zzzzzz-4C91-zzzz", true },   /* usec 999999 */
		{ "zzzzzz-4C92-zzzz", false },  /* usec 1000000 */
		{ "zzzzzz-zzzz-zzzz", false },
		{ "", false },
		{ "1a2B3c-0AbC-00Z", false },   /* short */
		{ "1a2B3c-0AbC-00Zzz", false }, /* long */
		{ "1a2B3c-0AbC-00Z/", false },
		{ "1a2B3c_0AbC-00Zz", false },
		{ "1a2B3c-0AbC_00Zz", false },
		{ "1a2B3c00AbC-00Zz", false },
		{ "-a2B3c-0AbC-00Zz", false },
		{ "1a2B3c-0AbC-00Z-", false },
		{ "../../etc/passwd", false },
		{ "1a2B3c-0A C-00Zz", false },
		{ "1a2B3c-0A.C-00Zz", false },
		{ "1a2B3c-0A\xc3\xa9-00Z", false },
		{ "1a2B3c-0AbC-00Zz\n", false },
		{ "1a2B3c-0AbC-00Zz-H", false },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (q_id_valid(cases[i].id) != cases[i].valid)
			fprintf(stderr, "\nid case %zu: \"%s\"\n", i, cases[i].id);
		CU_ASSERT_EQUAL(q_id_valid(cases[i].id), cases[i].valid);
	}
	CU_ASSERT_FALSE(q_id_valid(NULL));
	/* an embedded NUL stops the check early */
	CU_ASSERT_FALSE(q_id_valid("1a2B3c-0A\0C-00Zz"));
}

static void test_order_and_time(void)
{
	char prev[Q_ID_LEN + 1], id[Q_ID_LEN + 1];
	time_t before = time(NULL), t;

	q_id_new(prev);
	CU_ASSERT_TRUE(q_id_valid(prev));
	for (int i = 0; i < 20000; i++) {
		q_id_new(id);
		CU_ASSERT_TRUE_FATAL(q_id_valid(id));
		CU_ASSERT_FATAL(strcmp(prev, id) < 0);
		memcpy(prev, id, sizeof(id));
	}
	t = q_id_time(id);
	/* bumping may run ahead of the clock by a little, never behind */
	CU_ASSERT(t >= before && t <= time(NULL) + 1);
	CU_ASSERT_EQUAL(q_id_time("bad"), 0);
	CU_ASSERT_EQUAL(q_id_time("000010-0000-0000"), 62);
	/* the split character is the last of the microsecond field */
	CU_ASSERT_EQUAL(Q_ID_SPLIT_POS, 10);
	CU_ASSERT_EQUAL(id[Q_ID_SPLIT_POS + 1], '-');
}

static int cmp_ids(const void *a, const void *b)
{
	return memcmp(a, b, Q_ID_LEN);
}

/* true if the n ids (Q_ID_LEN bytes each, sorted here) are distinct */
static bool all_distinct(char (*ids)[Q_ID_LEN], size_t n)
{
	qsort(ids, n, Q_ID_LEN, cmp_ids);
	for (size_t i = 1; i < n; i++)
		if (memcmp(ids[i - 1], ids[i], Q_ID_LEN) == 0)
			return false;
	return true;
}

#define NPROC 4
#define PER 10000

static void test_unique_processes(void)
{
	static char ids[NPROC * PER][Q_ID_LEN];
	int fds[NPROC][2];
	pid_t pids[NPROC];

	for (int p = 0; p < NPROC; p++) {
		CU_ASSERT_EQUAL_FATAL(pipe(fds[p]), 0);
		pids[p] = fork();
		CU_ASSERT_FATAL(pids[p] >= 0);
		if (pids[p] == 0) {
			static char mine[PER][Q_ID_LEN];
			char id[Q_ID_LEN + 1];
			size_t off = 0;
			int bad = 0;

			close(fds[p][0]);
			for (int i = 0; i < PER; i++) {
				q_id_new(id);
				if (!q_id_valid(id) ||
				    (i > 0 && memcmp(mine[i - 1], id, Q_ID_LEN) >= 0))
					bad = 1;
				memcpy(mine[i], id, Q_ID_LEN);
			}
			while (off < sizeof(mine)) {
				ssize_t w = write(fds[p][1], (char *)mine + off,
						  sizeof(mine) - off);
				if (w <= 0)
					_exit(3);
				off += (size_t)w;
			}
			_exit(bad);
		}
		close(fds[p][1]);
	}
	for (int p = 0; p < NPROC; p++) {
		size_t off = 0, want = PER * Q_ID_LEN;
		char *dst = (char *)ids[p * PER];
		int st;

		while (off < want) {
			ssize_t r = read(fds[p][0], dst + off, want - off);
			if (r <= 0)
				break;
			off += (size_t)r;
		}
		close(fds[p][0]);
		CU_ASSERT_EQUAL(off, want);
		CU_ASSERT_EQUAL(waitpid(pids[p], &st, 0), pids[p]);
		CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	CU_ASSERT_TRUE(all_distinct(ids, NPROC * PER));
}

struct thr {
	char (*ids)[Q_ID_LEN];
};

static void *thr_main(void *arg)
{
	struct thr *t = arg;
	char id[Q_ID_LEN + 1];

	for (int i = 0; i < PER; i++) {
		q_id_new(id);
		memcpy(t->ids[i], id, Q_ID_LEN);
	}
	return NULL;
}

static void test_unique_threads(void)
{
	static char ids[NPROC * PER][Q_ID_LEN];
	pthread_t th[NPROC];
	struct thr t[NPROC];

	for (int i = 0; i < NPROC; i++) {
		t[i].ids = &ids[i * PER];
		CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, thr_main, &t[i]), 0);
	}
	for (int i = 0; i < NPROC; i++)
		pthread_join(th[i], NULL);
	CU_ASSERT_TRUE(all_distinct(ids, NPROC * PER));
}

/* An id made in a child after the parent's compares greater. */
static void test_order_across_fork(void)
{
	char a[Q_ID_LEN + 1];
	int fd[2], st;
	pid_t pid;

	q_id_new(a);
	CU_ASSERT_EQUAL_FATAL(pipe(fd), 0);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		char b[Q_ID_LEN + 1];
		q_id_new(b);
		_exit(write(fd[1], b, Q_ID_LEN) == Q_ID_LEN ? 0 : 1);
	}
	close(fd[1]);
	char b[Q_ID_LEN + 1] = { 0 };
	CU_ASSERT_EQUAL(read(fd[0], b, Q_ID_LEN), Q_ID_LEN);
	close(fd[0]);
	waitpid(pid, &st, 0);
	CU_ASSERT_TRUE(q_id_valid(b));
	CU_ASSERT(strcmp(a, b) < 0);
	CU_ASSERT(strcmp(a + 12, b + 12) != 0);   /* different pid field */
}

void suite_id(void)
{
	CU_pSuite s = CU_add_suite("id", NULL, NULL);

	CU_add_test(s, "validity table", test_valid_table);
	CU_add_test(s, "order within a process, time", test_order_and_time);
	CU_add_test(s, "unique across 4 processes x 10000", test_unique_processes);
	CU_add_test(s, "unique across 4 threads x 10000", test_unique_threads);
	CU_add_test(s, "order across fork", test_order_across_fork);
}
