/*
 * tui/jobs.c - qtop's actions, done off the drawing path.
 *
 * Two worker threads, each with its own queue of jobs and its own
 * q_spool handle:
 *   - the action worker: freeze, thaw, remove (q_msg_lock, then
 *     q_msg_set_frozen / q_msg_remove, exactly as qctl does, with the
 *     same main-log and message-log lines), retry now and delete
 *     (q_retry_clear);
 *   - the delivery worker: "deliver now", which runs the same code as
 *     qrun and `qctl flush`: it starts `qrun [-C FILE] --json -M ID...`
 *     with posix_spawn (never a shell), DELIVER_BATCH ids per process,
 *     one process after the other, in the background (its own process
 *     group, so a Ctrl-C in the terminal does not reach it; qtop quitting
 *     does not stop a delivery in progress). Its --json summary is read
 *     from a pipe and added up; the status line shows how many of the
 *     messages have left the queue (from the snapshots) meanwhile.
 *
 * Invariants: a message is only changed under its lock; a message that
 * another process holds (a delivery) is counted busy and left alone,
 * never waited for. Each job ends with one result line for the status
 * line; a worker never touches the terminal.
 *
 * "Retry now" clears the retry record and, so that the next queue run
 * really tries the host, makes the messages waiting for it due: each is
 * locked and committed with next_try 0 (q_msg_commit), which is what a
 * delivery attempt does at its end. Messages waiting for a T: key come
 * from the wait hints (q_wait_list, which names only the first host of a
 * destination); for an R: key, every message with a recipient in the
 * domain; for an address key, its message.
 *
 * qrun is looked for next to qtop ($ORIGIN/../bin/qrun: the build tree
 * has bin/qrun and tui/qtop; then $ORIGIN/../sbin/qrun: an install with
 * bindir and sbindir under one prefix), then in SBINDIR when config.h
 * defines it, then in $PATH.
 */
#include "config.h"
#include "tui/qtop.h"
#include "q/addr.h"
#include "q/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define DELIVER_BATCH 500
#define NRESULTS 8
#define QRUN_OUT_MAX (256u << 10)

struct job {
	enum job_kind kind;
	char **items;
	size_t n;
	struct job *next;
};

struct worker {
	const char *name;
	pthread_t th;
	bool running;
	struct job *head, *tail;
	size_t queued;
	struct job *cur;
	size_t done, total;
	/* delivery worker */
	char **dlv;                   /* sorted ids of the current job */
	size_t ndlv;
	size_t batch, nbatch;
	long qrun_pid;
	unsigned dlv_gen_seen;
	size_t dlv_gone;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	struct worker act, dlv;
	char *spool_dir, *conf_file;
	char qrun[PATH_MAX];
	char user[64];
	struct {
		char text[300];
		bool error;
	} res[NRESULTS];
	size_t nres;
} J = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void result(bool error, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void result(bool error, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&J.mu);
	if (J.nres == NRESULTS) {
		memmove(&J.res[0], &J.res[1], sizeof(J.res[0]) * (NRESULTS - 1));
		J.nres--;
	}
	va_start(ap, fmt);
	vsnprintf(J.res[J.nres].text, sizeof(J.res[J.nres].text), fmt, ap);
	va_end(ap);
	J.res[J.nres].error = error;
	J.nres++;
	pthread_mutex_unlock(&J.mu);
}

static void job_free(struct job *j)
{
	if (j == NULL)
		return;
	q_strv_free(&j->items, j->n);
	free(j);
}

static bool stopping(void)
{
	bool s;

	pthread_mutex_lock(&J.mu);
	s = J.stop;
	pthread_mutex_unlock(&J.mu);
	return s;
}

static void progress(struct worker *w, size_t done)
{
	pthread_mutex_lock(&J.mu);
	w->done = done;
	pthread_mutex_unlock(&J.mu);
}

static const char *plural(size_t n, const char *one, const char *many)
{
	return n == 1 ? one : many;
}

/* ------------------------------------------------------------------ */
/* the action worker */

struct tally {
	size_t ok, already, busy, missing, failed;
	char first_err[200];
};

static void tally_err(struct tally *t, const char *id, const char *err)
{
	t->failed++;
	if (t->first_err[0] == '\0')
		snprintf(t->first_err, sizeof(t->first_err), "%s: %s", id,
			 err != NULL ? err : "failed");
}

