/*
 * tests/test_hints.c - suite "hints": the Berkeley DB environment
 * (open, reopen, modes, recovery after SIGKILL, two writer processes,
 * threads, corrupt files), the generic operations, the wait lists, the
 * record codec, and a benchmark line (iteration and count of 100,000
 * records; printed, not asserted).
 */
#include "config.h"

#include "q/hints.h"
#include "q/log.h"
#include "q/addr.h"
#include "q/util.h"
#include "q_private.h"
#include "tlib.h"

#include <CUnit/CUnit.h>

#include <dirent.h>
#include <sched.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define T_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define T_SANITIZED 1
#endif
#endif
#ifndef T_SANITIZED
#define T_SANITIZED 0
#endif

/* ---- helpers ---- */

static char *db_dir(void)
{
	static char path[4096];
	char *t = t_tmpdir();

	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	snprintf(path, sizeof(path), "%s/db", t);
	return path;
}

static struct q_hints *open_ok(const char *dir)
{
	struct q_hints *h = NULL;
	const char *notice = NULL, *err = NULL;
	int r = q_hints_open(dir, "smtp", &h, &notice, &err);

	if (r != 0)
		fprintf(stderr, "q_hints_open %s: %s\n", dir, err);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	CU_ASSERT_PTR_NULL(notice);
	if (notice != NULL)
		fprintf(stderr, "unexpected notice: %s\n", notice);
	return h;
}

static int put_s(struct q_hints *h, enum q_db db, const char *k, const char *v)
{
	const char *err;
	int r = q_hints_put(h, db, k, strlen(k), v, strlen(v), &err);

	if (r != 0)
		fprintf(stderr, "put %s: %s\n", k, err);
	return r;
}

/* get as a string: 0 and the value in b, or Q_NOTFOUND / -1 */
static int get_s(struct q_hints *h, enum q_db db, const char *k, struct q_buf *b)
{
	const char *err;
	int r = q_hints_get(h, db, k, strlen(k), b, &err);

	if (r < 0)
		fprintf(stderr, "get %s: %s\n", k, err);
	return r;
}

static bool get_eq(struct q_hints *h, enum q_db db, const char *k, const char *want)
{
	struct q_buf b = { 0 };
	bool ok = get_s(h, db, k, &b) == 0 && b.len == strlen(want) &&
		  memcmp(b.data, want, b.len) == 0;

	q_buf_free(&b);
	return ok;
}

static size_t count(struct q_hints *h, enum q_db db)
{
	const char *err;
	size_t n = 12345678;

	if (q_hints_count(h, db, &n, &err) != 0)
		fprintf(stderr, "count: %s\n", err);
	return n;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- open, close, modes, names ---- */

static void check_modes(const char *dir)
{
	struct stat st;
	struct dirent *de;
	DIR *d;
	char p[4400];
	int files = 0;

	CU_ASSERT_EQUAL_FATAL(stat(dir, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 07777, 0700);
	d = opendir(dir);
	CU_ASSERT_PTR_NOT_NULL_FATAL(d);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		CU_ASSERT_EQUAL(lstat(p, &st), 0);
		CU_ASSERT_TRUE(S_ISREG(st.st_mode));
		if ((st.st_mode & 077) != 0)
			fprintf(stderr, "%s has mode %o\n", p, st.st_mode & 07777);
		CU_ASSERT_EQUAL(st.st_mode & 077, 0);
		files++;
	}
	closedir(d);
	CU_ASSERT(files >= 7);   /* 5 databases, regions, log, locks */
}

static void test_open_reopen(void)
{
	char *dir = db_dir();
	struct q_hints *h, *h2;
	mode_t old = umask(0);   /* modes must not depend on the umask */
	int i;

	h = open_ok(dir);
	CU_ASSERT_EQUAL(put_s(h, Q_DB_RETRY, "T:mx:192.0.2.1", "one"), 0);
	/* a second handle in the same process shares the environment */
	h2 = open_ok(dir);
	CU_ASSERT_TRUE(get_eq(h2, Q_DB_RETRY, "T:mx:192.0.2.1", "one"));
	q_hints_close(&h2);
	CU_ASSERT_PTR_NULL(h2);
	CU_ASSERT_TRUE(get_eq(h, Q_DB_RETRY, "T:mx:192.0.2.1", "one"));
	q_hints_close(&h);
	q_hints_close(&h);   /* NULL: no-op */
	umask(old);
	check_modes(dir);
	for (i = 0; i < 3; i++) {
		h = open_ok(dir);
		CU_ASSERT_TRUE(get_eq(h, Q_DB_RETRY, "T:mx:192.0.2.1", "one"));
		q_hints_close(&h);
	}
	/* A clean last close stamps the regions; the next opener keeps
	 * them (same inode) and removes the stamp while it is inside. */
	{
		char p1[4200], p2[4200], p3[4200];
		struct stat a, b;

		snprintf(p1, sizeof(p1), "%s/qkit.regions", dir);
		snprintf(p2, sizeof(p2), "%s/__db.001", dir);
		snprintf(p3, sizeof(p3), "%s/old-region", dir);
		CU_ASSERT_EQUAL(stat(p1, &a), 0);
		/* a second name keeps the old inode from being reused */
		CU_ASSERT_EQUAL_FATAL(link(p2, p3), 0);
		CU_ASSERT_EQUAL_FATAL(stat(p3, &a), 0);
		h = open_ok(dir);
		CU_ASSERT_NOT_EQUAL(stat(p1, &b), 0);
		CU_ASSERT_EQUAL(stat(p2, &b), 0);
		CU_ASSERT_EQUAL(a.st_ino, b.st_ino);
		q_hints_close(&h);
		/* touched after the stamp: thrown away, made anew */
		CU_ASSERT_EQUAL(utimensat(AT_FDCWD, p2, NULL, 0), 0);
		h = open_ok(dir);
		CU_ASSERT_EQUAL(stat(p2, &b), 0);
		CU_ASSERT_NOT_EQUAL(a.st_ino, b.st_ino);
		CU_ASSERT_TRUE(get_eq(h, Q_DB_RETRY, "T:mx:192.0.2.1", "one"));
		q_hints_close(&h);
		unlink(p3);
	}
}

static void test_names(void)
{
	static const struct {
		const char *name;
		int ok;
		enum q_db db;
	} cases[] = {
		{ "index", 1, Q_DB_INDEX },
		{ "retry", 1, Q_DB_RETRY },
		{ "wait", 1, Q_DB_WAIT },
		{ "wait-lmtp", 1, Q_DB_WAIT },
		{ "serialize", 1, Q_DB_SERIALIZE },
		{ "serialize-lmtp", 1, Q_DB_SERIALIZE },
		{ "sessions", 1, Q_DB_SESSIONS },
		{ "wait-smtp", 0, 0 },
		{ "retries", 0, 0 },
		{ "", 0, 0 },
	};
	static const char *const bad_transports[] = {
		"", "a/b", "..", "-x", "sm tp", "x\n",
		"abcdefghijklmnopqrstuvwxyz0123456789",
	};
	char *dir = db_dir();
	struct q_hints *h = NULL;
	const char *err, *notice;
	enum q_db db;
	size_t i;

	for (i = 0; i < sizeof(bad_transports) / sizeof(*bad_transports); i++) {
		CU_ASSERT_EQUAL(q_hints_open(dir, bad_transports[i], &h, &notice,
					     &err), -1);
		CU_ASSERT_PTR_NULL(h);
	}
	CU_ASSERT_EQUAL_FATAL(q_hints_open(dir, "lmtp", &h, &notice, &err), 0);
	CU_ASSERT_STRING_EQUAL(q_hints_db_name(h, Q_DB_WAIT), "wait-lmtp");
	CU_ASSERT_STRING_EQUAL(q_hints_db_name(h, Q_DB_SERIALIZE), "serialize-lmtp");
	CU_ASSERT_STRING_EQUAL(q_hints_db_name(h, Q_DB_INDEX), "index");
	CU_ASSERT_STRING_EQUAL(q_hints_db_name(h, Q_DB_SESSIONS), "sessions");
	for (i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		int r = q_hints_db_lookup(h, cases[i].name, &db, &err);

		CU_ASSERT_EQUAL(r, cases[i].ok ? 0 : -1);
		if (r == 0 && cases[i].ok)
			CU_ASSERT_EQUAL(db, cases[i].db);
		if (r < 0)
			CU_ASSERT_PTR_NOT_NULL(strstr(err, "no hints database"));
	}
	q_hints_close(&h);
}

/* A path that cannot be a directory: an error, never a crash. */
static void test_open_errors(void)
{
	char *t = t_tmpdir(), p[4200];
	struct q_hints *h = NULL;
	const char *err = NULL, *notice = NULL;

	snprintf(p, sizeof(p), "%s/file", t);
	CU_ASSERT_EQUAL_FATAL(t_write_file(p, "x"), 0);
	CU_ASSERT_EQUAL(q_hints_open(p, "smtp", &h, &notice, &err), -1);
	CU_ASSERT_PTR_NULL(h);
	CU_ASSERT_PTR_NOT_NULL(err);
	snprintf(p, sizeof(p), "%s/no/such/db", t);
	CU_ASSERT_EQUAL(q_hints_open(p, "smtp", &h, &notice, &err), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "No such file"));
}

/* ---- put, get, del, update ---- */

static int upd_append(const void *old, size_t oldlen, struct q_buf *out,
		      void *ctx)
{
	const char *what = ctx;

	if (strcmp(what, "keep") == 0)
		return Q_HINTS_KEEP;
	if (strcmp(what, "delete") == 0)
		return Q_HINTS_DELETE;
	if (strcmp(what, "fail") == 0)
		return q_err(NULL, "the callback says no");
	if (old != NULL)
		q_buf_add(out, old, oldlen);
	q_buf_adds(out, what);
	return Q_HINTS_PUT;
}

