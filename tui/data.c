/*
 * tui/data.c - what qtop shows, fetched off the drawing path: the queue
 * (from the queue index), the retry records, the live sessions, the
 * deliveries and failures of the last minute (from the main log), and
 * the messages waiting for one retry key.
 *
 * Owns: the fetcher (struct fetch: its own q_spool handle, the directory
 * stamps, the main log position) and the snapshots it publishes. A
 * snapshot is immutable once built; the main thread takes one with
 * data_get() and keeps it until it takes the next (atomic reference
 * counts; the queue and retry parts are shared between snapshots when
 * they did not change).
 *
 * The queue is read from the index, never from the -H files:
 *   - FETCH_WALK: one q_hints_iter over the index database. Each raw
 *     value is hashed; a record whose id, length and hash equal the
 *     previous snapshot's is copied from it (one memcpy into the new
 *     arena) instead of being decoded, so a refresh decodes only what
 *     changed. A record that does not decode is skipped (counted in
 *     qsnap.bad) until a cross-check repairs it.
 *   - FETCH_CHECK: q_spool_list, which also checks the index against the
 *     spool's directories (drops entries whose -H is gone, adds messages
 *     the index lacks). It costs about twice a walk, so it runs at start
 *     (right after the first walk), every CHECK_EVERY seconds, and when
 *     asked (after an action of ours, or Ctrl-R).
 *   - FETCH_AUTO: the input/<c>/ directories are stat()ed (62 calls); a
 *     message created, removed, frozen, thawed or committed renames or
 *     unlinks a file there, which changes the directory's mtime/ctime.
 *     The index is walked only when a stamp changed, when a directory
 *     changed less than STAMP_SLACK seconds ago (timestamps are coarse:
 *     two changes in one tick look like one), or WALK_EVERY seconds
 *     passed. So an idle spool costs 62 stat() calls per refresh.
 * Weak spots: an index entry rewritten without any change on the spool
 * (qhints fixing the index) shows up at the next periodic walk (at most
 * WALK_EVERY seconds later). The walk is O(N) in the index size and its
 * cost is dominated by Berkeley DB (about 25 ms of CPU for 100,000
 * records with libq's 32 MiB cache; an index bigger than the cache is
 * read again through it at every walk, several times slower).
 *
 * The main log (spool/log/mainlog) is followed like tail -f: new bytes
 * are read at each refresh; the first time, at most its last LOG_START
 * bytes. Lines "<stamp> [pid] <id> => ..." count as deliveries, "** " as
 * failures, "== " as deferrals, into 60 one-second buckets. A log that
 * was rotated (other inode) or truncated is read from its start.
 *
 * Diagnostics: the last error of a refresh is kept in snap.err (shown
 * on the status line); a refresh never stops the program.
 */
#include "config.h"
#include "tui/qtop.h"
#include "q/addr.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WALK_EVERY   10        /* seconds between walks of an idle spool */
#define CHECK_EVERY  30        /* seconds between cross-checks */
#define STAMP_SLACK   2        /* a directory this recent may change unseen */
#define LOG_START    (1u << 20)
#define LOG_MAX_READ (8u << 20) /* per refresh */
#define ARENA_BLOCK  (1u << 20)
#define REFRESH_MS   1000
#define NSPLIT       62

static const char split_chars[] =
	"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* ------------------------------------------------------------------ */
/* arena: strings of one qsnap, in 1 MiB blocks that never move */

struct ablk {
	struct ablk *next;
	size_t used, cap;
	char data[];
};

struct arena {
	struct ablk *head;
};

static char *arena_alloc(struct arena *a, size_t n)
{
	struct ablk *b = a->head;

	if (b == NULL || b->cap - b->used < n) {
		size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;

		b = malloc(sizeof(*b) + cap);
		if (b == NULL)
			return NULL;
		b->used = 0;
		b->cap = cap;
		b->next = a->head;
		a->head = b;
	}
	b->used += n;
	return b->data + b->used - n;
}

static void arena_free(struct arena *a)
{
	while (a != NULL && a->head != NULL) {
		struct ablk *b = a->head;

		a->head = b->next;
		free(b);
	}
	free(a);
}

/* ------------------------------------------------------------------ */
/* snapshots */

static void qsnap_unref(struct qsnap **qp)
{
	struct qsnap *q = *qp;

	*qp = NULL;
	if (q == NULL || atomic_fetch_sub(&q->refs, 1) != 1)
		return;
	free(q->rows);
	arena_free(q->arena);
	free(q);
}