static void msg_op(struct q_spool *sp, enum job_kind kind, const char *id,
		   struct tally *t)
{
	const char *err = NULL;
	struct q_msg *m = NULL;
	struct q_env *env;
	char reason[128];
	int rc;

	if (!q_id_valid(id)) {
		t->missing++;
		return;
	}
	rc = q_msg_lock(sp, id, &m, &err);
	if (rc == Q_NOTFOUND) {
		t->missing++;
		return;
	}
	if (rc == Q_BUSY) {
		t->busy++;
		return;
	}
	if (rc < 0) {
		tally_err(t, id, err);
		return;
	}
	env = q_msg_env(m);
	switch (kind) {
	case JOB_FREEZE:
		if (env->flags & Q_ENV_FROZEN) {
			t->already++;
			break;
		}
		snprintf(reason, sizeof(reason), "by %s with qtop", J.user);
		if (q_msg_set_frozen(m, true, reason, &err) < 0) {
			tally_err(t, id, err);
			break;
		}
		q_msglog(sp, id, "frozen by qtop", NULL);
		q_log("%s frozen by %s (qtop)", id, J.user);
		t->ok++;
		break;
	case JOB_THAW:
		if (!(env->flags & Q_ENV_FROZEN)) {
			t->already++;
			break;
		}
		if (q_msg_set_frozen(m, false, NULL, &err) < 0) {
			tally_err(t, id, err);
			break;
		}
		q_msglog(sp, id, "thawed by qtop", NULL);
		q_log("%s thawed by %s (qtop)", id, J.user);
		t->ok++;
		break;
	case JOB_REMOVE:
		if (q_msg_remove(&m, &err) < 0) {
			tally_err(t, id, err);
			break;
		}
		q_log("%s removed by %s (qtop)", id, J.user);
		t->ok++;
		break;
	default:
		break;
	}
	if (m != NULL)
		q_msg_unlock(&m);
}

struct dom_ctx {
	const char *domain;
	char **ids;
	size_t n;
};

static bool has_domain(const char *domains, const char *want)
{
	size_t wl = strlen(want);
	const char *p = domains;

	while (p != NULL && *p != '\0') {
		const char *c = strchr(p, ',');
		size_t l = c != NULL ? (size_t)(c - p) : strlen(p);

		if (l == wl && strncasecmp(p, want, wl) == 0)
			return true;
		p = c != NULL ? c + 1 : NULL;
	}
	return false;
}

static int dom_fn(const struct q_index_rec *r, void *ctx)
{
	struct dom_ctx *d = ctx;
	char **v;

	if (!has_domain(r->domains, d->domain))
		return 0;
	if ((v = realloc(d->ids, (d->n + 2) * sizeof(*v))) == NULL)
		return -1;
	d->ids = v;
	if ((d->ids[d->n] = strdup(r->id)) == NULL)
		return -1;
	d->ids[++d->n] = NULL;
	return 0;
}

/* The messages waiting for a retry key (appended to *ids). */
static void key_waiting(struct q_spool *sp, struct q_hints *h, const char *key,
			char ***ids, size_t *n)
{
	struct rrow r;

	memset(&r, 0, sizeof(r));
	r.key = (char *)key;
	rrow_parse_key(&r);
	if (r.type == 'T' && r.host != NULL) {
		(void)q_wait_list(h, r.host, 0, ids, n, NULL);
	} else if (r.type == 'R' && r.host != NULL) {
		struct dom_ctx d = { .domain = r.host };

		(void)q_spool_list(sp, dom_fn, &d, NULL);
		for (size_t i = 0; i < d.n; i++) {
			char **v = realloc(*ids, (*n + 2) * sizeof(*v));

			if (v == NULL)
				qtop_oom();
			*ids = v;
			(*ids)[(*n)++] = d.ids[i];
			(*ids)[*n] = NULL;
		}
		free(d.ids);
	} else if (r.msgid != NULL) {
		char **v = realloc(*ids, (*n + 2) * sizeof(*v));

		if (v == NULL)
			qtop_oom();
		*ids = v;
		(*ids)[(*n)++] = r.msgid;
		(*ids)[*n] = NULL;
		r.msgid = NULL;
	}
	free(r.host);
	free(r.ip);
	free(r.msgid);
}

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void uniq_ids(char **ids, size_t *n)
{
	size_t k = 0;

	if (*n > 1)
		qsort(ids, *n, sizeof(*ids), cmp_strp);
	for (size_t i = 0; i < *n; i++) {
		if (k > 0 && strcmp(ids[i], ids[k - 1]) == 0)
			free(ids[i]);
		else
			ids[k++] = ids[i];
	}
	*n = k;
	if (ids != NULL)
		ids[k] = NULL;
}