static void test_crud(void)
{
	static const struct {
		const char *op;     /* put get del upd */
		const char *key;
		const char *arg;    /* value / update action */
		int ret;
		const char *want;   /* value after, NULL = absent */
	} cases[] = {
		{ "get", "a", NULL, Q_NOTFOUND, NULL },
		{ "del", "a", NULL, Q_NOTFOUND, NULL },
		{ "put", "a", "1", 0, "1" },
		{ "get", "a", NULL, 0, "1" },
		{ "put", "a", "22", 0, "22" },
		{ "upd", "a", "x", 0, "22x" },
		{ "upd", "a", "keep", 0, "22x" },
		{ "upd", "a", "fail", -1, "22x" },
		{ "upd", "a", "delete", 0, NULL },
		{ "upd", "a", "delete", 0, NULL },
		{ "upd", "b", "new", 0, "new" },
		{ "upd", "c", "keep", 0, NULL },
		{ "put", "\x01\xff binary", "v", 0, "v" },
		{ "del", "\x01\xff binary", NULL, 0, NULL },
		{ "del", "b", NULL, 0, NULL },
		{ "put", "empty", "", 0, "" },
	};
	char *dir = db_dir();
	struct q_hints *h = open_ok(dir);
	struct q_buf b = { 0 };
	const char *err;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		const char *k = cases[i].key;
		size_t kl = strlen(k);
		int r = -9;

		if (strcmp(cases[i].op, "put") == 0)
			r = q_hints_put(h, Q_DB_RETRY, k, kl, cases[i].arg,
					strlen(cases[i].arg), &err);
		else if (strcmp(cases[i].op, "get") == 0)
			r = q_hints_get(h, Q_DB_RETRY, k, kl, &b, &err);
		else if (strcmp(cases[i].op, "del") == 0)
			r = q_hints_del(h, Q_DB_RETRY, k, kl, &err);
		else
			r = q_hints_update(h, Q_DB_RETRY, k, kl, upd_append,
					   (void *)cases[i].arg, &err);
		if (r != cases[i].ret)
			fprintf(stderr, "crud case %zu: %d, want %d\n", i, r,
				cases[i].ret);
		CU_ASSERT_EQUAL(r, cases[i].ret);
		if (r < 0 && strcmp(cases[i].arg ? cases[i].arg : "", "fail") == 0)
			CU_ASSERT_STRING_EQUAL(err, "the callback says no");
		r = q_hints_get(h, Q_DB_RETRY, k, kl, &b, &err);
		if (cases[i].want == NULL) {
			CU_ASSERT_EQUAL(r, Q_NOTFOUND);
		} else {
			CU_ASSERT_EQUAL(r, 0);
			CU_ASSERT_EQUAL(b.len, strlen(cases[i].want));
			CU_ASSERT_STRING_EQUAL(b.data, cases[i].want);
		}
	}
	/* bad arguments */
	CU_ASSERT_EQUAL(q_hints_put(h, Q_DB_RETRY, "", 0, "v", 1, &err), -1);
	CU_ASSERT_EQUAL(q_hints_get(h, (enum q_db)99, "k", 1, &b, &err), -1);
	CU_ASSERT_EQUAL(q_hints_update(h, Q_DB_WAIT, "k", 1, upd_append, "x",
				       &err), -1);
	/* a value larger than the first receive buffer */
	{
		size_t n = 300000;
		char *big = malloc(n);

		CU_ASSERT_PTR_NOT_NULL_FATAL(big);
		for (i = 0; i < n; i++)
			big[i] = (char)('a' + i % 26);
		CU_ASSERT_EQUAL(q_hints_put(h, Q_DB_INDEX, "big", 3, big, n, &err), 0);
		CU_ASSERT_EQUAL(q_hints_get(h, Q_DB_INDEX, "big", 3, &b, &err), 0);
		CU_ASSERT_EQUAL(b.len, n);
		CU_ASSERT_EQUAL(memcmp(b.data, big, n), 0);
		free(big);
	}
	q_buf_free(&b);
	q_hints_close(&h);
}

/* ---- iteration, prefix, count, truncate ---- */

struct collect {
	size_t n;
	size_t stop_at;
	char last[64];
	bool ordered;
	struct q_hints *h;    /* delete while walking, when set */
	enum q_db db;
	size_t vbytes;
};

static int collect_fn(const void *key, size_t klen, const void *val,
		      size_t vlen, void *vctx)
{
	struct collect *c = vctx;
	char k[64];

	(void)val;
	snprintf(k, sizeof(k), "%.*s", (int)(klen < 63 ? klen : 63), (const char *)key);
	if (c->n > 0 && strcmp(k, c->last) <= 0)
		c->ordered = false;
	memcpy(c->last, k, sizeof(k));
	c->n++;
	c->vbytes += vlen;
	if (c->h != NULL) {
		const char *err;

		if (q_hints_del(c->h, c->db, key, klen, &err) != 0)
			return q_err(NULL, "delete during walk: %s", err);
	}
	return c->stop_at > 0 && c->n >= c->stop_at ? 1 : 0;
}

static void test_iter_prefix_count(void)
{
	static const struct {
		const char *prefix;
		size_t want;
	} cases[] = {
		{ NULL, 1000 + 3 },
		{ "k", 1000 },
		{ "k00", 100 },
		{ "k001", 10 },
		{ "k0012", 1 },
		{ "k00123", 0 },
		{ "a", 0 },
		{ "z", 0 },
		{ "m", 3 },
		{ "m\xff", 1 },
	};
	char *dir = db_dir();
	struct q_hints *h = open_ok(dir);
	struct collect c;
	const char *err;
	char k[32], v[64];
	size_t i;

	for (i = 0; i < 1000; i++) {
		snprintf(k, sizeof(k), "k%04zu", (i * 7919) % 1000);
		snprintf(v, sizeof(v), "value of %s", k);
		CU_ASSERT_EQUAL_FATAL(put_s(h, Q_DB_RETRY, k, v), 0);
	}
	CU_ASSERT_EQUAL(put_s(h, Q_DB_RETRY, "m", "1"), 0);
	CU_ASSERT_EQUAL(put_s(h, Q_DB_RETRY, "m1", "1"), 0);
	CU_ASSERT_EQUAL(put_s(h, Q_DB_RETRY, "m\xff\xff", "1"), 0);
	CU_ASSERT_EQUAL(count(h, Q_DB_RETRY), 1003);
	CU_ASSERT_EQUAL(count(h, Q_DB_INDEX), 0);
	for (i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		memset(&c, 0, sizeof(c));
		c.ordered = true;
		CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_RETRY, cases[i].prefix,
					     cases[i].prefix ? strlen(cases[i].prefix) : 0,
					     collect_fn, &c, &err), 0);
		if (c.n != cases[i].want)
			fprintf(stderr, "prefix %s: %zu, want %zu\n",
				cases[i].prefix, c.n, cases[i].want);
		CU_ASSERT_EQUAL(c.n, cases[i].want);
		CU_ASSERT_TRUE(c.ordered);
	}
	/* stop early */
	memset(&c, 0, sizeof(c));
	c.stop_at = 17;
	CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_RETRY, NULL, 0, collect_fn, &c, &err), 0);
	CU_ASSERT_EQUAL(c.n, 17);
	CU_ASSERT_STRING_EQUAL(c.last, "k0016");
	/* the callback may write: delete every key as it is visited */
	memset(&c, 0, sizeof(c));
	c.h = h;
	c.db = Q_DB_RETRY;
	c.ordered = true;
	CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_RETRY, "k", 1, collect_fn, &c, &err), 0);
	CU_ASSERT_EQUAL(c.n, 1000);
	CU_ASSERT_TRUE(c.ordered);
	CU_ASSERT_EQUAL(count(h, Q_DB_RETRY), 3);
	/* a callback error stops the walk with its text */
	{
		struct collect bad;

		memset(&bad, 0, sizeof(bad));
		bad.h = h;
		bad.db = (enum q_db)77;
		CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_RETRY, NULL, 0, collect_fn,
					     &bad, &err), -1);
		CU_ASSERT_PTR_NOT_NULL(strstr(err, "delete during walk"));
	}
	/* truncate */
	CU_ASSERT_EQUAL(q_hints_truncate(h, Q_DB_RETRY, &err), 0);
	CU_ASSERT_EQUAL(count(h, Q_DB_RETRY), 0);
	memset(&c, 0, sizeof(c));
	CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_RETRY, NULL, 0, collect_fn, &c, &err), 0);
	CU_ASSERT_EQUAL(c.n, 0);
	CU_ASSERT_EQUAL(q_hints_truncate(h, Q_DB_RETRY, &err), 0);
	q_hints_close(&h);
}

/* Records larger than the bulk buffer; keys that are prefixes of others. */
static void test_iter_big_values(void)
{
	char *dir = db_dir();
	struct q_hints *h = open_ok(dir);
	struct collect c;
	const char *err;
	size_t n = 700000, i;
	char *big = malloc(n);

	CU_ASSERT_PTR_NOT_NULL_FATAL(big);
	memset(big, 'x', n);
	for (i = 0; i < 5; i++) {
		char k[16];

		snprintf(k, sizeof(k), "b%zu", i);
		CU_ASSERT_EQUAL(q_hints_put(h, Q_DB_INDEX, k, strlen(k), big,
					    n - i * 1000, &err), 0);
	}
	memset(&c, 0, sizeof(c));
	c.ordered = true;
	CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_INDEX, NULL, 0, collect_fn, &c, &err), 0);
	CU_ASSERT_EQUAL(c.n, 5);
	CU_ASSERT_EQUAL(c.vbytes, 5 * n - 10000);
	CU_ASSERT_TRUE(c.ordered);
	free(big);
	q_hints_close(&h);
}

/* ---- wait lists ---- */

