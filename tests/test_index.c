/*
 * tests/test_index.c - the queue index: record codec (round trip, every
 * truncation, unknown version), records made from envelopes, and the
 * listing's consistency with the spool (entries whose -H is gone,
 * messages the index lacks, unreadable records, garbage keys, corrupt
 * -H files), count, and rebuild (with old crash leftovers).
 */
#include "config.h"
#include "q/spool.h"
#include "q/hints.h"
#include "tests/tlib.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

static int mk(struct q_spool *s, const char *sender, char id[Q_ID_LEN + 1])
{
	const char *rc[] = { "a@Example.COM", "b@example.com", "c@other.org" };
	struct q_newmsg m = { sender, rc, 3, "x\r\n", 3, 0 };
	const char *err = NULL;

	if (q_spool_create(s, &m, Q_CREATE_NOSYNC, id, &err) != 0) {
		fprintf(stderr, "\nq_spool_create: %s\n", err);
		return -1;
	}
	return 0;
}

static bool starts_with_s(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/* ---- codec ---- */

static void test_codec(void)
{
	static const struct q_index_rec cases[] = {
		{ "1a2B3c-0AbC-00Zz", 1700000000, 1234, 3, 2, Q_ENV_FROZEN,
		  1700003600, "s@example.com", "a@example.com",
		  "example.com,other.org", "D x@y\nP a@example.com\n" },
		{ "000000-0000-0000", 0, 0, 0, 0, 0, 0, "", "", "", "" },
		{ "zzzzzz-4C91-zzzz", INT32_MAX, UINT64_MAX, UINT32_MAX,
		  UINT32_MAX, 3, 0, "\x01\xff odd", "\n", ",", "P \n" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct q_index_rec *c = &cases[i];
		struct q_index_rec r;
		struct q_buf b = { 0 };
		const char *err = NULL;

		CU_ASSERT_EQUAL_FATAL(q_index_rec_encode(c, &b), 0);
		CU_ASSERT_EQUAL_FATAL(q_index_rec_decode(b.data, b.len, &r, &err), 0);
		CU_ASSERT_STRING_EQUAL(r.id, c->id);
		CU_ASSERT_EQUAL(r.arrival, c->arrival);
		CU_ASSERT_EQUAL(r.size, c->size);
		CU_ASSERT_EQUAL(r.nrcpt, c->nrcpt);
		CU_ASSERT_EQUAL(r.npending, c->npending);
		CU_ASSERT_EQUAL(r.flags, c->flags);
		CU_ASSERT_EQUAL(r.next_try, c->next_try);
		CU_ASSERT_STRING_EQUAL(r.sender, c->sender);
		CU_ASSERT_STRING_EQUAL(r.rcpt1, c->rcpt1);
		CU_ASSERT_STRING_EQUAL(r.domains, c->domains);
		CU_ASSERT_STRING_EQUAL(r.rcpts, c->rcpts);
		q_index_rec_clear(&r);
		CU_ASSERT_PTR_NULL(r.sender);

		/* every truncation fails cleanly */
		for (size_t n = 0; n < b.len; n++) {
			CU_ASSERT_EQUAL(q_index_rec_decode(b.data, n, &r, &err), -1);
			CU_ASSERT_PTR_NULL(r.sender);
		}
		/* one byte too many */
		q_buf_addc(&b, 0);
		CU_ASSERT_EQUAL(q_index_rec_decode(b.data, b.len, &r, &err), -1);
		/* an unknown version is named, not misread */
		b.data[0] = 2;
		CU_ASSERT_EQUAL(q_index_rec_decode(b.data, b.len - 1, &r, &err), -1);
		CU_ASSERT_PTR_NOT_NULL(strstr(err, "version 2"));
		q_buf_free(&b);
	}
}

static void test_from_env(void)
{
	struct q_rcpt rc[] = {
		{ "x@done.example", 'D', 1, 0, 0, NULL, NULL },
		{ "a@B.example", 'P', 0, 0, 0, NULL, NULL },
		{ "c@a.example", 'P', 2, 0, 0, NULL, NULL },
		{ "d@b.EXAMPLE", 'P', 0, 0, 0, NULL, NULL },
		{ "e@failed.example", 'F', 1, 0, 0, NULL, NULL },
		{ "\"q@x\"@a.example", 'P', 0, 0, 0, NULL, NULL },
	};
	struct q_env env = { "1a2B3c-0AbC-00Zz", "s@example.com", 1700000000,
			     77, Q_ENV_BOUNCE, NULL, 6, rc };
	struct q_index_rec r;

	CU_ASSERT_EQUAL_FATAL(q_index_rec_from_env(&r, &env, 99), 0);
	CU_ASSERT_STRING_EQUAL(r.id, env.id);
	CU_ASSERT_EQUAL(r.arrival, 1700000000);
	CU_ASSERT_EQUAL(r.size, 77);
	CU_ASSERT_EQUAL(r.nrcpt, 6);
	CU_ASSERT_EQUAL(r.npending, 4);
	CU_ASSERT_EQUAL(r.flags, Q_ENV_BOUNCE);
	CU_ASSERT_EQUAL(r.next_try, 99);
	CU_ASSERT_STRING_EQUAL(r.sender, "s@example.com");
	CU_ASSERT_STRING_EQUAL(r.rcpt1, "a@B.example");
	CU_ASSERT_STRING_EQUAL(r.domains, "a.example,b.example");
	CU_ASSERT_STRING_EQUAL(r.rcpts, "D x@done.example\nP a@B.example\n"
			       "P c@a.example\nP d@b.EXAMPLE\nF e@failed.example\n"
			       "P \"q@x\"@a.example\n");
	q_index_rec_clear(&r);

	/* nothing pending: rcpt1 is the first recipient, no domains */
	for (size_t i = 0; i < 6; i++)
		rc[i].state = 'D';
	CU_ASSERT_EQUAL_FATAL(q_index_rec_from_env(&r, &env, 0), 0);
	CU_ASSERT_STRING_EQUAL(r.rcpt1, "x@done.example");
	CU_ASSERT_STRING_EQUAL(r.domains, "");
	CU_ASSERT_EQUAL(r.npending, 0);
	q_index_rec_clear(&r);
}

/* ---- listing ---- */

struct coll {
	char ids[64][Q_ID_LEN + 1];
	size_t n;
	size_t stop_after;
	bool bad;
};

static int coll_fn(const struct q_index_rec *r, void *vctx)
{
	struct coll *c = vctx;

	if (c->n >= 64)
		return -1;
	if (r->nrcpt != 3 || r->npending > 3 || strcmp(r->domains, "") == 0 ||
	    r->sender == NULL || r->rcpts == NULL)
		c->bad = true;
	memcpy(c->ids[c->n++], r->id, Q_ID_LEN + 1);
	return c->stop_after != 0 && c->n == c->stop_after ? 1 : 0;
}

static void list(struct q_spool *s, struct coll *c)
{
	const char *err = NULL;

	c->n = 0;
	c->bad = false;
	CU_ASSERT_EQUAL(q_spool_list(s, coll_fn, c, &err), 0);
	CU_ASSERT_FALSE(c->bad);
	for (size_t i = 1; i < c->n; i++)
		CU_ASSERT(strcmp(c->ids[i - 1], c->ids[i]) < 0);
}

static size_t count(struct q_spool *s)
{
	const char *err = NULL;
	size_t n = (size_t)-1;

	CU_ASSERT_EQUAL(q_spool_count(s, &n, &err), 0);
	return n;
}

static void test_list_consistency(void)
{
	struct q_spool *s = t_new_spool();
	char ids[8][Q_ID_LEN + 1], path[PATH_MAX];
	struct q_hints *h = NULL;
	struct q_index_rec r;
	struct coll c = { 0 };
	const char *err = NULL;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(q_spool_hints(s, &h, &err), 0);
	for (int i = 0; i < 8; i++)
		CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", ids[i]), 0);
	CU_ASSERT_EQUAL(count(s), 8);
	list(s, &c);
	CU_ASSERT_EQUAL_FATAL(c.n, 8);
	for (int i = 0; i < 8; i++)
		CU_ASSERT_STRING_EQUAL(c.ids[i], ids[i]);

	/* stop early */
	c.stop_after = 3;
	list(s, &c);
	CU_ASSERT_EQUAL(c.n, 3);
	c.stop_after = 0;

	/* -H deleted behind the index's back: not listed, entry dropped */
	CU_ASSERT_EQUAL(unlink(q_spool_path(s, ids[2], 'H', path, sizeof(path))), 0);
	CU_ASSERT_EQUAL(count(s), 8);
	list(s, &c);
	CU_ASSERT_EQUAL(c.n, 7);
	for (size_t i = 0; i < c.n; i++)
		CU_ASSERT_STRING_NOT_EQUAL(c.ids[i], ids[2]);
	CU_ASSERT_EQUAL(count(s), 7);
	CU_ASSERT_EQUAL(q_index_get(h, ids[2], &r, &err), Q_NOTFOUND);

	/* the index loses entries: they come back from -H */
	CU_ASSERT_EQUAL(q_index_del(h, ids[0], &err), 0);
	CU_ASSERT_EQUAL(q_index_del(h, ids[7], &err), 0);
	CU_ASSERT_EQUAL(q_index_del(h, ids[7], &err), Q_NOTFOUND);
	CU_ASSERT_EQUAL(count(s), 5);
	list(s, &c);
	CU_ASSERT_EQUAL_FATAL(c.n, 7);
	CU_ASSERT_STRING_EQUAL(c.ids[0], ids[0]);
	CU_ASSERT_STRING_EQUAL(c.ids[6], ids[7]);
	CU_ASSERT_EQUAL(count(s), 7);
	CU_ASSERT_EQUAL_FATAL(q_index_get(h, ids[7], &r, &err), 0);
	CU_ASSERT_EQUAL(r.nrcpt, 3);
	CU_ASSERT_STRING_EQUAL(r.domains, "example.com,other.org");
	q_index_rec_clear(&r);

	/* the whole index lost: everything comes back */
	CU_ASSERT_EQUAL(q_hints_truncate(h, Q_DB_INDEX, &err), 0);
	CU_ASSERT_EQUAL(count(s), 0);
	list(s, &c);
	CU_ASSERT_EQUAL(c.n, 7);
	CU_ASSERT_EQUAL(count(s), 7);

	/* a record of an unknown version, and a garbled one: read from -H
	 * and rewritten */
	CU_ASSERT_EQUAL(q_hints_put(h, Q_DB_INDEX, ids[3], Q_ID_LEN,
				    "\x63garbage", 8, &err), 0);
	CU_ASSERT_EQUAL(q_hints_put(h, Q_DB_INDEX, ids[4], Q_ID_LEN, "\x01", 1,
				    &err), 0);
	CU_ASSERT_EQUAL(q_index_get(h, ids[3], &r, &err), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "version 99"));
	list(s, &c);
	CU_ASSERT_EQUAL(c.n, 7);
	CU_ASSERT_EQUAL(q_index_get(h, ids[3], &r, &err), 0);
	q_index_rec_clear(&r);
	CU_ASSERT_EQUAL(q_index_get(h, ids[4], &r, &err), 0);
	q_index_rec_clear(&r);

	/* garbage keys and entries for ids that never existed are dropped */
	CU_ASSERT_EQUAL(q_hints_put(h, Q_DB_INDEX, "junk", 4, "x", 1, &err), 0);
	r = (struct q_index_rec){ "000000-0000-0001", 1, 1, 1, 1, 0, 0,
				  "a", "b", "c", "d" };
	CU_ASSERT_EQUAL(q_index_put(h, &r, &err), 0);
	CU_ASSERT_EQUAL(count(s), 9);
	list(s, &c);
	CU_ASSERT_EQUAL(c.n, 7);
	CU_ASSERT_EQUAL(count(s), 7);

	/* a corrupt -H in the listing: skipped and moved aside */
	CU_ASSERT_EQUAL(t_write_file(q_spool_path(s, ids[5], 'H', path,
						  sizeof(path)), "qkit-H 1\nid"), 0);
	CU_ASSERT_EQUAL(q_index_del(h, ids[5], &err), 0);
	list(s, &c);
	CU_ASSERT_EQUAL(c.n, 6);
	snprintf(path, sizeof(path), "%s/corrupt/%s-H", q_spool_dir(s), ids[5]);
	CU_ASSERT_TRUE(exists(path));

	q_spool_close(&s);
}

static bool listed(const struct coll *c, const char *id)
{
	for (size_t i = 0; i < c->n; i++)
		if (strcmp(c->ids[i], id) == 0)
			return true;
	return false;
}

/* Directory stamps: an unchanged directory is not read again, and each
 * guard (boot id, entry count, directory change) forces a read. */
static void test_list_stamps(void)
{
	struct q_spool *s = t_new_spool();
	char ids[6][Q_ID_LEN + 1], fake[Q_ID_LEN + 1], path[PATH_MAX];
	struct q_hints *h = NULL;
	struct q_index_rec r;
	struct coll c = { 0 };
	const char *err = NULL;
	time_t made;
	char *st;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(q_spool_hints(s, &h, &err), 0);
	unsetenv("QKIT_BOOT_ID");
	for (int i = 0; i < 6; i++)
		CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", ids[i]), 0);
	/* stamps are only taken on directories unchanged for 2 seconds */
	made = time(NULL);
	while (time(NULL) < made + 3)
		usleep(50000);
	list(s, &c);
	CU_ASSERT_EQUAL(c.n, 6);
	snprintf(path, sizeof(path), "%s/db/index-stamps", q_spool_dir(s));
	st = t_read_file(path, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(st);
	CU_ASSERT(starts_with_s(st, "qkit-index-stamps 1 "));
	CU_ASSERT(strlen(st) > 4 && strcmp(st + strlen(st) - 4, "end\n") == 0);
	free(st);

	/* swap an entry for a fake one in the same directory behind the
	 * listing's back (same count, no directory change): the fast path
	 * trusts the index - the documented limit of the stamps */
	memcpy(fake, ids[1], sizeof(fake));
	memcpy(fake + 12, "zzzz", 4);
	CU_ASSERT_EQUAL_FATAL(q_index_get(h, ids[1], &r, &err), 0);
	memcpy(r.id, fake, sizeof(fake));
	CU_ASSERT_EQUAL(q_index_put(h, &r, &err), 0);
	q_index_rec_clear(&r);
	CU_ASSERT_EQUAL(q_index_del(h, ids[1], &err), 0);
	list(s, &c);
	CU_ASSERT_TRUE(listed(&c, fake));
	CU_ASSERT_FALSE(listed(&c, ids[1]));

	/* another boot: nothing is trusted, the index is repaired */
	setenv("QKIT_BOOT_ID", "another-boot", 1);
	list(s, &c);
	CU_ASSERT_EQUAL(c.n, 6);
	CU_ASSERT_FALSE(listed(&c, fake));
	CU_ASSERT_TRUE(listed(&c, ids[1]));
	unsetenv("QKIT_BOOT_ID");
	list(s, &c);
	CU_ASSERT_EQUAL(c.n, 6);

	/* an entry lost: the count differs, the directory is read */
	CU_ASSERT_EQUAL(q_index_del(h, ids[2], &err), 0);
	list(s, &c);
	CU_ASSERT_EQUAL(c.n, 6);
	CU_ASSERT_TRUE(listed(&c, ids[2]));

	/* an -H removed behind the index's back changes the directory */
	CU_ASSERT_EQUAL(unlink(q_spool_path(s, ids[3], 'H', path, sizeof(path))), 0);
	list(s, &c);
	CU_ASSERT_EQUAL(c.n, 5);
	CU_ASSERT_FALSE(listed(&c, ids[3]));

	/* a garbled stamps file is ignored */
	snprintf(path, sizeof(path), "%s/db/index-stamps", q_spool_dir(s));
	CU_ASSERT_EQUAL(t_write_file(path, "qkit-index-stamps 1 x\n0 1 2"), 0);
	list(s, &c);
	CU_ASSERT_EQUAL(c.n, 5);
	q_spool_close(&s);
}

static int fail_fn(const struct q_index_rec *r, void *ctx)
{
	(void)r;
	(void)ctx;
	return -1;
}

static void test_list_error_and_scan(void)
{
	struct q_spool *s = t_new_spool();
	char id[Q_ID_LEN + 1];
	const char *err = NULL;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", id), 0);
	CU_ASSERT_EQUAL(q_spool_list(s, fail_fn, NULL, &err), -1);
	q_spool_close(&s);
}

static void test_rebuild(void)
{
	struct q_spool *s = t_new_spool();
	char ids[5][Q_ID_LEN + 1], path[PATH_MAX], young[PATH_MAX];
	struct q_hints *h = NULL;
	struct timespec old[2] = { { 1000000000, 0 }, { 1000000000, 0 } };
	const char *err = NULL;
	size_t n = 0;
	struct coll c = { 0 };

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(q_spool_hints(s, &h, &err), 0);
	for (int i = 0; i < 5; i++)
		CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", ids[i]), 0);
	CU_ASSERT_EQUAL(q_hints_truncate(h, Q_DB_INDEX, &err), 0);
	CU_ASSERT_EQUAL(q_hints_put(h, Q_DB_INDEX, "junk", 4, "x", 1, &err), 0);

	/* crash leftovers: an old orphan -D, an old tmp file, a young one */
	q_spool_path(s, ids[1], 'D', path, sizeof(path));
	CU_ASSERT_EQUAL(unlink(q_spool_path(s, ids[1], 'H', young, sizeof(young))), 0);
	CU_ASSERT_EQUAL(utimensat(AT_FDCWD, path, old, 0), 0);
	char tmp_old[PATH_MAX], orphan_young[PATH_MAX];
	snprintf(tmp_old, sizeof(tmp_old), "%s/tmp/%s-H", q_spool_dir(s), ids[0]);
	CU_ASSERT_EQUAL(t_write_file(tmp_old, "partial"), 0);
	CU_ASSERT_EQUAL(utimensat(AT_FDCWD, tmp_old, old, 0), 0);
	q_spool_path(s, ids[2], 'J', orphan_young, sizeof(orphan_young));
	CU_ASSERT_EQUAL(t_write_file(orphan_young, "0 D 1 250 - -\n"), 0);
	CU_ASSERT_EQUAL(unlink(q_spool_path(s, ids[2], 'H', young, sizeof(young))), 0);

	CU_ASSERT_EQUAL(q_index_rebuild(s, &n, &err), 0);
	CU_ASSERT_EQUAL(n, 3);
	CU_ASSERT_EQUAL(count(s), 3);
	CU_ASSERT_FALSE(exists(path));
	CU_ASSERT_FALSE(exists(tmp_old));
	CU_ASSERT_TRUE(exists(orphan_young));
	list(s, &c);
	CU_ASSERT_EQUAL_FATAL(c.n, 3);
	CU_ASSERT_STRING_EQUAL(c.ids[0], ids[0]);
	CU_ASSERT_STRING_EQUAL(c.ids[1], ids[3]);
	CU_ASSERT_STRING_EQUAL(c.ids[2], ids[4]);
	q_spool_close(&s);
}

/* q_spool_scan sees exactly the messages with an -H */
static int scan_fn(const char *id, void *ctx)
{
	size_t *n = ctx;
	(*n) += q_id_valid(id) ? 1 : 1000;
	return 0;
}

static void test_scan(void)
{
	struct q_spool *s = t_new_spool();
	char id[Q_ID_LEN + 1], path[PATH_MAX];
	const char *err = NULL;
	size_t n = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	for (int i = 0; i < 20; i++)
		CU_ASSERT_EQUAL_FATAL(mk(s, "", id), 0);
	/* files that are not messages */
	snprintf(path, sizeof(path), "%s/input/%c/not-an-id-H", q_spool_dir(s),
		 id[Q_ID_SPLIT_POS]);
	CU_ASSERT_EQUAL(t_write_file(path, "x"), 0);
	CU_ASSERT_EQUAL(unlink(q_spool_path(s, id, 'H', path, sizeof(path))), 0);
	CU_ASSERT_EQUAL(q_spool_scan(s, scan_fn, &n, &err), 0);
	CU_ASSERT_EQUAL(n, 19);
	q_spool_close(&s);
}

/* Listing from the files alone (qctl list when the hints cannot be
 * opened): the same messages in the same order as q_spool_list, a -H
 * that is gone or garbled left out, and no hints opened or made. */
static void test_list_files(void)
{
	struct q_spool *s = t_new_spool(), *s2 = NULL;
	char ids[6][Q_ID_LEN + 1], path[PATH_MAX], db[PATH_MAX], aside[PATH_MAX];
	struct coll c = { 0 }, f = { 0 };
	const char *err = NULL;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	for (int i = 0; i < 6; i++)
		CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", ids[i]), 0);
	list(s, &c);
	CU_ASSERT_EQUAL_FATAL(c.n, 6);
	CU_ASSERT_EQUAL(unlink(q_spool_path(s, ids[1], 'H', path, sizeof(path))), 0);
	CU_ASSERT_EQUAL(t_write_file(q_spool_path(s, ids[4], 'H', path,
						  sizeof(path)), "garbage\n"), 0);
	/* a second handle, with the hints put out of reach: any open would
	 * make a new db/ */
	snprintf(db, sizeof(db), "%s/db", q_spool_dir(s));
	snprintf(aside, sizeof(aside), "%s/db.aside", q_spool_dir(s));
	CU_ASSERT_EQUAL_FATAL(q_spool_open(q_spool_dir(s), 0, &s2, &err), 0);
	CU_ASSERT_EQUAL_FATAL(rename(db, aside), 0);
	CU_ASSERT_EQUAL(q_spool_list_files(s2, coll_fn, &f, &err), 0);
	CU_ASSERT_FALSE(f.bad);
	CU_ASSERT_EQUAL_FATAL(f.n, 4);
	CU_ASSERT_STRING_EQUAL(f.ids[0], ids[0]);
	CU_ASSERT_STRING_EQUAL(f.ids[1], ids[2]);
	CU_ASSERT_STRING_EQUAL(f.ids[2], ids[3]);
	CU_ASSERT_STRING_EQUAL(f.ids[3], ids[5]);
	CU_ASSERT_FALSE(exists(db));
	/* stop early */
	f.n = 0;
	f.stop_after = 2;
	CU_ASSERT_EQUAL(q_spool_list_files(s2, coll_fn, &f, &err), 0);
	CU_ASSERT_EQUAL(f.n, 2);
	q_spool_close(&s2);
	CU_ASSERT_EQUAL(rename(aside, db), 0);
	q_spool_close(&s);
}

void suite_index(void)
{
	CU_pSuite s = CU_add_suite("index", NULL, NULL);

	CU_add_test(s, "record codec", test_codec);
	CU_add_test(s, "record from envelope", test_from_env);
	CU_add_test(s, "list consistency with the spool", test_list_consistency);
	CU_add_test(s, "list: directory stamps and their guards", test_list_stamps);
	CU_add_test(s, "list passes errors through", test_list_error_and_scan);
	CU_add_test(s, "rebuild and leftovers", test_rebuild);
	CU_add_test(s, "scan", test_scan);
	CU_add_test(s, "list from the files alone", test_list_files);
}