/* Make a waiting message due now (next_try 0 in the index). */
static void make_due(struct q_spool *sp, struct q_hints *h, const char *id,
		     time_t now, struct tally *t)
{
	struct q_index_rec ir;
	struct q_msg *m = NULL;
	const char *err = NULL;
	int rc;

	memset(&ir, 0, sizeof(ir));
	if (q_index_get(h, id, &ir, NULL) == 0 && (ir.next_try == 0 || ir.next_try <= now)) {
		q_index_rec_clear(&ir);
		t->already++;           /* due already */
		return;
	}
	q_index_rec_clear(&ir);
	rc = q_msg_lock(sp, id, &m, &err);
	if (rc == Q_NOTFOUND) {
		t->missing++;
		return;
	}
	if (rc == Q_BUSY) {
		t->busy++;
		return;
	}
	if (rc < 0) {
		tally_err(t, id, err);
		return;
	}
	if (q_msg_commit(m, 0, &err) < 0)
		tally_err(t, id, err);
	else
		t->ok++;
	q_msg_unlock(&m);
}

static void run_retry(struct worker *w, struct q_spool *sp, struct job *j)
{
	struct q_hints *h = NULL;
	const char *err = NULL;
	size_t cleared = 0, missing = 0, failed = 0, nids = 0;
	char **ids = NULL, first_err[200] = "";
	struct tally t = { 0 };
	time_t now = time(NULL);

	if (q_spool_hints(sp, &h, &err) < 0) {
		result(true, "retry: %s", err);
		return;
	}
	for (size_t i = 0; i < j->n && !stopping(); i++) {
		int rc = q_retry_clear(h, j->items[i], &err);

		if (rc == Q_NOTFOUND) {
			missing++;
		} else if (rc < 0) {
			failed++;
			if (first_err[0] == '\0')
				snprintf(first_err, sizeof(first_err), "%s", err);
		} else {
			cleared++;
			q_log("retry record %s cleared by %s (qtop)", j->items[i], J.user);
		}
		if (j->kind == JOB_RETRY_NOW)
			key_waiting(sp, h, j->items[i], &ids, &nids);
		progress(w, i + 1);
	}
	if (j->kind == JOB_RETRY_DELETE) {
		result(failed > 0, "deleted %zu retry %s%s%s%s", cleared,
		       plural(cleared, "record", "records"),
		       missing > 0 ? " (some were already gone)" : "",
		       failed > 0 ? "; error: " : "", first_err);
		return;
	}
	uniq_ids(ids, &nids);
	for (size_t i = 0; i < nids && !stopping(); i++)
		make_due(sp, h, ids[i], now, &t);
	{
		struct q_buf b = { 0 };

		q_buf_printf(&b, "retry now: %zu %s cleared", cleared,
			     plural(cleared, "record", "records"));
		if (missing > 0)
			q_buf_printf(&b, " (%zu already gone)", missing);
		q_buf_printf(&b, "; %zu waiting %s made due", t.ok,
			     plural(t.ok, "message", "messages"));
		if (t.already > 0)
			q_buf_printf(&b, ", %zu due already", t.already);
		if (t.busy > 0)
			q_buf_printf(&b, ", %zu busy (being delivered)", t.busy);
		if (t.missing > 0)
			q_buf_printf(&b, ", %zu gone", t.missing);
		if (failed > 0 || t.failed > 0)
			q_buf_printf(&b, "; error: %s", failed > 0 ? first_err : t.first_err);
		else
			q_buf_printf(&b, "; the next queue run tries %s",
				     cleared + t.ok + t.already == 1 ? "it" : "them");
		result(failed > 0 || t.failed > 0, "%s", b.data != NULL ? b.data : "");
		q_buf_free(&b);
	}
	q_strv_free(&ids, nids);
}