static void test_wait(void)
{
	static const struct {
		const char *op;     /* add del */
		const char *host, *id;
		int ret;
	} cases[] = {
		{ "add", "mx1", "0003", 0 },
		{ "add", "mx1", "0001", 0 },
		{ "add", "mx1", "0002", 0 },
		{ "add", "mx1", "0002", 0 },     /* twice: one pair */
		{ "add", "mx2", "0001", 0 },
		{ "add", "mx10", "0009", 0 },
		{ "del", "mx1", "0004", Q_NOTFOUND },
		{ "del", "mx3", "0001", Q_NOTFOUND },
		{ "del", "mx2", "0001", 0 },
		{ "del", "mx2", "0001", Q_NOTFOUND },
		{ "add", "mx1", "0000", 0 },
	};
	char *dir = db_dir();
	struct q_hints *h = open_ok(dir);
	const char *err;
	char **ids = NULL;
	size_t n = 0, i;

	for (i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		int r = strcmp(cases[i].op, "add") == 0
			? q_wait_add(h, cases[i].host, cases[i].id, &err)
			: q_wait_del(h, cases[i].host, cases[i].id, &err);

		if (r != cases[i].ret)
			fprintf(stderr, "wait case %zu: %d\n", i, r);
		CU_ASSERT_EQUAL(r, cases[i].ret);
	}
	CU_ASSERT_EQUAL(q_wait_list(h, "mx1", 0, &ids, &n, &err), 0);
	CU_ASSERT_EQUAL_FATAL(n, 4);
	CU_ASSERT_STRING_EQUAL(ids[0], "0000");
	CU_ASSERT_STRING_EQUAL(ids[1], "0001");
	CU_ASSERT_STRING_EQUAL(ids[2], "0002");
	CU_ASSERT_STRING_EQUAL(ids[3], "0003");
	/* appends, at most max */
	CU_ASSERT_EQUAL(q_wait_list(h, "mx10", 0, &ids, &n, &err), 0);
	CU_ASSERT_EQUAL_FATAL(n, 5);
	CU_ASSERT_STRING_EQUAL(ids[4], "0009");
	q_strv_free(&ids, n);
	n = 0;
	CU_ASSERT_EQUAL(q_wait_list(h, "mx1", 2, &ids, &n, &err), 0);
	CU_ASSERT_EQUAL(n, 2);
	q_strv_free(&ids, n);
	n = 0;
	CU_ASSERT_EQUAL(q_wait_list(h, "nobody", 0, &ids, &n, &err), 0);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_EQUAL(q_wait_list(h, "", 0, &ids, &n, &err), -1);
	CU_ASSERT_EQUAL(q_wait_add(h, "mx1", "", &err), -1);
	/* count and iteration see pairs */
	CU_ASSERT_EQUAL(count(h, Q_DB_WAIT), 5);
	{
		struct collect c;

		memset(&c, 0, sizeof(c));
		CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_WAIT, "mx1", 3, collect_fn,
					     &c, &err), 0);
		CU_ASSERT_EQUAL(c.n, 5);    /* mx1 x4 and mx10 */
	}
	/* deleting the key deletes every id */
	CU_ASSERT_EQUAL(q_hints_del(h, Q_DB_WAIT, "mx1", 3, &err), 0);
	CU_ASSERT_EQUAL(count(h, Q_DB_WAIT), 1);
	CU_ASSERT_EQUAL(q_hints_del(h, Q_DB_WAIT, "mx1", 3, &err), Q_NOTFOUND);
	q_hints_close(&h);
}

/* Many ids under one host: the walk resumes inside a duplicate set. */
struct wait_walk {
	size_t n;
	char last[80];
	bool ordered;
};

static int wait_walk_fn(const void *key, size_t klen, const void *val,
			size_t vlen, void *vctx)
{
	struct wait_walk *w = vctx;
	char pair[80];

	snprintf(pair, sizeof(pair), "%.*s %.*s", (int)klen, (const char *)key,
		 (int)vlen, (const char *)val);
	if (w->n > 0 && strcmp(pair, w->last) <= 0)
		w->ordered = false;
	memcpy(w->last, pair, sizeof(pair));
	w->n++;
	return 0;
}

static void test_wait_many(void)
{
	char *dir = db_dir();
	struct q_hints *h = open_ok(dir);
	struct wait_walk w = { .ordered = true };
	const char *err;
	char **ids = NULL, id[40];
	size_t n = 0, i, total = T_SANITIZED ? 8000 : 30000;

	for (i = 0; i < total; i++) {
		snprintf(id, sizeof(id), "1%07zu-abcdefghijklmnop", i);
		CU_ASSERT_EQUAL_FATAL(q_wait_add(h, i % 10 == 9 ? "b.example"
						 : "a.example", id, &err), 0);
	}
	CU_ASSERT_EQUAL(count(h, Q_DB_WAIT), total);
	CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_WAIT, NULL, 0, wait_walk_fn, &w,
				     &err), 0);
	CU_ASSERT_EQUAL(w.n, total);
	CU_ASSERT_TRUE(w.ordered);
	CU_ASSERT_EQUAL(q_wait_list(h, "a.example", 0, &ids, &n, &err), 0);
	CU_ASSERT_EQUAL(n, total - total / 10);
	for (i = 1; i < n; i++)
		CU_ASSERT_FATAL(strcmp(ids[i - 1], ids[i]) < 0);
	q_strv_free(&ids, n);
	q_hints_close(&h);
}

/* Batches: many puts and deletes per transaction, cut at
 * Q_HINTS_BATCH_MAX; absent keys and pairs are no error. */
static void test_batch(void)
{
	char *dir = db_dir();
	struct q_hints *h = open_ok(dir);
	const char *err;
	size_t total = 3 * Q_HINTS_BATCH_MAX + 7, i;
	struct q_hints_item *it = calloc(total + 2, sizeof(*it));
	char (*ids)[24] = calloc(total, sizeof(*ids));
	char **got = NULL;
	size_t n = 0;
	struct q_buf v = { 0 };

	CU_ASSERT_FATAL(it != NULL && ids != NULL);
	for (i = 0; i < total; i++) {
		snprintf(ids[i], sizeof(ids[i]), "id%06zu", i);
		it[i] = (struct q_hints_item){ Q_HINTS_BPUT, i % 2 ? "mx2" : "mx1",
					       ids[i], 3, strlen(ids[i]) };
	}
	CU_ASSERT_EQUAL(q_hints_batch(h, Q_DB_WAIT, it, total, &err), 0);
	CU_ASSERT_EQUAL(count(h, Q_DB_WAIT), total);
	/* again: pairs are not doubled */
	CU_ASSERT_EQUAL(q_hints_batch(h, Q_DB_WAIT, it, total, &err), 0);
	CU_ASSERT_EQUAL(count(h, Q_DB_WAIT), total);
	/* delete every mx1 pair and one that is not there */
	n = 0;
	for (i = 0; i < total; i += 2)
		it[n++] = (struct q_hints_item){ Q_HINTS_BDEL, "mx1", ids[i], 3,
						 strlen(ids[i]) };
	it[n++] = (struct q_hints_item){ Q_HINTS_BDEL, "mx1", "nothere", 3, 7 };
	CU_ASSERT_EQUAL(q_hints_batch(h, Q_DB_WAIT, it, n, &err), 0);
	n = 0;
	CU_ASSERT_EQUAL(q_wait_list(h, "mx1", 0, &got, &n, &err), 0);
	CU_ASSERT_EQUAL(n, 0);
	q_strv_free(&got, n);
	n = 0;
	CU_ASSERT_EQUAL(q_wait_list(h, "mx2", 0, &got, &n, &err), 0);
	CU_ASSERT_EQUAL(n, total / 2);
	q_strv_free(&got, n);
	/* plain database: put, replace, delete, delete of an absent key */
	it[0] = (struct q_hints_item){ Q_HINTS_BPUT, "k1", "a", 2, 1 };
	it[1] = (struct q_hints_item){ Q_HINTS_BPUT, "k1", "bb", 2, 2 };
	it[2] = (struct q_hints_item){ Q_HINTS_BPUT, "k2", "c", 2, 1 };
	it[3] = (struct q_hints_item){ Q_HINTS_BDEL, "k2", NULL, 2, 0 };
	it[4] = (struct q_hints_item){ Q_HINTS_BDEL, "k3", NULL, 2, 0 };
	CU_ASSERT_EQUAL(q_hints_batch(h, Q_DB_RETRY, it, 5, &err), 0);
	CU_ASSERT_EQUAL(q_hints_get(h, Q_DB_RETRY, "k1", 2, &v, &err), 0);
	CU_ASSERT(v.len == 2 && memcmp(v.data, "bb", 2) == 0);
	CU_ASSERT_EQUAL(q_hints_get(h, Q_DB_RETRY, "k2", 2, &v, &err), Q_NOTFOUND);
	/* a bad item: nothing is done */
	it[0] = (struct q_hints_item){ Q_HINTS_BPUT, "k4", "x", 2, 1 };
	it[1] = (struct q_hints_item){ (enum q_hints_bop)7, "k5", "x", 2, 1 };
	CU_ASSERT_EQUAL(q_hints_batch(h, Q_DB_RETRY, it, 2, &err), -1);
	CU_ASSERT_EQUAL(q_hints_get(h, Q_DB_RETRY, "k4", 2, &v, &err), Q_NOTFOUND);
	q_buf_free(&v);
	free(it);
	free(ids);
	q_hints_close(&h);
}

/* ---- record codec ---- */

