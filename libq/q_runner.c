/*
 * q_runner.c - a queue run (see q/runner.h for the two phases).
 *
 * Owns: the in-memory plan of one run (messages, destinations, jobs), the
 * worker threads, the use of retry records per IP, serialization slots,
 * the live-session records, and the decisions deliver / defer / fail /
 * fallback / bounce for every recipient it touches.
 *
 * Invariants:
 * - A recipient's result is journaled before the next command goes out
 *   on that connection; a message is committed (or removed) only after
 *   every job of it in this run has finished.
 * - A message is locked only while one of its jobs runs (so open files
 *   stay bounded by the number of workers, not by the queue size).
 * - A job whose transaction never reached the final dot on a connection
 *   that broke is sent again on a new connection (nothing was accepted);
 *   once the final dot went out, a lost reply defers (SMTP cannot tell).
 * - An IP that fails - at connect, greeting or TLS, or later: timeout,
 *   lost connection, protocol error, 421 - gets its retry record and is
 *   not tried again in this run (not even with -f); a reused connection
 *   that the server dropped between messages is not such a failure.
 * - Until one transaction to a destination has gone through in this run,
 *   only one worker connects to it: a dead or stalling host costs one
 *   connection attempt per IP, not one per worker.
 * - A recipient delivered after a 4xx loses its address retry record.
 * - RCPT refused for the server's recipient limit (452, or 552 X.5.3,
 *   after the server took others of the transaction, which went
 *   through) decides nothing: those recipients go first on the
 *   destination's queue as a smaller job, so the same connection sends
 *   them next, and that connection asks for no more than it took.
 * - Retry times as Exim: an IP not due is skipped (and not counted towards
 *   hosts_max_try) unless the message is older than the rule's cutoff;
 *   past the final cutoff of every IP the recipients bounce, at once with
 *   delay_after_cutoff, after one more try of an IP not tried since the
 *   message arrived without it. Weak: the choice is made for the first
 *   message of a destination and applies to every message of it in the
 *   run.
 * - Journal entries are written without fdatasync (one write per SMTP
 *   transaction). Completed messages go to the spool's reaper threads;
 *   with journal_sync (the default) the spool's syncer makes the removals
 *   durable together, one syncfs about every 100 ms after the reapers
 *   have done the removals queued so far (group commit; the workers never
 *   wait for it), and a message that stays has its -H rewritten with
 *   fsync. Without it the run syncs once at the end. Either way a power
 *   loss can at worst repeat a delivery, never lose a message: messages
 *   are only removed after their recipients are journaled.
 *
 * Costs: phase 1 is O(messages + domains) with one route lookup per
 * domain; the destination pick is O(destinations) under one mutex, which
 * is fine for the hundreds of destinations of a run, weak for 100,000.
 */
#include "config.h"
#include "q_private.h"
#include "q/runner.h"
#include "q/spool.h"
#include "q/hints.h"
#include "q/retry.h"
#include "q/conf.h"
#include "q/route.h"
#include "q/smtp.h"
#include "q/log.h"
#include "q/addr.h"
#include "q_spool-private.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_REQUEUE 3          /* a job re-sent after a broken connection */
#define TIMED_OUT " (retry timeout exceeded)"  /* after a failure's text */
#define SESS_EVERY_MS 200      /* live-session writes for per-message states */
#define JOIN_MIN_JOBS 32       /* jobs waiting per connection before another opens */

struct run;

struct mstate {                /* one message of this run */
	char id[Q_ID_LEN + 1];
	time_t arrival;
	unsigned jobs_left;    /* jobs of this run not yet finished */
	unsigned active;       /* jobs running now */
	struct q_msg *msg;     /* locked while active > 0 */
	time_t next_try;       /* earliest retry time seen; 0 = none */
	size_t *failed;        /* recipients failed in this run (bounce) */
	size_t nfailed;
	bool busy;             /* locked by another process: skipped */
	bool counted;
	struct job *fbjob;     /* this message's job on the fallback hosts */
	struct q_buf mlog;     /* msglog lines not written yet */
	pthread_mutex_t mu;
};

struct job {
	struct mstate *m;
	size_t *rcpt;          /* indices into the envelope */
	char **addr;           /* the addresses (from the index), same order */
	size_t n;
	unsigned requeued;
	struct dest *primary;  /* for fallback jobs: where they came from */
	struct job *next;
};

struct dest {
	char *sig;             /* what makes two routes the same host list */
	struct q_hostlist_r hosts;
	bool fallback;
	bool serialized;
	unsigned limit;        /* max parallel connections; 0 = any */
	unsigned active;
	struct job *head, *tail;
	size_t njobs;
	int route_status;      /* 0 routed; Q_ROUTE_TEMPORARY/PERMANENT: no hosts */
	char *route_error;
	char *route_domain;
	bool mx;               /* routed through DNS MX (fallback rule) */
	bool down;             /* every host failed: defer the rest */
	struct q_smtp_err down_err;
	time_t down_next;
	bool down_expired;
	bool proven;           /* a transaction on it went through in this run:
				  until then one worker at a time tries it */
	bool *hfail;           /* hosts.n flags: this IP failed in this run */
	struct q_smtp_err *herr;  /* and how (hosts.n entries) */
	struct dest *next;
};

struct domroute {              /* routing result, cached per domain per run */
	char *domain;
	struct dest *dest;     /* never NULL once made */
	struct domroute *next;
};

struct cand {                  /* a due message, copied out of the index */
	char id[Q_ID_LEN + 1];
	time_t arrival;
	char *rcpts;
};

struct run {
	struct q_spool *spool;
	struct q_hints *hints;
	const struct q_conf *conf;
	const struct q_run_opts *o;
	struct q_run_stats *st;
	struct q_tls_ctx *tls;
	time_t now;
	pthread_mutex_t mu;    /* dests and their queues, stats, working */
	pthread_cond_t cv;
	struct dest *dests;
	struct dest *fallback; /* NULL without fallback_hosts */
	struct domroute *routes;
	struct mstate **msgs;
	size_t nmsgs, capmsgs;
	struct cand *cands;
	size_t ncands, capcands;
	unsigned working;      /* workers on primary destinations */
	unsigned next_worker;
	int fatal;             /* a worker met an error that stops the run */
	char fatal_text[512];
	/* the session flusher: writes live-session records that were
	   throttled (see sess_update) once they are SESS_EVERY_MS old */
	struct worker *ws;
	unsigned nws;
	pthread_mutex_t fmu;
	pthread_cond_t fcv;
	bool fstop;
	bool flusher;          /* running; without it nothing is throttled */
};

/* ---------------------------------------------------------------- */

