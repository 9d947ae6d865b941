/*
 * tests/test_spool.c - the spool: tree creation and permission checks,
 * create/read round trips with odd bytes, the -H format, the journal
 * (torn last line, garbage), locks across processes, corrupt -H files
 * (truncated at every byte offset, random damage), commit, freeze/thaw,
 * remove, message logs, and SIGKILL during creation.
 */
#include "config.h"
#include "q_private.h"
#include "q_spool-private.h"
#include "q/spool.h"
#include "q/hints.h"
#include "q/log.h"
#include "tests/tlib.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

/* ---- helpers ---- */

static char *new_spool_dir(void)
{
	static char path[PATH_MAX];
	char *t = t_tmpdir();

	if (t == NULL)
		return NULL;
	snprintf(path, sizeof(path), "%s/spool", t);
	return path;
}

static int mk(struct q_spool *s, const char *sender, const char *const *rcpts,
	      size_t n, const char *data, char id[Q_ID_LEN + 1])
{
	struct q_newmsg m = { sender, rcpts, n, data, strlen(data), 0 };
	const char *err = NULL;
	int r = q_spool_create(s, &m, Q_CREATE_NOSYNC, id, &err);

	if (r != 0)
		fprintf(stderr, "\nq_spool_create: %s\n", err);
	return r;
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/* size of a file, -1 when missing */
static long long size_of(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static mode_t mode_of(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0 ? (st.st_mode & 07777) : (mode_t)-1;
}

static char *corrupt_path(struct q_spool *s, const char *id, char kind,
			  char *buf, size_t size)
{
	snprintf(buf, size, "%s/corrupt/%s-%c", q_spool_dir(s), id, kind);
	return buf;
}

static bool starts_with(const char *s, const char *p)
{
	return s != NULL && strncmp(s, p, strlen(p)) == 0;
}

/* "PATH:LINE: " at the start of err */
static bool names_path_line(const char *err, const char *path)
{
	const char *p;

	if (!starts_with(err, path) || err[strlen(path)] != ':')
		return false;
	p = err + strlen(path) + 1;
	if (*p < '1' || *p > '9')
		return false;
	while (*p >= '0' && *p <= '9')
		p++;
	return p[0] == ':' && p[1] == ' ';
}

/* ---- open ---- */

static void test_open_tree_modes(void)
{
	static const char *const subs[] = {
		"input", "msglog", "corrupt", "tmp", "db", "log"
	};
	char *dir = new_spool_dir(), path[PATH_MAX + 64], id[Q_ID_LEN + 1];
	const char *rc[] = { "a@example.com" };
	struct q_spool *s = NULL;
	const char *err = NULL;
	mode_t old;

	CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
	/* a hostile umask must not change the modes */
	old = umask(0277);
	CU_ASSERT_EQUAL(q_spool_open(dir, Q_SPOOL_CREATE, &s, &err), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL(mode_of(dir), 0700);
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, subs[i]);
		CU_ASSERT_EQUAL(mode_of(path), 0700);
	}
	CU_ASSERT_EQUAL(mk(s, "x@example.com", rc, 1, "hi\r\n", id), 0);
	CU_ASSERT_EQUAL(mode_of(q_spool_path(s, id, 'H', path, sizeof(path))), 0600);
	CU_ASSERT_EQUAL(mode_of(q_spool_path(s, id, 'D', path, sizeof(path))), 0600);
	CU_ASSERT_EQUAL(mode_of(q_spool_path(s, id, 'J', path, sizeof(path))), 0600);
	snprintf(path, sizeof(path), "%s/input/%c", dir, id[Q_ID_SPLIT_POS]);
	CU_ASSERT_EQUAL(mode_of(path), 0700);
	CU_ASSERT_EQUAL(q_msglog(s, id, "hello", &err), 0);
	CU_ASSERT_EQUAL(mode_of(q_spool_path(s, id, 'L', path, sizeof(path))), 0600);
	/* the -D can be locked (opened O_RDWR) */
	struct q_msg *m = NULL;
	CU_ASSERT_EQUAL(q_msg_lock(s, id, &m, &err), 0);
	q_msg_unlock(&m);
	umask(old);
	CU_ASSERT_STRING_EQUAL(q_spool_dir(s), dir);
	q_spool_close(&s);
	CU_ASSERT_PTR_NULL(s);

	/* reopen without CREATE works */
	CU_ASSERT_EQUAL(q_spool_open(dir, 0, &s, &err), 0);
	q_spool_close(&s);
}

static void test_open_refused(void)
{
	char *dir = new_spool_dir(), msg[PATH_MAX * 2 + 100], path[PATH_MAX + 64];
	struct q_spool *s = NULL;
	const char *err = NULL;

	CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
	/* not a spool, no CREATE */
	CU_ASSERT_EQUAL(q_spool_open(dir, 0, &s, &err), -1);
	CU_ASSERT_PTR_NULL(s);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, dir));
	CU_ASSERT_EQUAL(q_spool_open(dir, Q_SPOOL_CREATE, &s, &err), 0);
	q_spool_close(&s);

	CU_ASSERT_EQUAL(chmod(dir, 0707), 0);
	CU_ASSERT_EQUAL(q_spool_open(dir, 0, &s, &err), -1);
	CU_ASSERT_PTR_NULL(s);
	snprintf(msg, sizeof(msg), "spool directory %s is writable by others; "
		 "fix with chmod 700 %s", dir, dir);
	CU_ASSERT_STRING_EQUAL(err, msg);
	CU_ASSERT_EQUAL(q_spool_open(dir, Q_SPOOL_CREATE, &s, &err), -1);

	CU_ASSERT_EQUAL(chmod(dir, 0770), 0);
	CU_ASSERT_EQUAL(q_spool_open(dir, 0, &s, &err), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "writable by its group"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "chmod 700"));

	/* a writable subdirectory is refused too */
	CU_ASSERT_EQUAL(chmod(dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/input", dir);
	CU_ASSERT_EQUAL(chmod(path, 0777), 0);
	CU_ASSERT_EQUAL(q_spool_open(dir, 0, &s, &err), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
	CU_ASSERT_EQUAL(chmod(path, 0700), 0);
	CU_ASSERT_EQUAL(q_spool_open(dir, 0, &s, &err), 0);
	q_spool_close(&s);

	/* another owner (only testable as root) */
	if (geteuid() == 0) {
		CU_ASSERT_EQUAL(chown(dir, 65534, 65534), 0);
		CU_ASSERT_EQUAL(q_spool_open(dir, 0, &s, &err), -1);
		CU_ASSERT_PTR_NOT_NULL(strstr(err, "owned by uid 65534"));
		CU_ASSERT_EQUAL(chown(dir, 0, 0), 0);
	}
	CU_ASSERT_EQUAL(q_spool_open("", 0, &s, &err), -1);
}

/* ---- round trip ---- */

static const char *const odd_strings[] = {
	"", "-", "\"\"", "a b", "tab\there", "back\\slash", "new\nline",
	"cr\rlf\r\n", "\x01\x02\x1b[31m", "\x7f\x80\xff", "caf\xc3\xa9",
	"\\x41", "end", "rcpt x", "\"", "--", "a-b", "plain@example.com",
};
#define NODD (sizeof(odd_strings) / sizeof(odd_strings[0]))

static void test_roundtrip_odd_bytes(void)
{
	struct q_spool *s = t_new_spool();
	char id[Q_ID_LEN + 1], path[PATH_MAX];
	static const char data[] = "Subject: x\r\n\r\n\x00\x01\xff..dot\r\n";
	struct q_newmsg m;
	struct q_env *env = NULL;
	struct q_msg *msg = NULL;
	const char *err = NULL;
	char *got;
	size_t glen;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	for (size_t k = 0; k < NODD; k++) {
		const char *rc[NODD];
		for (size_t i = 0; i < NODD; i++)
			rc[i] = odd_strings[(i + k) % NODD];
		m = (struct q_newmsg){ odd_strings[k], rc, NODD, data,
				       sizeof(data) - 1, k % 2 ? Q_ENV_BOUNCE : 0 };
		CU_ASSERT_EQUAL_FATAL(q_spool_create(s, &m, 0, id, &err), 0);
		CU_ASSERT_TRUE(q_id_valid(id));
		CU_ASSERT_EQUAL_FATAL(q_spool_read(s, id, &env, &err), 0);
		CU_ASSERT_STRING_EQUAL(env->id, id);
		CU_ASSERT_STRING_EQUAL(env->sender, odd_strings[k]);
		CU_ASSERT_EQUAL(env->size, sizeof(data) - 1);
		CU_ASSERT_EQUAL(env->arrival, q_id_time(id));
		/* the data has \xff: q_spool_create marks it 8-bit */
		CU_ASSERT_EQUAL(env->flags, (k % 2 ? Q_ENV_BOUNCE : 0u) | Q_ENV_8BIT);
		CU_ASSERT_PTR_NULL(env->frozen_reason);
		CU_ASSERT_EQUAL_FATAL(env->nrcpt, NODD);
		for (size_t i = 0; i < NODD; i++) {
			CU_ASSERT_STRING_EQUAL(env->rcpt[i].addr, rc[i]);
			CU_ASSERT_EQUAL(env->rcpt[i].state, Q_RCPT_PENDING);
			CU_ASSERT_EQUAL(env->rcpt[i].tries, 0);
			CU_ASSERT_PTR_NULL(env->rcpt[i].host);
			CU_ASSERT_PTR_NULL(env->rcpt[i].last_error);
		}
		CU_ASSERT_EQUAL(q_env_pending(env), NODD);
		q_env_free(&env);
		CU_ASSERT_PTR_NULL(env);
		got = t_read_file(q_spool_path(s, id, 'D', path, sizeof(path)), &glen);
		CU_ASSERT(got != NULL && glen == sizeof(data) - 1 &&
			  memcmp(got, data, glen) == 0);
		free(got);
	}

	/* odd host and error texts through the journal and a commit */
	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &msg, &err), 0);
	for (size_t i = 0; i + 1 < NODD; i++)
		CU_ASSERT_EQUAL(q_msg_journal(msg, i, 'P', (int)(400 + i),
					      odd_strings[i], odd_strings[NODD - 1 - i],
					      Q_JOURNAL_NOSYNC, &err), 0);
	CU_ASSERT_EQUAL(q_msg_journal(msg, NODD - 1, 'P', 0, NULL, NULL, 0, &err), 0);
	CU_ASSERT_EQUAL(q_msg_journal_sync(msg, &err), 0);
	/* read without the lock: journal applied */
	CU_ASSERT_EQUAL_FATAL(q_spool_read(s, id, &env, &err), 0);
	for (size_t i = 0; i + 1 < NODD; i++) {
		CU_ASSERT_EQUAL(env->rcpt[i].tries, 1);
		CU_ASSERT_EQUAL(env->rcpt[i].last_code, (int)(400 + i));
		CU_ASSERT_STRING_EQUAL(env->rcpt[i].host, odd_strings[i]);
		CU_ASSERT_STRING_EQUAL(env->rcpt[i].last_error,
				       odd_strings[NODD - 1 - i]);
		CU_ASSERT(env->rcpt[i].last_time > 0);
	}
	CU_ASSERT_PTR_NULL(env->rcpt[NODD - 1].host);
	CU_ASSERT_PTR_NULL(env->rcpt[NODD - 1].last_error);
	q_env_free(&env);
	CU_ASSERT_EQUAL(q_msg_commit(msg, time(NULL) + 60, &err), 0);
	q_msg_unlock(&msg);
	/* merged: the journal is left empty for the next attempt */
	CU_ASSERT_EQUAL(size_of(q_spool_path(s, id, 'J', path, sizeof(path))), 0);
	CU_ASSERT_EQUAL_FATAL(q_spool_read(s, id, &env, &err), 0);
	for (size_t i = 0; i + 1 < NODD; i++) {
		CU_ASSERT_EQUAL(env->rcpt[i].tries, 1);
		CU_ASSERT_STRING_EQUAL(env->rcpt[i].host, odd_strings[i]);
		CU_ASSERT_STRING_EQUAL(env->rcpt[i].last_error,
				       odd_strings[NODD - 1 - i]);
	}
	CU_ASSERT_EQUAL(env->flags & Q_ENV_8BIT, Q_ENV_8BIT);
	q_env_free(&env);

	/* 7-bit data is never marked, whatever the caller asks */
	static const char ascii[] = "Subject: y\r\n\r\nplain\r\n";
	const char *one[] = {"a@example.org"};
	m = (struct q_newmsg){ "s@example.org", one, 1, ascii, sizeof(ascii) - 1,
			       Q_ENV_8BIT };
	CU_ASSERT_EQUAL_FATAL(q_spool_create(s, &m, 0, id, &err), 0);
	CU_ASSERT_EQUAL_FATAL(q_spool_read(s, id, &env, &err), 0);
	CU_ASSERT_EQUAL(env->flags, 0u);
	q_env_free(&env);
	q_spool_close(&s);
}