static void run_msgs(struct worker *w, struct q_spool *sp, struct job *j)
{
	static const char *const done_verb[] = {
		[JOB_FREEZE] = "frozen", [JOB_THAW] = "thawed", [JOB_REMOVE] = "removed",
	};
	struct tally t = { 0 };
	size_t i;
	char more[400] = "";
	size_t l = 0;

	for (i = 0; i < j->n && !stopping(); i++) {
		msg_op(sp, j->kind, j->items[i], &t);
		if ((i & 63) == 0 || i + 1 == j->n)
			progress(w, i + 1);
	}
	if (t.already > 0)
		l += (size_t)snprintf(more + l, sizeof(more) - l, "; %zu %s", t.already,
				      j->kind == JOB_FREEZE ? "already frozen" : "not frozen");
	if (t.busy > 0 && l < sizeof(more))
		l += (size_t)snprintf(more + l, sizeof(more) - l,
				      "; %zu busy (being delivered): not changed", t.busy);
	if (t.missing > 0 && l < sizeof(more))
		l += (size_t)snprintf(more + l, sizeof(more) - l, "; %zu no longer on the queue",
				      t.missing);
	if (t.failed > 0 && l < sizeof(more))
		l += (size_t)snprintf(more + l, sizeof(more) - l, "; %zu failed: %s",
				      t.failed, t.first_err);
	if (i < j->n && l < sizeof(more))
		snprintf(more + l, sizeof(more) - l, "; stopped after %zu", i);
	if (t.ok == 1 && j->n == 1)
		result(t.failed > 0, "%s %s%s", j->items[0], done_verb[j->kind], more);
	else
		result(t.failed > 0 || t.busy > 0, "%s: %zu %s%s", done_verb[j->kind], t.ok,
		       plural(t.ok, "message", "messages"), more);
}

/* ------------------------------------------------------------------ */
/* the delivery worker */

static long json_num(const char *s, const char *name)
{
	char key[64];
	const char *p;

	snprintf(key, sizeof(key), "\"%s\":", name);
	p = strstr(s, key);
	return p != NULL ? strtol(p + strlen(key), NULL, 10) : -1;
}

/* Run one qrun over ids; reads its output into out. Returns its exit
 * status (128+signal), or -1 when it could not be started (errno). */
static int run_qrun(struct worker *w, char **ids, size_t n, struct q_buf *out)
{
	const char **argv = calloc(n + 8, sizeof(*argv));
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, def;
	int pfd[2], st, rc;
	size_t k = 0;
	pid_t pid;

	if (argv == NULL)
		qtop_oom();
	argv[k++] = J.qrun;
	if (J.conf_file != NULL) {
		argv[k++] = "-C";
		argv[k++] = J.conf_file;
	}
	argv[k++] = "--json";
	argv[k++] = "-M";
	for (size_t i = 0; i < n; i++)
		argv[k++] = ids[i];
	argv[k] = NULL;
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		free(argv);
		return -1;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
	/* no descriptor of ours (hints files, locks, the tty) leaks into it */
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
	posix_spawnattr_init(&at);
	sigemptyset(&none);
	sigemptyset(&def);
	sigaddset(&def, SIGINT);
	sigaddset(&def, SIGTERM);
	sigaddset(&def, SIGHUP);
	sigaddset(&def, SIGPIPE);
	sigaddset(&def, SIGWINCH);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &def);
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
				 POSIX_SPAWN_SETPGROUP);
	rc = posix_spawn(&pid, J.qrun, &fa, &at, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	free(argv);
	close(pfd[1]);
	if (rc != 0) {
		close(pfd[0]);
		errno = rc;
		return -1;
	}
	pthread_mutex_lock(&J.mu);
	w->qrun_pid = (long)pid;
	pthread_mutex_unlock(&J.mu);
	for (;;) {
		struct pollfd p = { .fd = pfd[0], .events = POLLIN };
		char buf[4096];
		ssize_t r;

		if (stopping()) {
			/* qtop is quitting: the delivery goes on without us */
			close(pfd[0]);
			return -2;
		}
		if (poll(&p, 1, 200) <= 0)
			continue;
		r = read(pfd[0], buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (out->len < QRUN_OUT_MAX && q_buf_add(out, buf, (size_t)r) < 0)
			qtop_oom();
	}
	close(pfd[0]);
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR) {
			st = 0;
			break;
		}
	}
	pthread_mutex_lock(&J.mu);
	w->qrun_pid = 0;
	pthread_mutex_unlock(&J.mu);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The last line of qrun's output that is not its JSON summary. */
