/*
 * tests/test_session.c - suite "session": the live-session registry.
 * Dead pids (a reaped child) and other boot ids are hidden and deleted;
 * records of an unknown version are skipped and kept.
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

#define BOOT_OTHER "99999999-8888-7777-6666-555555555555"

static struct q_hints *open_hints(void)
{
	char path[4096];
	char *t = t_tmpdir();
	struct q_hints *h = NULL;
	const char *err, *notice;

	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	snprintf(path, sizeof(path), "%s/db", t);
	if (q_hints_open(path, "smtp", &h, &notice, &err) != 0)
		fprintf(stderr, "open: %s\n", err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(h);
	return h;
}

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

struct seen {
	size_t n;
	long pids[16];
	uint32_t workers[16];
	struct q_session_rec first;
	size_t stop_after;
};

static int seen_fn(const struct q_session_rec *s, void *ctx)
{
	struct seen *v = ctx;

	if (v->n == 0) {
		v->first = *s;
		v->first.host = s->host ? strdup(s->host) : NULL;
		v->first.ip = s->ip ? strdup(s->ip) : NULL;
		v->first.tls = s->tls ? strdup(s->tls) : NULL;
		v->first.state = s->state ? strdup(s->state) : NULL;
		v->first.msgid = s->msgid ? strdup(s->msgid) : NULL;
	}
	if (v->n < 16) {
		v->pids[v->n] = s->pid;
		v->workers[v->n] = s->worker;
	}
	v->n++;
	return v->stop_after > 0 && v->n >= v->stop_after ? 1 : 0;
}

static void test_roundtrip(void)
{
	struct q_hints *h = open_hints();
	struct q_session_rec s = {
		.pid = (long)getpid(), .worker = 3,
		.host = "mx.example", .ip = "192.0.2.7", .port = 25,
		.tls = "TLSv1.3:TLS_AES_256_GCM_SHA384", .state = "data",
		.msgid = "1abcdE-000001-Xy", .msgs = 12,
		.bytes = 0x123456789ull, .started = 1700000000,
		.changed = 1700000042,
	};
	struct seen v = { 0 };
	const char *err;
	char boot[40];

	CU_ASSERT_EQUAL(q_session_put(h, &s, &err), 0);
	CU_ASSERT_EQUAL(q_session_list(h, seen_fn, &v, &err), 0);
	CU_ASSERT_EQUAL_FATAL(v.n, 1);
	CU_ASSERT_EQUAL(v.first.pid, s.pid);
	CU_ASSERT_EQUAL(v.first.worker, 3);
	CU_ASSERT_STRING_EQUAL(v.first.host, "mx.example");
	CU_ASSERT_STRING_EQUAL(v.first.ip, "192.0.2.7");
	CU_ASSERT_EQUAL(v.first.port, 25);
	CU_ASSERT_STRING_EQUAL(v.first.tls, s.tls);
	CU_ASSERT_STRING_EQUAL(v.first.state, "data");
	CU_ASSERT_STRING_EQUAL(v.first.msgid, s.msgid);
	CU_ASSERT_EQUAL(v.first.msgs, 12);
	CU_ASSERT_EQUAL(v.first.bytes, 0x123456789ull);
	CU_ASSERT_EQUAL(v.first.started, 1700000000);
	CU_ASSERT_EQUAL(v.first.changed, 1700000042);
	/* an empty boot id was filled with the real one */
	CU_ASSERT_EQUAL_FATAL(q_boot_id(boot, sizeof(boot), NULL), 0);
	CU_ASSERT_STRING_EQUAL(v.first.boot_id, boot);
	q_session_rec_clear(&v.first);
	CU_ASSERT_PTR_NULL(v.first.host);

	/* replace: NULL tls and msgid come back as NULL */
	s.tls = NULL;
	s.msgid = NULL;
	s.state = "connect";
	memset(&v, 0, sizeof(v));
	CU_ASSERT_EQUAL(q_session_put(h, &s, &err), 0);
	CU_ASSERT_EQUAL(q_session_list(h, seen_fn, &v, &err), 0);
	CU_ASSERT_EQUAL_FATAL(v.n, 1);
	CU_ASSERT_PTR_NULL(v.first.tls);
	CU_ASSERT_PTR_NULL(v.first.msgid);
	CU_ASSERT_STRING_EQUAL(v.first.state, "connect");
	q_session_rec_clear(&v.first);

	CU_ASSERT_EQUAL(q_session_del(h, s.pid, 3, &err), 0);
	CU_ASSERT_EQUAL(q_session_del(h, s.pid, 3, &err), Q_NOTFOUND);
	memset(&v, 0, sizeof(v));
	CU_ASSERT_EQUAL(q_session_list(h, seen_fn, &v, &err), 0);
	CU_ASSERT_EQUAL(v.n, 0);
	q_hints_close(&h);
}