static void test_rec_codec(void)
{
	struct q_buf b = { 0 };
	struct q_rec_reader r;
	char *s;
	size_t cut;

	CU_ASSERT_EQUAL(q_rec_put_u8(&b, 1), 0);
	CU_ASSERT_EQUAL(q_rec_put_u32(&b, 0x01020304u), 0);
	CU_ASSERT_EQUAL(q_rec_put_u64(&b, 0x1122334455667788ull), 0);
	CU_ASSERT_EQUAL(q_rec_put_str(&b, "hello"), 0);
	CU_ASSERT_EQUAL(q_rec_put_str(&b, NULL), 0);
	CU_ASSERT_EQUAL(b.len, 1 + 4 + 8 + 4 + 5 + 4);
	/* little-endian on the wire */
	CU_ASSERT_EQUAL((unsigned char)b.data[1], 0x04);
	CU_ASSERT_EQUAL((unsigned char)b.data[4], 0x01);
	CU_ASSERT_EQUAL((unsigned char)b.data[5], 0x88);
	CU_ASSERT_EQUAL((unsigned char)b.data[13], 5);

	q_rec_reader_init(&r, b.data, b.len);
	CU_ASSERT_EQUAL(q_rec_get_u8(&r), 1);
	CU_ASSERT_EQUAL(q_rec_get_u32(&r), 0x01020304u);
	CU_ASSERT_EQUAL(q_rec_get_u64(&r), 0x1122334455667788ull);
	s = q_rec_get_str(&r);
	CU_ASSERT_STRING_EQUAL(s, "hello");
	free(s);
	s = q_rec_get_str(&r);
	CU_ASSERT_STRING_EQUAL(s, "");
	free(s);
	CU_ASSERT_FALSE(r.bad);
	CU_ASSERT_EQUAL(r.left, 0);
	CU_ASSERT_EQUAL(q_rec_get_u8(&r), 0);
	CU_ASSERT_TRUE(r.bad);

	/* every truncation fails cleanly, never reads past the end */
	for (cut = 0; cut < b.len; cut++) {
		char *copy = malloc(cut + 1);
		char *s1, *s2;

		memcpy(copy, b.data, cut);
		q_rec_reader_init(&r, copy, cut);
		(void)q_rec_get_u8(&r);
		(void)q_rec_get_u32(&r);
		(void)q_rec_get_u64(&r);
		s1 = q_rec_get_str(&r);
		s2 = q_rec_get_str(&r);
		CU_ASSERT_TRUE(r.bad);
		CU_ASSERT_PTR_NULL(s2);
		free(s1);
		free(s2);
		free(copy);
	}
	/* a length beyond the record, an absurd length, a NUL inside */
	{
		static const unsigned char huge[] = { 0xff, 0xff, 0xff, 0x7f, 'a' };
		static const unsigned char over[] = { 3, 0, 0, 0, 'a', 'b' };
		static const unsigned char nul[] = { 3, 0, 0, 0, 'a', 0, 'b' };
		static const unsigned char ok[] = { 2, 0, 0, 0, 'a', 'b' };
		static const struct {
			const unsigned char *p;
			size_t n;
			bool bad;
		} cases[] = {
			{ huge, sizeof(huge), true },
			{ over, sizeof(over), true },
			{ nul, sizeof(nul), true },
			{ ok, sizeof(ok), false },
			{ NULL, 0, true },
		};
		size_t i;

		for (i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
			q_rec_reader_init(&r, cases[i].p, cases[i].n);
			s = q_rec_get_str(&r);
			CU_ASSERT_EQUAL(r.bad, cases[i].bad);
			CU_ASSERT_EQUAL(s == NULL, cases[i].bad);
			free(s);
		}
	}
	q_buf_free(&b);
}

/* ---- unknown record versions are reported and skipped ---- */

static int count_sessions(const struct q_session_rec *s, void *ctx)
{
	(void)s;
	(*(size_t *)ctx)++;
	return 0;
}

static void test_unknown_version(void)
{
	char *dir = db_dir();
	struct q_hints *h = open_ok(dir);
	struct q_session_rec s;
	struct q_slot slot;
	const char *err;
	size_t n = 0;
	unsigned got;
	static const char v2[] = "\x02 future session record";
	static const char v9[] = "\x09 future slot record";

	CU_ASSERT_EQUAL(q_hints_put(h, Q_DB_SESSIONS, "1.0", 3, v2,
				    sizeof(v2) - 1, &err), 0);
	CU_ASSERT_EQUAL(q_session_decode(v2, sizeof(v2) - 1, &s, &err), -1);
	CU_ASSERT_STRING_EQUAL(err, "unknown record version 2");
	CU_ASSERT_EQUAL(q_session_list(h, count_sessions, &n, &err), 0);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_EQUAL(count(h, Q_DB_SESSIONS), 1);     /* skipped, kept */

	CU_ASSERT_EQUAL(q_slot_decode(v9, sizeof(v9) - 1, &slot, &err), -1);
	CU_ASSERT_STRING_EQUAL(err, "unknown record version 9");
	CU_ASSERT_EQUAL(q_hints_put(h, Q_DB_SERIALIZE, "mx#0", 4, v9,
				    sizeof(v9) - 1, &err), 0);
	/* never taken over: the slot counts as held, and the text says why */
	CU_ASSERT_EQUAL(q_serialize_take(h, "mx", 1, time(NULL), NULL, &got,
					 &err), Q_BUSY);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "unknown record version 9"));
	CU_ASSERT_EQUAL(q_serialize_take(h, "mx", 2, time(NULL), NULL, &got,
					 &err), 0);
	CU_ASSERT_EQUAL(got, 1);
	/* an empty value is no record either */
	CU_ASSERT_EQUAL(q_slot_decode("", 0, &slot, &err), -1);
	q_hints_close(&h);
}

/* ---- processes ---- */

/* Lock wait bounds (internal to q_hints.c; tests shorten them). */
void q_hints_tune(unsigned wait_ms, unsigned timeouts);

/* Child: writes records "p<i>" and bumps "counter" in a loop; tells the
 * parent through fd after `ready` rounds. Never returns. */
static int bump(const void *old, size_t oldlen, struct q_buf *out, void *ctx)
{
	char v[32];
	unsigned long n = 0;

	(void)ctx;
	if (old != NULL) {
		snprintf(v, sizeof(v), "%.*s", (int)(oldlen < 31 ? oldlen : 31),
			 (const char *)old);
		n = strtoul(v, NULL, 10);
	}
	snprintf(v, sizeof(v), "%lu", n + 1);
	q_buf_adds(out, v);
	return Q_HINTS_PUT;
}

static void writer_child(const char *dir, int fd, long ready, long rounds)
{
	struct q_hints *h = NULL;
	const char *err, *notice;
	char k[48], v[160];
	long i;

	if (q_hints_open(dir, "smtp", &h, &notice, &err) != 0) {
		fprintf(stderr, "child open: %s\n", err);
		_exit(2);
	}
	for (i = 0; rounds == 0 || i < rounds; i++) {
		snprintf(k, sizeof(k), "p%ld.%08ld", (long)getpid(), i);
		snprintf(v, sizeof(v), "%s %s %s", k, k, k);
		if (q_hints_put(h, Q_DB_RETRY, k, strlen(k), v, strlen(v), &err) ||
		    q_hints_update(h, Q_DB_INDEX, "counter", 7, bump, NULL, &err)) {
			fprintf(stderr, "child write: %s\n", err);
			_exit(3);
		}
		if (i + 1 == ready && fd >= 0 && write(fd, "r", 1) != 1)
			_exit(4);
	}
	q_hints_close(&h);
	_exit(0);
}

struct verify {
	size_t n;
	size_t bad;
};

static int verify_fn(const void *key, size_t klen, const void *val,
		     size_t vlen, void *vctx)
{
	struct verify *v = vctx;
	char want[128];

	snprintf(want, sizeof(want), "%.*s %.*s %.*s", (int)klen,
		 (const char *)key, (int)klen, (const char *)key, (int)klen,
		 (const char *)key);
	if (vlen != strlen(want) || memcmp(val, want, vlen) != 0)
		v->bad++;
	v->n++;
	return 0;
}

static void test_kill_writer(void)
{
	char *dir = db_dir();
	struct q_hints *h;
	struct q_buf b = { 0 };
	const char *err;
	int round, rounds = 6;
	size_t before = 0;

	srand((unsigned)getpid());
	for (round = 0; round < rounds; round++) {
		struct verify v = { 0 };
		int p[2], st;
		pid_t pid;
		char c;

		CU_ASSERT_EQUAL_FATAL(pipe(p), 0);
		pid = fork();
		CU_ASSERT_FATAL(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			writer_child(dir, p[1], 50, 0);
		}
		close(p[1]);
		CU_ASSERT_EQUAL(read(p[0], &c, 1), 1);
		close(p[0]);
		usleep((useconds_t)(rand() % 4000));
		kill(pid, SIGKILL);
		CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
		CU_ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

		h = open_ok(dir);
		CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_RETRY, NULL, 0, verify_fn,
					     &v, &err), 0);
		CU_ASSERT(v.n >= before + 50);
		CU_ASSERT_EQUAL(v.bad, 0);
		CU_ASSERT_EQUAL(count(h, Q_DB_RETRY), v.n);
		/* each round: put, then bump; a kill between the two leaves
		 * the counter one behind */
		CU_ASSERT_EQUAL(get_s(h, Q_DB_INDEX, "counter", &b), 0);
		{
			unsigned long ctr = strtoul(b.data, NULL, 10);

			CU_ASSERT(ctr == v.n || ctr + round + 1 >= v.n);
			CU_ASSERT(ctr <= v.n);
		}
		before = v.n;
		/* and it is writable */
		CU_ASSERT_EQUAL(put_s(h, Q_DB_SESSIONS, "after", "kill"), 0);
		q_hints_close(&h);
	}
	q_buf_free(&b);
}

/* A long-running user (this process, like qrun) keeps its handle while
 * a writer dies in the middle of a transaction (stopped inside an update,
 * holding the record's lock, then killed). Either a third process opens
 * (and recovers), or the long-running user meets the dead lock itself
 * (its wait times out, it sees the dead registry slot and reopens): both
 * ways it goes on without an error. (A process killed inside a Berkeley
 * DB mutex is another matter: see the weak spots in q_hints.c.) */
static int stop_inside(const void *old, size_t oldlen, struct q_buf *out,
		       void *ctx);

