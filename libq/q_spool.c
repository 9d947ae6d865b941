/*
 * q_spool.c - the spool: layout, atomic creation, envelopes (-H), data
 * (-D), the per-recipient journal (-J), per-message locks, freeze/thaw,
 * removal, message logs. The queue index lives in q_index.c.
 *
 * -H format (text, one field per line, every line ends in '\n'):
 *
 *     qkit-H 1                       format version
 *     id SSSSSS-UUUU-PPPP            must match the file name
 *     sender TOKEN                   "" (written "") for the null sender
 *     arrival SECONDS
 *     size BYTES                     of -D
 *     flags N                        Q_ENV_* bits, unknown bits refused
 *     frozen TOKEN                   reason, or - (only "-" unless frozen)
 *     rcpts N                        N >= 1, then N lines:
 *     rcpt ADDR STATE TRIES LAST-TIME CODE HOST TEXT
 *                                    STATE: P pending, D delivered, F
 *                                    failed, X failed with its bounce
 *                                    still owed (q/spool.h)
 *     end                            written last: its absence = truncated
 *
 * -J format: one line per recipient result; the lines of one call (or,
 * with Q_JOURNAL_HOLD, of one SMTP transaction) appended by one write():
 *
 *     RCPT-INDEX STATE TIME CODE HOST TEXT
 *
 * TOKEN encoding: "-" is NULL, "" (two quotes) is the empty string;
 * otherwise every byte outside 0x21..0x7e, and '\', '"', are written as
 * \xHH, and a value that is exactly "-" as \x2d. So any byte string
 * except one holding NUL is representable, a line stays one line, and
 * fields are separated by single spaces.
 *
 * Invariants:
 * - A message is listed iff input/<c>/<id>-H exists. Creation writes -D
 *   and an empty -J in place, then renames -H from tmp/ (the commit);
 *   removal unlinks -H first. A commit empties -J rather than removing
 *   it, so the delivery path creates no files. A crash leaves at worst an orphan -D/-J or files under tmp/,
 *   which no listing shows (q_index_rebuild removes old ones).
 * - Every change to a message is made under its lock: an OFD write lock
 *   (F_OFD_SETLK) on -D opened O_RDWR. Rewrites of -H go through tmp/,
 *   fsync, rename, fsync of the directory, so readers without the lock
 *   see the old or the new -H, never a mix.
 * - A -J line is written with one write(); a crash can only leave a torn
 *   last line (no '\n'), which readers ignore and the next lock holder
 *   cuts off before it appends. Any other garbage in -H or -J makes the
 *   message corrupt: the error names PATH:LINE and the -H, -D and -J files
 *   are moved to corrupt/ (never deleted), and q_log (the main log, when
 *   the program opened it) records it. A reader without the lock reads
 *   a garbled -J twice before it believes it (the lock holder may have
 *   been cutting a torn line off while it read).
 * - Journal merge is not idempotent for `tries`: a crash between the
 *   rename of the new -H and the unlink of -J applies the journal twice,
 *   counting those attempts twice (states are final, so nothing is
 *   delivered twice). Accepted.
 * - Threads may share a q_spool handle for messages (create, read, lock,
 *   journal, commit, remove: the lazily opened directory fds and the
 *   hints handle are guarded by lazy_mu), one struct q_msg per thread at
 *   a time; q_spool_list and q_index_rebuild are for one thread (they
 *   keep the listing stamps). With q_spool_reaper_start (the runner),
 *   removals of completed messages are handed to REAPERS threads that
 *   unlink the files and only then close -D (the lock), so a worker never
 *   waits for the file system to free blocks (on this kind of disk, ext4
 *   with online discard, a few ms per file) and no other process can
 *   lock a message that is half removed; with the group sync
 *   (journal_sync), a syncer thread makes the removals durable together,
 *   one syncfs after the reapers have done those queued so far (see
 *   syncer_main). After fork()
 *   the child must not use the parent's hints handle: q_spool_hints
 *   notices the pid change and opens a new one (the parent's is left
 *   alone, not closed).
 *
 * Files are 0600 and directories 0700 whatever the umask: new files get
 * an fchmod when the umask would strip owner bits (read from
 * /proc/self/status at open), new directories always get a chmod.
 */
#include "config.h"
#include "q_private.h"
#include "q/spool.h"
#include "q/hints.h"
#include "q/log.h"
#include "q_spool-private.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define H_VERSION 1
#define H_MAX_SIZE (64u * 1024 * 1024)   /* larger -H/-J files are refused */
#define NSPLIT 62

struct q_spool {
	char *dir;
	int dfd;
	int input_fd;
	int tmp_fd;
	int msglog_fd;
	int corrupt_fd;              /* lazily opened */
	int split_fd[NSPLIT];        /* input/<c>, lazily opened */
	bool fix_mode;               /* the umask strips owner bits */
	struct q_hints *hints;
	pid_t hints_pid;
	bool hints_failed;           /* do not retry on every create */
	pthread_mutex_t lazy_mu;     /* the lazily opened fds and hints: a
					runner's workers share one handle */
	struct reaper *reaper;       /* q_spool_reaper_start, or NULL */
};

/* Removal of completed messages in a thread of its own (see
 * q_spool_reaper_start): items hold the message's lock (dfd) until its
 * files are gone. */
struct reap {
	struct reap *next;
	char id[Q_ID_LEN + 1];
	int split, dfd;
	uint64_t seq;                /* queue order, from 1 */
};

#define REAPERS    16    /* threads: the waits of the file system overlap
			    (8 gave 3,239 msg/s on bench/deliver, 16 about
			    3,400, 32 no more; 4 gave 2,657) */
#define REAP_TAKE  16    /* items a thread takes at a time (at most) */

#define REAP_SYNC_MS 100 /* a group sync gathers this long at most */
#define REAP_SYNC_WAIT_MS 200 /* ... and waits this long at most for the
			    removals queued before it (see syncer_main) */
#define REAP_QMAX  512   /* items queued at most: each holds a descriptor
			    (the lock), and a slow sync must not make the
			    workers run out of them; a full queue makes the
			    committing worker wait. Queued and taken items
			    together get at most half of RLIMIT_NOFILE's soft
			    limit, and at most 768 (see reaper_budget; q_run
			    raises a soft limit below 4096 towards the hard
			    one) */
#define REAP_IDX   128   /* index records deleted per transaction */

struct reaper {
	pthread_t th[REAPERS];
	unsigned nth;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_cond_t space;        /* the queue fell below qmax */
	size_t qmax;                 /* items queued at most (<= REAP_QMAX) */
	unsigned take;               /* items a thread takes (<= REAP_TAKE) */
	struct reap *head, **tail;
	size_t n;                    /* items queued */
	bool stop;
	/* Group sync: the removals of completed messages are made durable
	 * together. The syncer thread makes one syncfs(2) for the removals
	 * queued in the last REAP_SYNC_MS (one sync for many messages,
	 * instead of an fsync per message that the workers would wait for),
	 * after the reapers have done them (see syncer_main); an item queued
	 * while sync number `started` may already have begun needs sync
	 * started + 1 (need_max: the highest sync number needed). */
	pthread_t syncer;
	bool have_syncer;
	pthread_cond_t scv;
	uint64_t started, done, need_max;
	uint64_t qseq;               /* the last item's seq */
	uint64_t busy[REAPERS];      /* first seq of each thread's list, 0 idle */
	pthread_cond_t rcv;          /* a list was done, for a waiting syncer */
	bool swait;                  /* the syncer waits on rcv */
	/* ids of removed messages whose index records are still there:
	 * deleted REAP_IDX at a time (the index is a hint; a listing never
	 * shows a message whose files are gone) */
	char (*idx)[Q_ID_LEN + 1];
	size_t nidx;
};

struct q_msg {
	struct q_spool *spool;
	char id[Q_ID_LEN + 1];
	int split;                   /* borrowed from spool */
	int dfd;                     /* -D, O_RDWR: holds the lock */
	int rofd;                    /* -D read-only, for the caller */
	int jfd;                     /* -J, O_RDWR|O_APPEND, or -1 */
	off_t jlen;                  /* -J's length: whole lines only */
	off_t dsize;                 /* -D's size when locked */
	struct q_buf jhold;          /* Q_JOURNAL_HOLD lines not written yet */
	bool jnew;                   /* -J created, directory not synced */
	bool jdirty;                 /* NOSYNC entries not synced */
	bool gone;                   /* removed by q_msg_commit */
	struct q_env *env;
};

static const char *const subdirs[] = {
	"input", "msglog", "corrupt", "tmp", "db", "log"
};

/* ------------------------------------------------------------------ */
/* small helpers */

static int split_index(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'Z')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 36;
	return -1;
}