static void vlog(struct run *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void vlog(struct run *r, const char *fmt, ...)
{
	if (r->o->verbose == NULL)
		return;
	char tmp[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	struct q_buf e = {0};
	if (q_escape_term(&e, tmp, strlen(tmp), true) == 0) {
		flockfile(r->o->verbose);
		fputs(e.data ? e.data : "", r->o->verbose);
		fputc('\n', r->o->verbose);
		fflush(r->o->verbose);
		funlockfile(r->o->verbose);
	}
	q_buf_free(&e);
}

static bool stopping(const struct run *r)
{
	return (r->o->stop != NULL && *r->o->stop != 0) || r->fatal;
}

static void stat_add(struct run *r, size_t *field, size_t n)
{
	(void)r;   /* counters only: no lock (r->mu is busy enough) */
	__atomic_fetch_add(field, n, __ATOMIC_RELAXED);
}

static void set_fatal(struct run *r, const char *text)
{
	pthread_mutex_lock(&r->mu);
	if (!r->fatal) {
		r->fatal = 1;
		snprintf(r->fatal_text, sizeof(r->fatal_text), "%s", text);
	}
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

/* ---- the queue-run lock (queue_run_max) ---- */

static int run_lock(struct run *r, int *fd_r, const char **error_r)
{
	unsigned max = r->conf->queue_run_max ? r->conf->queue_run_max : 1;
	char path[4096];
	for (unsigned i = 0; i < max; i++) {
		snprintf(path, sizeof(path), "%s/db/run.%u.lock",
			 q_spool_dir(r->spool), i);
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0)
			return q_err(error_r, "open %s: %s", path, strerror(errno));
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			*fd_r = fd;
			return 0;
		}
		close(fd);
	}
	return Q_BUSY;
}

/* ---- phase 1: the plan ---- */

static struct mstate *mstate_new(struct run *r, const char *id, time_t arrival)
{
	if (r->nmsgs == r->capmsgs) {
		size_t cap = r->capmsgs ? r->capmsgs * 2 : 256;
		struct mstate **v = realloc(r->msgs, cap * sizeof(*v));
		if (v == NULL)
			return NULL;
		r->msgs = v;
		r->capmsgs = cap;
	}
	struct mstate *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return NULL;
	memcpy(m->id, id, Q_ID_LEN + 1);
	m->arrival = arrival;
	pthread_mutex_init(&m->mu, NULL);
	r->msgs[r->nmsgs++] = m;
	return m;
}

static void job_free(struct job *j)
{
	if (j == NULL)
		return;
	for (size_t i = 0; i < j->n; i++)
		free(j->addr[i]);
	free(j->addr);
	free(j->rcpt);
	free(j);
}

static int job_add_rcpt(struct job *j, size_t idx, const char *addr)
{
	size_t *nr = realloc(j->rcpt, (j->n + 1) * sizeof(*nr));
	if (nr == NULL)
		return -1;
	j->rcpt = nr;
	char **na = realloc(j->addr, (j->n + 1) * sizeof(*na));
	if (na == NULL)
		return -1;
	j->addr = na;
	if ((j->addr[j->n] = strdup(addr)) == NULL)
		return -1;
	j->rcpt[j->n] = idx;
	j->n++;
	return 0;
}

static void dest_push(struct dest *d, struct job *j)
{
	j->next = NULL;
	if (d->tail)
		d->tail->next = j;
	else
		d->head = j;
	d->tail = j;
	d->njobs++;
}

static void dest_push_front(struct dest *d, struct job *j)
{
	j->next = d->head;
	d->head = j;
	if (d->tail == NULL)
		d->tail = j;
	d->njobs++;
}

static struct job *dest_pop(struct dest *d)
{
	struct job *j = d->head;
	if (j) {
		d->head = j->next;
		if (d->head == NULL)
			d->tail = NULL;
		d->njobs--;
		j->next = NULL;
	}
	return j;
}

static char *hosts_sig(const struct q_hostlist_r *hl, bool fallback)
{
	struct q_buf b = {0};
	if (q_buf_adds(&b, fallback ? "F|" : "P|") < 0)
		return NULL;
	for (size_t i = 0; i < hl->n; i++)
		if (q_buf_printf(&b, "%s/%s/%u,", hl->h[i].name, hl->h[i].ip,
				 hl->h[i].port) < 0) {
			q_buf_free(&b);
			return NULL;
		}
	return b.data;
}

static struct dest *dest_new(struct run *r)
{
	struct dest *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	d->next = r->dests;
	r->dests = d;
	return d;
}

/* Find or make the destination for a host list; takes hl's contents. */
static struct dest *dest_for_hosts(struct run *r, struct q_hostlist_r *hl,
				   bool fallback)
{
	char *sig = hosts_sig(hl, fallback);
	if (sig == NULL)
		return NULL;
	for (struct dest *d = r->dests; d; d = d->next)
		if (d->sig && strcmp(d->sig, sig) == 0) {
			free(sig);
			q_route_free(hl);
			return d;
		}
	struct dest *d = dest_new(r);
	if (d == NULL) {
		free(sig);
		return NULL;
	}
	d->sig = sig;
	d->hosts = *hl;
	memset(hl, 0, sizeof(*hl));
	d->fallback = fallback;
	d->hfail = calloc(d->hosts.n ? d->hosts.n : 1, sizeof(*d->hfail));
	d->herr = calloc(d->hosts.n ? d->hosts.n : 1, sizeof(*d->herr));
	if (d->hfail == NULL || d->herr == NULL)
		return NULL;      /* freed with the run's dests */
	for (size_t i = 0; i < d->hosts.n; i++) {
		if (d->hosts.h[i].from_mx)
			d->mx = true;
		if (q_hostlist_match(&r->conf->serialize_hosts, d->hosts.h[i].name,
				     d->hosts.h[i].ip))
			d->serialized = true;
	}
	if (d->serialized)
		d->limit = r->conf->serialize_max ? r->conf->serialize_max : 1;
	return d;
}

static struct dest *route_domain(struct run *r, const char *domain)
{
	for (struct domroute *dr = r->routes; dr; dr = dr->next)
		if (strcasecmp(dr->domain, domain) == 0)
			return dr->dest;
	struct domroute *dr = calloc(1, sizeof(*dr));
	if (dr == NULL)
		return NULL;
	if ((dr->domain = strdup(domain)) == NULL) {
		free(dr);
		return NULL;
	}
	dr->next = r->routes;
	r->routes = dr;

	/* a routing retry record that is not due defers without a lookup */
	struct q_buf key = {0};
	struct q_retry_rec rec = {0};
	const char *err = NULL;
	bool wait_route = false;
	if (q_retry_key_route(&key, domain) == 0 &&
	    q_retry_get(r->hints, key.data, &rec, &err) == 0 &&
	    !r->o->force && r->o->nids == 0 && !q_retry_due(&rec, r->now))
		wait_route = true;

	struct q_hostlist_r hl = {0};
	int ret = wait_route ? Q_ROUTE_TEMPORARY
		: q_route_domain(r->conf, domain, &hl, &err);
	if (ret == 0 && hl.n > 0) {
		dr->dest = dest_for_hosts(r, &hl, false);
		if (rec.first_failed != 0)
			(void)q_retry_clear(r->hints, key.data, NULL);
	} else {
		q_route_free(&hl);
		struct dest *d = dest_new(r);
		if (d != NULL) {
			d->route_status = ret == 0 ? Q_ROUTE_PERMANENT : ret;
			d->route_domain = strdup(domain);
			d->route_error = strdup(wait_route ? "routing retry time not reached"
						: err ? err : "no hosts");
			if (ret == Q_ROUTE_TEMPORARY && !wait_route) {
				struct q_retry_rec nrec = {0};
				const struct q_retry_rule *rule = q_retry_find_rule(
					r->conf->retry, r->conf->nretry, NULL, domain,
					"lookup", 0);
				(void)q_retry_fail(r->hints, key.data, rule,
						   r->conf->retry_interval_max, "lookup",
						   0, 0, d->route_error, r->now, &nrec,
						   NULL);
				d->down_next = nrec.next_try;
				d->down_expired = nrec.expired;
				q_retry_rec_clear(&nrec);
			} else if (wait_route) {
				d->down_next = rec.next_try;
				d->down_expired = rec.expired;
			}
		}
		dr->dest = d;
	}
	q_retry_rec_clear(&rec);
	q_buf_free(&key);
	return dr->dest;
}

static bool wanted_id(const struct run *r, const char *id)
{
	if (r->o->nids == 0)
		return true;
	for (size_t i = 0; i < r->o->nids; i++)
		if (strcmp(r->o->ids[i], id) == 0)
			return true;
	return false;
}

static bool has_domain(const char *domains, const char *want)
{
	size_t wl = strlen(want);
	const char *p = domains;
	while (p != NULL && *p) {
		const char *c = strchr(p, ',');
		size_t l = c ? (size_t)(c - p) : strlen(p);
		if (l == wl && strncasecmp(p, want, wl) == 0)
			return true;
		p = c ? c + 1 : NULL;
	}
	return false;
}

/* Does an index record's recipient list ("S addr" lines) hold a
 * recipient whose bounce is owed? */
static bool has_owed(const char *rcpts)
{
	for (const char *p = rcpts; p && *p;) {
		if (p[0] == Q_RCPT_FAILED_OWED && p[1] == ' ')
			return true;
		p = strchr(p, '\n');
		p = p ? p + 1 : NULL;
	}
	return false;
}

/* q_spool_list callback: copy out what is due (routing happens after the
 * walk, so no lookup runs while the index is being read). */
static int collect(const struct q_index_rec *rec, void *ctx)
{
	struct run *r = ctx;
	bool named = r->o->nids > 0;

	if (!wanted_id(r, rec->id))
		return 0;
	if ((rec->flags & Q_ENV_FROZEN) && !r->o->thaw && !named)
		return 0;
	if (!r->o->force && !named && rec->next_try > r->now)
		return 0;
	if (r->o->domain && !has_domain(rec->domains, r->o->domain))
		return 0;
	if (rec->rcpts == NULL ||
	    (rec->npending == 0 && !has_owed(rec->rcpts)))
		return 0;
	if (r->ncands == r->capcands) {
		size_t cap = r->capcands ? r->capcands * 2 : 1024;
		struct cand *v = realloc(r->cands, cap * sizeof(*v));
		if (v == NULL)
			return -1;
		r->cands = v;
		r->capcands = cap;
	}
	struct cand *c = &r->cands[r->ncands];
	memcpy(c->id, rec->id, Q_ID_LEN + 1);
	c->arrival = rec->arrival;
	if ((c->rcpts = strdup(rec->rcpts)) == NULL)
		return -1;
	r->ncands++;
	return 0;
}

static void owe_earlier(struct mstate *m);
static void msg_finish(struct run *r, struct mstate *m);

/* Turn one due message into jobs: pending recipients grouped by
 * destination, split by max_rcpt. */
static int plan_msg(struct run *r, const struct cand *c)
{
	unsigned max_rcpt = r->conf->max_rcpt ? r->conf->max_rcpt : 100;
	struct mstate *m = mstate_new(r, c->id, c->arrival);
	if (m == NULL)
		return -1;
	struct job *open_jobs[16];
	struct dest *open_dest[16];
	size_t nopen = 0;
	size_t idx = 0;
	const char *p = c->rcpts;

	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t l = nl ? (size_t)(nl - p) : strlen(p);
		if (l > 2 && p[0] == 'P' && p[1] == ' ' && l - 2 < 512) {
			char addr[512];
			memcpy(addr, p + 2, l - 2);
			addr[l - 2] = '\0';
			const char *domain = q_addr_domain(addr);
			bool skip = r->o->domain != NULL && r->o->nids == 0 &&
				    strcasecmp(domain, r->o->domain) != 0;
			if (!skip) {
				struct dest *d = route_domain(r, domain);
				if (d == NULL)
					return -1;
				size_t k;
				for (k = 0; k < nopen; k++)
					if (open_dest[k] == d)
						break;
				if (k < nopen && open_jobs[k]->n >= max_rcpt) {
					dest_push(d, open_jobs[k]);
					open_jobs[k] = open_jobs[--nopen];
					open_dest[k] = open_dest[nopen];
					k = nopen;
				}
				if (k == nopen) {
					if (nopen == 16) {
						dest_push(open_dest[0], open_jobs[0]);
						open_jobs[0] = open_jobs[--nopen];
						open_dest[0] = open_dest[nopen];
						k = nopen;
					}
					struct job *j = calloc(1, sizeof(*j));
					if (j == NULL)
						return -1;
					j->m = m;
					m->jobs_left++;
					open_jobs[k] = j;
					open_dest[k] = d;
					nopen++;
				}
				if (job_add_rcpt(open_jobs[k], idx, addr) < 0)
					return -1;
			}
		}
		idx++;
		p = nl ? nl + 1 : p + l;
	}
	for (size_t k = 0; k < nopen; k++)
		dest_push(open_dest[k], open_jobs[k]);
	if (m->jobs_left == 0 && has_owed(c->rcpts)) {
		/* nothing left to deliver, but a bounce owed from an earlier
		   run: queue it now, then the message can go */
		const char *err = NULL;
		pthread_mutex_lock(&m->mu);
		if (q_msg_lock(r->spool, m->id, &m->msg, &err) == 0) {
			stat_add(r, &r->st->messages, 1);
			m->counted = true;
			owe_earlier(m);
			msg_finish(r, m);
		} else {
			m->msg = NULL;
		}
		pthread_mutex_unlock(&m->mu);
	}
	return 0;
}