/* The file looks as documented: version first, "end" last, one line per
 * field, nothing outside printable ASCII. */
static void test_h_format(void)
{
	struct q_spool *s = t_new_spool();
	const char *rc[] = { "a@example.com", "b c@example.com" };
	char id[Q_ID_LEN + 1], path[PATH_MAX], want[512];
	char *h;
	size_t len;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(mk(s, "", rc, 2, "x\r\n", id), 0);
	h = t_read_file(q_spool_path(s, id, 'H', path, sizeof(path)), &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(h);
	snprintf(want, sizeof(want),
		 "qkit-H 1\nid %s\nsender \"\"\narrival %lld\nsize 3\nflags 0\n"
		 "frozen -\nrcpts 2\n"
		 "rcpt a@example.com P 0 0 0 - -\n"
		 "rcpt b\\x20c@example.com P 0 0 0 - -\nend\n",
		 id, (long long)q_id_time(id));
	CU_ASSERT_STRING_EQUAL(h, want);
	free(h);
	q_spool_close(&s);
}

/* ---- journal ---- */

static void test_journal_torn_line(void)
{
	struct q_spool *s = t_new_spool();
	const char *rc[] = { "a@example.com", "b@example.com", "c@example.com" };
	char id[Q_ID_LEN + 1], jpath[PATH_MAX], line[256];
	struct q_env *env = NULL;
	struct q_msg *m = NULL;
	const char *err = NULL;
	char *j;
	int fd;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", rc, 3, "x\r\n", id), 0);
	q_spool_path(s, id, 'J', jpath, sizeof(jpath));
	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, &err), 0);
	CU_ASSERT_EQUAL(q_msg_journal(m, 0, 'D', 250, "mx.example.com", "OK", 0,
				      &err), 0);
	CU_ASSERT_EQUAL(q_msg_journal(m, 1, 'P', 451, "mx.example.com",
				      "try later", 0, &err), 0);
	/* errors: out of range, bad state, final recipient */
	CU_ASSERT_EQUAL(q_msg_journal(m, 3, 'D', 250, NULL, NULL, 0, &err), -1);
	CU_ASSERT_EQUAL(q_msg_journal(m, 1, 'Z', 250, NULL, NULL, 0, &err), -1);
	CU_ASSERT_EQUAL(q_msg_journal(m, 0, 'P', 451, NULL, NULL, 0, &err), -1);
	CU_ASSERT_EQUAL(q_msg_journal(m, 1, 'P', 1000, NULL, NULL, 0, &err), -1);
	/* the in-memory envelope follows */
	CU_ASSERT_EQUAL(q_msg_env(m)->rcpt[0].state, 'D');
	CU_ASSERT_EQUAL(q_msg_env(m)->rcpt[1].tries, 1);
	q_msg_unlock(&m);   /* crash-like: not committed */

	/* a torn write: a line without its newline */
	fd = open(jpath, O_WRONLY | O_APPEND);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(write(fd, "2 D 17000", 9), 9);
	close(fd);

	CU_ASSERT_EQUAL_FATAL(q_spool_read(s, id, &env, &err), 0);
	CU_ASSERT_EQUAL(env->rcpt[0].state, 'D');
	CU_ASSERT_EQUAL(env->rcpt[0].last_code, 250);
	CU_ASSERT_STRING_EQUAL(env->rcpt[0].host, "mx.example.com");
	CU_ASSERT_EQUAL(env->rcpt[1].state, 'P');
	CU_ASSERT_EQUAL(env->rcpt[1].tries, 1);
	CU_ASSERT_STRING_EQUAL(env->rcpt[1].last_error, "try later");
	CU_ASSERT_EQUAL(env->rcpt[2].state, 'P');    /* torn line ignored */
	CU_ASSERT_EQUAL(env->rcpt[2].tries, 0);
	CU_ASSERT_EQUAL(q_env_pending(env), 2);
	q_env_free(&env);

	/* the next lock holder cuts the torn tail before appending */
	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, &err), 0);
	CU_ASSERT_EQUAL(q_msg_env(m)->rcpt[0].state, 'D');
	CU_ASSERT_EQUAL(q_msg_journal(m, 2, 'F', 550, "mx.example.com",
				      "no such user", 0, &err), 0);
	j = t_read_file(jpath, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	CU_ASSERT_PTR_NULL(strstr(j, "17000"));
	CU_ASSERT_EQUAL(j[strlen(j) - 1], '\n');
	snprintf(line, sizeof(line), "2 F ");
	CU_ASSERT_PTR_NOT_NULL(strstr(j, line));
	free(j);
	q_msg_unlock(&m);
	CU_ASSERT_EQUAL_FATAL(q_spool_read(s, id, &env, &err), 0);
	CU_ASSERT_EQUAL(env->rcpt[2].state, 'F');
	CU_ASSERT_STRING_EQUAL(env->rcpt[2].last_error, "no such user");
	CU_ASSERT_EQUAL(q_env_pending(env), 1);
	q_env_free(&env);
	q_spool_close(&s);
}

