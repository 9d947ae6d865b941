/*
 * tests/fuzz/spool.c - the harness of the envelope and journal targets
 * (fuzz_envelope.c, fuzz_journal.c). Two paths, both checked:
 *
 * In memory (every input; q_spool-private.h): q_spool_env_parse, then
 * q_spool_journal_apply, exactly as a read does, then
 *  - the parse gives 0 or -1 with "PATH:LINE: what"; the journal
 *    apply's good length ends at a line end, and only a torn last line
 *    (no LF) lies beyond it;
 *  - the envelope is sane (see 4. below);
 *  - q_spool_env_encode, parse again: the same envelope, and encoding
 *    that gives the same bytes (the -H format round-trips).
 *
 * Through the spool (one input in 8, chosen by a hash of the input, or
 * every input when QKIT_FUZZ_FULL=1, as make fuzz-regress sets it):
 * the files are written as one message of a spool made once per process
 * on tmpfs, and read back through the public path (q_spool_read,
 * q_msg_lock); the outcome must equal the in-memory one.
 *
 * fz_spool_check(), for one message:
 *  1. writes input/<c>/<id>-H, -D (a few bytes) and -J (or none);
 *  2. q_spool_read: 0 or -1 (never Q_NOTFOUND: the files are there);
 *     on -1 with "moved to" in the text, the -H is gone from input/ and
 *     is in corrupt/ (garbled files are moved aside, never deleted);
 *  3. writes the files again and locks the message (q_msg_lock): it
 *     succeeds exactly when the unlocked read did, with an equal
 *     envelope (journal applied the same way with and without the lock);
 *  4. checks the envelope (recipients >= 1, states P/D/F/X, codes <= 999,
 *     strings present where the format requires them, flags known, a
 *     frozen reason only when frozen);
 *  5. rewrites -H through q_msg_set_frozen with the flags it has (the
 *     journal is merged into -H and -J emptied), unlocks, reads again:
 *     the envelope is unchanged and -J is empty. This is the
 *     parse -> encode -> parse round trip of the -H format;
 *  6. removes the files (from input/<c>/ and corrupt/).
 *
 * The spool's hints are made unusable on purpose (db is a dangling
 * symbolic link): q_msg_set_frozen's index update is then skipped after
 * one failed open, so no Berkeley DB work slows the loop.
 */
#include "config.h"
#include "q/spool.h"
#include "q_spool-private.h"
#include "fuzz.h"
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct q_spool *spool;
static int input_fd = -1, corrupt_fd = -1;
static bool split_made[128];

static const char data_file[] = "Subject: fuzz\r\n\r\nbody\r\n";

struct q_spool *fz_spool(void)
{
	char dir[PATH_MAX], path[PATH_MAX];
	const char *err = NULL;

	if (spool != NULL)
		return spool;
	snprintf(dir, sizeof(dir), "%s/spool", fz_tmpdir());
	if (q_spool_open(dir, Q_SPOOL_CREATE, &spool, &err) < 0)
		fz_harness_fail("q_spool_open %s: %s", dir, err);
	snprintf(path, sizeof(path), "%s/db", dir);
	if (rmdir(path) < 0 || symlink("no-hints-while-fuzzing", path) < 0)
		fz_harness_fail("replace %s: %s", path, strerror(errno));
	snprintf(path, sizeof(path), "%s/input", dir);
	input_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	snprintf(path, sizeof(path), "%s/corrupt", dir);
	corrupt_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (input_fd < 0 || corrupt_fd < 0)
		fz_harness_fail("open %s: %s", path, strerror(errno));
	return spool;
}