static void test_kill_while_open(void)
{
	char *dir = db_dir();
	struct q_hints *h;
	struct verify v = { 0 };
	const char *err;
	int round;

	q_hints_tune(200, 10);
	h = open_ok(dir);
	for (round = 0; round < 4; round++) {
		int st;
		pid_t a, b;
		char k[32];

		a = fork();
		CU_ASSERT_FATAL(a >= 0);
		if (a == 0) {
			struct q_hints *ha = NULL;
			const char *n;
			char key[32], val[128];
			int i;

			if (q_hints_open(dir, "smtp", &ha, &n, &err) != 0)
				_exit(2);
			for (i = 0; i < 30; i++) {
				snprintf(key, sizeof(key), "a%d.%02d", round, i);
				snprintf(val, sizeof(val), "%s %s %s", key, key, key);
				if (q_hints_put(ha, Q_DB_RETRY, key, strlen(key), val,
						strlen(val), &err) != 0)
					_exit(3);
			}
			(void)q_hints_update(ha, Q_DB_SESSIONS, "shared", 6,
					     stop_inside, NULL, &err);
			_exit(0);
		}
		CU_ASSERT_EQUAL(waitpid(a, &st, WUNTRACED), a);
		CU_ASSERT_TRUE(WIFSTOPPED(st));
		kill(a, SIGKILL);
		CU_ASSERT_EQUAL(waitpid(a, &st, 0), a);
		if (round % 2 == 0) {
			b = fork();
			CU_ASSERT_FATAL(b >= 0);
			if (b == 0) {
				struct q_hints *hb = NULL;
				const char *n;

				if (q_hints_open(dir, "smtp", &hb, &n, &err) != 0 ||
				    q_hints_put(hb, Q_DB_SESSIONS, "b", 1, "x", 1,
						&err) != 0) {
					fprintf(stderr, "third process: %s\n", err);
					_exit(1);
				}
				q_hints_close(&hb);
				_exit(0);
			}
			CU_ASSERT_EQUAL(waitpid(b, &st, 0), b);
			CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
			CU_ASSERT_TRUE(get_eq(h, Q_DB_SESSIONS, "b", "x"));
		}
		/* the long-running handle: every call works, the dead
		 * writer's record included */
		snprintf(k, sizeof(k), "long%d", round);
		if (q_hints_put(h, Q_DB_SESSIONS, "shared", 6, k, strlen(k),
				&err) != 0)
			fprintf(stderr, "long-running put: %s\n", err);
		CU_ASSERT_TRUE(get_eq(h, Q_DB_SESSIONS, "shared", k));
		memset(&v, 0, sizeof(v));
		CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_RETRY, NULL, 0, verify_fn,
					     &v, &err), 0);
		CU_ASSERT_EQUAL(v.n, 30u * (round + 1));
		CU_ASSERT_EQUAL(v.bad, 0);
	}
	/* Now killed at random moments of a write loop: often inside a
	 * Berkeley DB mutex. The long-running handle is idle at the moment
	 * of the kill (the residual window is a waiter already blocked on
	 * that mutex, see q_hints.c); its next call must neither hang nor
	 * fail. */
	srand((unsigned)getpid());
	for (round = 0; round < 12; round++) {
		int st;
		pid_t a = fork();
		char k[32];

		CU_ASSERT_FATAL(a >= 0);
		if (a == 0)
			writer_child(dir, -1, 0, 0);
		usleep(10000 + (useconds_t)(rand() % 30000));
		kill(a, SIGKILL);
		CU_ASSERT_EQUAL(waitpid(a, &st, 0), a);
		snprintf(k, sizeof(k), "random%d", round);
		if (q_hints_put(h, Q_DB_SESSIONS, k, strlen(k), "z", 1, &err) != 0)
			fprintf(stderr, "after a random kill: %s\n", err);
		CU_ASSERT_TRUE(get_eq(h, Q_DB_SESSIONS, k, "z"));
		memset(&v, 0, sizeof(v));
		CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_RETRY, NULL, 0, verify_fn,
					     &v, &err), 0);
		CU_ASSERT_EQUAL(v.bad, 0);
	}
	q_hints_close(&h);
	q_hints_tune(2000, 15);
}

/* Children killed at random points, also while opening or creating. */
static void test_kill_early(void)
{
	char *dir = db_dir();
	int round;

	srand((unsigned)getpid() * 31u);
	for (round = 0; round < 8; round++) {
		struct q_hints *h = NULL;
		const char *err = NULL, *notice = NULL;
		int st;
		pid_t pid = fork();

		CU_ASSERT_FATAL(pid >= 0);
		if (pid == 0)
			writer_child(dir, -1, 0, 0);
		usleep((useconds_t)(rand() % 3000));
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		CU_ASSERT_EQUAL(q_hints_open(dir, "smtp", &h, &notice, &err), 0);
		if (h == NULL) {
			fprintf(stderr, "open after early kill: %s\n", err);
			continue;
		}
		if (notice != NULL)
			fprintf(stderr, "note: %s\n", notice);
		CU_ASSERT_EQUAL(put_s(h, Q_DB_RETRY, "alive", "yes"), 0);
		CU_ASSERT_TRUE(get_eq(h, Q_DB_RETRY, "alive", "yes"));
		q_hints_close(&h);
	}
}

static void test_two_writers(void)
{
	char *dir = db_dir();
	struct q_hints *h;
	struct q_buf b = { 0 };
	pid_t pids[2];
	int i, st;

	for (i = 0; i < 2; i++) {
		pids[i] = fork();
		CU_ASSERT_FATAL(pids[i] >= 0);
		if (pids[i] == 0)
			writer_child(dir, -1, 0, 2000);
	}
	for (i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL(waitpid(pids[i], &st, 0), pids[i]);
		CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	h = open_ok(dir);
	CU_ASSERT_EQUAL(get_s(h, Q_DB_INDEX, "counter", &b), 0);
	CU_ASSERT_STRING_EQUAL(b.data, "4000");
	CU_ASSERT_EQUAL(count(h, Q_DB_RETRY), 4000);
	q_buf_free(&b);
	q_hints_close(&h);
}

/* A process stopped while it holds a record lock makes others fail after
 * a bounded wait, never hang; once it is killed, the next operation finds
 * its dead registry slot, reopens (which recovers) and goes on. */

static int stop_inside(const void *old, size_t oldlen, struct q_buf *out,
		       void *ctx)
{
	(void)old;
	(void)oldlen;
	(void)ctx;
	raise(SIGSTOP);               /* with the record locked */
	q_buf_adds(out, "never");
	return Q_HINTS_PUT;
}

static void test_stopped_holder(void)
{
	char *dir = db_dir();
	struct q_hints *h;
	struct q_buf b = { 0 };
	const char *err;
	double t0;
	int st;
	pid_t pid;

	q_hints_tune(100, 3);
	h = open_ok(dir);
	CU_ASSERT_EQUAL(put_s(h, Q_DB_RETRY, "locked", "before"), 0);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		struct q_hints *hc = NULL;
		const char *notice;

		if (q_hints_open(dir, "smtp", &hc, &notice, &err) != 0)
			_exit(2);
		(void)q_hints_update(hc, Q_DB_RETRY, "locked", 6, stop_inside,
				     NULL, &err);
		_exit(0);
	}
	CU_ASSERT_EQUAL(waitpid(pid, &st, WUNTRACED), pid);
	CU_ASSERT_TRUE(WIFSTOPPED(st));
	t0 = now_ms();
	CU_ASSERT_EQUAL(q_hints_put(h, Q_DB_RETRY, "locked", 6, "x", 1, &err), -1);
	if (strstr(err, "a lock has been held") == NULL)
		fprintf(stderr, "stopped holder: %s\n", err);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "a lock has been held"));
	t0 = now_ms() - t0;
	CU_ASSERT(t0 < 5000);
	/* other records are not blocked by it (their pages permitting) */
	kill(pid, SIGKILL);
	CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
	/* the dead holder's locks go with the recovery our reopen runs */
	CU_ASSERT_EQUAL(q_hints_put(h, Q_DB_RETRY, "locked", 6, "after", 5, &err), 0);
	CU_ASSERT_EQUAL(get_s(h, Q_DB_RETRY, "locked", &b), 0);
	CU_ASSERT_STRING_EQUAL(b.data, "after");
	q_buf_free(&b);
	q_hints_close(&h);
	q_hints_tune(2000, 15);
}

/* Several threads of one process share one handle. */
struct thr {
	struct q_hints *h;
	int id;
	int fails;
};

static void *thread_main(void *arg)
{
	struct thr *t = arg;
	const char *err;
	char k[32], **ids = NULL;
	size_t n = 0;
	int i;

	for (i = 0; i < 500; i++) {
		snprintf(k, sizeof(k), "t%d.%04d", t->id, i);
		if (q_hints_update(t->h, Q_DB_INDEX, "tcounter", 8, bump, NULL, &err) ||
		    q_hints_put(t->h, Q_DB_RETRY, k, strlen(k), "v", 1, &err) ||
		    q_wait_add(t->h, "shared.example", k, &err)) {
			fprintf(stderr, "thread: %s\n", err);
			t->fails++;
		}
		if (i % 50 == 0) {
			struct collect c;

			memset(&c, 0, sizeof(c));
			if (q_hints_iter(t->h, Q_DB_RETRY, NULL, 0, collect_fn,
					 &c, &err) < 0 ||
			    q_wait_list(t->h, "shared.example", 10, &ids, &n,
					&err) < 0)
				t->fails++;
			q_strv_free(&ids, n);
			n = 0;
		}
	}
	return NULL;
}