static void test_journal_garbage(void)
{
	static const char *const bad[] = {
		"0 D 1 250 - -\nxx\n0 D 1 250 - -\n",
		"9 D 1 250 - -\n",              /* index out of range */
		"0 Q 1 250 - -\n",
		"0 D -1 250 - -\n",
		"0 D 1 2500 - -\n",
		"0 D 1 250 - - extra\n",
		"0 D 1 250 -\n",
		"0  D 1 250 - -\n",
		"0 D 1 250 a\\x00b -\n",
		"0 D 1 250 - bad\\q\n",
		"\n",
	};
	const char *rc[] = { "a@example.com", "b@example.com" };
	char id[Q_ID_LEN + 1], jpath[PATH_MAX], path[PATH_MAX];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct q_spool *s = t_new_spool();
		struct q_env *env = NULL;
		struct q_msg *m = NULL;
		const char *err = NULL;

		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", rc, 2, "x\r\n", id), 0);
		q_spool_path(s, id, 'J', jpath, sizeof(jpath));
		CU_ASSERT_EQUAL_FATAL(t_write_file(jpath, bad[i]), 0);
		if (i % 2 == 0)
			CU_ASSERT_EQUAL(q_spool_read(s, id, &env, &err), -1)
		else
			CU_ASSERT_EQUAL(q_msg_lock(s, id, &m, &err), -1);
		CU_ASSERT_PTR_NULL(env);
		CU_ASSERT_PTR_NULL(m);
		if (!names_path_line(err, jpath))
			fprintf(stderr, "\ncase %zu: %s\n", i, err);
		CU_ASSERT_TRUE(names_path_line(err, jpath));
		CU_ASSERT_PTR_NOT_NULL(strstr(err, "corrupt/"));
		CU_ASSERT_FALSE(exists(q_spool_path(s, id, 'H', path, sizeof(path))));
		CU_ASSERT_FALSE(exists(jpath));
		CU_ASSERT_TRUE(exists(corrupt_path(s, id, 'H', path, sizeof(path))));
		CU_ASSERT_TRUE(exists(corrupt_path(s, id, 'D', path, sizeof(path))));
		CU_ASSERT_TRUE(exists(corrupt_path(s, id, 'J', path, sizeof(path))));
		CU_ASSERT_EQUAL(q_spool_read(s, id, &env, &err), Q_NOTFOUND);
		q_spool_close(&s);
	}
}