/* Record (host, id) in the wait hints for every routed job, so that other
 * runs (and qtop) see which messages wait for which host. */
static void plan_wait_hints(struct run *r)
{
	struct q_hints_item *it = NULL;
	size_t cap = 0;

	for (struct dest *d = r->dests; d; d = d->next) {
		if (d->route_status || d->hosts.n == 0)
			continue;
		const char *host = d->hosts.h[0].name;
		size_t n = 0;
		for (struct job *j = d->head; j; j = j->next) {
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 256;
				struct q_hints_item *v = realloc(it, nc * sizeof(*v));
				if (v == NULL)
					break;
				it = v;
				cap = nc;
			}
			it[n++] = (struct q_hints_item){ Q_HINTS_BPUT, host,
				j->m->id, strlen(host), strlen(j->m->id) };
		}
		/* one transaction per Q_HINTS_BATCH_MAX pairs, not per pair */
		(void)q_hints_batch(r->hints, Q_DB_WAIT, it, n, NULL);
	}
	free(it);
}

/* ---- phase 2: delivering ---- */

#define WDEL_MAX 64

struct worker {
	struct run *r;
	unsigned num;
	pthread_mutex_t smu;    /* sess*: the session flusher reads them */
	struct q_session_rec sess;
	bool sess_live;
	bool sess_dirty;        /* changed, not written yet (throttled) */
	long long sess_put_ms;  /* when the record was last written */
	/* wait-list pairs of jobs tried, deleted in one transaction */
	struct q_hints_item wdel[WDEL_MAX];
	char wid[WDEL_MAX][Q_ID_LEN + 1];
	size_t nwdel;
};

static void wdel_flush(struct worker *w)
{
	if (w->nwdel > 0)
		(void)q_hints_batch(w->r->hints, Q_DB_WAIT, w->wdel, w->nwdel, NULL);
	w->nwdel = 0;
}

/* The job was tried at the host: it no longer waits for it. */
static void wdel_add(struct worker *w, const char *host, const char *id)
{
	if (w->nwdel == WDEL_MAX)
		wdel_flush(w);
	snprintf(w->wid[w->nwdel], sizeof(w->wid[0]), "%s", id);
	w->wdel[w->nwdel] = (struct q_hints_item){ Q_HINTS_BDEL, host,
		w->wid[w->nwdel], strlen(host), strlen(w->wid[w->nwdel]) };
	w->nwdel++;
}

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A new session record for a connection about to be made. */
static void sess_begin(struct worker *w, const struct q_host *h, unsigned port)
{
	pthread_mutex_lock(&w->smu);
	q_session_rec_clear(&w->sess);
	w->sess.pid = (long)getpid();
	w->sess.worker = w->num;
	(void)q_boot_id(w->sess.boot_id, sizeof(w->sess.boot_id), NULL);
	w->sess.host = strdup(h->name);
	w->sess.ip = strdup(h->ip);
	w->sess.port = port;
	w->sess.started = time(NULL);
	pthread_mutex_unlock(&w->smu);
}

static void sess_update(struct worker *w, const char *state, const char *msgid,
			struct q_smtp_conn *c)
{
	pthread_mutex_lock(&w->smu);
	struct q_session_rec *s = &w->sess;
	free(s->state);
	s->state = strdup(state);
	free(s->msgid);
	s->msgid = msgid ? strdup(msgid) : NULL;
	if (c != NULL) {
		const char *tls = q_smtp_tls_info(c);
		if ((tls == NULL) != (s->tls == NULL) ||
		    (tls && strcmp(tls, s->tls) != 0)) {
			free(s->tls);
			s->tls = tls ? strdup(tls) : NULL;
		}
		s->bytes = q_smtp_bytes_out(c);
		s->msgs = q_smtp_msgs(c);
	}
	s->changed = time(NULL);
	/* Per-message states ("mail", "idle") come thousands of times a
	 * second on a fast connection; the record (a hints transaction) is
	 * written for them at most every SESS_EVERY_MS: a newer state is
	 * left dirty and the session flusher writes it once the last write
	 * is that old, so what qtop and qctl sessions show (a slow message
	 * included) is never much older. Connection states are always
	 * written. */
	long long now_ms = mono_ms();
	bool per_msg = strcmp(state, "mail") == 0 || strcmp(state, "idle") == 0;
	if (per_msg && w->sess_live && w->r->flusher &&
	    now_ms - w->sess_put_ms < SESS_EVERY_MS) {
		w->sess_dirty = true;
	} else if (q_session_put(w->r->hints, s, NULL) == 0) {
		w->sess_live = true;
		w->sess_dirty = false;
		w->sess_put_ms = now_ms;
	}
	pthread_mutex_unlock(&w->smu);
}

static void sess_end(struct worker *w)
{
	pthread_mutex_lock(&w->smu);
	if (w->sess_live)
		(void)q_session_del(w->r->hints, w->sess.pid, w->sess.worker, NULL);
	w->sess_live = false;
	w->sess_dirty = false;
	q_session_rec_clear(&w->sess);
	pthread_mutex_unlock(&w->smu);
}

/* The session flusher thread: every SESS_EVERY_MS / 2, the throttled
 * records that are due. */
static void *sess_flusher(void *arg)
{
	struct run *r = arg;
	pthread_mutex_lock(&r->fmu);
	while (!r->fstop) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += (long)SESS_EVERY_MS / 2 * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		(void)pthread_cond_timedwait(&r->fcv, &r->fmu, &until);
		if (r->fstop)
			break;
		pthread_mutex_unlock(&r->fmu);
		long long now_ms = mono_ms();
		for (unsigned i = 0; i < r->nws; i++) {
			struct worker *w = &r->ws[i];
			pthread_mutex_lock(&w->smu);
			if (w->sess_dirty && w->sess_live &&
			    now_ms - w->sess_put_ms >= SESS_EVERY_MS &&
			    q_session_put(r->hints, &w->sess, NULL) == 0) {
				w->sess_dirty = false;
				w->sess_put_ms = now_ms;
			}
			pthread_mutex_unlock(&w->smu);
		}
		pthread_mutex_lock(&r->fmu);
	}
	pthread_mutex_unlock(&r->fmu);
	return NULL;
}

static const struct q_retry_rule *rule_for(struct run *r, const char *host,
					   const char *domain, const char *kind,
					   int code)
{
	return q_retry_find_rule(r->conf->retry, r->conf->nretry, host, domain,
				 kind, code);
}

/* A line for the main log now, and for the message's own log (msglog)
 * if the message stays on the queue: lines are kept with the message
 * (m->mu held) and written at its commit only when something is left, so
 * a delivered message never creates a msglog file. */