static void test_threads(void)
{
	char *dir = db_dir();
	struct q_hints *h = open_ok(dir);
	struct thr t[4];
	pthread_t tid[4];
	struct q_buf b = { 0 };
	int i;

	for (i = 0; i < 4; i++) {
		t[i] = (struct thr){ .h = h, .id = i };
		CU_ASSERT_EQUAL_FATAL(pthread_create(&tid[i], NULL, thread_main,
						     &t[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(tid[i], NULL);
		CU_ASSERT_EQUAL(t[i].fails, 0);
	}
	CU_ASSERT_EQUAL(get_s(h, Q_DB_INDEX, "tcounter", &b), 0);
	CU_ASSERT_STRING_EQUAL(b.data, "2000");
	CU_ASSERT_EQUAL(count(h, Q_DB_RETRY), 2000);
	CU_ASSERT_EQUAL(count(h, Q_DB_WAIT), 2000);
	q_buf_free(&b);
	q_hints_close(&h);
}

/* The log does not grow without bound. */
static void test_log_bounded(void)
{
	char *dir = db_dir();
	struct q_hints *h = open_ok(dir);
	char k[32], v[512];
	const char *err;
	struct dirent *de;
	DIR *d;
	int i, logs = 0;

	memset(v, 'v', sizeof(v) - 1);
	v[sizeof(v) - 1] = '\0';
	for (i = 0; i < (T_SANITIZED ? 6000 : 20000); i++) {
		snprintf(k, sizeof(k), "k%d", i % 500);
		CU_ASSERT_EQUAL_FATAL(q_hints_put(h, Q_DB_RETRY, k, strlen(k), v,
						  sizeof(v) - 1, &err), 0);
	}
	q_hints_close(&h);
	d = opendir(dir);
	CU_ASSERT_PTR_NOT_NULL_FATAL(d);
	while ((de = readdir(d)) != NULL)
		if (strncmp(de->d_name, "log.", 4) == 0)
			logs++;
	closedir(d);
	/* ~12 MB of log written; 1 MB files, removed after checkpoints */
	if (logs > 4)
		fprintf(stderr, "%d log files left\n", logs);
	CU_ASSERT(logs >= 1 && logs <= 4);
}

/* ---- corruption ---- */

static int file_garble(const char *path, long off, long len, bool truncate_it)
{
	struct stat st;
	int fd = open(path, O_RDWR);
	long i;

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return -1;
	}
	if (truncate_it) {
		int r = ftruncate(fd, off);

		close(fd);
		return r;
	}
	if (len < 0)                 /* the whole file */
		len = (long)st.st_size - off;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)rand();

		if (pwrite(fd, &c, 1, off + i) != 1) {
			close(fd);
			return -1;
		}
	}
	close(fd);
	return 0;
}

/* Apply to every file of dir whose name starts with prefix. */
static int garble_all(const char *dir, const char *prefix, long off, long len,
		      bool truncate_it)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	char p[4200];
	int n = 0;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (file_garble(p, off, len, truncate_it) == 0)
			n++;
	}
	closedir(d);
	return n;
}