/* ---- locks ---- */

static void test_lock_busy(void)
{
	struct q_spool *s = t_new_spool();
	const char *rc[] = { "a@example.com" };
	char id[Q_ID_LEN + 1], path[PATH_MAX];
	struct q_msg *m = NULL, *m2 = NULL;
	const char *err = NULL;
	char *before, *after;
	int st;
	pid_t pid;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", rc, 1, "x\r\n", id), 0);
	before = t_read_file(q_spool_path(s, id, 'H', path, sizeof(path)), NULL);
	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, &err), 0);
	/* another open in this process */
	CU_ASSERT_EQUAL(q_msg_lock(s, id, &m2, &err), Q_BUSY);
	CU_ASSERT_PTR_NULL(m2);

	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		struct q_spool *cs = NULL;
		struct q_msg *cm = NULL;
		int r;

		if (q_spool_open(q_spool_dir(s), 0, &cs, &err) < 0)
			_exit(10);
		r = q_msg_lock(cs, id, &cm, &err);
		q_spool_close(&cs);
		_exit(r == Q_BUSY && cm == NULL ? 0 : 11);
	}
	CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	after = t_read_file(path, NULL);
	CU_ASSERT(before != NULL && after != NULL && strcmp(before, after) == 0);
	free(after);
	CU_ASSERT_EQUAL(size_of(q_spool_path(s, id, 'J', path, sizeof(path))), 0);
	q_msg_unlock(&m);

	/* free again: the child gets it now and removes the message */
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		struct q_spool *cs = NULL;
		struct q_msg *cm = NULL;
		int r;

		if (q_spool_open(q_spool_dir(s), 0, &cs, &err) < 0)
			_exit(10);
		if (q_msg_lock(cs, id, &cm, &err) != 0)
			_exit(11);
		r = q_msg_remove(&cm, &err) == 0 && cm == NULL ? 0 : 12;
		q_spool_close(&cs);   /* closes the hints cleanly */
		_exit(r);
	}
	CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CU_ASSERT_EQUAL(q_msg_lock(s, id, &m, &err), Q_NOTFOUND);
	free(before);

	/* ids that are not ids, ids that do not exist */
	CU_ASSERT_EQUAL(q_msg_lock(s, "../../etc/passwd", &m, &err), -1);
	CU_ASSERT_EQUAL(q_msg_lock(s, "000000-0000-0000", &m, &err), Q_NOTFOUND);
	struct q_env *env = NULL;
	CU_ASSERT_EQUAL(q_spool_read(s, "x", &env, &err), -1);
	CU_ASSERT_PTR_NULL(env);
	CU_ASSERT_STRING_EQUAL(q_spool_path(s, "../x", 'H', path, sizeof(path)), "");
	q_spool_close(&s);
}

/* A message removed while another process waited for its lock. */
static void test_lock_after_remove(void)
{
	struct q_spool *s = t_new_spool();
	const char *rc[] = { "a@example.com" };
	char id[Q_ID_LEN + 1];
	struct q_msg *m = NULL, *m2 = NULL;
	const char *err = NULL;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", rc, 1, "x\r\n", id), 0);
	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, &err), 0);
	CU_ASSERT_EQUAL(q_msg_remove(&m, &err), 0);
	CU_ASSERT_PTR_NULL(m);
	CU_ASSERT_EQUAL(q_msg_lock(s, id, &m2, &err), Q_NOTFOUND);
	q_spool_close(&s);
}

/* ---- corrupt -H ---- */

static void check_corrupt(struct q_spool *s, const char *id, const char *content,
			  size_t len, bool use_lock, bool may_parse)
{
	char hpath[PATH_MAX], dpath[PATH_MAX], cpath[PATH_MAX];
	struct q_env *env = NULL;
	struct q_msg *m = NULL;
	const char *err = NULL;
	FILE *f;
	int r;

	q_spool_path(s, id, 'H', hpath, sizeof(hpath));
	q_spool_path(s, id, 'D', dpath, sizeof(dpath));
	/* put the message back if an earlier round moved it */
	corrupt_path(s, id, 'D', cpath, sizeof(cpath));
	if (exists(cpath))
		CU_ASSERT_EQUAL(rename(cpath, dpath), 0);
	f = fopen(hpath, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_EQUAL(fwrite(content, 1, len, f), len);
	fclose(f);
	if (use_lock) {
		r = q_msg_lock(s, id, &m, &err);
		q_msg_unlock(&m);
	} else {
		r = q_spool_read(s, id, &env, &err);
		q_env_free(&env);
	}
	if (may_parse && r == 0)
		return;
	CU_ASSERT_EQUAL(r, -1);
	if (!names_path_line(err, hpath))
		fprintf(stderr, "\nlen %zu: %s\n", len, err);
	CU_ASSERT_TRUE(names_path_line(err, hpath));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "moved to"));
	CU_ASSERT_FALSE(exists(hpath));
	CU_ASSERT_FALSE(exists(dpath));
	CU_ASSERT_TRUE(exists(corrupt_path(s, id, 'H', cpath, sizeof(cpath))));
	CU_ASSERT_TRUE(exists(corrupt_path(s, id, 'D', cpath, sizeof(cpath))));
}