static void rsnap_unref(struct rsnap **rp)
{
	struct rsnap *r = *rp;

	*rp = NULL;
	if (r == NULL || atomic_fetch_sub(&r->refs, 1) != 1)
		return;
	for (size_t i = 0; i < r->n; i++) {
		free(r->rows[i].key);
		free(r->rows[i].host);
		free(r->rows[i].ip);
		free(r->rows[i].msgid);
		q_retry_rec_clear(&r->rows[i].rec);
	}
	free(r->rows);
	free(r);
}

void snap_unref(struct snap **sp)
{
	struct snap *s = *sp;

	*sp = NULL;
	if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	qsnap_unref(&s->q);
	rsnap_unref(&s->r);
	for (size_t i = 0; i < s->nsess; i++)
		q_session_rec_clear(&s->sess[i]);
	free(s->sess);
	free(s->wait_key);
	q_strv_free(&s->wait_ids, s->nwait);
	free(s);
}

const struct qrow *qsnap_find(const struct qsnap *q, const char *id)
{
	size_t lo = 0, hi = q != NULL ? q->n : 0;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = memcmp(q->rows[mid].id, id, Q_ID_LEN);

		if (c == 0)
			return &q->rows[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* retry keys */

static char *xstrndup(const char *s, size_t n)
{
	char *d = strndup(s, n);

	if (d == NULL)
		qtop_oom();
	return d;
}

static bool all_digits(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

void rrow_parse_key(struct rrow *r)
{
	const char *k = r->key, *p, *e;

	r->type = 'A';
	if (strncmp(k, "R:", 2) == 0) {
		r->type = 'R';
		r->host = xstrndup(k + 2, strlen(k + 2));
		return;
	}
	if (strncmp(k, "T:", 2) != 0) {
		/* <address>:<msgid> */
		p = strrchr(k, ':');
		if (p != NULL && q_id_valid(p + 1))
			r->msgid = xstrndup(p + 1, Q_ID_LEN);
		return;
	}
	r->type = 'T';
	p = k + 2;
	if (*p == '[') {
		e = strchr(p, ']');
		if (e == NULL) {
			r->host = xstrndup(p, strlen(p));
			return;
		}
		r->host = xstrndup(p + 1, (size_t)(e - p - 1));
		p = e + 1;
	} else {
		e = strchr(p, ':');
		if (e == NULL) {
			r->host = xstrndup(p, strlen(p));
			return;
		}
		r->host = xstrndup(p, (size_t)(e - p));
		p = e;
	}
	if (*p != ':')
		return;
	p++;
	if (*p == '[') {              /* [v6]:port */
		e = strchr(p, ']');
		if (e == NULL)
			return;
		r->ip = xstrndup(p + 1, (size_t)(e - p - 1));
		if (e[1] == ':' && all_digits(e + 2))
			r->port = (unsigned)atoi(e + 2);
		return;
	}
	if (all_digits(p)) {          /* T:host:port (no IP in the key) */
		r->port = (unsigned)atoi(p);
		return;
	}
	e = strchr(p, ':');
	if (e != NULL && strchr(e + 1, ':') == NULL && all_digits(e + 1)) {
		r->ip = xstrndup(p, (size_t)(e - p));     /* v4:port */
		r->port = (unsigned)atoi(e + 1);
		return;
	}
	r->ip = xstrndup(p, strlen(p));               /* v4, or bare v6 */
}

/* ------------------------------------------------------------------ */
/* the fetcher */

struct stamp {
	struct timespec mt, ct;
	ino_t ino;
	bool ok;
};

struct bucket {
	time_t t;
	unsigned d, f, z;
};

struct fetch {
	char *dir;
	struct q_spool *spool;
	struct q_hints *hints;
	int input_fd;
	struct stamp st[NSPLIT + 1];
	bool stamped;
	time_t newest;                /* newest directory change seen */
	time_t last_walk, last_check; /* monotonic seconds */
	struct qsnap *q;
	struct rsnap *r;
	unsigned qgen, rgen;
	/* main log */
	int log_fd;
	dev_t log_dev;
	ino_t log_ino;
	off_t log_off;
	bool log_ok;
	struct q_buf log_part;
	struct bucket b[60];
	char hour_key[14];
	time_t hour_base;
	char err[256];
};

static time_t mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static void fetch_err(struct fetch *f, const char *what, const char *err)
{
	snprintf(f->err, sizeof(f->err), "%s: %s", what,
		 err != NULL ? err : "failed");
}

int fetch_new(const char *spool_dir, struct fetch **f_r, const char **error_r)
{
	struct fetch *f = calloc(1, sizeof(*f));
	char path[4096];

	if (f == NULL)
		return -1;
	f->input_fd = -1;
	f->log_fd = -1;
	if ((f->dir = strdup(spool_dir)) == NULL) {
		free(f);
		return -1;
	}
	if (q_spool_open(spool_dir, 0, &f->spool, error_r) < 0 ||
	    q_spool_hints(f->spool, &f->hints, error_r) < 0) {
		fetch_free(&f);
		return -1;
	}
	snprintf(path, sizeof(path), "%s/input", spool_dir);
	f->input_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	/* the first cross-check is the caller's choice (FETCH_CHECK) */
	f->last_check = mono_now();
	*f_r = f;
	return 0;
}

void fetch_free(struct fetch **fp)
{
	struct fetch *f = *fp;

	*fp = NULL;
	if (f == NULL)
		return;
	qsnap_unref(&f->q);
	rsnap_unref(&f->r);
	if (f->input_fd >= 0)
		close(f->input_fd);
	if (f->log_fd >= 0)
		close(f->log_fd);
	q_buf_free(&f->log_part);
	q_spool_close(&f->spool);
	free(f->dir);
	free(f);
}

/* Did any input/<c>/ directory change since the last call? */
static bool stamps_changed(struct fetch *f)
{
	bool changed = !f->stamped;
	char name[2] = { 0, 0 };

	for (int i = 0; i <= NSPLIT; i++) {
		struct stat sb;
		struct stamp s = { 0 };

		name[0] = i < NSPLIT ? split_chars[i] : '.';
		if (f->input_fd >= 0 && fstatat(f->input_fd, name, &sb, 0) == 0) {
			s.ok = true;
			s.mt = sb.st_mtim;
			s.ct = sb.st_ctim;
			s.ino = sb.st_ino;
			if (sb.st_mtim.tv_sec > f->newest)
				f->newest = sb.st_mtim.tv_sec;
			if (sb.st_ctim.tv_sec > f->newest)
				f->newest = sb.st_ctim.tv_sec;
		}
		if (s.ok != f->st[i].ok || s.ino != f->st[i].ino ||
		    s.mt.tv_sec != f->st[i].mt.tv_sec ||
		    s.mt.tv_nsec != f->st[i].mt.tv_nsec ||
		    s.ct.tv_sec != f->st[i].ct.tv_sec ||
		    s.ct.tv_nsec != f->st[i].ct.tv_nsec)
			changed = true;
		f->st[i] = s;
	}
	f->stamped = true;
	return changed;
}

/* ---- building a qsnap ---- */

struct build {
	struct fetch *f;
	const struct qsnap *old;
	size_t oi;
	struct qsnap *nq;
	size_t cap;
	struct q_buf enc;
	bool oom;
};

static uint64_t hash_bytes(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;

	while (n >= 8) {
		uint64_t w;

		memcpy(&w, s, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdULL;
		h ^= h >> 29;
		s += 8;
		n -= 8;
	}
	if (n > 0) {
		uint64_t w = 0;

		memcpy(&w, s, n);
		h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
		h ^= h >> 31;
	}
	return h;
}

static struct qrow *build_next(struct build *b)
{
	if (b->nq->n == b->cap) {
		size_t ncap = b->cap != 0 ? b->cap * 2 : 4096;
		struct qrow *v = realloc(b->nq->rows, ncap * sizeof(*v));

		if (v == NULL)
			return NULL;
		b->nq->rows = v;
		b->cap = ncap;
	}
	return &b->nq->rows[b->nq->n];
}

/* The previous snapshot's row for id, if any (rows come in id order). */
static const struct qrow *old_row(struct build *b, const char *id)
{
	const struct qsnap *o = b->old;

	if (o == NULL)
		return NULL;
	while (b->oi < o->n && memcmp(o->rows[b->oi].id, id, Q_ID_LEN) < 0)
		b->oi++;
	if (b->oi < o->n && memcmp(o->rows[b->oi].id, id, Q_ID_LEN) == 0)
		return &o->rows[b->oi];
	return NULL;
}

static bool row_copy(struct build *b, struct qrow *r, const struct qrow *o)
{
	size_t total = (size_t)(o->rcpts - o->sender) + strlen(o->rcpts) + 1;
	char *m = arena_alloc(b->nq->arena, total);

	if (m == NULL)
		return false;
	memcpy(m, o->sender, total);
	*r = *o;
	r->sender = m;
	r->rcpt1 = m + (o->rcpt1 - o->sender);
	r->domains = m + (o->domains - o->sender);
	r->rcpts = m + (o->rcpts - o->sender);
	return true;
}

static bool row_fill(struct build *b, struct qrow *r, const struct q_index_rec *rec)
{
	const char *s[4] = { rec->sender, rec->rcpt1, rec->domains, rec->rcpts };
	size_t l[4], total = 0;
	char *m;

	for (int i = 0; i < 4; i++) {
		if (s[i] == NULL)
			s[i] = "";
		l[i] = strlen(s[i]);
		total += l[i] + 1;
	}
	if ((m = arena_alloc(b->nq->arena, total)) == NULL)
		return false;
	memset(r, 0, sizeof(*r));
	memcpy(r->id, rec->id, Q_ID_LEN);
	r->id[Q_ID_LEN] = '\0';
	r->flags = rec->flags;
	r->nrcpt = rec->nrcpt;
	r->npending = rec->npending;
	r->arrival = rec->arrival;
	r->next_try = rec->next_try;
	r->size = rec->size;
	for (int i = 0; i < 4; i++) {
		memcpy(m, s[i], l[i] + 1);
		switch (i) {
		case 0: r->sender = m; break;
		case 1: r->rcpt1 = m; break;
		case 2: r->domains = m; break;
		default: r->rcpts = m; break;
		}
		m += l[i] + 1;
	}
	return true;
}

static void count_row(struct qsnap *q, const struct qrow *r)
{
	q->bytes += r->size;
	if (r->flags & Q_ENV_FROZEN)
		q->frozen++;
	else if (r->next_try != 0)
		q->deferred++;
	if (q->oldest == 0 || r->arrival < q->oldest)
		q->oldest = r->arrival;
}

static int walk_fn(const void *key, size_t klen, const void *val, size_t vlen,
		   void *ctx)
{
	struct build *b = ctx;
	const struct qrow *o;
	struct qrow *r;
	char id[Q_ID_LEN + 1];
	uint64_t h;

	if (klen != Q_ID_LEN) {
		b->nq->bad++;
		return 0;
	}
	memcpy(id, key, Q_ID_LEN);
	id[Q_ID_LEN] = '\0';
	if (!q_id_valid(id)) {        /* ids are drawn as they are */
		b->nq->bad++;
		return 0;
	}
	if ((r = build_next(b)) == NULL) {
		b->oom = true;
		return -1;
	}
	h = hash_bytes(val, vlen);
	o = old_row(b, id);
	if (o != NULL && o->vlen == vlen && o->vhash == h) {
		if (!row_copy(b, r, o)) {
			b->oom = true;
			return -1;
		}
	} else {
		struct q_index_rec rec;

		memset(&rec, 0, sizeof(rec));
		if (q_index_rec_decode(val, vlen, &rec, NULL) < 0 ||
		    memcmp(rec.id, id, Q_ID_LEN) != 0) {
			q_index_rec_clear(&rec);
			b->nq->bad++;
			return 0;
		}
		if (!row_fill(b, r, &rec)) {
			q_index_rec_clear(&rec);
			b->oom = true;
			return -1;
		}
		q_index_rec_clear(&rec);
		b->nq->decoded++;
	}
	r->vhash = h;
	r->vlen = (uint32_t)vlen;
	count_row(b->nq, r);
	b->nq->n++;
	return 0;
}

static int list_fn(const struct q_index_rec *rec, void *ctx)
{
	struct build *b = ctx;
	const struct qrow *o;
	struct qrow *r;
	uint64_t h = 0;
	uint32_t vlen = 0;

	if (!q_id_valid(rec->id)) {
		b->nq->bad++;
		return 0;
	}
	if ((r = build_next(b)) == NULL) {
		b->oom = true;
		return -1;
	}
	/* the hash of the record as the index stores it, so that the next
	   walk can tell it unchanged */
	q_buf_reset(&b->enc);
	if (q_index_rec_encode(rec, &b->enc) == 0) {
		h = hash_bytes(b->enc.data, b->enc.len);
		vlen = (uint32_t)b->enc.len;
	}
	o = old_row(b, rec->id);
	if (o != NULL && vlen != 0 && o->vlen == vlen && o->vhash == h) {
		if (!row_copy(b, r, o)) {
			b->oom = true;
			return -1;
		}
	} else {
		if (!row_fill(b, r, rec)) {
			b->oom = true;
			return -1;
		}
		b->nq->decoded++;
	}
	r->vhash = h;
	r->vlen = vlen;
	count_row(b->nq, r);
	b->nq->n++;
	return 0;
}

static struct qsnap *build_queue(struct fetch *f, bool check)
{
	struct build b = { .f = f, .old = f->q };
	const char *err = NULL;
	int rc;

	b.nq = calloc(1, sizeof(*b.nq));
	if (b.nq == NULL || (b.nq->arena = calloc(1, sizeof(*b.nq->arena))) == NULL) {
		free(b.nq);
		return NULL;
	}
	atomic_init(&b.nq->refs, 1);
	if (f->q != NULL && f->q->n > 0) {
		b.cap = f->q->n + 1024;
		if ((b.nq->rows = malloc(b.cap * sizeof(*b.nq->rows))) == NULL)
			b.cap = 0;
	}
	if (check)
		rc = q_spool_list(f->spool, list_fn, &b, &err);
	else
		rc = q_hints_iter(f->hints, Q_DB_INDEX, NULL, 0, walk_fn, &b, &err);
	q_buf_free(&b.enc);
	if (rc < 0) {
		fetch_err(f, check ? "listing the queue" : "reading the queue index",
			  b.oom ? "out of memory" : err);
		qsnap_unref(&b.nq);
		return NULL;
	}
	b.nq->checked = check;
	b.nq->gen = ++f->qgen;
	return b.nq;
}

/* ---- retry records ---- */

struct rbuild {
	struct rsnap *r;
	size_t cap;
};

static int retry_fn(const void *key, size_t klen, const void *val, size_t vlen,
		    void *ctx)
{
	struct rbuild *rb = ctx;
	struct rrow *row;

	if (rb->r->n == rb->cap) {
		size_t ncap = rb->cap != 0 ? rb->cap * 2 : 64;
		struct rrow *v = realloc(rb->r->rows, ncap * sizeof(*v));

		if (v == NULL)
			return -1;
		rb->r->rows = v;
		rb->cap = ncap;
	}
	row = &rb->r->rows[rb->r->n];
	memset(row, 0, sizeof(*row));
	if (q_retry_rec_decode(val, vlen, &row->rec, NULL) < 0) {
		q_retry_rec_clear(&row->rec);
		rb->r->bad++;
		return 0;
	}
	row->key = xstrndup(key, klen);
	rrow_parse_key(row);
	rb->r->n++;
	return 0;
}

static struct rsnap *build_retry(struct fetch *f)
{
	struct rbuild rb = { 0 };
	const char *err = NULL;

	rb.r = calloc(1, sizeof(*rb.r));
	if (rb.r == NULL)
		return NULL;
	atomic_init(&rb.r->refs, 1);
	if (q_hints_iter(f->hints, Q_DB_RETRY, NULL, 0, retry_fn, &rb, &err) < 0) {
		fetch_err(f, "reading the retry records", err);
		rsnap_unref(&rb.r);
		return NULL;
	}
	rb.r->gen = ++f->rgen;
	return rb.r;
}

/* ---- sessions ---- */

struct sbuild {
	struct snap *s;
	size_t cap;
};

static char *dup_or_null(const char *s)
{
	char *d;

	if (s == NULL)
		return NULL;
	if ((d = strdup(s)) == NULL)
		qtop_oom();
	return d;
}

static int sess_fn(const struct q_session_rec *rec, void *ctx)
{
	struct sbuild *sb = ctx;
	struct q_session_rec *d;

	if (sb->s->nsess == sb->cap) {
		size_t ncap = sb->cap != 0 ? sb->cap * 2 : 16;
		struct q_session_rec *v = realloc(sb->s->sess, ncap * sizeof(*v));

		if (v == NULL)
			return -1;
		sb->s->sess = v;
		sb->cap = ncap;
	}
	d = &sb->s->sess[sb->s->nsess++];
	*d = *rec;
	d->host = dup_or_null(rec->host);
	d->ip = dup_or_null(rec->ip);
	d->tls = dup_or_null(rec->tls);
	d->state = dup_or_null(rec->state);
	d->msgid = dup_or_null(rec->msgid);
	return 0;
}

/* ---- the main log ---- */

static time_t stamp_time(struct fetch *f, const char *s)
{
	struct tm tm;
	int mi, se;

	/* "YYYY-MM-DD HH:MM:SS" */
	for (int i = 0; i < 19; i++) {
		if (i == 4 || i == 7) {
			if (s[i] != '-')
				return -1;
		} else if (i == 10) {
			if (s[i] != ' ')
				return -1;
		} else if (i == 13 || i == 16) {
			if (s[i] != ':')
				return -1;
		} else if (s[i] < '0' || s[i] > '9') {
			return -1;
		}
	}
	if (memcmp(f->hour_key, s, 13) != 0) {
		memset(&tm, 0, sizeof(tm));
		tm.tm_year = atoi(s) - 1900;
		tm.tm_mon = atoi(s + 5) - 1;
		tm.tm_mday = atoi(s + 8);
		tm.tm_hour = atoi(s + 11);
		tm.tm_isdst = -1;
		f->hour_base = mktime(&tm);
		memcpy(f->hour_key, s, 13);
	}
	mi = (s[14] - '0') * 10 + (s[15] - '0');
	se = (s[17] - '0') * 10 + (s[18] - '0');
	return f->hour_base + mi * 60 + se;
}

static void log_line(struct fetch *f, const char *s, size_t n, time_t now)
{
	const char *p, *end = s + n;
	struct bucket *bk;
	time_t t;
	char kind;

	if (n < 20 + Q_ID_LEN + 4)
		return;
	if ((t = stamp_time(f, s)) < 0 || t <= now - 60)
		return;
	p = s + 20;
	if (*p == '[') {
		p = memchr(p, ']', (size_t)(end - p));
		if (p == NULL || p + 2 > end)
			return;
		p += 2;
	}
	if (end - p < Q_ID_LEN + 4 || p[Q_ID_LEN] != ' ' || p[Q_ID_LEN + 3] != ' ')
		return;
	p += Q_ID_LEN + 1;
	if (p[0] == '=' && p[1] == '>')
		kind = 'd';
	else if (p[0] == '*' && p[1] == '*')
		kind = 'f';
	else if (p[0] == '=' && p[1] == '=')
		kind = 'z';
	else
		return;
	bk = &f->b[(unsigned long long)t % 60];
	if (bk->t != t) {
		memset(bk, 0, sizeof(*bk));
		bk->t = t;
	}
	if (kind == 'd')
		bk->d++;
	else if (kind == 'f')
		bk->f++;
	else
		bk->z++;
}

static void log_read(struct fetch *f, time_t now)
{
	char path[4200], buf[65536];
	struct stat sb, fsb;
	size_t total = 0;
	bool skip_first = false;

	snprintf(path, sizeof(path), "%s/log/mainlog", f->dir);
	if (stat(path, &sb) < 0) {
		f->log_ok = errno == ENOENT;   /* no log yet: nothing happened */
		return;
	}
	if (f->log_fd >= 0 && (sb.st_ino != f->log_ino || sb.st_dev != f->log_dev)) {
		close(f->log_fd);           /* rotated */
		f->log_fd = -1;
		f->log_off = 0;
	}
	if (f->log_fd < 0) {
		bool first = f->log_ino == 0;

		f->log_fd = open(path, O_RDONLY | O_CLOEXEC);
		if (f->log_fd < 0 || fstat(f->log_fd, &fsb) < 0) {
			f->log_ok = false;
			return;
		}
		f->log_ino = fsb.st_ino;
		f->log_dev = fsb.st_dev;
		f->log_off = 0;
		if (first && fsb.st_size > (off_t)LOG_START) {
			f->log_off = fsb.st_size - (off_t)LOG_START;
			skip_first = true;
		}
		q_buf_reset(&f->log_part);
	}
	if (fstat(f->log_fd, &fsb) < 0) {
		f->log_ok = false;
		return;
	}
	if (fsb.st_size < f->log_off) {     /* truncated */
		f->log_off = 0;
		q_buf_reset(&f->log_part);
	}
	f->log_ok = true;
	while (f->log_off < fsb.st_size && total < LOG_MAX_READ) {
		ssize_t r = pread(f->log_fd, buf, sizeof(buf), f->log_off);
		size_t i = 0;

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		f->log_off += r;
		total += (size_t)r;
		while (i < (size_t)r) {
			char *nl = memchr(buf + i, '\n', (size_t)r - i);
			size_t l = nl != NULL ? (size_t)(nl - (buf + i)) : (size_t)r - i;

			if (nl == NULL) {
				if (f->log_part.len < 65536)
					q_buf_add(&f->log_part, buf + i, l);
				break;
			}
			if (skip_first) {
				skip_first = false;
			} else if (f->log_part.len > 0) {
				q_buf_add(&f->log_part, buf + i, l);
				log_line(f, f->log_part.data, f->log_part.len, now);
			} else {
				log_line(f, buf + i, l, now);
			}
			q_buf_reset(&f->log_part);
			i += l + 1;
		}
	}
}

/* ---- messages waiting for a retry key ---- */

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

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

static void wait_fill(struct fetch *f, struct snap *s, const char *key)
{
	struct rrow r;
	char **ids = NULL;
	size_t n = 0, k = 0;

	memset(&r, 0, sizeof(r));
	r.key = (char *)key;
	rrow_parse_key(&r);
	if (r.type == 'T' && r.host != NULL) {
		const char *err = NULL;

		if (q_wait_list(f->hints, r.host, 0, &ids, &n, &err) < 0)
			fetch_err(f, "reading the wait list", err);
	} else if (r.type == 'R' && r.host != NULL && s->q != NULL) {
		for (size_t i = 0; i < s->q->n; i++) {
			if (!has_domain(s->q->rows[i].domains, r.host))
				continue;
			char **v = realloc(ids, (n + 2) * sizeof(*v));

			if (v == NULL)
				qtop_oom();
			ids = v;
			ids[n++] = xstrndup(s->q->rows[i].id, Q_ID_LEN);
			ids[n] = NULL;
		}
	} else if (r.msgid != NULL) {
		if ((ids = calloc(2, sizeof(*ids))) == NULL)
			qtop_oom();
		ids[n++] = xstrndup(r.msgid, Q_ID_LEN);
	}
	/* only what is on the queue (the wait hints keep old pairs) */
	for (size_t i = 0; i < n; i++) {
		if (q_id_valid(ids[i]) && qsnap_find(s->q, ids[i]) != NULL)
			ids[k++] = ids[i];
		else
			free(ids[i]);
	}
	if (k > 1)
		qsort(ids, k, sizeof(*ids), cmp_strp);
	n = 0;                                      /* unique */
	for (size_t i = 0; i < k; i++) {
		if (n > 0 && strcmp(ids[i], ids[n - 1]) == 0)
			free(ids[i]);
		else
			ids[n++] = ids[i];
	}
	k = n;
	s->wait_ids = ids;
	s->nwait = k;
	s->wait_key = xstrndup(key, strlen(key));
	free(r.host);
	free(r.ip);
	free(r.msgid);
}

/* ---- one refresh ---- */

struct snap *fetch_run(struct fetch *f, enum fetch_mode mode, bool retry,
		       const char *wait_key)
{
	struct snap *s = calloc(1, sizeof(*s));
	struct sbuild sb = { .s = s };
	const char *err = NULL;
	time_t mono = mono_now(), now = time(NULL);
	bool changed, walk, check;

	if (s == NULL)
		qtop_oom();
	atomic_init(&s->refs, 1);
	f->err[0] = '\0';

	/* the stamps first: a change during the walk shows next time */
	changed = stamps_changed(f);
	check = mode == FETCH_CHECK || mono - f->last_check >= CHECK_EVERY;
	walk = check || mode == FETCH_WALK || f->q == NULL || changed ||
	       now - f->newest <= STAMP_SLACK || mono - f->last_walk >= WALK_EVERY;
	if (walk) {
		struct qsnap *nq = build_queue(f, check);

		if (nq != NULL) {
			qsnap_unref(&f->q);
			f->q = nq;
			f->last_walk = mono;
			if (check)
				f->last_check = mono;
		}
	}
	if (f->q != NULL)
		atomic_fetch_add(&f->q->refs, 1);
	s->q = f->q;

	if (retry || f->r == NULL || walk) {
		struct rsnap *nr = build_retry(f);

		if (nr != NULL) {
			rsnap_unref(&f->r);
			f->r = nr;
		}
	}
	if (f->r != NULL)
		atomic_fetch_add(&f->r->refs, 1);
	s->r = f->r;

	if (q_session_list(f->hints, sess_fn, &sb, &err) < 0)
		fetch_err(f, "reading the sessions", err);

	log_read(f, now);
	s->log_ok = f->log_ok;
	for (int i = 0; i < 60; i++) {
		if (f->b[i].t > now - 60 && f->b[i].t <= now + 5) {
			s->log_delivered += f->b[i].d;
			s->log_failed += f->b[i].f;
			s->log_deferred += f->b[i].z;
		}
	}
	if (wait_key != NULL)
		wait_fill(f, s, wait_key);
	s->taken = now;
	snprintf(s->err, sizeof(s->err), "%s", f->err);
	return s;
}

/* ------------------------------------------------------------------ */
/* the thread */

static struct {
	pthread_t th;
	bool running;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop, poke, poke_check, wake, want_retry;
	char *want_wait;
	struct snap *latest;
	struct fetch *f;
} D = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void *fetcher(void *arg)
{
	int round = 0;

	(void)arg;
	pthread_mutex_lock(&D.mu);
	while (!D.stop) {
		enum fetch_mode mode = FETCH_AUTO;
		bool retry = D.want_retry;
		char *wait = D.want_wait != NULL ? strdup(D.want_wait) : NULL;
		struct snap *s, *old;
		struct timespec until;

		if (round == 0 || D.poke)
			mode = FETCH_WALK;
		if (round == 1 || D.poke_check)
			mode = FETCH_CHECK;
		D.poke = D.poke_check = D.wake = false;
		pthread_mutex_unlock(&D.mu);

		/* the next refresh is due a second after this one started */
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += REFRESH_MS / 1000;
		s = fetch_run(D.f, mode, retry, wait);
		free(wait);
		round++;

		pthread_mutex_lock(&D.mu);
		old = D.latest;
		D.latest = s;
		pthread_mutex_unlock(&D.mu);
		snap_unref(&old);
		pthread_mutex_lock(&D.mu);

		if (round == 1)
			continue;      /* the cross-check follows at once */
		while (!D.stop && !D.poke && !D.poke_check && !D.wake) {
			if (pthread_cond_timedwait(&D.cv, &D.mu, &until) == ETIMEDOUT)
				break;
		}
	}
	pthread_mutex_unlock(&D.mu);
	return NULL;
}

int data_start(const char *spool_dir, const char **error_r)
{
	pthread_condattr_t ca;

	if (fetch_new(spool_dir, &D.f, error_r) < 0)
		return -1;
	pthread_condattr_init(&ca);
	pthread_cond_init(&D.cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&D.th, NULL, fetcher, NULL) != 0) {
		*error_r = "cannot start the fetcher thread";
		fetch_free(&D.f);
		return -1;
	}
	D.running = true;
	return 0;
}

void data_stop(void)
{
	if (!D.running)
		return;
	pthread_mutex_lock(&D.mu);
	D.stop = true;
	pthread_cond_signal(&D.cv);
	pthread_mutex_unlock(&D.mu);
	pthread_join(D.th, NULL);
	D.running = false;
	snap_unref(&D.latest);
	free(D.want_wait);
	D.want_wait = NULL;
	fetch_free(&D.f);
}

struct snap *data_get(struct snap *cur)
{
	struct snap *s;

	pthread_mutex_lock(&D.mu);
	s = D.latest;
	if (s == cur || s == NULL) {
		pthread_mutex_unlock(&D.mu);
		return cur;
	}
	atomic_fetch_add(&s->refs, 1);
	pthread_mutex_unlock(&D.mu);
	snap_unref(&cur);
	return s;
}

void data_poke(bool check)
{
	pthread_mutex_lock(&D.mu);
	D.poke = true;
	if (check)
		D.poke_check = true;
	pthread_cond_signal(&D.cv);
	pthread_mutex_unlock(&D.mu);
}

void data_want_retry(bool on)
{
	pthread_mutex_lock(&D.mu);
	if (on && !D.want_retry) {
		D.wake = true;
		pthread_cond_signal(&D.cv);
	}
	D.want_retry = on;
	pthread_mutex_unlock(&D.mu);
}

void data_want_wait(const char *key)
{
	pthread_mutex_lock(&D.mu);
	if ((key == NULL) != (D.want_wait == NULL) ||
	    (key != NULL && strcmp(key, D.want_wait) != 0)) {
		free(D.want_wait);
		D.want_wait = key != NULL ? strdup(key) : NULL;
		if (key != NULL) {
			/* answer soon (a refresh, a walk only if due) */
			D.wake = true;
			pthread_cond_signal(&D.cv);
		}
	}
	pthread_mutex_unlock(&D.mu);
}