static int count_corrupt_dirs(const char *dir)
{
	char parent[4200], *slash;
	const char *base;
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(parent, sizeof(parent), "%s", dir);
	slash = strrchr(parent, '/');
	*slash = '\0';
	base = slash + 1;
	if ((d = opendir(parent)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (strncmp(de->d_name, base, strlen(base)) == 0 &&
		    strstr(de->d_name, ".corrupt-") != NULL)
			n++;
	closedir(d);
	return n;
}

enum { EXPECT_INTACT, EXPECT_NOTICE, EXPECT_EITHER };

/* Verdicts of corrupt_probe (exit statuses). */
enum { PROBE_INTACT, PROBE_OPEN_NOTICE, PROBE_WALK_MOVED, PROBE_WRITE_MOVED,
       PROBE_BAD = 20 };

/* What q_hints_set_notice_fn passed (the last one). */
static char told[2048];
static int ntold;

static void tell_fn(const char *text)
{
	snprintf(told, sizeof(told), "%s", text);
	ntold++;
}

/* A move aside was told to the hook (naming dir and "moved them to");
 * found by an operation (not at open), it is in the main log too. */
static bool move_reported(const char *dir, const char *logdir, bool by_op)
{
	char path[4200];
	char *log;
	bool ok;

	if (ntold != 1 || strstr(told, dir) == NULL ||
	    strstr(told, "moved them to") == NULL)
		return false;
	if (!by_op)
		return true;
	snprintf(path, sizeof(path), "%s/log/mainlog", logdir);
	if ((log = t_read_file(path, NULL)) == NULL)
		return false;
	ok = strstr(log, "hints: hints databases in ") != NULL &&
	     strstr(log, "moved them to") != NULL && strstr(log, dir) != NULL;
	free(log);
	return ok;
}

/* Open a possibly damaged environment, read everything, write once. */
static int corrupt_probe(const char *dir, size_t i, const char *what)
{
	struct q_hints *h = NULL;
	const char *err = NULL, *notice = NULL, *how = "intact";
	struct verify v = { 0 };
	struct q_buf b = { 0 };
	int verdict = PROBE_INTACT;
	char logdir[4096];

	/* moves are told to the hook, and those found by an operation are
	 * written to the main log: a log of our own beside dir */
	snprintf(logdir, sizeof(logdir), "%s.spool", dir);
	if ((mkdir(logdir, 0700) < 0 && errno != EEXIST) ||
	    q_log_open(logdir, false, &err) != 0)
		return PROBE_BAD + 7;
	q_hints_set_notice_fn(tell_fn);
	ntold = 0;
	if (q_hints_open(dir, "smtp", &h, &notice, &err) != 0) {
		fprintf(stderr, "corruption case %zu: open: %s\n", i, err);
		return PROBE_BAD + 1;
	}
	if (notice != NULL) {
		verdict = PROBE_OPEN_NOTICE;
		how = notice;
	}
	/* garbage pages show up here at the latest */
	if (q_hints_iter(h, Q_DB_RETRY, NULL, 0, verify_fn, &v, &err) < 0) {
		if (strstr(err, "moved") == NULL) {
			fprintf(stderr, "corruption case %zu: walk: %s\n", i, err);
			return PROBE_BAD + 2;
		}
		if (verdict == PROBE_INTACT) {
			verdict = PROBE_WALK_MOVED;
			how = "(reported by the walk)";
		}
	}
	/* a damaged log may only show when a page is written: the first
	 * write then reports the move aside */
	if (q_hints_put(h, Q_DB_RETRY, "fresh", 5, "ok", 2, &err) < 0) {
		if (strstr(err, "moved") == NULL) {
			fprintf(stderr, "corruption case %zu: put: %s\n", i, err);
			return PROBE_BAD + 3;
		}
		if (verdict == PROBE_INTACT) {
			verdict = PROBE_WRITE_MOVED;
			how = "(reported by the first write)";
		}
		if (q_hints_put(h, Q_DB_RETRY, "fresh", 5, "ok", 2, &err) < 0)
			return PROBE_BAD + 4;
	}
	if (getenv("QKIT_TEST_VERBOSE") != NULL)
		fprintf(stderr, "corruption case %zu (%s): %s\n", i, what, how);
	if (verdict != PROBE_INTACT &&
	    !move_reported(dir, logdir, verdict != PROBE_OPEN_NOTICE)) {
		fprintf(stderr, "corruption case %zu: the move was not reported "
			"(%d times to the hook: %s)\n", i, ntold, told);
		return PROBE_BAD + 8;
	}
	if (verdict == PROBE_INTACT && ntold != 0)
		return PROBE_BAD + 9;
	/* untouched data reads back whole */
	if (verdict == PROBE_INTACT && (v.bad != 0 || v.n < 300))
		return PROBE_BAD + 5;
	if (q_hints_get(h, Q_DB_RETRY, "fresh", 5, &b, &err) != 0 ||
	    q_wait_add(h, "mx", "new", &err) != 0)
		return PROBE_BAD + 6;
	q_buf_free(&b);
	q_hints_close(&h);
	return verdict;
}

static void test_corruption(void)
{
	static const struct {
		const char *file;     /* name prefix */
		long off, len;        /* len -1: to the end */
		bool truncate_it;
		bool killed;          /* a writer was killed first */
		int expect;
	} cases[] = {
		/* A file changed behind the stamp means recovery at the next
		 * open (q_hints_open never trusts the register alone), and
		 * recovery redoes the log over the damage while the log still
		 * holds every write: whole again (the probe checks all 300
		 * records) or moved aside, both fine. */
		{ "retry.db", 0, -1, false, false, EXPECT_EITHER },
		{ "retry.db", 0, 512, false, false, EXPECT_EITHER },
		{ "retry.db", 0, 1, true, false, EXPECT_NOTICE },
		{ "retry.db", 100, 0, true, false, EXPECT_NOTICE },
		{ "retry.db", 4096, 4096, false, false, EXPECT_EITHER },
		{ "retry.db", 20000, 3000, false, false, EXPECT_EITHER },
		{ "retry.db", 16384, 4096, false, true, EXPECT_EITHER },
		{ "retry.db", 16384 + 64, 64, false, false, EXPECT_EITHER },
		{ "wait-smtp.db", 0, 100, false, false, EXPECT_EITHER },
		{ "__db.0", 0, -1, false, false, EXPECT_INTACT },
		{ "__db.0", 0, 4096, false, false, EXPECT_INTACT },
		{ "__db.0", 100, 200, false, false, EXPECT_INTACT },
		{ "__db.0", 5000, 4096, false, false, EXPECT_INTACT },
		{ "__db.0", 0, 4096, false, true, EXPECT_INTACT },
		{ "__db.0", 20, 0, true, false, EXPECT_INTACT },
		{ "__db.register", 0, -1, false, false, EXPECT_INTACT },
		{ "__db.register", 0, 50, false, true, EXPECT_INTACT },
		{ "__db.", 0, -1, false, true, EXPECT_INTACT },
		{ "qkit.lock", 0, 64, false, false, EXPECT_INTACT },
		{ "log.", 0, -1, false, false, EXPECT_NOTICE },
		{ "log.", 0, 64, false, false, EXPECT_NOTICE },
		{ "log.", 3000, 4096, false, false, EXPECT_EITHER },
		{ "log.", 0, 64, false, true, EXPECT_NOTICE },
		{ "log.", 3000, 4096, false, true, EXPECT_EITHER },
		{ "log.", 2000, 0, true, true, EXPECT_EITHER },
		{ "", 0, 4096, false, false, EXPECT_NOTICE },
		{ "", 0, -1, false, true, EXPECT_NOTICE },
	};
	size_t i;

	srand(12345);
	for (i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		char *dir = db_dir();
		struct q_hints *h = NULL;
		const char *err = NULL;
		int r, n, j, st;
		pid_t pid;

		/* a populated environment, closed (or its writer killed) */
		h = open_ok(dir);
		for (j = 0; j < 300; j++) {
			char k[32], val[128];

			snprintf(k, sizeof(k), "key%05d", j);
			snprintf(val, sizeof(val), "%s %s %s", k, k, k);
			CU_ASSERT_EQUAL(put_s(h, Q_DB_RETRY, k, val), 0);
			if (j % 10 == 0)
				CU_ASSERT_EQUAL(q_wait_add(h, "mx", k, &err), 0);
		}
		q_hints_close(&h);
		if (cases[i].killed) {
			int p[2], st;
			char c;
			pid_t pid;

			CU_ASSERT_EQUAL_FATAL(pipe(p), 0);
			pid = fork();
			if (pid == 0) {
				close(p[0]);
				writer_child(dir, p[1], 20, 0);
			}
			close(p[1]);
			CU_ASSERT_EQUAL(read(p[0], &c, 1), 1);
			close(p[0]);
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
		}
		n = garble_all(dir, cases[i].file, cases[i].off, cases[i].len,
			       cases[i].truncate_it);
		if (n == 0)
			fprintf(stderr, "corruption case %zu: no file %s*\n", i,
				cases[i].file);
		CU_ASSERT(n > 0);

		/* The damaged environment is met by a child process: when a
		 * write fails on a damaged log, Berkeley DB 5.3 leaks its log
		 * record buffer (57 bytes, in __log_put_record), which the
		 * leak checker would charge to us; the child leaves with
		 * _exit. Its verdict comes back as the exit status. */
		pid = fork();
		CU_ASSERT_FATAL(pid >= 0);
		if (pid == 0)
			_exit(corrupt_probe(dir, i, cases[i].file));
		CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
		CU_ASSERT_FATAL(WIFEXITED(st));
		r = WEXITSTATUS(st);
		if (r >= PROBE_BAD)
			fprintf(stderr, "corruption case %zu: probe failed (%d)\n",
				i, r);
		CU_ASSERT(r < PROBE_BAD);
		if (r != PROBE_INTACT) {
			CU_ASSERT(cases[i].expect != EXPECT_INTACT);
			CU_ASSERT_EQUAL(count_corrupt_dirs(dir), 1);
		} else {
			CU_ASSERT(cases[i].expect != EXPECT_NOTICE);
			CU_ASSERT_EQUAL(count_corrupt_dirs(dir), 0);
		}
		if ((r == PROBE_INTACT) != (cases[i].expect != EXPECT_NOTICE) &&
		    cases[i].expect != EXPECT_EITHER)
			fprintf(stderr, "corruption case %zu: verdict %d\n", i, r);
		/* whatever happened, the hints work now, here too */
		h = open_ok(dir);
		CU_ASSERT_TRUE(get_eq(h, Q_DB_RETRY, "fresh", "ok"));
		CU_ASSERT_EQUAL(put_s(h, Q_DB_RETRY, "fresh2", "ok"), 0);
		q_hints_close(&h);
		h = open_ok(dir);
		CU_ASSERT_TRUE(get_eq(h, Q_DB_RETRY, "fresh2", "ok"));
		q_hints_close(&h);
	}
}

/* The notice names the old place; the old files are there. */
static void test_corrupt_notice(void)
{
	char *dir = db_dir(), p[4200];
	struct q_hints *h;
	const char *err, *notice = NULL;
	const char *aside;
	struct stat st;

	h = open_ok(dir);
	CU_ASSERT_EQUAL(put_s(h, Q_DB_RETRY, "k", "v"), 0);
	q_hints_close(&h);
	snprintf(p, sizeof(p), "%s/retry.db", dir);
	CU_ASSERT_EQUAL_FATAL(t_write_file(p, "this is not a database at all"), 0);
	CU_ASSERT_EQUAL_FATAL(q_hints_open(dir, "smtp", &h, &notice, &err), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(notice);
	CU_ASSERT_PTR_NOT_NULL(strstr(notice, dir));
	aside = strstr(notice, ".corrupt-");
	CU_ASSERT_PTR_NOT_NULL_FATAL(aside);
	/* the path in the notice exists and holds the bad file */
	{
		char old[4200];
		size_t n = strcspn(notice + (strstr(notice, "moved them to ") -
					     notice) + 14, " ");

		snprintf(old, sizeof(old), "%.*s/retry.db", (int)n,
			 strstr(notice, "moved them to ") + 14);
		CU_ASSERT_EQUAL(stat(old, &st), 0);
		CU_ASSERT_EQUAL((size_t)st.st_size,
				strlen("this is not a database at all"));
	}
	{
		struct q_buf b = { 0 };

		CU_ASSERT_EQUAL(get_s(h, Q_DB_RETRY, "k", &b), Q_NOTFOUND);
		q_buf_free(&b);
	}
	q_hints_close(&h);
}

/* ---- benchmark (printed, never asserted) ---- */

static int nop_fn(const void *key, size_t klen, const void *val, size_t vlen,
		  void *ctx)
{
	(void)key;
	(void)val;
	*(size_t *)ctx += klen + vlen;
	return 0;
}

static void test_bench(void)
{
	char *dir = db_dir();
	struct q_hints *h = open_ok(dir);
	const char *err;
	size_t n = T_SANITIZED ? 20000 : 100000, i, bytes = 0, c = 0;
	double t0, t_fill, t_iter, t_iter2, t_count, t_wcount, t_open, t_pref;
	char k[32], v[64];

	t0 = now_ms();
	for (i = 0; i < n; i++) {
		snprintf(k, sizeof(k), "1%07zuAbCdEf", i);
		snprintf(v, sizeof(v), "\x01small record %zu", i);
		if (q_hints_put(h, Q_DB_INDEX, k, strlen(k), v, strlen(v), &err) ||
		    (i % 4 == 0 && q_wait_add(h, "mx.example", k, &err))) {
			CU_FAIL("fill");
			break;
		}
	}
	t_fill = now_ms() - t0;
	t0 = now_ms();
	CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_INDEX, NULL, 0, nop_fn, &bytes, &err), 0);
	t_iter = now_ms() - t0;
	t0 = now_ms();
	CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_INDEX, NULL, 0, nop_fn, &bytes, &err), 0);
	t_iter2 = now_ms() - t0;
	t0 = now_ms();
	CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_INDEX, "10001", 5, nop_fn, &bytes, &err), 0);
	t_pref = now_ms() - t0;
	t0 = now_ms();
	CU_ASSERT_EQUAL(q_hints_count(h, Q_DB_INDEX, &c, &err), 0);
	t_count = now_ms() - t0;
	CU_ASSERT_EQUAL(c, n);
	t0 = now_ms();
	CU_ASSERT_EQUAL(q_hints_count(h, Q_DB_WAIT, &c, &err), 0);
	t_wcount = now_ms() - t0;
	CU_ASSERT_EQUAL(c, (n + 3) / 4);
	q_hints_close(&h);
	t0 = now_ms();
	h = open_ok(dir);
	t_open = now_ms() - t0;
	t0 = now_ms();
	CU_ASSERT_EQUAL(q_hints_count(h, Q_DB_INDEX, &c, &err), 0);
	t_count = t_count < now_ms() - t0 ? t_count : now_ms() - t0;
	t0 = now_ms();
	CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_INDEX, NULL, 0, nop_fn, &bytes, &err), 0);
	fprintf(stderr, "\n  hints bench (%zu records%s): fill %.0f ms (%.1f us/put), "
		"iter %.1f ms, again %.1f ms, after reopen %.1f ms, prefix %.2f ms, "
		"count %.3f ms, wait count (%zu pairs) %.2f ms, reopen %.2f ms\n",
		n, T_SANITIZED ? ", sanitizers" : "", t_fill, t_fill * 1000 / n,
		t_iter, t_iter2, now_ms() - t0, t_pref, t_count, (n + 3) / 4,
		t_wcount, t_open);
	q_hints_close(&h);
}

/* ---- a full disk ---- */

/* Every region file has blocks reserved past its end (see
 * regions_reserve in q_hints.c), where the file system can fallocate. */