static void test_corrupt_truncated(void)
{
	struct q_spool *s = t_new_spool();
	const char *rc[] = { "a@example.com", "b\\@example.com" };
	char id[Q_ID_LEN + 1], path[PATH_MAX];
	struct q_msg *m = NULL;
	const char *err = NULL;
	char *real;
	size_t len;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(mk(s, "odd sender\x01", rc, 2, "x\r\n", id), 0);
	/* a real -H with every kind of field filled in */
	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, &err), 0);
	CU_ASSERT_EQUAL(q_msg_journal(m, 0, 'P', 451, "mx", "later on", 0, &err), 0);
	CU_ASSERT_EQUAL(q_msg_set_frozen(m, true, "manual freeze", &err), 0);
	q_msg_unlock(&m);
	real = t_read_file(q_spool_path(s, id, 'H', path, sizeof(path)), &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(real);
	CU_ASSERT(len > 100);
	for (size_t k = 0; k < len; k++)
		check_corrupt(s, id, real, k, k % 3 == 0, false);
	/* the whole file still reads */
	check_corrupt(s, id, real, len, false, true);
	struct q_env *env = NULL;
	CU_ASSERT_EQUAL(q_spool_read(s, id, &env, &err), 0);
	CU_ASSERT(env != NULL && (env->flags & Q_ENV_FROZEN));
	q_env_free(&env);
	/* trailing data, a second "end", CRLF line ends, other versions */
	char buf[4096];
	snprintf(buf, sizeof(buf), "%sx", real);
	check_corrupt(s, id, buf, len + 1, false, false);
	snprintf(buf, sizeof(buf), "%send\n", real);
	check_corrupt(s, id, buf, len + 4, false, false);
	snprintf(buf, sizeof(buf), "qkit-H 2%s", real + 8);
	check_corrupt(s, id, buf, len, false, false);
	CU_ASSERT_PTR_NOT_NULL(strstr(q_err_last(), "version 2 unknown"));
	snprintf(buf, sizeof(buf), "%s", real);
	for (char *p = buf; (p = strchr(p, '\n')) != NULL && p[1]; p++) {
		char crlf[4096];
		size_t at = (size_t)(p - buf);
		memcpy(crlf, buf, at);
		crlf[at] = '\r';
		memcpy(crlf + at + 1, buf + at, len - at);
		check_corrupt(s, id, crlf, len + 1, false, false);
	}
	free(real);
	q_spool_close(&s);
}

/* Random damage: every outcome is a clean read or a path:line error. */
static void test_corrupt_random(void)
{
	struct q_spool *s = t_new_spool();
	const char *rc[] = { "a@example.com", "b@example.com", "c@example.com" };
	char id[Q_ID_LEN + 1], path[PATH_MAX];
	struct q_msg *m = NULL;
	const char *err = NULL;
	unsigned seed = 12345;
	char *real;
	size_t len;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", rc, 3, "x\r\n", id), 0);
	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, &err), 0);
	CU_ASSERT_EQUAL(q_msg_journal(m, 1, 'D', 250, "mx", "ok", 0, &err), 0);
	CU_ASSERT_EQUAL(q_msg_commit(m, 0, &err), 0);
	q_msg_unlock(&m);
	real = t_read_file(q_spool_path(s, id, 'H', path, sizeof(path)), &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(real);
	for (int round = 0; round < 3000; round++) {
		char buf[1024];
		size_t n = len;
		int edits = 1 + (int)(rand_r(&seed) % 4);

		memcpy(buf, real, len);
		for (int e = 0; e < edits; e++) {
			size_t at = rand_r(&seed) % n;
			switch (rand_r(&seed) % 3) {
			case 0: buf[at] = (char)(rand_r(&seed) & 0xff); break;
			case 1: buf[at] = " \n\\-\"0x9"[rand_r(&seed) % 8]; break;
			case 2: n = at + 1; break;
			}
		}
		check_corrupt(s, id, buf, n, round % 5 == 0, true);
	}
	/* pure noise, and an enormous recipient count */
	char noise[600];
	for (size_t i = 0; i < sizeof(noise); i++)
		noise[i] = (char)(rand_r(&seed) & 0xff);
	check_corrupt(s, id, noise, sizeof(noise), false, false);
	char big[1024];
	int bl = snprintf(big, sizeof(big), "qkit-H 1\nid %s\nsender x\narrival 1\n"
			  "size 3\nflags 0\nfrozen -\nrcpts 4294967295\n", id);
	check_corrupt(s, id, big, (size_t)bl, false, false);
	CU_ASSERT_PTR_NOT_NULL(strstr(q_err_last(), ":8: "));
	bl = snprintf(big, sizeof(big), "qkit-H 1\nid 000000-0000-0000\n");
	check_corrupt(s, id, big, (size_t)bl, false, false);
	CU_ASSERT_PTR_NOT_NULL(strstr(q_err_last(), ":2: id does not match"));
	free(real);
	q_spool_close(&s);
}

/* The main log keeps a trace of a message moved aside (a listing skips
 * it silently otherwise). */