/* Dead pids and other boots are hidden and deleted. */
static void test_list_hides(void)
{
	struct q_hints *h = open_hints();
	struct seen v = { 0 };
	const char *err;
	size_t n, removed;
	long dead = dead_pid();
	static const char future[] = "\x05 a session of a later qkit";
	const struct {
		long pid;
		uint32_t worker;
		const char *boot;     /* NULL: this boot */
		bool shown;
	} cases[] = {
		{ (long)getpid(), 0, NULL, true },
		{ (long)getpid(), 1, NULL, true },
		{ dead, 0, NULL, false },
		{ 1, 0, BOOT_OTHER, false },
		{ 1, 7, NULL, true },
	};
	size_t i, want = 0;

	for (i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		struct q_session_rec s = { .pid = cases[i].pid,
					   .worker = cases[i].worker,
					   .host = "h", .ip = "::1",
					   .state = "rcpt" };

		if (cases[i].boot != NULL)
			snprintf(s.boot_id, sizeof(s.boot_id), "%s", cases[i].boot);
		CU_ASSERT_EQUAL(q_session_put(h, &s, &err), 0);
		want += cases[i].shown;
	}
	CU_ASSERT_EQUAL(q_hints_put(h, Q_DB_SESSIONS, "9.9", 3, future,
				    sizeof(future) - 1, &err), 0);
	CU_ASSERT_EQUAL(q_session_list(h, seen_fn, &v, &err), 0);
	CU_ASSERT_EQUAL(v.n, want);
	for (i = 0; i < v.n && i < 16; i++)
		CU_ASSERT(v.pids[i] != dead);
	q_session_rec_clear(&v.first);
	/* deleted as met; the unreadable one stays */
	CU_ASSERT_EQUAL(q_hints_count(h, Q_DB_SESSIONS, &n, &err), 0);
	CU_ASSERT_EQUAL(n, want + 1);
	/* stop early */
	memset(&v, 0, sizeof(v));
	v.stop_after = 2;
	CU_ASSERT_EQUAL(q_session_list(h, seen_fn, &v, &err), 0);
	CU_ASSERT_EQUAL(v.n, 2);
	q_session_rec_clear(&v.first);
	/* clean by boot id: everything of "another" boot goes */
	CU_ASSERT_EQUAL(q_session_clean(h, BOOT_OTHER, &removed, &err), 0);
	CU_ASSERT_EQUAL(removed, want);
	CU_ASSERT_EQUAL(q_hints_count(h, Q_DB_SESSIONS, &n, &err), 0);
	CU_ASSERT_EQUAL(n, 1);
	q_hints_close(&h);
}

/* Clean keeps this boot's records, even of dead pids (that is list's job). */
static void test_clean(void)
{
	struct q_hints *h = open_hints();
	const char *err;
	size_t removed, n;
	struct q_session_rec a = { .pid = dead_pid(), .worker = 0, .host = "a" };
	struct q_session_rec b = { .pid = 1, .worker = 0, .host = "b" };

	snprintf(b.boot_id, sizeof(b.boot_id), "%s", BOOT_OTHER);
	CU_ASSERT_EQUAL(q_session_put(h, &a, &err), 0);
	CU_ASSERT_EQUAL(q_session_put(h, &b, &err), 0);
	CU_ASSERT_EQUAL(q_session_clean(h, NULL, &removed, &err), 0);
	CU_ASSERT_EQUAL(removed, 1);
	CU_ASSERT_EQUAL(q_hints_count(h, Q_DB_SESSIONS, &n, &err), 0);
	CU_ASSERT_EQUAL(n, 1);
	q_hints_close(&h);
}

/* Decoding garbage: every truncation of a good record fails cleanly. */
static void test_decode_garbage(void)
{
	struct q_hints *h = open_hints();
	struct q_session_rec s = { .pid = 42, .worker = 1, .host = "h",
				   .ip = "192.0.2.1", .state = "ehlo",
				   .tls = "TLSv1.2" };
	struct q_session_rec out;
	struct q_buf b = { 0 };
	const char *err;
	size_t cut;

	CU_ASSERT_EQUAL(q_session_put(h, &s, &err), 0);
	CU_ASSERT_EQUAL(q_hints_get(h, Q_DB_SESSIONS, "42.1", 4, &b, &err), 0);
	CU_ASSERT_EQUAL(q_session_decode(b.data, b.len, &out, &err), 0);
	CU_ASSERT_STRING_EQUAL(out.tls, "TLSv1.2");
	q_session_rec_clear(&out);
	for (cut = 0; cut < b.len; cut++) {
		CU_ASSERT_EQUAL(q_session_decode(b.data, cut, &out, &err), -1);
		CU_ASSERT_PTR_NULL(out.host);
	}
	q_buf_free(&b);
	q_hints_close(&h);
}

void suite_session(void)
{
	CU_pSuite s = CU_add_suite("session", NULL, NULL);

	CU_add_test(s, "put, list, replace, delete", test_roundtrip);
	CU_add_test(s, "list hides dead pids and other boots", test_list_hides);
	CU_add_test(s, "clean by boot id", test_clean);
	CU_add_test(s, "decode: truncated records", test_decode_garbage);
}