static int split_dir(const char *id)
{
	unsigned char c = (unsigned char)id[Q_ID_SPLIT_POS];
	char name[2] = { (char)c, '\0' };
	int fd;

	if (!split_made[c & 127]) {
		if (mkdirat(input_fd, name, 0700) < 0 && errno != EEXIST)
			fz_harness_fail("mkdir input/%s: %s", name, strerror(errno));
		split_made[c & 127] = true;
	}
	fd = openat(input_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		fz_harness_fail("open input/%s: %s", name, strerror(errno));
	return fd;
}

static void file_name(char *buf, const char *id, char kind)
{
	snprintf(buf, Q_ID_LEN + 3, "%s-%c", id, kind);
}

static void write_msg(int split, const char *id, const void *h, size_t hlen,
		      const void *j, size_t jlen, bool jpresent)
{
	char name[Q_ID_LEN + 3];

	file_name(name, id, 'D');
	fz_write_at(split, name, data_file, sizeof(data_file) - 1);
	file_name(name, id, 'J');
	if (jpresent)
		fz_write_at(split, name, j, jlen);
	else
		unlinkat(split, name, 0);
	file_name(name, id, 'H');
	fz_write_at(split, name, h, hlen);
}

static void remove_msg(int split, const char *id)
{
	static const char kinds[] = "HDJ";
	char name[Q_ID_LEN + 3];

	for (int i = 0; i < 3; i++) {
		file_name(name, id, kinds[i]);
		unlinkat(split, name, 0);
		unlinkat(corrupt_fd, name, 0);
	}
}

static bool exists_at(int dirfd, const char *id, char kind)
{
	char name[Q_ID_LEN + 3];

	file_name(name, id, kind);
	return faccessat(dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

static bool str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

void fz_env_check(const struct q_env *e, const char *id)
{
	FZ_CHECK(strcmp(e->id, id) == 0, "envelope id %s, file %s", e->id, id);
	FZ_CHECK(e->sender != NULL, "no sender (the null sender is \"\")");
	FZ_CHECK((e->flags & ~(unsigned)Q_ENV_KNOWN) == 0,
		 "unknown flags %#x", e->flags);
	FZ_CHECK(e->frozen_reason == NULL || (e->flags & Q_ENV_FROZEN),
		 "frozen reason on a message that is not frozen");
	FZ_CHECK(e->arrival >= 0, "arrival %lld", (long long)e->arrival);
	FZ_CHECK(e->nrcpt >= 1 && e->rcpt != NULL, "%zu recipients", e->nrcpt);
	FZ_CHECK(q_env_pending(e) <= e->nrcpt, "pending > recipients");
	for (size_t i = 0; i < e->nrcpt; i++) {
		const struct q_rcpt *r = &e->rcpt[i];

		FZ_CHECK(r->addr != NULL, "recipient %zu has no address", i);
		FZ_CHECK(r->state == Q_RCPT_PENDING || r->state == Q_RCPT_DELIVERED ||
			 r->state == Q_RCPT_FAILED || r->state == Q_RCPT_FAILED_OWED,
			 "recipient %zu state %d", i,
			 r->state);
		FZ_CHECK(r->last_code >= 0 && r->last_code <= 999,
			 "recipient %zu code %d", i, r->last_code);
		FZ_CHECK(r->last_time >= 0, "recipient %zu time %lld", i,
			 (long long)r->last_time);
	}
}

void fz_env_same(const struct q_env *a, const struct q_env *b, const char *how)
{
	FZ_CHECK(strcmp(a->id, b->id) == 0 && str_eq(a->sender, b->sender) &&
		 a->arrival == b->arrival && a->size == b->size &&
		 a->flags == b->flags && str_eq(a->frozen_reason, b->frozen_reason) &&
		 a->nrcpt == b->nrcpt, "%s: envelopes differ (sender/arrival/"
		 "size/flags/reason/count)", how);
	for (size_t i = 0; i < a->nrcpt; i++) {
		const struct q_rcpt *x = &a->rcpt[i], *y = &b->rcpt[i];

		FZ_CHECK(str_eq(x->addr, y->addr) && x->state == y->state &&
			 x->tries == y->tries && x->last_time == y->last_time &&
			 x->last_code == y->last_code && str_eq(x->host, y->host) &&
			 str_eq(x->last_error, y->last_error),
			 "%s: recipient %zu differs (state %c/%c tries %u/%u "
			 "code %d/%d)", how, i, x->state, y->state, x->tries,
			 y->tries, x->last_code, y->last_code);
	}
}

struct q_env *fz_spool_check(const char *id, const void *h, size_t hlen,
			     const void *j, size_t jlen, bool jpresent)
{
	struct q_spool *s = fz_spool();
	struct q_env *env1 = NULL, *env3 = NULL;
	struct q_msg *m = NULL;
	const char *err = NULL;
	int split = split_dir(id), r1, r2, r3;
	struct stat st;
	char name[Q_ID_LEN + 3];

	write_msg(split, id, h, hlen, j, jlen, jpresent);
	r1 = q_spool_read(s, id, &env1, &err);
	FZ_CHECK(r1 == 0 || r1 == -1, "q_spool_read returned %d", r1);
	FZ_CHECK((r1 == 0) == (env1 != NULL), "q_spool_read %d, env %p", r1,
		 (void *)env1);
	if (r1 < 0) {
		FZ_CHECK(err != NULL && err[0] != '\0', "an error without text");
		if (strstr(err, "(moved to ") != NULL)
			FZ_CHECK(!exists_at(split, id, 'H') &&
				 exists_at(corrupt_fd, id, 'H'),
				 "said moved to corrupt/, but it was not: %s", err);
		write_msg(split, id, h, hlen, j, jlen, jpresent);
	} else {
		fz_env_check(env1, id);
	}

	r2 = q_msg_lock(s, id, &m, &err);
	FZ_CHECK(r2 == r1, "q_spool_read returned %d, q_msg_lock %d (%s)", r1, r2,
		 r2 < 0 || r1 < 0 ? err : "");
	if (r2 == 0) {
		struct q_env *env2 = q_msg_env(m);

		fz_env_same(env1, env2, "read vs lock");
		r3 = q_msg_set_frozen(m, (env2->flags & Q_ENV_FROZEN) != 0,
				      env2->frozen_reason, &err);
		FZ_CHECK(r3 == 0, "q_msg_set_frozen (rewrite of -H): %s", err);
		q_msg_unlock(&m);
		file_name(name, id, 'J');
		if (jpresent)
			FZ_CHECK(fstatat(split, name, &st, 0) == 0 &&
				 st.st_size == 0, "-J not emptied by the rewrite");
		r3 = q_spool_read(s, id, &env3, &err);
		FZ_CHECK(r3 == 0, "the rewritten -H does not read back: %s", err);
		fz_env_same(env1, env3, "before vs after the rewrite");
		q_env_free(&env3);
	}
	remove_msg(split, id);
	close(split);
	return env1;
}

/* The in-memory path: NULL when the files are refused. */
static struct q_env *mem_check(const char *id, const void *h, size_t hlen,
			       const void *j, size_t jlen, bool jpresent)
{
	struct q_env *env = NULL, *env2 = NULL;
	struct q_buf b1 = { 0 }, b2 = { 0 };
	const char *err = NULL;
	size_t good = 0;
	int r;

	r = q_spool_env_parse(h, hlen, "H", id, &env, &err);
	FZ_CHECK(r == 0 || r == -1, "q_spool_env_parse returned %d", r);
	FZ_CHECK((r == 0) == (env != NULL), "parse %d, env %p", r, (void *)env);
	if (r < 0) {
		FZ_CHECK(err != NULL && strncmp(err, "H:", 2) == 0 &&
			 err[2] >= '1' && err[2] <= '9',
			 "error text is not PATH:LINE: %s", err ? err : "(null)");
		return NULL;
	}
	if (jpresent) {
		const char *jd = j;

		r = q_spool_journal_apply(j, jlen, "J", env, &good, &err);
		FZ_CHECK(r == 0 || r == -1, "q_spool_journal_apply returned %d", r);
		if (r < 0) {
			FZ_CHECK(err != NULL && strncmp(err, "J:", 2) == 0,
				 "error text is not PATH:LINE: %s", err);
			q_env_free(&env);
			return NULL;
		}
		FZ_CHECK(good <= jlen && (good == 0 || jd[good - 1] == '\n') &&
			 memchr(jd + good, '\n', jlen - good) == NULL,
			 "journal good length %zu of %zu is not the last line "
			 "end", good, jlen);
	}
	fz_env_check(env, id);
	FZ_CHECK(q_spool_env_encode(env, &b1) == 0, "encode failed");
	r = q_spool_env_parse(b1.data, b1.len, "H2", id, &env2, &err);
	FZ_CHECK(r == 0, "the encoded -H does not parse: %s\n%.*s", err,
		 (int)(b1.len > 2000 ? 2000 : b1.len), b1.data);
	fz_env_same(env, env2, "parse vs encode+parse");
	FZ_CHECK(q_spool_env_encode(env2, &b2) == 0 && b1.len == b2.len &&
		 memcmp(b1.data, b2.data, b1.len) == 0,
		 "encoding is not stable");
	q_env_free(&env2);
	q_buf_free(&b1);
	q_buf_free(&b2);
	return env;
}

struct q_env *fz_env_run(const char *id, const void *h, size_t hlen,
			 const void *j, size_t jlen, bool jpresent)
{
	static int full = -1;
	struct q_env *env, *fenv;

	if (full < 0) {
		const char *e = getenv("QKIT_FUZZ_FULL");
		full = e != NULL && e[0] == '1';
	}
	env = mem_check(id, h, hlen, j, jlen, jpresent);
	if (!full && (fz_hash(h, hlen) ^ fz_hash(j, jlen)) % 8 != 0)
		return env;
	fenv = fz_spool_check(id, h, hlen, j, jlen, jpresent);
	FZ_CHECK((env == NULL) == (fenv == NULL), "in memory: %s, through the "
		 "spool: %s", env ? "ok" : "refused", fenv ? "ok" : "refused");
	if (env != NULL)
		fz_env_same(env, fenv, "in memory vs through the spool");
	q_env_free(&fenv);
	return env;
}