static void test_corrupt_logged(void)
{
	struct q_spool *s = t_new_spool();
	const char *rc[] = { "a@example.com" };
	char id[Q_ID_LEN + 1], path[PATH_MAX];
	struct q_env *env = NULL;
	const char *err = NULL;
	char *log;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(q_log_open(q_spool_dir(s), false, &err), 0);
	CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", rc, 1, "x\r\n", id), 0);
	CU_ASSERT_EQUAL(t_write_file(q_spool_path(s, id, 'H', path, sizeof(path)),
				     "qkit-H 1\nid x\n"), 0);
	CU_ASSERT_EQUAL(q_spool_read(s, id, &env, &err), -1);
	q_log_close();
	snprintf(path, sizeof(path), "%s/log/mainlog", q_spool_dir(s));
	log = t_read_file(path, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(log);
	CU_ASSERT_PTR_NOT_NULL(strstr(log, id));
	CU_ASSERT_PTR_NOT_NULL(strstr(log, "-H:2: id does not match"));
	free(log);
	q_spool_close(&s);
}

/* ---- commit, freeze, remove, msglog ---- */

static void test_commit(void)
{
	struct q_spool *s = t_new_spool();
	const char *rc[] = { "a@example.com", "b@example.com" };
	char id[Q_ID_LEN + 1], path[PATH_MAX];
	struct q_env *env = NULL;
	struct q_msg *m = NULL;
	struct q_hints *h = NULL;
	struct q_index_rec r;
	const char *err = NULL;
	time_t nt = time(NULL) + 3600;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(q_spool_hints(s, &h, &err), 0);
	CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", rc, 2, "x\r\n", id), 0);
	CU_ASSERT_EQUAL(q_msglog(s, id, "arrived", &err), 0);

	/* a partial attempt: one delivered, one deferred */
	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, &err), 0);
	CU_ASSERT_EQUAL(q_msg_journal(m, 0, 'D', 250, "mx", "ok", 0, &err), 0);
	CU_ASSERT_EQUAL(q_msg_journal(m, 1, 'P', 451, "mx", "later", 0, &err), 0);
	CU_ASSERT(size_of(q_spool_path(s, id, 'J', path, sizeof(path))) > 0);
	CU_ASSERT_EQUAL(q_msg_commit(m, nt, &err), 0);
	CU_ASSERT_EQUAL(size_of(path), 0);
	q_msg_unlock(&m);
	CU_ASSERT_EQUAL_FATAL(q_spool_read(s, id, &env, &err), 0);
	CU_ASSERT_EQUAL(env->rcpt[0].state, 'D');
	CU_ASSERT_EQUAL(env->rcpt[1].state, 'P');
	CU_ASSERT_EQUAL(env->rcpt[1].tries, 1);
	q_env_free(&env);
	CU_ASSERT_EQUAL_FATAL(q_index_get(h, id, &r, &err), 0);
	CU_ASSERT_EQUAL(r.npending, 1);
	CU_ASSERT_EQUAL(r.nrcpt, 2);
	CU_ASSERT_EQUAL(r.next_try, nt);
	CU_ASSERT_STRING_EQUAL(r.rcpt1, "b@example.com");
	q_index_rec_clear(&r);

	/* the last recipient: the message goes, files and index entry */
	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, &err), 0);
	CU_ASSERT_EQUAL(q_msg_env(m)->rcpt[0].state, 'D');
	CU_ASSERT_EQUAL(q_msg_journal(m, 1, 'D', 250, "mx", "ok", 0, &err), 0);
	CU_ASSERT_EQUAL(q_msg_commit(m, 0, &err), 0);
	CU_ASSERT_EQUAL(q_msg_commit(m, 0, &err), -1);   /* gone */
	CU_ASSERT_EQUAL(q_msg_journal(m, 1, 'D', 250, NULL, NULL, 0, &err), -1);
	q_msg_unlock(&m);
	CU_ASSERT_FALSE(exists(q_spool_path(s, id, 'H', path, sizeof(path))));
	CU_ASSERT_FALSE(exists(q_spool_path(s, id, 'D', path, sizeof(path))));
	CU_ASSERT_FALSE(exists(q_spool_path(s, id, 'J', path, sizeof(path))));
	CU_ASSERT_FALSE(exists(q_spool_path(s, id, 'L', path, sizeof(path))));
	CU_ASSERT_EQUAL(q_spool_read(s, id, &env, &err), Q_NOTFOUND);
	CU_ASSERT_EQUAL(q_index_get(h, id, &r, &err), Q_NOTFOUND);
	q_spool_close(&s);
}

/* Q_JOURNAL_HOLD: results applied at once, written in one piece by the
 * flush; held lines are not lost when the message is unlocked. */
static void test_journal_hold(void)
{
	struct q_spool *s = t_new_spool();
	const char *rc[] = { "a@example.com", "b@example.com", "c@example.com",
			     "d@example.com" };
	char id[Q_ID_LEN + 1], path[PATH_MAX];
	struct q_msg *m = NULL;
	const char *err = NULL;
	unsigned hold = Q_JOURNAL_HOLD | Q_JOURNAL_NOSYNC;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", rc, 4, "x\r\n", id), 0);
	q_spool_path(s, id, 'J', path, sizeof(path));
	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, &err), 0);
	CU_ASSERT_EQUAL(q_msg_journal(m, 0, 'D', 250, "mx", "ok", hold, &err), 0);
	CU_ASSERT_EQUAL(q_msg_journal(m, 1, 'F', 550, "mx", "no", hold, &err), 0);
	CU_ASSERT_EQUAL(q_msg_env(m)->rcpt[0].state, 'D');   /* applied */
	CU_ASSERT_EQUAL(q_msg_env(m)->rcpt[1].state, 'F');
	CU_ASSERT_EQUAL(size_of(path), 0);                    /* not written */
	/* twice for one recipient is refused, held or not */
	CU_ASSERT_EQUAL(q_msg_journal(m, 0, 'D', 250, "mx", "ok", hold, &err), -1);
	CU_ASSERT_EQUAL(q_msg_journal_flush(m, Q_JOURNAL_NOSYNC, &err), 0);
	long long one = size_of(path);
	CU_ASSERT(one > 0);
	CU_ASSERT_EQUAL(q_msg_journal_flush(m, 0, &err), 0);  /* nothing held */
	CU_ASSERT_EQUAL(size_of(path), one);
	/* held, then one without HOLD: the held line goes first */
	CU_ASSERT_EQUAL(q_msg_journal(m, 2, 'P', 451, "mx", "later", hold, &err), 0);
	CU_ASSERT_EQUAL(q_msg_journal(m, 3, 'D', 250, "mx", "ok", 0, &err), 0);
	{
		char buf[512] = "";
		FILE *f = fopen(path, "r");
		size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;

		if (f)
			fclose(f);
		buf[n] = '\0';
		CU_ASSERT(strncmp(buf, "0 D ", 4) == 0);
		CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\n1 F "));
		CU_ASSERT(strstr(buf, "\n2 P ") != NULL &&
			  strstr(buf, "\n2 P ") < strstr(buf, "\n3 D "));
	}
	q_msg_unlock(&m);
	/* held at unlock: written by the unlock, seen by the next reader */
	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, &err), 0);
	CU_ASSERT_EQUAL(q_msg_env(m)->rcpt[2].state, 'P');
	CU_ASSERT_EQUAL(q_msg_env(m)->rcpt[2].tries, 1);
	CU_ASSERT_EQUAL(q_msg_journal(m, 2, 'D', 250, "mx", "ok", hold, &err), 0);
	q_msg_unlock(&m);
	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, &err), 0);
	CU_ASSERT_EQUAL(q_env_pending(q_msg_env(m)), 0);
	CU_ASSERT_EQUAL(q_msg_env(m)->rcpt[3].state, 'D');
	q_msg_unlock(&m);
	q_spool_close(&s);
}