static void msg_name(char *buf, const char *id, char kind)
{
	memcpy(buf, id, Q_ID_LEN);
	buf[Q_ID_LEN] = '-';
	buf[Q_ID_LEN + 1] = kind;
	buf[Q_ID_LEN + 2] = '\0';
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *s = p;

	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (w == 0) {
			errno = EIO;
			return -1;
		}
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Read the open file fd into out (reset first). 0 or -1. */
static int read_fd(int fd, const char *path, struct q_buf *out,
		   const char **error_r)
{
	struct stat st;

	q_buf_reset(out);
	if (fstat(fd, &st) < 0)
		return q_err(error_r, "fstat %s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > H_MAX_SIZE)
		return q_err(error_r, "%s: %s", path, S_ISREG(st.st_mode) ?
			     "file too large" : "not a regular file");
	for (;;) {
		size_t want;
		ssize_t r;

		if (q_buf_reserve(out, out->len < (size_t)st.st_size ?
				  (size_t)st.st_size - out->len + 1 : 8192) < 0)
			return q_err(error_r, "%s: out of memory", path);
		want = out->cap - out->len - 1;
		r = read(fd, out->data + out->len, want);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return q_err(error_r, "read %s: %s", path, strerror(errno));
		}
		if (r == 0)
			break;
		out->len += (size_t)r;
		out->data[out->len] = '\0';
		if (out->len > H_MAX_SIZE)
			return q_err(error_r, "%s: file too large", path);
		/* a short read that reached the size fstat gave: the end
		 * (saves the read that would return 0) */
		if ((size_t)r < want && out->len >= (size_t)st.st_size)
			break;
	}
	return 0;
}

/* Read a whole file (at most H_MAX_SIZE bytes) into out (reset first).
 * With keep_r, the file is opened for reading and appending and the
 * descriptor is left in *keep_r. 0, Q_NOTFOUND, or -1. */
static int read_file_at(int dirfd, const char *name, const char *path,
			struct q_buf *out, int *keep_r, const char **error_r)
{
	int fd, r;

	q_buf_reset(out);
	fd = openat(dirfd, name, (keep_r ? O_RDWR | O_APPEND : O_RDONLY) |
		    O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return Q_NOTFOUND;
		return q_err(error_r, "open %s: %s", path, strerror(errno));
	}
	r = read_fd(fd, path, out, error_r);
	if (r == 0 && keep_r != NULL)
		*keep_r = fd;
	else
		close(fd);
	return r;
}

/* mkdir (0700 whatever the umask) relative to dirfd; EEXIST is fine. */
static int mkdir_0700(int dirfd, const char *name)
{
	if (mkdirat(dirfd, name, 0700) == 0)
		return fchmodat(dirfd, name, 0700, 0);
	return errno == EEXIST ? 0 : -1;
}

/* The owner-write bits of the umask, from /proc (without changing it). */
static bool umask_strips_owner(void)
{
	char buf[2048];
	ssize_t n;
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	const char *p;

	if (fd < 0)
		return true;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return true;
	buf[n] = '\0';
	p = strstr(buf, "\nUmask:");
	if (p == NULL)
		return true;
	return (strtoul(p + 7, NULL, 8) & 0600) != 0;
}

/* ------------------------------------------------------------------ */
/* token escaping */

static int tok_put(struct q_buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	if (s == NULL)
		return q_buf_addc(b, '-');
	if (*s == '\0')
		return q_buf_add(b, "\"\"", 2);
	if (strcmp(s, "-") == 0)
		return q_buf_add(b, "\\x2d", 4);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p > 0x20 && *p < 0x7f && *p != '\\' && *p != '"') {
			if (q_buf_addc(b, (char)*p) < 0)
				return -1;
		} else {
			char e[4] = { '\\', 'x', hex[*p >> 4], hex[*p & 15] };
			if (q_buf_add(b, e, 4) < 0)
				return -1;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* parsing -H and -J */

#define P_BAD   (-1)   /* format error: the text is in the error buffer */
#define P_NOMEM (-2)

struct cur {
	const char *p, *end;
	unsigned line;          /* number of the line last returned */
	const char *path;
};

struct tok {
	const char *p;
	size_t n;
};

static int perr(struct cur *c, unsigned line, const char **error_r,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int perr(struct cur *c, unsigned line, const char **error_r,
		const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	q_err(error_r, "%s:%u: %s", c->path, line, what);
	return P_BAD;
}

/* 1 and the line (without '\n'), 0 at the end of the data, -1 when the
 * data ends in a line without '\n' (c->line is then that line). */
static int next_line(struct cur *c, struct tok *l)
{
	const char *nl;

	if (c->p >= c->end)
		return 0;
	c->line++;
	nl = memchr(c->p, '\n', (size_t)(c->end - c->p));
	if (nl == NULL)
		return -1;
	l->p = c->p;
	l->n = (size_t)(nl - c->p);
	c->p = nl + 1;
	return 1;
}

/* Split a line into exactly want tokens separated by single spaces. */
static int split_line(const struct tok *l, struct tok *t, int want)
{
	const char *p = l->p, *end = l->p + l->n;
	int n = 0;

	for (;;) {
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		const char *e = sp != NULL ? sp : end;

		if (e == p || n == want)
			return -1;
		t[n].p = p;
		t[n].n = (size_t)(e - p);
		n++;
		if (sp == NULL)
			break;
		p = sp + 1;
	}
	return n == want ? 0 : -1;
}

static bool tok_is(const struct tok *t, const char *s)
{
	size_t n = strlen(s);
	return t->n == n && memcmp(t->p, s, n) == 0;
}

static int parse_u64(const struct tok *t, uint64_t max, uint64_t *v_r)
{
	uint64_t v = 0;

	if (t->n == 0 || t->n > 20)
		return -1;
	for (size_t i = 0; i < t->n; i++) {
		unsigned d = (unsigned char)t->p[i] - '0';
		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (v > max)
		return -1;
	*v_r = v;
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode a token into a malloc'd string (NULL for "-"). 0, P_BAD (no
 * text: the caller reports), P_NOMEM. */
static int tok_get(const struct tok *t, char **s_r)
{
	char *s, *o;

	*s_r = NULL;
	if (t->n == 1 && t->p[0] == '-')
		return 0;
	if (t->n == 2 && t->p[0] == '"' && t->p[1] == '"') {
		if ((*s_r = strdup("")) == NULL)
			return P_NOMEM;
		return 0;
	}
	if ((s = malloc(t->n + 1)) == NULL)
		return P_NOMEM;
	o = s;
	for (size_t i = 0; i < t->n; i++) {
		unsigned char c = (unsigned char)t->p[i];
		if (c == '\\') {
			int h, l;
			if (t->n - i < 4 || t->p[i + 1] != 'x')
				goto bad;
			h = hexval(t->p[i + 2]);
			l = hexval(t->p[i + 3]);
			if (h < 0 || l < 0 || (h == 0 && l == 0))
				goto bad;   /* a NUL cannot live in a C string */
			*o++ = (char)(h << 4 | l);
			i += 3;
		} else if (c > 0x20 && c < 0x7f && c != '"') {
			*o++ = (char)c;
		} else {
			goto bad;
		}
	}
	*o = '\0';
	*s_r = s;
	return 0;
bad:
	free(s);
	return P_BAD;
}

static void rcpt_clear(struct q_rcpt *r)
{
	free(r->addr);
	free(r->host);
	free(r->last_error);
	memset(r, 0, sizeof(*r));
}

void q_env_free(struct q_env **envp)
{
	struct q_env *env = *envp;

	if (env == NULL)
		return;
	for (size_t i = 0; i < env->nrcpt; i++)
		rcpt_clear(&env->rcpt[i]);
	free(env->rcpt);
	free(env->sender);
	free(env->frozen_reason);
	free(env);
	*envp = NULL;
}

static size_t count_state(const struct q_env *env, char state)
{
	size_t n = 0;

	for (size_t i = 0; i < env->nrcpt; i++)
		if (env->rcpt[i].state == state)
			n++;
	return n;
}

size_t q_env_pending(const struct q_env *env)
{
	return count_state(env, Q_RCPT_PENDING);
}

size_t q_env_owed(const struct q_env *env)
{
	return count_state(env, Q_RCPT_FAILED_OWED);
}

/* A recipient state that -H, -J and q_msg_journal accept. */
static bool state_known(char s)
{
	return s == Q_RCPT_PENDING || s == Q_RCPT_DELIVERED ||
	       s == Q_RCPT_FAILED || s == Q_RCPT_FAILED_OWED;
}

/* Next line, which must be "key value"; value in *v. */
static int expect_field(struct cur *c, const char *key, struct tok *v,
			const char **error_r)
{
	struct tok l, t[2];
	int r = next_line(c, &l);

	if (r == 0)
		return perr(c, c->line + 1, error_r,
			    "unexpected end of file (expected '%s'; truncated?)", key);
	if (r < 0)
		return perr(c, c->line, error_r,
			    "truncated line (no newline; expected '%s')", key);
	if (split_line(&l, t, 2) < 0 || !tok_is(&t[0], key))
		return perr(c, c->line, error_r, "expected '%s VALUE'", key);
	*v = t[1];
	return 0;
}

static int field_u64(struct cur *c, const char *key, uint64_t max,
		     uint64_t *v_r, const char **error_r)
{
	struct tok v;

	if (expect_field(c, key, &v, error_r) < 0)
		return P_BAD;
	if (parse_u64(&v, max, v_r) < 0)
		return perr(c, c->line, error_r, "bad %s value", key);
	return 0;
}

static int field_str(struct cur *c, const char *key, bool allow_null,
		     char **s_r, const char **error_r)
{
	struct tok v;
	int r;

	if (expect_field(c, key, &v, error_r) < 0)
		return P_BAD;
	r = tok_get(&v, s_r);
	if (r == P_NOMEM)
		return P_NOMEM;
	if (r < 0 || (*s_r == NULL && !allow_null))
		return perr(c, c->line, error_r, "bad %s value", key);
	return 0;
}

#define TIME_MAX_U ((uint64_t)INT64_MAX)

static int parse_rcpt_line(struct cur *c, struct q_rcpt *r, const char **error_r)
{
	struct tok l, t[8];
	uint64_t tries, last, code;
	int n = next_line(c, &l), e;

	if (n == 0)
		return perr(c, c->line + 1, error_r,
			    "unexpected end of file (expected 'rcpt'; truncated?)");
	if (n < 0)
		return perr(c, c->line, error_r, "truncated line (no newline)");
	if (split_line(&l, t, 8) < 0 || !tok_is(&t[0], "rcpt"))
		return perr(c, c->line, error_r,
			    "expected 'rcpt ADDR STATE TRIES TIME CODE HOST TEXT'");
	if (t[2].n != 1 || !state_known(t[2].p[0]))
		return perr(c, c->line, error_r, "bad recipient state");
	if (parse_u64(&t[3], UINT_MAX, &tries) < 0)
		return perr(c, c->line, error_r, "bad recipient tries");
	if (parse_u64(&t[4], TIME_MAX_U, &last) < 0)
		return perr(c, c->line, error_r, "bad recipient time");
	if (parse_u64(&t[5], 999, &code) < 0)
		return perr(c, c->line, error_r, "bad recipient code");
	r->state = t[2].p[0];
	r->tries = (unsigned)tries;
	r->last_time = (time_t)last;
	r->last_code = (int)code;
	if ((e = tok_get(&t[1], &r->addr)) == P_NOMEM)
		return P_NOMEM;
	if (e < 0 || r->addr == NULL)
		return perr(c, c->line, error_r, "bad recipient address");
	if ((e = tok_get(&t[6], &r->host)) == P_NOMEM)
		return P_NOMEM;
	if (e < 0)
		return perr(c, c->line, error_r, "bad recipient host");
	if ((e = tok_get(&t[7], &r->last_error)) == P_NOMEM)
		return P_NOMEM;
	if (e < 0)
		return perr(c, c->line, error_r, "bad recipient error text");
	return 0;
}

/* Parse -H. 0, P_BAD (text "PATH:LINE: what"), P_NOMEM. */
static int env_parse(const char *data, size_t len, const char *path,
		     const char *id, struct q_env **env_r, const char **error_r)
{
	struct cur c = { data, data + len, 0, path };
	struct q_env *env;
	struct tok l, v;
	uint64_t u, nrcpt;
	size_t nl = 0;
	int r;

	*env_r = NULL;
	r = next_line(&c, &l);
	if (r == 0)
		return perr(&c, 1, error_r, "empty file");
	if (r < 0)
		return perr(&c, 1, error_r, "truncated line (no newline)");
	if (l.n > 7 && memcmp(l.p, "qkit-H ", 7) == 0) {
		struct tok ver = { l.p + 7, l.n - 7 };
		if (parse_u64(&ver, UINT64_MAX, &u) < 0)
			return perr(&c, 1, error_r, "bad envelope version");
		if (u != H_VERSION)
			return perr(&c, 1, error_r, "envelope version %llu unknown "
				    "(this is version %d)", (unsigned long long)u,
				    H_VERSION);
	} else {
		return perr(&c, 1, error_r, "not a qkit envelope "
			    "(first line is not 'qkit-H %d')", H_VERSION);
	}
	if ((env = calloc(1, sizeof(*env))) == NULL)
		return P_NOMEM;

	if ((r = expect_field(&c, "id", &v, error_r)) < 0)
		goto fail;
	if (v.n != Q_ID_LEN || memcmp(v.p, id, Q_ID_LEN) != 0) {
		r = perr(&c, c.line, error_r, "id does not match the file name");
		goto fail;
	}
	memcpy(env->id, id, Q_ID_LEN + 1);
	if ((r = field_str(&c, "sender", false, &env->sender, error_r)) < 0)
		goto fail;
	if ((r = field_u64(&c, "arrival", TIME_MAX_U, &u, error_r)) < 0)
		goto fail;
	env->arrival = (time_t)u;
	if ((r = field_u64(&c, "size", UINT64_MAX, &env->size, error_r)) < 0)
		goto fail;
	if ((r = field_u64(&c, "flags", Q_ENV_KNOWN, &u,
			   error_r)) < 0)
		goto fail;
	env->flags = (unsigned)u;
	if ((r = field_str(&c, "frozen", true, &env->frozen_reason, error_r)) < 0)
		goto fail;
	if (env->frozen_reason != NULL && !(env->flags & Q_ENV_FROZEN)) {
		r = perr(&c, c.line, error_r, "frozen reason on a message "
			 "that is not frozen");
		goto fail;
	}
	/* bound the count by the lines left, so garbage cannot make us
	 * allocate gigabytes */
	for (const char *p = c.p; p < c.end; p++)
		if (*p == '\n')
			nl++;
	if ((r = field_u64(&c, "rcpts", UINT32_MAX, &nrcpt, error_r)) < 0)
		goto fail;
	if (nrcpt == 0 || nrcpt > nl) {
		r = perr(&c, c.line, error_r, nrcpt == 0 ? "no recipients" :
			 "more recipients announced than lines follow "
			 "(truncated?)");
		goto fail;
	}
	if ((env->rcpt = calloc((size_t)nrcpt, sizeof(*env->rcpt))) == NULL) {
		r = P_NOMEM;
		goto fail;
	}
	for (size_t i = 0; i < nrcpt; i++) {
		env->nrcpt = i + 1;
		if ((r = parse_rcpt_line(&c, &env->rcpt[i], error_r)) < 0)
			goto fail;
	}
	r = next_line(&c, &l);
	if (r == 0) {
		r = perr(&c, c.line + 1, error_r,
			 "unexpected end of file (expected 'end'; truncated?)");
		goto fail;
	}
	if (r < 0 || l.n != 3 || memcmp(l.p, "end", 3) != 0) {
		r = perr(&c, c.line, error_r, r < 0 ?
			 "truncated line (no newline; expected 'end')" :
			 "expected 'end'");
		goto fail;
	}
	if (c.p != c.end) {
		r = perr(&c, c.line + 1, error_r, "data after 'end'");
		goto fail;
	}
	*env_r = env;
	return 0;
fail:
	q_env_free(&env);
	return r;
}

static int env_encode(const struct q_env *env, struct q_buf *b)
{
	int r = 0;

	r |= q_buf_printf(b, "qkit-H %d\nid %s\nsender ", H_VERSION, env->id);
	r |= tok_put(b, env->sender);
	r |= q_buf_printf(b, "\narrival %lld\nsize %llu\nflags %u\nfrozen ",
			  (long long)(env->arrival < 0 ? 0 : env->arrival),
			  (unsigned long long)env->size,
			  env->flags & Q_ENV_KNOWN);
	r |= tok_put(b, (env->flags & Q_ENV_FROZEN) ? env->frozen_reason : NULL);
	r |= q_buf_printf(b, "\nrcpts %zu\n", env->nrcpt);
	for (size_t i = 0; i < env->nrcpt && r == 0; i++) {
		const struct q_rcpt *rc = &env->rcpt[i];
		r |= q_buf_adds(b, "rcpt ");
		r |= tok_put(b, rc->addr);
		r |= q_buf_printf(b, " %c %u %lld %d ", rc->state, rc->tries,
				  (long long)(rc->last_time < 0 ? 0 : rc->last_time),
				  rc->last_code);
		r |= tok_put(b, rc->host);
		r |= q_buf_addc(b, ' ');
		r |= tok_put(b, rc->last_error);
		r |= q_buf_addc(b, '\n');
	}
	r |= q_buf_adds(b, "end\n");
	return r == 0 ? 0 : -1;
}

/* Set one recipient's result in memory. */
static int rcpt_apply(struct q_rcpt *r, char state, time_t t, int code,
		      char *host, char *text)
{
	if (r->state == Q_RCPT_FAILED_OWED && state == Q_RCPT_FAILED) {
		/* its bounce was queued: only the state changes */
		r->state = state;
		free(host);
		free(text);
		return 0;
	}
	if (r->state != Q_RCPT_PENDING) {
		/* final stays final */
		free(host);
		free(text);
		return 0;
	}
	r->state = state;
	r->tries++;
	r->last_time = t;
	r->last_code = code;
	free(r->host);
	free(r->last_error);
	r->host = host;
	r->last_error = text;
	return 0;
}

/* Apply -J to env. *good_r: length of the data up to the last complete
 * line (what follows is a torn write, ignored). 0, P_BAD, P_NOMEM. */
static int journal_apply(const char *data, size_t len, const char *path,
			 struct q_env *env, size_t *good_r, const char **error_r)
{
	struct cur c = { data, data + len, 0, path };
	struct tok l, t[6];
	int r;

	*good_r = 0;
	while ((r = next_line(&c, &l)) > 0) {
		uint64_t idx, tm, code;
		char *host = NULL, *text = NULL;
		int e;

		if (split_line(&l, t, 6) < 0)
			return perr(&c, c.line, error_r, "expected 'RCPT STATE "
				    "TIME CODE HOST TEXT'");
		if (parse_u64(&t[0], SIZE_MAX, &idx) < 0 || idx >= env->nrcpt)
			return perr(&c, c.line, error_r, "bad recipient index");
		if (t[1].n != 1 || !state_known(t[1].p[0]))
			return perr(&c, c.line, error_r, "bad state");
		if (parse_u64(&t[2], TIME_MAX_U, &tm) < 0)
			return perr(&c, c.line, error_r, "bad time");
		if (parse_u64(&t[3], 999, &code) < 0)
			return perr(&c, c.line, error_r, "bad code");
		if ((e = tok_get(&t[4], &host)) < 0) {
			if (e == P_NOMEM)
				return P_NOMEM;
			return perr(&c, c.line, error_r, "bad host");
		}
		if ((e = tok_get(&t[5], &text)) < 0) {
			free(host);
			if (e == P_NOMEM)
				return P_NOMEM;
			return perr(&c, c.line, error_r, "bad text");
		}
		rcpt_apply(&env->rcpt[idx], t[1].p[0], (time_t)tm, (int)code,
			   host, text);
		*good_r = (size_t)(c.p - data);
	}
	return 0;
}

/* Test-only entry points (q_spool-private.h, used by tests/fuzz). */
int q_spool_env_parse(const char *data, size_t len, const char *path,
		      const char *id, struct q_env **env_r,
		      const char **error_r)
{
	return env_parse(data, len, path, id, env_r, error_r);
}

int q_spool_journal_apply(const char *data, size_t len, const char *path,
			  struct q_env *env, size_t *good_r,
			  const char **error_r)
{
	return journal_apply(data, len, path, env, good_r, error_r);
}

int q_spool_env_encode(const struct q_env *env, struct q_buf *b)
{
	return env_encode(env, b);
}

/* ------------------------------------------------------------------ */
/* spool open/close */

static int check_dir(int fd, const char *path, const char **error_r)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return q_err(error_r, "fstat %s: %s", path, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return q_err(error_r, "%s is not a directory", path);
	if (st.st_uid != geteuid())
		return q_err(error_r, "spool directory %s is owned by uid %lu, "
			     "not by uid %lu (this process); fix with chown",
			     path, (unsigned long)st.st_uid,
			     (unsigned long)geteuid());
	if (st.st_mode & S_IWOTH)
		return q_err(error_r, "spool directory %s is writable by others; "
			     "fix with chmod 700 %s", path, path);
	if (st.st_mode & S_IWGRP)
		return q_err(error_r, "spool directory %s is writable by its "
			     "group; fix with chmod 700 %s", path, path);
	return 0;
}

/* mkdir -p for the parents (mode 0755 minus umask), then dir itself 0700. */
static int mkdir_tree(const char *dir, const char **error_r)
{
	char *p = strdup(dir);
	int ret = 0;

	if (p == NULL)
		return q_err(error_r, "out of memory");
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST) {
			ret = q_err(error_r, "mkdir %s: %s", p, strerror(errno));
			goto out;
		}
		*s = '/';
	}
	if (mkdir(p, 0700) == 0) {
		if (chmod(p, 0700) < 0)
			ret = q_err(error_r, "chmod %s: %s", p, strerror(errno));
	} else if (errno != EEXIST) {
		ret = q_err(error_r, "mkdir %s: %s", p, strerror(errno));
	}
out:
	free(p);
	return ret;
}

static int open_sub(struct q_spool *s, const char *name, const char **error_r)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", s->dir, name);
	fd = openat(s->dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return q_err(error_r, "open %s: %s", path, strerror(errno));
	if (check_dir(fd, path, error_r) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

int q_spool_open(const char *dir, unsigned flags, struct q_spool **spool_r,
		 const char **error_r)
{
	struct q_spool *s;
	char path[PATH_MAX];
	int fd;

	*spool_r = NULL;
	if (dir == NULL || *dir == '\0')
		return q_err(error_r, "no spool directory given");
	if (strlen(dir) > PATH_MAX - 64)
		return q_err(error_r, "spool directory name too long");
	if ((flags & Q_SPOOL_CREATE) && mkdir_tree(dir, error_r) < 0)
		return -1;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return q_err(error_r, "out of memory");
	s->dfd = s->input_fd = s->tmp_fd = s->msglog_fd = s->corrupt_fd = -1;
	for (int i = 0; i < NSPLIT; i++)
		s->split_fd[i] = -1;
	pthread_mutex_init(&s->lazy_mu, NULL);
	if ((s->dir = strdup(dir)) == NULL) {
		q_err(error_r, "out of memory");
		goto fail;
	}
	/* strip trailing slashes (but keep "/") */
	for (size_t n = strlen(s->dir); n > 1 && s->dir[n - 1] == '/'; n--)
		s->dir[n - 1] = '\0';
	s->dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dfd < 0) {
		q_err(error_r, "spool directory %s: %s", s->dir, strerror(errno));
		goto fail;
	}
	if (check_dir(s->dfd, s->dir, error_r) < 0)
		goto fail;
	/* input/ makes a spool; the other directories are made when missing */
	if (!(flags & Q_SPOOL_CREATE) && faccessat(s->dfd, "input", F_OK, 0) < 0) {
		q_err(error_r, "%s is not a spool (no input/ directory): %s",
		      s->dir, strerror(errno));
		goto fail;
	}
	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		if (mkdir_0700(s->dfd, subdirs[i]) < 0) {
			snprintf(path, sizeof(path), "%s/%s", s->dir, subdirs[i]);
			q_err(error_r, "mkdir %s: %s", path, strerror(errno));
			goto fail;
		}
		if ((fd = open_sub(s, subdirs[i], error_r)) < 0)
			goto fail;
		if (strcmp(subdirs[i], "input") == 0)
			s->input_fd = fd;
		else if (strcmp(subdirs[i], "tmp") == 0)
			s->tmp_fd = fd;
		else if (strcmp(subdirs[i], "msglog") == 0)
			s->msglog_fd = fd;
		else if (strcmp(subdirs[i], "corrupt") == 0)
			s->corrupt_fd = fd;
		else
			close(fd);
	}
	s->fix_mode = umask_strips_owner();
	*spool_r = s;
	return 0;
fail:
	q_spool_close(&s);
	return -1;
}

void q_spool_close(struct q_spool **sp)
{
	struct q_spool *s = *sp;

	if (s == NULL)
		return;
	q_spool_reaper_stop(s);
	if (s->hints != NULL && s->hints_pid == getpid())
		q_hints_close(&s->hints);
	for (int i = 0; i < NSPLIT; i++)
		if (s->split_fd[i] >= 0)
			close(s->split_fd[i]);
	if (s->dfd >= 0)
		close(s->dfd);
	if (s->input_fd >= 0)
		close(s->input_fd);
	if (s->tmp_fd >= 0)
		close(s->tmp_fd);
	if (s->msglog_fd >= 0)
		close(s->msglog_fd);
	if (s->corrupt_fd >= 0)
		close(s->corrupt_fd);
	pthread_mutex_destroy(&s->lazy_mu);
	free(s->dir);
	free(s);
	*sp = NULL;
}

const char *q_spool_dir(const struct q_spool *spool)
{
	return spool->dir;
}

static int count_one(const struct q_index_rec *r, void *ctx)
{
	(void)r;
	(*(size_t *)ctx)++;
	return 0;
}

int q_spool_hints(struct q_spool *s, struct q_hints **hints_r,
		  const char **error_r)
{
	char path[PATH_MAX];
	bool rebuild = false;

	pthread_mutex_lock(&s->lazy_mu);
	if (s->hints != NULL && s->hints_pid != getpid())
		s->hints = NULL;   /* the parent's: not ours to close */
	if (s->hints == NULL) {
		const char *notice = NULL;
		/* no index yet: a new spool, or db/ deleted (hints may be) */
		bool fresh = faccessat(s->dfd, "db/index.db", F_OK, 0) != 0;
		snprintf(path, sizeof(path), "%s/db", s->dir);
		if (q_hints_open(path, "smtp", &s->hints, &notice, error_r) < 0) {
			s->hints = NULL;
			s->hints_failed = true;
			pthread_mutex_unlock(&s->lazy_mu);
			return -1;
		}
		s->hints_pid = getpid();
		s->hints_failed = false;
		/* a damaged environment moved aside and made anew: say so in
		   the main log (the spool's own record of what happened) */
		if (notice != NULL) {
			q_log("hints: %s", notice);
			rebuild = true;
		} else if (fresh) {
			rebuild = true;
		}
	}
	*hints_r = s->hints;
	pthread_mutex_unlock(&s->lazy_mu);
	/* A new environment has an empty index: fill it from the spool now,
	 * or counts and listings that trust it would say the queue is empty
	 * (the spool is the truth; this is O(messages), once). */
	if (rebuild) {
		/* q_spool_list's cross-check adds what the index lacks without
		 * truncating it, so concurrent first users of a new spool
		 * cannot drop each other's entries */
		size_t n = 0;
		const char *rerr = NULL;
		if (q_spool_list(s, count_one, &n, &rerr) < 0)
			q_log("hints: index not rebuilt: %s", rerr);
		else if (n > 0)
			q_log("hints: index rebuilt from the spool: %zu messages", n);
	}
	return 0;
}

/* The hints for an index update whose failure is ignored: do not retry
 * an open that failed before (once per handle). */
static struct q_hints *hints_quiet(struct q_spool *s)
{
	struct q_hints *h;

	if (s->hints_failed && (s->hints == NULL || s->hints_pid != getpid()))
		return NULL;
	return q_spool_hints(s, &h, NULL) == 0 ? h : NULL;
}

static void index_update(struct q_spool *s, const struct q_env *env,
			 time_t next_try)
{
	struct q_hints *h = hints_quiet(s);
	struct q_index_rec r;

	if (h == NULL)
		return;
	memset(&r, 0, sizeof(r));
	if (q_index_rec_from_env(&r, env, next_try) == 0)
		(void)q_index_put(h, &r, NULL);
	q_index_rec_clear(&r);
}

static void index_delete(struct q_spool *s, const char *id)
{
	struct q_hints *h = hints_quiet(s);

	if (h != NULL)
		(void)q_index_del(h, id, NULL);
}

char *q_spool_path(const struct q_spool *spool, const char *id, char kind,
		   char *buf, size_t size)
{
	if (size == 0)
		return buf;
	if (!q_id_valid(id)) {
		buf[0] = '\0';
		return buf;
	}
	switch (kind) {
	case 'H': case 'D': case 'J':
		snprintf(buf, size, "%s/input/%c/%s-%c", spool->dir,
			 id[Q_ID_SPLIT_POS], id, kind);
		break;
	case 'L':
		snprintf(buf, size, "%s/msglog/%s", spool->dir, id);
		break;
	default:
		buf[0] = '\0';
	}
	return buf;
}

/* fd of input/<c>; creates the directory when asked. -1 with errno. */
static int split_fd(struct q_spool *s, char c, bool create)
{
	int i = split_index(c);
	char name[2] = { c, '\0' };
	int fd;

	assert(i >= 0);
	pthread_mutex_lock(&s->lazy_mu);
	if (s->split_fd[i] >= 0) {
		fd = s->split_fd[i];
		pthread_mutex_unlock(&s->lazy_mu);
		return fd;
	}
	fd = openat(s->input_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && create) {
		if (mkdir_0700(s->input_fd, name) < 0 || fsync(s->input_fd) < 0) {
			pthread_mutex_unlock(&s->lazy_mu);
			return -1;
		}
		fd = openat(s->input_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	if (fd >= 0)
		s->split_fd[i] = fd;
	pthread_mutex_unlock(&s->lazy_mu);
	return fd;
}

/* ------------------------------------------------------------------ */
/* corrupt files */

/* Move id's -H, -D and -J to corrupt/ and extend the error text. */
static void move_corrupt(struct q_spool *s, int split, const char *id,
			 const char **error_r)
{
	static const char kinds[] = { 'H', 'D', 'J' };
	char name[Q_ID_LEN + 3];
	char what[1024];
	const char *fail = NULL;
	int err = 0;

	snprintf(what, sizeof(what), "%s", q_err_last());
	pthread_mutex_lock(&s->lazy_mu);
	if (s->corrupt_fd < 0) {
		if (mkdir_0700(s->dfd, "corrupt") == 0)
			s->corrupt_fd = openat(s->dfd, "corrupt",
					       O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (s->corrupt_fd < 0) {
			err = errno;
			fail = "corrupt/";
		}
	}
	pthread_mutex_unlock(&s->lazy_mu);
	for (size_t i = 0; i < sizeof(kinds) && fail == NULL; i++) {
		msg_name(name, id, kinds[i]);
		if (renameat(split, name, s->corrupt_fd, name) < 0 &&
		    errno != ENOENT) {
			err = errno;
			fail = "rename";
		}
	}
	if (fail == NULL)
		q_err(error_r, "%s (moved to %s/corrupt/)", what, s->dir);
	else
		q_err(error_r, "%s (could not move it to %s/corrupt/: %s)", what,
		      s->dir, strerror(err));
	/* a listing skips the message: the main log (if open) keeps a trace */
	q_log("%s corrupt: %s", id, q_err_last());
}

/* ------------------------------------------------------------------ */
/* reading */

struct jinfo {
	bool exists;
	size_t size;             /* bytes in -J */
	size_t good;             /* up to the last complete line */
};

#define R_CORRUPT 3   /* internal: garbled, moved aside (error set) */
#define R_JBAD 4      /* internal: -J garbled, not moved yet */

/* Read -H and apply -J. 0, Q_NOTFOUND, R_CORRUPT, R_JBAD (only when
 * !move_jbad), or -1. */
static int env_load_once(struct q_spool *s, int split, const char *id,
			 struct q_env **env_r, struct jinfo *ji, bool move_jbad,
			 int *jfd_r, const char **error_r)
{
	char name[Q_ID_LEN + 3], path[PATH_MAX];
	struct q_buf b = { 0 };
	struct jinfo dummy;
	int r;

	if (ji == NULL)
		ji = &dummy;
	memset(ji, 0, sizeof(*ji));
	*env_r = NULL;
	msg_name(name, id, 'H');
	q_spool_path(s, id, 'H', path, sizeof(path));
	r = read_file_at(split, name, path, &b, NULL, error_r);
	if (r != 0)
		goto out;
	r = env_parse(b.data, b.len, path, id, env_r, error_r);
	if (r == P_NOMEM) {
		r = q_err(error_r, "%s: out of memory", path);
		goto out;
	}
	if (r < 0) {
		move_corrupt(s, split, id, error_r);
		r = R_CORRUPT;
		goto out;
	}
	msg_name(name, id, 'J');
	q_spool_path(s, id, 'J', path, sizeof(path));
	r = read_file_at(split, name, path, &b, jfd_r, error_r);
	if (r == Q_NOTFOUND) {
		r = 0;
		goto out;
	}
	if (r < 0)
		goto fail;
	ji->exists = true;
	ji->size = b.len;
	r = journal_apply(b.data, b.len, path, *env_r, &ji->good, error_r);
	if (r == P_NOMEM) {
		r = q_err(error_r, "%s: out of memory", path);
		goto fail;
	}
	if (r < 0 && !move_jbad) {
		r = R_JBAD;
		goto fail;
	}
	if (r < 0) {
		move_corrupt(s, split, id, error_r);
		r = R_CORRUPT;
		goto fail;
	}
	goto out;
fail:
	q_env_free(env_r);
	if (jfd_r != NULL && *jfd_r >= 0) {
		close(*jfd_r);
		*jfd_r = -1;
	}
out:
	q_buf_free(&b);
	return r;
}

/* env_load_once; without the lock, a garbled -J is read a second time
 * before it is believed: the lock holder may have been cutting a torn
 * line off and appending while we read (-H is never changed in place). */
static int env_load(struct q_spool *s, int split, const char *id,
		    struct q_env **env_r, struct jinfo *ji, bool locked,
		    int *jfd_r, const char **error_r)
{
	int r = env_load_once(s, split, id, env_r, ji, locked, jfd_r, error_r);

	if (r == R_JBAD)
		r = env_load_once(s, split, id, env_r, ji, true, jfd_r, error_r);
	return r;
}

int q_spool_read(struct q_spool *s, const char *id, struct q_env **env_r,
		 const char **error_r)
{
	int split, r;

	*env_r = NULL;
	if (!q_id_valid(id))
		return q_err(error_r, "invalid message id");
	split = split_fd(s, id[Q_ID_SPLIT_POS], false);
	if (split < 0) {
		if (errno == ENOENT)
			return Q_NOTFOUND;
		return q_err(error_r, "open %s/input/%c: %s", s->dir,
			     id[Q_ID_SPLIT_POS], strerror(errno));
	}
	r = env_load(s, split, id, env_r, NULL, false, NULL, error_r);
	return r == R_CORRUPT ? -1 : r;
}

int q_spool_scan(struct q_spool *s, q_spool_id_fn *fn, void *ctx,
		 const char **error_r)
{
	for (int i = 0; i < NSPLIT; i++) {
		char name[2] = { q_b62[i], '\0' };
		struct dirent *de;
		DIR *d;
		int fd, r = 0;

		fd = openat(s->input_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT)
				continue;
			return q_err(error_r, "open %s/input/%s: %s", s->dir,
				     name, strerror(errno));
		}
		if ((d = fdopendir(fd)) == NULL) {
			close(fd);
			return q_err(error_r, "opendir %s/input/%s: %s", s->dir,
				     name, strerror(errno));
		}
		errno = 0;
		while ((de = readdir(d)) != NULL) {
			char id[Q_ID_LEN + 1];
			const char *n = de->d_name;

			if (n[0] == '.' || strlen(n) != Q_ID_LEN + 2 ||
			    n[Q_ID_LEN] != '-' || n[Q_ID_LEN + 1] != 'H' ||
			    n[Q_ID_SPLIT_POS] != q_b62[i])
				continue;
			memcpy(id, n, Q_ID_LEN);
			id[Q_ID_LEN] = '\0';
			if (!q_id_valid(id))
				continue;
			if ((r = fn(id, ctx)) != 0)
				break;
			errno = 0;
		}
		if (de == NULL && errno != 0) {
			r = q_err(error_r, "readdir %s/input/%s: %s", s->dir,
				  name, strerror(errno));
		}
		closedir(d);
		if (r != 0)
			return r < 0 ? -1 : 0;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* creating */

/* Write a new file (0600) relative to dirfd; where names the directory
 * in error texts ("tmp", "input/x"). */
static int write_at(struct q_spool *s, int dirfd, const char *where,
		    const char *name, const void *data, size_t len, bool excl,
		    bool sync, const char **error_r)
{
	int fd, flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW;

	flags |= excl ? O_EXCL : O_TRUNC;
	fd = openat(dirfd, name, flags, 0600);
	if (fd < 0)
		return q_err(error_r, "create %s/%s/%s: %s", s->dir, where, name,
			     strerror(errno));
	if ((s->fix_mode && fchmod(fd, 0600) < 0) ||
	    write_all(fd, data, len) < 0 || (sync && fsync(fd) < 0)) {
		q_err(error_r, "write %s/%s/%s: %s", s->dir, where, name,
		      strerror(errno));
		close(fd);
		unlinkat(dirfd, name, 0);
		return -1;
	}
	if (close(fd) < 0) {
		q_err(error_r, "close %s/%s/%s: %s", s->dir, where, name,
		      strerror(errno));
		unlinkat(dirfd, name, 0);
		return -1;
	}
	return 0;
}

static int write_tmp(struct q_spool *s, const char *name, const void *data,
		     size_t len, bool excl, bool sync, const char **error_r)
{
	return write_at(s, s->tmp_fd, "tmp", name, data, len, excl, sync,
			error_r);
}

/* Any octet over 127 in the data? (One pass the compiler vectorizes:
 * about a microsecond for a 4 KB message.) */
static bool has_8bit(const char *data, size_t len)
{
	const unsigned char *p = (const unsigned char *)data;
	unsigned char acc = 0;

	for (size_t i = 0; i < len; i++)
		acc |= p[i];
	return (acc & 0x80) != 0;
}

int q_spool_create(struct q_spool *s, const struct q_newmsg *m,
		   unsigned flags, char id_r[Q_ID_LEN + 1], const char **error_r)
{
	bool sync = !(flags & Q_CREATE_NOSYNC);
	char id[Q_ID_LEN + 1], dname[Q_ID_LEN + 3], hname[Q_ID_LEN + 3];
	char jname[Q_ID_LEN + 3], where[16];
	struct q_env env;
	struct q_buf b = { 0 };
	int split = -1, ret = -1;
	bool h_tmp = false, d_in = false, j_in = false;

	assert(m != NULL && m->sender != NULL);
	assert(m->nrcpt == 0 || m->rcpts != NULL);
	assert(m->len == 0 || m->data != NULL);
	if (m->nrcpt == 0)
		return q_err(error_r, "a message needs at least one recipient");
	memset(&env, 0, sizeof(env));
	if ((env.rcpt = calloc(m->nrcpt, sizeof(*env.rcpt))) == NULL)
		return q_err(error_r, "out of memory");
	q_id_new(id);
	memcpy(env.id, id, sizeof(id));
	env.sender = (char *)m->sender;
	env.arrival = q_id_time(id);
	env.size = m->len;
	env.flags = m->flags & (Q_ENV_FROZEN | Q_ENV_BOUNCE);
	if (has_8bit(m->data, m->len))
		env.flags |= Q_ENV_8BIT;
	env.nrcpt = m->nrcpt;
	for (size_t i = 0; i < m->nrcpt; i++) {
		assert(m->rcpts[i] != NULL);
		env.rcpt[i].addr = (char *)m->rcpts[i];
		env.rcpt[i].state = Q_RCPT_PENDING;
	}
	if (env_encode(&env, &b) < 0) {
		q_err(error_r, "out of memory");
		goto out;
	}
	msg_name(dname, id, 'D');
	msg_name(hname, id, 'H');
	msg_name(jname, id, 'J');
	snprintf(where, sizeof(where), "input/%c", id[Q_ID_SPLIT_POS]);
	if ((split = split_fd(s, id[Q_ID_SPLIT_POS], true)) < 0) {
		q_err(error_r, "mkdir %s/%s: %s", s->dir, where, strerror(errno));
		goto out;
	}
	/* -D and -J go straight to their place: without an -H nothing sees
	 * them (and a crash's orphans are removed by q_index_rebuild) */
	if (write_at(s, split, where, dname, m->data, m->len, true, sync,
		     error_r) < 0)
		goto out;
	d_in = true;
	/* An empty journal, made now so that a delivery only appends to it:
	 * creating files is what a busy spool pays most for (on ext4 without
	 * a journal every create scans the recently deleted inodes), and the
	 * delivery path should create none. */
	if (write_at(s, split, where, jname, "", 0, true, false, error_r) < 0)
		goto out;
	j_in = true;
	if (write_tmp(s, hname, b.data, b.len, true, sync, error_r) < 0)
		goto out;
	h_tmp = true;
	/* the commit point */
	if (renameat(s->tmp_fd, hname, split, hname) < 0) {
		q_err(error_r, "rename %s/tmp/%s into input/%c/: %s", s->dir,
		      hname, id[Q_ID_SPLIT_POS], strerror(errno));
		goto out;
	}
	h_tmp = false;
	d_in = false;
	j_in = false;
	if (sync && fsync(split) < 0) {
		/* the message is there but may not survive a crash: say so,
		 * and take it back so that the caller's retry is not a dup */
		q_err(error_r, "fsync %s/input/%c: %s", s->dir,
		      id[Q_ID_SPLIT_POS], strerror(errno));
		unlinkat(split, hname, 0);
		unlinkat(split, dname, 0);
		unlinkat(split, jname, 0);
		goto out;
	}
	index_update(s, &env, 0);
	memcpy(id_r, id, sizeof(id));
	ret = 0;
out:
	if (h_tmp)
		unlinkat(s->tmp_fd, hname, 0);
	if (d_in)
		unlinkat(split, dname, 0);
	if (j_in)
		unlinkat(split, jname, 0);
	free(env.rcpt);
	q_buf_free(&b);
	return ret;
}

int q_spool_sync(struct q_spool *s, const char **error_r)
{
	if (syncfs(s->dfd) < 0)
		return q_err(error_r, "syncfs %s: %s", s->dir, strerror(errno));
	return 0;
}

/* ------------------------------------------------------------------ */
/* locked access */

int q_msg_lock(struct q_spool *s, const char *id, struct q_msg **msg_r,
	       const char **error_r)
{
	struct flock fl;
	struct stat st;
	struct jinfo ji;
	struct q_msg *m;
	char name[Q_ID_LEN + 3];
	int split, r;

	*msg_r = NULL;
	if (!q_id_valid(id))
		return q_err(error_r, "invalid message id");
	split = split_fd(s, id[Q_ID_SPLIT_POS], false);
	if (split < 0) {
		if (errno == ENOENT)
			return Q_NOTFOUND;
		return q_err(error_r, "open %s/input/%c: %s", s->dir,
			     id[Q_ID_SPLIT_POS], strerror(errno));
	}
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return q_err(error_r, "out of memory");
	m->spool = s;
	memcpy(m->id, id, Q_ID_LEN + 1);
	m->split = split;
	m->rofd = m->jfd = -1;
	msg_name(name, id, 'D');
	m->dfd = openat(split, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (m->dfd < 0) {
		r = errno == ENOENT ? Q_NOTFOUND :
			q_err(error_r, "open %s/input/%c/%s: %s", s->dir,
			      id[Q_ID_SPLIT_POS], name, strerror(errno));
		goto fail;
	}
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(m->dfd, F_OFD_SETLK, &fl) < 0) {
		r = (errno == EAGAIN || errno == EACCES) ? Q_BUSY :
			q_err(error_r, "lock %s/input/%c/%s: %s", s->dir,
			      id[Q_ID_SPLIT_POS], name, strerror(errno));
		goto fail;
	}
	/* removed while we waited for the lock? */
	if (fstat(m->dfd, &st) < 0) {
		r = q_err(error_r, "fstat %s: %s", name, strerror(errno));
		goto fail;
	}
	if (st.st_nlink == 0) {
		r = Q_NOTFOUND;
		goto fail;
	}
	m->dsize = st.st_size;
	/* -J is read through the descriptor that appends to it later */
	r = env_load(s, split, id, &m->env, &ji, true, &m->jfd, error_r);
	if (r == R_CORRUPT)
		r = -1;
	if (r != 0)
		goto fail;
	m->jlen = (off_t)ji.good;
	if (ji.exists) {
		msg_name(name, id, 'J');
		/* cut a torn last line off before anything is appended */
		if (ji.good < ji.size &&
		    (ftruncate(m->jfd, (off_t)ji.good) < 0 ||
		     fdatasync(m->jfd) < 0)) {
			r = q_err(error_r, "truncate %s/input/%c/%s: %s", s->dir,
				  id[Q_ID_SPLIT_POS], name, strerror(errno));
			goto fail;
		}
	}
	*msg_r = m;
	return 0;
fail:
	{
		/* the caller may look at errno (EMFILE: out of descriptors) */
		int e = errno;

		q_msg_unlock(&m);
		errno = e;
	}
	return r;
}

void q_msg_unlock(struct q_msg **mp)
{
	struct q_msg *m = *mp;

	if (m == NULL)
		return;
	/* held results must not be lost: what was delivered is journaled */
	if (m->jhold.len > 0 && !m->gone) {
		const char *err = NULL;

		if (q_msg_journal_flush(m, Q_JOURNAL_NOSYNC, &err) < 0)
			q_log("%s journal: %s", m->id, err);
	}
	q_buf_free(&m->jhold);
	if (m->jfd >= 0)
		close(m->jfd);
	if (m->rofd >= 0)
		close(m->rofd);
	if (m->dfd >= 0)
		close(m->dfd);   /* releases the OFD lock */
	q_env_free(&m->env);
	free(m);
	*mp = NULL;
}

struct q_env *q_msg_env(struct q_msg *m)
{
	return m->env;
}

int q_msg_data(struct q_msg *m, off_t *size_r)
{
	*size_r = m->dsize;
	return m->dfd;
}

int q_msg_data_fd(struct q_msg *m)
{
	char name[Q_ID_LEN + 3];

	if (m->rofd < 0) {
		msg_name(name, m->id, 'D');
		m->rofd = openat(m->split, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (m->rofd < 0)
			return -1;
	}
	if (lseek(m->rofd, 0, SEEK_SET) < 0)
		return -1;
	return m->rofd;
}

static int msg_errj(struct q_msg *m, const char *what, const char **error_r)
{
	return q_err(error_r, "%s %s/input/%c/%s-J: %s", what, m->spool->dir,
		     m->id[Q_ID_SPLIT_POS], m->id, strerror(errno));
}

/* Open (or create) -J for appending when it is not open yet. */
static int jopen(struct q_msg *m, const char **error_r)
{
	char name[Q_ID_LEN + 3];

	if (m->jfd >= 0)
		return 0;
	msg_name(name, m->id, 'J');
	/* usually there: q_spool_create makes an empty one */
	m->jfd = openat(m->split, name, O_WRONLY | O_APPEND | O_CLOEXEC |
			O_NOFOLLOW);
	if (m->jfd < 0 && errno == ENOENT) {
		m->jfd = openat(m->split, name, O_WRONLY | O_APPEND | O_CREAT |
				O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (m->jfd >= 0)
			m->jnew = true;
	}
	if (m->jfd < 0)
		return msg_errj(m, "open", error_r);
	if (m->jnew && m->spool->fix_mode)
		(void)fchmod(m->jfd, 0600);
	m->jlen = 0;
	if (!m->jnew) {
		struct stat st;

		if (fstat(m->jfd, &st) < 0)
			return msg_errj(m, "fstat", error_r);
		m->jlen = st.st_size;
	}
	return 0;
}

/* Append whole lines to -J in one write; a failed write is cut off so
 * that no torn line stays in front of later ones. */
static int jappend(struct q_msg *m, const char *p, size_t n,
		   const char **error_r)
{
	if (jopen(m, error_r) < 0)
		return -1;
	if (write_all(m->jfd, p, n) < 0) {
		int e = errno;

		(void)ftruncate(m->jfd, m->jlen);
		errno = e;
		return msg_errj(m, "write", error_r);
	}
	m->jlen += (off_t)n;
	m->jdirty = true;
	return 0;
}

int q_msg_journal_flush(struct q_msg *m, unsigned flags, const char **error_r)
{
	int r = 0;

	if (m->jhold.len > 0)
		r = jappend(m, m->jhold.data, m->jhold.len, error_r);
	q_buf_reset(&m->jhold);
	if (r == 0 && !(flags & Q_JOURNAL_NOSYNC))
		r = q_msg_journal_sync(m, error_r);
	return r;
}

int q_msg_journal(struct q_msg *m, size_t idx, char state, int code,
		  const char *host, const char *text, unsigned flags,
		  const char **error_r)
{
	struct q_buf b = { 0 };
	char *h = NULL, *t = NULL;
	time_t now = time(NULL);
	int ret = -1;

	if (m->gone)
		return q_err(error_r, "message %s was removed", m->id);
	if (idx >= m->env->nrcpt)
		return q_err(error_r, "recipient index %zu out of range", idx);
	if (!state_known(state))
		return q_err(error_r, "bad recipient state");
	if (code < 0 || code > 999)
		return q_err(error_r, "bad reply code %d", code);
	if (m->env->rcpt[idx].state != Q_RCPT_PENDING &&
	    !(m->env->rcpt[idx].state == Q_RCPT_FAILED_OWED &&
	      state == Q_RCPT_FAILED))
		return q_err(error_r, "recipient %zu of %s is not pending", idx,
			     m->id);
	if ((host != NULL && (h = strdup(host)) == NULL) ||
	    (text != NULL && (t = strdup(text)) == NULL) ||
	    q_buf_printf(&b, "%zu %c %lld %d ", idx, state, (long long)now,
			 code) < 0 ||
	    tok_put(&b, host) < 0 || q_buf_addc(&b, ' ') < 0 ||
	    tok_put(&b, text) < 0 || q_buf_addc(&b, '\n') < 0) {
		q_err(error_r, "out of memory");
		goto out;
	}
	if (flags & Q_JOURNAL_HOLD) {
		if (q_buf_add(&m->jhold, b.data, b.len) < 0) {
			q_err(error_r, "out of memory");
			goto out;
		}
	} else {
		/* held lines first: the journal keeps the order of results */
		if (m->jhold.len > 0 &&
		    q_msg_journal_flush(m, Q_JOURNAL_NOSYNC, error_r) < 0)
			goto out;
		if (jappend(m, b.data, b.len, error_r) < 0)
			goto out;
		if (!(flags & Q_JOURNAL_NOSYNC) &&
		    q_msg_journal_sync(m, error_r) < 0)
			goto out;
	}
	rcpt_apply(&m->env->rcpt[idx], state, now, code, h, t);
	h = t = NULL;
	ret = 0;
out:
	free(h);
	free(t);
	q_buf_free(&b);
	return ret;
}

int q_msg_journal_sync(struct q_msg *m, const char **error_r)
{
	if (m->jfd < 0)
		return 0;
	if (m->jdirty && fdatasync(m->jfd) < 0)
		return msg_errj(m, "fdatasync", error_r);
	m->jdirty = false;
	if (m->jnew) {
		if (fsync(m->split) < 0)
			return q_err(error_r, "fsync %s/input/%c: %s",
				     m->spool->dir, m->id[Q_ID_SPLIT_POS],
				     strerror(errno));
		m->jnew = false;
	}
	return 0;
}

/* Rewrite -H from m->env (atomically, synced) and drop -J. */
static int env_rewrite(struct q_msg *m, const char **error_r)
{
	struct q_spool *s = m->spool;
	char name[Q_ID_LEN + 3];
	struct q_buf b = { 0 };
	int ret = -1;

	if (env_encode(m->env, &b) < 0) {
		q_err(error_r, "out of memory");
		goto out;
	}
	msg_name(name, m->id, 'H');
	if (write_tmp(s, name, b.data, b.len, false, true, error_r) < 0)
		goto out;
	if (renameat(s->tmp_fd, name, m->split, name) < 0) {
		q_err(error_r, "rename %s/tmp/%s into input/%c/: %s", s->dir,
		      name, m->id[Q_ID_SPLIT_POS], strerror(errno));
		unlinkat(s->tmp_fd, name, 0);
		goto out;
	}
	if (fsync(m->split) < 0) {
		q_err(error_r, "fsync %s/input/%c: %s", s->dir,
		      m->id[Q_ID_SPLIT_POS], strerror(errno));
		goto out;
	}
	/* the journal is merged: a crash from here on applies it twice,
	 * which only recounts tries (see the top of this file). It is
	 * emptied, not removed, so that the next attempt creates no file
	 * (q_spool_create makes the empty -J with the message). */
	if (m->jfd >= 0 && ftruncate(m->jfd, 0) < 0) {
		msg_errj(m, "truncate", error_r);
		goto out;
	}
	m->jlen = 0;
	m->jnew = m->jdirty = false;
	ret = 0;
out:
	q_buf_free(&b);
	return ret;
}

/* Unlink -H, -D, (sync,) -J and the msglog. */
static int msg_unlink_all(struct q_msg *m, const char **error_r)
{
	struct q_spool *s = m->spool;
	char name[Q_ID_LEN + 3];

	if (s->reaper != NULL) {
		/* the reaper unlinks, then closes dfd (our lock) */
		struct reap *it = malloc(sizeof(*it));

		if (it != NULL) {
			memcpy(it->id, m->id, sizeof(it->id));
			it->split = m->split;
			it->dfd = m->dfd;
			it->next = NULL;
			/* -J is removed by name: its descriptor is not needed */
			if (m->jfd >= 0)
				close(m->jfd);
			m->dfd = m->jfd = -1;
			m->gone = true;
			struct reaper *rp = s->reaper;

			pthread_mutex_lock(&rp->mu);
			while (rp->n >= rp->qmax)
				pthread_cond_wait(&rp->space, &rp->mu);
			it->seq = ++rp->qseq;
			if (rp->have_syncer && rp->started + 1 > rp->need_max) {
				if (rp->need_max <= rp->done)
					pthread_cond_signal(&rp->scv);
				rp->need_max = rp->started + 1;
			}
			*rp->tail = it;
			rp->tail = &it->next;
			/* wake a thread for a new list, or another one for
			 * each rp->take more (not a wake-up per message) */
			if (rp->n++ % rp->take == 0)
				pthread_cond_signal(&rp->cv);
			pthread_mutex_unlock(&rp->mu);
			return 0;
		}
	}

	msg_name(name, m->id, 'H');
	if (unlinkat(m->split, name, 0) < 0 && errno != ENOENT)
		return q_err(error_r, "unlink %s/input/%c/%s: %s", s->dir,
			     m->id[Q_ID_SPLIT_POS], name, strerror(errno));
	msg_name(name, m->id, 'D');
	if (unlinkat(m->split, name, 0) < 0 && errno != ENOENT)
		return q_err(error_r, "unlink %s/input/%c/%s: %s", s->dir,
			     m->id[Q_ID_SPLIT_POS], name, strerror(errno));
	/* -J goes last, so that a process killed here never leaves an -H
	 * without the journal of what was delivered. The order is not made
	 * durable with an fsync per message: after a power loss the -H may
	 * come back without its -J (and so may a journal written without
	 * fdatasync), which repeats a delivery but loses nothing. A runner
	 * makes its removals durable together with one q_spool_sync(). */
	msg_name(name, m->id, 'J');
	if (unlinkat(m->split, name, 0) < 0 && errno != ENOENT)
		return msg_errj(m, "unlink", error_r);
	if (m->jfd >= 0)
		close(m->jfd);
	m->jfd = -1;
	(void)unlinkat(s->msglog_fd, m->id, 0);
	m->gone = true;
	index_delete(s, m->id);
	return 0;
}

/* The reaper's work on a list of completed messages: unlink each one's
 * files (the same order as msg_unlink_all), delete their index records
 * in one transaction per Q_HINTS_BATCH_MAX, then release their locks. */
/* Delete the index records of ids[0..n) (the reaper's idx array). */
static void reap_index(struct q_spool *s, char (*ids)[Q_ID_LEN + 1], size_t n)
{
	struct q_hints_item items[REAP_IDX];
	struct q_hints *h = hints_quiet(s);

	for (size_t i = 0; i < n; i++)
		items[i] = (struct q_hints_item){ Q_HINTS_BDEL, ids[i], NULL,
						  Q_ID_LEN, 0 };
	if (h != NULL && n > 0)
		(void)q_hints_batch(h, Q_DB_INDEX, items, n, NULL);
}

static void reap_list(struct q_spool *s, struct reap *list)
{
	struct reaper *rp = s->reaper;
	char (*full)[Q_ID_LEN + 1] = NULL;
	char (*done)[Q_ID_LEN + 1] = malloc(REAP_TAKE * sizeof(*done));
	size_t ndone = 0;

	for (struct reap *it = list; it != NULL; it = it->next) {
		static const char kinds[] = "HDJ";
		char name[Q_ID_LEN + 3];
		bool ok = true;

		for (int k = 0; k < 3 && ok; k++) {
			msg_name(name, it->id, kinds[k]);
			if (unlinkat(it->split, name, 0) < 0 && errno != ENOENT) {
				q_log("%s cannot remove %s/input/%c/%s: %s (the "
				      "journal says it is complete: the next run "
				      "removes it)", it->id, s->dir,
				      it->id[Q_ID_SPLIT_POS], name, strerror(errno));
				ok = false;
			}
		}
		if (!ok)
			continue;
		(void)unlinkat(s->msglog_fd, it->id, 0);
		if (done != NULL && ndone < REAP_TAKE)
			memcpy(done[ndone++], it->id, Q_ID_LEN + 1);
	}
	/* the ids go to the shared list under one lock per list */
	pthread_mutex_lock(&rp->mu);
	for (size_t i = 0; i < ndone; i++) {
		if (rp->idx == NULL &&
		    (rp->idx = malloc(REAP_IDX * sizeof(*rp->idx))) == NULL)
			break;
		memcpy(rp->idx[rp->nidx++], done[i], Q_ID_LEN + 1);
		if (rp->nidx == REAP_IDX) {
			full = rp->idx;         /* this thread deletes them */
			rp->idx = NULL;
			rp->nidx = 0;
			pthread_mutex_unlock(&rp->mu);
			reap_index(s, full, REAP_IDX);
			free(full);
			full = NULL;
			pthread_mutex_lock(&rp->mu);
		}
	}
	pthread_mutex_unlock(&rp->mu);
	free(done);
	while (list != NULL) {
		struct reap *next = list->next;

		close(list->dfd);
		free(list);
		list = next;
	}
}

/* Every item with a seq up to this one has been removed (rp->mu held):
 * lists are taken from the queue in order, so that is the item before
 * the first one still queued or in a thread's hands. */
static uint64_t removed_upto(const struct reaper *rp)
{
	uint64_t low = rp->head != NULL ? rp->head->seq : rp->qseq + 1;

	for (unsigned i = 0; i < REAPERS; i++)
		if (rp->busy[i] != 0 && rp->busy[i] < low)
			low = rp->busy[i];
	return low - 1;
}

static void *reaper_main(void *arg)
{
	struct q_spool *s = arg;
	struct reaper *rp = s->reaper;

	pthread_mutex_lock(&rp->mu);
	for (;;) {
		struct reap *list = rp->head, *last = list;
		unsigned n = 1, slot = 0;

		if (list == NULL) {
			if (rp->stop)
				break;
			pthread_cond_wait(&rp->cv, &rp->mu);
			continue;
		}
		while (last->next != NULL && n < rp->take) {
			last = last->next;
			n++;
		}
		rp->head = last->next;
		if (rp->head == NULL)
			rp->tail = &rp->head;
		if (rp->n >= rp->qmax && rp->n - n < rp->qmax)
			pthread_cond_broadcast(&rp->space);
		rp->n -= n;
		last->next = NULL;
		/* a free slot: there are as many as threads */
		while (slot < REAPERS - 1 && rp->busy[slot] != 0)
			slot++;
		rp->busy[slot] = list->seq;
		pthread_mutex_unlock(&rp->mu);
		reap_list(s, list);
		pthread_mutex_lock(&rp->mu);
		rp->busy[slot] = 0;
		if (rp->swait)
			pthread_cond_signal(&rp->rcv);
	}
	pthread_mutex_unlock(&rp->mu);
	return NULL;
}

/* The group sync. Each round gathers removals for REAP_SYNC_MS, then waits
 * (at most REAP_SYNC_WAIT_MS) until the reapers have done every removal
 * queued so far, then makes one syncfs. Removing first has two effects:
 * the sync makes the removals themselves durable (a removed message is
 * never delivered again, even after a power loss), and the -J of a
 * completed message is normally unlinked while its last line is still
 * only in the page cache, so the file system never allocates, writes and
 * then frees (with a discard, on this kind of disk) a block for it. A
 * message that stays on the queue does not need this: q_msg_commit
 * rewrites its -H with fsync. */
static void *syncer_main(void *arg)
{
	struct q_spool *s = arg;
	struct reaper *rp = s->reaper;

	pthread_mutex_lock(&rp->mu);
	for (;;) {
		if (rp->need_max <= rp->done) {
			if (rp->stop)
				break;
			pthread_cond_wait(&rp->scv, &rp->mu);
			continue;
		}
		if (!rp->stop) {
			/* gather the removals of other deliveries first */
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += REAP_SYNC_MS * 1000000L;
			ts.tv_sec += ts.tv_nsec / 1000000000L;
			ts.tv_nsec %= 1000000000L;
			(void)pthread_cond_timedwait(&rp->scv, &rp->mu, &ts);
		}
		uint64_t seq = ++rp->started;
		uint64_t target = rp->qseq;
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += REAP_SYNC_WAIT_MS * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		rp->swait = true;
		while (removed_upto(rp) < target &&
		       pthread_cond_timedwait(&rp->rcv, &rp->mu, &until) == 0)
			;
		rp->swait = false;
		pthread_mutex_unlock(&rp->mu);
		if (syncfs(s->dfd) < 0)
			q_log("syncfs %s: %s (removals of delivered messages may "
			      "not be on disk)", s->dir, strerror(errno));
		pthread_mutex_lock(&rp->mu);
		rp->done = seq;
	}
	pthread_mutex_unlock(&rp->mu);
	return NULL;
}

/* Size the queue and the lists by the descriptors the process may open:
 * queued and taken items hold one each, and get at most half of what the
 * soft RLIMIT_NOFILE leaves (the workers need the rest), at most 768. */
static void reaper_budget(struct reaper *rp)
{
	struct rlimit rl;
	size_t b = REAPERS * REAP_TAKE + REAP_QMAX, open_now = 0;
	DIR *d = opendir("/proc/self/fd");

	if (d != NULL) {
		while (readdir(d) != NULL)
			open_now++;
		closedir(d);
	} else {
		open_now = 64;
	}
	/* room left besides what is open now, the 62 input/<c>/ directories
	 * opened on first use and a margin for the workers */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		size_t room = rl.rlim_cur > open_now + 128 ?
			(size_t)rl.rlim_cur - open_now - 128 : 0;

		if (room / 2 < b)
			b = room / 2;
	}
	if (b < 2 * REAPERS)
		b = 2 * REAPERS;
	rp->take = (unsigned)(b / 2 / REAPERS);
	if (rp->take > REAP_TAKE)
		rp->take = REAP_TAKE;
	rp->qmax = b - (size_t)rp->take * REAPERS;
	if (rp->qmax > REAP_QMAX)
		rp->qmax = REAP_QMAX;
}

int q_spool_reaper_start(struct q_spool *s, bool group_sync,
			 const char **error_r)
{
	struct reaper *rp;
	int rc;

	if (s->reaper != NULL)
		return 0;
	if ((rp = calloc(1, sizeof(*rp))) == NULL)
		return q_err(error_r, "out of memory");
	pthread_mutex_init(&rp->mu, NULL);
	pthread_cond_init(&rp->cv, NULL);
	pthread_cond_init(&rp->scv, NULL);
	pthread_cond_init(&rp->rcv, NULL);
	pthread_cond_init(&rp->space, NULL);
	rp->tail = &rp->head;
	reaper_budget(rp);
	s->reaper = rp;
	rc = 0;
	if (group_sync)
		rc = pthread_create(&rp->syncer, NULL, syncer_main, s);
	rp->have_syncer = group_sync && rc == 0;
	if (rp->have_syncer)
		(void)pthread_setname_np(rp->syncer, "q-syncer");
	/* without the syncer asked for, no reaper: q_msg_commit removes */
	for (; rp->nth < REAPERS && rc == 0; rp->nth++)
		if ((rc = pthread_create(&rp->th[rp->nth], NULL, reaper_main,
					 s)) != 0)
			break;
		else
			(void)pthread_setname_np(rp->th[rp->nth], "q-reaper");
	if (rp->nth == 0) {
		q_spool_reaper_stop(s);    /* the syncer, if it started */
		return q_err(error_r, "cannot start a thread: %s", strerror(rc));
	}
	return 0;
}

void q_spool_reaper_stop(struct q_spool *s)
{
	struct reaper *rp = s->reaper;

	if (rp == NULL)
		return;
	pthread_mutex_lock(&rp->mu);
	rp->stop = true;
	pthread_cond_broadcast(&rp->cv);
	pthread_cond_signal(&rp->scv);
	pthread_mutex_unlock(&rp->mu);
	if (rp->have_syncer)
		pthread_join(rp->syncer, NULL);
	for (unsigned i = 0; i < rp->nth; i++)
		pthread_join(rp->th[i], NULL);
	if (rp->nidx > 0)
		reap_index(s, rp->idx, rp->nidx);
	free(rp->idx);
	s->reaper = NULL;
	pthread_cond_destroy(&rp->scv);
	pthread_cond_destroy(&rp->rcv);
	pthread_cond_destroy(&rp->space);
	pthread_cond_destroy(&rp->cv);
	pthread_mutex_destroy(&rp->mu);
	free(rp);
}

int q_msg_commit(struct q_msg *m, time_t next_try, const char **error_r)
{
	if (m->gone)
		return q_err(error_r, "message %s was removed", m->id);
	if (m->jhold.len > 0 &&
	    q_msg_journal_flush(m, Q_JOURNAL_NOSYNC, error_r) < 0)
		return -1;
	/* a message that still owes a bounce stays (its X recipients say
	   so), whatever the caller thinks */
	if (q_env_pending(m->env) == 0 && q_env_owed(m->env) == 0)
		return msg_unlink_all(m, error_r);
	if (env_rewrite(m, error_r) < 0)
		return -1;
	index_update(m->spool, m->env, next_try);
	return 0;
}

int q_msg_set_frozen(struct q_msg *m, bool frozen, const char *reason,
		     const char **error_r)
{
	struct q_hints *h;
	struct q_index_rec r;
	time_t next_try = 0;
	char *dup = NULL;

	if (m->gone)
		return q_err(error_r, "message %s was removed", m->id);
	if (frozen && reason != NULL && (dup = strdup(reason)) == NULL)
		return q_err(error_r, "out of memory");
	free(m->env->frozen_reason);
	m->env->frozen_reason = dup;
	if (frozen)
		m->env->flags |= Q_ENV_FROZEN;
	else
		m->env->flags &= ~(unsigned)Q_ENV_FROZEN;
	if (env_rewrite(m, error_r) < 0)
		return -1;
	/* keep the next try the index had */
	if ((h = hints_quiet(m->spool)) != NULL) {
		memset(&r, 0, sizeof(r));
		if (q_index_get(h, m->id, &r, NULL) == 0)
			next_try = r.next_try;
		q_index_rec_clear(&r);
	}
	index_update(m->spool, m->env, next_try);
	return 0;
}

int q_msg_remove(struct q_msg **mp, const char **error_r)
{
	struct q_msg *m = *mp;
	int r = 0;

	if (!m->gone)
		r = msg_unlink_all(m, error_r);
	q_msg_unlock(mp);
	return r;
}

/* ------------------------------------------------------------------ */
/* message logs */

int q_msglog(struct q_spool *s, const char *id, const char *text,
	     const char **error_r)
{
	static const char hex[] = "0123456789abcdef";
	struct q_buf b = { 0 };
	char stamp[32];
	int fd, ret = -1;

	if (!q_id_valid(id))
		return q_err(error_r, "invalid message id");
	q_time_stamp(time(NULL), stamp, sizeof(stamp));
	if (q_buf_adds(&b, stamp) < 0 || q_buf_addc(&b, ' ') < 0)
		goto nomem;
	for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
		if (*p < 0x20 || *p == 0x7f) {
			char e[4] = { '\\', 'x', hex[*p >> 4], hex[*p & 15] };
			if (q_buf_add(&b, e, 4) < 0)
				goto nomem;
		} else if (*p == '\\') {
			if (q_buf_add(&b, "\\\\", 2) < 0)
				goto nomem;
		} else if (q_buf_addc(&b, (char)*p) < 0) {
			goto nomem;
		}
	}
	if (q_buf_addc(&b, '\n') < 0)
		goto nomem;
	fd = openat(s->msglog_fd, id, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC |
		    O_NOFOLLOW, 0600);
	if (fd < 0) {
		q_err(error_r, "open %s/msglog/%s: %s", s->dir, id,
		      strerror(errno));
		goto out;
	}
	if (s->fix_mode)
		(void)fchmod(fd, 0600);
	if (write_all(fd, b.data, b.len) < 0)
		q_err(error_r, "write %s/msglog/%s: %s", s->dir, id,
		      strerror(errno));
	else
		ret = 0;
	close(fd);
	goto out;
nomem:
	q_err(error_r, "out of memory");
out:
	q_buf_free(&b);
	return ret;
}