static void last_text_line(const char *s, char *buf, size_t size)
{
	const char *p = s, *best = NULL;
	size_t bl = 0;

	buf[0] = '\0';
	while (p != NULL && *p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t l = nl != NULL ? (size_t)(nl - p) : strlen(p);

		if (l > 0 && p[0] != '{') {
			best = p;
			bl = l;
		}
		p = nl != NULL ? nl + 1 : NULL;
	}
	/* raw: the status line escapes what it shows */
	if (best != NULL)
		snprintf(buf, size, "%.*s", (int)bl, best);
}

static void run_deliver(struct worker *w, struct q_spool *sp, struct job *j)
{
	char **ids = NULL, lasterr[200] = "";
	size_t n = 0, nb;
	long sum[5] = { 0 };      /* completed, delivered, deferred, failed, busy */
	static const char *const names[5] = {
		"completed", "delivered", "deferred", "failed", "busy",
	};
	int worst = 0;

	if (j->kind == JOB_DELIVER_KEYS) {
		struct q_hints *h = NULL;
		const char *err = NULL;

		if (q_spool_hints(sp, &h, &err) < 0) {
			result(true, "deliver now: %s", err);
			return;
		}
		for (size_t i = 0; i < j->n; i++)
			key_waiting(sp, h, j->items[i], &ids, &n);
	} else {
		ids = j->items;
		n = j->n;
		j->items = NULL;
		j->n = 0;
	}
	uniq_ids(ids, &n);
	if (n == 0) {
		free(ids);
		result(false, "deliver now: no messages waiting");
		return;
	}
	nb = (n + DELIVER_BATCH - 1) / DELIVER_BATCH;
	pthread_mutex_lock(&J.mu);
	w->dlv = ids;
	w->ndlv = n;
	w->nbatch = nb;
	w->total = n;
	w->dlv_gen_seen = 0;
	w->dlv_gone = 0;
	pthread_mutex_unlock(&J.mu);

	for (size_t b = 0; b < nb && !stopping(); b++) {
		struct q_buf out = { 0 };
		size_t off = b * DELIVER_BATCH;
		size_t cnt = n - off < DELIVER_BATCH ? n - off : DELIVER_BATCH;
		int rc;

		pthread_mutex_lock(&J.mu);
		w->batch = b + 1;
		pthread_mutex_unlock(&J.mu);
		rc = run_qrun(w, ids + off, cnt, &out);
		if (rc == -2) {
			q_buf_free(&out);
			break;
		}
		if (rc == -1) {
			snprintf(lasterr, sizeof(lasterr), "cannot run %.120s: %s", J.qrun,
				 strerror(errno));
			worst = 127;
			q_buf_free(&out);
			break;
		}
		for (int k = 0; k < 5; k++) {
			long v = json_num(out.data != NULL ? out.data : "", names[k]);

			if (v > 0)
				sum[k] += v;
		}
		if (rc != 0) {
			worst = rc;
			last_text_line(out.data != NULL ? out.data : "", lasterr,
				       sizeof(lasterr));
		}
		q_buf_free(&out);
		progress(w, off + cnt);
		data_poke(false);
	}
	if (worst != 0)
		result(true, "deliver now: qrun failed (exit %d)%s%s", worst,
		       lasterr[0] ? ": " : "", lasterr);
	else
		result(sum[3] > 0, "deliver now: %zu %s, %ld completed; recipients: %ld "
		       "delivered, %ld deferred, %ld failed%s",
		       n, plural(n, "message", "messages"), sum[0], sum[1], sum[2], sum[3],
		       sum[4] > 0 ? "; some were busy (being delivered elsewhere)" : "");
	pthread_mutex_lock(&J.mu);
	w->dlv = NULL;
	w->ndlv = 0;
	pthread_mutex_unlock(&J.mu);
	q_strv_free(&ids, n);
}