/* The reaper: a completed message stays locked until its files are gone
 * (never lockable again), and nothing is left once it has stopped. */
static void reaper_case(bool group)
{
	struct q_spool *s = t_new_spool();
	const char *rc[] = { "a@example.com" };
	enum { N = 300 };
	static char ids[N][Q_ID_LEN + 1];
	struct q_hints *h = NULL;
	struct q_index_rec r;
	const char *err = NULL;
	char path[PATH_MAX];
	size_t count = 99;
	int relocked = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(q_spool_hints(s, &h, &err), 0);
	for (int i = 0; i < N; i++)
		CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", rc, 1, "x\r\n", ids[i]), 0);
	CU_ASSERT_EQUAL_FATAL(q_spool_reaper_start(s, group, &err), 0);
	for (int i = 0; i < N; i++) {
		struct q_msg *m = NULL, *again = NULL;

		CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, ids[i], &m, &err), 0);
		CU_ASSERT_EQUAL(q_msg_journal(m, 0, 'D', 250, "mx", "ok",
					      Q_JOURNAL_NOSYNC | Q_JOURNAL_HOLD, &err), 0);
		CU_ASSERT_EQUAL(q_msg_commit(m, 0, &err), 0);
		q_msg_unlock(&m);
		/* busy while the reaper holds it, then gone: never lockable */
		int ret = q_msg_lock(s, ids[i], &again, &err);
		CU_ASSERT(ret == Q_BUSY || ret == Q_NOTFOUND);
		if (ret == 0) {
			relocked++;
			q_msg_unlock(&again);
		}
	}
	CU_ASSERT_EQUAL(relocked, 0);
	q_spool_reaper_stop(s);
	for (int i = 0; i < N; i++) {
		CU_ASSERT_FALSE(exists(q_spool_path(s, ids[i], 'H', path, sizeof(path))));
		CU_ASSERT_FALSE(exists(q_spool_path(s, ids[i], 'D', path, sizeof(path))));
		CU_ASSERT_FALSE(exists(q_spool_path(s, ids[i], 'J', path, sizeof(path))));
		CU_ASSERT_EQUAL(q_index_get(h, ids[i], &r, &err), Q_NOTFOUND);
	}
	CU_ASSERT_EQUAL(q_spool_count(s, &count, &err), 0);
	CU_ASSERT_EQUAL(count, 0);
	/* stopped: commits remove at once again */
	{
		char id[Q_ID_LEN + 1];
		struct q_msg *m = NULL;

		CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", rc, 1, "x\r\n", id), 0);
		CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, &err), 0);
		CU_ASSERT_EQUAL(q_msg_journal(m, 0, 'D', 250, "mx", "ok", 0, &err), 0);
		CU_ASSERT_EQUAL(q_msg_commit(m, 0, &err), 0);
		CU_ASSERT_FALSE(exists(q_spool_path(s, id, 'H', path, sizeof(path))));
		q_msg_unlock(&m);
	}
	q_spool_close(&s);
}

static void test_reaper(void)
{
	reaper_case(false);
}

/* With the group sync (a syncfs after the reapers have removed what was
 * queued): the same outcome, and the files all go. */
static void test_reaper_group_sync(void)
{
	reaper_case(true);
}

static void test_freeze_thaw_remove(void)
{
	struct q_spool *s = t_new_spool();
	const char *rc[] = { "a@example.com" };
	char id[Q_ID_LEN + 1], path[PATH_MAX];
	struct q_env *env = NULL;
	struct q_msg *m = NULL;
	struct q_hints *h = NULL;
	struct q_index_rec r;
	const char *err = NULL;
	int fd;
	char c;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(q_spool_hints(s, &h, &err), 0);
	CU_ASSERT_EQUAL_FATAL(mk(s, "s@example.com", rc, 1, "data\r\n", id), 0);
	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, &err), 0);
	CU_ASSERT_EQUAL(q_msg_commit(m, 12345, &err), 0);   /* sets next_try */
	CU_ASSERT_EQUAL(q_msg_set_frozen(m, true, "by admin\nsecond line", &err), 0);
	q_msg_unlock(&m);
	CU_ASSERT_EQUAL_FATAL(q_spool_read(s, id, &env, &err), 0);
	CU_ASSERT_TRUE(env->flags & Q_ENV_FROZEN);
	CU_ASSERT_STRING_EQUAL(env->frozen_reason, "by admin\nsecond line");
	q_env_free(&env);
	CU_ASSERT_EQUAL_FATAL(q_index_get(h, id, &r, &err), 0);
	CU_ASSERT_TRUE(r.flags & Q_ENV_FROZEN);
	CU_ASSERT_EQUAL(r.next_try, 12345);
	q_index_rec_clear(&r);

	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, &err), 0);
	CU_ASSERT_TRUE(q_msg_env(m)->flags & Q_ENV_FROZEN);
	CU_ASSERT_EQUAL(q_msg_set_frozen(m, false, NULL, &err), 0);
	/* the data fd is read-only and at 0 every time */
	fd = q_msg_data_fd(m);
	CU_ASSERT(fd >= 0);
	CU_ASSERT_EQUAL(read(fd, &c, 1), 1);
	CU_ASSERT_EQUAL(c, 'd');
	CU_ASSERT_EQUAL(q_msg_data_fd(m), fd);
	CU_ASSERT_EQUAL(read(fd, &c, 1), 1);
	CU_ASSERT_EQUAL(c, 'd');
	CU_ASSERT_EQUAL(write(fd, "x", 1), -1);
	q_msg_unlock(&m);
	CU_ASSERT_EQUAL_FATAL(q_spool_read(s, id, &env, &err), 0);
	CU_ASSERT_FALSE(env->flags & Q_ENV_FROZEN);
	CU_ASSERT_PTR_NULL(env->frozen_reason);
	q_env_free(&env);
	CU_ASSERT_EQUAL_FATAL(q_index_get(h, id, &r, &err), 0);
	CU_ASSERT_FALSE(r.flags & Q_ENV_FROZEN);
	q_index_rec_clear(&r);

	CU_ASSERT_EQUAL(q_msglog(s, id, "x", &err), 0);
	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, &err), 0);
	CU_ASSERT_EQUAL(q_msg_journal(m, 0, 'P', 421, NULL, NULL, 0, &err), 0);
	CU_ASSERT_EQUAL(q_msg_remove(&m, &err), 0);
	CU_ASSERT_PTR_NULL(m);
	CU_ASSERT_FALSE(exists(q_spool_path(s, id, 'H', path, sizeof(path))));
	CU_ASSERT_FALSE(exists(q_spool_path(s, id, 'D', path, sizeof(path))));
	CU_ASSERT_FALSE(exists(q_spool_path(s, id, 'J', path, sizeof(path))));
	CU_ASSERT_FALSE(exists(q_spool_path(s, id, 'L', path, sizeof(path))));
	CU_ASSERT_EQUAL(q_index_get(h, id, &r, &err), Q_NOTFOUND);
	q_spool_close(&s);
}