static void test_region_reserve(void)
{
	char *dir = db_dir(), path[4400];
	struct q_hints *h = open_ok(dir);
	struct dirent *de;
	DIR *d;
	int fd, n = 0;

	/* can this file system reserve at all? */
	snprintf(path, sizeof(path), "%s/probe", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	CU_ASSERT_FATAL(fd >= 0);
	if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 4096) < 0 &&
	    (errno == EOPNOTSUPP || errno == ENOSYS)) {
		fprintf(stderr, "\n  (no fallocate on %s: reserve not checked) ", dir);
		close(fd);
		unlink(path);
		q_hints_close(&h);
		return;
	}
	close(fd);
	unlink(path);
	CU_ASSERT_PTR_NOT_NULL_FATAL(d = opendir(dir));
	while ((de = readdir(d)) != NULL) {
		struct stat st;

		if (strncmp(de->d_name, "__db.0", 6) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
		/* at least 3 of the 4 MB reserved past the end */
		if ((long long)st.st_blocks * 512 < (long long)st.st_size + (3 << 20)) {
			fprintf(stderr, "\n  %s: %lld bytes, %lld allocated ", path,
				(long long)st.st_size, (long long)st.st_blocks * 512);
			CU_FAIL("region file without its reserve");
		}
		n++;
	}
	closedir(d);
	CU_ASSERT(n >= 2);
	/* and it is kept: after a lot of growth, still there */
	for (int i = 0; i < 20000; i++) {
		char k[32], v[600];

		snprintf(k, sizeof(k), "grow%06d", i);
		memset(v, 'v', sizeof(v));
		if (q_hints_put(h, Q_DB_INDEX, k, strlen(k), v, sizeof(v), NULL) != 0) {
			CU_FAIL("put");
			break;
		}
	}
	CU_ASSERT_PTR_NOT_NULL_FATAL(d = opendir(dir));
	while ((de = readdir(d)) != NULL) {
		struct stat st;

		if (strncmp(de->d_name, "__db.0", 6) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
		/* an operation never starts with less than 3 MB reserved */
		CU_ASSERT((long long)st.st_blocks * 512 >=
			  (long long)st.st_size + (2 << 20));
	}
	closedir(d);
	q_hints_close(&h);
}

/* Fill fs (a directory on it) to the last block. */
static void fill_up(const char *filler)
{
	static char zero[65536];
	int fd = open(filler, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	size_t n = sizeof(zero);

	if (fd < 0)
		return;
	while (n >= 512) {
		if (write(fd, zero, n) < 0)
			n /= 2;
	}
	close(fd);
}

static size_t count_db(const char *dir, enum q_db db, const char **err)
{
	struct q_hints *h = NULL;
	const char *notice = NULL;
	size_t n = 0;

	if (q_hints_open(dir, "smtp", &h, &notice, err) != 0)
		return (size_t)-1;
	if (q_hints_count(h, db, &n, err) != 0)
		n = (size_t)-2;
	q_hints_close(&h);
	return n;
}

static int count_fn(const void *key, size_t klen, const void *val,
		    size_t vlen, void *ctx)
{
	(void)key;
	(void)klen;
	(void)val;
	(void)vlen;
	(*(size_t *)ctx)++;
	return 0;
}

/* The child of test_disk_full, in a mount namespace of its own with a
 * 64 MB tmpfs at mnt. Exit status: 0 fine, 77 cannot mount, else the
 * failed step. A SIGBUS kills it (the parent reports the signal). */
static int disk_full_child(const char *mnt)
{
	char dir[1100], filler[1200];
	const char *err = NULL, *notice = NULL;
	struct q_hints *h = NULL;
	size_t ok = 0, n;
	int i, held[8], nheld = 0;
	DIR *d;
	struct dirent *de;

	if (unshare(CLONE_NEWNS) < 0 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", mnt, "tmpfs", MS_NOSUID | MS_NODEV,
		  "size=64m,mode=0700") < 0)
		return 77;
	snprintf(dir, sizeof(dir), "%s/db", mnt);
	snprintf(filler, sizeof(filler), "%s/filler", mnt);

	/* 1. hints made with room: 300 retry records, 10,000 index records
	 * of 600 bytes (6 MB of pages) */
	if (q_hints_open(dir, "smtp", &h, &notice, &err) != 0)
		return 10;
	for (i = 0; i < 300; i++) {
		char k[32];

		snprintf(k, sizeof(k), "base%05d", i);
		if (q_hints_put(h, Q_DB_RETRY, k, strlen(k), "x", 1, &err) != 0)
			return 11;
	}
	for (i = 0; i < 10000; i++) {
		char k[32], v[600];

		snprintf(k, sizeof(k), "full%06d", i);
		memset(v, 'v', sizeof(v));
		if (q_hints_put(h, Q_DB_INDEX, k, strlen(k), v, sizeof(v),
				&err) != 0)
			return 12;
	}
	q_hints_close(&h);

	/* 2. fresh regions (no stamp), a cold cache, then the disk fills:
	 * a walk makes the cache grow past its reserve, and must fail with
	 * ENOSPC (before: SIGBUS); the first write fails as cleanly */
	snprintf(filler, sizeof(filler), "%s/qkit.regions", dir);
	unlink(filler);
	snprintf(filler, sizeof(filler), "%s/filler", mnt);
	if (q_hints_open(dir, "smtp", &h, &notice, &err) != 0) {
		fprintf(stderr, "open: %s\n", err);
		return 20;
	}
	fill_up(filler);
	n = 0;
	if (q_hints_iter(h, Q_DB_INDEX, NULL, 0, count_fn, &n, &err) == 0)
		return 21;              /* 6 MB more cache on a full disk? */
	if (strstr(err, "No space left on device") == NULL) {
		fprintf(stderr, "full walk: %s\n", err);
		return 22;
	}
	if (getenv("QKIT_TEST_VERBOSE") != NULL)
		fprintf(stderr, "full disk: walk stopped after %zu: %s\n", n, err);
	ok = 10000;
	if (q_hints_put(h, Q_DB_RETRY, "late", 4, "x", 1, &err) == 0 ||
	    strstr(err, "No space left on device") == NULL) {
		fprintf(stderr, "full put: %s\n", err);
		return 23;
	}
	q_hints_close(&h);

	/* 3. a writer dies (recovery needed), and the regions' old space
	 * cannot come back (held open here): the open fails as "disk full",
	 * nothing is moved aside */
	unlink(filler);
	{
		int p[2], st;
		char c;
		pid_t pid;

		if (pipe(p) < 0)
			return 30;
		if ((pid = fork()) == 0) {
			close(p[0]);
			writer_child(dir, p[1], 20, 0);
		}
		close(p[1]);
		if (read(p[0], &c, 1) != 1)
			return 31;
		close(p[0]);
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
	}
	if ((d = opendir(dir)) == NULL)
		return 32;
	while ((de = readdir(d)) != NULL && nheld < 8) {
		char path[1400];

		if (strncmp(de->d_name, "__db.0", 6) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if ((held[nheld] = open(path, O_RDONLY | O_CLOEXEC)) >= 0)
			nheld++;
	}
	closedir(d);
	fill_up(filler);
	if (q_hints_open(dir, "smtp", &h, &notice, &err) == 0)
		return 33;
	if (strstr(err, "No space left on device") == NULL ||
	    strstr(err, dir) == NULL) {
		fprintf(stderr, "full recovery: %s\n", err);
		return 34;
	}
	if (getenv("QKIT_TEST_VERBOSE") != NULL)
		fprintf(stderr, "full disk, recovery: %s\n", err);
	if ((d = opendir(mnt)) == NULL)
		return 35;
	while ((de = readdir(d)) != NULL)
		if (strstr(de->d_name, ".corrupt-") != NULL)
			return 36;      /* moved aside: the bug this fixes */
	closedir(d);

	/* 4. room again: everything is there */
	while (nheld > 0)
		close(held[--nheld]);
	unlink(filler);
	if ((n = count_db(dir, Q_DB_RETRY, &err)) < 300 + 20 || n > 1000000) {
		fprintf(stderr, "retry records after the full disk: %zd (%s)\n",
			(ssize_t)n, n > 1000000 ? err : "");
		return 40;
	}
	if ((n = count_db(dir, Q_DB_INDEX, &err)) < ok) {
		fprintf(stderr, "index records: %zu of %zu\n", n, ok);
		return 41;
	}
	return 0;
}

static void test_disk_full(void)
{
	char mnt[1024];
	pid_t pid;
	int st;

	if (geteuid() != 0) {
		fprintf(stderr, "\n  (not root: no tmpfs, full disk not tested) ");
		return;
	}
	snprintf(mnt, sizeof(mnt), "%s/mnt", t_tmpdir());
	CU_ASSERT_EQUAL_FATAL(mkdir(mnt, 0700), 0);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0)
		_exit(disk_full_child(mnt));
	CU_ASSERT_EQUAL_FATAL(waitpid(pid, &st, 0), pid);
	if (WIFSIGNALED(st))
		fprintf(stderr, "\n  full disk: killed by signal %d ", WTERMSIG(st));
	CU_ASSERT_FATAL(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77) {
		fprintf(stderr, "\n  (no tmpfs mount here: full disk not tested) ");
		return;
	}
	if (WEXITSTATUS(st) != 0)
		fprintf(stderr, "\n  full disk: step %d failed ", WEXITSTATUS(st));
	CU_ASSERT_EQUAL(WEXITSTATUS(st), 0);
}

void suite_hints(void)
{
	CU_pSuite s = CU_add_suite("hints", NULL, NULL);

	CU_add_test(s, "open, close, reopen, modes", test_open_reopen);
	CU_add_test(s, "database names and transports", test_names);
	CU_add_test(s, "open errors", test_open_errors);
	CU_add_test(s, "put/get/del/update table", test_crud);
	CU_add_test(s, "iter, prefix, count, truncate", test_iter_prefix_count);
	CU_add_test(s, "iter over values larger than a chunk", test_iter_big_values);
	CU_add_test(s, "wait lists", test_wait);
	CU_add_test(s, "wait: many ids under one host", test_wait_many);
	CU_add_test(s, "batch: puts and deletes in few transactions", test_batch);
	CU_add_test(s, "record codec", test_rec_codec);
	CU_add_test(s, "unknown record version skipped", test_unknown_version);
	CU_add_test(s, "writer killed with SIGKILL, reopen", test_kill_writer);
	CU_add_test(s, "killed at random points", test_kill_early);
	CU_add_test(s, "killed writer while another user stays", test_kill_while_open);
	CU_add_test(s, "two writer processes", test_two_writers);
	CU_add_test(s, "threads share a handle", test_threads);
	CU_add_test(s, "a stopped lock holder, then killed", test_stopped_holder);
	CU_add_test(s, "log files stay bounded", test_log_bounded);
	CU_add_test(s, "corrupt files: notice and fresh start", test_corruption);
	CU_add_test(s, "corrupt notice names the old files", test_corrupt_notice);
	CU_add_test(s, "region files keep blocks reserved", test_region_reserve);
	CU_add_test(s, "a full disk: errors, no SIGBUS, nothing moved aside",
		    test_disk_full);
	CU_add_test(s, "benchmark (printed)", test_bench);
}