/* ------------------------------------------------------------------ */
/* the threads */

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct q_spool *sp = NULL;
	const char *err = NULL;

	if (q_spool_open(J.spool_dir, 0, &sp, &err) < 0) {
		result(true, "%s: %s", w->name, err);
		sp = NULL;
	}
	pthread_mutex_lock(&J.mu);
	for (;;) {
		struct job *j;

		while (!J.stop && w->head == NULL)
			pthread_cond_wait(&J.cv, &J.mu);
		if (J.stop)
			break;
		j = w->head;
		w->head = j->next;
		if (w->head == NULL)
			w->tail = NULL;
		w->queued--;
		w->cur = j;
		w->done = 0;
		w->total = j->n;
		pthread_mutex_unlock(&J.mu);

		if (sp == NULL) {
			result(true, "the spool could not be opened; nothing done");
		} else {
			switch (j->kind) {
			case JOB_FREEZE:
			case JOB_THAW:
			case JOB_REMOVE:
				run_msgs(w, sp, j);
				break;
			case JOB_RETRY_NOW:
			case JOB_RETRY_DELETE:
				run_retry(w, sp, j);
				break;
			case JOB_DELIVER:
			case JOB_DELIVER_KEYS:
				run_deliver(w, sp, j);
				break;
			}
		}
		data_poke(true);
		pthread_mutex_lock(&J.mu);
		w->cur = NULL;
		pthread_mutex_unlock(&J.mu);
		job_free(j);
		pthread_mutex_lock(&J.mu);
	}
	while (w->head != NULL) {
		struct job *j = w->head;

		w->head = j->next;
		job_free(j);
	}
	w->tail = NULL;
	pthread_mutex_unlock(&J.mu);
	q_spool_close(&sp);
	return NULL;
}

static void find_qrun(const char *qtop_path)
{
	char self[PATH_MAX - 32] = "", *slash;
	const char *path;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n > 0)
		self[n] = '\0';
	else if (qtop_path != NULL && strchr(qtop_path, '/') != NULL)
		snprintf(self, sizeof(self), "%s", qtop_path);
	if ((slash = strrchr(self, '/')) != NULL) {
		*slash = '\0';
		/* the build tree (tui/qtop, bin/qrun); an install where
		   bindir and sbindir share a prefix */
		snprintf(J.qrun, sizeof(J.qrun), "%s/../bin/qrun", self);
		if (access(J.qrun, X_OK) == 0)
			return;
		snprintf(J.qrun, sizeof(J.qrun), "%s/../sbin/qrun", self);
		if (access(J.qrun, X_OK) == 0)
			return;
	}
#ifdef SBINDIR
	snprintf(J.qrun, sizeof(J.qrun), "%s/qrun", SBINDIR);
	if (access(J.qrun, X_OK) == 0)
		return;
#endif
	path = getenv("PATH");
	while (path != NULL && *path != '\0') {
		const char *c = strchr(path, ':');
		size_t l = c != NULL ? (size_t)(c - path) : strlen(path);

		if (l > 0 && l < sizeof(J.qrun) - 8) {
			snprintf(J.qrun, sizeof(J.qrun), "%.*s/qrun", (int)l, path);
			if (access(J.qrun, X_OK) == 0)
				return;
		}
		path = c != NULL ? c + 1 : NULL;
	}
	snprintf(J.qrun, sizeof(J.qrun), "qrun");
}

const char *jobs_qrun_path(void)
{
	return J.qrun;
}

int jobs_start(const char *spool_dir, const char *conf_file,
	       const char *qtop_path, const char **error_r)
{
	const struct passwd *pw = getpwuid(getuid());

	snprintf(J.user, sizeof(J.user), "%s", pw != NULL ? pw->pw_name : "unknown");
	J.spool_dir = strdup(spool_dir);
	J.conf_file = conf_file != NULL ? strdup(conf_file) : NULL;
	if (J.spool_dir == NULL || (conf_file != NULL && J.conf_file == NULL))
		qtop_oom();
	find_qrun(qtop_path);
	(void)q_log_open(spool_dir, false, NULL);
	J.act.name = "actions";
	J.dlv.name = "deliver now";
	if (pthread_create(&J.act.th, NULL, worker_main, &J.act) != 0) {
		*error_r = "cannot start a worker thread";
		return -1;
	}
	J.act.running = true;
	if (pthread_create(&J.dlv.th, NULL, worker_main, &J.dlv) != 0) {
		*error_r = "cannot start a worker thread";
		return -1;
	}
	J.dlv.running = true;
	return 0;
}