static void test_msglog(void)
{
	struct q_spool *s = t_new_spool();
	char path[PATH_MAX];
	const char *err = NULL;
	const char *id = "1a2B3c-0AbC-00Zz";
	char *text;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL(q_msglog(s, id, "first", &err), 0);
	CU_ASSERT_EQUAL(q_msglog(s, id, "evil\nforged line\x1b[2J\\", &err), 0);
	CU_ASSERT_EQUAL(q_msglog(s, "../../x", "x", &err), -1);
	text = t_read_file(q_spool_path(s, id, 'L', path, sizeof(path)), NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(text);
	/* two lines "YYYY-MM-DD HH:MM:SS text" */
	char *nl = strchr(text, '\n');
	CU_ASSERT_PTR_NOT_NULL_FATAL(nl);
	CU_ASSERT_EQUAL(nl - text, 19 + 1 + 5);
	CU_ASSERT_EQUAL(text[4], '-');
	CU_ASSERT_EQUAL(text[13], ':');
	CU_ASSERT_STRING_EQUAL(nl + 1 + 20, "evil\\x0aforged line\\x1b[2J\\\\\n");
	free(text);
	q_spool_close(&s);
}

/* ---- SIGKILL during creation ---- */

struct chk {
	struct q_spool *s;
	size_t n, bad;
};

static int chk_fn(const struct q_index_rec *r, void *vctx)
{
	struct chk *cc = vctx;
	struct q_env *env = NULL;
	char path[PATH_MAX];
	const char *e = NULL;
	char *d;
	size_t len;

	cc->n++;
	if (q_spool_read(cc->s, r->id, &env, &e) != 0) {
		fprintf(stderr, "\n%s: %s\n", r->id, e);
		cc->bad++;
		return 0;
	}
	d = t_read_file(q_spool_path(cc->s, r->id, 'D', path, sizeof(path)),
			&len);
	if (d == NULL || len != env->size || env->nrcpt != 2 ||
	    r->size != env->size || r->nrcpt != 2)
		cc->bad++;
	for (size_t i = 0; d != NULL && i < len; i++)
		if (d[i] != (char)('a' + i % 26)) {
			cc->bad++;
			break;
		}
	free(d);
	q_env_free(&env);
	return 0;
}

static void test_sigkill_create(void)
{
	struct q_spool *s = t_new_spool();
	const char *err = NULL;
	unsigned seed = 777;
	size_t listed = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	for (int round = 0; round < 6; round++) {
		int fd[2], st;
		char b;
		pid_t pid;

		CU_ASSERT_EQUAL_FATAL(pipe(fd), 0);
		pid = fork();
		CU_ASSERT_FATAL(pid >= 0);
		if (pid == 0) {
			struct q_spool *cs = NULL;
			static char data[200000];
			const char *rc[] = { "a@example.com", "b@example.com" };
			char id[Q_ID_LEN + 1];

			close(fd[0]);
			if (q_spool_open(q_spool_dir(s), 0, &cs, &err) < 0)
				_exit(10);
			for (size_t i = 0; i < sizeof(data); i++)
				data[i] = (char)('a' + i % 26);
			for (unsigned long n = 0;; n++) {
				/* every message's data is a-z repeated,
				 * of a length that varies */
				struct q_newmsg m = { "s@example.com", rc, 2, data,
						      1000 + (n * 7919) % 190000, 0 };
				if (q_spool_create(cs, &m, round % 2 ?
						   Q_CREATE_NOSYNC : 0, id, &err) < 0)
					_exit(11);
				if (n == 3 && write(fd[1], "r", 1) != 1)
					_exit(12);
			}
		}
		close(fd[1]);
		CU_ASSERT_EQUAL(read(fd[0], &b, 1), 1);
		close(fd[0]);
		usleep(1000 + rand_r(&seed) % 20000);
		kill(pid, SIGKILL);
		CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
		CU_ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	}

	/* every listed message reads cleanly, data complete */
	struct chk c = { s, 0, 0 };
	CU_ASSERT_EQUAL(q_spool_list(s, chk_fn, &c, &err), 0);
	listed = c.n;
	CU_ASSERT(listed >= 6 * 4);
	CU_ASSERT_EQUAL(c.bad, 0);
	q_spool_close(&s);
}

void suite_spool(void)
{
	CU_pSuite s = CU_add_suite("spool", NULL, NULL);

	CU_add_test(s, "open: tree and modes under a hostile umask",
		    test_open_tree_modes);
	CU_add_test(s, "open: permissions refused", test_open_refused);
	CU_add_test(s, "create/read round trip, odd bytes",
		    test_roundtrip_odd_bytes);
	CU_add_test(s, "-H format", test_h_format);
	CU_add_test(s, "journal: apply, torn last line", test_journal_torn_line);
	CU_add_test(s, "journal: garbage is corrupt", test_journal_garbage);
	CU_add_test(s, "lock busy across processes", test_lock_busy);
	CU_add_test(s, "lock after remove", test_lock_after_remove);
	CU_add_test(s, "corrupt -H: truncated at every offset",
		    test_corrupt_truncated);
	CU_add_test(s, "corrupt -H: random damage", test_corrupt_random);
	CU_add_test(s, "corrupt -H: logged", test_corrupt_logged);
	CU_add_test(s, "commit", test_commit);
	CU_add_test(s, "journal: held results, one write", test_journal_hold);
	CU_add_test(s, "reaper: removed after commit, never relocked", test_reaper);
	CU_add_test(s, "reaper: the same with group syncs", test_reaper_group_sync);
	CU_add_test(s, "freeze, thaw, remove", test_freeze_thaw_remove);
	CU_add_test(s, "msglog", test_msglog);
	CU_add_test(s, "SIGKILL during create", test_sigkill_create);
}