static void mlog(struct run *r, struct mstate *m, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void mlog(struct run *r, struct mstate *m, const char *fmt, ...)
{
	char tmp[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	q_log("%s %s", m->id, tmp);
	(void)q_buf_adds(&m->mlog, tmp);
	(void)q_buf_addc(&m->mlog, '\n');
	vlog(r, "%s %s", m->id, tmp);
}

/* Does a failure of this message owe its sender a bounce? */
static bool bounce_due(const struct q_env *env)
{
	return env->sender != NULL && env->sender[0] != '\0' &&
	       !(env->flags & Q_ENV_BOUNCE);
}

static void owe_bounce(struct mstate *m, size_t idx);

/* Remember every recipient of the locked message whose bounce an
 * earlier run owes (killed before it queued it, or unable to): this run
 * queues it (m->mu held). */
static void owe_earlier(struct mstate *m)
{
	const struct q_env *env = q_msg_env(m->msg);
	for (size_t i = 0; i < env->nrcpt; i++)
		if (env->rcpt[i].state == Q_RCPT_FAILED_OWED)
			owe_bounce(m, i);
}

/* Remember a recipient whose bounce is owed (m->mu held), once. */
static void owe_bounce(struct mstate *m, size_t idx)
{
	for (size_t i = 0; i < m->nfailed; i++)
		if (m->failed[i] == idx)
			return;
	size_t *v = realloc(m->failed, (m->nfailed + 1) * sizeof(*v));
	if (v != NULL) {
		m->failed = v;
		m->failed[m->nfailed++] = idx;
	}
}

/* Lock the job's message (once per message while jobs run). Returns 0,
 * or 1 when the message is busy elsewhere or gone (job dropped). */
static int job_begin(struct run *r, struct job *j)
{
	struct mstate *m = j->m;
	const char *err = NULL;
	pthread_mutex_lock(&m->mu);
	if (m->busy) {
		pthread_mutex_unlock(&m->mu);
		return 1;
	}
	if (m->msg == NULL) {
		int ret = q_msg_lock(r->spool, m->id, &m->msg, &err);
		if (ret != 0) {
			if (ret == Q_BUSY) {
				m->busy = true;
				stat_add(r, &r->st->skipped_busy, 1);
				vlog(r, "%s busy (locked by another process): skipped", m->id);
			} else if (ret < 0) {
				int e = errno;

				q_log("%s cannot lock: %s", m->id, err);
				vlog(r, "%s cannot lock: %s", m->id, err);
				m->busy = true;
				/* out of descriptors: every message after this one
				 * would be skipped the same way; stop the run and
				 * say so (the messages stay queued) */
				if (e == EMFILE || e == ENFILE) {
					char t[sizeof(r->fatal_text)];

					snprintf(t, sizeof(t), "%.400s (raise the limit "
						 "of open files, ulimit -n, or lower -P)",
						 err);
					set_fatal(r, t);
				}
			} else {
				m->busy = true;  /* gone since the index was read */
			}
			m->msg = NULL;
			pthread_mutex_unlock(&m->mu);
			return 1;
		}
		struct q_env *env = q_msg_env(m->msg);
		if ((env->flags & Q_ENV_FROZEN) && r->o->thaw)
			(void)q_msg_set_frozen(m->msg, false, NULL, NULL);
		owe_earlier(m);
		if (!m->counted) {
			m->counted = true;
			stat_add(r, &r->st->messages, 1);
		}
	}
	m->active++;
	pthread_mutex_unlock(&m->mu);
	return 0;
}

/* Note a recipient's result (m->mu held). A failure that owes a bounce
 * is journaled as X (bounce owed): F follows once the bounce is queued
 * (msg_finish). */
static void note_result_n(struct run *r, struct mstate *m, size_t idx, char state,
			  int code, const char *host, const char *text, bool count,
			  unsigned jflags)
{
	const char *err = NULL;
	bool owed = state == Q_RCPT_FAILED && bounce_due(q_msg_env(m->msg));
	if (q_msg_journal(m->msg, idx, owed ? Q_RCPT_FAILED_OWED : state, code,
			  host, text, Q_JOURNAL_NOSYNC | jflags, &err) < 0) {
		q_log("%s journal: %s", m->id, err);
		set_fatal(r, err);
		return;
	}
	if (state == Q_RCPT_FAILED) {
		if (owed)
			owe_bounce(m, idx);
		if (count)
			stat_add(r, &r->st->failed, 1);
	} else if (state == Q_RCPT_DELIVERED) {
		if (count)
			stat_add(r, &r->st->delivered, 1);
	} else {
		if (count)
			stat_add(r, &r->st->deferred, 1);
	}
}

/* A failure whose text says why it fails now: text then why (such as
 * " (retry timeout exceeded)"; "" adds nothing). m->mu held. */
static void note_failed(struct run *r, struct mstate *m, size_t idx, int code,
			const char *host, const char *text, const char *why,
			unsigned jflags)
{
	struct q_buf tb = {0};
	if (why[0] != '\0' && q_buf_printf(&tb, "%s%s", text, why) == 0)
		text = tb.data;
	note_result_n(r, m, idx, Q_RCPT_FAILED, code, host, text, true, jflags);
	q_buf_free(&tb);
}

static void note_next_try(struct mstate *m, time_t t)
{
	if (t > 0 && (m->next_try == 0 || t < m->next_try))
		m->next_try = t;
}

/* The message's last job of this run is over (m->mu held, m->msg
 * locked): queue the bounce it owes, then commit (or remove) and unlock.
 * A bounce that cannot be queued keeps the message (its recipients stay
 * X), and a later run tries again. */
static void msg_finish(struct run *r, struct mstate *m)
{
	const char *err = NULL;
	struct q_env *env = q_msg_env(m->msg);
	if (m->nfailed > 0 && bounce_due(env)) {
		char bid[Q_ID_LEN + 1] = "";
		if (q_dsn_queue(r->spool, env, m->failed, m->nfailed,
				r->conf->primary_hostname, bid, &err) < 0) {
			q_log("%s bounce not queued (a later run tries again): %s",
			      m->id, err);
			vlog(r, "%s bounce not queued: %s", m->id, err);
			note_next_try(m, r->now + 15 * 60);
		} else {
			if (bid[0]) {
				mlog(r, m, "<= bounce %s queued for %s", bid,
				     env->sender);
				stat_add(r, &r->st->bounces, 1);
			}
			/* queued (synced): the failures no longer owe it */
			for (size_t i = 0; i < m->nfailed; i++)
				(void)q_msg_journal(m->msg, m->failed[i],
						    Q_RCPT_FAILED, 0, NULL, NULL,
						    Q_JOURNAL_NOSYNC |
						    Q_JOURNAL_HOLD, NULL);
			m->nfailed = 0;
		}
	}
	/* X recipients left (the bounce not queued): the message stays */
	bool done = q_env_pending(env) == 0 && q_env_owed(env) == 0;
	if (!done && m->mlog.len > 0) {
		for (char *l = m->mlog.data, *nl; *l; l = nl + 1) {
			nl = strchr(l, '\n');
			*nl = '\0';
			(void)q_msglog(r->spool, m->id, l, NULL);
		}
	}
	q_buf_free(&m->mlog);
	if (q_msg_commit(m->msg, done ? 0 : m->next_try, &err) < 0) {
		q_log("%s commit: %s", m->id, err);
		vlog(r, "%s commit: %s", m->id, err);
	} else if (done) {
		mlog(r, m, "Completed");
		stat_add(r, &r->st->completed, 1);
	}
	q_msg_unlock(&m->msg);
}

/* A job is over: finish the message when it was its last job. */
static void job_end(struct run *r, struct job *j)
{
	struct mstate *m = j->m;
	pthread_mutex_lock(&m->mu);
	m->active--;
	m->jobs_left--;
	if (m->msg != NULL && m->jobs_left == 0)
		msg_finish(r, m);
	else if (m->msg != NULL && m->active == 0)
		q_msg_unlock(&m->msg);   /* the journal keeps what was done */
	pthread_mutex_unlock(&m->mu);
	job_free(j);
}

/* A job whose message could not be locked (busy elsewhere, or gone). */
static void job_drop(struct job *j)
{
	pthread_mutex_lock(&j->m->mu);
	j->m->jobs_left--;
	pthread_mutex_unlock(&j->m->mu);
	job_free(j);
}

/* Is this job's recipient still pending in the envelope as locked now? */
static bool still_pending(const struct q_env *env, const struct job *j, size_t k)
{
	size_t idx = j->rcpt[k];
	return idx < env->nrcpt && env->rcpt[idx].state == Q_RCPT_PENDING &&
	       strcmp(env->rcpt[idx].addr, j->addr[k]) == 0;
}

static void push_fallback(struct run *r, struct job *j, struct dest *from)
{
	struct dest *fb = r->fallback;
	struct mstate *m = j->m;
	pthread_mutex_lock(&r->mu);
	struct job *fj = m->fbjob;
	bool fresh = fj == NULL;
	if (fresh) {
		fj = calloc(1, sizeof(*fj));
		if (fj == NULL) {
			pthread_mutex_unlock(&r->mu);
			return;
		}
		fj->m = m;
		fj->primary = from;
		m->fbjob = fj;
	}
	for (size_t k = 0; k < j->n; k++)
		(void)job_add_rcpt(fj, j->rcpt[k], j->addr[k]);
	if (fresh) {
		pthread_mutex_lock(&m->mu);
		m->jobs_left++;
		pthread_mutex_unlock(&m->mu);
		dest_push(fb, fj);
	}
	pthread_mutex_unlock(&r->mu);
}

/* May this destination's deferred recipients go to the fallback hosts?
 * Not when the domain was routed by MX and a fallback host is one of the
 * MX hosts (Exim's rule). */
static bool fallback_allowed(struct run *r, const struct dest *d)
{
	if (r->fallback == NULL || d->fallback)
		return false;
	if (!d->mx)
		return true;
	for (size_t i = 0; i < r->fallback->hosts.n; i++)
		for (size_t k = 0; k < d->hosts.n; k++)
			if (strcasecmp(r->fallback->hosts.h[i].name,
				       d->hosts.h[k].name) == 0)
				return false;
	return true;
}

/* Every recipient of j stays pending (or fails past the cutoff) because
 * no host could take it. */
static void job_defer_all(struct run *r, struct dest *d, struct job *j,
			  const struct q_smtp_err *e, time_t next, bool expired)
{
	if (job_begin(r, j) != 0) {
		job_drop(j);
		return;
	}
	struct mstate *m = j->m;
	struct q_env *env = q_msg_env(m->msg);
	/* a host busy elsewhere (serialized) or a run that stops is no
	   failure of the host: those wait for a later run */
	bool to_fallback = !expired && fallback_allowed(r, d) &&
			   d->route_status == 0 &&
			   strcmp(e->kind, "serialized") != 0 &&
			   strcmp(e->kind, "stopped") != 0;
	/* expired: every IP past its final cutoff (delay_after_cutoff was
	   applied when the IPs were chosen), or the domain cannot be routed */
	bool bounce = expired || d->route_status == Q_ROUTE_PERMANENT;
	const char *host = d->hosts.n ? d->hosts.h[0].name : d->route_domain;
	pthread_mutex_lock(&m->mu);
	for (size_t k = 0; k < j->n; k++) {
		if (!still_pending(env, j, k))
			continue;
		if (bounce) {
			const char *why = d->route_status == Q_ROUTE_PERMANENT
					  ? "" : TIMED_OUT;
			note_failed(r, m, j->rcpt[k], e->code, host, e->text, why, 0);
			mlog(r, m, "** %s: %s%s", j->addr[k], e->text, why);
		} else {
			/* recipients on their way to the fallback hosts are
			   counted there, not as deferred */
			note_result_n(r, m, j->rcpt[k], Q_RCPT_PENDING, e->code, host,
				      e->text, !to_fallback, 0);
			mlog(r, m, "== %s defer (%s): %s", j->addr[k], e->kind,
			     e->text);
		}
	}
	note_next_try(m, next);
	pthread_mutex_unlock(&m->mu);
	if (to_fallback) {
		/* copy the still-pending recipients to the fallback job */
		struct job tmp = {.m = m};
		for (size_t k = 0; k < j->n; k++)
			if (still_pending(env, j, k))
				(void)job_add_rcpt(&tmp, j->rcpt[k], j->addr[k]);
		if (tmp.n > 0)
			push_fallback(r, &tmp, d);
		for (size_t k = 0; k < tmp.n; k++)
			free(tmp.addr[k]);
		free(tmp.addr);
		free(tmp.rcpt);
	}
	job_end(r, j);
}

struct conn_state {
	struct q_smtp_conn *c;
	const struct q_host *host;
	size_t hidx;           /* host's index in its dest */
	char slot_host[256];
	unsigned slot;
	bool have_slot;
	size_t rcpt_limit;     /* recipients per transaction this server took
				  before saying "too many" (0: none seen) */
	bool host_rec;         /* the IP had a retry record at connect */
};

static void conn_close(struct worker *w, struct conn_state *cs)
{
	if (cs->c != NULL) {
		sess_update(w, "quit", NULL, cs->c);
		q_smtp_close(&cs->c);
	}
	cs->rcpt_limit = 0;
	cs->host_rec = false;
	if (cs->have_slot) {
		(void)q_serialize_release(w->r->hints, cs->slot_host, cs->slot, NULL);
		cs->have_slot = false;
	}
	sess_end(w);
}

static void fill_opts(struct run *r, const struct q_host *h, struct q_smtp_opts *o,
		      char *cache_key, size_t cksize)
{
	const struct q_conf *cf = r->conf;
	memset(o, 0, sizeof(*o));
	o->helo_name = cf->primary_hostname;
	o->connect_timeout = cf->connect_timeout;
	o->command_timeout = cf->command_timeout;
	o->data_timeout = cf->data_timeout;
	o->final_timeout = cf->final_timeout;
	o->bind_ip = cf->interface;
	o->keepalive = cf->keepalive;
	o->tls = r->tls;
	o->avoid_tls = q_hostlist_match(&cf->hosts_avoid_tls, h->name, h->ip);
	o->require_tls = q_hostlist_match(&cf->hosts_require_tls, h->name, h->ip);
	o->verify = cf->tls_verify_certificates != NULL &&
		    (cf->tls_verify_hosts.n == 0 ||
		     q_hostlist_match(&cf->tls_verify_hosts, h->name, h->ip));
	o->verify_name = h->name;
	snprintf(cache_key, cksize, "%s:%s:%u", h->name, h->ip, h->port);
	o->cache_key = cache_key;
	o->size_addition = cf->size_addition;
}

/* Has a failure timed out for a message that arrived at `arrival`? As
 * Exim: the record is past its rule's final cutoff, or the message has
 * waited longer than that cutoff since it arrived or since the failure
 * began, whichever was first. (The second part matters when successes
 * of other messages keep wiping a host's record, or an address's
 * failure began after the message had waited for other reasons: a
 * message that never gets through still times out.) */
static bool timed_out(const struct q_retry_rec *rec,
		      const struct q_retry_rule *rule, time_t arrival,
		      time_t now)
{
	if (rec->expired)
		return true;
	time_t since = rec->first_failed;
	if (arrival > 0 && (since <= 0 || arrival < since))
		since = arrival;
	return since > 0 && now - since > q_retry_final_cutoff(rule);
}

/* The retry key of a host (IP) of the run: T:host:ip[:port]. */
static int host_key(const struct run *r, const struct q_host *h,
		    struct q_buf *key)
{
	const struct q_conf *cf = r->conf;
	return q_retry_key_host(key, h->name, h->ip, h->port ? h->port : cf->port,
				cf->retry_include_ip_address);
}

/* IP number i of d failed (connect, greeting, TLS, or a dialogue that
 * broke: timeout, lost connection, protocol error, 421): its own retry
 * record, and no other try of it in this run (not even with -f). Returns
 * the record's next try (0 if unknown). *expired_r: the record is past
 * its rule's final cutoff; *msg_expired_r: the failure timed out for a
 * message that arrived at `arrival` (timed_out). Either may be NULL. */
static time_t host_failed(struct run *r, struct dest *d, size_t i,
			  const struct q_smtp_err *e, time_t arrival,
			  bool *expired_r, bool *msg_expired_r)
{
	const struct q_conf *cf = r->conf;
	const struct q_host *h = &d->hosts.h[i];
	unsigned port = h->port ? h->port : cf->port;
	struct q_buf key = {0};
	struct q_retry_rec nrec = {0};
	time_t next;

	const struct q_retry_rule *rule = rule_for(r, h->name, d->route_domain,
						   e->kind, e->code);
	if (host_key(r, h, &key) == 0)
		(void)q_retry_fail(r->hints, key.data, rule,
				   cf->retry_interval_max, e->kind, e->code, e->err,
				   e->text, r->now, &nrec, NULL);
	q_log("%s [%s]:%u %s: %s", h->name, h->ip, port, e->kind, e->text);
	vlog(r, "%s [%s]:%u failed (%s): %s", h->name, h->ip, port, e->kind,
	     e->text);
	next = nrec.next_try;
	if (expired_r != NULL)
		*expired_r = nrec.expired;
	if (msg_expired_r != NULL)
		*msg_expired_r = timed_out(&nrec, rule, arrival, r->now);
	q_retry_rec_clear(&nrec);
	q_buf_free(&key);
	pthread_mutex_lock(&r->mu);
	d->hfail[i] = true;
	d->herr[i] = *e;
	pthread_mutex_unlock(&r->mu);
	return next;
}

/* Connect to the first usable IP of d. Returns 0 with cs->c, or -1 with
 * *e, *next_r and *expired_r describing why no host could be used:
 * *expired_r when every IP considered is past its final cutoff (for
 * every message of d), *msg_expired_r when every one has timed out for
 * the message that arrived at `arrival` (timed_out). */
static int dest_connect(struct worker *w, struct dest *d, struct conn_state *cs,
			time_t arrival, struct q_smtp_err *e, time_t *next_r,
			bool *expired_r, bool *msg_expired_r)
{
	struct run *r = w->r;
	const struct q_conf *cf = r->conf;
	unsigned max_try = cf->hosts_max_try ? cf->hosts_max_try : 5;
	unsigned tried = 0;
	bool all_expired = true, any_considered = false, all_msg_expired = true;
	time_t next = 0;
	struct q_buf key = {0};

	memset(e, 0, sizeof(*e));
	for (size_t i = 0; i < d->hosts.n && tried < max_try && !stopping(r); i++) {
		const struct q_host *h = &d->hosts.h[i];
		unsigned port = h->port ? h->port : cf->port;
		struct q_retry_rec rec = {0};
		q_buf_reset(&key);
		if (host_key(r, h, &key) < 0)
			break;
		int got = q_retry_get(r->hints, key.data, &rec, NULL);
		any_considered = true;
		/* all_expired: every IP is past its final cutoff - as its
		   record stands after this attempt for the IPs tried */
		pthread_mutex_lock(&r->mu);
		bool failed = d->hfail[i];
		if (failed && e->kind[0] == '\0')
			*e = d->herr[i];
		pthread_mutex_unlock(&r->mu);
		if (failed) {
			/* failed earlier in this run (here or in another worker) */
			if (got != 0 || !rec.expired)
				all_expired = false;
			if (got != 0 || !timed_out(&rec, rule_for(r, h->name,
					d->route_domain, rec.kind, rec.code),
					arrival, r->now))
				all_msg_expired = false;
			if (got == 0 && rec.next_try > 0 &&
			    (next == 0 || rec.next_try < next))
				next = rec.next_try;
			q_retry_rec_clear(&rec);
			continue;    /* not counted towards hosts_max_try */
		}
		/* Exim's rules: not due = skipped (not counted towards
		   hosts_max_try), unless the message is older than the rule's
		   final cutoff (one attempt, so that it can time out); past the
		   cutoff, delay_after_cutoff = false tries an IP not tried since
		   the message arrived */
		enum q_retry_use use = Q_RETRY_USE;
		if (got == 0 && !r->o->force && r->o->nids == 0) {
			use = q_retry_host_use(&rec, rule_for(r, h->name, d->route_domain,
							      rec.kind, rec.code),
					       arrival, r->now);
			if (use == Q_RETRY_SKIP_EXPIRED && !cf->delay_after_cutoff &&
			    q_retry_try_after_cutoff(&rec, arrival))
				use = Q_RETRY_USE;
		}
		if (use != Q_RETRY_USE) {
			if (use == Q_RETRY_SKIP) {
				all_expired = false;
				all_msg_expired = false;
			}
			if (next == 0 || rec.next_try < next)
				next = rec.next_try;
			if (e->kind[0] == '\0') {
				snprintf(e->kind, sizeof(e->kind), "%s", rec.kind);
				snprintf(e->text, sizeof(e->text),
					 "retry time not reached for %s [%s]: %s",
					 h->name, h->ip, rec.text ? rec.text : rec.kind);
			}
			q_retry_rec_clear(&rec);
			continue;    /* not counted towards hosts_max_try */
		}
		q_retry_rec_clear(&rec);

		if (d->serialized &&
		    q_hostlist_match(&cf->serialize_hosts, h->name, h->ip)) {
			unsigned slot;
			int sret = q_serialize_take(r->hints, h->name,
						    d->limit ? d->limit : 1, time(NULL),
						    NULL, &slot, NULL);
			if (sret != 0) {
				snprintf(e->kind, sizeof(e->kind), "serialized");
				snprintf(e->text, sizeof(e->text),
					 "%s: serialized, all %u connection slots in use",
					 h->name, d->limit);
				all_expired = false;
				all_msg_expired = false;
				continue;
			}
			snprintf(cs->slot_host, sizeof(cs->slot_host), "%s", h->name);
			cs->slot = slot;
			cs->have_slot = true;
		}

		tried++;
		struct q_smtp_opts o;
		char ck[600];
		fill_opts(r, h, &o, ck, sizeof(ck));
		sess_begin(w, h, port);
		sess_update(w, "connect", NULL, NULL);

		int ret = q_smtp_open(&o, h->ip, port, &cs->c, e);
		if (ret < 0 && strcmp(e->kind, "tls_failed") == 0 && !o.require_tls) {
			/* opportunistic TLS failed: the same host in clear */
			vlog(r, "%s [%s]: TLS failed (%s); trying in clear", h->name,
			     h->ip, e->text);
			o.avoid_tls = true;
			ret = q_smtp_open(&o, h->ip, port, &cs->c, e);
		}
		if (ret == 0) {
			stat_add(r, &r->st->connections, 1);
			if (q_smtp_tls_info(cs->c) != NULL) {
				stat_add(r, &r->st->tls, 1);
				if (q_smtp_tls_resumed(cs->c))
					stat_add(r, &r->st->tls_resumed, 1);
			}
			q_log("connected to %s [%s]:%u%s%s%s", h->name, h->ip, port,
			      q_smtp_tls_info(cs->c) ? " X=" : "",
			      q_smtp_tls_info(cs->c) ? q_smtp_tls_info(cs->c) : "",
			      q_smtp_tls_resumed(cs->c) ? " (TLS session resumed)" : "");
			vlog(r, "connected to %s [%s]:%u%s%s%s", h->name, h->ip, port,
			     q_smtp_tls_info(cs->c) ? " TLS " : "",
			     q_smtp_tls_info(cs->c) ? q_smtp_tls_info(cs->c) : "",
			     q_smtp_tls_resumed(cs->c) ? " (resumed)" : "");
			/* its record (if any) goes only when a transaction
			   ends cleanly (job_send): a host that answers and
			   then fails every time must still time out */
			cs->host_rec = got == 0;
			cs->host = h;
			cs->hidx = i;
			sess_update(w, "idle", NULL, cs->c);
			q_buf_free(&key);
			return 0;
		}
		/* this IP failed: its own retry record */
		bool hexp = false, hmexp = false;
		time_t hnext = host_failed(r, d, i, e, arrival, &hexp, &hmexp);
		if (!hexp)
			all_expired = false;
		if (!hmexp)
			all_msg_expired = false;
		if (next == 0 || (hnext && hnext < next))
			next = hnext;
		if (cs->have_slot) {
			(void)q_serialize_release(r->hints, cs->slot_host, cs->slot, NULL);
			cs->have_slot = false;
		}
		sess_end(w);
	}
	q_buf_free(&key);
	if (e->kind[0] == '\0') {
		snprintf(e->kind, sizeof(e->kind), "%s", stopping(r) ? "stopped" : "none");
		snprintf(e->text, sizeof(e->text), "%s",
			 stopping(r) ? "queue run stopped" : "no host could be tried");
	}
	*next_r = next;
	*expired_r = any_considered && all_expired;
	*msg_expired_r = any_considered && (all_expired || all_msg_expired);
	return -1;
}

enum send_result { SENT, REQUEUE, DROPPED };

/* Is a refusal of RCPT the server's limit of recipients per transaction
 * (RFC 5321 4.5.3.1.10: such a server MUST answer 452, and the client
 * SHOULD treat a 552 for it as temporary)? An enhanced code decides
 * (X.5.3 is "too many recipients", RFC 3463; 4.2.2 "mailbox full" is
 * not); without one, a 452, or a 552 saying so. The caller asks only
 * for a recipient that comes after one the server accepted. */
static bool over_rcpt_limit(int code, const char *text)
{
	if (code != 452 && code != 552)
		return false;
	if (text == NULL)
		return code == 452;
	size_t l = q_enh_len(text, SIZE_MAX, text[0], " \n");
	if (l > 0)
		return l == 5 && text[2] == '5' && text[4] == '3';
	if (code == 452)
		return true;
	static const char want[] = "too many recipients";
	for (const char *p = text; *p; p++)
		if (strncasecmp(p, want, sizeof(want) - 1) == 0)
			return true;
	return false;
}

/* Queue first on d a job for the recipients of j at positions pos[0..np)
 * of j (recipients the server had no room for in this transaction, or
 * that a limit it showed kept out of it): the worker that holds the
 * connection sends it next, after RSET. Each such job is smaller than the
 * one it came from, so the chain ends. Out of memory: they stay pending
 * for the next run. */
static void push_followup(struct run *r, struct dest *d, const struct job *j,
			  const size_t *pos, size_t np)
{
	struct job *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return;
	f->m = j->m;
	f->primary = j->primary;
	for (size_t i = 0; i < np; i++)
		if (job_add_rcpt(f, j->rcpt[pos[i]], j->addr[pos[i]]) < 0) {
			job_free(f);
			return;
		}
	pthread_mutex_lock(&f->m->mu);
	f->m->jobs_left++;
	pthread_mutex_unlock(&f->m->mu);
	pthread_mutex_lock(&r->mu);
	dest_push_front(d, f);
	pthread_mutex_unlock(&r->mu);
}

/* Send one job down an open connection and journal every result. */
static enum send_result job_send(struct worker *w, struct dest *d,
				 struct conn_state *cs, struct job *j, bool rset)
{
	struct run *r = w->r;
	struct mstate *m = j->m;
	const struct q_host *h = cs->host;
	struct q_env *env = q_msg_env(m->msg);
	const char *rcpts[j->n ? j->n : 1];
	size_t map[j->n ? j->n : 1];
	size_t pos[j->n ? j->n : 1];    /* each one's position in j */
	size_t rest[j->n ? j->n : 1];   /* kept for another transaction */
	size_t n = 0, nrest = 0;

	for (size_t k = 0; k < j->n; k++)
		if (still_pending(env, j, k)) {
			if (cs->rcpt_limit > 0 && n == cs->rcpt_limit) {
				rest[nrest++] = k;
				continue;
			}
			rcpts[n] = env->rcpt[j->rcpt[k]].addr;
			pos[n] = k;
			map[n++] = j->rcpt[k];
		}
	if (n == 0)
		return SENT;

	/* the locked descriptor: no second open of -D */
	off_t dsize;
	int fd = q_msg_data(m->msg, &dsize);
	int codes[n];
	char *texts[n];
	struct q_smtp_err e;
	memset(&e, 0, sizeof(e));
	for (size_t k = 0; k < n; k++) {
		codes[k] = 0;
		texts[k] = NULL;
	}
	sess_update(w, "mail", m->id, cs->c);
	q_smtp_set_body_8bit(cs->c, (env->flags & Q_ENV_8BIT) != 0);
	int ret = q_smtp_send(cs->c, rset, env->sender, rcpts, n, fd, dsize,
			      codes, texts, &e);

	bool none = true;
	for (size_t k = 0; k < n; k++)
		if (codes[k] != 0)
			none = false;
	/* a 421 ends the connection even when it answers the final dot
	 * (the call then returns 0): the host's failure all the same */
	bool broken = !q_smtp_usable(cs->c) && (ret < 0 || e.code == 421);
	const char *state = q_smtp_state(cs->c);
	bool before_dot = strcmp(state, "dot") != 0;
	/* A connection reused for this message that the server closed (or
	 * whose RSET it refused, as an idle server does) before the new
	 * transaction began: normal between messages, not the host's fault. */
	bool idle_drop = rset && none &&
			 (strcmp(e.kind, "rset") == 0 ||
			  (e.code == 0 && strcmp(e.kind, "lost_connection") == 0 &&
			   (strcmp(state, "rset") == 0 || strcmp(state, "mail") == 0)));
	/* Any other broken dialogue (timeout, lost connection, protocol
	 * error, 421) is the IP's: its retry record, and no more of it in
	 * this run. */
	time_t host_next = 0;
	/* a refusal of MAIL (other than 421) is the server's answer about
	   this sender, even when it then hangs up: not the IP's failure,
	   and nothing to send again on a new connection */
	bool mail_refused = strncmp(e.kind, "mail_", 5) == 0 && e.code != 421;
	bool host_fault = broken && !e.permanent && !idle_drop &&
			  !mail_refused && strcmp(e.kind, "local") != 0;
	bool host_timed_out = false;
	if (host_fault) {
		host_next = host_failed(r, d, cs->hidx, &e, m->arrival, NULL,
					&host_timed_out);
	} else if (!broken && cs->host_rec) {
		/* the server answered a whole transaction: the IP works, and
		   its record from earlier failures goes */
		struct q_buf hkey = {0};
		if (host_key(r, h, &hkey) == 0)
			(void)q_retry_clear(r->hints, hkey.data, NULL);
		q_buf_free(&hkey);
		cs->host_rec = false;
	}

	/* Nothing decided and the final dot never went out: the server
	 * cannot have accepted it. Send it again on a new connection (to
	 * the next IP when this one failed). */
	if (broken && none && !e.permanent && before_dot && !mail_refused &&
	    j->requeued < MAX_REQUEUE) {
		for (size_t k = 0; k < n; k++)
			free(texts[k]);
		vlog(r, "%s connection to %s [%s] broke before the end of data (%s): "
		     "again on a new connection", m->id, h->name, h->ip, e.text);
		return REQUEUE;
	}

	/* Recipients refused for the server's recipient limit after it
	 * took others into a transaction that went through: nothing is
	 * decided for them, and no retry record is made; another
	 * transaction takes them at once (on this connection, at most as
	 * many recipients as it took this time). */
	bool over[n];
	size_t nover = 0, took = 0;
	bool went_through = ret == 0 && e.kind[0] == '\0';
	for (size_t k = 0; k < n; k++) {
		over[k] = went_through && took > 0 &&
			  over_rcpt_limit(codes[k], texts[k]);
		if (over[k]) {
			rest[nrest++] = pos[k];
			nover++;
		} else if (codes[k] >= 200 && codes[k] < 300) {
			took++;
		}
	}
	if (nover > 0 && (cs->rcpt_limit == 0 || took < cs->rcpt_limit))
		cs->rcpt_limit = took;

	/* Each recipient's fate, decided before the journal is written.
	 * A deferral gets its retry record first: an address's own (a 4xx
	 * to RCPT, DATA or the dot, or to MAIL) or, for a broken dialogue,
	 * the IP's (above). Past the rule's final cutoff (timed_out) the
	 * recipient fails, and its sender gets a bounce, rather than
	 * staying on the queue for ever. */
	enum { F_OVER, F_DONE, F_FAIL, F_DEFER, F_TIMEOUT } fate[n];
	time_t fnext[n];
	const char *fkind[n];
	for (size_t k = 0; k < n; k++) {
		int code = codes[k];
		const char *text = texts[k] ? texts[k] : e.text;
		fnext[k] = 0;
		fkind[k] = e.kind;
		if (over[k]) {
			fate[k] = F_OVER;
		} else if (code >= 200 && code < 300) {
			fate[k] = F_DONE;
		} else if (code >= 500 || (code == 0 && e.permanent)) {
			fate[k] = F_FAIL;
		} else if (code >= 400 ||
			   (code == 0 && !host_fault &&
			    strncmp(e.kind, "mail_", 5) == 0)) {
			/* a 4xx to the final dot or to DATA is the message's
			   (data_4xx); one to RCPT is the address's */
			const char *kind = code >= 400 &&
					   strncmp(e.kind, "data_", 5) != 0
					   ? "rcpt_4xx" : e.kind;
			int c = code ? code : e.code;
			const struct q_retry_rule *rule =
				rule_for(r, h->name, q_addr_domain(rcpts[k]),
					 kind, c);
			struct q_buf key = {0};
			struct q_retry_rec nrec = {0};
			bool to = false;
			if (q_retry_key_addr(&key, rcpts[k], m->id) == 0 &&
			    q_retry_fail(r->hints, key.data, rule,
					 r->conf->retry_interval_max, kind, c, 0,
					 text, r->now, &nrec, NULL) == 0) {
				to = timed_out(&nrec, rule, m->arrival, r->now);
				if (to)
					(void)q_retry_clear(r->hints, key.data, NULL);
			}
			fate[k] = to ? F_TIMEOUT : F_DEFER;
			fnext[k] = nrec.next_try;
			fkind[k] = kind;
			q_retry_rec_clear(&nrec);
			q_buf_free(&key);
		} else {
			fate[k] = host_timed_out ? F_TIMEOUT : F_DEFER;
			fnext[k] = host_next ? host_next : r->now + 15 * 60;
		}
	}

	const char *tls = q_smtp_tls_info(cs->c);
	pthread_mutex_lock(&m->mu);
	/* First the journal, in one write for the whole transaction: what
	 * the server accepted is recorded before anything else is done. */
	bool was_4xx[n];
	for (size_t k = 0; k < n; k++) {
		int code = codes[k];
		int c = code ? code : e.code;
		const char *text = texts[k] ? texts[k] : e.text;
		const struct q_rcpt *rc = &env->rcpt[map[k]];
		was_4xx[k] = rc->last_code >= 400 && rc->last_code < 500;
		switch (fate[k]) {
		case F_OVER:
			break;
		case F_DONE:
			note_result_n(r, m, map[k], Q_RCPT_DELIVERED, code, h->name,
				      text, true, Q_JOURNAL_HOLD);
			break;
		case F_FAIL:
			note_result_n(r, m, map[k], Q_RCPT_FAILED, c, h->name, text,
				      true, Q_JOURNAL_HOLD);
			break;
		case F_TIMEOUT:
			note_failed(r, m, map[k], c, h->name, text, TIMED_OUT,
				    Q_JOURNAL_HOLD);
			break;
		case F_DEFER:
			note_result_n(r, m, map[k], Q_RCPT_PENDING, c, h->name, text,
				      true, Q_JOURNAL_HOLD);
			break;
		}
	}
	{
		const char *jerr = NULL;
		if (q_msg_journal_flush(m->msg, Q_JOURNAL_NOSYNC, &jerr) < 0) {
			q_log("%s journal: %s", m->id, jerr);
			set_fatal(r, jerr);
		}
	}
	/* the main log lines of this message, down to its "Completed", go
	   out in one write (serve releases them after job_end) */
	q_log_hold();
	for (size_t k = 0; k < n; k++) {
		int code = codes[k];
		int c = code ? code : e.code;
		const char *text = texts[k] ? texts[k] : e.text;
		switch (fate[k]) {
		case F_OVER:
			break;
		case F_DONE:
			if (was_4xx[k]) {
				/* deferred before: its address retry record goes */
				struct q_buf key = {0};
				if (q_retry_key_addr(&key, rcpts[k], m->id) == 0)
					(void)q_retry_clear(r->hints, key.data, NULL);
				q_buf_free(&key);
			}
			mlog(r, m, "=> %s H=%s [%s]%s%s C=\"%d %s\"", rcpts[k],
			     h->name, h->ip, tls ? " X=" : "", tls ? tls : "", code,
			     text);
			break;
		case F_FAIL:
			mlog(r, m, "** %s H=%s [%s]: %d %s", rcpts[k], h->name,
			     h->ip, c, text);
			break;
		case F_TIMEOUT:
			mlog(r, m, "** %s H=%s [%s]: %d %s%s", rcpts[k], h->name,
			     h->ip, c, text, TIMED_OUT);
			break;
		case F_DEFER:
			mlog(r, m, "== %s H=%s [%s] defer (%s): %d %s", rcpts[k],
			     h->name, h->ip, fkind[k], c, text);
			note_next_try(m, fnext[k]);
			break;
		}
		free(texts[k]);
	}
	if (nover > 0)
		mlog(r, m, "H=%s [%s] took %zu of %zu recipients (its recipient "
		     "limit): %zu more in another transaction", h->name, h->ip,
		     took, n, nover);
	pthread_mutex_unlock(&m->mu);
	if (nrest > 0)
		push_followup(r, d, j, rest, nrest);
	/* no "idle" session update here: the next message (its "mail"
	   update) or the close ("quit") follows at once, and each update is
	   a hints transaction */
	return SENT;
}

/* Serve one destination: open connections and send its jobs until none
 * are left, the destination is found down, or the run stops. */
static void serve(struct worker *w, struct dest *d)
{
	struct run *r = w->r;
	struct conn_state cs = {0};
	unsigned sent = 0;
	unsigned batch_max = r->conf->batch_max;
	bool proven = false;

	for (;;) {
		pthread_mutex_lock(&r->mu);
		struct job *j = stopping(r) ? NULL : dest_pop(d);
		bool down = d->down;
		struct q_smtp_err derr = d->down_err;
		time_t dnext = d->down_next;
		bool dexp = d->down_expired;
		pthread_mutex_unlock(&r->mu);
		if (j == NULL)
			break;

		if (d->route_status != 0) {
			struct q_smtp_err e = {0};
			snprintf(e.kind, sizeof(e.kind), "lookup");
			snprintf(e.text, sizeof(e.text), "%s: %s", d->route_domain,
				 d->route_error ? d->route_error : "routing failed");
			job_defer_all(r, d, j, &e, d->down_next, d->down_expired);
			continue;
		}
		if (down) {
			job_defer_all(r, d, j, &derr, dnext, dexp);
			continue;
		}
		if (cs.c == NULL) {
			struct q_smtp_err e;
			time_t next = 0;
			bool expired = false, msg_expired = false;
			if (dest_connect(w, d, &cs, j->m->arrival, &e, &next,
					 &expired, &msg_expired) < 0) {
				if (strcmp(e.kind, "stopped") == 0 ||
				    strcmp(e.kind, "serialized") == 0) {
					/* not the host's fault: leave the job
					   for a later run, without a retry mark */
					pthread_mutex_lock(&r->mu);
					dest_push_front(d, j);
					d->down = true;
					d->down_err = e;
					pthread_mutex_unlock(&r->mu);
					if (strcmp(e.kind, "serialized") == 0)
						continue;
					break;
				}
				pthread_mutex_lock(&r->mu);
				d->down = true;
				d->down_err = e;
				d->down_next = next;
				d->down_expired = expired;
				pthread_mutex_unlock(&r->mu);
				/* this message may have waited past the cutoff
				   even where the records have not (timed_out) */
				job_defer_all(r, d, j, &e, next, msg_expired);
				continue;
			}
			sent = 0;
		}
		if (job_begin(r, j) != 0) {
			job_drop(j);
			continue;
		}
		enum send_result sr = job_send(w, d, &cs, j, sent > 0);
		if (sr == REQUEUE) {
			pthread_mutex_lock(&j->m->mu);
			j->m->active--;
			if (j->m->active == 0 && j->m->msg)
				q_msg_unlock(&j->m->msg);
			pthread_mutex_unlock(&j->m->mu);
			j->requeued++;
			pthread_mutex_lock(&r->mu);
			dest_push_front(d, j);
			pthread_mutex_unlock(&r->mu);
			conn_close(w, &cs);
			continue;
		}
		if (d->hosts.n > 0)
			wdel_add(w, d->hosts.h[0].name, j->m->id);
		job_end(r, j);
		q_log_release();
		sent++;
		if (!proven && q_smtp_usable(cs.c)) {
			/* a transaction went through: other workers may open
			   connections to this destination too */
			proven = true;
			pthread_mutex_lock(&r->mu);
			if (!d->proven) {
				d->proven = true;
				pthread_cond_broadcast(&r->cv);
			}
			pthread_mutex_unlock(&r->mu);
		}
		if (!q_smtp_usable(cs.c) || (batch_max != 0 && sent >= batch_max))
			conn_close(w, &cs);
	}
	conn_close(w, &cs);
	wdel_flush(w);
}

/* Pick the next destination to serve. Primary destinations first; the
 * fallback destination only once no primary is left or being served. */
static struct dest *pick(struct run *r)
{
	pthread_mutex_lock(&r->mu);
	for (;;) {
		if (stopping(r)) {
			pthread_mutex_unlock(&r->mu);
			return NULL;
		}
		struct dest *best = NULL;
		bool waiting = false;
		for (struct dest *d = r->dests; d; d = d->next) {
			if (d->njobs == 0 || d->fallback)
				continue;
			if (d->down && d->limit && d->active >= d->limit)
				continue; /* serialized elsewhere: next run */
			if (d->limit && d->active >= d->limit) {
				waiting = true;
				continue;
			}
			if (d->down && d->route_status == 0 && d->active > 0)
				continue;  /* its worker drains it */
			/* a second connection to a destination pays off only
			   when many messages wait for it */
			if (d->active > 0 && d->njobs < JOIN_MIN_JOBS * d->active)
				continue;
			if (d->active > 0 && !d->proven && !d->down &&
			    d->route_status == 0) {
				/* one worker finds out whether a host answers
				   before others join it */
				waiting = true;
				continue;
			}
			if (best == NULL || (best->active > 0 && d->active == 0) ||
			    (best->active == d->active && d->njobs > best->njobs))
				best = d;
		}
		if (best == NULL && r->fallback && r->fallback->njobs > 0) {
			if (r->working == 0)
				best = r->fallback;
			else
				waiting = true;
		}
		if (best != NULL) {
			best->active++;
			if (!best->fallback)
				r->working++;
			pthread_mutex_unlock(&r->mu);
			return best;
		}
		if (!waiting && r->working == 0) {
			pthread_mutex_unlock(&r->mu);
			return NULL;
		}
		if (!waiting && (r->fallback == NULL)) {
			pthread_mutex_unlock(&r->mu);
			return NULL;
		}
		pthread_cond_wait(&r->cv, &r->mu);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct run *r = w->r;
	struct dest *d;
	while ((d = pick(r)) != NULL) {
		serve(w, d);
		pthread_mutex_lock(&r->mu);
		d->active--;
		if (!d->fallback)
			r->working--;
		pthread_cond_broadcast(&r->cv);
		pthread_mutex_unlock(&r->mu);
	}
	return NULL;
}

/* ---- the run ---- */

static void run_workers(struct run *r, unsigned nw)
{
	if (nw == 0)
		nw = 1;
	if (nw > 256)
		nw = 256;
	pthread_t *th = calloc(nw, sizeof(*th));
	struct worker *ws = calloc(nw, sizeof(*ws));
	struct worker one = {.r = r, .num = 0};
	unsigned started = 0;
	if (th == NULL || ws == NULL) {
		nw = 1;
		free(ws);
		ws = NULL;
	}
	struct worker *all = ws ? ws : &one;
	for (unsigned i = 0; i < nw; i++) {
		all[i].r = r;
		all[i].num = i;
		pthread_mutex_init(&all[i].smu, NULL);
	}
	r->ws = all;
	r->nws = nw;
	pthread_t fl;
	pthread_mutex_init(&r->fmu, NULL);
	pthread_cond_init(&r->fcv, NULL);
	r->fstop = false;
	r->flusher = pthread_create(&fl, NULL, sess_flusher, r) == 0;
	if (r->flusher)
		(void)pthread_setname_np(fl, "qrun-sessions");
	if (nw > 1)
		for (unsigned i = 0; i < nw; i++) {
			char tname[16];

			if (pthread_create(&th[i], NULL, worker_main, &all[i]) != 0)
				break;
			/* names for top -H, ps -L and perf */
			snprintf(tname, sizeof(tname), "qrun-w%u", i + 1);
			(void)pthread_setname_np(th[i], tname);
			started++;
		}
	if (started == 0)
		worker_main(&all[0]);
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (r->flusher) {
		pthread_mutex_lock(&r->fmu);
		r->fstop = true;
		pthread_cond_signal(&r->fcv);
		pthread_mutex_unlock(&r->fmu);
		pthread_join(fl, NULL);
		r->flusher = false;
	}
	pthread_mutex_destroy(&r->fmu);
	pthread_cond_destroy(&r->fcv);
	for (unsigned i = 0; i < nw; i++) {
		q_session_rec_clear(&all[i].sess);
		pthread_mutex_destroy(&all[i].smu);
	}
	r->ws = NULL;
	r->nws = 0;
	free(th);
	free(ws);
}

static void run_free(struct run *r)
{
	for (struct dest *d = r->dests, *dn; d; d = dn) {
		dn = d->next;
		for (struct job *j = d->head, *jn; j; j = jn) {
			jn = j->next;
			job_free(j);
		}
		q_route_free(&d->hosts);
		free(d->hfail);
		free(d->herr);
		free(d->sig);
		free(d->route_error);
		free(d->route_domain);
		free(d);
	}
	for (struct domroute *dr = r->routes, *dn; dr; dr = dn) {
		dn = dr->next;
		free(dr->domain);
		free(dr);
	}
	for (size_t i = 0; i < r->nmsgs; i++) {
		struct mstate *m = r->msgs[i];
		if (m->msg)
			q_msg_unlock(&m->msg);
		pthread_mutex_destroy(&m->mu);
		q_buf_free(&m->mlog);
		free(m->failed);
		free(m);
	}
	free(r->msgs);
	for (size_t i = 0; i < r->ncands; i++)
		free(r->cands[i].rcpts);
	free(r->cands);
	if (r->tls)
		q_tls_ctx_free(&r->tls);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
}

int q_run(struct q_spool *spool, const struct q_conf *conf,
	  const struct q_run_opts *o, struct q_run_stats *st,
	  const char **error_r)
{
	struct run r;
	struct timespec t0, t1;
	int lockfd = -1;
	int ret = 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	memset(&r, 0, sizeof(r));
	memset(st, 0, sizeof(*st));
	r.spool = spool;
	r.conf = conf;
	r.o = o;
	r.st = st;
	r.now = time(NULL);
	pthread_mutex_init(&r.mu, NULL);
	pthread_cond_init(&r.cv, NULL);
	/* descriptors: the spool's reaper holds up to 768 message locks
	 * besides the workers' sockets and files; 1024 is a common soft
	 * limit, so take what the hard limit allows, up to 4096 */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096 &&
	    rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}

	if (q_spool_hints(spool, &r.hints, error_r) < 0) {
		run_free(&r);
		return -1;
	}
	if (!o->no_run_lock) {
		ret = run_lock(&r, &lockfd, error_r);
		if (ret != 0) {
			run_free(&r);
			return ret;
		}
	}
	struct q_tls_opts to = {
		.ca = conf->tls_verify_certificates,
		.cert = conf->tls_certificate,
		.key = conf->tls_privatekey,
	};
	if (q_tls_ctx_new(&to, &r.tls, error_r) < 0) {
		ret = -1;
		goto out;
	}
	/* TLS sessions of earlier runs, so that their hosts resume */
	char tlsfile[4096];
	snprintf(tlsfile, sizeof(tlsfile), "%s/db/tls-sessions", q_spool_dir(spool));
	size_t nsess = 0;
	const char *terr = NULL;
	if (q_tls_ctx_load(r.tls, tlsfile, &nsess, &terr) < 0)
		q_log("TLS session cache: %s (ignored)", terr);
	else if (nsess > 0)
		vlog(&r, "TLS session cache: %zu sessions from earlier runs", nsess);

	/* phase 1 */
	if (q_spool_list(spool, collect, &r, error_r) < 0) {
		ret = -1;
		goto out;
	}
	if (conf->nfallback > 0) {
		struct q_hostlist_r fl = {0};
		const char *ferr = NULL;
		if (q_route_fallback(conf, NULL, &fl, &ferr) == 0 && fl.n > 0) {
			r.fallback = dest_for_hosts(&r, &fl, true);
		} else {
			q_route_free(&fl);
			q_log("fallback_hosts cannot be resolved: %s",
			      ferr ? ferr : "no address");
		}
	}
	for (size_t i = 0; i < r.ncands; i++)
		if (plan_msg(&r, &r.cands[i]) < 0) {
			ret = q_err(error_r, "queue run: out of memory");
			goto out;
		}
	plan_wait_hints(&r);
	vlog(&r, "queue run: %zu messages due", r.ncands);

	/* phase 2: completed messages are removed by the spool's reaper
	   thread, so that no worker waits for the file system to free them
	   (without it, q_msg_commit removes them itself) */
	bool reaper = q_spool_reaper_start(spool, conf->journal_sync, NULL) == 0;
	run_workers(&r, o->parallel ? o->parallel : conf->remote_max_parallel);
	if (reaper)
		q_spool_reaper_stop(spool);
	if (st->tls > 0 && q_tls_ctx_save(r.tls, tlsfile, &terr) < 0)
		q_log("TLS session cache: %s", terr);
	(void)q_spool_sync(spool, NULL);
	if (r.fatal) {
		ret = q_err(error_r, "queue run stopped: %s", r.fatal_text);
		goto out;
	}
out:
	clock_gettime(CLOCK_MONOTONIC, &t1);
	st->seconds = (double)(t1.tv_sec - t0.tv_sec) +
		      (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	run_free(&r);
	if (lockfd >= 0)
		close(lockfd);
	return ret;
}