void jobs_stop(void)
{
	pthread_mutex_lock(&J.mu);
	J.stop = true;
	pthread_cond_broadcast(&J.cv);
	pthread_mutex_unlock(&J.mu);
	if (J.act.running)
		pthread_join(J.act.th, NULL);
	if (J.dlv.running)
		pthread_join(J.dlv.th, NULL);
	J.act.running = J.dlv.running = false;
	q_log_close();
	free(J.spool_dir);
	free(J.conf_file);
	J.spool_dir = J.conf_file = NULL;
}

void jobs_submit(enum job_kind kind, char **items, size_t n)
{
	struct job *j = calloc(1, sizeof(*j));
	struct worker *w = kind == JOB_DELIVER || kind == JOB_DELIVER_KEYS ? &J.dlv
									     : &J.act;

	if (j == NULL)
		qtop_oom();
	j->kind = kind;
	j->items = items;
	j->n = n;
	pthread_mutex_lock(&J.mu);
	if (w->tail != NULL)
		w->tail->next = j;
	else
		w->head = j;
	w->tail = j;
	w->queued++;
	pthread_cond_broadcast(&J.cv);
	pthread_mutex_unlock(&J.mu);
}

static const char *doing(enum job_kind k)
{
	switch (k) {
	case JOB_FREEZE: return "freezing";
	case JOB_THAW: return "thawing";
	case JOB_REMOVE: return "removing";
	case JOB_RETRY_NOW: return "retry now";
	case JOB_RETRY_DELETE: return "deleting retry records";
	default: return "deliver now";
	}
}

bool jobs_progress(const struct qsnap *q, char *buf, size_t size)
{
	size_t l = 0;
	bool busy = false;

	buf[0] = '\0';
	pthread_mutex_lock(&J.mu);
	if (J.act.cur != NULL) {
		l += (size_t)snprintf(buf + l, size - l, "%s: %zu/%zu",
				      doing(J.act.cur->kind), J.act.done, J.act.total);
		busy = true;
	}
	if (J.act.queued > 0 && l < size)
		l += (size_t)snprintf(buf + l, size - l, "%s%zu action%s queued",
				      busy ? ", " : "", J.act.queued,
				      J.act.queued == 1 ? "" : "s");
	busy = busy || J.act.queued > 0;
	if (J.dlv.cur != NULL && J.dlv.dlv != NULL && l < size) {
		struct worker *w = &J.dlv;

		if (q != NULL && q->gen != w->dlv_gen_seen) {
			size_t gone = 0;

			for (size_t i = 0; i < w->ndlv; i++)
				if (qsnap_find(q, w->dlv[i]) == NULL)
					gone++;
			w->dlv_gone = gone;
			w->dlv_gen_seen = q->gen;
		}
		l += (size_t)snprintf(buf + l, size - l,
				      "%sdeliver now: %zu/%zu left the queue; qrun %zu/%zu",
				      busy ? "; " : "", w->dlv_gone, w->ndlv, w->batch,
				      w->nbatch);
		if (w->qrun_pid != 0 && l < size)
			l += (size_t)snprintf(buf + l, size - l, " running (pid %ld)",
					      w->qrun_pid);
		busy = true;
	} else if (J.dlv.cur != NULL && l < size) {
		l += (size_t)snprintf(buf + l, size - l, "%sdeliver now: looking up messages",
				      busy ? "; " : "");
		busy = true;
	}
	if (J.dlv.queued > 0 && l < size)
		snprintf(buf + l, size - l, " (+%zu queued)", J.dlv.queued);
	busy = busy || J.dlv.queued > 0;
	pthread_mutex_unlock(&J.mu);
	return busy;
}

bool jobs_result(char *buf, size_t size, bool *error_r)
{
	bool got = false;

	pthread_mutex_lock(&J.mu);
	if (J.nres > 0) {
		snprintf(buf, size, "%s", J.res[0].text);
		*error_r = J.res[0].error;
		memmove(&J.res[0], &J.res[1], sizeof(J.res[0]) * (NRESULTS - 1));
		J.nres--;
		got = true;
	}
	pthread_mutex_unlock(&J.mu);
	return got;
}

bool jobs_delivering(const char *id)
{
	bool found = false;

	pthread_mutex_lock(&J.mu);
	if (J.dlv.dlv != NULL) {
		size_t lo = 0, hi = J.dlv.ndlv;

		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			int c = strcmp(J.dlv.dlv[mid], id);

			if (c == 0) {
				found = true;
				break;
			}
			if (c < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
	}
	pthread_mutex_unlock(&J.mu);
	return found;
}
